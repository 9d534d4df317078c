"""What a newcomer ran into (issue 22): one Ctrl+C stops a run (the first was swallowed by a DataLoader finaliser) with
one line saying what was kept and how to resume; `core.data.check --dataset synthetic` looks for the data the
tables use, and its --help answers at once (torch was imported before the arguments were parsed). The report.py
case (stubs replacing reports with runs) is in tests/test_stores.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import core.tables
from core import interrupt
from core.cli import main
from core.data import check
from core.specs import load_profiles

REPO = Path(__file__).resolve().parent.parent


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


def test_check_looks_for_the_synthetic_data_the_tables_use(tmp_path, monkeypatch, capsys):
    cpu = load_profiles()["cpu"]                              # what reproduce/tableN.py runs on without flags
    assert (check.TABLE_PRESET, check.TABLE_SEED) == (cpu["data.synthetic_size"], cpu.get("data.synthetic_seed", 0))
    from core.data.synthetic import PRESETS, default_root
    assert set(check.PRESET_NAMES) == set(PRESETS)
    monkeypatch.chdir(tmp_path)
    assert check.main(["--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert str(default_root("occluded", 0)) in err and "--size occluded --seed 0" in err and err.count("\n") == 1


def test_check_help_does_not_import_torch():
    code = "import sys, runpy; sys.argv = ['check', '--help']\ntry:\n runpy.run_module('core.data.check', " \
           "run_name='__main__')\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("False"), out.stdout + out.stderr
