"""reporting.write_report (issue 12): a row averages only the seeds of one config and lists the runs it left out; a
report killed or failing while written keeps the old markdown and every figure it links (figures before markdown,
unlinked figures removed only after the new markdown is in place)."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from core import tracking
from core.reporting import report as reporting
from core.config import apply_overrides, config_hash
from core.specs import load_spec, read_spec, spec_path
from tests.helpers import HOST, FakeEpoch, FakeResult, fake_per_query, no_temp


def _log(spec, row, seed: int, r1: float, **overrides) -> str:
    """A finished row run of `row` with `overrides` applied to its config (tests.helpers.log_fake_row logs more results)."""
    cfg = apply_overrides(row.config, {"train.seed": seed, **overrides}, "tests")
    tags = {"table": spec.table, "row": row.label, "dataset": "synthetic", "profile": spec.profile, "seed": seed,
            "config_hash": config_hash(cfg)}
    with tracking.child_run(f"{row.label} [seed {seed}]", tags) as run_id:
        tracking.log_config(cfg)
        metrics = {"R1": r1, "R5": 0.8, "R10": 0.9, "R20": 0.95, "mAP": 0.5, "num_queries": 10.0}
        tracking.log_result(FakeResult(metrics, np.linspace(r1, 1.0, 20), [FakeEpoch(0)], {}, {},
                                       fake_per_query(metrics)))
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Table 1's Baseline: seed 0 trained 1 epoch, seed 1 (logged later) 3 epochs; "+ TL" seed 0."""
    uri = tracking.configure(f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")
    t1 = load_spec(spec_path("table1"), "cpu")
    with tracking.parent_run(tracking.experiment_name("table1"), "test"):
        short = _log(t1, t1.rows[0], 0, 0.50, **{"train.epochs": 1})
        long = _log(t1, t1.rows[0], 1, 0.60, **{"train.epochs": 3})
        _log(t1, t1.rows[1], 0, 0.70, **{"train.epochs": 3})
    return {"uri": uri, "short": short, "long": long}


def test_report_averages_only_seeds_of_one_config_and_lists_the_others(store, tmp_path):
    tracking.configure(store["uri"])
    runs = tracking.runs_frame("STA table1")
    assert set(runs["tags.worker"]) == {f"{HOST}:{os.getpid()}"}            # every run names its process
    text = reporting.write_report(read_spec(spec_path("table1")), runs, tmp_path / "reports",
                                  load_json=tracking.load_json).read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| 1 "))
    assert "60.0" in line and "±" not in line and "55.0" not in line        # not averaged with the 1-epoch seed
    assert (f"- Baseline (synthetic, MARS layout), seed 0: run `{store['short']}` — train.epochs = 1 "
            f"(kept runs: 3)") in text
    assert text.count("train.epochs = 1 ") == 1                             # only the left-out run is listed
    assert "**These runs depart from the profile `cpu`** in: train.epochs = 3 (profile: 20)" in text   # the kept


def test_killed_report_keeps_the_old_markdown_and_every_figure_it_links(store, tmp_path, monkeypatch):
    import pandas as pd

    import core.atomic as ckpt
    tracking.configure(store["uri"])
    spec, reports = read_spec(spec_path("table1")), tmp_path / "reports"
    md = reporting.write_report(spec, tracking.runs_frame("STA table1"), reports, load_json=tracking.load_json)
    old = md.read_bytes()
    linked = re.findall(r"\]\(figures/([^)]+)\)", md.read_text())
    assert linked

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_text", killed)           # killed right before the markdown is replaced
    with pytest.raises(KeyboardInterrupt):
        reporting.write_report(spec, pd.DataFrame(), reports)  # the new report has no figures at all
    assert md.read_bytes() == old and all((reports / "figures" / f).exists() for f in linked)
    monkeypatch.undo()

    def half_written(text, path):                             # the markdown's writer fails half-way
        def write(f):
            f.write(text[:len(text) // 2])
            raise OSError("disk full")
        return ckpt.atomic_write(path, write, mode="w")

    monkeypatch.setattr(ckpt, "save_text", half_written)
    with pytest.raises(OSError, match="disk full"):
        reporting.write_report(spec, tracking.runs_frame("STA table1"), reports, load_json=tracking.load_json)
    assert md.read_bytes() == old and all((reports / "figures" / f).exists() for f in linked)
    assert no_temp(reports) and no_temp(reports / "figures")
    monkeypatch.undo()

    reporting.write_report(spec, pd.DataFrame(), reports)    # done: unlinked figures go only now
    assert "No finished runs yet" in md.read_text() and not list((reports / "figures").glob("table1_*.png"))
