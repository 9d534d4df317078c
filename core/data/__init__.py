"""Data layer: datasets (MARS, DukeMTMC-VideoReID, synthetic), identity batch sampling, frame sampling, clip loaders."""
from core.data.base import DatasetError, Tracklet, VideoDataset
from core.data.clips import make_test_loader, make_train_loader
from core.data.datasets import DATASETS, as_synthetic, load_dataset, load_duke, load_mars, load_synthetic
from core.data.sampling import IdentityBatchSampler

__all__ = ["DATASETS", "DatasetError", "IdentityBatchSampler", "Tracklet", "VideoDataset", "as_synthetic",
           "load_dataset", "load_duke", "load_mars", "load_synthetic", "make_test_loader", "make_train_loader"]
