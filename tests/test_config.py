"""core/config.py: the allowed values of every choice key (its Literal type; config.py cannot import the
torch-heavy registries) stay the values the implementing modules accept; every key that can change a result enters the config
hash (and the training hash for data/model/loss/train keys), the speed and save knobs do not; impossible values
are refused naming the key; removed keys (train.eval_every) are unknown keys."""
import pytest

from core.config import (BACKBONE_STRIDE, CHOICES, RESULT_NEUTRAL_KEYS, ConfigError, RunConfig, allowed_keys,
                         apply_overrides, config_hash)
from core.data.datasets import DATASETS
from core.data.sampling import EPOCH_DEFS, EVAL_FRAMES, FLIP_PER, TRAIN_FRAMES
from core.data.synthetic import PRESETS
from core.engine import train_dir
from core.evaluation.distance import METRICS as DISTANCES
from core.evaluation.metrics import AP_RULES
from core.engine.pretrained import INITS
from core.engine.training import OPTIMIZERS
from core.models.backbone import BACKBONE_NAMES
from core.models.model import AGGREGATIONS, F2_WEIGHTS
from core.models.sta import ATTENTION, REMAINDERS
from core.models.stan import STAN_EMBEDS
from core.models.stal import PART_NORMS
from core.specs import load_spec, spec_path
from tests.helpers import tiny_cfg

IMPLEMENTED = {
    "data.dataset": DATASETS, "data.synthetic_size": PRESETS, "data.train_sampling": TRAIN_FRAMES,
    "data.epoch_def": EPOCH_DEFS, "data.flip_per": FLIP_PER, "model.backbone": BACKBONE_NAMES, "model.aggregation": AGGREGATIONS,
    "model.attention": ATTENTION, "model.f2_weights": F2_WEIGHTS, "model.remainder": REMAINDERS,
    "model.stan_embed": STAN_EMBEDS,
    "model.stal_part_norm": PART_NORMS, "model.init": INITS, "train.optimizer": OPTIMIZERS,
    "eval.sampling": EVAL_FRAMES, "eval.distance": DISTANCES, "eval.ap_rule": AP_RULES,
}


def test_every_choice_key_is_checked_here():
    assert set(IMPLEMENTED) == set(CHOICES)


@pytest.mark.parametrize("key", sorted(IMPLEMENTED))
def test_config_choices_match_the_implementation(key):
    assert set(CHOICES[key]) == set(IMPLEMENTED[key]), key


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
