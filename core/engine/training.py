"""Training loop: Adam + step schedule, P x K identity batches, CE + batch-hard triplet + lambda * Reg.

One function, :func:`train`, turns a resolved :class:`~core.config.RunConfig` and a dataset into a trained model.
It checkpoints atomically after every epoch (model, optimiser, scheduler, RNG and history) into
``run_dir/last.pt`` and resumes from there when called again, so a run killed at any point ends with the same
weights as an uninterrupted one: everything random in an epoch (batches, frame choice, flips, the Reg frame
pairs) is a function of (seed, epoch), and the checkpoint holds all the state that carries across epochs.

Tracking, pruning and evaluation during training hang on the per-epoch ``callbacks``; nothing about MLflow or
Optuna lives here.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from core.config import RunConfig, to_dict
from core.data import VideoDataset, make_train_loader
from core.engine.checkpoint import load_torch, save_torch
from core.engine.device import amp_dtype, autocast, init_distributed, resolve_device, seed_everything
from core.losses import compute_losses
from core.models import build_model

LOSS_TERMS = ("ce", "triplet", "reg", "total")


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; the last good checkpoint is left in place."""


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did, as logged per epoch (metric names are stable across runs)."""
    epoch: int              # 0-based
    iterations: int
    ce: float               # mean over the epoch's iterations
    triplet: float
    reg: float              # unweighted Reg (Eq. 6), logged even when lambda = 0
    total: float            # Eq. 7 / 11
    train_acc: float        # classifier accuracy on the training samples
    lr: float               # learning rate used during this epoch
    frames_per_s: float
    seconds: float

    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k not in ("epoch",)}


EpochCallback = Callable[[EpochStats, torch.nn.Module], None]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Generator for the Reg frame pairs of one epoch: a function of (seed, epoch) alone."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _checkpoint_state(model, optimizer, scheduler, scaler, epoch, history, cfg) -> dict:
    return {
        "epoch": epoch,                       # last finished epoch (0-based)
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": [asdict(h) for h in history],
        "config": to_dict(cfg),
    }


def train(cfg: RunConfig, dataset: VideoDataset, run_dir: str | Path,
          callbacks: Sequence[EpochCallback] = (), progress: bool = True) -> tuple[torch.nn.Module, list[EpochStats]]:
    """Train (or resume) the model of `cfg` on `dataset.train`; returns (model in eval mode, per-epoch stats).

    ``run_dir/last.pt`` is the resumable checkpoint. Callbacks run on rank 0 after each epoch's checkpoint is
    written; an exception raised by one (e.g. Optuna pruning) stops training with the checkpoint intact.
    """
    run_dir = Path(run_dir)
    ddp = init_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, ddp)
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, dataset.num_train_pids)
    model.to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.train.milestones), cfg.train.gamma)
    dtype = amp_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    history: list[EpochStats] = []
    start = 0
    ckpt_path = run_dir / "last.pt"
    if ckpt_path.exists():
        state = load_torch(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        history = [EpochStats(**h) for h in state["history"]]
        start = state["epoch"] + 1

    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ddp.world_size > 1 else model
    loader = make_train_loader(dataset.train, cfg.data, seed=cfg.train.seed, rank=ddp.rank,
                               world_size=ddp.world_size)
    epochs = tqdm(range(start, cfg.train.epochs), desc="epochs", initial=start, total=cfg.train.epochs,
                  disable=not (progress and ddp.is_main))
    for epoch in epochs:
        stats = _train_epoch(net, loader, optimizer, scaler, cfg, epoch, device, dtype, progress and ddp.is_main)
        scheduler.step()
        history.append(stats)
        if ddp.is_main:
            save_torch(_checkpoint_state(model, optimizer, scheduler, scaler, epoch, history, cfg), ckpt_path)
        epochs.set_postfix(loss=f"{stats.total:.3f}", acc=f"{stats.train_acc:.2f}")
        if ddp.is_main:
            for callback in callbacks:
                callback(stats, model)
    model.eval()
    return model, history


def _train_epoch(net, loader, optimizer, scaler, cfg: RunConfig, epoch: int, device, dtype, progress: bool) -> EpochStats:
    net.train()
    loader.batch_sampler.set_epoch(epoch)
    generator = _epoch_generator(cfg.train.seed, epoch)
    sums = dict.fromkeys(LOSS_TERMS, 0.0)
    correct = seen = frames = 0
    lr = optimizer.param_groups[0]["lr"]
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, disable=not progress)
    it = -1
    for it, (clips, pids, _camids) in enumerate(bar):
        clips = clips.to(device, non_blocking=True)              # (B, N, 3, H, W)
        pids = pids.to(device, non_blocking=True)                # (B,)
        with autocast(device, dtype):
            out = net(clips)
        losses = compute_losses(out, pids, margin=cfg.loss.margin, use_triplet=cfg.loss.triplet,
                                reg_weight=cfg.loss.reg_weight, reg_squared=cfg.loss.reg_squared,
                                generator=generator)
        values = {k: float(losses[k].detach()) for k in LOSS_TERMS}
        bad = [k for k in LOSS_TERMS if not math.isfinite(values[k])]
        if bad:
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch + 1}, iteration {it + 1}: term '{bad[0]}' = {values[bad[0]]} "
                f"(all terms: {values}); the last good checkpoint (end of epoch {epoch}) is kept")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(optimizer)
        scaler.update()

        labels = pids.repeat_interleave(out["frames_per_clip"])
        correct += int((out["logits"].detach().argmax(1) == labels).sum())
        seen += labels.numel()
        frames += clips.shape[0] * clips.shape[1]
        for k in LOSS_TERMS:
            sums[k] += values[k]
        elapsed = time.perf_counter() - t0
        bar.set_postfix(ce=f"{sums['ce'] / (it + 1):.3f}", tri=f"{sums['triplet'] / (it + 1):.3f}",
                        reg=f"{sums['reg'] / (it + 1):.4f}", fps=f"{frames / max(elapsed, 1e-9):.0f}")
    n = max(it + 1, 1)
    elapsed = time.perf_counter() - t0
    return EpochStats(epoch=epoch, iterations=it + 1, **{k: sums[k] / n for k in LOSS_TERMS},
                      train_acc=correct / max(seen, 1), lr=lr, frames_per_s=frames / max(elapsed, 1e-9),
                      seconds=elapsed)
