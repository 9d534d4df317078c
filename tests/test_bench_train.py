"""python -m core.bench train and smoke (and eval's child processes), shrunk to the tiny preset: they run, print their JSON line, and import
neither mlflow nor optuna (the GPU machines they are meant for have neither)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from core.bench import smoke, train
root = sys.argv[1]
rc = train.main(["--device", "cpu", "--backbone", "resnet18", "--height", "32", "--width", "16", "--clips", "8",
                 "--iters", "1", "--warmup", "1", "--workers", "0", "--data-size", "tiny", "--data-root", root,
                 "--variants", "sta"])
rc |= smoke.main(["--device", "cpu", "--epochs", "1", "--data-size", "tiny", "--data-root", root, "--workers", "0",
                  "--set", "data.ids_per_batch=4", "--set", "data.tracklets_per_id=2",
                  "--set", "model.backbone=resnet18",
                  "--set", "data.height=32", "--set", "data.width=16", "--set", "model.num_regions=2",
                  "--set", "model.feat_dim=16", "--set", "eval.batch_size=8"])
print("IMPORTED", sorted(m for m in ("mlflow", "optuna") if m in sys.modules))
sys.exit(rc)
"""


def test_train_and_smoke_benchmarks_run_without_tracking_packages(tiny_synthetic_root, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_synthetic_root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    bench = json.loads(next(ln for ln in lines if ln.startswith('{"bench": "train"')))
    sta = bench["results"]["sta"]
    assert bench["clips"] == 8 and bench["precision"] == "float32" and sta["peak_gpu_gib"] is None
    for key in ("step_frames_per_s", "step_compute_frames_per_s", "e2e_frames_per_s", "loader_frames_per_s",
                "extract_frames_per_s"):
        assert sta[key] > 0, key
    assert any(ln.startswith("| sta | ") for ln in lines)  # the table
    smoke = json.loads(next(ln for ln in lines if ln.startswith('{"bench": "smoke"')))
    assert smoke["world_size"] == 1 and len(smoke["epochs"]) == 1 and 0 <= smoke["metrics"]["R1"] <= 1
    assert "IMPORTED []" in lines
    assert not list(tmp_path.glob("sta_smoke*"))  # the smoke run leaves nothing behind


def test_eval_bench_reports_a_dead_rerank_process_instead_of_waiting_forever(tmp_path):
    # the GPU run's re-ranker raised in its child process and the bench then waited on its queue until killed
    from core.bench.eval import run_child
    q = np.zeros((2, 3), np.float32)
    with pytest.raises(RuntimeError, match="re-ranker no-such-reranker: its process ended with exit code 1"):
        run_child("no-such-reranker", q, q, (1, 1, 0.3), 1, str(tmp_path / "out.npy"))
