"""Drawing of synthetic pedestrian tracklets (numpy + PIL), used by core.data.synthetic.

A person is drawn from body parts in person-relative units (u = person height in pixels): head/hair (or cap),
upper clothing with a pattern (stripes, checks, vertical stripes, a chest logo seen only from the front),
sleeves, lower clothing (trousers, shorts, skirt), shoes and an optional bag (backpack, handbag, shoulder bag).
A tracklet adds a view (front, back, side), a walking cycle (legs and arms swing, body bobs), detector-style box
jitter and scale drift, a cluttered background that scrolls as the person walks, and, for some tracklets, an
occluder (a horizontal band or a vertical strip) over a run of frames. A camera adds its colour cast,
illumination, contrast, blur and sensor noise. Everything random comes from the generator passed in.

Region damage (`RegionDamage`, `sample_damage`; the "occluded" preset of core.data.synthetic): further events per
tracklet, each over its own run of frames, drawn and painted from a second generator so the frames are otherwise
the ones drawn without them: textured occluder bands at any height of the body, vertical strips, and "degrade"
bands (a horizontal band blurred, flattened and noised: a local loss of detail, not a cover).

Ground truth: render_tracklet returns, with the frames, one FrameTruth per frame: the rectangles it actually
painted or degraded (clipped to the frame), the camera blur, the person's offset and scale (core.data.truth).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

VIEWS = ("front", "back", "side")
OCCLUSION_PROB = 0.3  # fraction of tracklets with an occluder over part of their frames

SKIN = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36], [92, 56, 30]])
HAIR = np.array([[20, 17, 15], [60, 40, 25], [110, 75, 40], [200, 170, 100], [150, 150, 150], [140, 50, 20]])


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _jitter(rng: np.random.Generator, base: np.ndarray, amount: float = 12) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(base + rng.normal(0, amount, 3), 0, 255))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A clothing colour: saturated, pastel, dark or neutral."""
    kind = rng.integers(4)
    if kind == 3:
        return _rgb(0, 0, rng.uniform(0.1, 0.95))
    s, v = [(0.6, 0.9), (0.25, 0.95), (0.7, 0.35)][kind]
    return _rgb(rng.random(), min(1.0, s + rng.uniform(-0.15, 0.1)), min(1.0, v + rng.uniform(-0.15, 0.05)))


@dataclass(frozen=True)
class Person:
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str            # short | long | cap
    cap: tuple[int, int, int]
    upper: tuple[int, int, int]
    upper2: tuple[int, int, int]
    pattern: str               # solid | hstripes | vstripes | checks | logo
    period: float              # pattern period in units of person height
    long_sleeves: bool
    lower: tuple[int, int, int]
    lower_style: str           # trousers | shorts | skirt
    shoes: tuple[int, int, int]
    bag: str                   # none | backpack | handbag | shoulder
    bag_colour: tuple[int, int, int]
    build: float               # width scale


def sample_person(rng: np.random.Generator) -> Person:
    """An identity's appearance, region by region."""
    jeans = _rgb(0.6, rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.6))
    lower = jeans if rng.random() < 0.35 else _colour(rng)
    shoes = [(235, 235, 235), (25, 25, 25), (110, 70, 40), _colour(rng)][rng.integers(4)]
    return Person(
        skin=_jitter(rng, SKIN[rng.integers(len(SKIN))]), hair=_jitter(rng, HAIR[rng.integers(len(HAIR))], 8),
        hair_style=("short", "long", "cap")[rng.choice(3, p=[0.5, 0.35, 0.15])], cap=_colour(rng),
        upper=_colour(rng), upper2=_colour(rng),
        pattern=("solid", "hstripes", "vstripes", "checks", "logo")[rng.integers(5)],
        period=float(rng.uniform(0.035, 0.09)), long_sleeves=bool(rng.random() < 0.5),
        lower=lower, lower_style=("trousers", "shorts", "skirt")[rng.choice(3, p=[0.65, 0.2, 0.15])], shoes=shoes,
        bag=("none", "backpack", "handbag", "shoulder")[rng.choice(4, p=[0.4, 0.3, 0.15, 0.15])],
        bag_colour=_colour(rng), build=float(rng.uniform(0.85, 1.15)))


