"""uint8 clips -> normalised float32, on whatever device the clips are (the training/extraction device).

The DataLoader yields uint8 clips (4x less to pin and copy than float32); both training and feature extraction
call :func:`normalize_clips` after the copy. The arithmetic is torchvision's ToDtype(float32, scale=True) then
Normalize, op for op, so on the CPU the numbers equal the former in-loader normalisation bit for bit.
"""
from __future__ import annotations

import functools

import torch

from core.data.clips import IMAGENET_MEAN, IMAGENET_STD


@functools.lru_cache(maxsize=None)
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 1, 1) float32 ImageNet mean and std on `device`, made once (no host-to-device copy per batch)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1).to(device)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1).to(device)
    return mean, std


def normalize_clips(clips: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 in [0, 255] -> float32 (x / 255 - mean) / std, ImageNet mean and std, same device."""
    if clips.dtype != torch.uint8:
        raise TypeError(f"normalize_clips expects uint8 clips, got {clips.dtype}")
    mean, std = _mean_std(clips.device)
    return clips.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)
