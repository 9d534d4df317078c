"""core/config.py: the allowed values of every choice key (its Literal type; config.py cannot import the
torch-heavy registries) stay the values the implementing modules accept; every key that can change a result enters the config
hash (and the training hash for data/model/loss/train keys), the speed and save knobs do not; impossible values
are refused naming the key; removed keys (train.eval_every) are unknown keys."""
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.config import (BACKBONE_STRIDE, CHOICES, RESULT_NEUTRAL_KEYS, ConfigError, RunConfig, allowed_keys,
                         apply_overrides, config_hash)
from core.data.datasets import DATASETS
from core.data.sampling import EVAL_FRAMES, TRAIN_FRAMES, IdentityBatchSampler, flip_decisions
from core.data.synthetic import PRESETS
from core.engine import train_dir
from core.engine.pretrained import PretrainMissingError, start_model
from core.engine.training import make_optimizer
from core.evaluation.distance import pairwise_distance
from core.evaluation.metrics import evaluate
from core.models.backbone import BACKBONE_NAMES, WeightsUnavailableError
from core.models.model import VideoReIDModel
from core.models.sta import ATTENTION, region_bounds
from core.models.stal import spatial_weights
from core.models.stan import STANHead
from core.specs import load_spec, spec_path
from tests.helpers import tiny_cfg

# Choice keys whose implementation dispatches through a dict (or a registry built from dicts): its keys are what it
# accepts.
DISPATCH = {
    "data.dataset": DATASETS, "data.synthetic_size": PRESETS, "data.train_sampling": TRAIN_FRAMES,
    "eval.sampling": EVAL_FRAMES, "model.backbone": BACKBONE_NAMES, "model.attention": ATTENTION,
}


# Choice keys whose implementation branches on the value (if value == "a": ... else: ...) and validates it against a
# tuple derived from the Literal itself, so comparing those tuples with the Literal cannot fail. Each probe runs the
# implementation with one value and returns what it did; it raises ValueError for a value the implementation does
# not implement. The case asserts that every choice of the Literal gives its own result (a choice that only falls
# into another choice's `else` branch gives that choice's result) and that a value outside the Literal is refused.
def _epoch_def(value):
    # 4 identities x 5 tracklets, P = K = 2: an epoch of identities is 4 // 2 = 2 batches, of tracklets 20 // 4 = 5
    return tuple(map(tuple, IdentityBatchSampler(np.repeat(np.arange(4), 5), 2, 2, seed=0, epoch_def=value)))


def _flip_per(value):
    return tuple(flip_decisions(8, 0.5, value, np.random.default_rng(0)))


def _model(**options):
    """What VideoReIDModel does with `options`: frames per clip in training, the output's keys and the test-time
    features of two random clips (3 frames of 64 x 32: a 4 x 2 map, so K = 2 regions or parts)."""
    torch.manual_seed(0)
    net = VideoReIDModel(7, backbone="resnet18", pretrained=False, feat_dim=8, num_regions=2, stal_parts=2,
                         **options)
    clips = torch.rand(2, 3, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    per_clip = net.train()(clips)["frames_per_clip"]
    with torch.no_grad():
        out = net.eval()(clips)
    return per_clip, tuple(sorted(out)), tuple(out["feat"].flatten().round(decimals=4).tolist())


def _stan_embed(value):
    torch.manual_seed(0)
    head = STANHead(8, models=2, hidden=4, embed=value, feat_dim=4)
    with torch.no_grad():
        clip = head(torch.rand(1, 3, 8, 2, 2, generator=torch.Generator().manual_seed(1)))["clip"]
    return head.out_dim, tuple(clip.flatten().round(decimals=4).tolist())


def _stal_part_norm(value):
    # mean attention over the frames [0.4, 0.6]: l1 -> [0.4, 0.6], l2 -> [0.4, 0.6] / sqrt(0.52) = [0.555, 0.832]
    return tuple(spatial_weights(torch.tensor([[[0.2, 0.9], [0.6, 0.3]]]), value).flatten().round(decimals=4).tolist())


def _distance(value):
    # euclidean: [1, sqrt(2)]; cosine: [0, 1]
    return tuple(pairwise_distance(torch.tensor([[1., 0.]]), torch.tensor([[2., 0.], [0., 1.]]), value)
                 .flatten().round(decimals=4).tolist())


def _ap_rule(value):
    # one query, its only match at rank 2: step AP 1/2, trapezoid (0 + 1/2) / 2 = 1/4
    return evaluate(np.array([[0.1, 0.2]]), np.array([1]), np.array([2, 1]), np.array([1]), np.array([2, 2]),
                    max_rank=2, ap_rule=value)["mAP"]


def _optimizer(value):
    train = SimpleNamespace(**{**dataclasses.asdict(RunConfig().train), "optimizer": value})
    return type(make_optimizer(SimpleNamespace(train=train), [torch.nn.Parameter(torch.zeros(1))])).__name__


def _init(value, folder):
    """Which weights start_model looks for with model.pretrained and model.init=`value`: torch's cache and the
    stage's cache are empty folders, so each source says in its own error that its file is missing. start_model
    has no refusal of its own (the config refuses the value): a value that loads nothing is refused here."""
    cfg = RunConfig()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone="resnet18", pretrained=True,
                                                             init=value))
    try:
        start_model(cfg, 7, cache=folder)
    except (WeightsUnavailableError, PretrainMissingError) as error:
        return type(error).__name__
    raise ValueError(f"model.init={value!r}: start_model loaded no weights")


