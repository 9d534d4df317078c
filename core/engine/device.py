"""Device, precision, seeding and distributed set-up: the only hardware-aware code of the engine."""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from core.config import ConfigError


@dataclass(frozen=True)
class Dist:
    """Where this process sits in a `torchrun` job (rank 0 of 1 without torchrun)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name != "cpu"
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local)


def check_device(name: str) -> None:
    """Refuse (ConfigError) a train.device naming a CUDA device this machine lacks: callers check before any run."""
    if not name.startswith("cuda"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (int(name[5:]) if name.startswith("cuda:") else 0) >= count:
        have = f"{count} CUDA device(s), cuda:0..cuda:{count - 1}" if count else "no CUDA device"
        raise ConfigError(f"key 'train.device' is '{name}' but this machine has {have}; use 'cpu' or 'auto'")


def resolve_device(name: str, ddp: Dist = Dist()) -> torch.device:
    """'auto' -> the local CUDA device when present, else CPU. Asking for CUDA without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        check_device(name)
        if name == "cuda":
            name = f"cuda:{ddp.local_rank}"
        torch.cuda.set_device(torch.device(name))
        torch.backends.cudnn.benchmark = True  # autotune convolutions (input sizes are fixed)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch. CPU runs are then bitwise repeatable; CUDA runs with cuDNN autotuning are not."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; None (full precision) on CPU or when disabled."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
