"""k-reciprocal re-ranking: the fast torch path against the release-style numpy reference, and a case worked out
by hand (neighbour sets, V, Jaccard distances, k2 on and off)."""
import numpy as np
import pytest
import torch

from core.evaluation import k_reciprocal_rerank, k_reciprocal_rerank_reference
from core.evaluation.rerank import _expanded_sets, nearest


def _clusters(seed, m, n, d=32, ids=20, noise=0.3):
    """Identity-structured features: centre of a random identity + Gaussian noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, d))
    q = centres[rng.integers(0, ids, m)] + noise * rng.standard_normal((m, d))
    g = centres[rng.integers(0, ids, n)] + noise * rng.standard_normal((n, d))
    return q.astype(np.float32), g.astype(np.float32)


@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (5, 3, 0.3), (7, 1, 0.5), (4, 2, 0.0), (9, 12, 0.8)])
def test_fast_matches_reference(k1, k2, lam):
    for seed, (q, g) in enumerate([_clusters(0, 40, 160), _clusters(1, 40, 160, d=8, noise=1.0)]):
        fast = k_reciprocal_rerank(q, g, k1, k2, lam, device="cpu")
        ref = k_reciprocal_rerank_reference(q, g, k1, k2, lam)
        assert fast.dtype == np.float32 and fast.shape == (40, 160)
        assert np.abs(fast - ref).max() < 1e-5, (seed, np.abs(fast - ref).max())


def test_exact_ties_resolved_alike():
    # integer features in 3-d: many exactly equal distances, also at the k1+1 boundary
    rng = np.random.default_rng(3)
    q, g = rng.integers(0, 3, (30, 3)).astype(np.float32), rng.integers(0, 3, (120, 3)).astype(np.float32)
    for k1, k2 in [(20, 6), (5, 3)]:
        fast = k_reciprocal_rerank(q, g, k1, k2, 0.3, device="cpu", chunk=16)
        assert np.abs(fast - k_reciprocal_rerank_reference(q, g, k1, k2, 0.3)).max() < 1e-5


def test_nearest_is_stable_argsort_prefix():
    dist = torch.from_numpy(np.random.default_rng(4).integers(0, 5, (64, 40)).astype(np.float32))
    for k in (1, 7, 21, 40):
        expected = np.argsort(dist.numpy(), axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(nearest(dist, k, chunk=10).numpy(), expected)


def test_lambda_one_is_normalised_original_distance():
    # final = original distance: d(i, j)^2 / max_k d(i, k)^2 over all m+n items (the release squares)
    q, g = _clusters(5, 10, 50)
    x = np.concatenate([q, g]).astype(np.float64)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    expected = (d2 / d2.max(axis=1, keepdims=True))[:10, 10:]
    np.testing.assert_allclose(k_reciprocal_rerank(q, g, lambda_value=1.0), expected, atol=1e-5)


def test_rerank_eq10_jaccard_part_is_a_distance_in_unit_interval():
    q, g = _clusters(6, 20, 80)
    jac = k_reciprocal_rerank(q, g, lambda_value=0.0)
    assert jac.min() >= 0 and jac.max() <= 1
    # a gallery copy of query 0 shares its whole neighbourhood: nearly zero Jaccard distance
    jac = k_reciprocal_rerank(q, np.concatenate([q[:1], g]), lambda_value=0.0)
    assert jac[0, 0] < 0.1 and jac[0, 0] == jac[0].min()


def test_inputs_and_default_device():
    q, g = _clusters(7, 15, 60)
    a = k_reciprocal_rerank(q, g, 6, 3)
    b = k_reciprocal_rerank(torch.from_numpy(q), torch.from_numpy(g), 6, 3, device="cpu")
    if not torch.cuda.is_available():                          # None means the CPU path here
        np.testing.assert_array_equal(a, b)
    assert np.abs(b - k_reciprocal_rerank_reference(torch.from_numpy(q), g, 6, 3)).max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference_with_cuda_distances():
    q, g = _clusters(8, 40, 160)
    fast = k_reciprocal_rerank(q, g, device="cuda")
    ref = k_reciprocal_rerank_reference(q, g, device="cuda")   # same distances, numpy steps on CPU
    assert np.abs(fast - ref).max() < 1e-5
    np.testing.assert_array_equal(k_reciprocal_rerank(q, g, device="cuda"), fast)  # no atomics: same bits again
    assert not torch.are_deterministic_algorithms_enabled()    # the mode is switched on only inside the sums


# ---- a case worked out by hand -------------------------------------------------------------------------------
# 1-D features, items in the order the code stacks them (queries first):
#   item   0    1    2    3    4    5
#   name   q0   q1   g0   g1   g2   g3
#   x      0    10   1    4    11   23
# k1 = 2 (k1 + 1 = 3 nearest), round(k1 / 2) = 1 (2 nearest), lambda = 0 (the Jaccard part alone) unless said.
X = [0.0, 10.0, 1.0, 4.0, 11.0, 23.0]


def _hand_original() -> np.ndarray:
    # step 1: d(i, j)^2 / max_k d(i, k)^2; the row maxima of d^2 are 23^2 = 529 (x = 0), 13^2 = 169 (x = 10),
    # 22^2 = 484 (x = 1), 19^2 = 361 (x = 4), 12^2 = 144 (x = 11), 23^2 = 529 (x = 23)
    d2 = np.array([[(a - b) ** 2 for b in X] for a in X])
    return d2 / np.array([529, 169, 484, 361, 144, 529])[:, None]


def _normalised(weights: dict) -> dict:
    total = sum(weights.values())
    return {j: w / total for j, w in weights.items()}


def _mean(*rows: dict) -> dict:
    out: dict = {}
    for row in rows:
        for j, v in row.items():
            out[j] = out.get(j, 0.0) + v / len(rows)
    return out


def _jaccard(a: dict, b: dict) -> float:
    # Eq. 10: 1 - sum_j min(a_j, b_j) / sum_j max(a_j, b_j)
    cols = set(a) | set(b)
    return 1 - sum(min(a.get(j, 0), b.get(j, 0)) for j in cols) / sum(max(a.get(j, 0), b.get(j, 0)) for j in cols)


def test_rerank_eq9_neighbour_sets_by_hand():
    orig = torch.tensor(_hand_original(), dtype=torch.float32)
    ranked = nearest(orig, 3)
    # step 2, by |x_i - x_j|: q0 (0): self, g0 (1), g1 (4) | q1 (10): self, g2 (1), g1 (6) | g0 (1): self, q0 (1),
    # g1 (3) | g1 (4): self, g0 (3), q0 (4) | g2 (11): self, q1 (1), g1 (7) | g3 (23): self, g2 (12), q1 (13)
    assert ranked.tolist() == [[0, 2, 3], [1, 4, 3], [2, 0, 3], [3, 2, 0], [4, 1, 3], [5, 4, 1]]
    rows, cols = _expanded_sets(ranked, ranked[:, :2], chunk=4)
    found = {i: {int(c) for r, c in zip(rows, cols) if r == i} for i in range(6)}
    # step 3, R(i, 2) = {j in the 3 nearest of i, with i in the 3 nearest of j}:
    #   q1: g1 is among its 3 nearest, but g1's are {g1, g0, q0}: dropped -> {q1, g2}
    #   g2: likewise g1 dropped -> {q1, g2};  g3: neither g2 (nearest g2, q1, g1) nor q1 lists g3 -> {g3}
    # step 4, R(c, 1) from the 2 nearest: q0 {q0, g0}, q1 {q1, g2}, g0 {g0, q0}, g1 {g1}, g2 {g2, q1}, g3 {g3};
    #   each lies inside the R(i, 2) of every i holding c, so the expansion adds nothing here
    assert found == {0: {0, 2, 3}, 1: {1, 4}, 2: {0, 2, 3}, 3: {0, 2, 3}, 4: {1, 4}, 5: {5}}


def _hand_v() -> dict:
    # step 5: V[i, j] = exp(-orig[i, j]) over the set of i, normalised to sum 1 (orig values of _hand_original)
    e = np.exp
    return {0: _normalised({0: 1.0, 2: e(-1 / 529), 3: e(-16 / 529)}),   # ~ {0: .3369, 2: .3363, 3: .3269}
            1: _normalised({1: 1.0, 4: e(-1 / 169)}),                    # ~ {1: .5015, 4: .4985}
            2: _normalised({0: e(-1 / 484), 2: 1.0, 3: e(-9 / 484)}),    # ~ {0: .3349, 2: .3356, 3: .3294}
            3: _normalised({0: e(-16 / 361), 2: e(-9 / 361), 3: 1.0}),   # ~ {0: .3263, 2: .3327, 3: .3411}
            4: _normalised({1: e(-1 / 144), 4: 1.0}),                    # ~ {1: .4983, 4: .5017}
            5: {5: 1.0}}


def test_rerank_eq7_eq10_eq11_jaccard_by_hand():
    q, g = np.array(X[:2], np.float32)[:, None], np.array(X[2:], np.float32)[:, None]
    v = _hand_v()
    # k2 = 1 (no step 6): disjoint sets give 1; q0-g0 and q0-g1 share {q0, g0, g1}, q1-g2 shares {q1, g2}
    expected = np.array([[_jaccard(v[i], v[j]) for j in (2, 3, 4, 5)] for i in (0, 1)])
    assert expected[0, 2:].tolist() == [1.0, 1.0] and expected[1].tolist()[:2] == [1.0, 1.0] and expected[1, 3] == 1
    assert 0 < expected[0, 0] < expected[0, 1] < 0.05                    # ~ 0.0052 and 0.0280
    off = k_reciprocal_rerank(q, g, k1=2, k2=1, lambda_value=0.0, device="cpu")
    np.testing.assert_allclose(off, expected, atol=1e-6)
    # k2 = 2 (step 6): V'[i] = mean of V over i's 2 nearest: V'q0 = V'g0 = (Vq0 + Vg0) / 2, V'q1 = V'g2 =
    # (Vq1 + Vg2) / 2, V'g1 = (Vg1 + Vg0) / 2, V'g3 = (Vg3 + Vg2) / 2 = {g3: 1/2, q1: Vg2[q1]/2, g2: Vg2[g2]/2}
    w = {i: _mean(v[i], v[j]) for i, j in ((0, 2), (1, 4), (2, 0), (3, 2), (4, 1), (5, 4))}
    expected_on = np.array([[_jaccard(w[i], w[j]) for j in (2, 3, 4, 5)] for i in (0, 1)])
    on = k_reciprocal_rerank(q, g, k1=2, k2=2, lambda_value=0.0, device="cpu")
    np.testing.assert_allclose(on, expected_on, atol=1e-6)
    # what query expansion changed: equal vectors give 0 (q0-g0, q1-g2); q1-g3 now shares q1 and g2, where
    # min(V'q1, V'g3) is V'g3's half of Vg2, so t = (Vg2[q1] + Vg2[g2]) / 2 = 1/2 and 1 - t / (2 - t) = 2/3
    assert abs(on[0, 0]) < 1e-6 and abs(on[1, 2]) < 1e-6 and off[0, 0] > 0.005 and off[1, 2] > 0.006
    assert off[1, 3] == 1.0 and abs(on[1, 3] - 2 / 3) < 1e-6
    # step 8 with lambda = 0.3: 0.7 * Jaccard + 0.3 * orig[query row, gallery column]
    mixed = k_reciprocal_rerank(q, g, k1=2, k2=2, lambda_value=0.3, device="cpu")
    np.testing.assert_allclose(mixed, 0.7 * expected_on + 0.3 * _hand_original()[:2, 2:], atol=1e-6)


def test_query_columns_match_reference_and_gallery_columns_are_unchanged():
    q, g = _clusters(5, 20, 80)
    full = k_reciprocal_rerank(q, g, 6, 3, 0.3, device="cpu", include_queries=True)
    assert full.shape == (20, 100)
    assert np.abs(full - k_reciprocal_rerank_reference(q, g, 6, 3, 0.3, include_queries=True)).max() < 1e-5
    assert np.array_equal(full[:, 20:], k_reciprocal_rerank(q, g, 6, 3, 0.3, device="cpu"))
    assert np.allclose(np.diagonal(full[:, :20]), 0.0, atol=1e-6)  # a query to itself: Jaccard 0, distance 0