BEHAVIOUR = {
    "data.epoch_def": _epoch_def, "data.flip_per": _flip_per,
    "model.aggregation": lambda v: _model(aggregation=v, fusion=False),   # with fusion the `else` (sta) branch of an
    "model.f2_weights": lambda v: _model(aggregation="sta", f2_weights=v),  # unknown value would differ from sta's
    "model.remainder": lambda v: tuple(region_bounds(6, 4, v)),          # last: 1 1 1 3 rows, spread: 2 2 1 1
    "model.stan_embed": _stan_embed, "model.stal_part_norm": _stal_part_norm, "model.init": _init,
    "train.optimizer": _optimizer, "eval.distance": _distance, "eval.ap_rule": _ap_rule,
}


def test_every_choice_key_is_checked_here():
    assert set(DISPATCH) | set(BEHAVIOUR) == set(CHOICES) and not set(DISPATCH) & set(BEHAVIOUR)


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_config_choices_match_the_implementation(key, tmp_path, monkeypatch):
    if key in DISPATCH:
        assert set(CHOICES[key]) == set(DISPATCH[key]), key
        return
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))    # no ImageNet weights (model.init)
    probe = BEHAVIOUR[key] if key != "model.init" else lambda v: _init(v, tmp_path / "stage")
    results = {value: probe(value) for value in CHOICES[key]}
    assert len(set(results.values())) == len(results), f"{key}: choices that do the same: {results}"
    with pytest.raises(ValueError):
        probe("not_a_choice")


# defaults with a data.root, so that data.dataset can become mars or duke
BASE = apply_overrides(RunConfig(), {"data.root": "/data"})


def _other_value(cfg: RunConfig, key: str):
    """`cfg` with `key` set to another valid value, the first of a few candidates of its type that validates."""
    section, name = key.split(".")
    value = getattr(getattr(cfg, section), name)
    if key in CHOICES:
        candidates = list(CHOICES[key])
    elif isinstance(value, bool):
        candidates = [not value]
    elif isinstance(value, int):
        candidates = [value + 1, value + BACKBONE_STRIDE, 2 * value, value - 1]
    elif isinstance(value, float):
        candidates = [value / 2, value + 0.1, 0.5]
    elif isinstance(value, tuple):
        candidates = [tuple(v + 1 for v in value), value[:-1]]
    else:                                                                # str or None
        candidates = ["cpu", "cuda", "elsewhere/file"]
    for candidate in (c for c in candidates if c != value):
        try:
            return apply_overrides(cfg, {key: candidate})
        except ConfigError:
            continue
    raise AssertionError(f"no other valid value of {key} among {candidates}: add one here")


def test_result_neutral_keys_are_these():
    # a key joins this list only when it cannot change a result: change this test with care
    assert set(RESULT_NEUTRAL_KEYS) == {"data.num_workers", "train.device", "train.checkpoint_every_s", "train.compile",
                                       "train.log_checkpoint"} and set(RESULT_NEUTRAL_KEYS) <= set(
        allowed_keys())


# the pretrain keys act only when the backbone starts from the pretraining stage (tests/test_engine_pretrain.py
# checks that they are inert otherwise)
PRETRAINED = apply_overrides(BASE, {"model.backbone": "resnet18_narrow", "model.init": "synthetic"})


@pytest.mark.parametrize("key", allowed_keys())
def test_every_key_that_can_change_a_result_changes_the_hashes(key):
    base = PRETRAINED if key.startswith("pretrain.") else BASE
    other = _other_value(base, key)
    assert other != base
    full = config_hash(other) != config_hash(base)                      # reuse of finished runs
    trained = train_dir(other, "runs") != train_dir(base, "runs")       # checkpoint folder: data/model/loss/train
    if key in RESULT_NEUTRAL_KEYS:
        assert not full and not trained, f"{key} is declared result-neutral but changes a hash"
    elif key.startswith("eval."):
        assert full and not trained, f"{key} must change the config hash only (one trained model, many evaluations)"
    else:
        assert full and trained, f"{key} can change a result: it must change the config hash and the training hash"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("key", ["train.lr", "loss.margin", "eval.rerank_lambda"])
