"""Divergence: a diverged model fails instead of scoring, and the last finite checkpoint is kept.

Non-finite values (issue 12): features with NaN or inf are refused naming the clips and tracklets (lr 1e10 used to
score R1 = mAP = 100 %), a non-finite loss or non-finite weights after an epoch's last step write no checkpoint for
it. A loss explosion (issue 22, case 8): with train.lr=1e6 the epoch losses were 8.3 then 2.2e23, finite, so the
exploded epoch was checkpointed as the "last good" one and the run failed later at scoring without saying what to
change. The rule (core.engine.training.explosion): an epoch whose mean total loss exceeds EXPLOSION_FACTOR x the
first epoch's, or LOSS_CEILING, has diverged; it is not checkpointed, the checkpoint before it is kept, and the
error says what to change. (A diverged tuning trial: tests/test_tuning_trial.py; evaluate's own refusal of
non-finite distances: tests/test_evaluation_metrics.py.)"""
from __future__ import annotations

import math

import pytest
import torch

import core.engine.training as training
from core.config import apply_overrides
from core.engine import extract_features, run, train, train_dir
from core.engine.checkpoint import load_torch
from core.engine.training import EXPLOSION_FACTOR, LOSS_CEILING, NonFiniteLossError, explosion, non_finite
from tests.helpers import tiny_cfg


def test_the_explosion_rule_inside_and_outside_its_bounds():
    assert explosion(None, 8.3) is None                                  # a first epoch: only the ceiling applies
    assert explosion(None, LOSS_CEILING * 2) == f"mean total loss {LOSS_CEILING * 2:.3g} > {LOSS_CEILING:g}"
    assert explosion(8.3, 2.2e23).startswith("mean total loss 2.2e+23 >")
    assert explosion(8.3, 8.3 * EXPLOSION_FACTOR * 1.01) == \
        f"mean total loss {8.3 * EXPLOSION_FACTOR * 1.01:.3g} > {EXPLOSION_FACTOR:g} x the first epoch's 8.3"
    assert explosion(8.3, 8.3 * EXPLOSION_FACTOR * 0.99) is None         # just under: a bad epoch, not divergence
    assert explosion(8.3, 20.0) is None                                  # a loss that rose 2.4x: not divergence
    assert explosion(8.3, 0.01) is None                                  # a converging run


def test_an_exploded_epoch_is_not_checkpointed_and_the_error_says_what_to_change(tiny_synthetic_root, tiny_dataset,
                                                                                tmp_path, monkeypatch):
    """Epoch losses 8.3 then 2.2e23 (the issue's figures), stood in for by the epoch function."""
    real, totals = training._train_epoch, iter([8.3, 2.2e23, 1.0])

    def epoch(*args, **kwargs):
        out = real(*args, **kwargs)
        out["total"] = next(totals)
        return out
    monkeypatch.setattr(training, "_train_epoch", epoch)
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.epochs": 3, "train.milestones": [2], "train.lr": 1e6,
                                           "train.checkpoint_every_s": 0.0})
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, tiny_dataset, train_dir(cfg, tmp_path), progress=False)
    ckpt = train_dir(cfg, tmp_path) / "last.pt"
    msg = str(err.value)
    assert msg.startswith("loss explosion at epoch 2: mean total loss 2.2e+23 > 1000 x the first epoch's 8.3")
    assert f"the checkpoint of epoch 1 ({ckpt}) is kept" in msg and "lower train.lr (now 1e+06)" in msg
    kept = load_torch(ckpt)
    assert kept["epoch"] == 0 and [h["total"] for h in kept["history"]] == [8.3]


# ---- a diverged model never scores (issue 12) ------------------------------------------------------------

