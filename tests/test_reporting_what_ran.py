"""Every report that used the pretraining stage names it (hash, MLflow run, not ImageNet); others say nothing of it."""
from __future__ import annotations

import pandas as pd

from core.reporting.what_ran import ran_lines, stage_text


def _runs(**tags) -> pd.DataFrame:
    base = {"tags.dataset": ["synthetic"], "params.model.pretrained": ["True"], "params.model.backbone":
            ["resnet18_narrow"], "params.data.synthetic_size": ["occluded"], "params.data.synthetic_seed": ["0"]}
    return pd.DataFrame({**base, **{f"tags.{k}": [v] for k, v in tags.items()}})


def test_runs_from_the_stage_name_it_in_what_they_ran():
    runs = _runs(pretrain_hash="07f9151ad048cc6a", pretrain_run="fd085a56")
    text = " ".join(ran_lines(runs, ["synthetic"], [0]))
    assert "resnet18_narrow pretrained from the synthetic pretraining stage `07f9151ad048cc6a` (MLflow run " \
           "`fd085a56`) of experiment 'STA pretraining'" in text
    assert "stand-in for ImageNet" in text


def test_runs_without_the_stage_say_nothing_of_it():
    assert stage_text(_runs()) == ""
    assert stage_text(_runs(pretrain_hash=float("nan"))) == ""