def test_non_finite_numbers_are_refused(key, value):
    with pytest.raises(ConfigError, match=rf"where: key '{key}' is -?(nan|inf); must be a finite number"):
        apply_overrides(RunConfig(), {key: value}, "where")


@pytest.mark.parametrize("milestones", [[-1, 4], [4, 2], [3, 3], [0, 5]])
def test_negative_unsorted_or_repeated_milestones_are_refused(milestones):
    with pytest.raises(ConfigError, match=r"key 'train.milestones' is .*; must be strictly increasing epochs >= 1"):
        apply_overrides(RunConfig(), {"train.milestones": milestones})
    assert apply_overrides(RunConfig(), {"train.milestones": [3]}).train.milestones == (3,)
    assert apply_overrides(RunConfig(), {"train.milestones": []}).train.milestones == ()


def test_weights_path_without_pretrained_is_refused_naming_both_keys():
    with pytest.raises(ConfigError, match=r"'model.weights_path' is '/w.pth' but 'model.pretrained' is false"):
        apply_overrides(RunConfig(), {"model.pretrained": False, "model.weights_path": "/w.pth"})
    assert apply_overrides(RunConfig(), {"model.weights_path": "/w.pth"}).model.weights_path == "/w.pth"


@pytest.mark.parametrize("key", ["train.seed", "data.synthetic_seed"])
def test_negative_seeds_are_refused(key):
    with pytest.raises(ConfigError, match=rf"key '{key}' is -1; must be >= 0"):
        apply_overrides(RunConfig(), {key: -1})


def test_renamed_attention_and_rerank_with_cosine_are_refused():
    from core.config import ConfigError, RunConfig, apply_overrides
    with pytest.raises(ConfigError, match="'model.attention' is 'l2', which was renamed norm_l2"):
        apply_overrides(RunConfig(), {"model.attention": "l2"}, "spec.yaml")
    with pytest.raises(ConfigError, match="eval.distance.*'cosine' but eval.rerank is true"):
        apply_overrides(RunConfig(), {"eval.rerank": True, "eval.distance": "cosine"}, "spec.yaml")
    assert apply_overrides(RunConfig(), {"eval.distance": "cosine"}).eval.distance == "cosine"


def test_paper_defaults_of_the_audit():
    from core.config import RunConfig
    cfg = RunConfig()
    assert (cfg.model.attention, cfg.model.classifier_bias, cfg.data.flip_per) == ("energy", False, "frame")


def test_the_synthetic_generator_version_enters_the_hashes(monkeypatch):
    # a finished run on an older synthetic tree (another VERSION) must not be reused or resumed
    import core.config as config
    synthetic, mars = RunConfig(), apply_overrides(RunConfig(), {"data.dataset": "mars", "data.root": "/d"})
    before = [config_hash(c) for c in (synthetic, mars)] + [train_dir(c, "runs") for c in (synthetic, mars)]
    monkeypatch.setattr(config, "SYNTHETIC_VERSION", config.SYNTHETIC_VERSION + 1)
    after = [config_hash(c) for c in (synthetic, mars)] + [train_dir(c, "runs") for c in (synthetic, mars)]
    assert before[0] != after[0] and before[2] != after[2]                # synthetic: both hashes move
    assert before[1] == after[1] and before[3] == after[3]                # real data: untouched


def test_config_hash_leaves_out_speed_and_save_knobs(tiny_synthetic_root):
    base = tiny_cfg(tiny_synthetic_root)
    same = tiny_cfg(tiny_synthetic_root, **{"train.checkpoint_every_s": 5.0, "train.compile": True,
                                            "data.num_workers": 3})
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash(tiny_cfg(tiny_synthetic_root, **{"train.lr": 1e-3}))


# ---- config: train.eval_every is gone ------------------------------------------------------------------------

def test_eval_every_is_an_unknown_key(tmp_path, capsys):
    from core.cli import main
    from core.config import RunConfig
    with pytest.raises(ConfigError, match=r"unknown key 'train.eval_every'"):
        apply_overrides(RunConfig(), {"train.eval_every": 1})
    spec = tmp_path / "old.yaml"
    spec.write_text(spec_path("table1").read_text().replace("base: {}", "base: {train.eval_every: 2}"))
    with pytest.raises(ConfigError, match=r"old.yaml.*unknown key 'train.eval_every'"):
        load_spec(spec, "cpu")
    assert main("table1", ["--set", "train.eval_every=1", "--work-dir", str(tmp_path)]) == 2
    assert "unknown key 'train.eval_every'" in capsys.readouterr().err
