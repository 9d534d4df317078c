"""core/config.py lists the allowed values of every choice key by hand (it cannot import torch-heavy modules);
these must stay the values the implementing modules accept."""
import pytest

from core.config import CHOICES
from core.data.datasets import DATASETS
from core.data.sampling import EPOCH_DEFS, EVAL_FRAMES, FLIP_PER, TRAIN_FRAMES
from core.data.synthetic import PRESETS
from core.evaluation.distance import METRICS as DISTANCES
from core.evaluation.metrics import AP_RULES
from core.models.backbone import BACKBONES
from core.models.model import AGGREGATIONS, F2_WEIGHTS
from core.models.sta import ATTENTION, REMAINDERS

IMPLEMENTED = {
    "data.dataset": DATASETS, "data.synthetic_size": PRESETS, "data.train_sampling": TRAIN_FRAMES,
    "data.epoch_def": EPOCH_DEFS, "data.flip_per": FLIP_PER, "model.backbone": BACKBONES, "model.aggregation": AGGREGATIONS,
    "model.attention": ATTENTION, "model.f2_weights": F2_WEIGHTS, "model.remainder": REMAINDERS,
    "eval.sampling": EVAL_FRAMES, "eval.distance": DISTANCES, "eval.ap_rule": AP_RULES,
}


def test_every_choice_key_is_checked_here():
    assert set(IMPLEMENTED) == set(CHOICES)


@pytest.mark.parametrize("key", sorted(IMPLEMENTED))
def test_config_choices_match_the_implementation(key):
    assert set(CHOICES[key]) == set(IMPLEMENTED[key]), key


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