class NaNForFirstClip(torch.nn.Module):
    """A stand-in model: mean pixel features; the first clip it ever sees gets NaN."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, clips):                                  # (B, N, 3, H, W) -> feat (B, 3)
        feat = clips.mean(dim=(1, 3, 4)) * self.w
        if self.calls == 0:
            feat[0] = float("nan")
        self.calls += 1
        return {"feat": feat}


def test_extract_refuses_non_finite_features_naming_clips_and_tracklets(tiny_dataset):
    tracklets = tiny_dataset.query[:5]
    with pytest.raises(FloatingPointError, match=r"non-finite features \(NaN or inf\) in 1 of 5 clips, 1 of 5 "
                                                 r"tracklets \(first: #0, id \d+, cam \d+, .*\.jpg\)"):
        extract_features(NaNForFirstClip(), tracklets, seq_len=2, sampling="evenly", height=32, width=16,
                         batch_size=8, num_workers=0, device=torch.device("cpu"), progress=False)


def test_lr_1e10_fails_instead_of_scoring_100_percent(tiny_synthetic_root, tiny_dataset, tmp_path):
    """The issue's case: one epoch of one iteration at lr 1e10 leaves finite (~1e10) weights whose features are
    NaN; it used to score R1 = mAP = 100 %."""
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.lr": 1e10, "train.epochs": 1, "data.ids_per_batch": 8})
    with pytest.raises(FloatingPointError, match=r"non-finite features .* the model has diverged"):
        run(cfg, tmp_path, progress=False, dataset=tiny_dataset)
    assert not list(train_dir(cfg, tmp_path).glob("eval-*.json"))            # no metrics were written


def test_divergence_keeps_the_last_finite_checkpoint_and_says_what_to_change(tiny_synthetic_root, tiny_dataset,
                                                                           tmp_path):
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.lr": 1e10, "data.ids_per_batch": 8})
    with pytest.raises(NonFiniteLossError) as err:
        run(cfg, tmp_path, progress=False, dataset=tiny_dataset)
    ckpt = train_dir(cfg, tmp_path) / "last.pt"
    msg = str(err.value)
    assert "non-finite loss at epoch 2" in msg and f"the checkpoint of epoch 1 ({ckpt}) is kept" in msg
    assert "lower train.lr (now 1e+10)" in msg
    kept = load_torch(ckpt)
    assert kept["epoch"] == 0 and non_finite(kept["model"]) == []
    assert all(math.isfinite(h["total"]) for h in kept["history"])
    # the corrected config trains and scores in its own folder
    sane = apply_overrides(cfg, {"train.lr": 3e-4}, "tests")
    result = run(sane, tmp_path, progress=False, dataset=tiny_dataset)
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in ("R1", "mAP"))


def test_non_finite_weights_after_the_last_step_write_no_checkpoint(tiny_synthetic_root, tiny_dataset, tmp_path,
                                                                  monkeypatch):
    """Every loss of epoch 2 is finite but its last optimiser step leaves NaN weights: the epoch-1 checkpoint
    stays, and resuming it (without the fault) finishes with finite weights."""
    cfg = tiny_cfg(tiny_synthetic_root)
    real = training._train_epoch

    def last_step_explodes(net, batches, iterations, optimizer, scaler, cfg, epoch, *args, **kwargs):
        stats = real(net, batches, iterations, optimizer, scaler, cfg, epoch, *args, **kwargs)
        if epoch == 1:
            with torch.no_grad():
                next(net.parameters()).fill_(float("nan"))
        return stats

    monkeypatch.setattr(training, "_train_epoch", last_step_explodes)
    with pytest.raises(NonFiniteLossError, match=r"non-finite weights after epoch 2 .* no checkpoint was written "
                                                 r"for it; the checkpoint of epoch 1 .* is kept"):
        train(cfg, tiny_dataset, tmp_path, progress=False)
    kept = load_torch(tmp_path / "last.pt")
    assert kept["epoch"] == 0 and non_finite(kept["model"]) == []
    monkeypatch.setattr(training, "_train_epoch", real)
    model, hist = train(cfg, tiny_dataset, tmp_path, progress=False)
    assert len(hist) == 2 and non_finite(model.state_dict()) == []
