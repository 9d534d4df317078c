"""DistributedDataParallel on CPU (gloo, loopback): two ranks split each P x K batch and stay in sync, the
batch-hard triplet loss sees the whole batch, and a whole table row runs under torchrun (one MLflow row)."""
from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.data import load_dataset
from core.engine import train
from core.engine.device import gather_rows
from core.losses import compute_losses
from tests.helpers import TINY_TABLE, set_args, tiny_cfg

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    _join(rank, world, port)
    cfg = tiny_cfg(root, **{"train.epochs": 1})
    model, hist = train(cfg, load_dataset(cfg.data), out, progress=False)
    torch.save({"state": model.state_dict(), "iterations": hist[0].iterations}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_rank_ddp_training_keeps_replicas_identical(tiny_synthetic_root, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_synthetic_root), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["iterations"] == r1["iterations"] > 0
    for k, v in r0["state"].items():
        if "running" in k or "num_batches" in k:  # BatchNorm statistics are per rank (no SyncBN)
            continue
        assert torch.allclose(v, r1["state"][k], atol=1e-6), k
    assert (tmp_path / "last.pt").exists()  # only rank 0 writes checkpoints


# ---- the batch-hard triplet over the whole P x K batch ----------------------------------------------------------

class _TinyNet(nn.Module):
    """The model's output dict from (B, N, 6) clips, without BatchNorm (whose statistics stay per rank)."""

    def __init__(self):
        super().__init__()
        self.f, self.c = nn.Linear(6, 5), nn.Linear(5, 4)

    def forward(self, x):
        feat = self.f(x.mean(1))
        return {"feat": feat, "logits": self.c(feat), "attention": x[..., :4].unflatten(-1, (2, 2)),
                "frames_per_clip": 1}


def _batch():
    """P = 4 identities x K = 2 clips of N = 3 frames, identities adjacent as the sampler lays them out."""
    g = torch.Generator().manual_seed(3)
    return torch.randn(8, 3, 6, generator=g), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def _losses_and_grads(net, params, x, pids, gather):
    torch.manual_seed(0)
    losses = compute_losses(net(x), pids, margin=0.3, use_triplet=True, reg_weight=0.0, reg_squared=False,
                            gather=gather)
    for p in params:
        p.grad = None
    losses["total"].backward()
    return {k: float(v.detach()) for k, v in losses.items()}, [p.grad.clone() for p in params]


def _triplet_worker(rank: int, world: int, port: int, out: str) -> None:
    _join(rank, world, port)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    net = _TinyNet()
    ddp = DistributedDataParallel(net)
    x, pids = _batch()
    rows = slice(rank * 8 // world, (rank + 1) * 8 // world)   # rank r: identities 2r, 2r+1 (the sampler's split)
    result = {}
    for name, gather in (("gathered", gather_rows), ("local", None)):
        result[name] = _losses_and_grads(ddp, list(net.parameters()), x[rows], pids[rows], gather)
    torch.save(result, f"{out}/triplet{rank}.pt")
    dist.destroy_process_group()


def test_two_rank_triplet_loss_and_gradients_equal_one_process(tmp_path):
    torch.manual_seed(0)
    net = _TinyNet()
    x, pids = _batch()
    ref_losses, ref_grads = _losses_and_grads(net, list(net.parameters()), x, pids, None)
    mp.spawn(_triplet_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"triplet{r}.pt", weights_only=False) for r in (0, 1)]
    for r in ranks:
        losses, grads = r["gathered"]
        assert losses["triplet"] == pytest.approx(ref_losses["triplet"], abs=1e-6)  # the whole batch, every rank
        for g, ref in zip(grads, ref_grads):        # what the optimiser sees after DDP's gradient average
            assert torch.allclose(g, ref, atol=1e-6)
    assert sum(r["gathered"][0]["ce"] for r in ranks) / 2 == pytest.approx(ref_losses["ce"], abs=1e-6)
    # without the gather each rank mines within its own half: a different loss and different gradients
    local_losses, local_grads = ranks[0]["local"]
    assert local_losses["triplet"] != pytest.approx(ref_losses["triplet"], abs=1e-4)
    assert not all(torch.allclose(g, ref, atol=1e-4) for g, ref in zip(local_grads, ref_grads))


# ---- a whole table row under torchrun -------------------------------------------------------------------------

def _table_argv(root, tmp_path) -> list[str]:
    sets = set_args(TINY_TABLE)
    return ["--rows", "Baseline + TL", "--epochs", "1", "--device", "cpu", "--quiet", "--data-root", str(root),
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--work-dir", str(tmp_path / "runs"),
            "--reports-dir", str(tmp_path / "reports"), *sets]


@pytest.mark.slow
def test_table_row_under_torchrun_on_two_ranks_then_reused_by_one(tiny_synthetic_root, tmp_path, monkeypatch,
                                                                    capsys):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(REPO / "reproduce" / "table1.py"), *_table_argv(tiny_synthetic_root, tmp_path)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 run(s) trained/evaluated, 0 reused, 0 failed" in done.stdout

    import mlflow  # here, not at the top: the spawned ranks of the other tests import this module
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    from core import tracking
    runs = tracking.flat_columns(mlflow.search_runs(experiment_names=["STA table1"]))     # metrics: flat names
    rows = runs[runs["tags.kind"] == "row"]
    assert len(rows) == 1 and rows["status"].iloc[0] == "FINISHED"   # rank 0 alone logged, once
    row = rows.iloc[0]
    assert row["tags.world_size"] == "2" and row["tags.device"] == "cpu"
    for m in ("R1", "R5", "R10", "R20", "mAP"):
        assert math.isfinite(row[f"metrics.{m}"]) and 0 <= row[f"metrics.{m}"] <= 100
    report = (tmp_path / "reports" / "table1.md").read_text()
    assert any("| Baseline + TL " in ln and f"| {row['metrics.R1']:.1f} " in ln for ln in report.splitlines())

    # the same row in one process is the same run: same config hash, reused, nothing trained
    from core.cli import main
    monkeypatch.chdir(tmp_path)
    assert main("table1", _table_argv(tiny_synthetic_root, tmp_path)) == 0
    assert "0 run(s) trained/evaluated, 1 reused" in capsys.readouterr().out
    again = mlflow.search_runs(experiment_names=["STA table1"])
    assert len(again[again["tags.kind"] == "row"]) == 1
