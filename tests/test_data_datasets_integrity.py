"""A corrupt dataset is never scored (issue 22, cases 2 and 3): every listed frame is checked (a file with an image
header and end) and every tracklet row is unique before anything trains; a refusal is one line naming the file."""
from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io

from core.cli import main
from core.data import DatasetError, load_duke, load_mars
from core.data.frames import frame_problem
from tests.helpers import error_line, jpeg, write_mars


def first_frame(root, split="test"):
    names = (root / "info" / f"{split}_name.txt").read_text().split()
    return root / f"bbox_{split}" / names[0][:4] / names[0]


def test_a_good_tree_passes_and_every_frame_is_checked(tmp_path):
    root = write_mars(tmp_path / "MARS")
    assert load_mars(root).train
    frames = sorted(root.glob("bbox_*/*/*.jpg"))
    assert frames and all(frame_problem(str(p)) is None for p in frames)


@pytest.mark.parametrize("damage, why", [
    (lambda p, tmp: p.write_bytes(b""), "empty file (0 bytes)"),
    (lambda p, tmp: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]), "truncated JPEG"),
    (lambda p, tmp: p.write_text("hello, not an image " * 10), "not a JPEG or PNG image"),
    (lambda p, tmp: (p.unlink(), (tmp / "outside.txt").write_text("x" * 100), p.symlink_to(tmp / "outside.txt")),
     "not a JPEG or PNG image (100 bytes"),
    (lambda p, tmp: (p.unlink(), p.symlink_to(tmp / "gone.jpg")), "cannot open (No such file or directory)"),
    (lambda p, tmp: (p.unlink(), p.mkdir()), "cannot read"),
])
def test_a_corrupt_frame_is_refused_naming_it(tmp_path, damage, why):
    root = write_mars(tmp_path / "MARS")
    bad = first_frame(root)
    damage(bad, tmp_path)
    with pytest.raises(DatasetError) as info:
        load_mars(root)
    msg = str(info.value)
    assert msg.startswith(f"{bad}: {why}") and "1 of 13 frames of" in msg and "test_name.txt" in msg, msg


def test_a_symlink_to_a_good_image_outside_the_tree_is_accepted(tmp_path):
    root = write_mars(tmp_path / "MARS")
    bad = first_frame(root, "train")
    jpeg(tmp_path / "elsewhere.jpg", 30)
    bad.unlink()
    bad.symlink_to(tmp_path / "elsewhere.jpg")
    assert load_mars(root).train


def test_a_corrupt_frame_stops_the_table_before_training(tmp_path, monkeypatch, capsys):
    """It was trained on when not sampled and scored, or killed the run after training in a worker traceback."""
    monkeypatch.chdir(tmp_path)
    root = write_mars(tmp_path / "MARS")
    first_frame(root, "train").write_bytes(b"")
    assert main("table1", ["--dataset", "mars", "--data-root", str(root), "--rows", "1", "--quiet",
                           "--set", "model.pretrained=false",       # the cpu profile's stage is synthetic-only
                           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "empty file (0 bytes)" in line and str(first_frame(root, "train")) in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


def test_duplicate_tracklet_rows_are_refused_with_their_row_numbers(tmp_path):
    root = write_mars(tmp_path / "MARS")
    mat = root / "info" / "tracks_test_info.mat"
    table = scipy.io.loadmat(mat)["track_test_info"]
    scipy.io.savemat(mat, {"track_test_info": np.concatenate([table, table[2:3]])})      # row 3 repeated as row 8
    with pytest.raises(DatasetError, match=r"tracks_test_info.mat: rows 3, 8 are the same tracklet \(lines 5..6\); "
                                           r"expected each tracklet once \(1 repeated row"):
        load_mars(root)


def test_a_doubled_training_table_is_refused(tmp_path):
    root = write_mars(tmp_path / "MARS")
    mat = root / "info" / "tracks_train_info.mat"
    table = scipy.io.loadmat(mat)["track_train_info"]
    scipy.io.savemat(mat, {"track_train_info": np.concatenate([table, table])})
    with pytest.raises(DatasetError, match=r"rows 1, 6 are the same tracklet .*\(5 repeated row\(s\) in all"):
        load_mars(root)


def duke_tree(root):
    for split, pid, cam in (("train", 1, 1), ("train", 2, 2), ("query", 3, 1), ("gallery", 3, 2), ("gallery", 3, 1)):
        for f in range(2):
            jpeg(root / split / f"{pid:04d}" / f"{cam:04d}" / f"{pid:04d}_C{cam}_F{f:04d}_X{100 + f}.jpg", 40 * f)
    return root


def test_duke_frames_are_checked_and_non_ascii_digits_refused(tmp_path):
    root = duke_tree(tmp_path / "duke")
    assert load_duke(root).num_train_pids == 2
    bad = sorted((root / "gallery").rglob("*.jpg"))[0]
    bad.write_bytes(b"")
    with pytest.raises(DatasetError, match=rf"^{bad}: empty file \(0 bytes\).*1 of 4 frames of .*gallery/"):
        load_duke(root)
    bad.unlink()
    os.rename(root / "train" / "0002", root / "train" / "²")   # isdigit() accepts '²', int() does not
    with pytest.raises(DatasetError, match=r"train/²: identity folder name is not a number"):
        load_duke(root)
