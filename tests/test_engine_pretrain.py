"""The pretraining stage (model.init=synthetic; core.engine.pretrain, core.engine.pretrained, core.pretraining): its
identities are disjoint from every split by construction, it is cached by the hash of everything that makes it,
every run that uses it starts from its weights, it is refused off synthetic data, and it is its own MLflow run."""
from __future__ import annotations

import dataclasses
import json

import mlflow
import pytest
import torch

from core import pretraining, record, tracking
from core.config import ConfigError, RunConfig, apply_overrides, config_hash, uses_pretraining
from core.data import synthetic as syn
from core.data.render import sample_person
from core.engine import pretrain
from core.engine.pretrained import PretrainMissingError, load_backbone, stage_hash, start_model, weights_file
from core.models.backbone import build_backbone
from tests.helpers import states_equal

# a stage that takes a few seconds: 8 identities, 64 x 32 frames, one epoch of 2 iterations
STAGE = {"model.backbone": "resnet18_narrow", "model.pretrained": True, "model.init": "synthetic",
         "model.feat_dim": 32, "data.height": 64, "data.width": 32, "data.seq_len": 2, "data.num_workers": 0,
         "model.num_regions": 2, "pretrain.identities": 8, "pretrain.epochs": 1, "pretrain.milestones": [1],
         "pretrain.ids_per_batch": 4, "pretrain.tracklets_per_id": 2, "train.device": "cpu"}


def _cfg(**extra) -> RunConfig:
    return apply_overrides(RunConfig(), {**STAGE, **extra}, "tests")


def _people(pre: syn.Preset, seed: int = 0) -> set[str]:
    """Every person (appearance parameters, as text) that a preset's tree draws, train and test, distractors and
    junk included."""
    train, test = syn._plan(pre, seed)
    return {repr(sample_person(syn._stream(pre, seed, 1, s.who + 1_000_000))) for s in train + test}


def test_pretraining_people_are_no_person_of_any_evaluation_preset():
    people = _people(syn.pretrain_preset(300))
    assert len(people) >= 300                       # distinct people (a token test split of 2 is drawn too)
    for name, pre in syn.PRESETS.items():
        assert not people & _people(pre), name
    # by construction: the same plan position draws from a different stream than stream 0
    pre = syn.pretrain_preset(8)
    assert syn._stream(pre, 0, 1, 5).random() != syn._stream(syn.PRESETS["tiny"], 0, 1, 5).random()
    assert pre.stream == syn.PRETRAIN_STREAM != 0
    assert all(p.stream == 0 for p in syn.PRESETS.values())


def test_narrow_backbone_shape_and_no_imagenet_weights():
    net, channels = build_backbone("resnet18_narrow", pretrained=False)
    assert channels == 128 and sum(p.numel() for p in net.parameters()) == 702_096
    assert net(torch.zeros(2, 3, 128, 64)).shape == (2, 128, 8, 4)      # conv5 stride 1: H/16 x W/16
    with pytest.raises(Exception, match="no ImageNet weights"):
        build_backbone("resnet18_narrow", pretrained=True)


def test_config_refuses_pretraining_off_synthetic_data_and_with_a_weights_path():
    with pytest.raises(ConfigError, match="model.init.*synthetic.*mars"):
        apply_overrides(RunConfig(), {**STAGE, "data.dataset": "mars", "data.root": "/data"})
    with pytest.raises(ConfigError, match="weights_path"):
        apply_overrides(RunConfig(), {**STAGE, "model.weights_path": "/w.pt"})
    with pytest.raises(ConfigError, match="pretrain.milestones"):
        apply_overrides(RunConfig(), {**STAGE, "pretrain.milestones": [0]})


def test_pretrain_keys_enter_the_run_hash_only_when_used():
    plain = apply_overrides(RunConfig(), {"model.pretrained": False})
    assert config_hash(plain) == config_hash(apply_overrides(plain, {"pretrain.epochs": 3}))   # inert
    used = _cfg()
    assert uses_pretraining(used) and not uses_pretraining(plain)
    assert config_hash(used) != config_hash(apply_overrides(used, {"pretrain.epochs": 3}))


