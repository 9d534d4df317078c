"""core.data.truth: the synthetic ground truth's table and its mapping to the model's grid (hand-computed cases)."""
import numpy as np
import pandas as pd
import pytest

from core.data.base import DatasetError
from core.data.truth import TRUTH_COLUMNS, cell_fractions, frame_mask, frame_masks, load_truth, region_fractions


def test_frame_mask_is_the_union_of_half_open_rectangles_clipped_to_the_frame():
    m = frame_mask([(1, 3, 0, 2), (2, 9, 3, 4)], height=4, width=4)
    assert m.astype(int).tolist() == [[0, 0, 0, 0],
                                      [1, 1, 0, 0],
                                      [1, 1, 0, 1],
                                      [0, 0, 0, 1]]


def test_region_fractions_when_the_grid_divides_the_frame():
    # 8 pixel rows, a 4-row grid (2 pixels per row), K=2 regions of 2 grid rows = 4 pixel rows each
    m = frame_mask([(0, 2, 0, 4)], height=8, width=4)  # the first two pixel rows, all columns
    assert region_fractions(m, feat_h=4, num_regions=2).tolist() == [0.5, 0.0]


def test_region_fractions_follow_the_models_remainder_rule():
    # H=10 pixel rows, h=3 grid rows: grid row i covers pixels [floor(10i/3), floor(10(i+1)/3)) = [0,3) [3,6) [6,10)
    m = frame_mask([(2, 5, 0, 2)], height=10, width=4)  # rows 2, 3, 4 half covered (2 of 4 columns)
    # "last": regions = grid rows [0,1) and [1,3) -> pixel rows [0,3) and [3,10)
    assert region_fractions(m, 3, 2, "last") == pytest.approx([0.5 / 3, 1.0 / 7])
    # "spread": regions = grid rows [0,2) and [2,3) -> pixel rows [0,6) and [6,10)
    assert region_fractions(m, 3, 2, "spread") == pytest.approx([1.5 / 6, 0.0])


def test_region_fractions_keep_leading_axes():
    masks = np.stack([frame_mask([], 8, 4), frame_mask([(4, 8, 0, 4)], 8, 4)])[None]  # (1, 2 frames, 8, 4)
    assert region_fractions(masks, 4, 2).tolist() == [[[0.0, 0.0], [0.0, 1.0]]]


def test_cell_fractions_partition_the_frame():
    m = frame_mask([(1, 3, 0, 1)], height=4, width=4)  # pixels (1, 0) and (2, 0)
    assert cell_fractions(m, 2, 2).tolist() == [[0.25, 0.0], [0.25, 0.0]]
    # 5 x 3 pixels on a 2 x 2 grid: rows [0,2) [2,5), columns [0,1) [1,3)
    m = frame_mask([(4, 5, 1, 3)], height=5, width=3)
    assert cell_fractions(m, 2, 2) == pytest.approx(np.array([[0, 0], [0, 2 / 6]]))


def test_a_grid_finer_than_the_frame_is_refused():
    with pytest.raises(ValueError, match="cannot cover"):
        cell_fractions(np.zeros((2, 2), bool), 3, 1)


def _table(rows):
    base = dict(split="test", track=0, frame=0, height=4, width=4, blur=0.0, dx=0.0, dy=0.0, scale=0.9, junk=False)
    return pd.DataFrame([{**base, **r} for r in rows], columns=list(TRUTH_COLUMNS))


def test_frame_masks_select_frames_and_kinds():
    t = _table([dict(name="a.jpg", kind="none", y0=0, y1=0, x0=0, x1=0),
                dict(name="b.jpg", kind="band", y0=0, y1=1, x0=0, x1=4),
                dict(name="b.jpg", kind="strip", y0=0, y1=4, x0=3, x1=4),
                dict(name="b.jpg", split="train", kind="band", y0=0, y1=4, x0=0, x1=4)])
    m = frame_masks(t, "test", ["b.jpg", "a.jpg"])
    assert m.sum((1, 2)).tolist() == [4 + 3, 0]  # band row 0 (4 px) + strip column 3 below it (3 px); a: clean
    assert frame_masks(t, "test", ["b.jpg"], kinds=["strip"]).sum() == 4
    with pytest.raises(KeyError, match="c.jpg"):
        frame_masks(t, "test", ["c.jpg"])


def test_load_truth_names_the_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="truth.parquet: missing"):
        load_truth(tmp_path)
    _table([dict(name="a.jpg", kind="none", y0=0, y1=0, x0=0, x1=0)]).drop(columns="junk").to_parquet(
        tmp_path / "truth.parquet")
    with pytest.raises(DatasetError, match="lacks columns \\['junk'\\]"):
        load_truth(tmp_path)