@dataclass(frozen=True)
class Camera:
    gain: tuple[float, float, float]  # colour cast (per-channel multiplier)
    brightness: float
    contrast: float
    blur: float                       # Gaussian blur radius at 128 px frame height
    noise: float                      # sensor noise sigma (grey levels)
    wall: tuple[int, int, int]
    ground: tuple[int, int, int]
    horizon: float                    # ground line, fraction of frame height
    views: tuple[float, float, float]  # probabilities of front, back, side


def sample_camera(rng: np.random.Generator) -> Camera:
    gain = tuple(float(g) for g in np.clip(1 + rng.normal(0, 0.12, 3), 0.7, 1.3))
    views = rng.dirichlet([0.7, 0.7, 0.7])
    return Camera(gain=gain, brightness=float(rng.uniform(0.7, 1.2)), contrast=float(rng.uniform(0.75, 1.15)),
                  blur=float(rng.uniform(0.0, 1.2)), noise=float(rng.uniform(2, 8)),
                  wall=_rgb(rng.random(), rng.uniform(0, 0.35), rng.uniform(0.35, 0.85)),
                  ground=_rgb(rng.random(), rng.uniform(0, 0.25), rng.uniform(0.25, 0.6)),
                  horizon=float(rng.uniform(0.45, 0.75)), views=tuple(float(v) for v in views))