def test_stage_hash_covers_what_makes_the_weights_and_nothing_else(monkeypatch):
    base = stage_hash(_cfg())
    for key, value in {"pretrain.identities": 9, "pretrain.epochs": 2, "pretrain.lr": 3e-4, "pretrain.seed": 1,
                       "data.synthetic_seed": 1, "data.height": 128, "model.feat_dim": 16}.items():
        assert stage_hash(_cfg(**{key: value})) != base, key
    # what the rows do after it, and result-neutral keys, leave it alone
    for key, value in {"model.aggregation": "sta", "loss.reg_weight": 0.5, "train.epochs": 3, "train.seed": 4,
                       "train.device": "auto", "data.num_workers": 2, "eval.seq_len": 8, "model.num_regions": 1,
                       "model.stal_parts": 2, "data.synthetic_size": "small", "data.ids_per_batch": 2,
                       "train.lr": 0.1}.items():
        assert stage_hash(_cfg(**{key: value})) == base, key
    monkeypatch.setattr("core.engine.pretrained.SYNTHETIC_VERSION", 99)
    assert stage_hash(_cfg()) != base                       # another generator version is another tree


def test_missing_stage_is_named_with_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PretrainMissingError, match="reproduce/pretrain.py"):
        start_model(_cfg(), 4)


@pytest.mark.slow
def test_stage_is_trained_once_cached_and_every_run_starts_from_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg()
    first = pretrain.ensure(cfg, progress=False)
    assert first.trained and first.path == weights_file(cfg) and first.path.is_file()
    record = json.loads((first.path.parent / "pretrain.json").read_text())
    assert record["hash"] == stage_hash(cfg) and record["tree"]["identities"] == 8
    assert record["config"]["model"]["aggregation"] == "avg" and record["iterations"] == 2   # 8 ids / P=4, 1 epoch
    assert not (first.path.parent / "last.pt").exists()
    again = pretrain.ensure(cfg, progress=False)
    assert not again.trained and again.hash == first.hash                       # from the cache, no training
    saved = torch.load(first.path, weights_only=True)
    for row in ({"model.aggregation": "sta"}, {"model.aggregation": "avg", "train.seed": 3}):
        model = start_model(_cfg(**row), 5)
        assert states_equal(model.backbone.state_dict(), saved)
    untrained = start_model(apply_overrides(cfg, {"model.pretrained": False}), 5)
    assert not states_equal(untrained.backbone.state_dict(), saved)
    # a backbone of another shape does not load silently
    other = start_model(apply_overrides(cfg, {"model.pretrained": False, "model.backbone": "resnet18"}), 5)
    with pytest.raises(PretrainMissingError, match="does not fit"):
        load_backbone(other, first.path)


@pytest.mark.slow
def test_stage_is_logged_once_as_its_own_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking.configure(f"sqlite:///{tmp_path}/mlflow.db")
    cfg = _cfg()
    done = pretraining.ensure_logged(cfg, progress=False)
    again = pretraining.ensure_logged(cfg, progress=False)
    assert again.run_id == done.run_id and not again.stage.trained
    runs = mlflow.search_runs(experiment_names=[tracking.PRETRAIN_EXPERIMENT])
    assert len(runs) == 1 and runs["tags.stage_hash"].iloc[0] == stage_hash(cfg)
    assert runs["params.pretrain.identities"].iloc[0] == "8" and runs["params.model.aggregation"].iloc[0] == "avg"
    assert runs[f"metrics.{record.key('iterations')}"].iloc[0] == 2
    assert done.tags() == {"pretrain_hash": stage_hash(cfg), "pretrain_run": done.run_id,
                           "pretrain_weights": str(weights_file(cfg))}
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(done.run_id, "pretrain")}
    assert arts == {"pretrain/backbone.pt"}
    # a new store with the stage already cached: logged from pretrain.json, not trained again
    tracking.configure(f"sqlite:///{tmp_path}/other.db")
    third = pretraining.ensure_logged(cfg, progress=False)
    assert not third.stage.trained and third.run_id != done.run_id
    logged = mlflow.search_runs(experiment_names=[tracking.PRETRAIN_EXPERIMENT])
    assert logged["tags.from_cache"].iloc[0] == "True"
    assert logged[f"metrics.{record.key('iterations')}"].iloc[0] == 2


def test_preset_of_a_tree_is_part_of_its_completeness(tmp_path):
    """A pretraining tree of another identity count under the same name is not taken for this one."""
    root = tmp_path / "tree"
    syn.generate(root, "pretrainX", 0, progress=False, preset=syn.pretrain_preset(8))
    assert syn._is_complete(root, "pretrainX", 0, syn.pretrain_preset(8))
    assert not syn._is_complete(root, "pretrainX", 0, dataclasses.replace(syn.pretrain_preset(8), train_ids=9))
