"""Eq. 1-4 and Alg. 1 on hand-made tensors; expected numbers are worked out by hand in the comments."""
import math

import pytest
import torch

from core.models.sta import (attention_map, block_scores, fuse_maps, fuse_pooled, normalize_scores,
                             region_bounds)

# One frame, D=2, H=4, W=2: f[d, h, w]
F_ONE = torch.tensor([[[1., 0.], [0., 2.], [1., 1.], [0., 0.]],
                      [[0., 1.], [0., 0.], [1., 0.], [2., 0.]]])
# channel energy sum_d f^2 per position: [[1, 1], [0, 4], [2, 1], [4, 0]], total 13
ENERGY = torch.tensor([[1., 1.], [0., 4.], [2., 1.], [4., 0.]])


def test_eq1_energy_by_hand():
    # [A1 (a)] e / sum e: the total energy is 1+1+0+4+2+1+4+0 = 13
    g = attention_map(F_ONE, "energy")
    assert torch.allclose(g, ENERGY / 13)
    assert torch.allclose(g.sum(), torch.tensor(1.))


def test_eq1_energy_l2_by_hand():
    # [A1 (b)] e / ||e||_2 over positions: sum of squared energies 1+1+0+16+4+1+16+0 = 39
    g = attention_map(F_ONE, "energy_l2")
    assert torch.allclose(g, ENERGY / math.sqrt(39))
    assert torch.allclose(g.square().sum(), torch.tensor(1.))  # unit l2 norm, not unit sum
    assert g[1, 1] == pytest.approx(4 / 6.244998, rel=1e-6)  # sqrt(39) = 6.244998: the peak is 0.6405, (a) gives 4/13


def test_eq1_norm_l2_by_hand():
    # [A1 (c)] per-position norm sqrt(energy): [[1, 1], [0, 2], [sqrt2, 1], [2, 0]]; its l2 norm over positions:
    # sqrt(1+1+0+4+2+1+4+0) = sqrt(13)
    expected = torch.tensor([[1., 1.], [0., 2.], [math.sqrt(2), 1.], [2., 0.]]) / math.sqrt(13)
    assert torch.allclose(attention_map(F_ONE, "norm_l2"), expected)


def test_eq1_three_readings_differ_and_each_is_scale_free():
    f = torch.rand(3, 8, 4, 2)
    maps = {kind: attention_map(f, kind) for kind in ("energy", "energy_l2", "norm_l2")}
    assert not torch.allclose(maps["energy"], maps["energy_l2"])
    assert not torch.allclose(maps["energy_l2"], maps["norm_l2"])
    for kind, g in maps.items():
        assert torch.allclose(attention_map(5 * f, kind), g, atol=1e-6), kind  # feature scale cancels


def test_eq1_all_zero_frame_gives_zero_map_not_nan():
    for kind in ("energy", "energy_l2", "norm_l2"):
        g = attention_map(torch.zeros(2, 4, 2), kind)
        assert torch.equal(g, torch.zeros(4, 2))


def test_eq1_unknown_option_and_the_renamed_l2():
    with pytest.raises(ValueError, match="energy, energy_l2, norm_l2"):
        attention_map(F_ONE, "softmax")
    with pytest.raises(ValueError, match="renamed 'norm_l2'"):
        attention_map(F_ONE, "l2")


def test_eq3_block_sums_by_hand():
    bounds = region_bounds(4, 2)  # K=2: rows 0-1 and 2-3
    g = attention_map(F_ONE, "energy")[None, None]  # (1, 1, 4, 2)
    # energy: rows 0-1 sum to 1+1+0+4 = 6, rows 2-3 to 2+1+4+0 = 7
    assert torch.allclose(block_scores(g, bounds), torch.tensor([[[6 / 13, 7 / 13]]]))
    g = attention_map(F_ONE, "norm_l2")[None, None]
    # norm_l2: rows 0-1: 1+1+0+2 = 4, rows 2-3: sqrt2+1+2+0
    expected = torch.tensor([[[4., 3 + math.sqrt(2)]]]) / math.sqrt(13)
    assert torch.allclose(block_scores(g, bounds), expected)


def test_eq4_by_hand():
    s = torch.tensor([[[1., 2.], [3., 2.], [0., 4.]]])  # N=3, K=2; column sums 4 and 8
    expected = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.0, 0.5]]])
    S = normalize_scores(s)
    assert torch.allclose(S, expected)
    assert torch.allclose(S.sum(1), torch.ones(1, 2))


def test_eq4_columns_sum_to_one_random():
    s = torch.rand(5, 7, 4)
    assert torch.allclose(normalize_scores(s).sum(1), torch.ones(5, 4))


# Alg. 1 on N=3 frames, D=1, H=4, W=2, K=2 (regions: rows 0-1, rows 2-3)
FRAMES = torch.tensor([[[1., 1.], [1., 1.], [0., 0.], [0., 0.]],
                       [[2., 0.], [0., 0.], [1., 1.], [1., 1.]],
                       [[0., 0.], [0., 0.], [3., 0.], [0., 1.]]])[None, :, None]  # (B=1, N=3, D=1, H=4, W=2)
RAW = torch.tensor([[[2., 1.], [1., 1.], [1., 3.]]])          # s (Eq. 3), column sums 4 and 5
NORM = torch.tensor([[[0.5, 0.2], [0.25, 0.2], [0.25, 0.6]]])  # S = Eq. 4 of RAW


