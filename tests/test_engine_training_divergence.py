"""A loss explosion is divergence (issue 22, case 8): with train.lr=1e6 the epoch losses were 8.3 then 2.2e23,
finite, so the exploded epoch was checkpointed as the "last good" one and the run failed later at scoring without
saying what to change. The rule (core.engine.training.explosion): an epoch whose mean total loss exceeds
EXPLOSION_FACTOR x the first epoch's, or LOSS_CEILING, has diverged; it is not checkpointed, the checkpoint before
it is kept, and the error says what to change."""
from __future__ import annotations

import pytest

import core.engine.training as training
from core.engine import train, train_dir
from core.engine.checkpoint import load_torch
from core.engine.training import EXPLOSION_FACTOR, LOSS_CEILING, NonFiniteLossError, explosion
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
