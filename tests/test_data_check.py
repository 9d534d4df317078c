"""python -m core.data.check (issue 22): `--dataset synthetic` looks for the synthetic data the tables use, and its
--help answers at once (torch was imported before the arguments were parsed). The report.py case a newcomer met
(stubs replacing reports with runs) is in tests/test_stores.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.data import check
from core.specs import load_profiles

REPO = Path(__file__).resolve().parent.parent


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
