"""Engine: deterministic CPU training, resume after a kill, NaN guard, callbacks, atomic checkpoints."""
from __future__ import annotations

import math

import pandas
import pytest
import torch

import core.engine.training as train_mod
from core.engine import NonFiniteLossError, per_query_path, run, train
from core.engine.checkpoint import load_torch, save_torch
from tests.helpers import states_equal, tiny_cfg


def test_two_runs_with_one_seed_give_identical_losses(tiny_synthetic_root, tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.epochs": 1})
    _, h1 = train(cfg, tiny_dataset, tmp_path / "a", progress=False)
    _, h2 = train(cfg, tiny_dataset, tmp_path / "b", progress=False)
    assert h1[0].iterations > 0
    assert [(h.ce, h.triplet, h.reg, h.total) for h in h1] == [(h.ce, h.triplet, h.reg, h.total) for h in h2]
    _, h3 = train(tiny_cfg(tiny_synthetic_root, **{"train.epochs": 1, "train.seed": 1}), tiny_dataset,
                  tmp_path / "c", progress=False)
    assert h3[0].total != h1[0].total


def test_killed_run_resumes_to_the_same_result(tiny_synthetic_root, tiny_dataset, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_synthetic_root)
    full_model, full_hist = train(cfg, tiny_dataset, tmp_path / "full", progress=False)

    real = train_mod.compute_losses
    calls = {"n": 0}
    per_epoch = full_hist[0].iterations

    def dies_mid_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == per_epoch + 2:  # second iteration of epoch 2: a kill at an arbitrary point
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "compute_losses", dies_mid_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_dataset, tmp_path / "killed", progress=False)
    assert load_torch(tmp_path / "killed" / "last.pt")["epoch"] == 0
    monkeypatch.setattr(train_mod, "compute_losses", real)

    resumed_model, resumed_hist = train(cfg, tiny_dataset, tmp_path / "killed", progress=False)
    assert [h.total for h in resumed_hist] == [h.total for h in full_hist]
    assert states_equal(resumed_model.state_dict(), full_model.state_dict())
    # a finished run is not trained again
    again, hist = train(cfg, tiny_dataset, tmp_path / "killed", progress=False)
    assert len(hist) == cfg.train.epochs and states_equal(again.state_dict(), full_model.state_dict())


def test_non_finite_loss_stops_with_epoch_iteration_and_term(tiny_synthetic_root, tiny_dataset, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_synthetic_root)
    real = train_mod.compute_losses
    calls = {"n": 0}

    def nan_triplet_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        losses = real(*args, **kwargs)
        if calls["n"] > iters_per_epoch:
            losses["triplet"] = torch.tensor(float("nan"))
            losses["total"] = losses["total"] + losses["triplet"]
        return losses

    _, hist = train(tiny_cfg(tiny_synthetic_root, **{"train.epochs": 1}), tiny_dataset, tmp_path / "probe",
                    progress=False)
    iters_per_epoch = hist[0].iterations
    monkeypatch.setattr(train_mod, "compute_losses", nan_triplet_in_epoch_two)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 1: term 'triplet'"):
        train(cfg, tiny_dataset, tmp_path / "nan", progress=False)
    kept = load_torch(tmp_path / "nan" / "last.pt")
    assert kept["epoch"] == 0 and all(math.isfinite(h["total"]) for h in kept["history"])


def test_callbacks_see_every_epoch_and_can_stop_training(tiny_synthetic_root, tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.epochs": 3, "train.milestones": [1, 2]})
    seen = []

    class Stop(Exception):
        pass

    def callback(stats, model):
        seen.append((stats.epoch, stats.lr))
        if stats.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tiny_dataset, tmp_path / "cb", callbacks=[callback], progress=False)
    assert seen == [(0, pytest.approx(3e-4)), (1, pytest.approx(3e-5))]
    assert load_torch(tmp_path / "cb" / "last.pt")["epoch"] == 1


