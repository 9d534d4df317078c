"""STAN (core/models/stan.py, model.aggregation=stan): hand-computed spatial and temporal attention, the
concatenation, the Hellinger diversity term, gradients, any N, shapes, and one tiny training run through the engine."""
import math

import pytest
import torch

from core.config import ConfigError, RunConfig, apply_overrides
from core.engine import run
from core.losses import compute_losses
from core.models import VideoReIDModel, build_model
from core.models.stan import (STANHead, TemporalScorer, attend, combine, diversity_penalty, hellinger,
                              spatial_attention, temporal_attention, temporal_pool)
from tests.helpers import tiny_cfg


def tiny(**kw):
    torch.manual_seed(0)
    return VideoReIDModel(7, backbone="resnet18", pretrained=False, aggregation="stan", feat_dim=16, **kw)


def test_spatial_softmax_and_attended_feature_by_hand():
    # one frame, K=2 models, a 1 x 2 map: model 0 scores [0, ln 3] -> [1/4, 3/4]; model 1 [0, 0] -> [1/2, 1/2]
    e = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (1, K=2, h=1, w=2)
    s = spatial_attention(e)
    assert s.shape == (1, 2, 2) and torch.allclose(s, torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]))
    f = torch.tensor([[1.0, 3.0], [2.0, -2.0]]).reshape(1, 1, 2, 1, 2)  # (B, N, D=2, 1, 2): channel d over positions
    x = attend(f, s[None])  # (1, 1, K, D)
    # model 0: 1/4 [1, 2] + 3/4 [3, -2] = [2.5, -1]; model 1: 1/2 [1, 2] + 1/2 [3, -2] = [2, 0]
    assert torch.allclose(x, torch.tensor([[[[2.5, -1.0], [2.0, 0.0]]]]))


def test_temporal_attention_pool_and_concatenation_by_hand():
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (B=1, N=2, K=1, D=2)
    scorer = TemporalScorer(1, 2)
    with torch.no_grad():
        scorer.weight.copy_(torch.tensor([[math.log(3.0), 0.0]]))
    t = temporal_attention(scorer(x))  # scores [ln 3, 0] over the frames -> [3/4, 1/4]
    assert torch.allclose(t, torch.tensor([[[0.75], [0.25]]]))
    assert torch.allclose(temporal_pool(x, t), torch.tensor([[[0.75, 0.25]]]))
    xk = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B, K=2, D=2): model k's features in block k
    assert torch.equal(combine(xk), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))


def test_uniform_attention_reduces_to_average_pooling_repeated_per_model():
    head = STANHead(4, models=3, hidden=2)
    with torch.no_grad():
        head.spatial.out.weight.zero_()  # constant spatial scores -> uniform maps; temporal weights start at 0
    f = torch.randn(2, 5, 4, 3, 2)
    out = head(f)
    assert torch.allclose(out["spatial"], torch.full((2, 5, 3, 6), 1 / 6))
    assert torch.allclose(out["temporal"], torch.full((2, 5, 3), 1 / 5))
    avg = f.mean((1, 3, 4))  # (B, D)
    assert torch.allclose(out["clip"], avg.repeat(1, 3), atol=1e-6)


def test_diversity_penalty_by_hand():
    disjoint = torch.eye(4)[None, None, :3]  # (1, 1, K=3, L=4): one-hot on distinct positions
    assert diversity_penalty(disjoint).item() == pytest.approx(0.0, abs=1e-9)
    same = torch.full((1, 1, 3, 4), 0.25)  # three identical maps: every off-diagonal entry 1 -> K(K-1) = 6
    assert diversity_penalty(same).item() == pytest.approx(6.0)
    assert diversity_penalty(same, squared=False).item() == pytest.approx(math.sqrt(6.0))
    p, q = torch.tensor([0.5, 0.5, 0.0, 0.0]), torch.tensor([0.0, 0.5, 0.5, 0.0])
    # Bhattacharyya coefficient sum sqrt(p q) = 1/2 = 1 - H^2: two off-diagonal entries of 1/2 -> 2 * 1/4
    assert hellinger(p, q).item() == pytest.approx(math.sqrt(0.5))
    pair = torch.stack([p, q])[None, None]
    assert diversity_penalty(pair).item() == pytest.approx(0.5)
    assert diversity_penalty(pair, squared=False).item() == pytest.approx(math.sqrt(0.5))
    both = torch.cat([disjoint, same], 1)  # (1, N=2, 3, 4): mean over the frames (0 + 6) / 2
    assert diversity_penalty(both).item() == pytest.approx(3.0)


def test_diversity_gradient_is_finite_at_zero_weights():
    s = torch.tensor([[[[1.0, 0.0], [0.3, 0.7]]]], requires_grad=True)
    diversity_penalty(s).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_compute_losses_adds_the_weighted_div_term():
    model = tiny(stan_models=3)
    out = model(torch.randn(4, 3, 3, 64, 32))
    pids = torch.tensor([0, 0, 1, 1])
    on = compute_losses(out, pids, 0.3, True, 0.0, False, div_weight=0.5)
    assert on["div"].item() == pytest.approx(diversity_penalty(out["spatial"]).item())
    assert torch.allclose(on["total"], on["ce"] + on["triplet"] + 0.5 * on["div"])
    off = compute_losses(out, pids, 0.3, True, 0.0, False, div_weight=0.0)
    assert not off["div"].requires_grad and off["div"].item() > 0 and torch.allclose(off["total"], on["ce"] + on["triplet"])


