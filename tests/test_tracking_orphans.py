"""Orphaned MLflow runs (issue 12; core.tracking.end_orphaned_runs): the runs of a killed invocation, left RUNNING,
are marked KILLED by the next table run or the resumed study; a live process's run is left alone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import mlflow
import pytest

from core import tracking
from core.specs import load_spec, select_rows, spec_path
from tests.helpers import HOST, REPO


def _killed_invocation(uri: str, experiment: str, kind: str) -> list[str]:
    """Start a parent and a nested run in a child process that is then SIGKILLed; returns their run ids."""
    code = ("import os, signal\n"
            "from core import tracking\n"
            f"tracking.configure({uri!r})\n"
            f"with tracking.parent_run({experiment!r}, 'killed') as parent:\n"
            f"    with tracking.child_run('row', {{'kind': {kind!r}}}) as child:\n"
            "        print(parent, child, flush=True)\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout.split()


def test_rerun_marks_the_runs_of_a_killed_table_invocation_killed(tiny_synthetic_root, tmp_path, monkeypatch):
    import core.tables
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.configure(uri)
    mlflow.search_experiments()                              # create the SQLite tables in this process first
    killed = _killed_invocation(uri, "STA table1", "row")
    client = mlflow.MlflowClient()
    assert [client.get_run(r).info.status for r in killed] == ["RUNNING", "RUNNING"]
    exp = mlflow.get_experiment_by_name("STA table1").experiment_id
    live = client.create_run(exp, tags={"kind": "row", "worker": f"{HOST}:{os.getpid()}"}).info.run_id

    monkeypatch.setattr(core.tables, "_run_job", lambda *args, **kwargs: None)     # the rerun trains nothing
    spec = load_spec(spec_path("table1"), "cpu", data_root=str(tiny_synthetic_root),    # the data is checked first
                     overrides={"data.synthetic_size": "tiny", "data.ids_per_batch": 4,
                                "model.pretrained": False})       # no pretraining stage: nothing is trained
    core.tables.run_table(select_rows(spec, ["1"]), work_dir=tmp_path / "runs", tracking_uri=uri,
                          reports_dir=tmp_path / "reports", progress=False)
    assert [client.get_run(r).info.status for r in killed] == ["KILLED", "KILLED"]
    assert "stopped without ending this run (killed)" in client.get_run(killed[1]).data.tags["error"]
    assert client.get_run(live).info.status == "RUNNING"     # a live process's run is left alone


def test_resumed_study_marks_the_trial_run_of_a_killed_worker_killed(make_tune_plan, tmp_path):
    from core.tuning.run import run_study
    from tests.helpers import uri
    tracking.configure(uri(tmp_path))
    mlflow.search_experiments()
    parent, trial = _killed_invocation(uri(tmp_path), "STA tiny", "trial")
    run_study(make_tune_plan("o", n_trials=0), tracking_uri=uri(tmp_path), evaluate_test=False, progress=False)
    client = mlflow.MlflowClient()
    assert client.get_run(trial).info.status == "KILLED" and client.get_run(parent).info.status == "KILLED"


@pytest.fixture
def make_tune_plan(tiny_synthetic_root, tmp_path):
    from core.tuning.spec import plan_study
    from tests.helpers import write_spec

    def make(study: str, n_trials: int):
        return plan_study(write_spec(tmp_path), data_root=str(tiny_synthetic_root), study_name=study,
                          n_trials=n_trials, work_dir=tmp_path / "runs", overrides={"train.epochs": 1})
    return make
