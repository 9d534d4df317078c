"""core/tables.py: a table's jobs (rows x seeds), and train.log_checkpoint: whether the run that trained a row uploads
its last.pt to MLflow (the paper profile does; the knob replaced a test of the profile's name)."""
from __future__ import annotations

import mlflow

from core import tracking
from core.cli import main
from core.config import RESULT_NEUTRAL_KEYS, apply_overrides, config_hash
from core.specs import load_spec, select_rows, spec_path
from core.tables import jobs
from tests.helpers import TINY_TABLE, set_args


def test_the_paper_profile_logs_checkpoints_and_the_cpu_profile_does_not_and_neither_changes_a_hash():
    paper = select_rows(load_spec(spec_path("table1"), profile="paper"), ["Baseline"]).rows[0].config
    cpu = select_rows(load_spec(spec_path("table1"), profile="cpu"), ["Baseline"]).rows[0].config
    assert paper.train.log_checkpoint and not cpu.train.log_checkpoint
    assert "train.log_checkpoint" in RESULT_NEUTRAL_KEYS
    assert config_hash(apply_overrides(cpu, {"train.log_checkpoint": True})) == config_hash(cpu)


def test_a_row_trained_with_log_checkpoint_uploads_its_last_pt(tiny_synthetic_root, tmp_path):
    argv = ["--rows", "Baseline", "--epochs", "1", "--device", "cpu", "--quiet", "--data-root",
            str(tiny_synthetic_root), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--work-dir",
            str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "reports"), *set_args(TINY_TABLE),
            "--set", "train.log_checkpoint=true"]
    assert main("table1", argv) == 0
    tracking.configure(f"sqlite:///{tmp_path}/mlflow.db")
    runs = tracking.runs_frame("STA table1")
    row = runs[runs["tags.kind"] == "row"].iloc[0]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(row.run_id, "checkpoint")}
    assert artifacts == {"checkpoint/last.pt"}


def test_seeds_give_one_job_per_row_and_seed():
    spec = load_spec(spec_path("table3"), "cpu")
    todo = jobs(spec, [0, 1, 2])
    assert len(todo) == 9 and [j.cfg.train.seed for j in todo[:3]] == [0, 1, 2]
    assert len({config_hash(j.cfg) for j in todo}) == 9
    assert [j.seed for j in jobs(spec)] == [0, 0, 0]
