"""End to end: two rows of Table 1 on the tiny synthetic dataset, one epoch each, tracked in a SQLite MLflow store;
a second invocation reuses the finished runs (no new runs, no training); the report holds both numbers."""
from __future__ import annotations

import re

import mlflow
import numpy as np
import pandas as pd
import pytest

import core.engine
from core import tracking
from core.cli import main
from tests.helpers import TINY_TABLE, set_args

pytestmark = pytest.mark.slow


def _argv(root, tmp_path, *extra):
    sets = set_args(TINY_TABLE)
    return ["--rows", "Baseline", "6", "--epochs", "1", "--device", "cpu", "--quiet", "--data-root", str(root),
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--work-dir", str(tmp_path / "runs"),
            "--reports-dir", str(tmp_path / "reports"), *sets, *extra]


def _runs(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return tracking.flat_columns(mlflow.search_runs(experiment_names=["STA table1"]))   # metrics: flat names


def test_table1_two_rows_tracked_reused_and_reported(tiny_synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main("table1", _argv(tiny_synthetic_root, tmp_path)) == 0
    assert "2 run(s) trained/evaluated, 0 reused, 0 failed" in capsys.readouterr().out

    runs = _runs(tmp_path)
    rows = runs[runs["tags.kind"] == "row"]
    assert len(runs[runs["tags.kind"] == "table"]) == 1
    assert sorted(rows["tags.row"]) == ["Baseline", "Baseline + TL + STA + Fusion + Reg"]
    assert set(rows["status"]) == {"FINISHED"}
    assert (rows["tags.mlflow.parentRunId"] == runs[runs["tags.kind"] == "table"]["run_id"].iloc[0]).all()
    for tag, value in {"tags.table": "table1", "tags.dataset": "synthetic", "tags.profile": "cpu",
                       "tags.seed": "0", "tags.device": "cpu"}.items():
        assert set(rows[tag]) == {value}
    assert rows["tags.config_hash"].nunique() == 2 and rows["tags.git_commit"].notna().all()
    # the resolved config as params, same names in every row; values differ where the rows do; a knob the row's
    # model does not use (Baseline: aggregation frame, no STA fusion) is left out and named in inert_params
    params = [c for c in runs.columns if c.startswith("params.")]
    assert {"params.model.aggregation", "params.loss.reg_weight", "params.eval.ap_rule",
            "params.train.seed"} <= set(params)
    for _, row in rows.iterrows():
        missing = {c[len("params."):] for c in params if pd.isna(row[c])}
        assert all(k in str(row.get("tags.inert_params", "")) for k in missing)
    assert pd.isna(rows[rows["tags.row"] == "Baseline"]["params.model.fusion"].iloc[0])
    # run names start with the table and row index (issue 23): they differ when the UI cuts them
    assert sorted(rows["tags.mlflow.runName"]) == ["T1.1 Baseline · seed 0",
                                                   "T1.6 Baseline + TL + STA + Fusion + Reg · seed 0"]
    assert sorted(rows["params.model.aggregation"]) == ["frame", "sta"]
    # final metrics in percent, per-epoch metrics at step = epoch
    for m in ("R1", "R5", "R10", "R20", "mAP"):
        for prefix in ("", "official_", "gao_"):                  # headline and both protocols [A15]
            assert rows[f"metrics.{prefix}{m}"].between(0, 100).all()
        assert (rows[f"metrics.{m}"] == rows[f"metrics.official_{m}"]).all()   # the default headline is official
    assert (rows["metrics.gao_num_gallery"] < rows["metrics.official_num_gallery"]).all()
    # the last epoch's loss terms as they enter the total: lambda * Reg is 0 on Baseline, > 0 on the + Reg row
    sta_row = rows[rows["tags.row"] != "Baseline"].iloc[0]
    assert sta_row["metrics.loss_reg_weighted"] == pytest.approx(1.0 * sta_row["metrics.loss_reg"])
    assert rows[rows["tags.row"] == "Baseline"]["metrics.loss_reg_weighted"].iloc[0] == 0.0
    client = mlflow.MlflowClient()
    sta = rows[rows["tags.row"] != "Baseline"].iloc[0]
    assert [h.step for h in client.get_metric_history(sta.run_id, "train/ce")] == [1]     # epoch 1, as printed
    inputs = client.get_run(sta.run_id).inputs.dataset_inputs                    # the Dataset column's data
    assert sorted((i.dataset.name, [t.value for t in i.tags][0]) for i in inputs) == \
        [("synthetic/tiny-seed0/query+gallery", "test"), ("synthetic/tiny-seed0/train", "training")]
    for name in ("triplet", "reg", "train_acc", "lr", "frames_per_s"):
        assert f"metrics.{name}" in rows
    artifacts = {a.path for a in client.list_artifacts(sta.run_id)}
    assert {"config.json", "spec_row.json", "cmc.json", "cmc.png", "attention.png", "scores.json",
            "per_query.parquet"} <= artifacts
    # every query's outcome: the MLflow artifact equals the file beside eval-<hash>.json; intervals in percent
    per_query = tracking.load_table(sta.run_id, tracking.PER_QUERY)
    on_disk = tmp_path / "runs" / sta["tags.train_dir"] / f"per_query-{sta['tags.config_hash']}.parquet"
    pd.testing.assert_frame_equal(per_query, pd.read_parquet(on_disk))
    headline = per_query[(per_query["protocol"] == "headline") & ~per_query["reranked"]]
    assert 100 * (headline["first_match_rank"] == 1).mean() / headline["ap"].notna().mean() == \
        pytest.approx(sta["metrics.R1"])
    assert sta["metrics.R1_ci_low"] <= sta["metrics.R1"] <= sta["metrics.R1_ci_high"] <= 100
    assert sta["metrics.gao_mAP_ci_low"] <= sta["metrics.gao_mAP"] <= sta["metrics.gao_mAP_ci_high"] <= 100
    assert "checkpoint" not in artifacts  # the checkpoint is logged on paper-profile runs only
    # the attention audit's uniformity (any dataset; the AUCs need a truth.parquet: tests/test_engine_audit.py)
    assert 0 <= sta["metrics.attn_dev_uniform"] <= 0.75 and 0 <= sta["metrics.attn_entropy"] <= 1
    assert np.isnan(rows[rows["tags.row"] == "Baseline"]["metrics.attn_dev_uniform"].iloc[0])   # no scores

    # a second invocation reuses both rows: no new runs of any row, no training
    def no_training(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(core.engine, "run", no_training)
    assert main("table1", _argv(tiny_synthetic_root, tmp_path)) == 0
    assert "0 run(s) trained/evaluated, 2 reused" in capsys.readouterr().out
    again = _runs(tmp_path)
    assert len(again[again["tags.kind"] == "row"]) == 2 and len(again[again["tags.kind"] == "table"]) == 2

    # the report: this run's numbers with their intervals beside the split's chance level, labelled synthetic (and
    # not set beside the paper's MARS numbers, which are only in the paper's table at the end)
    report = (tmp_path / "reports" / "table1.md").read_text()
    assert "**Headline protocol — synthetic, MARS layout** (= `official`" in report
    assert "**Protocol `gao` — synthetic, MARS layout**" in report and "queries without a valid match" in report
    assert "paper (MARS) R1" not in report and "| MARS R1 " in report
    chance = rows["metrics.chance_R1"]                               # logged by every row run, the same split
    assert chance.nunique() == 1 and 0 < chance.iloc[0] < 100 and (rows["metrics.gao_chance_mAP"] > 0).all()
    assert re.search(rf"\| — +\| chance \(random ranking\) +\| {chance.iloc[0]:.2f} ", report)
    cmc = tracking.load_json(rows["run_id"].iloc[0], "cmc.json")
    assert cmc["chance"][0] == pytest.approx(chance.iloc[0])        # the CMC figure's chance line
    for label, paper_r1 in (("Baseline", "74.5"), ("Baseline + TL + STA + Fusion + Reg", "86.3")):
        line = next(ln for ln in report.splitlines() if ln.startswith("|") and f"| {label} " in ln)
        ours = f"{rows[rows['tags.row'] == label]['metrics.R1'].iloc[0]:.1f}"
        assert paper_r1 not in line and f"{ours} [" in line          # with its 95 % interval (per-query results)
    assert "**What these runs ran**" in report and "preset `tiny` (data.synthetic_size)" in report
    assert (tmp_path / "reports" / "figures" / "table1_cpu_synthetic_bars.png").exists()
    # the claim verdicts (here: rows not run) on the latest table run
    latest = again[again["tags.kind"] == "table"].sort_values("start_time").iloc[-1]
    verdicts = tracking.load_json(latest["run_id"], tracking.CLAIMS)["claims"]
    assert len(verdicts) == 12 and {v["verdict"] for v in verdicts} == {"no verdict"}
    assert tracking.has_artifact(latest["run_id"], "report/table1.md")            # the report on the table's run
    assert tracking.has_artifact(latest["run_id"], "report/figures/table1_cpu_synthetic_bars.png")
    assert "### Claims" in report and "no verdict (row 'Baseline + TL' has no finished run)" in report
    assert "table1" in (tmp_path / "reports" / "README.md").read_text()
    audit = report[report.index("### Attention audit"):]
    assert f"{sta['metrics.attn_dev_uniform']:.4f}" in next(ln for ln in audit.splitlines()
                                                          if ln.startswith("| Baseline + TL + STA + Fusion + Reg"))