def test_gradients_reach_every_stan_parameter_and_the_backbone():
    model = tiny(stan_models=3)
    out = model(torch.randn(4, 3, 3, 64, 32))
    compute_losses(out, torch.tensor([0, 0, 1, 1]), 0.3, True, 0.0, False, div_weight=1.0)["total"].backward()
    for name in ("stan.spatial.hidden.weight", "stan.spatial.out.weight", "stan.temporal.weight", "fc.weight",
                 "backbone.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_any_n_at_test_time_and_identical_frames_get_equal_weights():
    model = tiny().eval()
    with torch.no_grad():
        for n in (1, 3, 7):
            out = model(torch.randn(2, n, 3, 64, 32))
            assert out["feat"].shape == (2, 16) and out["scores"].shape == (2, n, 6)
            assert out["spatial"].shape == (2, n, 6, 8) and torch.allclose(out["scores"].sum(1), torch.ones(2, 6))
        same = model(torch.randn(1, 1, 3, 64, 32).expand(-1, 4, -1, -1, -1))
        assert torch.allclose(same["scores"], torch.full((1, 4, 6), 0.25))


def test_resnet18_shapes_at_128x64_for_both_embeddings():
    for embed, width in (("concat", 16), ("per_model", 6 * 16)):
        model = tiny(stan_embed=embed)
        out = model(torch.randn(2, 3, 3, 128, 64))  # 128 x 64 -> 8 x 4 maps, L = 32
        assert out["feat"].shape == (2, width) and out["logits"].shape == (2, 7) and out["frames_per_clip"] == 1
        assert out["spatial"].shape == (2, 3, 6, 32) and out["scores"].shape == (2, 3, 6)
        assert out["attention"].shape == (2, 3, 8, 4)  # Eq. 1 of STA, kept for Reg and drawings [S6]
        assert torch.allclose(out["spatial"].sum(-1), torch.ones(2, 3, 6))
    assert tiny(stan_embed="per_model").stan.temporal.weight.shape == (6, 16)


def test_bf16_autocast_keeps_attention_in_float32():
    model = tiny(stan_models=3).eval()
    clips = torch.randn(2, 3, 3, 64, 32)
    with torch.no_grad():
        ref = model(clips)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = model(clips)
    assert amp["spatial"].dtype == torch.float32 and amp["scores"].dtype == torch.float32
    assert torch.allclose(amp["spatial"], ref["spatial"], atol=0.05) and torch.isfinite(amp["feat"]).all()


def test_resnet50_256x128_cpu_smoke():
    """The paper profile's model (ResNet-50, 256 x 128, 16 x 8 maps) on 1 clip of 2 frames: one training step."""
    torch.manual_seed(0)
    model = VideoReIDModel(5, backbone="resnet50", pretrained=False, aggregation="stan")
    out = model(torch.randn(1, 2, 3, 256, 128))
    assert model.fc.in_features == 6 * 2048 and out["feat"].shape == (1, 1024)
    assert out["spatial"].shape == (1, 2, 6, 128) and torch.isfinite(out["feat"]).all()
    compute_losses(out, torch.tensor([0]), 0.3, True, 0.0, False, div_weight=1.0)["total"].backward()
    assert torch.isfinite(model.stan.spatial.hidden.weight.grad).all()


def test_config_keys_and_errors():
    cfg = apply_overrides(RunConfig(), {"model.aggregation": "stan", "model.stan_models": 4, "model.backbone": "resnet18",
                                        "model.pretrained": False, "model.feat_dim": 8, "loss.div_weight": 0.1})
    model = build_model(cfg.model, 3)
    assert model.stan.models == 4 and model.stan.spatial.hidden.out_channels == 64
    with pytest.raises(ConfigError, match="concat, per_model"):
        apply_overrides(RunConfig(), {"model.stan_embed": "mean"})
    with pytest.raises(ConfigError, match="stan_models"):
        apply_overrides(RunConfig(), {"model.stan_models": 0})
    with pytest.raises(ValueError, match="concat, per_model"):
        tiny(stan_embed="mean")


def test_tiny_stan_run_trains_and_evaluates(tiny_synthetic_root, tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_synthetic_root, **{"model.aggregation": "stan", "model.stan_models": 3, "train.epochs": 1})
    result = run(cfg, tmp_path, progress=False, dataset=tiny_dataset)
    for key in ("R1", "mAP", "gao_mAP"):
        assert 0.0 <= result.metrics[key] <= 1.0, key
    assert result.losses["loss_div"] > 0 and result.losses["loss_div_weighted"] == pytest.approx(result.losses["loss_div"])
    assert result.scores and all(s.shape == (cfg.eval.seq_len, 3) for s in result.scores.values())
