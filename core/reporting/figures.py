"""Matplotlib figures (Agg backend) for the reports and run artifacts: per-row values with their 95 % intervals
(Table 1) and lines over N or K (Tables 2-3) beside the chance level, CMC curves with the chance CMC,
the N x K attention scores drawn over the frames of query clips, and the claims' forest plot. Plain functions;
each returns a Figure."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core import atomic  # noqa: E402


def close(fig) -> None:
    plt.close(fig)


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    atomic.atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=110,
                                             bbox_inches="tight"))
    plt.close(fig)
    return path


Interval = tuple[float, float, float]   # (value, low, high) in percent; nan when missing (bounds: no interval)
CHANCE_STYLE = {"color": "#555555", "ls": ":", "lw": 1.2}
CHANCE_LABEL = "chance (uniformly random ranking)"


def _span(values, pad: float = 0.08, least: float = 1.0) -> tuple[float, float]:
    """Axis limits that hold every finite value with a margin (at least `least` points wide), inside 0..100."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not v.size:
        return 0.0, 100.0
    lo, hi = float(v.min()), float(v.max())
    width = max(hi - lo, least)
    return max(lo - pad * width, 0.0), min(hi + pad * width, 100.0)


def _arms(ours: Sequence[Interval]) -> tuple[np.ndarray, np.ndarray]:
    """Values and the [2, n] error-bar arms of (value, low, high) triples (no arm where a bound is missing)."""
    value, low, high = (np.array([o[i] for o in ours], dtype=float) for i in range(3))
    return value, np.nan_to_num(np.vstack([value - low, high - value]))


def bars_figure(labels: Sequence[str], metrics: Sequence[str], ours: Mapping[str, Sequence[Interval]],
                ours_name: str, title: str, paper: Mapping[str, Sequence[float]] | None = None, paper_name: str = "",
                chance: Mapping[str, float] | None = None):
    """Table 1's rows, one panel per metric: this run's value with the 95 % interval the report's tables print
    (a square with whiskers), the paper's value (a diamond; None: not drawn, e.g. for synthetic runs, which are not
    comparable with the paper) and the split's chance level (a dotted line). Points and intervals, not bars: each
    panel's axis spans the values shown (not 0-100), so the rows' differences are visible, and a bar cut off at an
    axis that does not start at 0 would misstate their ratios. Full row labels on the left, legend below."""
    n = len(labels)
    y = np.arange(n)[::-1]
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.7 * len(metrics) + 2.6, 1.5 + 0.38 * n), squeeze=False,
                             sharey=True)
    for ax, m in zip(axes[0], metrics):
        value, err = _arms(ours[m])
        shown = [*(value - err[0]), *(value + err[1])]
        if paper is not None:
            ax.plot(np.array(paper[m], dtype=float), y, "D", color="#4a6f9d", ms=5, label=paper_name)
            shown += list(np.array(paper[m], dtype=float))
        ax.errorbar(value, y, xerr=err, fmt="s", color="#d9834a", capsize=3, ms=5,
                    label=f"{ours_name}, 95 % interval")
        c = (chance or {}).get(m)
        if c is not None and np.isfinite(c):
            ax.axvline(c, **CHANCE_STYLE, label=CHANCE_LABEL)
            shown.append(c)
        ax.set_xlim(*_span(shown))
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("%", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, list(labels), fontsize=7)
    axes[0][0].set_ylim(-0.7, n - 0.3)
    fig.suptitle(title, fontsize=9)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=7, frameon=False)
    height = 1.5 + 0.38 * n
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))                   # the legend below the panels, never on a row
    return fig


