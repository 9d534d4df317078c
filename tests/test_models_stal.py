"""STAL (Chen et al. 2019; core/models/stal.py): Eq. 8, 9 and the attention normalisations on hand-made tensors,
each term of Eq. 3 (Eq. 4-6), the test distance d = d_l + w * d_g (core.evaluation.distance.PartLayout) through
the distances, the re-ranking and both protocols, gradients, any N at test time, an engine smoke on the tiny
synthetic data and a ResNet-50 256x128 CPU smoke."""
import importlib
import math

import numpy as np
import pytest
import torch

from core import protocols
from core.config import ConfigError, RunConfig, apply_overrides
from core.evaluation import k_reciprocal_rerank, score_protocols
from core.evaluation.distance import PartLayout, pairwise_distance, self_euclidean
from core.losses import StalWeights, batch_hard_triplet, compute_losses
from core.models import VideoReIDModel, build_model
from core.models.stal import (aggregate_parts, l1_normalize_map, local_distance, spatial_weights, stripe_features,
                              temporal_weights)
from tests.helpers import tiny_cfg

# one clip, 2 frames, 2 parts: raw attention scores a[t, r]
A = torch.tensor([[[0.2, 0.9], [0.6, 0.3]]])                     # (1, N=2, R=2)
# unit features f^{r,t} (F = 2): part 0: [4, 0] then [0, 4]; part 1: [2, 2] then [6, -2]
UNITS = torch.tensor([[[[4., 0.], [2., 2.]], [[0., 4.], [6., -2.]]]])  # (1, N, R, F)
WEIGHTS = StalWeights(margin_global=1.2, margin_local=0.8, local_weight=0.3, consist_weight=0.5)


def test_stal_eq8_eq9_attention_normalisations_by_hand():
    # the L1 normalisation layer divides by the clip's sum 0.2 + 0.9 + 0.6 + 0.3 = 2
    assert torch.allclose(l1_normalize_map(A), A / 2)
    # Eq. 9's weights: part 0: 0.2 / 0.8, 0.6 / 0.8; part 1: 0.9 / 1.2, 0.3 / 1.2 -- columns sum to 1 over frames
    assert torch.allclose(temporal_weights(A), torch.tensor([[[0.25, 0.75], [0.75, 0.25]]]))
    # Eq. 8's a_bar = mean over frames = (0.4, 0.6): l1 -> (0.4, 0.6); l2 -> (0.4, 0.6) / sqrt(0.52)
    assert torch.allclose(spatial_weights(A, "l1"), torch.tensor([[0.4, 0.6]]))
    assert torch.allclose(spatial_weights(A, "l2"), torch.tensor([[0.4, 0.6]]) / math.sqrt(0.52))
    with pytest.raises(ValueError, match="unknown STAL part norm 'l3'; valid: l1, l2"):
        spatial_weights(A, "l3")


def test_stal_eq9_attention_weighted_temporal_aggregation_by_hand():
    # f^0 = 0.25 [4, 0] + 0.75 [0, 4] = [1, 3]; f^1 = 0.75 [2, 2] + 0.25 [6, -2] = [3, 1]
    expected = torch.tensor([[[1., 3.], [3., 1.]]])
    assert torch.allclose(aggregate_parts(UNITS, A), expected)
    assert torch.allclose(aggregate_parts(UNITS, l1_normalize_map(A)), expected)  # a per-clip scale changes nothing
    # equal scores: Eq. 9 is the temporal average (the paper's "special case")
    assert torch.allclose(aggregate_parts(UNITS, torch.ones(1, 2, 2)), UNITS.mean(1))


def test_stal_eq2_eq8_local_distance_by_hand():
    fi, wi = torch.tensor([[[1., 3.], [3., 1.]]]), torch.tensor([[0.4, 0.6]])
    fj, wj = torch.tensor([[[1., 0.], [0., 5.]]]), torch.tensor([[0.5, 0.5]])
    # part 0: ||[1,3] - [1,0]|| = 3, weight 0.4 * 0.5; part 1: ||[3,1] - [0,5]|| = 5, weight 0.6 * 0.5
    assert local_distance(fi, wi, fj, wj).item() == pytest.approx(0.4 * 0.5 * 3 + 0.6 * 0.5 * 5)  # 2.1
    both, w = torch.cat([fi, fj]), torch.cat([wi, wj])
    d = local_distance(both, w, both, w)
    assert torch.equal(d.diagonal(), torch.zeros(2)) and d[0, 1] == d[1, 0]


