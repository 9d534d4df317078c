"""Device, precision, seeding and distributed set-up: the only hardware-aware code of the engine."""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from datetime import timedelta

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


# Ranks > 0 wait at a barrier while rank 0 evaluates (extraction, re-ranking): allow that much time.
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


def init_distributed(device_name: str) -> Dist:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name != "cpu"
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return Dist(rank, world, local)


def check_device(name: str) -> None:
    """Refuse (ConfigError) a train.device naming a CUDA device this machine lacks: callers check before any run."""
    count = _cuda_count()
    try:
        pick_device(name, Dist(), count)
    except (RuntimeError, ValueError):
        have = f"{count} CUDA device(s), cuda:0..cuda:{count - 1}" if count else "no CUDA device"
        raise ConfigError(f"key 'train.device' is '{name}' but this machine has {have}; use 'cpu' or 'auto'") from None


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def current_dist() -> Dist:
    """The Dist of this process once init_distributed has run (rank 0 of 1 without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(ddp: Dist) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ddp.world_size > 1:
        dist.barrier()


def pick_device(name: str, ddp: Dist, cuda_count: int) -> torch.device:
    """The device of this rank, a pure function of train.device, the rank and the number of visible GPUs.

    'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' -> cuda:<local_rank> (under torchrun every
    rank takes its own GPU); 'cuda:<i>' -> that GPU, single process only (torchrun would put every rank on
    it). Errors name train.device and what is possible.
    """
    if name == "auto":
        name = "cuda" if cuda_count > 0 else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise ValueError(f"train.device is {name!r}; allowed: auto, cpu, cuda, cuda:<index>")
    if cuda_count == 0:
        raise RuntimeError(f"train.device is '{name}' but no CUDA device is available; use 'cpu' or 'auto'")
    if name == "cuda":
        index = ddp.local_rank
    elif ddp.world_size > 1:
        raise ValueError(f"train.device is '{name}' under torchrun ({ddp.world_size} ranks): every rank would use "
                         f"that one GPU; use 'cuda' (rank r takes cuda:LOCAL_RANK) and CUDA_VISIBLE_DEVICES")
    else:
        index = int(name.partition(":")[2])
    if index >= cuda_count:
        raise RuntimeError(f"train.device '{name}' (rank {ddp.rank}, local rank {ddp.local_rank}) needs GPU "
                           f"{index} but only {cuda_count} are visible")
    return torch.device("cuda", index)


def resolve_device(name: str, ddp: Dist = Dist()) -> torch.device:
    """pick_device for this machine; on CUDA also makes it the current device and enables cuDNN autotuning."""
    device = pick_device(name, ddp, _cuda_count())
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # autotune convolutions (input sizes are fixed)
    return device


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0; backward sums the gradient of the gathered tensor over ranks, keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """(b, ...) on each of G ranks -> (G*b, ...) in rank order, identical on every rank; identity without DDP.

    For losses that need the whole batch (batch-hard mining, Eq. 9): every rank computes the same loss L on the
    gathered batch; the gradient reaching this rank's rows is sum over ranks of dL/dx_local = G * dL/dx_local,
    and DDP's average over the G ranks turns it back into exactly dL/dtheta, as in one process. Tensors without
    gradients (labels) are gathered as they are.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)
    return _GatherRows.apply(x)


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