def lines_figure(xs: Sequence[float], x_name: str, metrics: Sequence[str], ours: Mapping[str, Sequence[Interval]],
                 ours_name: str, title: str, paper: Mapping[str, Sequence[float]] | None = None,
                 paper_name: str = "", chance: Mapping[str, float] | None = None):
    """One panel per metric over x (Table 2's N, Table 3's K): this run solid with its 95 % intervals, the paper
    dashed (None: not drawn), the split's chance level dotted; each axis spans the values shown."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        value, err = _arms(ours[m])
        shown = [*(value - err[0]), *(value + err[1])]
        if paper is not None:
            ax.plot(xs, paper[m], "o--", label=paper_name, color="#4a6f9d")
            shown += list(np.array(paper[m], dtype=float))
        ax.errorbar(xs, value, yerr=err, fmt="s-", label=f"{ours_name}, 95 % interval", color="#d9834a", capsize=2)
        c = (chance or {}).get(m)
        if c is not None and np.isfinite(c):
            ax.axhline(c, **CHANCE_STYLE, label=CHANCE_LABEL)
            shown.append(c)
        ax.set_ylim(*_span(shown))
        ax.set_title(m, fontsize=9)
        ax.set_xlabel(x_name)
        ax.set_xticks(list(xs))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("%")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def cmc_figure(curves: Mapping[str, Sequence[float]], title: str, chance: Sequence[float] | None = None):
    """CMC curves (rank 1..R, percent), one line per label, and the split's chance level (the CMC of a uniformly
    random ranking, core.evaluation.chance) dotted; legend beside the axes."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for label, cmc in curves.items():
        ax.plot(np.arange(1, len(cmc) + 1), cmc, marker=".", label=label)
    if chance is not None and len(chance):
        ax.plot(np.arange(1, len(chance) + 1), chance, **CHANCE_STYLE, label=CHANCE_LABEL)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xticks([1, 5, 10, 15, 20])
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def forest_figure(labels: Sequence[str], paper: Sequence[float], ours: Sequence[tuple[float, float, float]],
                  paper_name: str, ours_name: str, title: str):
    """A forest plot, one line per claim and metric (top to bottom in `labels` order): the paper's gain as a
    diamond, this run's gain (value, low, high; percentage points) as a square with its 95 % interval, a vertical
    line at 0. NaN: nothing drawn (a row not run); NaN bounds: the square without a bar (no interval)."""
    n = len(labels)
    y = np.arange(n)[::-1]
    value, low, high = (np.array([o[i] for o in ours], dtype=float) for i in range(3))
    err = np.nan_to_num(np.vstack([value - low, high - value]))             # [2, n] left / right arm
    fig, ax = plt.subplots(figsize=(7.5, 1.6 + 0.3 * n))
    ax.axvline(0, color="black", lw=0.8)
    ax.errorbar(value, y, xerr=err, fmt="s", color="#d9834a", capsize=3, label=f"{ours_name}, 95 % interval")
    ax.plot(np.array(paper, dtype=float), y, "D", color="#4a6f9d", label=paper_name)
    ax.set_yticks(y, list(labels), fontsize=7)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("gain of the claimed row (percentage points)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / (1.6 + 0.3 * n), 1, 1))          # the legend below the axes, never on a row
    return fig


def attention_clips(scores: Mapping[int, object], query: Sequence, seq_len: int, sampling: str,
                    limit: int = 4) -> list[dict]:
    """JSON-able clips for attention_figure: the (N, K) scores of the first `limit` query clips with scores,
    the paths of the N frames the test loader fed the model, the identity and camera."""
    from core.data.sampling import eval_frames  # the test loader's own frame choice [A12]
    clips = []
    for qi in sorted(scores)[:limit]:
        t = query[qi]
        frames = eval_frames(len(t.paths), seq_len, sampling)[0]   # the first clip: the one scored
        clips.append({"query": int(qi), "pid": int(t.pid), "camid": int(t.camid),
                      "frames": [t.paths[i] for i in frames],
                      "scores": np.asarray(scores[qi], dtype=float).round(5).tolist()})
    return clips


def attention_figure(clips: Sequence[Mapping], title: str, size: tuple[int, int] = (128, 64)):
    """Each clip a row of its N frames; each frame split into K horizontal bands shaded by its score s_{n,k}
    (Eq. 4: each region's scores sum to 1 over the N frames, so 1/N is "no preference"), the value printed. The
    colour scale is fixed, the same for every clip and run: white at 1/N, full blue at 0 (the frame ignored for
    that region), full red at 2/N and above (twice its even share); so a ±0.01 deviation stays nearly white instead
    of being stretched to the full colour range. A colour bar states the scale. Missing frame files are drawn grey.

    Optional keys of a clip (the attention audit's clips, core.engine.audit): "edges", the K + 1 region edges as
    fractions of the frame height (default: K equal bands); "damage", per frame the true damaged rectangles
    [y0, y1, x0, x1] in pixels of the stored frame of size "frame_size" [H, W], outlined in green; "label", the
    row's title (default: the query, identity and camera)."""
    from matplotlib.cm import ScalarMappable
    n_max = max(len(c["scores"]) for c in clips)
    fig, axes = plt.subplots(len(clips), n_max, figsize=(1.35 * n_max + 0.9, 2.5 * len(clips)), squeeze=False)
    cmap = plt.get_cmap("coolwarm")
    for r, clip in enumerate(clips):
        s = np.asarray(clip["scores"], dtype=float)               # (N, K)
        norm = attention_norm(len(s))
        for n in range(n_max):
            ax = axes[r][n]
            ax.axis("off")
            if n >= len(s):
                continue
            img = _load_frame(clip["frames"][n] if n < len(clip.get("frames", [])) else None, size)
            h = img.shape[0]
            ax.imshow(img)
            edges = h * np.asarray(clip["edges"], dtype=float) if "edges" in clip \
                else np.linspace(0, h, s.shape[1] + 1)
            for k, score in enumerate(s[n]):
                ax.axhspan(edges[k], edges[k + 1], color=cmap(norm(float(score))), alpha=0.5, lw=0)
                ax.text(2, (edges[k] + edges[k + 1]) / 2, f"{score:.3f}", color="white", fontsize=6,
                        va="center", bbox={"facecolor": "black", "alpha": 0.4, "pad": 0.5, "lw": 0})
            if clip.get("damage"):
                _outline(ax, clip["damage"][n], clip["frame_size"], img.shape[:2])
            head = clip.get("label") or f"query {clip['query']}"
            ax.set_title(f"frame {n + 1}" if n else f"{head} (id {clip['pid']}, cam {clip['camid']})",
                         fontsize=6, loc="left")
    damage = "\ngreen outline: the truly damaged pixels" if any(c.get("damage") for c in clips) else ""
    ns = sorted({len(c["scores"]) for c in clips})
    values = f" (N = {ns[0]}: 1/N = {1 / ns[0]:.3g}, 2/N = {2 / ns[0]:.3g})" if len(ns) == 1 else ""
    fig.suptitle(title + "\nregion score s (Eq. 4) on a fixed scale" + values + ":\nblue 0 (frame ignored for that "
                 "region), white 1/N (no preference), red ≥ 2/N (twice its share)" + damage, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 0.7 / (1.35 * n_max + 0.9), 1))
    bar = fig.add_axes((1 - 0.55 / (1.35 * n_max + 0.9), 0.15, 0.012, 0.6))
    fig.colorbar(ScalarMappable(norm=attention_norm(1, unit=True), cmap=cmap), cax=bar,
                 ticks=[0, 0.5, 1]).ax.set_yticklabels(["0", "1/N", "≥ 2/N"], fontsize=6)
    return fig


