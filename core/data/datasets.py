"""Dataset entry points: `load_dataset(cfg)` picks MARS, DukeMTMC-VideoReID or the synthetic tree."""
from __future__ import annotations

import dataclasses

from core.config import DataConfig
from core.data.base import DatasetError, Tracklet, VideoDataset, relabel
from core.data.duke import load_duke
from core.data.mars import load_mars
from core.data.synthetic import default_root, ensure_synthetic

__all__ = ["DatasetError", "Tracklet", "VideoDataset", "relabel", "load_mars", "load_duke", "load_synthetic",
           "load_dataset", "DATASETS"]


def load_synthetic(cfg: DataConfig, progress: bool = True) -> VideoDataset:
    """The synthetic tree of cfg.synthetic_size / cfg.synthetic_seed at cfg.root (default
    .cache/synthetic_<size>_seed<seed>_v<generator version> under the cwd), generated on first use, read with
    load_mars."""
    root = cfg.root or default_root(cfg.synthetic_size, cfg.synthetic_seed)
    ensure_synthetic(root, cfg.synthetic_size, cfg.synthetic_seed, progress)
    return as_synthetic(load_mars(root, cfg.gallery_with_queries))


def as_synthetic(ds: VideoDataset) -> VideoDataset:
    """Mark a dataset read from a generated tree as synthetic, so that no summary presents it as MARS."""
    return dataclasses.replace(ds, name="synthetic (MARS layout)", synthetic=True)


def _mars(cfg: DataConfig, progress: bool = True) -> VideoDataset:   # reads, no progress bar
    return load_mars(_root(cfg), cfg.gallery_with_queries)


def _duke(cfg: DataConfig, progress: bool = True) -> VideoDataset:
    return load_duke(_root(cfg))  # gallery_with_queries has no effect on Duke: see load_duke


def _root(cfg: DataConfig) -> str:
    if not cfg.root:
        raise DatasetError(f"dataset {cfg.dataset!r} needs data.root (the folder holding the downloaded dataset)")
    return cfg.root


DATASETS = {"mars": _mars, "duke": _duke, "synthetic": load_synthetic}


def load_dataset(cfg: DataConfig, progress: bool = True) -> VideoDataset:
    """The dataset named by cfg.dataset (mars | duke | synthetic), split into train / query / gallery;
    `progress=False` (--quiet) silences the synthetic generator's progress bar."""
    if cfg.dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[cfg.dataset](cfg, progress)
