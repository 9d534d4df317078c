"""MARS and DukeMTMC-VideoReID loaders on tiny hand-written trees: splits, relabelling, bad input."""
import builtins
import errno
import io
import json
import os

import numpy as np
import pytest
import scipy.io

from core.config import DataConfig
from core.data import DatasetError, load_dataset, load_duke, load_mars
from core.data import check
from core.data.clips import read_frame
from tests.helpers import jpeg, write_mars

@pytest.fixture
def mars_root(tmp_path):
    return write_mars(tmp_path / "MARS")


def test_mars_splits_relabelling_junk_and_distractors(mars_root):
    ds = load_mars(mars_root)
    assert (ds.name, ds.synthetic, ds.num_train_pids) == ("MARS", False, 3)
    assert [t.pid for t in ds.train] == [0, 0, 1, 2, 2]  # 5 -> 0, 7 -> 1, 12 -> 2
    assert [t.camid for t in ds.train] == [1, 2, 1, 3, 3]
    assert [len(t) for t in ds.train] == [3, 2, 2, 2, 1]
    first = ds.train[0].paths
    assert first[0].endswith("bbox_train/0005/0005C1T0001F001.jpg") and first[2].endswith("F003.jpg")
    assert [(t.pid, t.camid) for t in ds.query] == [(3, 1), (9, 2)]
    assert [t.pid for t in ds.gallery] == [0, 3, 3, 3, 9, 9]  # junk dropped, distractor and queries kept
    assert ds.query[0] in ds.gallery
    without = load_mars(mars_root, gallery_with_queries=False)
    assert [(t.pid, t.camid) for t in without.gallery] == [(0, 3), (3, 2), (3, 4), (9, 5)]
    s = ds.summary()
    assert s["train"] == {"tracklets": 5, "identities": 3, "frames": 10, "cameras": 3, "distractor_tracklets": 0}
    assert s["gallery"]["tracklets"] == 6 and s["gallery"]["distractor_tracklets"] == 1
    assert s["gallery"]["identities"] == 2 and s["query"]["frames"] == 4


def test_load_dataset_dispatch(mars_root):
    ds = load_dataset(DataConfig(dataset="mars", root=str(mars_root), gallery_with_queries=False))
    assert len(ds.gallery) == 4
    with pytest.raises(DatasetError, match="valid: mars, duke, synthetic"):
        load_dataset(DataConfig(dataset="prid"))
    with pytest.raises(DatasetError, match="data.root"):
        load_dataset(DataConfig(dataset="mars"))


def _expect(root, match):
    with pytest.raises(DatasetError, match=match):
        load_mars(root)


def test_mars_missing_folder_and_file(mars_root):
    (mars_root / "info" / "query_IDX.mat").unlink()
    _expect(mars_root, r"info/query_IDX.mat: missing file")
    (mars_root / "bbox_test").rename(mars_root / "elsewhere")
    _expect(mars_root, r"bbox_test: missing folder")


def test_mars_mat_with_wrong_variable_or_shape(mars_root):
    mat = mars_root / "info" / "tracks_train_info.mat"
    good = mat.read_bytes()
    scipy.io.savemat(mat, {"something_else": np.zeros((5, 4), np.int32)})
    _expect(mars_root, r"tracks_train_info.mat: expected variable 'track_train_info', found \['something_else'\]")
    scipy.io.savemat(mat, {"track_train_info": np.ones((5, 3), np.int32)})
    _expect(mars_root, r"tracks_train_info.mat: variable 'track_train_info' has shape \(5, 3\); expected \(n, 4\)")
    mat.write_bytes(b"not a mat file at all")
    _expect(mars_root, r"tracks_train_info.mat: not a readable MATLAB .mat file")
    mat.write_bytes(good)
    scipy.io.savemat(mars_root / "info" / "query_IDX.mat", {"query_IDX": np.array([[1, 99]], np.int32)})
    _expect(mars_root, r"query_IDX.mat: 'query_IDX' must hold distinct 1-based rows")


