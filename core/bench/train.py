"""python -m core.bench train: training and extraction throughput of avg, sta and sta+fusion, as the engine runs them.

Per variant, all through the engine's own epoch loop (core.engine.training._train_epoch: uint8 clips copied to the
device and normalised there, autocast, losses, Adam step, device-side loss sums read once at the end):
  step       frames/s of forward + backward + optimiser step on one fixed synthetic uint8 batch (no decoding);
  e2e        frames/s end to end through the real training DataLoader (make_train_stream) on the synthetic tree;
  loader     frames/s of that DataLoader alone, no model (is data loading the limit?);
  extract    frames/s of core.engine.extract_features over the synthetic test tracklets (loader included; on CUDA
             the list repeated to >= 20,000 frames);
  peak GiB   peak GPU memory of the step (CUDA only).
Frames/s are wall clock over the timed iterations after warm-up ones (cuDNN autotuning, worker start-up). The
paper's batch is 64 clips (P=16 identities x K=4) of 4 frames; --clips shrinks it (K stays 4). Prints a markdown
table and one JSON line. Imports neither mlflow nor optuna (GPU machines may lack both).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from core.config import RunConfig, apply_overrides
from core.data import load_mars
from core.data.clips import make_train_stream
from core.data.synthetic import default_root, ensure_synthetic
from core.engine.device import amp_dtype, device_description, resolve_device
from core.engine.extract import extract_features
from core.engine.training import _train_epoch
from core.models import build_model
from core.models.backbone import BACKBONE_NAMES

VARIANTS = {"avg": {"model.aggregation": "avg"}, "sta": {"model.aggregation": "sta", "model.fusion": False},
            "sta+fusion": {"model.aggregation": "sta", "model.fusion": True}}
K = 4  # tracklets per identity in a batch (the paper's K)
EXTRACT_MIN_FRAMES = 20_000  # frames timed by the extraction figure on CUDA (the test list repeated)


def bench_config(args, variant: str, root: str) -> RunConfig:
    return apply_overrides(RunConfig(), {
        "data.dataset": "synthetic", "data.root": root, "data.synthetic_size": args.data_size,
        "data.height": args.height, "data.width": args.width, "data.seq_len": args.frames,
        "data.ids_per_batch": args.clips // K, "data.tracklets_per_id": K, "data.num_workers": args.workers,
        "model.backbone": args.backbone, "model.pretrained": False, "model.num_regions": min(4, args.height // 16),
        "train.device": args.device, "train.amp": not args.no_amp, "train.compile": args.compile,
        "train.epochs": 10 ** 6, "train.milestones": [], "eval.batch_size": args.clips,
        **VARIANTS[variant]}, f"core.bench train ({variant})")


def _repeat(batch):
    while True:
        yield batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_variant(cfg: RunConfig, device: torch.device, iters: int, warmup: int, dataset) -> dict[str, float]:
    """The figures of one variant (a non-finite loss raises NonFiniteLossError, as in training)."""
    torch.manual_seed(0)
    model = build_model(cfg.model, dataset.num_train_pids).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if cfg.train.compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    dtype = amp_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    b = cfg.data.ids_per_batch * K
    frames = b * cfg.data.seq_len
    steps = lambda batches, n, epoch: _train_epoch(net, batches, n, optimizer, scaler, cfg, epoch, device, dtype,
                                                   progress=False)  # noqa: E731

    def timed(batches, n, epoch) -> tuple[float, dict]:
        _sync(device)
        t0 = time.perf_counter()
        out = steps(batches, n, epoch)  # ends with one read of the device sums: a sync
        return n * frames / (time.perf_counter() - t0), out

    # 1. synthetic uint8 batch, as the loader yields it (pinned on CUDA)
    g = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (b, cfg.data.seq_len, 3, cfg.data.height, cfg.data.width), dtype=torch.uint8,
                          generator=g)
    pids = torch.arange(b) // K % dataset.num_train_pids
    if device.type == "cuda":
        clips, pids = clips.pin_memory(), pids.pin_memory()
        torch.cuda.reset_peak_memory_stats(device)
    fixed = _repeat((clips, pids, torch.zeros(b, dtype=torch.long)))
    steps(fixed, warmup, 0)
    step_fps, out = timed(fixed, iters, 0)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None

    # 2. the DataLoader alone, on a fresh stream: warm-up batches, then enough timed ones that the prefetched
    #    queue (2 batches a worker) barely moves the figure
    batches = iter(make_train_stream(dataset.train, cfg.data, seed=0))
    for _ in range(warmup):
        next(batches)
    n = max(iters, 20 * cfg.data.num_workers)
    t0 = time.perf_counter()
    for _ in range(n):
        next(batches)
    loader_fps = n * frames / (time.perf_counter() - t0)
    del batches

    # 3. end to end through the training DataLoader (streaming across epochs, workers persistent)
    batches = iter(make_train_stream(dataset.train, cfg.data, seed=1))
    steps(batches, warmup, 0)
    e2e_fps, _ = timed(batches, iters, 1)
    del batches

    # 4. extraction of the test tracklets (one clip of N evenly spaced frames each)
    tracklets = list(dict.fromkeys([*dataset.query, *dataset.gallery]))
    kwargs = dict(seq_len=cfg.eval.seq_len, sampling=cfg.eval.sampling, height=cfg.data.height,
                  width=cfg.data.width, batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
                  device=device, dtype=dtype, progress=False)
    if device.type == "cuda":   # the synthetic test split is ~2k frames: repeat it so loader start-up is not the figure
        tracklets *= -(-EXTRACT_MIN_FRAMES // (len(tracklets) * cfg.eval.seq_len))
    # warm-up: one full batch and one of the last batch's size, so cuDNN autotunes both shapes untimed. (On an H100
    # this figure still read ~1.8k frames/s against 5-7k for the same call in a standalone script: cause unknown,
    # docs/gpu.md "Speed on a GPU".)
    extract_features(model, tracklets[:cfg.eval.batch_size + len(tracklets) % cfg.eval.batch_size], **kwargs)
    _sync(device)
    t0 = time.perf_counter()
    extract_features(model, tracklets, **kwargs)
    _sync(device)
    extract_fps = len(tracklets) * cfg.eval.seq_len / (time.perf_counter() - t0)
    return {"step_frames_per_s": step_fps, "step_compute_frames_per_s": out["compute_frames_per_s"],
            "e2e_frames_per_s": e2e_fps, "loader_frames_per_s": loader_fps, "extract_frames_per_s": extract_fps,
            "peak_gpu_gib": peak}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.bench train", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:<i> (default auto)")
    p.add_argument("--backbone", default="resnet50", choices=BACKBONE_NAMES)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--clips", type=int, help="clips per batch, a multiple of 4 (default: 64 on CUDA, 8 on CPU)")
    p.add_argument("--frames", type=int, default=4, help="N, frames per clip")
    p.add_argument("--iters", type=int, help="timed iterations per figure (default: 30 on CUDA, 2 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed iterations first (default: 10 on CUDA, 1 on CPU)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    p.add_argument("--data-size", default="default", choices=("tiny", "small", "default"),
                   help="synthetic preset read by the loader figures (generated once)")
    p.add_argument("--data-root", help="where the synthetic tree is (default: .cache/synthetic_<size>_seed0_v<generator version>)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma separated, from " + ",".join(VARIANTS))
    p.add_argument("--no-amp", action="store_true", help="CUDA: full float32 instead of bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.clips = args.clips or (64 if cuda else 8)
    args.iters, args.warmup = args.iters or (30 if cuda else 2), args.warmup if args.warmup is not None else \
        (10 if cuda else 1)
    if args.clips % K or args.clips < 2 * K:
        p.error(f"--clips must be a multiple of {K} and at least {2 * K}, got {args.clips}")
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    root = str(ensure_synthetic(args.data_root or default_root(args.data_size, 0), args.data_size, 0))
    dataset = load_mars(root)
    precision = "float32" if not cuda or args.no_amp else str(amp_dtype(device, True)).replace("torch.", "")
    print(f"device: {device_description(device)}; torch {torch.__version__}; {args.backbone} {args.height}x"
          f"{args.width}, {args.clips} clips x {args.frames} frames ({args.clips * args.frames} frames a batch), "
          f"{precision}{', channels_last' if cuda else ''}{', compiled' if args.compile else ''}; "
          f"{args.iters} timed iterations after {args.warmup}; loader: {args.workers} workers, synthetic "
          f"'{args.data_size}' tree ({len(dataset.train)} train tracklets, "
          f"{len(set(dataset.query) | set(dataset.gallery))} test tracklets)", flush=True)
    results = {}
    for variant in variants:
        results[variant] = bench_variant(bench_config(args, variant, root), device, args.iters, args.warmup, dataset)
    print("| variant | step frames/s | (compute only) | e2e frames/s | loader alone | extract frames/s | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for variant, r in results.items():
        print(f"| {variant} | {r['step_frames_per_s']:,.1f} | {r['step_compute_frames_per_s']:,.1f} | "
              f"{r['e2e_frames_per_s']:,.1f} | {r['loader_frames_per_s']:,.1f} | {r['extract_frames_per_s']:,.1f} | "
              f"{'-' if r['peak_gpu_gib'] is None else format(r['peak_gpu_gib'], '.2f')} |")
    print(json.dumps({"bench": "train", "device": device_description(device), "torch": torch.__version__,
                      "backbone": args.backbone, "height": args.height, "width": args.width, "clips": args.clips,
                      "frames": args.frames, "precision": precision, "compile": args.compile,
                      "workers": args.workers, "iters": args.iters, "warmup": args.warmup,
                      "data_size": args.data_size, "results": results}))
    return 0