def test_corrupt_checkpoint_is_reported_with_its_path(tmp_path):
    path = tmp_path / "last.pt"
    save_torch({"x": torch.ones(3)}, path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(RuntimeError, match="last.pt"):
        load_torch(path)
    assert not list(tmp_path.glob(".*tmp"))


def test_run_trains_evaluates_and_writes_metrics(tiny_synthetic_root, tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.epochs": 1, "eval.rerank": True, "eval.rerank_k1": 4,
                                           "eval.rerank_k2": 2})
    result = run(cfg, tmp_path, progress=False, dataset=tiny_dataset)
    for key in ("R1", "R5", "R10", "R20", "mAP", "rerank_R1", "rerank_mAP"):
        assert 0.0 <= result.metrics[key] <= 1.0, key
    assert result.metrics["num_queries"] + result.metrics["num_skipped_queries"] == len(tiny_dataset.query)
    # both protocols and their re-ranking from one extraction; re-ranking over the distinct tracklets only
    distinct = len(set(tiny_dataset.query) | set(tiny_dataset.gallery))
    assert set(tiny_dataset.query) <= set(tiny_dataset.gallery) and result.metrics["rerank_set_size"] == distinct
    assert result.metrics["official_num_gallery"] == len(tiny_dataset.gallery) == distinct
    assert result.metrics["gao_num_gallery"] == len(tiny_dataset.gallery) - len(tiny_dataset.query)
    for key in ("official_rerank_mAP", "gao_rerank_mAP", "gao_mAP", "official_R1"):
        assert 0.0 <= result.metrics[key] <= 1.0, key
    assert result.metrics["mAP"] == result.metrics["official_mAP"]
    assert result.losses["loss_reg_weighted"] == pytest.approx(0.5 * result.losses["loss_reg"])
    assert result.cmc.shape == (20,) and all(result.cmc[i] <= result.cmc[i + 1] for i in range(19))
    assert result.synthetic and "synthetic" in result.dataset_name
    assert result.scores and all(s.shape == (cfg.eval.seq_len, 2) for s in result.scores.values())
    assert list(result.run_dir.glob("eval-*.json")) and (result.run_dir / "config.json").exists()
    # every query's outcome per protocol and re-ranking, written beside eval-<hash>.json and read back equal
    frame = result.per_query
    assert len(frame) == 3 * 2 * len(tiny_dataset.query) and set(frame["protocol"]) == {"headline", "official", "gao"}
    pandas.testing.assert_frame_equal(pandas.read_parquet(per_query_path(cfg, tmp_path)), frame)
    assert not list(result.run_dir.glob(".*tmp"))
    for rr, prefix in ((False, ""), (True, "rerank_")):
        rows = frame[(frame["protocol"] == "headline") & (frame["reranked"] == rr)]
        assert rows["query"].tolist() == list(range(len(tiny_dataset.query)))
        assert rows["pid"].tolist() == [t.pid for t in tiny_dataset.query]
        assert (rows["first_match_rank"] == 1).sum() / rows["ap"].notna().sum() == result.metrics[f"{prefix}R1"]
        assert rows["ap"].mean() == pytest.approx(result.metrics[f"{prefix}mAP"], abs=1e-12)   # NaN skipped
        for m in ("R1", "mAP"):                   # the 95 % bootstrap interval around each value
            key = f"{prefix}{m}"
            assert result.metrics[f"{key}_ci_low"] <= result.metrics[key] <= result.metrics[f"{key}_ci_high"]


def _chance_rank1(query, gallery) -> float:
    """Expected rank-1 of a random ranking: per query, true matches / valid gallery items (A15 protocol)."""
    rates = []
    for q in query:
        valid = [g for g in gallery if g.pid != -1 and not (g.pid == q.pid and g.camid == q.camid)]
        hits = sum(g.pid == q.pid for g in valid)
        if hits:
            rates.append(hits / len(valid))
    return sum(rates) / len(rates)


def test_training_learns_an_embedding(tiny_synthetic_root, tiny_dataset, tmp_path):
    """Loss falls and retrieval among the training identities (first tracklet of each id as query, the others
    as gallery) beats chance and the untrained model. Generalisation to unseen ids is Table 1's business."""
    from core.engine import evaluate_model
    from core.models import build_model
    cfg = tiny_cfg(tiny_synthetic_root, **{"train.epochs": 10, "train.milestones": [10], "train.lr": 1e-3,
                                           "loss.reg_weight": 0.0})
    first = {}
    for t in tiny_dataset.train:
        first.setdefault(t.pid, t)
    query = list(first.values())
    gallery = [t for t in tiny_dataset.train if t not in query]
    torch.manual_seed(cfg.train.seed)
    untrained = build_model(cfg.model, tiny_dataset.num_train_pids).eval()
    before = evaluate_model(untrained, query, gallery, cfg, torch.device("cpu"), progress=False).metrics

    model, hist = train(cfg, tiny_dataset, tmp_path / "learn", progress=False)
    after = evaluate_model(model, query, gallery, cfg, torch.device("cpu"), progress=False).metrics
    assert sum(h.ce for h in hist[-3:]) < sum(h.ce for h in hist[:3])
    assert hist[-1].train_acc > 2.0 / tiny_dataset.num_train_pids
    assert after["R1"] > 2 * _chance_rank1(query, gallery)
    assert after["mAP"] > before["mAP"]