def test_mars_empty_tracklet_and_rows_outside_the_name_list(mars_root):
    mat = mars_root / "info" / "tracks_test_info.mat"
    table = scipy.io.loadmat(mat)["track_test_info"]
    bad = table.copy()
    bad[2, 0] = bad[2, 1] + 1
    scipy.io.savemat(mat, {"track_test_info": bad})
    _expect(mars_root, r"tracks_test_info.mat: row 3 is an empty tracklet \(start 7 > end 6\)")
    bad = table.copy()
    bad[-1, 1] = 999
    scipy.io.savemat(mat, {"track_test_info": bad})
    _expect(mars_root, r"row 7 spans lines 12..999; expected 1-based lines within the name list \(1..13\)")


def test_mars_name_list_disagreeing_with_folders(mars_root):
    (mars_root / "bbox_train" / "0012" / "0012C3T0002F001.jpg").unlink()
    _expect(mars_root, r"train_name.txt: 1 of 10 listed frames are not on disk, e.g. .*bbox_train/0012/0012C3T0002F001.jpg")


def test_mars_table_disagreeing_with_names(mars_root):
    mat = mars_root / "info" / "tracks_train_info.mat"
    table = scipy.io.loadmat(mat)["track_train_info"]
    table[0, 2] = 6
    scipy.io.savemat(mat, {"track_train_info": table})
    _expect(mars_root, r"row 1 says identity 6, camera 1 but its frame .*0005C1T0001F001.jpg does not")


def test_unreadable_or_truncated_jpeg_names_the_path(mars_root):
    ds = load_mars(mars_root)
    path = ds.train[0].paths[1]
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=rf"{path}: cannot decode frame (?i:.*truncated)"):
        read_frame(path)
    with open(path, "wb") as f:
        f.write(b"\x00garbage")
    with pytest.raises(DatasetError, match=rf"{path}: cannot decode frame"):
        read_frame(path)


