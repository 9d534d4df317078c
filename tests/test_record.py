"""The run record (core/record.py): params read back with their fields' types, runs as typed records, units."""
from __future__ import annotations

import pandas as pd
import pytest

from core import record


@pytest.mark.parametrize("key, text, value", [
    ("eval.rerank", "True", True), ("eval.rerank", "False", False),            # bool, not the truthy string
    ("train.epochs", "20", 20), ("loss.margin", "0.3", 0.3), ("loss.reg_weight", "0", 0.0),
    ("train.milestones", "[15]", (15,)), ("train.milestones", "(200, 400)", (200, 400)),
    ("model.weights_path", "None", None), ("data.root", "/data/mars", "/data/mars"),   # str | None
    ("model.aggregation", "sta", "sta"),
    ("trial.number", "3", "3"), ("label", "chosen", "chosen"),                   # no config key: the text
    ("loss.margin", "abc", "abc"), ("eval.rerank", "yes", "yes"),                # not what the suite logs: the text
])
def test_typed_reads_a_param_back_with_its_fields_type(key, text, value):
    got = record.typed(key, text)
    assert got == value and type(got) is type(value)


def test_param_reads_a_runs_column_and_a_missing_value_is_none():
    run = pd.Series({"params.eval.rerank": "True", "params.train.epochs": float("nan")})
    assert record.param(run, "eval.rerank") is True
    assert record.param(run, "train.epochs") is None and record.param(run, "loss.margin") is None
    assert record.param_col("eval.rerank") == "params.eval.rerank" and record.metric_col("R1") == "metrics.R1"


def test_a_run_record_has_typed_config_and_flat_metric_names():
    rec = record.RunRecord.of("abc", "T1.1 Baseline · seed 0", "FINISHED",
                              {"loss.margin": "0.3", "eval.rerank": "False", "label": "chosen"}, {"kind": "row"},
                              {"Headline/R1": 61.5, "interval/R1_ci_low": 55.0, "official/rerank_mAP": 40.0,
                               "system/cpu_utilization_percentage": 7.0})
    assert rec.config == {"loss.margin": 0.3, "eval.rerank": False, "label": "chosen"}
    assert rec.metrics == {"R1": 61.5, "R1_ci_low": 55.0, "official_rerank_mAP": 40.0,
                           "system/cpu_utilization_percentage": 7.0}
    assert rec.tags == {"kind": "row"} and rec.run_id == "abc" and rec.status == "FINISHED"


@pytest.mark.parametrize("name, percent", [
    ("R1", True), ("mAP", True), ("rerank_R5", True), ("gao_mAP_ci_high", True), ("official_rerank_R1_ci_low", True),
    ("chance_R1", True), ("num_queries", False), ("loss_ce", False), ("attn_auc_map", False), ("train_wall_s", False),
])
def test_is_percent_names_the_retrieval_metrics_and_their_bounds(name, percent):
    assert record.is_percent(name) is percent


def test_the_metrics_every_run_computes_and_the_old_timing_names_stores_still_hold():
    assert record.METRICS == ("R1", "R5", "R10", "R20", "mAP")
    assert record.OLD_METRIC_NAMES[record.TRAIN_WALL_S] == "train_seconds"