def test_stripes_are_the_row_ranges_of_region_bounds():
    f = torch.arange(4.).reshape(1, 1, 1, 4, 1).expand(1, 1, 3, 4, 2)   # row i holds the value i
    # R = 3 over 4 rows, remainder "last": rows [0], [1], [2, 3]
    assert torch.equal(stripe_features(f, [(0, 1), (1, 2), (2, 4)]), torch.tensor([0., 1., 2.5]).expand(1, 1, 3, 3)
                       .transpose(-1, -2))


def _stal_out(parts, global_feat, logits_pid_col):
    """A STAL output dict by hand: 4 clips, 2 frames, R = 1, K = 3 classes."""
    b = global_feat.shape[0]
    part_logits = torch.zeros(b, 2, 1, 3)
    part_logits[torch.arange(b), :, :, logits_pid_col] = math.log(2)   # each unit: p(target) = 2 / (2 + 1 + 1)
    return {"feat": torch.zeros(b, 1), "logits": torch.zeros(b, 3), "attention": torch.zeros(b, 2, 2, 1),
            "frames_per_clip": 1, "global": global_feat, "parts": parts, "part_weights": torch.ones(b, 1),
            "part_logits": part_logits}


def test_stal_eq3_eq4_eq5_eq6_terms_by_hand():
    y = torch.tensor([0, 0, 1, 1])
    glob = torch.tensor([[0., 0.], [3., 4.], [1., 0.], [0., 2.]])
    parts = torch.tensor([0., 1., 3., 7.]).reshape(4, 1, 1)          # R = 1, weight 1: d_l = |p_i - p_j|
    out = _stal_out(parts, glob, y)
    losses = compute_losses(out, y, margin=0.3, use_triplet=True, reg_weight=0.0, reg_squared=False, stal=WEIGHTS)
    # Eq. 5: logits all 0 -> log 3
    assert losses["ce"].item() == pytest.approx(math.log(3))
    # Eq. 4, global sum, margin m_g = 1.2 (not loss.margin): distances as test_losses.test_eq9_triplet_by_hand
    s5, s13 = math.sqrt(5), math.sqrt(13)
    assert losses["triplet"].item() == pytest.approx(((1.2 + 5 - 1) + (1.2 + 5 - s13) + (1.2 + s5 - 1)
                                                      + (1.2 + s5 - 2)) / 4, abs=1e-5)
    # Eq. 4, local sum, margin m_l = 0.8: anchors 0..3: [0.8 + 1 - 3]+, [0.8 + 1 - 2]+, [0.8 + 4 - 2]+, [0.8 + 4 - 6]+
    assert losses["triplet_local"].item() == pytest.approx(2.8 / 4)
    # Eq. 6 as cross entropy: every unit has p(target) = 1/2
    assert losses["consist"].item() == pytest.approx(math.log(2))
    # Eq. 3 with lambda = 0.3 on the local triplet and the consistency weight 0.5
    expected = math.log(3) + losses["triplet"].item() + 0.3 * 0.7 + 0.5 * math.log(2)
    assert losses["total"].item() == pytest.approx(expected, abs=1e-5)
    off = compute_losses(out, y, 0.3, False, 0.0, False, stal=WEIGHTS)  # loss.triplet = false: both triplets off
    assert off["triplet"].item() == off["triplet_local"].item() == 0.0
    assert off["total"].item() == pytest.approx(math.log(3) + 0.5 * math.log(2))
    with pytest.raises(ValueError, match="STAL output needs its loss weights"):
        compute_losses(out, y, 0.3, True, 0.0, False)


def _model(**kw):
    torch.manual_seed(0)
    return VideoReIDModel(5, backbone="resnet18", pretrained=False, aggregation="stal", feat_dim=8, stal_parts=2, **kw)


def test_output_keys_layout_and_scores():
    model = _model().eval()
    with torch.no_grad():
        out = model(torch.randn(3, 4, 3, 32, 16))                     # 2 x 1 maps, R = 2 stripes of one row
    layout = out["layout"]
    assert layout == PartLayout(8, 2, 8) and out["feat"].shape == (3, layout.width) == (3, 8 + 2 * 8 + 2)
    glob, parts, w = layout.split(out["feat"])
    assert torch.equal(glob, out["global"]) and torch.equal(torch.stack(parts, 1), out["parts"])
    assert torch.equal(w, out["part_weights"]) and torch.allclose(w.sum(1), torch.ones(3))      # l1 weights
    assert out["scores"].shape == (3, 4, 2) and torch.allclose(out["scores"].sum(1), torch.ones(3, 2))
    assert out["part_logits"].shape == (3, 4, 2, 5) and out["logits"].shape == (3, 5)


