"""Training loop: Adam + step schedule, P x K identity batches, CE + batch-hard triplet + lambda * Reg.

One function, :func:`train`, turns a resolved :class:`~core.config.RunConfig` and a dataset into a trained model.
It checkpoints atomically (model, optimiser, scheduler, RNG and history) into ``run_dir/last.pt`` every
``train.checkpoint_every_s`` seconds, after every lr milestone and after the last epoch, on a background thread
(the loop pays for a copy to host memory only), and resumes from there when called again, so a run killed at any
point ends with the same weights as an uninterrupted one: everything random in an epoch (batches, frame choice,
flips, the Reg frame pairs) is a function of (seed, epoch), and the checkpoint holds all the state that carries
across epochs.

No idle GPU: the loader streams batches across epochs, yields uint8 clips normalised on the device, and the loss
terms are summed on the device and read once per epoch (or every LOG_EVERY iterations with a progress bar).
Under torchrun the batch-hard triplet loss sees the whole P x K batch (embeddings gathered across ranks).

Tracking, pruning and evaluation during training hang on the per-epoch ``callbacks``; nothing about MLflow or
Optuna lives here.
"""
from __future__ import annotations

import contextlib
import math
import time
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from core import interrupt
from core.config import Optimizer, RunConfig, config_hash, to_dict
from core.data import VideoDataset
from core.data.clips import make_train_stream
from core.data.normalize import normalize_clips
from core.engine.async_ckpt import CheckpointWriter, checkpoint_due
from core.engine.checkpoint import CheckpointError, load_torch
from core.engine.device import amp_dtype, autocast, gather_rows, init_distributed, resolve_device, seed_everything
from core.engine.meter import LossMeter, StepTimer
from core.engine.pretrained import start_model
from core.losses import StalWeights, compute_losses
from core.progress import bar as progress_bar
from core.record import EPOCH_WALL_S

LOSS_TERMS = ("ce", "triplet", "reg", "div", "triplet_local", "consist", "total")
TRAIN_SECTIONS = ("data", "model", "loss", "train")   # what a trained model depends on (its folder's hash)
LOG_EVERY = 20  # iterations between progress-bar reads of the device sums (each read is one host-device sync)


class NonFiniteLossError(FloatingPointError):
    """A loss term or a weight became NaN or inf, or the loss exploded (explosion); the last good checkpoint is left
    in place."""


# Divergence rule (besides NaN/inf): an epoch whose mean total loss exceeds EXPLOSION_FACTOR times the run's first
# epoch's, or LOSS_CEILING, has diverged even though its numbers are finite (train.lr=1e6: 8.3, then 2.2e23). Its
# weights are not checkpointed; the run stops as for a NaN loss. A converging run's loss stays far below both: its
# first epoch is its largest, about ln(identities) + margin.
EXPLOSION_FACTOR = 1e3
LOSS_CEILING = 1e6


def explosion(first_total: float | None, total: float) -> str | None:
    """Why an epoch's mean total loss `total` counts as diverged (the rule above), or None; `first_total`: the
    run's first epoch's (None: this is the first epoch)."""
    if first_total is not None and first_total > 0 and total > EXPLOSION_FACTOR * first_total:
        return f"mean total loss {total:.3g} > {EXPLOSION_FACTOR:g} x the first epoch's {first_total:.3g}"
    if total > LOSS_CEILING:
        return f"mean total loss {total:.3g} > {LOSS_CEILING:g}"
    return None


def train_hash(cfg: RunConfig) -> str:
    """Hash of the config sections a trained model depends on (core.engine.train_dir names its folder by it)."""
    return config_hash(cfg, TRAIN_SECTIONS)


