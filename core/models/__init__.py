"""Backbone, STA functions (Eq. 1-4, Alg. 1) and the video re-ID model; README.md maps equations to code."""
from core.models.backbone import WeightsUnavailableError, build_backbone
from core.models.model import VideoReIDModel, build_model

__all__ = ["VideoReIDModel", "WeightsUnavailableError", "build_backbone", "build_model"]