def test_any_n_at_test_time():
    model = _model().eval()
    with torch.no_grad():
        for n in (1, 3, 7):
            out = model(torch.randn(2, n, 3, 32, 16))
            assert out["feat"].shape == (2, 26) and torch.isfinite(out["feat"]).all()
            assert out["scores"].shape == (2, n, 2) and torch.allclose(out["scores"].sum(1), torch.ones(2, 2))


def test_without_ran_the_global_branch_is_avg_pooling():
    x = torch.randn(2, 3, 3, 32, 16)
    stal = _model(stal_ran=False).eval()
    avg = VideoReIDModel(5, backbone="resnet18", pretrained=False, aggregation="avg", feat_dim=8).eval()
    avg.load_state_dict({k: v for k, v in stal.state_dict().items() if not k.startswith("stal.")})
    with torch.no_grad():
        assert torch.allclose(stal(x)["global"], avg(x)["feat"], atol=1e-6)


def test_gradients_reach_every_branch():
    model = _model().train()
    out = model(torch.randn(4, 3, 3, 32, 16))
    compute_losses(out, torch.tensor([0, 0, 1, 1]), 0.3, True, 0.0, False, stal=WEIGHTS)["total"].backward()
    for name in ("backbone.0.weight", "fc.weight", "classifier.weight", "stal.ran.conv3.weight",
                 "stal.attention.fc.weight", "stal.attention.convs.0.weight", "stal.part_fc.1.weight",
                 "stal.part_cls.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_config_keys_and_refusals():
    cfg = apply_overrides(RunConfig(), {"model.aggregation": "stal"})
    assert (cfg.model.stal_parts, cfg.model.stal_ran, cfg.model.stal_part_norm) == (6, True, "l1")
    assert (cfg.loss.stal_margin_global, cfg.loss.stal_margin_local, cfg.loss.stal_local_weight,
            cfg.loss.stal_consist_weight, cfg.eval.stal_global_weight) == (1.2, 0.8, 0.3, 1.0, 0.3)
    model = build_model(apply_overrides(cfg, {"model.backbone": "resnet18", "model.pretrained": False,
                                              "model.stal_parts": 3, "model.stal_part_norm": "l2"}).model, 4)
    assert model.stal.num_parts == 3 and model.stal.part_norm == "l2"
    with pytest.raises(ConfigError, match="'model.stal_parts' is 17 .* height 16; STAL's R stripes must be <= 16"):
        apply_overrides(cfg, {"model.stal_parts": 17})
    apply_overrides(RunConfig(), {"model.stal_parts": 17})              # ignored unless aggregation is stal
    with pytest.raises(ConfigError, match="'model.stal_part_norm' is 'l3'; allowed: l1, l2"):
        apply_overrides(cfg, {"model.stal_part_norm": "l3"})


# ---- the test distance d = d_l + w * d_g ------------------------------------------------------------------------
LAYOUT = PartLayout(global_dim=2, num_parts=2, part_dim=1, global_weight=0.3)


def test_stal_test_distance_by_hand():
    q = torch.tensor([[0., 0., 0., 0., 0.5, 0.5]])                   # [global (2), part 1, part 2, w1, w2]
    g = torch.tensor([[3., 4., 4., 2., 0.25, 0.75],                  # d_g = 5, parts 4 and 2 away
                      [0., 0., 0., 0., 0.9, 0.1]])                   # identical features: 0
    # 0.3 * 5 + (0.5 * 0.25) * 4 + (0.5 * 0.75) * 2 = 1.5 + 0.5 + 0.75
    assert torch.allclose(pairwise_distance(q, g, layout=LAYOUT), torch.tensor([[2.75, 0.]]))
    plain = pairwise_distance(q, g)                                 # other models: one Euclidean distance
    assert plain[0, 0].item() == pytest.approx(math.sqrt(9 + 16 + 16 + 4 + 0.0625 + 0.0625))
    x = torch.cat([q, g])
    d = self_euclidean(x, layout=LAYOUT)                            # what the re-ranking uses
    assert torch.equal(d, d.T) and torch.equal(d.diagonal(), torch.zeros(3))
    assert torch.allclose(d, pairwise_distance(x, x, layout=LAYOUT), atol=1e-6)
    with pytest.raises(ValueError, match=r"do not match the part layout .* width 6"):
        pairwise_distance(q[:, :5], g[:, :5], layout=LAYOUT)


def _part1_only(rows: int, seed: int = 0):
    """Features whose layout distance is the Euclidean distance of part 1 alone (global weight 0, part weights
    (1, 0)), and that part alone; the other slices are noise that a plain distance would see."""
    gen = torch.Generator().manual_seed(seed)
    layout = PartLayout(global_dim=3, num_parts=2, part_dim=2, global_weight=0.0)
    feats = torch.randn(rows, layout.width, generator=gen) * 3
    feats[:, -2:] = torch.tensor([1., 0.])
    return feats, feats[:, 3:5].contiguous(), layout


def test_rerank_uses_the_summed_distance():
    feats, part1, layout = _part1_only(30)
    q, g = feats[:6], feats[6:]
    with_layout = k_reciprocal_rerank(q, g, k1=4, k2=2, device="cpu", layout=layout)
    assert np.allclose(with_layout, k_reciprocal_rerank(part1[:6], part1[6:], k1=4, k2=2, device="cpu"), atol=1e-6)
    assert not np.allclose(with_layout, k_reciprocal_rerank(q, g, k1=4, k2=2, device="cpu"), atol=1e-3)


def test_both_protocols_and_rerank_rank_by_the_summed_distance():
    feats, part1, layout = _part1_only(40, seed=1)
    rng = np.random.default_rng(0)
    pids, cams = rng.integers(0, 6, 40), np.arange(40) % 3
    q_rows, g_rows = np.arange(8), np.arange(40)
    prots = [protocols.headline("mars", True, "trapezoid"), *protocols.named("mars").values()]

    def score(x, lay):
        return score_protocols(x, q_rows, g_rows, pids, cams, prots, rerank=(4, 2, 0.3), device="cpu", layout=lay)
    ours, ref, plain = score(feats, layout), score(part1, None), score(feats, None)
    assert ours.metrics.keys() == ref.metrics.keys() and any(k.startswith("gao_rerank") for k in ours.metrics)
    assert all(ours.metrics[k] == pytest.approx(ref.metrics[k], abs=1e-9) for k in ref.metrics)
    assert ours.per_query["first_match_rank"].tolist() != plain.per_query["first_match_rank"].tolist()


# ---- the engine and the paper-sized backbone ---------------------------------------------------------------------
def test_engine_trains_and_evaluates_stal(tiny_synthetic_root, tiny_dataset, tmp_path, monkeypatch):
    engine_run = importlib.import_module("core.engine.run")  # the module (core.engine.run is also a function)
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs["layout"])
        return score_protocols(*args, **kwargs)
    monkeypatch.setattr(engine_run, "score_protocols", spy)
    cfg = tiny_cfg(tiny_synthetic_root, **{"model.aggregation": "stal", "model.stal_parts": 2, "train.epochs": 1,
                                           "eval.rerank": True, "eval.rerank_k1": 4, "eval.rerank_k2": 2,
                                           "eval.stal_global_weight": 0.7})
    result = engine_run.run(cfg, tmp_path, progress=False, dataset=tiny_dataset)
    for key in ("R1", "mAP", "rerank_R1", "official_mAP", "gao_rerank_mAP"):
        assert 0.0 <= result.metrics[key] <= 1.0, key
    assert seen == [PartLayout(32, 2, 32, global_weight=0.7)]         # feat_dim 32, R = 2, eval's weight
    assert result.scores and all(s.shape == (cfg.eval.seq_len, 2) for s in result.scores.values())
    assert math.isfinite(result.losses["loss_total"])


def test_resnet50_at_256x128_cpu_smoke():
    torch.manual_seed(0)
    model = VideoReIDModel(3, backbone="resnet50", pretrained=False, aggregation="stal").train()
    with torch.no_grad():                                            # backward through the head only (cheap)
        fmaps = model.backbone(torch.randn(2, 3, 256, 128))         # 1 clip of 2 frames: (2, 2048, 16, 8)
    assert fmaps.shape == (2, 2048, 16, 8)
    out = model.aggregate(fmaps.unflatten(0, (1, 2)))               # R = 6 stripes of the 16 rows
    assert out["feat"].shape == (1, 1024 + 6 * 1024 + 6) and out["scores"].shape == (1, 2, 6)
    losses = compute_losses(out, torch.tensor([0]), 0.3, True, 0.0, False, stal=WEIGHTS)
    assert losses["triplet"].item() == losses["triplet_local"].item() == 0.0  # one clip: no negative
    losses["total"].backward()
    assert torch.isfinite(model.stal.attention.fc.weight.grad).all()
    assert batch_hard_triplet(out["global"].detach(), torch.tensor([0]), 1.2).item() == 0.0
