"""The synthetic generator's ground-truth sidecar (truth.parquet, core.data.truth) and the "occluded" preset."""
import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from core.data import render, synthetic
from core.data.truth import NONE, TRUTH, TRUTH_COLUMNS, load_truth


def _split_tables(root, split):
    names = (root / "info" / f"{split}_name.txt").read_text().split()
    table = scipy.io.loadmat(root / "info" / f"tracks_{split}_info.mat")[f"track_{split}_info"]
    return names, table


def test_sidecar_has_one_row_per_damage_and_one_none_row_per_clean_frame(tiny_synthetic_root):
    truth, pre = load_truth(tiny_synthetic_root), synthetic.PRESETS["tiny"]
    assert list(truth.columns) == list(TRUTH_COLUMNS)
    for split in ("train", "test"):
        rows = truth[truth["split"] == split]
        names, table = _split_tables(tiny_synthetic_root, split)
        files = {p.name for p in (tiny_synthetic_root / f"bbox_{split}").rglob("*.jpg")}
        assert set(rows["name"]) == files == set(names)
        clean = rows[rows["kind"] == NONE]
        assert clean["name"].is_unique and not set(clean["name"]) & set(rows.loc[rows["kind"] != NONE, "name"])
        assert (clean[["y0", "y1", "x0", "x1"]] == 0).all().all()
        for r in rows.itertuples():   # track = row of the MARS table, frame = position in it
            start, end, pid = table[r.track, :3]
            assert r.frame < end - start + 1 and names[start - 1 + r.frame] == r.name and r.junk == (pid == -1)
        damaged = rows[rows["kind"] != NONE]
        assert len(damaged) and set(damaged["kind"]) <= {"band", "strip"}   # tiny: VERSION 1's occluders only
        assert ((0 <= damaged["y0"]) & (damaged["y0"] < damaged["y1"]) & (damaged["y1"] <= pre.height)).all()
        assert ((0 <= damaged["x0"]) & (damaged["x0"] < damaged["x1"]) & (damaged["x1"] <= pre.width)).all()
        assert ((rows["height"] == pre.height) & (rows["width"] == pre.width)).all()
        assert rows["scale"].between(0.7, 1.1).where(~rows["junk"], True).all()
        # one camera, one blur: the camera's sigma (core.data.render.Camera.blur x H / 128), 0 when left sharp
        cams = table[rows["track"].to_numpy(), 3]
        assert (rows.assign(cam=cams).groupby("cam")["blur"].nunique() == 1).all()


def test_occluders_in_the_truth_are_flat_patches_of_the_written_frames(tiny_synthetic_root):
    """An occluder is one colour (x U(0.85, 1) shading, camera noise, JPEG): the recorded rectangle's interior is
    far flatter in the written frame than the same rectangle of the clean frames of the split."""
    truth = load_truth(tiny_synthetic_root)

    def spread(split, name, y0, y1, x0, x1):
        img = np.asarray(Image.open(tiny_synthetic_root / f"bbox_{split}" / name[:4] / name), np.float32)
        return img[y0 + 2:y1 - 2, x0 + 2:x1 - 2].std((0, 1)).mean()

    checked = 0
    for split in ("train", "test"):
        rows = truth[truth["split"] == split]
        clean = rows[rows["kind"] == NONE]["name"].tolist()[::7]
        for r in rows[(rows["kind"] != NONE) & (rows["x1"] - rows["x0"] >= 8) & (rows["y1"] - rows["y0"] >= 8)] \
                .drop_duplicates(["track", "kind"]).itertuples():
            rect = (r.y0, r.y1, r.x0, r.x1)
            occluded = spread(split, r.name, *rect)
            assert occluded < 0.5 * np.mean([spread(split, n, *rect) for n in clean]), (split, r.name, rect)
            checked += 1
    assert checked >= 5


def test_sidecar_is_deterministic_and_required(tiny_synthetic_root, tmp_path):
    again = synthetic.generate(tmp_path / "again", "tiny", seed=0, progress=False)
    a, b = load_truth(tiny_synthetic_root), load_truth(again)
    assert a.equals(b)
    synthetic.generate(tmp_path / "other", "tiny", seed=1, progress=False)
    assert not load_truth(tmp_path / "other").equals(a)
    (again / TRUTH).unlink()          # a tree without its sidecar (e.g. copied without it) is not complete
    assert json.loads((again / synthetic.MARKER).read_text())["version"] == synthetic.VERSION
    assert not synthetic._is_complete(again, "tiny", 0) and synthetic._is_complete(tiny_synthetic_root, "tiny", 0)


def test_in_memory_truth_is_the_written_one(tiny_synthetic_root):
    frames, truths = synthetic.tracklet_truth("tiny", 0, "test", -1)    # the last test tracklet: a junk one
    specs = synthetic._plan(synthetic.PRESETS["tiny"], 0)[1]
    track = synthetic._table_order(specs).index(len(specs) - 1)         # its row in the MARS table
    rows = load_truth(tiny_synthetic_root)
    rows = rows[(rows["split"] == "test") & (rows["track"] == track)]
    assert len(frames) == len(truths) == rows["frame"].nunique() and rows["junk"].all()
    first = rows[rows["frame"] == 0].iloc[0]
    assert (first["blur"], first["dx"], first["dy"], first["scale"]) == \
        (truths[0].blur, truths[0].dx, truths[0].dy, truths[0].scale)


def test_occluded_preset_is_small_plus_recorded_damage():
    """Same plan as small; the region damage draws from its own stream, so each frame is small's outside the
    recorded rectangles (dilated by the camera blur's reach), and differs inside each of them."""
    small, occluded = (synthetic._plan(synthetic.PRESETS[s], 0) for s in ("small", "occluded"))
    assert small == occluded
    kinds, mixed = set(), 0
    for k in range(6):
        plain = synthetic.tracklet_frames("small", 0, "train", k)
        frames, truths = synthetic.tracklet_truth("occluded", 0, "train", k)
        hit = [bool(t.damage) for t in truths]
        mixed += any(hit) and not all(hit)
        for a, b, t in zip(plain, frames, truths):
            diff = np.abs(a.astype(int) - b.astype(int)).max(-1)
            reach = np.zeros(diff.shape, bool)
            for kind, y0, y1, x0, x1 in t.damage:
                kinds.add(kind)
                assert diff[y0:y1, x0:x1].mean() > 5, (k, kind, y0, y1, x0, x1)
                r = int(np.ceil(2 * t.blur)) + 1
                reach[max(0, y0 - r):y1 + r, max(0, x0 - r):x1 + r] = True
            assert not diff[~reach].any(), k
    assert kinds == {"band", "strip", "degrade"} and mixed >= 3   # tracklets with clean and damaged frames


def test_region_damage_settings_are_checked():
    with pytest.raises(ValueError, match="kinds must be of"):
        render.RegionDamage(kinds=(("band", 1.0), ("smudge", 1.0)))
    with pytest.raises(ValueError, match="events"):
        render.RegionDamage(events=(0, 2))
