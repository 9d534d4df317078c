"""Real servers, as a group runs them (fixtures in tests/conftest.py start PostgreSQL and an MLflow tracking server
on 127.0.0.1): tuning workers in separate processes share a PostgreSQL study, one of them SIGKILLed mid-trial; a
table row is logged to the MLflow server over HTTP and report.py rebuilds the same report from the server as from
a local store; an unreachable server or database, a wrong password or a missing driver is one line in seconds."""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from core import cli, endpoints
from core.tuning import spec as tune_spec
from core.tuning import study as tuning
from core.tuning.run import report_study
from core.config import ConfigError
from tests.helpers import REPO, TINY_TABLE, set_args, write_spec

pytestmark = pytest.mark.servers
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# tests that reach a database URL without a server fixture need the driver too (CI installs it: fail there instead)
needs_driver = pytest.mark.skipif(importlib.util.find_spec("psycopg") is None and not os.environ.get("CI"),
                                  reason="PostgreSQL driver not installed: pip install -e \".[postgres]\"")


def tune_cmd(spec: Path, root: Path, storage: str, tracking: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["--spec", str(spec), "--study-name", "pg", "--storage", storage, "--data-root", str(root),
            "--tracking-uri", tracking, "--work-dir", str(tmp_path / "runs"), "--reports-dir",
            str(tmp_path / "reports"), "--set", "train.epochs=1", "--quiet", *extra]


def load(storage, name: str = "pg") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def wait_running_trial(storage: str, worker: str, proc: subprocess.Popen, timeout: float = 120.0) -> int:
    """Number of the first trial seen RUNNING in `worker` (host:pid) with its values chosen."""
    opened = tuning.open_storage(storage)  # one connection pool for all the polls (cheap; the workers retry too)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            for t in load(opened).get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("worker") == worker and "lambda" in t.user_attrs:    # suggested: training
                    return t.number
        except KeyError:                   # the study is not created yet
            pass
        time.sleep(0.2)
    out = proc.stdout.read()[-3000:] if proc.poll() is not None and proc.stdout else ""
    raise AssertionError(f"worker {worker} ran no trial (exit code {proc.poll()}); its output ends:\n{out}")


def test_workers_share_a_postgres_study_one_killed_mid_trial(postgres_server, mlflow_server, tiny_synthetic_root,
                                                            tmp_path):
    storage = postgres_server.create_database("optuna_workers")
    server, _ = mlflow_server
    spec = write_spec(tmp_path)
    argv = tune_cmd(spec, tiny_synthetic_root, storage, server, tmp_path, "--n-trials", "3")
    cmd = [sys.executable, str(REPO / "reproduce" / "tune.py"), *argv, "--no-test"]
    # two workers started at the same moment on a fresh database (study and queue created by one of them)
    victim, other = (subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for _ in range(2))
    try:
        killed = wait_running_trial(storage, f"{socket.gethostname()}:{victim.pid}", victim)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        out = other.communicate(timeout=240)[0]
    finally:
        for proc in (victim, other):       # nothing left running when the test fails
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert other.returncode == 0, out

    # the dead worker's trial still counts while RUNNING; `other` failed and retried it only if it opened the study
    # after the kill (a slow start). The same command again on this host always does, if nobody has yet.
    assert tuning.StopAtBudget(3).count(load(storage)) == 3
    assert cli.tune_main([*argv, "--no-test"]) == 0
    study = load(storage)
    trials = study.trials
    assert [t.number for t in trials] == list(range(len(trials)))      # continuous, none lost
    dead = trials[killed]
    assert dead.state == TrialState.FAIL
    assert f"worker {socket.gethostname()}:{victim.pid} stopped during the trial (killed)" in dead.user_attrs["reason"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert len(retry) == 1 and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry[0].params == dead.params
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 3 and tuning.StopAtBudget(3).count(study) == 3     # exactly the requested count
    surplus = [t for t in trials if t.user_attrs.get("surplus")]
    assert len(trials) == 4 + len(surplus) and all(not t.params for t in surplus)
    assert len({tuple(sorted(t.params.items())) for t in done}) == 3    # no parameters run twice
    assert sum(t.user_attrs.get("role") == "baseline" for t in done) == 1

    # MLflow server: one parent run for the study, one nested run per trial that ran (never two)
    mlflow.set_tracking_uri(server)
    runs = mlflow.search_runs(experiment_names=["STA tiny"], filter_string="tags.study = 'pg'")
    parent = runs[runs["tags.kind"] == "study"]
    trial_runs = runs[runs["tags.kind"] == "trial"]
    assert len(parent) == 1 and set(trial_runs["tags.mlflow.parentRunId"]) == set(parent["run_id"])
    numbers = list(trial_runs["tags.trial"].astype(int))       # the killed trial has one if it got that far
    ran = {t.number for t in done}
    assert len(numbers) == len(set(numbers)) and ran <= set(numbers) <= ran | {killed}

    # once, afterwards: evaluate on the test split and write the report from the database
    assert cli.tune_main(argv[:-2] + ["--n-trials", "0"]) == 0
    study = load(storage)
    assert [k for k in study.user_attrs if k.startswith("test:")]
    assert len(study.trials) == len(trials)                               # no new trial
    text = (tmp_path / "reports" / "pg.md").read_text()
    assert f"from the Optuna study `pg` in `{endpoints.shown(storage)}`" in text
    assert postgres_server.password not in text
    assert f"| {killed} | fail |" in text and "stopped during the trial (killed)" in text
    assert f"pruned, {1 + len(surplus)} failed, 0 running, 0 queued" in text
    assert re.search(r"\| chosen \(trial \d+\) \| [\d.]+ \| [\d.]+ \| \d", text)         # evaluated on test


def test_workers_started_at_once_on_an_empty_database_all_open_it(postgres_server):
    url = postgres_server.create_database("optuna_race")
    barrier, opened = threading.Barrier(4), []

    def worker() -> None:               # one connection each, as separate processes have: they race to create tables
        barrier.wait()
        try:
            tuning.open_storage(url)
            opened.append("opened")
        except Exception as e:  # noqa: BLE001 - reported below
            opened.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert opened == ["opened"] * 4


def test_heartbeat_fails_a_silent_worker_of_another_machine_and_queues_it_again(postgres_server, tmp_path,
                                                                               tiny_synthetic_root, monkeypatch):
    monkeypatch.setattr(tuning, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tuning, "GRACE_S", 1)
    plan = tune_spec.plan_study(write_spec(tmp_path), data_root=str(tiny_synthetic_root), study_name="hb",
                             storage=postgres_server.create_database("optuna_heartbeat"), work_dir=tmp_path)
    study, _ = tuning.open_study(plan)
    trial = study.ask()
    tuning.suggest(trial, plan.spec)
    trial.set_user_attr("worker", "gpu-node-7:4242")                   # another machine: no pid to look at
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)                           # what every worker does before a trial
    trials = study.trials
    assert trials[0].state == TrialState.FAIL
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING and retry[0].user_attrs["role"] == "baseline"
    text = report_study(study, plan, tmp_path / "reports").read_text()
    assert "| 0 | fail | baseline |" in text and "worker gpu-node-7:4242 sent no heartbeat for 1 s" in text


def test_experiment_created_by_another_worker_at_the_same_moment_holds_the_nested_runs(tmp_path, monkeypatch):
    from mlflow.tracking._tracking_service.client import TrackingServiceClient
    from core import tracking
    tracking.configure(f"sqlite:///{tmp_path / 'm.db'}")
    other_id = mlflow.MlflowClient().create_experiment("STA race")    # created by another worker ...
    real, calls = TrackingServiceClient.get_experiment_by_name, []

    def not_seen_yet(self, name):                                      # ... just after this one looked for it
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(TrackingServiceClient, "get_experiment_by_name", not_seen_yet)
    with tracking.parent_run("STA race", "p"), tracking.child_run("row") as child:
        pass
    monkeypatch.undo()
    assert calls and mlflow.get_run(child).info.experiment_id == other_id      # not the 'Default' experiment


# ---- MLflow tracking server --------------------------------------------------------------------------------

def table_argv(root: Path, tracking: str, reports: Path, work: Path) -> list[str]:
    # the tiny table at the tiny_cfg frame size (32 x 16) and two regions
    sets = set_args({**TINY_TABLE, "data.height": 32, "data.width": 16, "model.num_regions": 2})
    return ["--rows", "6", "--epochs", "1", "--device", "cpu", "--quiet", "--data-root", str(root),
            "--tracking-uri", tracking, "--work-dir", str(work), "--reports-dir", str(reports), *sets]


def comparable(report: str) -> str:
    """A report less what legitimately differs between two stores of the same results: the run ids."""
    return re.sub(r"\b[0-9a-f]{32}\b", "RUN", report)


def test_table_row_logged_to_the_server_and_report_rebuilt_from_it(mlflow_server, tiny_synthetic_root, tmp_path,
                                                                   monkeypatch):
    import core.engine
    from core.cli import main, report_main     # reproduce/table1.py and reproduce/report.py
    server, artifacts = mlflow_server
    monkeypatch.chdir(tmp_path)
    real, results = core.engine.run, []

    def train_once(*args, **kwargs):           # the local store logs the same result again, through the same code
        results.append(results[0] if results else real(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(core.engine, "run", train_once)
    assert main("table1", table_argv(tiny_synthetic_root, server, tmp_path / "r_server", tmp_path / "w1")) == 0
    local = f"sqlite:///{tmp_path / 'local.db'}"
    assert main("table1", table_argv(tiny_synthetic_root, local, tmp_path / "r_local", tmp_path / "w2")) == 0

    assert len(results) == 2
    mlflow.set_tracking_uri(server)
    from core.tracking import flat_columns
    runs = flat_columns(mlflow.search_runs(experiment_names=["STA table1"]))     # metrics under their flat names
    row = runs[runs["tags.kind"] == "row"]
    assert len(row) == 1 and row["status"].iloc[0] == "FINISHED"
    row = row.iloc[0]
    assert row["tags.mlflow.parentRunId"] == runs[runs["tags.kind"] == "table"]["run_id"].iloc[0]   # nested
    assert row["params.model.aggregation"] == "sta" and row["params.loss.reg_weight"] is not None   # params
    assert 0 <= row["metrics.R1"] <= 100 and 0 <= row["metrics.mAP"] <= 100                        # metrics
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(row.run_id, "train/ce")] == [1]      # epochs done
    logged = {a.path for a in client.list_artifacts(row.run_id)}
    assert {"config.json", "spec_row.json", "cmc.json", "cmc.png", "scores.json", "attention.png"} <= logged
    assert client.get_run(row.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    stored = {p.name for p in artifacts.rglob("*") if row.run_id in p.parts}   # uploaded into the server's store
    assert {"cmc.json", "scores.json", "attention.png"} <= stored

    assert report_main(["table1", "--tracking-uri", server, "--reports-dir", str(tmp_path / "rebuilt")]) == 0
    rebuilt = (tmp_path / "rebuilt" / "table1.md").read_text()
    assert row.run_id in rebuilt and f"{row['metrics.R1']:.1f}" in rebuilt
    assert comparable(rebuilt) == comparable((tmp_path / "r_local" / "table1.md").read_text())
    figures = {p.name: p.read_bytes() for p in (tmp_path / "rebuilt" / "figures").iterdir()}
    assert figures == {p.name: p.read_bytes() for p in (tmp_path / "r_local" / "figures").iterdir()}
    assert {"table1_cpu_synthetic_attention.png", "table1_cpu_synthetic_cmc.png"} <= set(figures)


# ---- unreachable servers, wrong password, missing driver ------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]                                      # nothing listens once it is closed


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections (kernel backlog) and never answers: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@needs_driver
def test_unreachable_server_or_database_is_one_line(tmp_path, capsys, monkeypatch):
    from core.cli import main, report_main
    port = closed_port()
    done = subprocess.run([sys.executable, str(REPO / "reproduce" / "tune.py"), "--storage",
                           f"postgresql://u:secret@127.0.0.1:{port}/db", "--tracking-uri",
                           f"sqlite:///{tmp_path / 'm.db'}", "--work-dir", str(tmp_path)],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"error: --storage postgresql://u:***@127.0.0.1:{port}/db: cannot connect ("
                                  f"OperationalError: ") and "Connection refused" in done.stderr
    assert "secret" not in done.stderr and "; timeout 5 s)" in done.stderr
    assert main("table1", ["--tracking-uri", f"http://127.0.0.1:{port}", "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --tracking-uri http://127.0.0.1:{port}: no answer (") and "\n" not in err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}/")
    assert report_main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: $MLFLOW_TRACKING_URI http://127.0.0.1:{port}/: no answer (") and "\n" not in err
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("*.journal"))


@needs_driver
def test_hung_server_or_database_times_out(silent_port, monkeypatch):
    monkeypatch.setattr(endpoints, "TIMEOUT_S", 1.0)
    with pytest.raises(ConfigError, match=rf"^--tracking-uri http://127.0.0.1:{silent_port}: no answer "
                                          r"\(.*timed out; timeout 1 s\); is the MLflow server running"):
        endpoints.check(f"http://127.0.0.1:{silent_port}", "--tracking-uri")
    with pytest.raises(ConfigError, match=rf"^--storage postgresql://u:\*\*\*@127.0.0.1:{silent_port}/db: cannot "
                                          r"connect \(ConnectionTimeout: connection timeout expired; timeout 2 s\)$"):
        endpoints.check(f"postgresql://u:pw@127.0.0.1:{silent_port}/db", "--storage")


def test_missing_driver_is_one_line_naming_the_package(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)                   # as if the [postgres] extra were missing
    assert cli.tune_main(["--storage", "postgresql://u:pw@127.0.0.1:1/db", "--work-dir", str(tmp_path),
                        "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --storage postgresql://u:***@127.0.0.1:1/db: its database driver 'psycopg' is not "
                   "installed; install 'psycopg[binary]' (pip install -e \".[postgres]\")")
    with pytest.raises(ConfigError, match=r"^--tracking-uri mysql\+pymysql://u@h/db: its database driver 'pymysql' "
                                          r"is not installed; install PyMySQL$"):
        monkeypatch.setitem(sys.modules, "pymysql", None)
        endpoints.check("mysql+pymysql://u@h/db", "--tracking-uri")


def test_wrong_password_is_one_line(postgres_server):
    url = postgres_server.url("postgres").replace(postgres_server.password, "wrong")
    with pytest.raises(ConfigError, match=r"^--storage postgresql://sta:\*\*\*@127.0.0.1:\d+/postgres: cannot "
                                          r"connect \(.*password authentication failed.*; timeout 5 s\)$"):
        endpoints.check(url, "--storage")
    endpoints.check(postgres_server.url("postgres"), "--storage")       # the right one connects
