"""python -m core.bench smoke: a short paper-profile run (train + evaluate) through core.engine.run, no tracking.

The `paper` profile of experiments/profiles.yaml (ResNet-50, 256x128, P=16 x K=4, N=4, bf16 on CUDA) with the
ImageNet weights off (from scratch: nothing is downloaded), a few epochs (default 2) on the synthetic tree
(default preset), in a fresh work folder. Under ``torchrun --nproc_per_node=G -m core.bench smoke`` every rank
trains (DDP) and rank 0 evaluates and prints. Prints the per-epoch figures the engine logs (frames/s wall clock
and compute only, all ranks), the evaluation time, and one JSON line; no MLflow, no Optuna.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from core.cli import parse_set
from core.config import RunConfig, apply_overrides
from core.engine import run
from core.data.synthetic import default_root, ensure_synthetic
from core.engine.device import barrier, device_description, init_distributed, resolve_device
from core.specs import load_profiles

MARS_ITERATIONS = 800 * 39   # one paper-profile MARS row: 800 epochs of 39 iterations (625 ids / P = 16)


def smoke_config(args) -> RunConfig:
    profile = load_profiles()["paper"]
    return apply_overrides(RunConfig(), {
        **profile, "model.pretrained": False, "data.dataset": "synthetic", "data.synthetic_size": args.data_size,
        "data.root": args.data_root, "train.epochs": args.epochs, "train.device": args.device,
        "train.compile": args.compile, **({"data.num_workers": args.workers} if args.workers is not None else {}),
        **parse_set(args.overrides)}, "core.bench smoke")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.bench smoke", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="train.device (default cuda)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data-size", default="default", choices=("tiny", "small", "default"))
    p.add_argument("--data-root", help="synthetic tree (default: .cache/synthetic_<size>_seed0_v<generator version>)")
    p.add_argument("--workers", type=int, help="data.num_workers (default: the profile's, 8)")
    p.add_argument("--compile", action="store_true", help="train.compile")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config key, e.g. --set data.ids_per_batch=4 (tests shrink the run this way)")
    p.add_argument("--work-dir", help="checkpoints (default: a temporary folder, removed at the end)")
    args = p.parse_args(argv)
    ddp = init_distributed(args.device)
    args.data_root = str(args.data_root or default_root(args.data_size, 0))
    if ddp.is_main:                      # generated once, by rank 0, before the other ranks read it
        ensure_synthetic(args.data_root, args.data_size, 0, progress=False)
    barrier(ddp)
    cfg = smoke_config(args)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="sta_smoke_")) if ddp.world_size == 1 else \
        Path(args.work_dir or "sta_smoke_runs")  # torchrun: the ranks must share one folder
    t0 = time.perf_counter()
    result = run(cfg, work, progress=False)
    seconds = time.perf_counter() - t0
    if not ddp.is_main:
        return 0
    device = resolve_device(cfg.train.device, ddp)
    train_s = sum(h.seconds for h in result.history)
    print(f"paper-profile smoke: {device_description(device)} x {ddp.world_size} rank(s); torch {torch.__version__}; "
          f"{cfg.model.backbone} from scratch, {cfg.data.height}x{cfg.data.width}, P={cfg.data.ids_per_batch} x "
          f"K={cfg.data.tracklets_per_id} clips of {cfg.data.seq_len} frames; synthetic '{cfg.data.synthetic_size}'")
    print("| epoch | iterations | total loss | frames/s (wall) | frames/s (compute) | seconds |")
    print("|---|---|---|---|---|---|")
    for h in result.history:
        print(f"| {h.epoch + 1} | {h.iterations} | {h.total:.3f} | {h.frames_per_s:,.0f} | "
              f"{h.compute_frames_per_s:,.0f} | {h.seconds:.2f} |")
    last = result.history[-1]
    batch_frames = cfg.data.ids_per_batch * cfg.data.tracklets_per_id * cfg.data.seq_len  # 256 in the paper
    eta_h = MARS_ITERATIONS * batch_frames / last.frames_per_s / 3600
    print(f"whole run {seconds:.1f} s (training {train_s:.1f} s, evaluation + set-up {seconds - train_s:.1f} s); "
          f"R1 {100 * result.metrics['R1']:.1f} mAP {100 * result.metrics['mAP']:.1f} (synthetic, "
          f"{len(result.history)} epoch(s): a pipeline check, not a result); at the last epoch's wall-clock rate a "
          f"MARS row of {MARS_ITERATIONS:,} iterations would train in {eta_h:.2f} h (evaluation not included)")
    print(json.dumps({"bench": "smoke", "device": device_description(device), "world_size": ddp.world_size,
                      "torch": torch.__version__, "run_wall_s": seconds, "train_wall_s": train_s,
                      "epochs": [h.metrics() for h in result.history], "metrics": result.metrics,
                      "mars_row_train_hours_at_last_epoch_rate": eta_h}))
    if args.work_dir is None:  # nothing of the smoke run is kept (the other ranks are past their last use of it)
        shutil.rmtree(work, ignore_errors=True)
    return 0