def non_finite(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or inf (one host-device sync when none do)."""
    floats = {k: v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()}
    if not floats or bool(torch.stack([torch.isfinite(v).all() for v in floats.values()]).all()):
        return []
    return [k for k, v in floats.items() if not bool(torch.isfinite(v).all())]


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
    frames_per_s: float     # frames (all ranks) / seconds: wall clock, data waits, checkpoint copy and logging included
    seconds: float          # wall clock between the ends of the previous epoch and this one
    compute_frames_per_s: float = float("nan")  # frames / time of the training steps alone (device time on CUDA)
    div: float = 0.0        # unweighted STAN diversity term [S5] (0 for other models; default: older histories)
    triplet_local: float = 0.0  # unweighted STAL local triplet (Eq. 4, second sum) [L5]; 0 for other models
    consist: float = 0.0    # unweighted STAL consistency constraint (Eq. 6) [L6]; 0 for other models

    def metrics(self) -> dict[str, float]:
        """The per-epoch MLflow metrics: every field but epoch (the step); `seconds` is logged as EPOCH_WALL_S."""
        return {(EPOCH_WALL_S if k == "seconds" else k): v for k, v in asdict(self).items() if k not in ("epoch",)}


EpochCallback = Callable[[EpochStats, torch.nn.Module], None]


def _epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Generator for the Reg frame pairs of one epoch: a function of (seed, epoch) alone (and of the device type:
    on a GPU the pairs are drawn there, so no index is copied from the host per iteration)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


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


def check_checkpoint(path: Path, cfg: RunConfig) -> dict:
    """The state of checkpoint `path` if `cfg` may resume from it; CheckpointError naming the file otherwise (a
    folder, an empty, corrupt or unsafe file, another config, non-finite weights). core.tables calls it for every
    row before any row trains; whether it fits the model is known only when the model is built (_resume)."""
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file; delete it to restart that run")
    state = load_torch(path)
    stored, current = state.get("config_hash") if isinstance(state, dict) else None, train_hash(cfg)
    if stored is None:
        raise CheckpointError(f"checkpoint {path} has no config hash (written by an older version of this suite, or "
                              f"not by this suite), so it cannot be checked against this config ({current}); delete "
                              f"it to retrain")
    if stored != current:
        raise CheckpointError(f"checkpoint {path} belongs to another config (training hash {stored}; this run's is "
                              f"{current}); refusing to resume it: delete it to retrain this config")
    model_state = state.get("model")
    if not isinstance(model_state, dict):
        raise CheckpointError(f"checkpoint {path} holds no model weights; delete it to retrain")
    bad = non_finite(model_state)
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite weights ('{bad[0]}' and {len(bad) - 1} more); "
                              f"delete it to retrain")
    return state


def _resume(path: Path, cfg: RunConfig, model, optimizer, scheduler, scaler) -> tuple[list[EpochStats], int]:
    """Load `path` into the training state; returns (history, first epoch to run). Refuses, naming the file, what
    check_checkpoint refuses and a checkpoint that does not fit the model."""
    state = check_checkpoint(path, cfg)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        history = [EpochStats(**h) for h in state["history"]]
        return history, state["epoch"] + 1
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model or optimiser of this config "
                           f"({' '.join(str(e).split())[:400]}); delete it to retrain") from e


def _advice(cfg: RunConfig, ckpt_path: Path, saved: int | None) -> str:
    """What the error of a diverged run says is kept (`saved`: 0-based epoch of the checkpoint on disk) and what
    to change."""
    kept = (f"the checkpoint of epoch {saved + 1} ({ckpt_path}) is kept, the last written, whose losses and weights "
            f"are finite" if saved is not None and ckpt_path.exists()
            else "no checkpoint is kept (none was written with finite losses and weights)")
    return (f"{kept}. Training is deterministic, so this config diverges the same way on every rerun: lower "
            f"train.lr (now {cfg.train.lr:g}) or loss.reg_weight (now {cfg.loss.reg_weight:g})")


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    """train.optimizer: Adam (the paper) or SGD with Nesterov momentum, lr and weight decay of cfg.train."""
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    raise ValueError(f"unknown train.optimizer {t.optimizer!r}; valid: {', '.join(typing.get_args(Optimizer))}")


def train(cfg: RunConfig, dataset: VideoDataset, run_dir: str | Path,
          callbacks: Sequence[EpochCallback] = (), progress: bool = True) -> tuple[torch.nn.Module, list[EpochStats]]:
    """Train (or resume) the model of `cfg` on `dataset.train`; returns (model in eval mode, per-epoch stats).

    ``run_dir/last.pt`` is the resumable checkpoint (written when checkpoint_due says so). Callbacks run on rank 0
    after each epoch, once its checkpoint (if due) is handed to the writer; an exception raised by one (e.g. Optuna
    pruning) stops training with the last checkpoint intact. Every write is finished before train returns or raises.
    """
    run_dir = Path(run_dir)
    ddp = init_distributed(cfg.train.device)
    device = resolve_device(cfg.train.device, ddp)
    seed_everything(cfg.train.seed)
    model = start_model(cfg, dataset.num_train_pids)  # ImageNet / pretraining-stage weights as the config says
    model.to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model.parameters())
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
    if cfg.train.compile:
        net = torch.compile(net)
    gather = gather_rows if ddp.world_size > 1 else None  # batch-hard mining over the whole P x K batch
    writer = CheckpointWriter()
    saved = start - 1 if start else None  # last epoch (0-based) on disk
    epochs = progress_bar(range(start, cfg.train.epochs), desc="epochs", initial=start, total=cfg.train.epochs,
                          enabled=progress and ddp.is_main)
    batches = None
    try:
        if start < cfg.train.epochs:
            loader = make_train_stream(dataset.train, cfg.data, seed=cfg.train.seed, start_epoch=start,
                                       rank=ddp.rank, world_size=ddp.world_size)
            per_epoch, batches = loader.batch_sampler.batches_per_epoch, iter(loader)
        mark = last_save = time.perf_counter()
        for epoch in epochs:
            try:
                done = _train_epoch(net, batches, per_epoch, optimizer, scaler, cfg, epoch, device, dtype,
                                    progress and ddp.is_main, gather)
            except NonFiniteLossError as e:
                writer.join()
                raise NonFiniteLossError(f"{e}; {_advice(cfg, ckpt_path, saved)}") from None
            bad = non_finite(model.state_dict())     # the epoch's last optimiser step is not covered by a loss
            if bad:
                writer.join()
                raise NonFiniteLossError(f"non-finite weights after epoch {epoch + 1} ('{bad[0]}' and {len(bad) - 1} "
                                         f"more tensors) although every loss of the epoch was finite; no checkpoint "
                                         f"was written for it; {_advice(cfg, ckpt_path, saved)}")
            exploded = explosion(history[0].total if history else None, done["total"])
            if exploded:
                writer.join()
                raise NonFiniteLossError(f"loss explosion at epoch {epoch + 1}: {exploded} (divergence rule: "
                                         f"{EXPLOSION_FACTOR:g} x the first epoch's loss, or {LOSS_CEILING:g}); no "
                                         f"checkpoint was written for it; {_advice(cfg, ckpt_path, saved)}")
            scheduler.step()
            now = time.perf_counter()
            done["compute_frames_per_s"] *= ddp.world_size  # all ranks' frames: 1 and G GPUs compare directly
            stats = EpochStats(epoch=epoch, frames_per_s=done.pop("frames") * ddp.world_size / max(now - mark, 1e-9),
                               seconds=now - mark, **done)
            mark = now
            history.append(stats)
            if ddp.is_main and checkpoint_due(epoch, cfg.train.epochs, cfg.train.milestones, now - last_save,
                                              cfg.train.checkpoint_every_s):
                writer.submit(_checkpoint_state(model, optimizer, scheduler, scaler, epoch, history, cfg), ckpt_path)
                saved, last_save = epoch, time.perf_counter()
            epochs.set_postfix(loss=f"{stats.total:.3f}", acc=f"{stats.train_acc:.2f}")
            if ddp.is_main:
                for callback in callbacks:
                    callback(stats, model)
    except BaseException:
        with contextlib.suppress(Exception):  # the training error wins over a failed write
            writer.join()
        raise
    writer.join()
    del batches
    model.eval()
    return model, history


def _train_epoch(net, batches, iterations: int, optimizer, scaler, cfg: RunConfig, epoch: int, device, dtype,
                 progress: bool, gather=None) -> dict:
    """`iterations` training steps on batches drawn from the iterator `batches`.

    Returns {"iterations", "frames", "lr", "train_acc", "compute_frames_per_s", and the mean of every loss term}.
    The loss terms stay on the device until the end of the epoch (and every LOG_EVERY iterations with a progress
    bar); a non-finite term then raises NonFiniteLossError naming the epoch, iteration and term.
    """
    net.train()
    generator = _epoch_generator(cfg.train.seed, epoch, device)
    meter, timer = LossMeter(LOSS_TERMS, device), StepTimer(device)
    lr = optimizer.param_groups[0]["lr"]
    frames = 0
    bar = progress_bar(total=iterations, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, enabled=progress)
    t0 = time.perf_counter()
    for it in range(iterations):
        interrupt.check()                                   # a Ctrl+C swallowed by a finaliser (core.interrupt)
        clips, pids, _camids = next(batches)
        timer.start()
        clips = normalize_clips(clips.to(device, non_blocking=True))  # (B, N, 3, H, W) uint8 -> float32
        pids = pids.to(device, non_blocking=True)                      # (B,)
        with autocast(device, dtype):
            out = net(clips)
        losses = compute_losses(out, pids, margin=cfg.loss.margin, use_triplet=cfg.loss.triplet,
                                reg_weight=cfg.loss.reg_weight, reg_squared=cfg.loss.reg_squared,
                                generator=generator, gather=gather, div_weight=cfg.loss.div_weight,
                                div_squared=cfg.loss.div_squared, stal=StalWeights.from_config(cfg.loss))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        meter.add(it, losses, out["logits"], pids.repeat_interleave(out["frames_per_clip"]))
        timer.stop()
        frames += clips.shape[0] * clips.shape[1]
        bar.update()
        if progress and (it + 1) % LOG_EVERY == 0:
            read = _read(meter, epoch)
            bar.set_postfix(ce=f"{read['means']['ce']:.3f}", tri=f"{read['means']['triplet']:.3f}",
                            reg=f"{read['means']['reg']:.4f}", fps=f"{frames / (time.perf_counter() - t0):.0f}")
    bar.close()
    read = _read(meter, epoch)
    return {"iterations": iterations, "frames": frames, "lr": lr, **read["means"], "train_acc": read["train_acc"],
            "compute_frames_per_s": frames / max(timer.seconds(), 1e-9)}


def _read(meter: LossMeter, epoch: int) -> dict:
    """The meter's figures on the host; NonFiniteLossError at the first non-finite iteration seen."""
    read = meter.read()
    if read["first_bad"] is not None:
        it, values = read["first_bad"]
        term = next(k for k in LOSS_TERMS if not math.isfinite(values[k]))
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, iteration {it + 1}: term '{term}' = {values[term]} "
            f"(all terms: {values})")
    return read
