"""The synthetic generator's ground truth (what it did to each frame) and its mapping to the model's grid.

Sidecar `<root>/truth.parquet`, written by core.data.synthetic with the tree (atomically, with it) and never read by
the MARS loader: the tree stays in the exact MARS layout. One row per (frame, damage); a frame with no damage has
one row of kind "none". Columns (TRUTH_COLUMNS):

    split     "train" | "test"
    name      the frame's file name, e.g. 0012C3T0001F005.jpg (unique within a split)
    track     0-based row of the tracklet in the split's MARS table (tracks_<split>_info.mat)
    frame     0-based position of the frame in its tracklet
    kind      "none", or the damage: "band", "strip" (occluders), "degrade" (a blurred, noised band); see
              core.data.synthetic
    y0, y1    damaged pixel rows [y0, y1) of the stored frame, clipped to it (0, 0 for "none")
    x0, x1    damaged pixel columns [x0, x1)
    height, width   the stored frame's size in pixels
    blur      the camera's Gaussian blur sigma over the whole frame, in pixels (0 where the frame is left sharp)
    dx, dy    the person's offset from the box centre, in pixels: detector-style jitter (plus the cut of a junk box)
    scale     person height / frame height
    junk      True for a junk tracklet (a badly placed box that cuts the person)

Mapping to the model's grid (`region_fractions`, `cell_fractions`): a frame is resized to the input size and the
backbone maps it to an h x w grid, so feature row i covers the stored frame's pixel rows
[floor(i * H / h), floor((i + 1) * H / h)) and column j the columns [floor(j * W / w), floor((j + 1) * W / w)): a
partition of the frame (exact strides when h divides H). Region k of the model (rows [a, b) of the grid,
core.models.sta.region_bounds with the same remainder rule) covers pixel rows [floor(a * H / h), floor(b * H / h)).
The occluded fraction of a region or cell is the mean of the damage mask over its pixels.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from core.data.base import DatasetError
from core.models.sta import region_bounds

TRUTH = "truth.parquet"
TRUTH_COLUMNS = ("split", "name", "track", "frame", "kind", "y0", "y1", "x0", "x1", "height", "width", "blur",
                 "dx", "dy", "scale", "junk")
NONE = "none"


def truth_path(root: str | os.PathLike) -> Path:
    return Path(root) / TRUTH


def load_truth(root: str | os.PathLike) -> pd.DataFrame:
    """The truth table of a synthetic tree; DatasetError naming the file when it is missing or malformed."""
    path = truth_path(root)
    if not path.is_file():
        raise DatasetError(f"{path}: missing; the occlusion ground truth exists only for synthetic trees written by "
                           f"core.data.synthetic (version 3 or later); regenerate the tree")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the truth table ({e})") from e
    missing = [c for c in TRUTH_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: truth table lacks columns {missing}; expected {list(TRUTH_COLUMNS)}")
    return table


def frame_mask(rects: Iterable[Sequence[int]], height: int, width: int) -> np.ndarray:
    """[H, W] bool: the union of the damaged rectangles (y0, y1, x0, x1), half-open, clipped to the frame."""
    mask = np.zeros((height, width), bool)
    for y0, y1, x0, x1 in rects:
        mask[max(0, int(y0)):max(0, int(y1)), max(0, int(x0)):max(0, int(x1))] = True
    return mask


def frame_masks(truth: pd.DataFrame, split: str, names: Sequence[str],
                kinds: Sequence[str] | None = None) -> np.ndarray:
    """[F, H, W] bool damage masks of the frames `names` of `split` (all of one stored size), counting the
    damage kinds in `kinds` (None: every kind but "none"). KeyError naming a frame the table does not have."""
    rows = truth[truth["split"] == split]
    sizes = rows.groupby("name")[["height", "width"]].first()
    missing = [n for n in names if n not in sizes.index]
    if missing:
        raise KeyError(f"frames not in the truth table ({split}): {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    shape = sizes.loc[list(names)].drop_duplicates()
    if len(shape) != 1:
        raise ValueError(f"frames of different sizes: {shape.values.tolist()}")
    height, width = (int(v) for v in shape.iloc[0])
    damaged = rows[rows["kind"] != NONE] if kinds is None else rows[rows["kind"].isin(list(kinds))]
    rects = damaged.groupby("name")[["y0", "y1", "x0", "x1"]].apply(lambda r: r.to_numpy().tolist())
    return np.stack([frame_mask(rects.get(n, []), height, width) for n in names])


def _pixel_edges(cells: int, pixels: int) -> np.ndarray:
    """Pixel index where each of `cells` grid cells starts, plus the end: floor(i * pixels / cells), i = 0..cells."""
    if not 1 <= cells <= pixels:
        raise ValueError(f"a grid of {cells} cells cannot cover {pixels} pixels (need 1 <= cells <= pixels)")
    return np.arange(cells + 1) * pixels // cells


def region_fractions(mask: np.ndarray, feat_h: int, num_regions: int, remainder: str = "last") -> np.ndarray:
    """Occluded fraction of each of the model's K regions: mask [..., H, W] bool -> [..., K] float64.

    Region k spans grid rows [a, b) (region_bounds(feat_h, K, remainder), as the model) and so pixel rows
    [floor(a * H / h), floor(b * H / h)).
    """
    edges = _pixel_edges(feat_h, mask.shape[-2])
    rows = mask.mean(-1)  # [..., H, W] -> [..., H]
    return np.stack([rows[..., edges[a]:edges[b]].mean(-1) for a, b in region_bounds(feat_h, num_regions, remainder)],
                    -1)


def cell_fractions(mask: np.ndarray, feat_h: int, feat_w: int) -> np.ndarray:
    """Occluded fraction of each grid position: mask [..., H, W] bool -> [..., h, w] float64 (the positions of
    the Eq. 1 attention map)."""
    ys, xs = _pixel_edges(feat_h, mask.shape[-2]), _pixel_edges(feat_w, mask.shape[-1])
    m = mask.astype(np.float64)
    return np.stack([np.stack([m[..., ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean((-2, -1)) for j in range(feat_w)], -1)
                     for i in range(feat_h)], -2)