def test_alg1_f1_by_hand():
    # region 0: best frame 0 (0.5) -> its rows 0-1; region 1: best frame 2 (0.6) -> its rows 2-3
    f1, _ = fuse_maps(FRAMES, NORM, NORM, region_bounds(4, 2))
    assert torch.equal(f1[0, 0], torch.tensor([[1., 1.], [1., 1.], [3., 0.], [0., 1.]]))


def test_alg1_f2_normalized_by_hand():
    # rows 0-1: 0.5*f0 + 0.25*f1 + 0.25*f2 = [[0.5+0.5, 0.5], [0.5, 0.5]]
    # rows 2-3: 0.2*f0 + 0.2*f1 + 0.6*f2 = [[0.2+1.8, 0.2], [0.2, 0.2+0.6]]
    _, f2 = fuse_maps(FRAMES, NORM, NORM, region_bounds(4, 2))
    assert torch.allclose(f2[0, 0], torch.tensor([[1.0, 0.5], [0.5, 0.5], [2.0, 0.2], [0.2, 0.8]]))


def test_alg1_f2_raw_by_hand():
    # rows 0-1: 2*f0 + 1*f1 + 1*f2 = [[2+2, 2], [2, 2]]; rows 2-3: 1*f0 + 1*f1 + 3*f2 = [[1+9, 1], [1, 1+3]]
    _, f2 = fuse_maps(FRAMES, NORM, RAW, region_bounds(4, 2))
    assert torch.allclose(f2[0, 0], torch.tensor([[4., 2.], [2., 2.], [10., 1.], [1., 4.]]))


def test_eq2_remainder_rules_by_hand():
    assert region_bounds(16, 4) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert region_bounds(16, 8, "spread") == [(2 * k, 2 * k + 2) for k in range(8)]
    assert region_bounds(5, 2, "last") == [(0, 2), (2, 5)]
    assert region_bounds(5, 2, "spread") == [(0, 3), (3, 5)]
    assert region_bounds(7, 3, "last") == [(0, 2), (2, 4), (4, 7)]
    assert region_bounds(7, 3, "spread") == [(0, 3), (3, 5), (5, 7)]
    assert [len(t) for t in torch.arange(7).tensor_split(3)] == [3, 2, 2]  # "spread" is tensor_split's rule


def test_eq2_region_errors():
    with pytest.raises(ValueError, match="K=5"):
        region_bounds(4, 5)
    with pytest.raises(ValueError, match="last, spread"):
        region_bounds(4, 2, "middle")


def _pipeline(f, K, remainder="last", attention="energy"):
    bounds = region_bounds(f.shape[-2], K, remainder)
    s = block_scores(attention_map(f, attention), bounds)
    return s, normalize_scores(s), bounds


def test_alg1_identical_frames_f2_is_average_pooling():
    frame = torch.rand(2, 1, 8, 6, 3)
    f = frame.expand(-1, 5, -1, -1, -1)  # (B=2, N=5, D, H, W), all frames equal
    for attention in ("energy", "energy_l2", "norm_l2"):
        _, S, bounds = _pipeline(f, 3, attention=attention)
        assert torch.allclose(S, torch.full_like(S, 1 / 5))
        f1, f2 = fuse_maps(f, S, S, bounds)
        assert torch.allclose(f2, f.mean(1), atol=1e-6)
        assert torch.allclose(f1, frame[:, 0])


def test_eq3_eq4_zeroed_block_gets_zero_weight():
    f = torch.rand(1, 3, 4, 8, 2) + 0.1
    f[0, 1, :, 0:4] = 0  # frame 1, region 0 of K=2 (rows 0-3)
    for attention in ("energy", "energy_l2", "norm_l2"):
        s, S, _ = _pipeline(f, 2, attention=attention)
        assert s[0, 1, 0] == 0 and S[0, 1, 0] == 0
        assert (S[0, :, 1] > 0).all() and (S[0, [0, 2], 0] > 0).all()


@pytest.mark.parametrize("height,K,remainder", [(4, 2, "last"), (8, 4, "spread"), (5, 2, "last"), (5, 2, "spread"),
                                                (7, 3, "last"), (7, 3, "spread")])
def test_alg1_pooling_commutes_with_fusion(height, K, remainder):
    # GAP(F1), GAP(F2) from block sums == GAP of the maps Alg. 1 builds, equal and unequal region heights
    f = torch.rand(2, 3, 5, height, 3)
    s, S, bounds = _pipeline(f, K, remainder)
    for weights in (S, s):
        f1, f2 = fuse_maps(f, S, weights, bounds)
        x1, x2 = fuse_pooled(f, S, weights, bounds)
        assert torch.allclose(x1, f1.mean((-2, -1)), atol=1e-6)
        assert torch.allclose(x2, f2.mean((-2, -1)), atol=1e-6)


def test_eq4_alg1_gradient_flows_through_scores():
    f = (torch.rand(2, 3, 4, 8, 2) + 0.1).requires_grad_()
    probe = torch.randn(2, 4)

    def grad(detach):
        _, S, bounds = _pipeline(f, 2)
        S = S.detach() if detach else S
        _, x2 = fuse_pooled(f, S, S, bounds)
        return torch.autograd.grad((x2 * probe).sum(), f)[0]

    via_scores = grad(False) - grad(True)  # the part of d out / d f that goes through S
    assert via_scores.abs().sum() > 1e-4 and torch.isfinite(via_scores).all()
