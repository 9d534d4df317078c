"""Resume checkpoints (core.engine.training.check_checkpoint, the safe loader core.engine.checkpoint.load_torch).

A run resumes only its own config's checkpoint, and one that fits its model; a planted pickle is refused without
running its code (issue 12). A checkpoint that cannot be resumed stops the table in one `error:` line, exit 2, before
any row trains (issue 22: they were right but arrived in a 38-line traceback as a failed row, exit 1); a full disk
while writing one names the file and says "no space left on device" (it said "unexpected pos")."""
from __future__ import annotations

import errno
import os
import pickle
import re

import pytest
import torch

import core.tables
from core.cli import cli_overrides, main, table_parser
from core.config import apply_overrides
from core.engine import train, train_dir
from core.atomic import DiskFullError
from core.engine.checkpoint import load_torch, save_torch
from core.engine.training import train_hash
from core.specs import load_spec, select_rows, spec_path
from core.tables import jobs
from tests.helpers import TINY_TABLE, RunsCode, error_line, set_args, tiny_cfg


def _flags(tmp_path, root):
    return ["--rows", "1", "--epochs", "1", "--quiet", "--data-root", str(root), "--work-dir", str(tmp_path / "runs"),
            "--reports-dir", str(tmp_path / "reports"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
            *set_args(TINY_TABLE)]


def _checkpoint(flags):
    """The last.pt the table run of `flags` would resume, and its config."""
    args = table_parser("table1").parse_args(flags)
    spec = select_rows(load_spec(spec_path("table1"), profile=args.profile, dataset=args.dataset,
                                 data_root=args.data_root, overrides=cli_overrides(args)), args.rows)
    cfg = jobs(spec)[0].cfg
    return train_dir(cfg, args.work_dir) / "last.pt", cfg


def _plant(kind, path, cfg, tmp_path):
    path.parent.mkdir(parents=True, exist_ok=True)
    good = {"epoch": 0, "config_hash": train_hash(cfg), "model": {"w": torch.ones(2)}}
    if kind == "truncated":
        save_torch(good, path)
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "planted pickle":
        with open(path, "wb") as f:
            pickle.dump({"epoch": 0, "model": RunsCode(tmp_path / "code-ran")}, f)
    elif kind == "another config":
        save_torch({**good, "config_hash": "0123456789ab"}, path)
    elif kind == "NaN weights":
        save_torch({**good, "model": {"w": torch.tensor([1.0, float("nan")])}}, path)
    elif kind == "empty file":
        path.write_bytes(b"")
    elif kind == "a folder":
        path.mkdir()
    elif kind == "no config hash":
        save_torch({"epoch": 0, "model": {"w": torch.ones(2)}}, path)


@pytest.mark.parametrize("kind, expect", [
    ("truncated", "cannot be read"), ("random bytes", "cannot be read|was refused by the safe loader"),
    ("planted pickle", "was refused by the safe loader"), ("another config", "belongs to another config"),
    ("NaN weights", "holds non-finite weights"), ("empty file", "cannot be read"), ("a folder", "is a folder"),
    ("no config hash", "has no config hash"),
])
def test_a_bad_checkpoint_stops_the_table_in_one_line_before_training(tiny_synthetic_root, tmp_path, monkeypatch,
                                                                      capsys, kind, expect):
    flags = _flags(tmp_path, tiny_synthetic_root)
    path, cfg = _checkpoint(flags)
    _plant(kind, path, cfg, tmp_path)
    trained = []
    monkeypatch.setattr(core.tables, "_run_job", lambda *a, **k: trained.append(a))
    assert main("table1", flags) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: checkpoint {path}") and any(e in line for e in expect.split("|")), line
    assert trained == [] and not (tmp_path / "reports").exists() and not (tmp_path / "m.db").exists()
    assert not (tmp_path / "code-ran").exists()


def test_a_checkpoint_that_does_not_fit_the_model_is_one_line(tiny_synthetic_root, tmp_path, capsys):
    """Known only once the model is built (the hash matches): still one line, exit 2."""
    flags = _flags(tmp_path, tiny_synthetic_root)
    path, cfg = _checkpoint(flags)
    _plant("another config", path, cfg, tmp_path)
    save_torch({"epoch": 0, "config_hash": train_hash(cfg), "model": {"w": torch.ones(2)}}, path)
    assert main("table1", flags) == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: checkpoint {path} does not fit the model")


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_torch({"w": torch.ones(3)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(DiskFullError, match=rf"no space left on device writing {path} \(\d+ MiB free there\)") as info:
        save_torch({"w": torch.zeros(1000)}, path)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_full_disk_stops_the_table_in_one_line(tiny_synthetic_root, tmp_path, monkeypatch, capsys):
    import core.engine.checkpoint as ckpt
    flags = _flags(tmp_path, tiny_synthetic_root)
    real_write, real_fsync, full = ckpt.atomic_write, os.fsync, []

    def fsync(fd):
        if full:
            _no_space()
        return real_fsync(fd)

    def write(path, *a, **k):                     # the store's disk has room; the run folder's is full
        full[:] = [True] if str(tmp_path / "runs") in str(path) else []
        try:
            return real_write(path, *a, **k)
        finally:
            full.clear()
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(ckpt, "atomic_write", write)
    assert main("table1", flags) == 2
    line = error_line(capsys.readouterr().err)
    assert "no space left on device writing" in line and str(tmp_path / "runs") in line


# ---- resume: same config only, safe loading (issue 12) -----------------------------------------------------

def test_resume_refuses_another_config_and_a_mismatched_state(tiny_synthetic_root, tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.epochs": 1})
    train(cfg, tiny_dataset, tmp_path, progress=False)
    path = tmp_path / "last.pt"
    where = re.escape(f"checkpoint {path}")
    assert load_torch(path)["config_hash"] == train_hash(cfg)
    train(apply_overrides(cfg, {"eval.seq_len": 2, "data.num_workers": 1}, "tests"), tiny_dataset, tmp_path,
          progress=False)                                   # evaluation-only keys share the trained model
    other = apply_overrides(cfg, {"loss.margin": 0.5}, "tests")
    with pytest.raises(RuntimeError, match=rf"{where} belongs to another config \(training hash "
                                           rf"{train_hash(cfg)}; this run's is {train_hash(other)}\)"):
        train(other, tiny_dataset, tmp_path, progress=False)

    state = load_torch(path)
    state["model"].pop(next(iter(state["model"])))
    save_torch(state, path)
    with pytest.raises(RuntimeError, match=rf"{where} does not fit the model .*Missing key"):
        train(cfg, tiny_dataset, tmp_path, progress=False)
    del state["config_hash"]
    save_torch(state, path)
    with pytest.raises(RuntimeError, match=rf"{where} has no config hash"):
        train(cfg, tiny_dataset, tmp_path, progress=False)


def test_planted_checkpoint_is_refused_without_running_its_code(tiny_synthetic_root, tiny_dataset, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"epoch": 0, "model": RunsCode(marker)}, tmp_path / "last.pt")
    where = re.escape(f"checkpoint {tmp_path / 'last.pt'}")
    with pytest.raises(RuntimeError, match=rf"{where} was refused by the safe loader \(.*GLOBAL .*mkdir.*nothing "
                                           r"in it was run"):
        train(tiny_cfg(tiny_synthetic_root, **{"train.epochs": 1}), tiny_dataset, tmp_path, progress=False)
    assert not marker.exists()
