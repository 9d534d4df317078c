"""CMC / mAP (MARS protocol, both AP rules) and distances, against hand values and the reference loop; non-finite
distances (a diverged model) are refused."""
import numpy as np
import pytest
import torch

from core.evaluation import evaluate, evaluate_reference, pairwise_distance, self_euclidean

# One query per row. Gallery: (pid, camid) and each query's distances, hand-ranked in the comments.
G_PIDS = np.array([1, 1, -1, 0, 1, 2])
G_CAMS = np.array([1, 2, 3, 2, 3, 2])
Q_PIDS = np.array([1, 2, 3])
Q_CAMS = np.array([1, 1, 1])
DIST = np.array([
    # q0 (pid 1, cam 1): g0 ignored (same pid+cam), g1 hit @1, g2 junk, g3 distractor @2, g4 hit @3, g5 @4
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    # q1 (pid 2): g2 junk; kept order g0 g1 g3 g4 g5 -> hit at rank 5
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    # q2 (pid 3): no match anywhere -> skipped
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
])


@pytest.mark.parametrize("ap_rule, ap0, ap1", [
    ("step", 5 / 6, 1 / 5),               # (1/1 + 2/3)/2 ; 1/5
    ("trapezoid", 19 / 24, 1 / 10),       # ((1+1)/2 + (1/2+2/3)/2)/2 ; (0/4 + 1/5)/2
])
def test_hand_example(ap_rule, ap0, ap1):
    r = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5, ap_rule=ap_rule)
    np.testing.assert_allclose(r["cmc"], [0.5, 0.5, 0.5, 0.5, 1.0])
    assert r["num_valid"] == 2 and r["num_skipped"] == 1
    assert r["mAP"] == pytest.approx((ap0 + ap1) / 2, abs=1e-12)
    np.testing.assert_allclose(r["AP"][:2], [ap0, ap1], atol=1e-12)
    assert np.isnan(r["AP"][2])
    np.testing.assert_array_equal(r["first_match_rank"], [1.0, 5.0, np.nan])   # ranks among kept items
    assert r["first_match_rank"].dtype == np.float64
    assert r["R1"] == 0.5 and r["R5"] == 1.0 and "R10" not in r and "R20" not in r
    ref = evaluate_reference(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5, ap_rule=ap_rule)
    np.testing.assert_array_equal(ref["cmc"], r["cmc"])
    np.testing.assert_array_equal(ref["first_match_rank"], r["first_match_rank"])
    assert ref["mAP"] == pytest.approx(r["mAP"], abs=1e-12)


@pytest.mark.parametrize("ap_rule, ap", [("step", 0.5), ("trapezoid", 0.25)])
def test_ties_broken_by_gallery_index(ap_rule, ap):
    # g0 (wrong id) and g1 (match) at equal distance: g0 ranks first, the match is at rank 2
    dist = np.array([[0.3, 0.3, 0.9]])
    r = evaluate(dist, [5], [6, 5, 7], [1], [2, 2, 2], max_rank=3, ap_rule=ap_rule)
    np.testing.assert_array_equal(r["cmc"], [0.0, 1.0, 1.0])
    assert r["first_match_rank"].tolist() == [2.0]
    assert r["mAP"] == pytest.approx(ap)


def _random_problem(seed, num_q=30, num_g=200, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, 12, num_q)
    q_pids[:3] = 99                                      # identities absent from the gallery: skipped
    g_pids = rng.integers(-1, 12, num_g)                 # includes junk (-1) and distractors (0)
    q_cams, g_cams = rng.integers(1, 4, num_q), rng.integers(1, 4, num_g)
    dist = np.round(rng.random((num_q, num_g)), 1).astype(dtype)  # 11 values: many ties
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("ap_rule", ["trapezoid", "step"])
@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_reference_loop(ap_rule, as_torch, dtype):
    for seed in range(3):
        args = _random_problem(seed, dtype=dtype)
        ref = evaluate_reference(*args, max_rank=20, ap_rule=ap_rule)
        if as_torch:
            args = tuple(torch.from_numpy(a) for a in args)
        fast = evaluate(*args, max_rank=20, ap_rule=ap_rule, chunk=7)
        assert fast["num_skipped"] >= 3 and fast["num_skipped"] == ref["num_skipped"]
        assert fast["num_valid"] == ref["num_valid"]
        np.testing.assert_array_equal(fast["cmc"], ref["cmc"])
        np.testing.assert_array_equal(fast["first_match_rank"], ref["first_match_rank"])  # NaN where skipped
        valid = ~np.isnan(fast["first_match_rank"])
        assert valid.sum() == fast["num_valid"] and np.isnan(fast["AP"][~valid]).all()
        per_query_cmc = (fast["first_match_rank"][valid, None] <= np.arange(1, 21)).mean(0)
        np.testing.assert_allclose(per_query_cmc, fast["cmc"], atol=1e-12)   # the CMC is the mean of rank <= r
        np.testing.assert_allclose(fast["AP"], ref["AP"], atol=1e-12)   # NaN where skipped, in both
        assert fast["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
        for k in ("R1", "R5", "R10", "R20"):
            assert fast[k] == ref[k]


def test_rules_differ_and_are_bounded():
    args = _random_problem(7)
    step = evaluate(*args, ap_rule="step")
    trap = evaluate(*args, ap_rule="trapezoid")
    assert 0 < trap["mAP"] < 1 and 0 < step["mAP"] < 1 and trap["mAP"] != step["mAP"]
    assert np.all(np.diff(step["cmc"]) >= 0) and step["cmc"][-1] <= 1


def test_errors():
    with pytest.raises(ValueError, match="ap_rule"):
        evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, ap_rule="11point")
    with pytest.raises(ValueError, match="no query"):
        evaluate(DIST[2:], Q_PIDS[2:], G_PIDS, Q_CAMS[2:], G_CAMS)
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(np.zeros((2, 3)), np.zeros((2, 3)), metric="manhattan")


def test_distances_against_direct_formula():
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((7, 16)), rng.standard_normal((11, 16))
    euclid = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    cosine = 1 - (q @ g.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(g, axis=1)[None, :]
    for chunk in (3, 2048):
        np.testing.assert_allclose(pairwise_distance(q, g, chunk=chunk).numpy(), euclid, rtol=1e-5, atol=1e-5)
        d = pairwise_distance(torch.from_numpy(q), torch.from_numpy(g), metric="cosine", chunk=chunk)
        assert d.dtype == torch.float32 and d.shape == (7, 11)
        np.testing.assert_allclose(d.numpy(), cosine, atol=1e-5)
    assert pairwise_distance(q, q).diagonal().abs().max() < 1e-2   # clamp before sqrt: no NaN
    assert not torch.isnan(pairwise_distance(q, q)).any()


def test_self_euclidean_symmetric_zero_diagonal():
    x = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    d = self_euclidean(x, block=16)
    assert torch.equal(d, d.T) and torch.all(d.diagonal() == 0)
    direct = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(d.numpy(), direct, rtol=1e-4, atol=1e-4)


def test_evaluate_refuses_non_finite_distances():
    dist = np.arange(12, dtype=np.float32).reshape(3, 4)
    dist[0, 1], dist[2, 3], dist[1, 0] = np.nan, np.inf, -np.inf
    pids, cams = np.array([1, 2, 3]), np.array([1, 1, 1])
    with pytest.raises(FloatingPointError, match=r"\(3 x 4\) has 3 non-finite entries"):
        evaluate(dist, pids, np.array([1, 2, 3, 4]), cams, np.array([2, 2, 2, 2]))
