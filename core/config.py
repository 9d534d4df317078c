"""Every knob of a run, in one place, as frozen dataclasses.

This is the single home of defaults (one comment per field). Experiment specs
(`experiments/*.yaml`) override fields by dotted key, e.g. ``model.fusion: true``;
:func:`apply_overrides` validates each key, type and value and names what is allowed.

Where the paper is ambiguous (`../shared/paper/ambiguities.md`, items A1..A16, and A17
below), the field that decides it says so with ``[A<n>]`` and its ``Literal`` type lists the choices; the
default is what we consider the paper's most literal reading. ``core/models/README.md`` maps
the model options to code.

A17 (not in ambiguities.md; found by audit): "each frame is augmented by random horizontal
flipping" flips every frame of a clip independently; most video re-ID code flips a whole
clip at once. ``data.flip_per`` chooses.

[S1]..[S6] mark the readings of STAN (Li et al. 2018, ``model.aggregation: stan``) where the material we had is
silent; ``core/models/README.md`` ("STAN") lists them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping


class ConfigError(ValueError):
    """A config key, type or value is not allowed; the message says which and what is."""


# The string-valued choices, written once: validate() reads the allowed values from these types (CHOICES below),
# and the modules that implement a choice with a plain tuple of names derive it from the same type.
Dataset = Literal["synthetic", "mars", "duke"]
SyntheticSize = Literal["tiny", "small", "default", "occluded"]            # core.data.synthetic.PRESETS
TrainSampling = Literal["restricted", "random"]                # [A12]
EpochDef = Literal["identities", "tracklets"]                  # [A10]
FlipPer = Literal["frame", "clip"]                             # [A17]
Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet18_narrow"]  # core.models.backbone.BACKBONE_NAMES
Aggregation = Literal["frame", "avg", "sta", "stan", "stal"]
StanEmbed = Literal["concat", "per_model"]                     # [S4] STAN (core/models/README.md)
Attention = Literal["energy", "energy_l2", "norm_l2"]          # [A1]
F2Weights = Literal["normalized", "raw"]                       # [A5]
Remainder = Literal["last", "spread"]                          # [A4]
StalPartNorm = Literal["l1", "l2"]                             # STAL [L4]: ||a_bar|| of Eq. 8
EvalSampling = Literal["evenly", "dense"]                      # [A12]
Distance = Literal["euclidean", "cosine"]
Optimizer = Literal["adam", "sgd"]
Init = Literal["imagenet", "synthetic"]                        # where model.pretrained's backbone weights come from
ApRule = Literal["trapezoid", "step"]                          # [A15b]


# Properties of a knob, on its field (knob(default, ...)); the tables below (MINIMUM, RESULT_NEUTRAL_KEYS, ...) are
# read from the fields:
#   minimum, maximum      inclusive bounds, checked by apply_overrides before anything runs
#   neutral               cannot change a result (workers, device, checkpoint interval, torch.compile): left out of
#                         config_hash, so changing it reuses finished runs and checkpoints; the seeds of one report row
#                         and the workers of one study may differ in it
#   hashed_when_changed   added after stores held finished runs: out of config_hash at its default, so those runs keep
#                         their hashes; set to anything else it enters the hash like every other key
#   per_machine           in the hash, but may differ between the workers of one Optuna study (a path, a batch size)
#   report_only           only changes how a report states its intervals, never a trial: a study may be resumed with
#                         another value
#   seed                  the run's seed: the seeds of one report row differ in it
SEED_MAX = 2**32 - 1                 # numpy / torch generators take 32-bit seeds everywhere in the suite


def knob(default: Any, *, minimum: float | None = None, maximum: float | None = None, neutral: bool = False,
         hashed_when_changed: bool = False, per_machine: bool = False, report_only: bool = False,
         seed: bool = False) -> Any:
    """A config field with its properties (see above) as dataclass field metadata."""
    meta = {k: v for k, v in (("minimum", minimum), ("maximum", maximum)) if v is not None}
    meta.update({k: True for k, v in (("neutral", neutral), ("hashed_when_changed", hashed_when_changed),
                                       ("per_machine", per_machine), ("report_only", report_only),
                                       ("seed", seed)) if v})
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    dataset: Dataset = "synthetic"
    root: str | None = knob(None, per_machine=True)  # dataset root; synthetic: where it is generated (default: .cache/synthetic_<size>_seed<seed>_v<version>)
    synthetic_size: SyntheticSize = "default"  # generator preset (core.data.synthetic.PRESETS)
    synthetic_seed: int = knob(0, minimum=0, maximum=SEED_MAX)  # generator seed (the synthetic dataset is a function of size and seed)
    height: int = knob(256, minimum=32)  # frame height after resize [A11: 256x128 implied by 16x8 maps]
    width: int = knob(128, minimum=16)  # frame width after resize
    seq_len: int = knob(4, minimum=1, maximum=64)  # N, frames per training clip (paper: 4)
    train_sampling: TrainSampling = "restricted"  # [A12] restricted: one random frame per N equal chunks; random: N uniform
    ids_per_batch: int = knob(16, minimum=2)  # P identities per batch (paper: 16)
    tracklets_per_id: int = knob(4, minimum=2)  # K tracklets per identity (paper: 4; not the region count)
    epoch_def: EpochDef = "identities"  # [A10] identities: one pass over train ids (~39 it on MARS); tracklets: ~every tracklet once
    gallery_with_queries: bool = True   # [A15a] True: official MARS protocol (11,310 gallery); False: torchreid's 9,330
    flip_prob: float = knob(0.5, minimum=0.0)  # horizontal flip probability
    flip_per: FlipPer = "frame"         # [A17] frame: each frame flipped on its own, the paper's words; clip: one flip per clip
    num_workers: int = knob(2, minimum=0, neutral=True)  # DataLoader workers


@dataclass(frozen=True)
class ModelConfig:
    backbone: Backbone = "resnet50"     # conv5 stride is always set to 1
    pretrained: bool = True             # ImageNet weights (torchvision cache or weights_path)
    weights_path: str | None = None     # ImageNet state-dict file, overrides the cache; refused with pretrained: false
    init: Init = knob("imagenet", hashed_when_changed=True)  # with pretrained: imagenet (the paper; torchvision cache or weights_path) | synthetic: the backbone of the one-time pretraining stage on synthetic identities disjoint from every split (core.engine.pretrain, the `pretrain` keys; synthetic data only: the cpu profile's stand-in for ImageNet)
    aggregation: Aggregation = "sta"    # frame: image baseline; avg: temporal average; sta: Eq. 1-4 + F2; stan: Li et al. 2018 (core/models/stan.py)
    fusion: bool = True                 # sta only: Alg. 1, concat [F1, F2] along channels
    num_regions: int = knob(4, minimum=1)  # K horizontal regions (paper: 4); must be <= feature-map height
    feat_dim: int = knob(1024, minimum=1)  # [A7] width of the FC retrieval feature (paper: not given)
    attention: Attention = "energy"     # [A1] e = sum_d f^2; energy: e/sum(e), as printed; energy_l2: e/||e||_2, the text; norm_l2: sqrt(e)/||sqrt(e)||_2 (was "l2")
    f2_weights: F2Weights = "normalized"  # [A5] normalized: Eq. 4 scores, weighted average; raw: Eq. 3 block sums, Alg. 1 literally
    remainder: Remainder = "last"       # [A4] when K does not divide H: last: the last region takes the extra rows; spread: the first H mod K regions get one more
    classifier_bias: bool = False       # identity classifier with a bias; Eq. 10's logits W_k^T x have none
    classifier_std: float = knob(0.001, minimum=0.0, hashed_when_changed=True)  # std of the classifier's initial weights: logits ~0, CE starts at log(C); with 1,000+ identities that starves the backbone of CE gradient (the pretraining stage uses pretrain.classifier_std)
    stan_models: int = knob(6, minimum=1)  # [S1] stan only: K spatial attention models (paper's figures: 6; authors' release: 3)
    stan_hidden: int = knob(64, minimum=1)  # [S2] stan only: width of the spatial scorer's hidden 1x1 conv (authors' release: 64)
    stan_embed: StanEmbed = "concat"    # [S4] stan only: concat: K temporally attended D-dim features -> FC(K*D, feat_dim); per_model: shared Linear(D, feat_dim) + l2 per model, concat = K*feat_dim feature (authors' release)
    # STAL (Chen et al. 2019; aggregation=stal only, ignored otherwise; experiments/README.md "STAL", L1..L8)
    stal_parts: int = knob(6, minimum=1)  # [L1] R body parts, here R horizontal stripes of the map (paper: 6 pose parts); <= map height
    stal_ran: bool = True               # [L2] residual attention (1 + M) * f on the global branch (on the backbone's output map)
    stal_part_norm: StalPartNorm = "l1"  # [L4] ||a_bar|| in Eq. 8: l1 (Eq. 12's gradient, the "L1 normalization layer") | l2


@dataclass(frozen=True)
class LossConfig:
    triplet: bool = True                # add batch-hard triplet (Eq. 9) to softmax CE (Eq. 10)
    margin: float = knob(0.3, minimum=0.0)  # triplet margin alpha (paper: 0.3, "recommended")
    reg_weight: float = knob(0.0, minimum=0.0)  # lambda of Eq. 7 [A8: never given; tune.py searches it]; 0 disables Reg
    reg_squared: bool = False           # [A8] False: ||g_i - g_j||_F as in Eq. 6; True: squared, as the text says
    div_weight: float = knob(1.0, minimum=0.0)  # [S5] stan only: weight of STAN's diversity term ||QQ^T - I||_F^2 (authors' release adds it with 1; the paper's value was not available)
    div_squared: bool = True            # [S5] True: ||QQ^T - I||_F^2 as the paper writes it; False: ||QQ^T - I||_F
    # STAL's objective, Eq. 3-6 (aggregation=stal only; its global triplet uses stal_margin_global, not margin)
    stal_margin_global: float = knob(1.2, minimum=0.0)  # m_g of Eq. 4 (STAL III-E)
    stal_margin_local: float = knob(0.8, minimum=0.0)  # m_l of Eq. 4 (STAL III-E)
    stal_local_weight: float = knob(0.3, minimum=0.0)  # lambda of Eq. 4, on the local triplet term (STAL III-E)
    stal_consist_weight: float = knob(1.0, minimum=0.0)  # [L6] weight of the consistency constraint C_cons (Eq. 3: 1)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = knob(800, minimum=1)  # [A10] total epochs (paper: 800; "70" in the same paragraph)
    lr: float = knob(3e-4, minimum=0.0)  # learning rate (paper: Adam, 3e-4)
    optimizer: Optimizer = knob("adam", hashed_when_changed=True)  # adam (the paper) | sgd: SGD with Nesterov momentum train.momentum
    momentum: float = knob(0.9, minimum=0.0, hashed_when_changed=True)  # sgd only
    weight_decay: float = knob(5e-4, minimum=0.0)  # Adam weight decay
    milestones: tuple[int, ...] = (200, 400)  # lr x gamma after these epochs (strictly increasing, each >= 1)
    gamma: float = knob(0.1, minimum=0.0)  # lr decay factor
    seed: int = knob(0, minimum=0, maximum=SEED_MAX, seed=True)  # seeds python, numpy, torch, the sampler and frame choice
    device: str = knob("auto", neutral=True)  # auto | cpu | cuda | cuda:<i>
    amp: bool = True                    # CUDA only: autocast to bf16 (fp16 + GradScaler where bf16 is unsupported)
    channels_last: bool = True          # CUDA only: channels-last memory format
    checkpoint_every_s: float = knob(300.0, minimum=0.0, neutral=True)  # write last.pt after this many seconds of training, and after every lr milestone and the last epoch (0: every epoch)
    compile: bool = knob(False, neutral=True)  # torch.compile the training forward (same math; measure with python -m core.bench train)
    log_checkpoint: bool = knob(False, neutral=True)  # the trained model's last.pt as an MLflow artifact (checkpoint/) of the run that trained it (the paper profile: true)


@dataclass(frozen=True)
class PretrainConfig:
    """The one-time pretraining stage of model.init=synthetic (core.engine.pretrain): Avg on a synthetic tree of its
    own identities (core.data.synthetic.pretrain_preset), seen by the cameras of data.synthetic_seed; its backbone
    initialises every row, as ImageNet weights do in the paper. Shared by the rows and seeds of every table (it has
    its own seed) and cached by the hash of everything that makes it. Inert unless model.pretrained and
    model.init=synthetic (then it enters the runs' config hash)."""
    identities: int = knob(2000, minimum=8)  # people of the pretraining tree (none of them in any split of any preset)
    epochs: int = knob(80, minimum=1)  # passes over its identities (identities / P iterations each)
    lr: float = knob(1e-3, minimum=0.0)  # Adam learning rate (weight decay: train.weight_decay)
    milestones: tuple[int, ...] = (70,)  # lr x train.gamma after these epochs
    ids_per_batch: int = knob(32, minimum=2)  # P identities x K tracklets per batch
    tracklets_per_id: int = knob(2, minimum=2)
    seq_len: int = knob(2, minimum=1)  # N frames per training clip
    triplet: bool = False               # add the batch-hard triplet loss to CE (from scratch it collapses the features to one point: docs/learning.md)
    classifier_std: float = knob(0.05, minimum=0.0)  # std of the classifier's initial weights (model.classifier_std)
    seed: int = knob(0, minimum=0)  # the stage's training seed (one pretrained backbone for every row seed)


@dataclass(frozen=True)
class EvalConfig:
    seq_len: int = knob(4, minimum=1, maximum=64)  # N at test time (free: the model has no N-dependent weights; Table 2)
    sampling: EvalSampling = "evenly"   # [A12] evenly: N evenly spaced frames; dense: all frames in chunks of N, averaged
    distance: Distance = "euclidean"
    ap_rule: ApRule = "trapezoid"       # [A15b] trapezoid: official MARS code; step: non-interpolated, torchreid
    stal_global_weight: float = knob(0.3, minimum=0.0)  # [L7] STAL test distance d = d_l + w * d_g: 0.3 (III-E); 1.0: "we add them" (III-A)
    rerank: bool = False                # k-reciprocal re-ranking (Zhong et al. 2017) [A16]; euclidean distance only
    rerank_k1: int = knob(20, minimum=1)
    rerank_k2: int = knob(6, minimum=1)
    rerank_lambda: float = knob(0.3, minimum=0.0)
    batch_size: int = knob(32, minimum=1, per_machine=True)  # clips per extraction batch
    bootstrap_resamples: int = knob(1000, minimum=1, report_only=True)  # identity resamples of the 95 % intervals (core.evaluation.bootstrap)
    bootstrap_seed: int = knob(0, minimum=0, maximum=SEED_MAX, report_only=True)  # their generator's seed (intervals are reproducible)
    audit_occluded: float = knob(0.5, report_only=True)  # attention audit (synthetic data): a region-frame or grid cell counts as occluded when at least this fraction of its pixels is damaged (clean: 0); 0.5 = mostly damaged (core.evaluation.attention_audit)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# Allowed values of the string-valued choices, read from their Literal types; checked by validate().
def _choices() -> dict[str, tuple[str, ...]]:
    return {f"{name}.{key}": typing.get_args(hint) for name, cls in _section_classes().items()
            for key, hint in _field_types(cls).items() if typing.get_origin(hint) is Literal}


# Choice values that were renamed: refused with a pointer to the new name (a silent alias could be read as the
# other l2 reading of Eq. 1).
RENAMED: dict[str, dict[str, str]] = {
    "model.attention": {"l2": "norm_l2 (sqrt(e) / ||sqrt(e)||_2, what 'l2' computed; 'energy_l2' is e / ||e||_2)"},
}

# The synthetic generator's version (core.data.synthetic). Bump when the drawing (core.data.render) or the plan
# changes: it is in the default root and the marker, so a bump regenerates instead of reusing a cached tree, and it
# enters config_hash of synthetic runs, so finished runs on the older data are not reused;
# tests/test_data_synthetic.py pins a digest of rendered frames to it.
# 2: small's test split enlarged (extra_test_ids, distractors, junk); tiny, default and small's train split as in 1.
# 3: every tree carries truth.parquet (core.data.truth: what the generator did to each frame), the "occluded" preset
#    is added; the frames of tiny, small and default are 2's, pixel for pixel.
SYNTHETIC_VERSION = 3

# Output stride of the backbone with conv5 stride 1: a 256x128 frame gives 16x8 maps.
BACKBONE_STRIDE = 16


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """Check `value` against the type hint of `key`; int is accepted for float, lists for tuples."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: key '{key}' must be a list of {args[0].__name__}, got {value!r}")
        return tuple(_coerce(key, v, args[0], where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: key '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str or origin is Literal:     # a Literal's allowed values are checked by validate()
        if not isinstance(value, str):
            raise ConfigError(f"{where}: key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def allowed_keys() -> list[str]:
    """All dotted keys a spec may override, e.g. 'model.fusion'."""
    return [f"{name}.{f.name}" for name, cls in _section_classes().items() for f in dataclasses.fields(cls)]


def _section_classes() -> dict[str, type]:
    hints = _field_types(RunConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunConfig)}


CHOICES: dict[str, tuple[str, ...]] = _choices()


def _fields() -> dict[str, dataclasses.Field]:
    """{dotted key: its dataclass field}, in section and field order."""
    return {f"{name}.{f.name}": f for name, cls in _section_classes().items() for f in dataclasses.fields(cls)}


def _knobs(prop: str) -> dict[str, Any]:
    """{dotted key: the property's value} of the fields that have `prop` (knob's metadata)."""
    return {key: f.metadata[prop] for key, f in _fields().items() if prop in f.metadata}


MINIMUM: dict[str, float] = _knobs("minimum")
# past these, values are typos that would overflow a generator or take the machine's memory (data.seq_len=1000 took
# 11 GB before the kernel killed it), refused before anything runs
MAXIMUM: dict[str, float] = _knobs("maximum")
RESULT_NEUTRAL_KEYS: tuple[str, ...] = tuple(_knobs("neutral"))
HASHED_WHEN_CHANGED: dict[str, Any] = {key: f.default for key, f in _fields().items()
                                       if f.metadata.get("hashed_when_changed")}


def seed_keys() -> tuple[str, ...]:
    """The keys in which the seeds of one report row may differ: the seed and the neutral keys."""
    return (*_knobs("seed"), *RESULT_NEUTRAL_KEYS)


def study_neutral_keys(report: bool = True) -> tuple[str, ...]:
    """The keys in which the workers (and invocations) of one Optuna study may differ: neutral and per-machine keys,
    and with `report` the report-only ones."""
    props = ("neutral", "per_machine", "report_only") if report else ("neutral", "per_machine")
    return tuple(key for key, f in _fields().items() if any(f.metadata.get(p) for p in props))


def field_type(key: str) -> Any:
    """The type hint of a dotted key ('eval.rerank' -> bool)."""
    section, _, name = key.partition(".")
    return _field_types(_section_classes()[section])[name]


def flatten_overrides(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'fusion': True}} -> {'model.fusion': True}; dotted keys pass through."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten_overrides(v, key + "."))
        else:
            flat[key] = v
    return flat


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any], where: str = "overrides") -> RunConfig:
    """Return `cfg` with dotted-key overrides applied and validated.

    `where` names the source (a spec file and row) in every error message.
    """
    changes: dict[str, dict[str, Any]] = {}
    for key, value in flatten_overrides(overrides).items():
        section, _, name = key.partition(".")
        changes.setdefault(section, {})[name] = coerce(key, value, where)
    new = cfg
    for section, vals in changes.items():
        new = dataclasses.replace(new, **{section: dataclasses.replace(getattr(new, section), **vals)})
    validate(new, where)
    return new


def coerce(key: str, value: Any, where: str = "overrides") -> Any:
    """`value` as the dotted key `key` holds it (an int for a float key is a float, a list for a tuple key a tuple);
    ConfigError on an unknown key or a wrong type (allowed values and ranges are checked by validate())."""
    sections = _section_classes()
    section, _, name = key.partition(".")
    if section not in sections or not name:
        raise ConfigError(f"{where}: unknown key '{key}'; sections are {sorted(sections)}")
    hints = _field_types(sections[section])
    if name not in hints:
        allowed = ", ".join(f"{section}.{n}" for n in hints)
        raise ConfigError(f"{where}: unknown key '{key}'; allowed in '{section}': {allowed}")
    return _coerce(key, value, hints[name], where)


def validate(cfg: RunConfig, where: str = "config") -> None:
    """Raise ConfigError naming the key and what is allowed for impossible values."""
    flat = to_flat_dict(cfg)
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: key '{key}' is {value}; must be a finite number")
    for key, allowed in CHOICES.items():
        if flat[key] in RENAMED.get(key, {}):
            raise ConfigError(f"{where}: key '{key}' is {flat[key]!r}, which was renamed {RENAMED[key][flat[key]]}")
        if flat[key] not in allowed:
            raise ConfigError(f"{where}: key '{key}' is {flat[key]!r}; allowed: {', '.join(allowed)}")
    for key, low in MINIMUM.items():
        if flat[key] < low:
            raise ConfigError(f"{where}: key '{key}' is {flat[key]!r}; must be >= {low}")
    for key, high in MAXIMUM.items():
        if flat[key] > high:
            raise ConfigError(f"{where}: key '{key}' is {flat[key]!r}; must be <= {high}")
    if not 0.0 < cfg.eval.audit_occluded <= 1.0:
        raise ConfigError(f"{where}: key 'eval.audit_occluded' is {cfg.eval.audit_occluded}; must be in (0, 1] (the "
                          f"damaged fraction from which a region-frame counts as occluded; 0 is 'clean')")
    if not 0.0 <= cfg.data.flip_prob <= 1.0:
        raise ConfigError(f"{where}: key 'data.flip_prob' is {cfg.data.flip_prob}; must be in [0, 1]")
    fmap_h = cfg.data.height // BACKBONE_STRIDE
    if cfg.model.num_regions > fmap_h:
        raise ConfigError(
            f"{where}: key 'model.num_regions' is {cfg.model.num_regions} but a {cfg.data.height}-pixel frame gives "
            f"feature maps of height {fmap_h}; K must be <= {fmap_h} (raise data.height or lower K)")
    if cfg.model.aggregation == "stal" and cfg.model.stal_parts > fmap_h:
        raise ConfigError(
            f"{where}: key 'model.stal_parts' is {cfg.model.stal_parts} but a {cfg.data.height}-pixel frame gives "
            f"feature maps of height {fmap_h}; STAL's R stripes must be <= {fmap_h} (raise data.height or lower R)")
    if cfg.data.height % BACKBONE_STRIDE or cfg.data.width % BACKBONE_STRIDE:
        raise ConfigError(f"{where}: keys 'data.height'/'data.width' ({cfg.data.height}x{cfg.data.width}) "
                          f"must be multiples of {BACKBONE_STRIDE}")
    ms = list(cfg.train.milestones)
    if any(m < 1 for m in ms) or any(a >= b for a, b in zip(ms, ms[1:])):
        raise ConfigError(f"{where}: key 'train.milestones' is {ms}; must be strictly increasing epochs >= 1, "
                          f"e.g. [200, 400]")
    if cfg.model.pretrained and cfg.model.init == "synthetic":
        if cfg.data.dataset != "synthetic":
            raise ConfigError(f"{where}: key 'model.init' is 'synthetic' but data.dataset is {cfg.data.dataset!r}: "
                              f"the synthetic pretraining stage is the cpu profile's stand-in for ImageNet on "
                              f"synthetic data only; use model.init=imagenet (the paper) or model.pretrained=false")
        if cfg.model.weights_path is not None:
            raise ConfigError(f"{where}: key 'model.weights_path' is set but model.init is 'synthetic', whose "
                              f"weights come from the pretraining stage (core.engine.pretrain); drop one of them")
        pm = list(cfg.pretrain.milestones)
        if any(m < 1 for m in pm) or any(a >= b for a, b in zip(pm, pm[1:])):
            raise ConfigError(f"{where}: key 'pretrain.milestones' is {pm}; must be strictly increasing epochs >= 1")
    if cfg.model.weights_path is not None and not cfg.model.pretrained:
        raise ConfigError(f"{where}: key 'model.weights_path' is {cfg.model.weights_path!r} but 'model.pretrained' "
                          f"is false, so it would be ignored; set model.pretrained=true to use it, or drop it")
    if cfg.eval.rerank and cfg.eval.distance != "euclidean":
        raise ConfigError(f"{where}: key 'eval.distance' is {cfg.eval.distance!r} but eval.rerank is true; "
                          f"k-reciprocal re-ranking works on Euclidean distances: set eval.distance=euclidean or "
                          f"eval.rerank=false")
    if cfg.data.dataset in ("mars", "duke") and not cfg.data.root:
        raise ConfigError(f"{where}: key 'data.root' is required for dataset '{cfg.data.dataset}' "
                          f"(the folder that holds the downloaded dataset)")
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"{where}: key 'train.device' is {dev!r}; allowed: auto, cpu, cuda, cuda:<index>")


def to_flat_dict(cfg: RunConfig) -> dict[str, Any]:
    """{'data.dataset': 'synthetic', ...}: the form logged as MLflow params."""
    return flatten_overrides(dataclasses.asdict(cfg))


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def uses_pretraining(cfg: RunConfig) -> bool:
    """True when the backbone starts from the synthetic pretraining stage (core.engine.pretrain)."""
    return cfg.model.pretrained and cfg.model.init == "synthetic"


# Fields that do not change what a run computes (how fast, how often it is saved), left out of config_hash.
# The number of GPUs is not a config field at all (a run tag): 1 or G GPUs train the same batches.
def config_hash(cfg: RunConfig, sections: tuple[str, ...] = ("data", "model", "loss", "train", "eval")) -> str:
    """Stable short hash of the chosen sections (used to reuse finished runs and checkpoints).

    The keys of RESULT_NEUTRAL_KEYS are left out; every other key enters it (tests/test_config.py checks both), and
    for synthetic data the generator's SYNTHETIC_VERSION. The `pretrain` keys enter (under "model") only when the
    backbone starts from the pretraining stage (uses_pretraining), so every other run keeps the hash it had before
    they existed.
    """
    d = {name: {k: v for k, v in section.items() if f"{name}.{k}" not in RESULT_NEUTRAL_KEYS}
         for name, section in to_dict(cfg).items() if name in sections and name != "pretrain"}
    for key, default in HASHED_WHEN_CHANGED.items():     # added after stores held runs: keep those runs' hashes
        name, _, field_ = key.partition(".")
        if name in d and d[name].get(field_) == default:
            del d[name][field_]
    if "model" in d and uses_pretraining(cfg):  # the pretraining stage made the starting weights: part of the model
        d["model"]["pretrain"] = {k: v for k, v in to_dict(cfg)["pretrain"].items()}
    if "data" in d and cfg.data.dataset == "synthetic":   # another generator version is other data
        d["data"]["synthetic_version"] = SYNTHETIC_VERSION
    blob = json.dumps(d, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
