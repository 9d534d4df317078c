"""Reading commands never create a store and never replace a report that has runs behind it (issue 22, case 1 and
the newcomer's `report.py`); a broken local store is refused in one line; a new store says where it is; two table
runs starting together on a fresh SQLite store both get it (its creation is serialised)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core import stores, tracking
from core.cli import main, report_main, tune_main
from core.tables import KeptReport, rebuild_report
from core.specs import spec_path
from tests.helpers import error_line

REPO = Path(__file__).resolve().parent.parent
REPORT = "# Table 1 with real runs behind it\n"


@pytest.fixture
def reports(tmp_path, monkeypatch):
    """A folder with a good reports/table1.md and figure (as a committed checkout has)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports" / "figures").mkdir(parents=True)
    (tmp_path / "reports" / "table1.md").write_text(REPORT)
    (tmp_path / "reports" / "figures" / "table1_cmc.png").write_bytes(b"png")
    return tmp_path / "reports"


def _untouched(reports):
    assert (reports / "table1.md").read_text() == REPORT
    assert (reports / "figures" / "table1_cmc.png").exists()


def test_a_misspelt_store_is_refused_and_the_report_kept(reports, tmp_path, capsys):
    typo = f"sqlite:///{tmp_path}/sub/reff.db"
    assert report_main(["table1", "--tracking-uri", typo]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"no MLflow store at {tmp_path}/sub/reff.db" in line and "never creates one" in line
    assert not (tmp_path / "sub").exists()                        # no database, no parent folder
    _untouched(reports)


def test_tune_report_only_never_creates_a_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert tune_main(["--n-trials", "0", "--tracking-uri", f"sqlite:///{tmp_path}/nope.db", "--quiet"]) == 2
    assert "no MLflow store at" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "nope.db").exists()


def test_an_empty_store_never_replaces_a_report(reports, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/empty.db"
    tracking.configure(uri)                                       # a store that exists but holds no table1 runs
    assert report_main(["table1", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "kept reports/table1.md" in out
    assert "experiment 'STA table1'" in out and "empty.db" in out and "no finished row runs" in out
    _untouched(reports)
    with pytest.raises(KeptReport):
        rebuild_report(spec_path("table1"), reports, uri)
    _untouched(reports)


def test_report_without_tables_keeps_every_report_it_has_no_runs_for(reports, tmp_path, capsys):
    """The newcomer's case: `report.py` after table1 alone rewrote Tables 2-5 as stubs and deleted figures."""
    for t in ("table2", "table3"):
        (reports / f"{t}.md").write_text(f"# {t} with runs\n")
        (reports / "figures" / f"{t}_cmc.png").write_bytes(b"png")
    uri = f"sqlite:///{tmp_path}/empty.db"
    tracking.configure(uri)
    assert report_main(["--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    for t in ("table2", "table3"):
        assert (reports / f"{t}.md").read_text() == f"# {t} with runs\n" and f"kept reports/{t}.md" in out
        assert (reports / "figures" / f"{t}_cmc.png").exists()
    _untouched(reports)
    assert "No finished runs yet" in (reports / "table4.md").read_text()   # no report yet: the stub is written


@pytest.mark.parametrize("uri", ["sqlite:///", "sqlite://", "sqlite:///?mode=memory"])
def test_a_sqlite_uri_without_a_file_is_refused(reports, capsys, uri):
    assert report_main(["table1", "--tracking-uri", uri]) == 2
    assert "names no database file" in error_line(capsys.readouterr().err)
    _untouched(reports)


def test_a_garbage_or_truncated_store_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    assert report_main(["table1", "--tracking-uri", f"sqlite:///{garbage}"]) == 2
    assert f"{garbage} is not an SQLite database" in error_line(capsys.readouterr().err)
    good = tmp_path / "good.db"
    tracking.configure(f"sqlite:///{good}")
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 3])
    assert main("table1", ["--rows", "1", "--quiet", "--tracking-uri", f"sqlite:///{truncated}"]) == 2
    assert f"{truncated} is a damaged SQLite database" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("uri", ["mlruns_folder", "file:///{tmp}/mlruns_file"])
def test_a_file_store_the_installed_mlflow_refuses_is_refused_up_front(tmp_path, monkeypatch, capsys, uri):
    monkeypatch.chdir(tmp_path)
    uri = uri.format(tmp=tmp_path)
    if stores.file_store_supported():
        pytest.skip("the installed MLflow opens file stores")
    assert main("table1", ["--rows", "1", "--quiet", "--tracking-uri", uri]) == 2
    assert "a file store (plain folder or file://), which the installed MLflow refuses" in \
        error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_two_processes_creating_one_new_store_both_succeed(tmp_path):
    """Two table runs started together on a fresh SQLite store: one died in MLflow's table creation."""
    uri = f"sqlite:///{tmp_path}/fresh.db"
    code = ("import sys; from core import tracking; tracking.configure(sys.argv[1]); "
            "tracking.use_experiment('STA table1'); print('ok')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    notes = [o for o, _ in outs if "note: creating a new MLflow store" in o]
    assert len(notes) == 1                                        # one of them created it, and said so
    with sqlite3.connect(tmp_path / "fresh.db") as con:
        assert con.execute("select count(*) from experiments where name = 'STA table1'").fetchone() == (1,)


def test_a_new_store_says_where_it_is(tmp_path, capsys):
    tracking.configure(f"sqlite:///{tmp_path}/new/m.db")
    assert f"note: creating a new MLflow store at {tmp_path}/new/m.db" in capsys.readouterr().out
    tracking.configure(f"sqlite:///{tmp_path}/new/m.db")
    assert "creating" not in capsys.readouterr().out                # an existing store: nothing said