def attention_norm(n: int, unit: bool = False):
    """The attention figures' fixed colour scale for N frames: 0 -> 0, 1/N -> 0.5, 2/N (and above) -> 1
    (``unit``: the same scale in units of 2/N, for the colour bar)."""
    from matplotlib.colors import Normalize
    return Normalize(vmin=0.0, vmax=1.0 if unit else 2.0 / n, clip=True)


def _outline(ax, rects: Sequence[Sequence[int]], frame_size: Sequence[int], shown: tuple[int, int]) -> None:
    """Green outlines of damaged rectangles [y0, y1, x0, x1] (pixels of a frame_size [H, W] frame) on a frame drawn
    at `shown` (h, w) pixels."""
    from matplotlib.patches import Rectangle
    sy, sx = shown[0] / frame_size[0], shown[1] / frame_size[1]
    for y0, y1, x0, x1 in rects:
        ax.add_patch(Rectangle((x0 * sx - 0.5, y0 * sy - 0.5), (x1 - x0) * sx, (y1 - y0) * sy, fill=False,
                               edgecolor="#00d000", lw=1.2))


def _load_frame(path: str | None, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image
    if path and Path(path).is_file():
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size[1], size[0])))
    return np.full((size[0], size[1], 3), 160, dtype=np.uint8)
