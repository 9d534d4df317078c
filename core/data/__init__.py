"""Data layer: datasets (MARS, DukeMTMC-VideoReID, synthetic), identity batch sampling, frame sampling, clip loaders.

The names below are imported on first use (PEP 562), so that a light submodule (``core.data.check --help``,
``core.data.base``) does not import torch."""
import importlib

_WHERE = {"DatasetError": "core.data.base", "Tracklet": "core.data.base", "VideoDataset": "core.data.base",
          "make_test_loader": "core.data.clips", "make_train_loader": "core.data.clips",
          "DATASETS": "core.data.datasets", "as_synthetic": "core.data.datasets", "load_dataset": "core.data.datasets",
          "load_duke": "core.data.datasets", "load_mars": "core.data.datasets",
          "load_synthetic": "core.data.datasets", "IdentityBatchSampler": "core.data.sampling"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'core.data' has no attribute {name!r}")