def _background(rng: np.random.Generator, cam: Camera, h: int, w: int) -> np.ndarray:
    """[h, w, 3] float32 scene: wall and ground with gradients, clutter boxes, poles, passer-by blobs, texture."""
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    wall, ground = np.array(cam.wall, np.float32), np.array(cam.ground, np.float32)
    img = np.where(y < cam.horizon, wall * (0.8 + 0.3 * y), ground * (1.1 - 0.3 * y)) * np.ones((1, w, 1), np.float32)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = rng.uniform(-0.1 * w, w), rng.uniform(-0.1 * h, h * 0.9)
        bw, bh = rng.uniform(0.05, 0.4) * h, rng.uniform(0.05, 0.5) * h
        draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=_rgb(rng.random(), rng.uniform(0, 0.55), rng.uniform(0.2, 0.9)))
    for _ in range(int(rng.integers(0, 3))):
        x0 = rng.uniform(0, w)
        draw.rectangle([x0, 0, x0 + rng.uniform(0.02, 0.05) * h, h], fill=_rgb(0, 0, rng.uniform(0.2, 0.7)))
    for _ in range(int(rng.integers(0, 3))):
        x0, s = rng.uniform(0, w), rng.uniform(0.3, 0.6) * h
        y0 = cam.horizon * h - 0.6 * s
        c = _rgb(rng.random(), rng.uniform(0, 0.4), rng.uniform(0.2, 0.6))
        draw.ellipse([x0 - 0.07 * s, y0, x0 + 0.07 * s, y0 + 0.14 * s], fill=c)
        draw.rectangle([x0 - 0.12 * s, y0 + 0.14 * s, x0 + 0.12 * s, y0 + s], fill=c)
    tex = rng.normal(0, 12, (max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    tex = np.asarray(Image.fromarray(np.clip(tex + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR))
    return np.asarray(pil, np.float32) + (tex.astype(np.float32) - 128)


@dataclass
class Track:
    """Per-tracklet state: view, walking cycle, box jitter, scale drift, occluder."""
    view: str
    facing: int       # +1 walking right, -1 left (side view)
    phase: float
    period: float     # frames per walking cycle
    speed: float      # scroll of the scene, in units of frame width per frame
    scale: float
    drift: float      # relative scale change over the tracklet
    occluder: tuple | None  # (kind, position, size, first, last, colour)
    junk: bool        # a badly placed, oversized box that cuts the person
    damage: tuple = ()  # Damage events (RegionDamage presets only; drawn by sample_damage)


def sample_track(rng: np.random.Generator, cam: Camera, length: int, junk: bool) -> Track:
    view = VIEWS[rng.choice(3, p=cam.views)]
    occ = None
    if rng.random() < OCCLUSION_PROB:
        first = int(rng.integers(0, max(1, length // 2))) if rng.random() < 0.6 else 0
        last = int(rng.integers(first + max(1, length // 3), length + 1)) if first else length
        kind = "band" if rng.random() < 0.5 else "strip"
        pos = rng.uniform(0.55, 0.8) if kind == "band" else rng.uniform(-0.1, 0.9)
        occ = (kind, float(pos), float(rng.uniform(0.15, 0.35)), first, last, _colour(rng))
    scale = rng.uniform(1.5, 2.2) if junk else rng.uniform(0.78, 0.95)
    return Track(view=view, facing=int(rng.choice([-1, 1])), phase=float(rng.uniform(0, 2 * np.pi)),
                 period=float(rng.uniform(8, 14)), speed=float(rng.uniform(0.01, 0.03) if view == "side" else 0.003),
                 scale=float(scale), drift=float(rng.uniform(-0.12, 0.12)), occluder=occ, junk=junk)


DAMAGE_KINDS = ("band", "strip", "degrade")


@dataclass(frozen=True)
class RegionDamage:
    """A preset's region damage: how often, how many, which kinds and how large (fractions of the frame).

    A tracklet is damaged with probability `prob`; it then gets `events` (inclusive range) events, each a run of
    round(run * length) consecutive frames (run drawn in `run`, at least 1 frame and at most length - 1, so the
    tracklet keeps frames that this event leaves clean) of one kind drawn with `kinds` weights:
      band     an occluder across all columns, rows [pos, pos + size) x H, pos anywhere on the body (head to feet);
      strip    an occluder across all rows, columns [pos, pos + size) x W, moving with the scene (as VERSION 1's);
      degrade  rows [pos, pos + size) x H of the camera's frame blurred (sigma drawn in `blur`, x H / 128 px),
               pulled towards their mean (contrast in `contrast`) and noised (sigma drawn in `noise`, grey levels).
    An occluder is solid or, with probability `textured`, a clothing-like pattern (stripes or checks of two
    clothing colours): a distractor that looks like another person's clothes, not a flat block.
    The defaults are the "occluded" preset's (core.data.synthetic).
    """
    prob: float = 0.9
    events: tuple[int, int] = (2, 3)
    run: tuple[float, float] = (0.3, 0.5)
    kinds: tuple[tuple[str, float], ...] = (("band", 0.45), ("strip", 0.15), ("degrade", 0.4))
    band: tuple[float, float] = (0.2, 0.35)      # band / degrade height, fraction of frame height
    strip: tuple[float, float] = (0.2, 0.4)      # strip width, fraction of frame width
    textured: float = 0.6
    blur: tuple[float, float] = (2.5, 4.5)
    contrast: tuple[float, float] = (0.3, 0.6)
    noise: tuple[float, float] = (12.0, 25.0)

    def __post_init__(self):
        bad = [k for k, _ in self.kinds if k not in DAMAGE_KINDS]
        if bad or not 0 <= self.prob <= 1 or not 1 <= self.events[0] <= self.events[1] or \
                not 0 < self.run[0] <= self.run[1] <= 1 or not 0 < self.band[0] <= self.band[1] < 1:
            raise ValueError(f"RegionDamage: kinds must be of {DAMAGE_KINDS}{f' (unknown: {bad})' if bad else ''}, "
                             f"prob in [0, 1], 1 <= events[0] <= events[1], run and band ranges in (0, 1): {self}")


@dataclass(frozen=True)
class Damage:
    """One damage event of a tracklet: frames [first, last); pos/size as fractions (see RegionDamage)."""
    kind: str          # band | strip | degrade
    pos: float
    size: float
    first: int
    last: int
    colour: tuple[int, int, int] = (0, 0, 0)
    colour2: tuple[int, int, int] = (0, 0, 0)
    texture: str = "solid"  # solid | hstripes | vstripes | checks
    period: float = 0.05    # texture period, fraction of frame height
    blur: float = 0.0       # degrade: sigma at 128 px frame height
    contrast: float = 1.0   # degrade
    noise: float = 0.0      # degrade


def sample_damage(rng: np.random.Generator, cfg: RegionDamage, length: int) -> tuple[Damage, ...]:
    """The damage events of one tracklet of `length` frames (see RegionDamage)."""
    if rng.random() >= cfg.prob or length < 2:
        return ()
    names, weights = zip(*cfg.kinds)
    events = []
    for _ in range(int(rng.integers(cfg.events[0], cfg.events[1] + 1))):
        kind = names[rng.choice(len(names), p=np.array(weights) / sum(weights))]
        run = int(np.clip(round(rng.uniform(*cfg.run) * length), 1, length - 1))
        first = int(rng.integers(0, length - run + 1))
        size = float(rng.uniform(*(cfg.strip if kind == "strip" else cfg.band)))
        pos = float(rng.uniform(-0.1, 0.9) if kind == "strip" else rng.uniform(0.0, 1.0 - size))
        if kind == "degrade":
            events.append(Damage(kind, pos, size, first, first + run, blur=float(rng.uniform(*cfg.blur)),
                                 contrast=float(rng.uniform(*cfg.contrast)), noise=float(rng.uniform(*cfg.noise))))
        else:
            texture = ("hstripes", "vstripes", "checks")[rng.integers(3)] if rng.random() < cfg.textured else "solid"
            events.append(Damage(kind, pos, size, first, first + run, _colour(rng), _colour(rng), texture,
                                 float(rng.uniform(0.03, 0.08))))
    return tuple(events)


@dataclass(frozen=True)
class FrameTruth:
    """What render_tracklet did to one frame (core.data.truth's columns): damaged rectangles (kind, y0, y1, x0,
    x1), half-open pixel rows and columns clipped to the frame, in painting order; the camera's blur sigma in pixels
    (0 where _blur leaves the frame sharp); the person's offset from the box centre (detector jitter, plus the cut
    of a junk box) and height over frame height."""
    blur: float
    dx: float
    dy: float
    scale: float
    damage: tuple[tuple[str, int, int, int, int], ...] = field(default=())


def _limb(draw: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, pts: list, colour, width: float) -> None:
    w = max(1, int(round(width)))
    draw.line(pts, fill=colour, width=w, joint="curve")
    mask.line(pts, fill=255, width=w, joint="curve")


def _blob(draw, mask, box: list, colour, shape: str = "ellipse", *angles: float) -> None:
    if shape != "polygon":  # PIL wants x0 <= x1, y0 <= y1
        box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
    getattr(draw, shape)(box, *angles, fill=colour)
    getattr(mask, shape)(box, *angles, fill=255)


def _pattern(p: Person, view: str, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """[h, w, 3] float32 clothing texture; xx [1, w] and yy [h, 1] are person coordinates in units of u."""
    c1, c2 = np.array(p.upper, np.float32), np.array(p.upper2, np.float32)
    rows, cols = (yy / p.period) % 1 < 0.5, (xx / p.period) % 1 < 0.5
    if p.pattern == "hstripes":
        sel = rows & np.ones_like(cols)
    elif p.pattern == "vstripes" and view != "side":
        sel = cols & np.ones_like(rows)
    elif p.pattern == "checks":
        sel = rows ^ cols
    else:
        sel = np.zeros((yy.shape[0], xx.shape[1]), bool)
    return np.where(sel[..., None], c2, c1)


def _shade(c, f: float) -> tuple[int, int, int]:
    return tuple(int(v * f) for v in c)


def draw_person(p: Person, tr: Track, t: int, cx: float, top: float, u: float, h: int, w: int):
    """Returns (layer [h, w, 3] float32, alpha [h, w] float32 in 0..1) of the person at frame t."""
    layer, alpha = Image.new("RGB", (w, h)), Image.new("L", (w, h))
    d, m = ImageDraw.Draw(layer), ImageDraw.Draw(alpha)
    phi = tr.phase + 2 * np.pi * t / tr.period
    side, f = tr.view == "side", tr.facing
    top += 0.012 * u * abs(np.cos(phi))
    sy, hy, foot = top + 0.165 * u, top + 0.5 * u, top + 0.985 * u
    sw = (0.07 if side else 0.12) * u * p.build
    hw = (0.06 if side else 0.085) * u * p.build
    leg_w, arm_w = 0.075 * u * p.build, 0.055 * u * p.build
    legs, arms = [], []
    for sgn in (1, -1):
        if side:
            a = 0.45 * sgn * np.sin(phi)
            knee = (cx + f * 0.25 * u * np.sin(a), hy + 0.25 * u * np.cos(a))
            b = a - 0.6 * max(0.0, -np.sin(phi * sgn + 0.6))
            legs.append([(cx, hy), knee, (knee[0] + f * 0.235 * u * np.sin(b), knee[1] + 0.235 * u * np.cos(b))])
            c = -0.5 * a
            elbow = (cx + f * 0.16 * u * np.sin(c), sy + 0.16 * u * np.cos(c))
            arms.append([(cx, sy + 0.01 * u), elbow, (elbow[0] + f * 0.15 * u * np.sin(c + 0.35),
                                                       elbow[1] + 0.15 * u * np.cos(c + 0.35))])
        else:
            x = cx + sgn * 0.045 * u * p.build
            lift = 0.04 * u * max(0.0, sgn * np.sin(phi))
            legs.append([(x, hy), (x + sgn * 0.005 * u, hy + 0.25 * u - lift), (x + sgn * 0.01 * u, foot - lift)])
            sx, swing = cx + sgn * sw, 0.04 * u * sgn * np.sin(phi)
            arms.append([(sx, sy + 0.01 * u), (sx + sgn * 0.025 * u, sy + 0.16 * u - swing),
                         (sx + sgn * 0.03 * u, sy + 0.3 * u - 2 * swing)])
    order = (1, 0) if side else (0, 1)
    skirt = p.lower_style == "skirt"
    trouser = p.lower_style == "trousers"

    def leg(k, dark):
        pts = legs[k]
        lo, sk, sh = _shade(p.lower, dark), _shade(p.skin, dark), _shade(p.shoes, dark)
        if trouser:
            _limb(d, m, pts, lo, leg_w)
        else:
            _limb(d, m, pts, sk, leg_w * 0.85)
            if not skirt:
                mid = (pts[0][0] * 0.4 + pts[1][0] * 0.6, pts[0][1] * 0.4 + pts[1][1] * 0.6)
                _limb(d, m, [pts[0], mid], lo, leg_w)
        fx, fy = pts[-1]
        ahead = f * 0.05 * u if side else 0.0
        _blob(d, m, [min(fx, fx + ahead) - 0.035 * u, fy - 0.03 * u, max(fx, fx + ahead) + 0.035 * u, fy + 0.012 * u],
              sh)

    def arm(k, dark):
        pts = arms[k]
        up, sk = _shade(p.upper, dark), _shade(p.skin, dark)
        if p.long_sleeves:
            _limb(d, m, pts, up, arm_w)
        else:
            _limb(d, m, pts[1:], sk, arm_w * 0.85)
            _limb(d, m, pts[:2], up, arm_w)
        hx, hy_ = pts[-1]
        _blob(d, m, [hx - 0.025 * u, hy_ - 0.02 * u, hx + 0.025 * u, hy_ + 0.03 * u], sk)
        if p.bag == "handbag" and k == 0:
            _blob(d, m, [hx - 0.06 * u, hy_, hx + 0.06 * u, hy_ + 0.11 * u], p.bag_colour, "rectangle")

    if side and p.bag == "backpack":
        _blob(d, m, [cx - f * 0.16 * u, sy, cx - f * 0.03 * u, sy + 0.26 * u], p.bag_colour, "rectangle")
    leg(order[0], 0.8 if side else 1.0)
    if side:
        arm(order[0], 0.8)
    leg(order[1], 1.0)
    _blob(d, m, [cx - hw, hy - 0.03 * u, cx + hw, hy + 0.06 * u], p.lower, "rectangle")
    if skirt:
        _blob(d, m, [(cx - hw, hy - 0.03 * u), (cx + hw, hy - 0.03 * u), (cx + 1.6 * hw, hy + 0.22 * u),
                     (cx - 1.6 * hw, hy + 0.22 * u)], p.lower, "polygon")
    torso = [(cx - sw, sy), (cx + sw, sy), (cx + hw * 1.05, hy + 0.02 * u), (cx - hw * 1.05, hy + 0.02 * u)]
    tmask = Image.new("L", (w, h))
    ImageDraw.Draw(tmask).polygon(torso, fill=255)
    m.polygon(torso, fill=255)
    box = tmask.getbbox()
    if box:  # texture only inside the torso's bounding box
        yy = np.arange(box[1], box[3], dtype=np.float32)[:, None]
        xx = np.arange(box[0], box[2], dtype=np.float32)[None, :]
        tex = _pattern(p, tr.view, (xx - cx) / u, (yy - top) / u)
        layer.paste(Image.fromarray(tex.astype(np.uint8)), box, tmask.crop(box))
    if p.pattern == "logo" and tr.view == "front":
        r = 0.045 * u
        _blob(d, m, [cx - r, sy + 0.09 * u - r, cx + r, sy + 0.09 * u + r], p.upper2)
    if p.bag == "backpack" and tr.view == "back":
        _blob(d, m, [cx - 0.75 * sw, sy + 0.02 * u, cx + 0.75 * sw, sy + 0.27 * u], p.bag_colour, "rectangle")
    if p.bag in ("backpack", "shoulder") and tr.view != "back":
        strap = [(cx - 0.6 * sw, sy), (cx - 0.6 * sw, sy + 0.2 * u)] if p.bag == "backpack" else \
            [(cx - sw, sy), (cx + hw, hy - 0.05 * u)]
        _limb(d, m, strap, _shade(p.bag_colour, 0.8), 0.02 * u)
    if p.bag == "shoulder":
        bx = cx + (hw if tr.view != "back" else -hw)
        _blob(d, m, [bx - 0.05 * u, hy - 0.08 * u, bx + 0.05 * u, hy + 0.04 * u], p.bag_colour, "rectangle")
    if side:
        arm(order[1], 1.0)
    else:
        arm(0, 1.0)
        arm(1, 1.0)
    _head(d, m, p, tr, cx, top, u)
    return np.asarray(layer, np.float32), np.asarray(alpha, np.float32) / 255.0


def _head(d, m, p: Person, tr: Track, cx: float, top: float, u: float) -> None:
    r, hx, hyc = 0.062 * u, cx + (tr.facing * 0.01 * u if tr.view == "side" else 0.0), top + 0.07 * u
    _limb(d, m, [(cx, hyc + r * 0.8), (cx, top + 0.17 * u)], p.skin, 0.04 * u)
    if p.hair_style == "long" and tr.view != "front":
        back = hx - tr.facing * 0.6 * r if tr.view == "side" else hx
        _blob(d, m, [back - 0.9 * r, hyc, back + 0.9 * r, hyc + 2.6 * r], p.hair, "rectangle")
    _blob(d, m, [hx - r, hyc - 1.1 * r, hx + r, hyc + 1.1 * r], p.hair if tr.view == "back" else p.skin)
    if tr.view == "front":
        _blob(d, m, [hx - r, hyc - 1.15 * r, hx + r, hyc + 0.1 * r], p.hair, "chord", 180, 360)
    elif tr.view == "side":
        _blob(d, m, [hx - r - tr.facing * 0.4 * r, hyc - 1.15 * r, hx + r - tr.facing * 0.4 * r, hyc + 0.5 * r],
              p.hair)
    if p.hair_style == "cap":
        _blob(d, m, [hx - 1.05 * r, hyc - 1.25 * r, hx + 1.05 * r, hyc - 0.1 * r], p.cap)


def render_tracklet(p: Person, cam: Camera, tr: Track, length: int, h: int, w: int, rng: np.random.Generator,
                    damage_rng: np.random.Generator | None = None) -> tuple[list[np.ndarray], list[FrameTruth]]:
    """`length` frames [h, w, 3] uint8 of person p walking in front of camera cam, and one FrameTruth per frame.

    The events of tr.damage draw only from `damage_rng` (required when there are any), so `rng` makes the same
    draws, and the frames the same pixels outside the damaged rectangles, with or without them.
    """
    if tr.damage and damage_rng is None:
        raise ValueError("render_tracklet: a track with damage events needs damage_rng")
    margin = int(np.ceil(0.15 * w))
    scroll = int(np.ceil(tr.speed * w * length))
    bg = _background(rng, cam, h + 2 * margin, w + 2 * margin + scroll)
    x0 = margin if tr.facing > 0 else margin + scroll
    gain = np.array(cam.gain, np.float32) * cam.brightness * rng.uniform(0.93, 1.07)
    xx = np.arange(w, dtype=np.float32)[None, :]
    sigma = cam.blur * h / 128
    frames, truths = [], []
    for t in range(length):
        u = h * tr.scale * (1 + tr.drift * t / max(1, length - 1)) * (1 + rng.normal(0, 0.015))
        dx, dy = rng.normal(0, 0.03 * w), rng.normal(0, 0.02 * h)
        ox = int(np.clip(round(x0 + tr.facing * tr.speed * w * t - dx), 0, 2 * margin + scroll))
        oy = int(np.clip(round(margin - dy), 0, 2 * margin))
        img = bg[oy:oy + h, ox:ox + w].copy()
        cx, top = w / 2 + dx, (h - u) / 2 + dy
        if tr.junk:
            cx += (rng.choice([-1, 1]) * rng.uniform(0.3, 0.6)) * w
            top -= rng.uniform(0, 0.5) * u
        layer, alpha = draw_person(p, tr, t, cx, top, u, h, w)
        shade = np.clip(1 - 0.35 * ((xx - cx) / (0.15 * u)) ** 2, 0.65, 1.0)[..., None]
        a = alpha[..., None]
        img = img * (1 - a) + layer * shade * a
        rects = []
        if tr.occluder is not None and tr.occluder[3] <= t < tr.occluder[4]:
            rects.append(_occlude(img, tr.occluder, ox - x0, rng))
        live = [e for e in tr.damage if e.first <= t < e.last]
        rects += [_cover(img, e, ox - x0, damage_rng) for e in live if e.kind != "degrade"]
        img = _blur((img * gain - 128) * cam.contrast + 128, sigma)
        rects += [_degrade(img, e, damage_rng) for e in live if e.kind == "degrade"]
        img += rng.standard_normal(img.shape, dtype=np.float32) * cam.noise
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        truths.append(FrameTruth(float(sigma) if sigma >= 0.25 else 0.0, float(cx - w / 2), float(top - (h - u) / 2),
                                 float(u / h), tuple(r for r in rects if r is not None)))
    return frames, truths


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [h, w, 3] float32 (edges replicated); sigma < 0.25 px is left sharp."""
    if sigma < 0.25:
        return img
    r = int(np.ceil(2 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / sigma) ** 2)
    k /= k.sum()
    h, w = img.shape[:2]
    pad = np.pad(img, ((r, r), (0, 0), (0, 0)), mode="edge")
    img = sum(k[i] * pad[i:i + h] for i in range(2 * r + 1))
    pad = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * pad[:, i:i + w] for i in range(2 * r + 1))


def _rows(pos: float, size: float, h: int) -> tuple[int, int]:
    """Rows [y0, y1) of a band from `pos` of `size` (fractions of h), clipped to the frame."""
    y0 = min(h, int(pos * h))
    return y0, min(h, y0 + max(1, int(round(size * h))))


def _columns(pos: float, size: float, w: int, shift: int) -> tuple[int, int]:
    """Columns [x0, x1) of a strip from `pos` of `size` (fractions of w) moving with the scene, clipped."""
    x0 = int(pos * w) - shift
    return min(w, max(0, x0)), min(w, max(0, x0 + int(size * w)))


def _occlude(img: np.ndarray, occ: tuple, shift: int, rng: np.random.Generator) -> tuple | None:
    """Paint the occluder in place: a horizontal band from `pos` down, or a vertical strip moving with the scene.
    Returns (kind, y0, y1, x0, x1) of the painted rectangle, None when it lies outside the frame."""
    kind, pos, size, _, _, colour = occ
    h, w = img.shape[:2]
    if kind == "band":
        y0 = min(h, int(pos * h))
        y1, x0, x1 = min(h, y0 + int(size * 1.5 * h)), 0, w
    else:
        (x0, x1), y0, y1 = _columns(pos, size, w, shift), 0, h
    region = img[y0:y1, x0:x1]
    if not region.size:
        return None
    region[:] = np.array(colour, np.float32) * rng.uniform(0.85, 1.0, region.shape[:2] + (1,))
    return kind, y0, y1, x0, x1


def _texture(e: Damage, shape: tuple[int, int], unit: float) -> np.ndarray:
    """[h, w, 3] float32 fill of an occluder: solid, or stripes / checks of period e.period * unit pixels."""
    c1, c2 = np.array(e.colour, np.float32), np.array(e.colour2, np.float32)
    rows = (np.arange(shape[0])[:, None] / (e.period * unit)) % 1 < 0.5
    cols = (np.arange(shape[1])[None, :] / (e.period * unit)) % 1 < 0.5
    sel = {"solid": np.zeros(shape, bool), "hstripes": rows & np.ones(shape, bool),
           "vstripes": cols & np.ones(shape, bool), "checks": rows ^ cols}[e.texture]
    return np.where(sel[..., None], c2, c1)


def _cover(img: np.ndarray, e: Damage, shift: int, rng: np.random.Generator) -> tuple | None:
    """Paint a band or strip event (RegionDamage) in place, shaded like VERSION 1's occluders; its rectangle."""
    h, w = img.shape[:2]
    (y0, y1), (x0, x1) = ((_rows(e.pos, e.size, h), (0, w)) if e.kind == "band" else
                          ((0, h), _columns(e.pos, e.size, w, shift)))
    region = img[y0:y1, x0:x1]
    if not region.size:
        return None
    region[:] = _texture(e, region.shape[:2], h) * rng.uniform(0.85, 1.0, region.shape[:2] + (1,))
    return e.kind, y0, y1, x0, x1


def _degrade(img: np.ndarray, e: Damage, rng: np.random.Generator) -> tuple | None:
    """Blur, flatten and noise rows [pos, pos + size) of the camera's frame in place (a "degrade" event)."""
    h, w = img.shape[:2]
    y0, y1 = _rows(e.pos, e.size, h)
    if y1 <= y0:
        return None
    band = _blur(img, e.blur * h / 128)[y0:y1]
    mean = band.mean((0, 1), keepdims=True)
    img[y0:y1] = mean + e.contrast * (band - mean) + rng.normal(0, e.noise, band.shape).astype(np.float32)
    return e.kind, y0, y1, 0, w
