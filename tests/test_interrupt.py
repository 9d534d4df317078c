"""One Ctrl+C stops a run (core.interrupt; issue 22): the first was swallowed by a DataLoader finaliser; a table
interrupted by it says in one line what was kept and how to resume, and its MLflow runs are marked KILLED."""
from __future__ import annotations

import os
import signal
import time

import pytest

import core.tables
from core import interrupt
from core.cli import main


def test_a_ctrl_c_swallowed_by_a_finaliser_still_stops_the_next_batch():
    interrupt.install()
    try:
        class Finaliser:                        # what a DataLoader iterator's __del__ does with the interrupt
            def __del__(self):
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.5)
                except KeyboardInterrupt:
                    pass                        # Python prints "Exception ignored in ..." and goes on
        Finaliser()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()                   # the training / extraction loops call this once per batch
    finally:
        interrupt.clear()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt.check()                           # cleared: nothing pending


def test_ctrl_c_during_a_table_is_one_line_saying_how_to_resume(tiny_synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(core.tables, "_run_job", interrupted)
    try:
        rc = main("table1", ["--rows", "1", "--quiet", "--data-root", str(tiny_synthetic_root), "--set",
                             "data.synthetic_size=tiny", "--set", "data.ids_per_batch=4",
                             "--set", "model.pretrained=false",       # no pretraining stage before the row
                             "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert rc == 130
    err = [ln for ln in capsys.readouterr().err.splitlines() if " INFO mlflow." not in ln]
    assert len(err) == 1 and err[0].startswith("interrupted (Ctrl+C):") and "run the same command again" in err[0]
    import mlflow
    runs = mlflow.search_runs(experiment_names=["STA table1"])
    assert set(runs["status"]) == {"KILLED"}                    # the parent and the row run say so in the UI
