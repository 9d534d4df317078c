"""The main job's console lines (core.table_console): where the report and store are, row i of n, each finished row's
R1 / mAP with its interval and the chance level, the time left."""
from __future__ import annotations

import io
from types import SimpleNamespace

from core.table_console import TableConsole


def test_lines_name_the_row_its_interval_chance_and_time_left(monkeypatch):
    clock = iter([0.0, 60.0, 60.0, 150.0])          # row 1 takes 60 s, row 3 takes 90 s
    monkeypatch.setattr("core.table_console.time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    console = TableConsole("table1", ["A [seed 0]", "B [seed 0]", "C [seed 0]"], [None, "run-b", None],
                           "sqlite:///m.db", "reports/table1.md", stream=out)
    console.start(0)
    console.done(0, SimpleNamespace(metrics={"R1": 0.5, "R1_ci_low": 0.45, "R1_ci_high": 0.551, "mAP": 0.4,
                                             "mAP_ci_low": 0.35, "mAP_ci_high": 0.45, "chance_R1": 0.0022,
                                             "chance_mAP": 0.008}))
    console.start(2)
    console.failed(2, ValueError("boom"))
    lines = out.getvalue().splitlines()
    assert lines[0] == ("table1: 3 run(s): 2 to train and evaluate, 1 reused from the store; MLflow store: "
                        "sqlite:///m.db; report: reports/table1.md")
    assert lines[1] == "[1/2] A [seed 0]: training and evaluating"
    assert lines[2] == ("[1/2] A [seed 0]: R1 50.0 [45.0, 55.1], mAP 40.0 [35.0, 45.0] (chance: R1 0.22, mAP 0.80) "
                        "in 1 min 00 s; about 1 min 00 s left")
    assert lines[3] == "[2/2] C [seed 0]: training and evaluating; last row"
    assert lines[4] == "[2/2] C [seed 0]: failed (ValueError: boom); last row"


def test_quiet_console_prints_nothing():
    out = io.StringIO()
    console = TableConsole("table1", ["A"], [None], "sqlite:///m.db", "r.md", enabled=False, stream=out)
    console.start(0)
    console.done(0, SimpleNamespace(metrics={}))
    assert out.getvalue() == ""
