"""A report says what it left out and why (issue 22, cases 4 and 7): a run whose per-query artifact was deleted is
named as such (not as "logged before per-query results"), and an older run of the same row and seed with another
config is listed under "Left out" with the keys that differ, not dropped silently."""
from __future__ import annotations

import pandas as pd

from core.reporting import claims
from core.reporting import report as reporting
from core.reporting import select
from core.specs import read_spec, spec_path
from tests.helpers import fake_store, per_query, run_row

LABELS = [r.label for r in read_spec(spec_path("table1")).rows]


def test_a_missing_per_query_artifact_is_named_with_its_run_id(tmp_path):
    frame = per_query([1] * 8 + [5] * 12)
    lost = {**run_row("lost-run", LABELS[0], frame, 0), "metrics.R1_ci_low": 30.0}   # logged with intervals
    old = run_row("old-run", LABELS[1], frame, 0)                                   # logged before them
    runs, load_table = fake_store([(lost, None), (old, None)])
    text = reporting.write_report(read_spec(spec_path("table1")), runs, tmp_path, load_table=load_table).read_text()
    assert "the artifact per_query.parquet of run lost-run is missing" in text
    assert claims.NO_INTERVAL in text                                     # the old run keeps its own reason
    assert "lost-run is missing" not in claims.row_frames(pd.DataFrame([old]), "headline", load_table)[1]
    assert claims.row_frames(pd.DataFrame([lost]), "headline", load_table)[1] == \
        "no interval: the artifact per_query.parquet of run lost-run is missing (deleted from the store?)"


def _with_params(run: dict, epochs: int, start_s: int) -> dict:
    return {**run, "params.train.epochs": str(epochs), "params.train.lr": "0.0003",
            "start_time": pd.Timestamp(start_s, unit="s", tz="UTC")}


def test_an_older_run_of_the_same_seed_with_another_config_is_listed(tmp_path):
    frame = per_query([1] * 8 + [5] * 12)
    older = _with_params(run_row("older-1ep", LABELS[0], frame, 0), 1, 10)     # seed 0, 1 epoch, superseded
    newer = _with_params(run_row("newer-3ep", LABELS[0], frame, 0), 3, 20)     # seed 0, 3 epochs: kept
    same = _with_params(run_row("rerun-3ep", LABELS[0], frame, 0), 3, 5)       # seed 0, same config, older
    runs, load_table = fake_store([(older, frame), (newer, frame), (same, frame)])
    sel = select.select_runs(runs)
    assert list(sel["run_id"]) == ["newer-3ep"]
    kept, left = select.same_config_runs(sel, runs)
    assert list(kept["run_id"]) == ["newer-3ep"]
    assert [(lo["run_id"], lo["keys"]) for lo in left] == [("older-1ep", {"train.epochs": ("1", "3")})]
    text = reporting.write_report(read_spec(spec_path("table1")), runs, tmp_path, load_table=load_table).read_text()
    assert f"- {LABELS[0]} (synthetic, MARS layout), seed 0: run `older-1ep` — train.epochs = 1 (kept runs: 3)" in text
    assert "rerun-3ep" not in text                                  # same config as the kept run: nothing left out
    assert select.same_config_runs(sel)[1] == []                 # without the full frame: only the selected runs
