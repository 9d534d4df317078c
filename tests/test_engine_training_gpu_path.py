"""The GPU path on a CPU: device choice per rank, checkpoint interval and background writer, exact resume from a
mid-run checkpoint, device-side loss sums, torch.compile switch (the config hash without the speed and save knobs:
tests/test_config.py)."""
from __future__ import annotations

import threading

import pytest
import torch

import core.engine.training as train_mod
from core.engine import train
from core.engine.async_ckpt import CheckpointWriter, checkpoint_due, to_host
from core.engine.checkpoint import load_torch
from core.engine.device import Dist, pick_device
from core.engine.meter import LossMeter
from tests.helpers import states_equal, tiny_cfg


@pytest.mark.parametrize("name, ddp, gpus, expected", [
    ("auto", Dist(), 0, "cpu"),
    ("auto", Dist(), 1, "cuda:0"),
    ("auto", Dist(1, 2, 1), 2, "cuda:1"),
    ("cuda", Dist(3, 4, 1), 2, "cuda:1"),      # second node of two: local rank, not global rank
    ("cuda", Dist(1, 2, 1), 2, "cuda:1"),      # the DDP evaluation crash: rank 1 must not land on cuda:0
    ("cuda:1", Dist(), 2, "cuda:1"),
    ("cpu", Dist(1, 2, 1), 2, "cpu"),
])
def test_device_of_each_rank(name, ddp, gpus, expected):
    assert pick_device(name, ddp, gpus) == torch.device(expected)


@pytest.mark.parametrize("name, ddp, gpus, error, match", [
    ("cuda", Dist(), 0, RuntimeError, "train.device is 'cuda' but no CUDA device"),
    ("cuda:1", Dist(1, 2, 1), 2, ValueError, "under torchrun"),
    ("cuda", Dist(2, 4, 2), 2, RuntimeError, "local rank 2.*only 2 are visible"),
    ("cuda:3", Dist(), 2, RuntimeError, "needs GPU 3"),
    ("gpu", Dist(), 1, ValueError, "allowed: auto, cpu, cuda"),
])
def test_impossible_device_choices_name_the_key(name, ddp, gpus, error, match):
    with pytest.raises(error, match=match):
        pick_device(name, ddp, gpus)


def test_checkpoint_due_by_hand():
    # 10 epochs, lr steps after epochs 4 and 8 (1-based), a 60 s interval
    due = [e for e in range(10) if checkpoint_due(e, 10, (4, 8), 0.0, 60.0)]
    assert due == [3, 7, 9]  # the milestones and the last epoch only, while the interval has not elapsed
    assert checkpoint_due(0, 10, (4, 8), 60.0, 60.0) and not checkpoint_due(0, 10, (4, 8), 59.9, 60.0)
    assert all(checkpoint_due(e, 10, (), 0.0, 0.0) for e in range(10))  # interval 0: every epoch


def _record_saves(monkeypatch) -> list[int]:
    saves: list[int] = []
    real = CheckpointWriter.submit

    def recording(self, state, path):
        saves.append(state["epoch"])
        return real(self, state, path)

    monkeypatch.setattr(CheckpointWriter, "submit", recording)
    return saves


def test_checkpoint_interval_saves_where_promised_and_resume_from_mid_run_is_exact(
        tiny_synthetic_root, tiny_dataset, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.epochs": 3, "train.milestones": [2],
                                           "train.checkpoint_every_s": 1e9})
    saves = _record_saves(monkeypatch)
    full_model, full_hist = train(cfg, tiny_dataset, tmp_path / "full", progress=False)
    assert saves == [1, 2]  # after the lr milestone (end of epoch 2) and after the last epoch, not after epoch 1

    # killed in the 3rd epoch: the checkpoint on disk is the milestone one (epoch 2); resuming ends bit-identical
    real, calls, per_epoch = train_mod.compute_losses, {"n": 0}, full_hist[0].iterations

    def dies_in_epoch_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * per_epoch + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "compute_losses", dies_in_epoch_three)
    saves.clear()
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_dataset, tmp_path / "killed", progress=False)
    assert saves == [1] and load_torch(tmp_path / "killed" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train_mod, "compute_losses", real)
    resumed, hist = train(cfg, tiny_dataset, tmp_path / "killed", progress=False)
    assert [h.total for h in hist] == [h.total for h in full_hist]
    assert states_equal(resumed.state_dict(), full_model.state_dict())
    # wall-clock and compute-only throughput are both logged, finite and positive
    assert all(h.frames_per_s > 0 and h.compute_frames_per_s > 0 and h.seconds > 0 for h in full_hist)


def test_writer_saves_the_state_as_it_was_at_submit_and_surfaces_errors(tmp_path):
    release, written = threading.Event(), []

    def slow_save(state, path):
        release.wait()
        written.append((state["w"].clone(), path))

    live = torch.ones(3)
    writer = CheckpointWriter(save=slow_save)
    writer.submit({"w": live, "epoch": 0}, tmp_path / "a.pt")   # returns before the write
    live.add_(1.0)                                             # training goes on updating in place
    release.set()
    writer.join()
    assert torch.equal(written[0][0], torch.ones(3)) and written[0][1] == tmp_path / "a.pt"

    def broken_save(state, path):
        raise OSError("disk full")

    writer = CheckpointWriter(save=broken_save)
    writer.submit({"w": live}, tmp_path / "b.pt")
    with pytest.raises(RuntimeError, match=r"writing checkpoint .*b\.pt failed: OSError: disk full"):
        writer.join()
    writer.join()  # the error is reported once


def test_to_host_copies_nested_tensors():
    live = {"model": {"w": torch.zeros(2)}, "history": [{"a": 1.0}], "rng": (torch.ones(1),)}
    host = to_host(live)
    live["model"]["w"].add_(5)
    assert torch.equal(host["model"]["w"], torch.zeros(2)) and host["history"] == [{"a": 1.0}]


def test_loss_meter_reads_means_and_the_first_non_finite_iteration_by_hand():
    meter = LossMeter(("ce", "total"), torch.device("cpu"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    meter.add(0, {"ce": torch.tensor(1.0), "total": torch.tensor(3.0)}, logits, torch.tensor([0, 0]))
    meter.add(1, {"ce": torch.tensor(2.0), "total": torch.tensor(5.0)}, logits, torch.tensor([0, 1]))
    read = meter.read()
    assert read["means"] == {"ce": 1.5, "total": 4.0} and read["train_acc"] == 3 / 4 and read["first_bad"] is None
    meter.add(2, {"ce": torch.tensor(float("inf")), "total": torch.tensor(float("nan"))}, logits, torch.tensor([0, 1]))
    meter.add(3, {"ce": torch.tensor(float("nan")), "total": torch.tensor(1.0)}, logits, torch.tensor([0, 1]))
    it, values = meter.read()["first_bad"]
    assert it == 2 and values["ce"] == float("inf")


def test_compile_flag_compiles_the_training_forward(tiny_synthetic_root, tiny_dataset, tmp_path, monkeypatch):
    compiled = []

    def fake_compile(module, *args, **kwargs):  # the real one needs a C++ toolchain; the switch is what is tested
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    assert not tiny_cfg(tiny_synthetic_root).train.compile  # off by default
    model, _ = train(tiny_cfg(tiny_synthetic_root, **{"train.epochs": 1, "train.compile": True}), tiny_dataset,
                     tmp_path / "compiled", progress=False)
    assert compiled == [model]
