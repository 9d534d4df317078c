"""Reliability (issue 12): a diverged model fails instead of scoring, resume refuses other configs and unsafe files,
reports average only seeds of one config, outputs are atomic with the user's umask, leftovers of killed processes
are cleaned, orphaned MLflow runs are marked KILLED, MLflow telemetry is off."""
from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

import core.engine.training as train_mod
from core import tracking
from core.reporting import report as reporting
from core.config import apply_overrides, config_hash
from core.engine import NonFiniteLossError, extract_features, run, train, train_dir
from core.atomic import atomic_write, save_json, save_text
from core.engine.checkpoint import load_torch, save_torch
from core.engine.training import non_finite, train_hash
from core.evaluation import evaluate
from core.specs import load_spec, read_spec, select_rows, spec_path
from tests.helpers import FakeEpoch, FakeResult, fake_per_query, tiny_cfg

REPO = Path(__file__).resolve().parent.parent
HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- a diverged model never scores --------------------------------------------------------------------------

def test_evaluate_refuses_non_finite_distances():
    dist = np.arange(12, dtype=np.float32).reshape(3, 4)
    dist[0, 1], dist[2, 3], dist[1, 0] = np.nan, np.inf, -np.inf
    pids, cams = np.array([1, 2, 3]), np.array([1, 1, 1])
    with pytest.raises(FloatingPointError, match=r"\(3 x 4\) has 3 non-finite entries"):
        evaluate(dist, pids, np.array([1, 2, 3, 4]), cams, np.array([2, 2, 2, 2]))


