"""k-reciprocal re-ranking: the fast torch path against the release-style numpy reference."""
import numpy as np
import pytest
import torch

from core.evaluation import k_reciprocal_rerank, k_reciprocal_rerank_reference
from core.evaluation.rerank import nearest


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


def test_jaccard_part_is_a_distance_in_unit_interval():
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


def test_query_columns_match_reference_and_gallery_columns_are_unchanged():
    q, g = _clusters(5, 20, 80)
    full = k_reciprocal_rerank(q, g, 6, 3, 0.3, device="cpu", include_queries=True)
    assert full.shape == (20, 100)
    assert np.abs(full - k_reciprocal_rerank_reference(q, g, 6, 3, 0.3, include_queries=True)).max() < 1e-5
    assert np.array_equal(full[:, 20:], k_reciprocal_rerank(q, g, 6, 3, 0.3, device="cpu"))
    assert np.allclose(np.diagonal(full[:, :20]), 0.0, atol=1e-6)  # a query to itself: Jaccard 0, distance 0