def test_check_command_json_and_failure(mars_root, capsys):
    assert check.main(["--dataset", "mars", "--root", str(mars_root), "--decode"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "MARS" and out["query"]["tracklets"] == 2 and out["decoded_frames"] == 21
    (mars_root / "info" / "test_name.txt").unlink()
    assert check.main(["--dataset", "mars", "--root", str(mars_root)]) == 2
    assert "test_name.txt: missing file" in capsys.readouterr().err


# DukeMTMC-VideoReID: split/identity/tracklet/frames, (identity, tracklet folder, camera, F indices)
DUKE = {
    "train": [(1, 1, 1, [10, 2, 100]), (2, 1, 2, [5, 6]), (2, 2, 3, [1])],
    "query": [(5, 1, 1, [3, 4])],
    "gallery": [(5, 1, 1, [3, 4]), (5, 2, 4, [7, 8, 9]), (100, 1, 2, [1, 2])],
}


@pytest.fixture
def duke_root(tmp_path):
    root = tmp_path / "DukeMTMC-VideoReID"
    for split, spec in DUKE.items():
        for pid, tnum, cam, frames in spec:
            for f in frames:
                jpeg(root / split / f"{pid:04d}" / f"{tnum:04d}" / f"{pid:04d}_C{cam}_F{f:04d}_X{1000 + f:05d}.jpg")
    return root


def test_duke_splits_sorting_and_relabelling(duke_root):
    ds = load_duke(duke_root)
    assert (ds.name, ds.synthetic, ds.num_train_pids) == ("DukeMTMC-VideoReID", False, 2)
    assert [(t.pid, t.camid, len(t)) for t in ds.train] == [(0, 1, 3), (1, 2, 2), (1, 3, 1)]
    assert [p[-20:] for p in ds.train[0].paths] == ["0001_C1_F0002_X01002.jpg"[-20:], "0001_C1_F0010_X01010.jpg"[-20:],
                                                  "0001_C1_F0100_X01100.jpg"[-20:]]
    assert [(t.pid, t.camid) for t in ds.query] == [(5, 1)]
    assert [(t.pid, t.camid) for t in ds.gallery] == [(5, 1), (5, 4), (100, 2)]
    assert load_dataset(DataConfig(dataset="duke", root=str(duke_root))).summary()["gallery"]["identities"] == 2


def test_duke_bad_layouts(duke_root):
    empty = duke_root / "train" / "0002" / "0003"
    empty.mkdir()
    with pytest.raises(DatasetError, match=rf"{empty}: empty tracklet"):
        load_duke(duke_root)
    empty.rmdir()
    wrong = duke_root / "query" / "0005" / "0001" / "0006_C1_F0005_X00001.jpg"
    jpeg(wrong)
    with pytest.raises(DatasetError, match=rf"{wrong}: unexpected frame name"):
        load_duke(duke_root)
    wrong.unlink()
    mixed = duke_root / "gallery" / "0005" / "0002" / "0005_C2_F0010_X00001.jpg"
    jpeg(mixed)
    with pytest.raises(DatasetError, match=r"0005/0002: frames from cameras \[2, 4\]"):
        load_duke(duke_root)
    mixed.unlink()
    (duke_root / "gallery").rename(duke_root / "gal")
    with pytest.raises(DatasetError, match=r"gallery: missing folder"):
        load_duke(duke_root)


@pytest.fixture
def deny(monkeypatch):
    """deny(path): opening or listing `path` raises PermissionError, as for a file or folder without read permission
    (the tests run as root, whom chmod 000 does not stop)."""
    denied, real_open, real_scandir = set(), io.open, os.scandir

    def guard(path):
        if not isinstance(path, int) and os.path.abspath(os.fspath(path)) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def fake_open(file, *args, **kwargs):
        guard(file)
        return real_open(file, *args, **kwargs)

    def fake_scandir(path="."):
        guard(path)
        return real_scandir(path)

    for module, name, fake in ((io, "open", fake_open), (builtins, "open", fake_open), (os, "scandir", fake_scandir)):
        monkeypatch.setattr(module, name, fake)
    return lambda path: denied.add(os.path.abspath(path))


def _one_line(load, root, match):
    with pytest.raises(DatasetError, match=match) as err:
        load(root)
    assert "\n" not in str(err.value)


def test_mars_unreadable_identity_folder_mat_and_name_list(mars_root, deny):
    # checked in the loader's order, last first: each newly denied path is read before the previous one
    deny(mars_root / "bbox_train" / "0005")
    _one_line(load_mars, mars_root, r"bbox_train/0005: cannot list this folder \(Permission denied\)")
    deny(mars_root / "info" / "tracks_test_info.mat")
    _one_line(load_mars, mars_root, r"info/tracks_test_info.mat: cannot read this file \(Permission denied\)")
    deny(mars_root / "info" / "train_name.txt")
    _one_line(load_mars, mars_root, r"info/train_name.txt: cannot read this file \(Permission denied\)")


def test_mars_name_list_that_is_not_utf8(mars_root):
    names = mars_root / "info" / "train_name.txt"
    names.write_bytes(names.read_bytes()[:20] + "0005C1T0001F002é.jpg\n".encode("latin-1"))
    _one_line(load_mars, mars_root, r"train_name.txt: not UTF-8 text \(byte 0xe9 at offset 35\); expected one frame "
                                    r"name per line")


def test_duke_unreadable_identity_and_tracklet_folders(duke_root, deny):
    # read in the order train, query, gallery: each newly denied folder is read before the previous one
    deny(duke_root / "gallery" / "0005" / "0002")
    _one_line(load_duke, duke_root, r"gallery/0005/0002: cannot list this folder \(Permission denied\)")
    deny(duke_root / "query")
    _one_line(load_duke, duke_root, r"query: cannot list this folder \(Permission denied\)")
    deny(duke_root / "train" / "0001")
    _one_line(load_duke, duke_root, r"train/0001: cannot list this folder \(Permission denied\)")


def test_duke_reads_upper_case_jpg_frames(duke_root):
    before = load_duke(duke_root)
    for frame in (duke_root / "train" / "0001" / "0001").iterdir():
        frame.rename(frame.with_suffix(".JPG"))
    after = load_duke(duke_root)
    assert [p[-24:] for p in after.train[0].paths] == [p[-24:-4] + ".JPG" for p in before.train[0].paths]
    assert [(t.pid, t.camid, len(t)) for t in after.train] == [(t.pid, t.camid, len(t)) for t in before.train]
    assert read_frame(after.train[0].paths[0]).shape == (3, 8, 4)