class NaNForFirstClip(torch.nn.Module):
    """A stand-in model: mean pixel features; the first clip it ever sees gets NaN."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, clips):                                  # (B, N, 3, H, W) -> feat (B, 3)
        feat = clips.mean(dim=(1, 3, 4)) * self.w
        if self.calls == 0:
            feat[0] = float("nan")
        self.calls += 1
        return {"feat": feat}


def test_extract_refuses_non_finite_features_naming_clips_and_tracklets(tiny_dataset):
    tracklets = tiny_dataset.query[:5]
    with pytest.raises(FloatingPointError, match=r"non-finite features \(NaN or inf\) in 1 of 5 clips, 1 of 5 "
                                                 r"tracklets \(first: #0, id \d+, cam \d+, .*\.jpg\)"):
        extract_features(NaNForFirstClip(), tracklets, seq_len=2, sampling="evenly", height=32, width=16,
                         batch_size=8, num_workers=0, device=torch.device("cpu"), progress=False)


def test_lr_1e10_fails_instead_of_scoring_100_percent(tiny_synthetic_root, tiny_dataset, tmp_path):
    """The issue's case: one epoch of one iteration at lr 1e10 leaves finite (~1e10) weights whose features are
    NaN; it used to score R1 = mAP = 100 %."""
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.lr": 1e10, "train.epochs": 1, "data.ids_per_batch": 8})
    with pytest.raises(FloatingPointError, match=r"non-finite features .* the model has diverged"):
        run(cfg, tmp_path, progress=False, dataset=tiny_dataset)
    assert not list(train_dir(cfg, tmp_path).glob("eval-*.json"))            # no metrics were written


def test_divergence_keeps_the_last_finite_checkpoint_and_says_what_to_change(tiny_synthetic_root, tiny_dataset,
                                                                           tmp_path):
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.lr": 1e10, "data.ids_per_batch": 8})
    with pytest.raises(NonFiniteLossError) as err:
        run(cfg, tmp_path, progress=False, dataset=tiny_dataset)
    ckpt = train_dir(cfg, tmp_path) / "last.pt"
    msg = str(err.value)
    assert "non-finite loss at epoch 2" in msg and f"the checkpoint of epoch 1 ({ckpt}) is kept" in msg
    assert "lower train.lr (now 1e+10)" in msg
    kept = load_torch(ckpt)
    assert kept["epoch"] == 0 and non_finite(kept["model"]) == []
    assert all(math.isfinite(h["total"]) for h in kept["history"])
    # the corrected config trains and scores in its own folder
    sane = apply_overrides(cfg, {"train.lr": 3e-4}, "tests")
    result = run(sane, tmp_path, progress=False, dataset=tiny_dataset)
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in ("R1", "mAP"))


def test_non_finite_weights_after_the_last_step_write_no_checkpoint(tiny_synthetic_root, tiny_dataset, tmp_path,
                                                                  monkeypatch):
    """Every loss of epoch 2 is finite but its last optimiser step leaves NaN weights: the epoch-1 checkpoint
    stays, and resuming it (without the fault) finishes with finite weights."""
    cfg = tiny_cfg(tiny_synthetic_root)
    real = train_mod._train_epoch

    def last_step_explodes(net, batches, iterations, optimizer, scaler, cfg, epoch, *args, **kwargs):
        stats = real(net, batches, iterations, optimizer, scaler, cfg, epoch, *args, **kwargs)
        if epoch == 1:
            with torch.no_grad():
                next(net.parameters()).fill_(float("nan"))
        return stats

    monkeypatch.setattr(train_mod, "_train_epoch", last_step_explodes)
    with pytest.raises(NonFiniteLossError, match=r"non-finite weights after epoch 2 .* no checkpoint was written "
                                                 r"for it; the checkpoint of epoch 1 .* is kept"):
        train(cfg, tiny_dataset, tmp_path, progress=False)
    kept = load_torch(tmp_path / "last.pt")
    assert kept["epoch"] == 0 and non_finite(kept["model"]) == []
    monkeypatch.setattr(train_mod, "_train_epoch", real)
    model, hist = train(cfg, tiny_dataset, tmp_path, progress=False)
    assert len(hist) == 2 and non_finite(model.state_dict()) == []


def test_diverged_trial_fails_with_its_reason_and_is_never_scored(tiny_synthetic_root, tmp_path):
    from optuna.trial import TrialState

    from core.tuning.spec import plan_study
    from core.tuning.run import run_study
    from tests.helpers import runs_of, uri, write_spec
    plan = plan_study(write_spec(tmp_path), data_root=str(tiny_synthetic_root), study_name="nan", n_trials=1,
                      work_dir=tmp_path / "runs",
                      overrides={"train.epochs": 1, "train.lr": 1e10, "data.ids_per_batch": 6})
    out = run_study(plan, tracking_uri=uri(tmp_path), evaluate_test=False, progress=False)
    trial = out.study.trials[0]                              # the baseline; the lambda = 0 reference waits
    assert trial.state == TrialState.FAIL and trial.value is None
    assert trial.user_attrs["reason"].startswith("FloatingPointError: ") and "non-finite" in trial.user_attrs["reason"]
    runs = runs_of(tmp_path, "nan")
    assert list(runs[runs["tags.kind"] == "trial"]["status"]) == ["FAILED"]


# ---- resume: same config only, safe loading -----------------------------------------------------------------

def test_resume_refuses_another_config_and_a_mismatched_state(tiny_synthetic_root, tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.epochs": 1})
    train(cfg, tiny_dataset, tmp_path, progress=False)
    path = tmp_path / "last.pt"
    where = re.escape(f"checkpoint {path}")
    assert load_torch(path)["config_hash"] == train_hash(cfg)
    train(apply_overrides(cfg, {"eval.seq_len": 2, "data.num_workers": 1}, "tests"), tiny_dataset, tmp_path,
          progress=False)                                   # evaluation-only keys share the trained model
    other = apply_overrides(cfg, {"loss.margin": 0.5}, "tests")
    with pytest.raises(RuntimeError, match=rf"{where} belongs to another config \(training hash "
                                           rf"{train_hash(cfg)}; this run's is {train_hash(other)}\)"):
        train(other, tiny_dataset, tmp_path, progress=False)

    state = load_torch(path)
    state["model"].pop(next(iter(state["model"])))
    save_torch(state, path)
    with pytest.raises(RuntimeError, match=rf"{where} does not fit the model .*Missing key"):
        train(cfg, tiny_dataset, tmp_path, progress=False)
    del state["config_hash"]
    save_torch(state, path)
    with pytest.raises(RuntimeError, match=rf"{where} has no config hash"):
        train(cfg, tiny_dataset, tmp_path, progress=False)


class RunsCode:
    """Unpickling this calls os.mkdir(target): a planted checkpoint that runs code."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (str(self.target),)


def test_planted_checkpoint_is_refused_without_running_its_code(tiny_synthetic_root, tiny_dataset, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"epoch": 0, "model": RunsCode(marker)}, tmp_path / "last.pt")
    where = re.escape(f"checkpoint {tmp_path / 'last.pt'}")
    with pytest.raises(RuntimeError, match=rf"{where} was refused by the safe loader \(.*GLOBAL .*mkdir.*nothing "
                                           r"in it was run"):
        train(tiny_cfg(tiny_synthetic_root, **{"train.epochs": 1}), tiny_dataset, tmp_path, progress=False)
    assert not marker.exists()


# ---- atomic outputs: umask, half-written files, leftovers -----------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [save_text("x", tmp_path / "a.md"), save_json({"a": 1}, tmp_path / "a.json"),
                 save_torch({"a": torch.ones(2)}, tmp_path / "a.pt")]
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in paths] == [mode] * 3


