"""Training loop: Adam + step schedule, P x K identity batches, CE + batch-hard triplet + lambda * Reg.

One function, :func:`train`, turns a resolved :class:`~core.config.RunConfig` and a dataset into a trained model.
It checkpoints atomically after every epoch (model, optimiser, scheduler, RNG and history) into
``run_dir/last.pt`` and resumes from there when called again, so a run killed at any point ends with the same
weights as an uninterrupted one: everything random in an epoch (batches, frame choice, flips, the Reg frame
pairs) is a function of (seed, epoch), and the checkpoint holds all the state that carries across epochs.

A checkpoint is written only when every loss of the epoch and every weight after its last optimiser step are
finite, so the kept ``last.pt`` is always the last good epoch; it stores the training hash of its config and is
loaded with ``weights_only=True``; a checkpoint of another config, or one that does not fit the model, is refused.

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

from core.config import RunConfig, config_hash, to_dict
from core.data import VideoDataset, make_train_loader
from core.engine.checkpoint import load_torch, save_torch
from core.engine.device import amp_dtype, autocast, init_distributed, resolve_device, seed_everything
from core.losses import compute_losses
from core.models import build_model

LOSS_TERMS = ("ce", "triplet", "reg", "total")
TRAIN_SECTIONS = ("data", "model", "loss", "train")   # what a trained model depends on (its folder's hash)


class NonFiniteLossError(FloatingPointError):
    """A loss term or a weight became NaN or inf; the last good checkpoint is left in place."""


def train_hash(cfg: RunConfig) -> str:
    """Hash of the config sections a trained model depends on (core.engine.train_dir names its folder by it)."""
    return config_hash(cfg, TRAIN_SECTIONS)


def non_finite(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or inf."""
    return [k for k, v in state.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


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
        "config_hash": train_hash(cfg),       # resume refuses a checkpoint of another config
    }


def _resume(path: Path, cfg: RunConfig, model, optimizer, scheduler, scaler) -> tuple[list[EpochStats], int]:
    """Load `path` into the training state; returns (history, first epoch to run). Refuses, naming the file, a
    checkpoint of another config, one that does not fit the model, and one with non-finite weights."""
    state = load_torch(path)
    stored, current = state.get("config_hash") if isinstance(state, dict) else None, train_hash(cfg)
    if stored is None:
        raise RuntimeError(f"checkpoint {path} has no config hash (written by an older version of this suite), so "
                           f"it cannot be checked against this config ({current}); delete it to retrain")
    if stored != current:
        raise RuntimeError(f"checkpoint {path} belongs to another config (training hash {stored}; this run's is "
                           f"{current}); refusing to resume it: delete it to retrain this config")
    bad = non_finite(state["model"])
    if bad:
        raise RuntimeError(f"checkpoint {path} holds non-finite weights ('{bad[0]}' and {len(bad) - 1} more); "
                           f"delete it to retrain")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        history = [EpochStats(**h) for h in state["history"]]
        return history, state["epoch"] + 1
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise RuntimeError(f"checkpoint {path} does not fit the model or optimiser of this config "
                           f"({' '.join(str(e).split())[:400]}); delete it to retrain") from e


def _advice(cfg: RunConfig, ckpt_path: Path, epoch: int) -> str:
    """What the error of a diverged epoch (0-based `epoch`) says is kept and what to change."""
    kept = (f"the checkpoint of epoch {epoch} ({ckpt_path}) is kept, the last whose losses and weights are finite"
            if ckpt_path.exists() else "no checkpoint is kept (no epoch ended with finite losses and weights)")
    return (f"{kept}. Training is deterministic, so this config diverges the same way on every rerun: lower "
            f"train.lr (now {cfg.train.lr:g}) or loss.reg_weight (now {cfg.loss.reg_weight:g})")


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
        history, start = _resume(ckpt_path, cfg, model, optimizer, scheduler, scaler)

    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ddp.world_size > 1 else model
    loader = make_train_loader(dataset.train, cfg.data, seed=cfg.train.seed, rank=ddp.rank,
                               world_size=ddp.world_size)
    epochs = tqdm(range(start, cfg.train.epochs), desc="epochs", initial=start, total=cfg.train.epochs,
                  disable=not (progress and ddp.is_main))
    for epoch in epochs:
        try:
            stats = _train_epoch(net, loader, optimizer, scaler, cfg, epoch, device, dtype, progress and ddp.is_main)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"{e}; {_advice(cfg, ckpt_path, epoch)}") from None
        bad = non_finite(model.state_dict())     # the epoch's last optimiser step is not covered by a loss
        if bad:
            raise NonFiniteLossError(f"non-finite weights after epoch {epoch + 1} ('{bad[0]}' and {len(bad) - 1} "
                                     f"more tensors) although every loss of the epoch was finite; no checkpoint "
                                     f"was written for it; {_advice(cfg, ckpt_path, epoch)}")
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
                f"(all terms: {values})")
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
