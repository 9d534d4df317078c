"""python -m core.bench model: training-step frames/s of avg, sta, sta+fusion, stan and stal; each head's
overhead over avg's.

Two figures per variant, each the minimum over iterations (other processes only ever add time, so the minimum
is the best estimate on a shared machine), timed round-robin so drifts in load hit all variants alike: a full
training step (backbone + head + losses, forward and backward), and the head alone (VideoReIDModel.aggregate +
losses on fixed backbone maps, HEAD_REPS samples per iteration). A head's overhead is its extra head time over avg's,
as a fraction of avg's full step: the full-step ratio alone is too noisy on a shared CPU to resolve 1-2 %.
Without --backbone, three presets run: ResNet-50 at 256x128 (the paper's setting), ResNet-18 at 128x64 (the former cpu
profile) and the narrow ResNet-18 at 64x32 (the cpu profile).
CUDA (when available): bf16 autocast and channels_last, as in training; CPU: float32.
"""
from __future__ import annotations

import argparse
import time

import torch

from core.config import LossConfig
from core.losses import StalWeights, compute_losses
from core.models import VideoReIDModel
from core.models.backbone import BACKBONE_NAMES

HEAD_REPS = 10  # head-only steps per iteration and variant
VARIANTS = {"avg": ("avg", False), "sta": ("sta", False), "sta+fusion": ("sta", True),
            "stan": ("stan", False),  # its defaults (6 spatial models, concat -> FC) and its div term
            "stal": ("stal", False)}  # its defaults (6 stripes, RAN) and its Eq. 3-6 terms
STAL = StalWeights.from_config(LossConfig())  # STAL's loss weights at their defaults (Eq. 3, 4)


def bench(backbone: str, height: int, width: int, clips: int, frames: int, iters: int, warmup: int,
          device: torch.device) -> dict[str, tuple[float, float]]:
    """{variant: (seconds per full step, seconds per head-only step)}, minima over the timed iterations."""
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    models = {}
    for name, (aggregation, fusion) in VARIANTS.items():
        m = VideoReIDModel(625, backbone=backbone, pretrained=False, aggregation=aggregation, fusion=fusion,
                           stal_parts=min(6, height // 16))  # STAL: the paper's R = 6 where the map is tall enough
        if models:
            m.backbone.load_state_dict(models["avg"].backbone.state_dict())
        models[name] = m.to(device, memory_format=torch.channels_last if cuda else torch.preserve_format).train()
    x = torch.randn(clips, frames, 3, height, width, device=device)
    pids = torch.arange(clips, device=device) // 2  # two clips per identity, as P x K sampling gives
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        fmaps = models["avg"].backbone(x.flatten(0, 1))  # (B*N, 3, H, W) -> (B*N, D, h, w)
    fmaps = fmaps.unflatten(0, (clips, frames)).requires_grad_()  # (B*N, D, h, w) -> (B, N, D, h, w)

    def step(model, head_only):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = model.aggregate(fmaps) if head_only else model(x)
        loss = compute_losses(out, pids, 0.3, True, 0.0, False, div_weight=1.0, stal=STAL)["total"]
        model.zero_grad(set_to_none=True)
        loss.backward()

    def timed(fn) -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    full: dict[str, list[float]] = {name: [] for name in models}
    head: dict[str, list[float]] = {name: [] for name in models}
    for it in range(warmup + iters):
        for name, model in models.items():
            t_full = timed(lambda: step(model, False))
            t_head = [timed(lambda: step(model, True)) for _ in range(HEAD_REPS)]  # cheap: many samples
            if it >= warmup:
                full[name].append(t_full)
                head[name] += t_head
    return {name: (min(full[name]), min(head[name])) for name in models}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m core.bench model", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", choices=BACKBONE_NAMES, help="default: the three presets")
    p.add_argument("--height", type=int, help="frame height (default 256, or the preset's)")
    p.add_argument("--width", type=int, help="frame width (default 128, or the preset's)")
    p.add_argument("--clips", type=int, help="clips per batch (default: 2 on CPU, 16 on CUDA)")
    p.add_argument("--frames", type=int, default=4, help="N, frames per clip")
    p.add_argument("--iters", type=int, help="timed iterations (default: 3 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    clips, iters = args.clips or (16 if cuda else 2), args.iters or (20 if cuda else 3)
    presets = [("resnet50", 256, 128), ("resnet18", 128, 64), ("resnet18_narrow", 64, 32)]
    if args.backbone:
        presets = [(args.backbone, args.height or 256, args.width or 128)]
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; {'bf16 autocast, channels_last' if cuda else 'float32'}; {clips} clips x "
          f"{args.frames} frames; minima of {iters} timed iterations after {args.warmup} warm-up")
    print("| backbone | input | variant | ms/step | frames/s | step vs avg | head ms | head overhead |")
    print("|---|---|---|---|---|---|---|---|")
    for backbone, h, w in presets:
        sec = bench(backbone, h, w, clips, args.frames, iters, args.warmup, device)
        step_avg, head_avg = sec["avg"]
        for variant, (step, head) in sec.items():
            print(f"| {backbone} | {h}x{w} | {variant} | {1000 * step:.1f} | {clips * args.frames / step:.1f} | "
                  f"{step / step_avg:.3f} | {1000 * head:.2f} | {100 * (head - head_avg) / step_avg:+.2f} % |")
    return 0