def _no_temp(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_write_failing_half_way_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old content")

    def half_then_fail(f):
        f.write(b"new half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old content" and _no_temp(tmp_path)

    ckpt = tmp_path / "last.pt"
    save_torch({"w": torch.ones(3)}, ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(Exception):      # pickling fails after the tensor was written
        save_torch({"w": torch.zeros(1000), "f": lambda: 0}, ckpt)
    assert ckpt.read_bytes() == before and _no_temp(tmp_path)

    js = save_json({"a": 1}, tmp_path / "m.json")
    before = js.read_bytes()

    def fsync_fails(fd):
        raise OSError("I/O error at fsync")

    monkeypatch.setattr(os, "fsync", fsync_fails)    # every byte written, then the flush to disk fails
    with pytest.raises(OSError, match="fsync"):
        save_json({"a": 2, "b": list(range(1000))}, js)
    assert js.read_bytes() == before and _no_temp(tmp_path)


def test_temp_files_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    target = tmp_path / "last.pt"
    save_torch({"epoch": 0}, target)
    before = target.read_bytes()
    code = ("import os, signal, sys\n"
            "from core.atomic import atomic_write\n"
            "def dies(f):\n"
            "    f.write(b'x' * 4096); f.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"atomic_write({str(target)!r}, dies)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".last.pt.*.tmp")                  # the killed save's temp file
    assert left.stat().st_size == 4096 and target.read_bytes() == before
    live = tmp_path / f".last.pt.{HOST}.{os.getpid()}.beef.tmp"     # being written by a live process
    remote = tmp_path / f".last.pt.otherhost.{dead_pid()}.beef.tmp"  # another host: cannot be checked
    legacy = tmp_path / ".last.pt.k2j4h5x9.tmp"                   # no host and pid: not ours to judge
    other = tmp_path / f".other.pt.{HOST}.{dead_pid()}.beef.tmp"    # another target
    for p in (live, remote, legacy, other):
        p.write_bytes(b"")
    save_torch({"epoch": 1}, target)
    assert not left.exists() and load_torch(target)["epoch"] == 1
    assert all(p.exists() for p in (live, remote, legacy, other))


def test_partial_folders_of_a_dead_generation_are_removed(tiny_synthetic_root):
    from core.data.synthetic import ensure_synthetic
    parent, name = tiny_synthetic_root.parent, tiny_synthetic_root.name
    dead = parent / f".{name}.partial-{HOST}.{dead_pid()}.0a1b"
    live = parent / f".{name}.partial-{HOST}.{os.getpid()}.0a1b"
    for p in (dead, live):
        (p / "bbox_train").mkdir(parents=True)
    try:
        assert ensure_synthetic(tiny_synthetic_root, "tiny", 0, progress=False) == tiny_synthetic_root
        assert not dead.exists() and live.exists()
    finally:
        import shutil
        shutil.rmtree(live, ignore_errors=True)


# ---- reports: one config per row, figures before markdown ------------------------------------------------------

def _log(spec, row, seed: int, r1: float, **overrides) -> str:
    """A finished row run of `row` with `overrides` applied to its config (tests.test_tracking_reports._log_row)."""
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
    assert _no_temp(reports) and _no_temp(reports / "figures")
    monkeypatch.undo()

    reporting.write_report(spec, pd.DataFrame(), reports)    # done: unlinked figures go only now
    assert "No finished runs yet" in md.read_text() and not list((reports / "figures").glob("table1_*.png"))


# ---- MLflow: orphaned runs, telemetry ---------------------------------------------------------------------------

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


def test_mlflow_telemetry_is_off_once_core_tracking_is_imported():
    """In a fresh process without any opt-out or CI marker in its environment, importing core.tracking leaves
    MLflow's own switch on "disabled" and no telemetry client; in this process too (mlflow imported earlier)."""
    ci = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    env = {k: v for k, v in os.environ.items() if k not in ci}
    code = ("import core.tracking\n"
            "from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY\n"
            "from mlflow.telemetry import get_telemetry_client\n"
            "from mlflow.telemetry.utils import is_telemetry_disabled\n"
            "print(MLFLOW_DISABLE_TELEMETRY.get(), is_telemetry_disabled(), get_telemetry_client())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "None"], out.stderr
    from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY
    from mlflow.telemetry import get_telemetry_client
    assert MLFLOW_DISABLE_TELEMETRY.get() is True and os.environ["DO_NOT_TRACK"] == "true"
    assert get_telemetry_client() is None
