"""MARS, read from its on-disk layout (bbox_train/, bbox_test/, info/)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import scipy.io

from core.data.base import DatasetError, Tracklet, VideoDataset, list_dir, read_bytes, relabel
from core.data.frames import check_frames

MISSING_SHOWN = 3  # how many missing frame names an error message lists


def load_mars(root: str | os.PathLike, gallery_with_queries: bool = True, check_images: bool = True) -> VideoDataset:
    """MARS (Zheng et al., "MARS: A Video Benchmark for Large-Scale Person Re-identification", ECCV 2016).

    URL: http://zheng-lab.cecs.anu.edu.au/Project/project_mars.html

    Statistics of the real dataset: 1,261 identities (625 train, 636 test), 6 cameras;
    train: 8,298 tracklets, 509,914 frames; test: 12,180 tracklets (3,248 distractor tracklets with identity 0,
    870 junk tracklets with identity -1), 681,089 frames; 1,980 queries; gallery 11,310 tracklets with
    `gallery_with_queries=True` (official MATLAB evaluation) or 9,330 with False (torchreid) [A15a].

    Layout read here::

        bbox_train/0001/0001C1T0001F001.jpg   identity folder (0000 distractors, 00-1 junk), frame named
        bbox_test/...                         identity, camera (1-6), tracklet, frame
        info/train_name.txt, test_name.txt    one frame name per line
        info/tracks_train_info.mat            `track_train_info` int n x 4: [start, end, identity, camera],
        info/tracks_test_info.mat             `track_test_info`  start/end 1-based inclusive lines of the name list
        info/query_IDX.mat                    `query_IDX` 1 x q: 1-based rows of the test table

    Junk tracklets (identity -1) are dropped everywhere; distractors (identity 0) stay in the gallery; train keeps
    identities > 0 only (real MARS train has neither). Train pids are relabelled 0..C-1 in increasing order of
    the original pid; query and gallery keep the original pids. Queries must have an identity > 0.
    Raises DatasetError naming the path and what was expected on any disagreement, or on a file or folder that
    cannot be read (permission denied, a name list that is not UTF-8), a tracklet listed twice in a table, or (with
    ``check_images``, the default) a listed frame that is not a readable image (core.data.frames: empty, truncated,
    not a JPEG/PNG, a folder or a broken symlink).
    """
    root = _require(Path(root), directory=True)
    info = _require(root / "info", directory=True)
    train_dir = _require(root / "bbox_train", directory=True)
    test_dir = _require(root / "bbox_test", directory=True)
    train_names = _read_names(_require(info / "train_name.txt"))
    test_names = _read_names(_require(info / "test_name.txt"))
    train_mat, test_mat = info / "tracks_train_info.mat", info / "tracks_test_info.mat"
    train_table = _read_table(_require(train_mat), "track_train_info", len(train_names))
    test_table = _read_table(_require(test_mat), "track_test_info", len(test_names))
    query_rows = _read_query(_require(info / "query_IDX.mat"), len(test_table))
    _check_frames_exist(train_dir, train_names, info / "train_name.txt")
    _check_frames_exist(test_dir, test_names, info / "test_name.txt")
    if check_images:
        check_frames(_frame_paths(train_dir, train_names), str(info / "train_name.txt"))
        check_frames(_frame_paths(test_dir, test_names), str(info / "test_name.txt"))
    train_all = _tracklets(train_dir, train_names, train_table, train_mat)
    test_all = _tracklets(test_dir, test_names, test_table, test_mat)

    train, num_pids = relabel([t for t in train_all if t.pid > 0])
    query = [test_all[i] for i in query_rows]
    bad = [int(i) + 1 for i in query_rows if test_all[i].pid <= 0]
    if bad:
        raise DatasetError(f"{info / 'query_IDX.mat'}: query rows {bad[:MISSING_SHOWN]} point at junk or distractor "
                           f"tracklets of {test_mat.name}; expected queries with a real identity (> 0)")
    is_query = np.zeros(len(test_all), dtype=bool)
    is_query[query_rows] = True
    gallery = [t for i, t in enumerate(test_all) if t.pid != -1 and (gallery_with_queries or not is_query[i])]
    return VideoDataset("MARS", False, train, query, gallery, num_pids)


def _require(path: Path, directory: bool = False) -> Path:
    ok = path.is_dir() if directory else path.is_file()
    if not ok:
        kind = "folder" if directory else "file"
        raise DatasetError(f"{path}: missing {kind} (expected the MARS layout: bbox_train/, bbox_test/, info/)")
    return path


def _read_names(path: Path) -> list[str]:
    data = read_bytes(path)
    try:
        names = data.decode("utf-8").split()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); expected one "
                           f"frame name per line, e.g. 0001C1T0001F001.jpg") from None
    if not names:
        raise DatasetError(f"{path}: empty; expected one frame name per line, e.g. 0001C1T0001F001.jpg")
    return names


def _load_var(path: Path, var: str) -> np.ndarray:
    data = read_bytes(path)
    try:
        mat = scipy.io.loadmat(io.BytesIO(data))
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... on non-.mat content
        raise DatasetError(f"{path}: not a readable MATLAB .mat file ({e})") from e
    if var not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{path}: expected variable '{var}', found {found}")
    arr = np.asarray(mat[var])
    if arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr)))):
        raise DatasetError(f"{path}: variable '{var}' has dtype {arr.dtype}; expected integers")
    return arr.astype(np.int64)


def _read_table(path: Path, var: str, num_names: int) -> np.ndarray:
    """[n, 4] int64 rows [start, end, pid, camid]; start/end checked against the name list length."""
    table = _load_var(path, var)
    if table.ndim != 2 or table.shape[1] != 4 or table.shape[0] == 0:
        raise DatasetError(f"{path}: variable '{var}' has shape {table.shape}; expected (n, 4) rows "
                           f"[start, end, identity, camera]")
    start, end = table[:, 0], table[:, 1]
    for row in np.flatnonzero(start > end)[:1]:
        raise DatasetError(f"{path}: row {row + 1} is an empty tracklet (start {start[row]} > end {end[row]}); "
                           f"expected start <= end")
    for row in np.flatnonzero((start < 1) | (end > num_names))[:1]:
        raise DatasetError(f"{path}: row {row + 1} spans lines {start[row]}..{end[row]}; expected 1-based lines "
                           f"within the name list (1..{num_names})")
    _, first, counts = np.unique(table[:, :2], axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = int(first[np.flatnonzero(counts > 1)].min())
        rows = np.flatnonzero((table[:, :2] == table[dup, :2]).all(axis=1)) + 1
        n = int((counts[counts > 1] - 1).sum())
        raise DatasetError(f"{path}: rows {', '.join(map(str, rows.tolist()))} are the same tracklet (lines "
                           f"{start[dup]}..{end[dup]}); expected each tracklet once ({n} repeated row(s) in all: a "
                           f"repeated tracklet would be trained on or scored twice)")
    return table


def _read_query(path: Path, num_test: int) -> np.ndarray:
    """0-based rows of the test table that are queries."""
    idx = _load_var(path, "query_IDX")
    if idx.ndim != 2 or min(idx.shape) != 1:
        raise DatasetError(f"{path}: variable 'query_IDX' has shape {idx.shape}; expected (1, q)")
    idx = idx.ravel()
    if idx.min() < 1 or idx.max() > num_test or len(np.unique(idx)) != len(idx):
        raise DatasetError(f"{path}: 'query_IDX' must hold distinct 1-based rows of the test table (1..{num_test})")
    return idx - 1


def _check_frames_exist(split_dir: Path, names: list[str], names_file: Path) -> None:
    """Every listed name exists in its identity folder: one os.scandir per folder, no stat per frame."""
    listing = {entry.name: {f.name for f in list_dir(entry.path)} for entry in list_dir(split_dir) if entry.is_dir()}
    empty: set[str] = set()
    missing = [n for n in names if n not in listing.get(n[:4], empty)]
    if missing:
        shown = ", ".join(str(split_dir / n[:4] / n) for n in missing[:MISSING_SHOWN])
        raise DatasetError(f"{names_file}: {len(missing)} of {len(names)} listed frames are not on disk, e.g. {shown}")


def _frame_paths(split_dir: Path, names: list[str]) -> list[str]:
    prefix = str(split_dir) + os.sep
    return [prefix + n[:4] + os.sep + n for n in names]


def pid_folder(pid: int) -> str:
    """The identity folder (and name prefix) of a MARS pid: '0001', '0000' (distractors), '00-1' (junk)."""
    return "00-1" if pid == -1 else f"{pid:04d}"


def write_info(info: Path, split: str, names: list[str], table: np.ndarray) -> None:
    """Write `<split>_name.txt` and `tracks_<split>_info.mat` in the layout load_mars reads (table: int32 (T, 4))."""
    (info / f"{split}_name.txt").write_text("\n".join(names) + "\n")
    scipy.io.savemat(info / f"tracks_{split}_info.mat", {f"track_{split}_info": table})


def write_query(info: Path, rows: np.ndarray) -> None:
    """Write `query_IDX.mat`: (1, Q) int32, 1-based rows of the test table."""
    scipy.io.savemat(info / "query_IDX.mat", {"query_IDX": rows})


def _parse_name(name: str) -> tuple[int, int] | None:
    """'0001C1T0001F001.jpg' -> (1, 1); '00-1C2...' -> (-1, 2); None if the name does not follow MARS."""
    if len(name) < 6 or name[4] != "C" or not name[5].isdigit():
        return None
    if name[:4] == "00-1":
        return -1, int(name[5])
    return (int(name[:4]), int(name[5])) if name[:4].isdigit() else None


def _tracklets(split_dir: Path, names: list[str], table: np.ndarray, mat: Path) -> list[Tracklet]:
    paths = _frame_paths(split_dir, names)
    out = []
    for row, (start, end, pid, cam) in enumerate(table.tolist()):
        for name in (names[start - 1], names[end - 1]):
            if _parse_name(name) != (pid, cam):
                raise DatasetError(f"{mat}: row {row + 1} says identity {pid}, camera {cam} but its frame "
                                   f"{split_dir / name[:4] / name} does not; expected names like "
                                   f"{pid_folder(pid)}C{cam}T0001F001.jpg")
        out.append(Tracklet(tuple(paths[start - 1:end]), pid, cam))
    return out
