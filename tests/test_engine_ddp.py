"""DistributedDataParallel on CPU (gloo, loopback): two ranks split each P x K batch and stay in sync."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.data import load_dataset
from core.engine import train
from tests.test_engine import tiny_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
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
