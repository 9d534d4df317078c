"""Atomic outputs (core/atomic.py; torch checkpoints through it: core/engine/checkpoint.py): a file is either absent or complete,
written with the user's umask; a write failing half-way leaves the old file and no temp file; the temp files of a
killed save are removed by the next save of the same target on this host, and nothing else is."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from core.atomic import atomic_write, save_json, save_text
from core.engine.checkpoint import load_torch, save_torch
from tests.helpers import HOST, REPO, dead_pid, no_temp


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [save_text("x", tmp_path / "a.md"), save_json({"a": 1}, tmp_path / "a.json"),
                 save_torch({"a": torch.ones(2)}, tmp_path / "a.pt")]
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in paths] == [mode] * 3


def test_a_write_failing_half_way_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old content")

    def half_then_fail(f):
        f.write(b"new half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old content" and no_temp(tmp_path)

    ckpt = tmp_path / "last.pt"
    save_torch({"w": torch.ones(3)}, ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(Exception):      # pickling fails after the tensor was written
        save_torch({"w": torch.zeros(1000), "f": lambda: 0}, ckpt)
    assert ckpt.read_bytes() == before and no_temp(tmp_path)

    js = save_json({"a": 1}, tmp_path / "m.json")
    before = js.read_bytes()

    def fsync_fails(fd):
        raise OSError("I/O error at fsync")

    monkeypatch.setattr(os, "fsync", fsync_fails)    # every byte written, then the flush to disk fails
    with pytest.raises(OSError, match="fsync"):
        save_json({"a": 2, "b": list(range(1000))}, js)
    assert js.read_bytes() == before and no_temp(tmp_path)


def test_temp_files_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    target = tmp_path / "last.pt"
    save_torch({"epoch": 0}, target)
    before = target.read_bytes()
    code = ("import os, signal, sys\n"
            "from core.atomic import atomic_write\n"
            "def dies(f):\n"
            "    f.write(b'x' * 4096); f.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"atomic_write({str(target)!r}, dies)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".last.pt.*.tmp")                  # the killed save's temp file
    assert left.stat().st_size == 4096 and target.read_bytes() == before
    live = tmp_path / f".last.pt.{HOST}.{os.getpid()}.beef.tmp"     # being written by a live process
    remote = tmp_path / f".last.pt.otherhost.{dead_pid()}.beef.tmp"  # another host: cannot be checked
    legacy = tmp_path / ".last.pt.k2j4h5x9.tmp"                   # no host and pid: not ours to judge
    other = tmp_path / f".other.pt.{HOST}.{dead_pid()}.beef.tmp"    # another target
    for p in (live, remote, legacy, other):
        p.write_bytes(b"")
    save_torch({"epoch": 1}, target)
    assert not left.exists() and load_torch(target)["epoch"] == 1
    assert all(p.exists() for p in (live, remote, legacy, other))
