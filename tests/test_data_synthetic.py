"""The synthetic generator: MARS layout read by load_mars and the check command, protocol guarantees,
determinism, atomic generation, the partial folders of a killed generation removed."""
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from core.config import DataConfig
from core.data import DatasetError, load_dataset, load_mars, render, synthetic
from core.data.synthetic import PRESETS, ensure_synthetic, generate
from core.data.truth import load_truth
from tests.helpers import HOST, dead_pid


def test_check_command_accepts_generated_tree(tiny_synthetic_root):
    out = subprocess.run([sys.executable, "-m", "core.data.check", "--dataset", "synthetic",
                          "--root", str(tiny_synthetic_root)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["synthetic"] is True and "synthetic" in summary["name"]
    assert summary["train"]["identities"] == PRESETS["tiny"].train_ids


def test_layout_and_protocol_guarantees(tiny_synthetic_root):
    pre = PRESETS["tiny"]
    table = scipy.io.loadmat(tiny_synthetic_root / "info" / "tracks_test_info.mat")["track_test_info"]
    assert table.dtype == np.int32 and table.shape[1] == 4
    assert (table[:, 2] == 0).sum() == pre.distractors and (table[:, 2] == -1).sum() == pre.junk
    assert (tiny_synthetic_root / "bbox_test" / "00-1").is_dir()
    for with_queries in (True, False):
        ds = load_mars(tiny_synthetic_root, gallery_with_queries=with_queries)
        assert ds.num_train_pids == pre.train_ids and {t.pid for t in ds.query} == {t.pid for t in ds.gallery} - {0}
        assert len({t.pid for t in ds.query}) == pre.test_ids + pre.extra_test_ids
        for q in ds.query:
            assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery), (q.pid, q.camid)
    assert {t.pid for t in ds.train} == set(range(pre.train_ids))  # relabelled 0..C-1
    train_pids = {int(n[:4]) for n in (tiny_synthetic_root / "info" / "train_name.txt").read_text().split()}
    assert not train_pids & {t.pid for t in ds.query} and train_pids != set(range(1, pre.train_ids + 1))
    lengths = [len(t) for t in ds.train]
    assert min(lengths) >= pre.frames[0] and max(lengths) <= pre.frames[1] and len(set(lengths)) > 3


def test_frames_are_pedestrian_images_not_flat_blocks(tiny_synthetic_root):
    ds = load_mars(tiny_synthetic_root)
    t = ds.train[0]
    frames = np.stack([np.asarray(Image.open(p), np.float32) for p in t.paths])
    assert frames.shape[1:] == (PRESETS["tiny"].height, PRESETS["tiny"].width, 3)
    assert frames.std(axis=(1, 2)).mean() > 15  # textured, not a flat colour
    assert np.abs(np.diff(frames, axis=0)).mean() > 3  # frames move (walking, jitter)
    centre = [np.asarray(Image.open(g[0].paths[0]), np.float32)[20:40, 8:24].mean((0, 1))
              for g in ([x for x in ds.train if x.pid == p] for p in range(4))]
    assert np.ptp(np.stack(centre), axis=0).max() > 10  # identities differ in clothing


def test_load_dataset_marks_synthetic_and_reuses_tree(tiny_synthetic_root):
    marker = tiny_synthetic_root / synthetic.MARKER
    before = marker.stat().st_mtime_ns
    ds = load_dataset(DataConfig(dataset="synthetic", root=str(tiny_synthetic_root), synthetic_size="tiny"))
    assert ds.synthetic and ds.name == "synthetic (MARS layout)" and ds.summary()["synthetic"]
    assert marker.stat().st_mtime_ns == before
    with pytest.raises(DatasetError, match="not a complete synthetic tree"):
        ensure_synthetic(tiny_synthetic_root, "tiny", seed=1)


def _tree(root):
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(tiny_synthetic_root, tmp_path):
    again = generate(tmp_path / "again", "tiny", seed=0, progress=False)
    a, b = _tree(tiny_synthetic_root), _tree(again)
    assert a.keys() == b.keys()
    for rel in ("info/train_name.txt", "info/test_name.txt"):
        assert a[rel].read_bytes() == b[rel].read_bytes()
    for rel, var in (("tracks_train_info", "track_train_info"), ("tracks_test_info", "track_test_info"),
                     ("query_IDX", "query_IDX")):
        ma, mb = (scipy.io.loadmat(x / f"info/{rel}.mat")[var] for x in (tiny_synthetic_root, again))
        assert ma.dtype == mb.dtype and np.array_equal(ma, mb)
    for rel in (r for r in a if r.endswith(".jpg")):
        assert a[rel].read_bytes() == b[rel].read_bytes(), rel
    assert load_truth(tiny_synthetic_root).equals(load_truth(again))   # the ground-truth sidecar too
    other = generate(tmp_path / "other", "tiny", seed=1, progress=False)
    assert (other / "info/train_name.txt").read_bytes() != a["info/train_name.txt"].read_bytes()
    assert not load_truth(other).equals(load_truth(again))


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    real, calls = render.render_tracklet, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("interrupted")
        return real(*args)

    monkeypatch.setattr(render, "render_tracklet", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate(tmp_path / "tree", "tiny", seed=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_killed_generation_leaves_no_tree(tmp_path):
    root = tmp_path / "tree"
    code = f"from core.data.synthetic import generate; generate({str(root)!r}, 'small', 0, progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(tmp_path.glob(".tree.partial-*/bbox_train/*")):
            time.sleep(0.2)
        assert proc.poll() is None, "generation finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not root.exists()
    from core.data import check
    assert check.main(["--dataset", "synthetic", "--root", str(root)]) == 2
    partial = list(tmp_path.glob(".tree.partial-*"))
    assert len(partial) == 1 and check.main(["--dataset", "synthetic", "--root", str(partial[0])]) == 2
    ensure_synthetic(root, "tiny", 0, progress=False)      # the next run removes the dead generation's folder
    assert not partial[0].exists() and not list(tmp_path.glob(".tree.partial-*"))


# sha256 of the decoded pixels (shape and uint8 bytes, before JPEG) of train tracklets 0 and 1, the first test
# tracklet and the last (junk) one, tiny preset, seed 0, drawn by generator VERSION 3 (the digest of VERSION 1:
# VERSION 2 only enlarged small's test split, VERSION 3 added the truth sidecar and the "occluded" preset; tiny
# draws the same frames)
FRAMES_DIGEST = (3, "a4616c0158456e04478f7100cbed5a18ff5dd06b3462efd59feebebad20f0ef9")


def test_drawing_is_pinned_to_the_generator_version():
    digest = hashlib.sha256()
    for split, k in (("train", 0), ("train", 1), ("test", 0), ("test", -1)):
        for frame in synthetic.tracklet_frames("tiny", 0, split, k):
            assert frame.dtype == np.uint8 and frame.shape == (64, 32, 3)
            digest.update(repr(frame.shape).encode() + frame.tobytes())
    assert (synthetic.VERSION, digest.hexdigest()) == FRAMES_DIGEST, (
        "the synthetic drawing changed: bump core.data.synthetic.VERSION (cached trees are then regenerated) and "
        "pin the new version and digest in FRAMES_DIGEST")


def test_in_memory_frames_are_the_written_ones_and_a_version_bump_regenerates(tiny_synthetic_root, monkeypatch,
                                                                              tmp_path):
    synthetic._save(synthetic.tracklet_frames("tiny", 0, "train", 0)[0], tmp_path / "drawn.jpg")
    firsts = {Path(t.paths[0]).read_bytes() for t in load_mars(tiny_synthetic_root).train}
    assert (tmp_path / "drawn.jpg").read_bytes() in firsts             # generate() wrote exactly that frame
    old_root = synthetic.default_root("tiny", 0)
    assert old_root.name == f"synthetic_tiny_seed0_v{synthetic.VERSION}"
    bumped = synthetic.VERSION + 1
    monkeypatch.setattr(synthetic, "VERSION", bumped)
    assert synthetic.default_root("tiny", 0) != old_root                # the default cache is a new folder
    with pytest.raises(DatasetError, match=rf"not a complete synthetic tree .*version {bumped}\b"):
        ensure_synthetic(tiny_synthetic_root, "tiny", 0)                # a tree of another version is not reused


def _plan_digest(specs) -> str:
    return hashlib.sha256(repr([(s.pid, s.cam, s.length, s.who, s.query) for s in specs]).encode()).hexdigest()


# sha256 of the plan (pid, camera, length, appearance seed, query flag of every tracklet) of each preset's splits,
# seed 0, generator VERSION 3 (plans as in VERSION 2). Every value but small's test split is VERSION 1's: VERSION 2
# enlarged that split only (extra test identities on their own stream, 8x the distractors and junk), so small's
# train split, and with it every cpu-profile training, is unchanged. "occluded" (VERSION 3) has small's plan.
PLAN_DIGESTS = {
    ("tiny", "train"): "47199aad39777209bf323ddb93d7efe8f451775ee07843f05e777c06bad44a27",
    ("tiny", "test"): "a02c119299f27f6763aa4557770b9f05b5d2b71ae410ac8d6691d2a3c2d43320",
    ("small", "train"): "6a72bbe78ec336a7f818554df02219d25e85c02e13c74a8fea3884c0f024d8ed",
    ("small", "test"): "fc24f066cbd6c5a31c60b2abed390bae776e5900adca9c3ba41175cc92194262",
    ("default", "train"): "2faefa9bfe5b919ed99dba414f687756df108b6fda8a1b65c070428732626adb",
    ("default", "test"): "5793e657e7223fdc3cc972450ebf1b94eee1e844336dd90b1afb4f17ee15332d",
    ("occluded", "train"): "6a72bbe78ec336a7f818554df02219d25e85c02e13c74a8fea3884c0f024d8ed",
    ("occluded", "test"): "fc24f066cbd6c5a31c60b2abed390bae776e5900adca9c3ba41175cc92194262",
}


def test_plans_are_pinned_and_small_has_a_large_test_split():
    for size, pre in PRESETS.items():
        train, test = synthetic._plan(pre, 0)
        assert (synthetic.VERSION, _plan_digest(train), _plan_digest(test)) == \
            (3, PLAN_DIGESTS[(size, "train")], PLAN_DIGESTS[(size, "test")]), size
        people = [s for s in test if s.pid > 0]
        assert len({s.pid for s in train}) == pre.train_ids and not {s.pid for s in train} & {s.pid for s in people}
        assert len({s.pid for s in people}) == pre.test_ids + pre.extra_test_ids and max(s.pid for s in people) <= 9999
        assert [s.pid for s in test[len(people):]] == [0] * pre.distractors + [-1] * pre.junk
        queries = [s for s in test if s.query]
        for q in queries:   # a valid match in either gallery protocol: a non-query tracklet in another camera
            assert any(g.pid == q.pid and g.cam != q.cam and not g.query for g in people), (size, q)
        per_id = np.bincount(np.unique([q.pid for q in queries], return_inverse=True)[1])
        assert per_id.max() <= 2
    train, test = synthetic._plan(PRESETS["small"], 0)   # the cpu profile's data: 32 ids / 140 tracklets to train on
    assert (len(train), len(test), sum(s.query for s in test)) == (140, 1294, 425)     # VERSION 1: 140, 156, 55
    v1 = dataclasses.replace(PRESETS["small"], extra_test_ids=0, distractors=24, junk=8)   # VERSION 1's small
    assert _plan_digest(synthetic._plan(v1, 0)[0]) == PLAN_DIGESTS[("small", "train")]  # test-side fields: no effect


def test_quiet_generation_prints_nothing_and_a_log_gets_one_line(tmp_path, capsys):
    """--quiet reaches the generator through load_dataset; on a non-terminal stderr (pytest's capture, a log
    file) the generator writes one line, not a carriage-return redraw per frame (core.progress)."""
    load_dataset(DataConfig(dataset="synthetic", root=str(tmp_path / "quiet"), synthetic_size="tiny"), progress=False)
    assert capsys.readouterr().err == ""
    generate(tmp_path / "logged", "tiny", seed=0, progress=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err and err.startswith("synthetic tiny seed 0: ")


def test_partial_folders_of_a_dead_generation_are_removed(tiny_synthetic_root):
    parent, name = tiny_synthetic_root.parent, tiny_synthetic_root.name
    dead = parent / f".{name}.partial-{HOST}.{dead_pid()}.0a1b"
    live = parent / f".{name}.partial-{HOST}.{os.getpid()}.0a1b"
    for p in (dead, live):
        (p / "bbox_train").mkdir(parents=True)
    try:
        assert ensure_synthetic(tiny_synthetic_root, "tiny", 0, progress=False) == tiny_synthetic_root
        assert not dead.exists() and live.exists()
    finally:
        import shutil
        shutil.rmtree(live, ignore_errors=True)
