"""Cluster-bootstrap intervals (core.evaluation.bootstrap) against slow references and scipy."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core.evaluation.bootstrap import (Estimate, bootstrap_values, ci_metrics, cluster_draws, interval, intervals,
                                       metric_name, paired_difference, query_values, seeds_interval)


def frame(pids, ranks, aps=None, queries=None) -> pd.DataFrame:
    ranks = np.asarray(ranks, dtype=float)
    aps = np.where(np.isnan(ranks), np.nan, 1.0 / ranks) if aps is None else np.asarray(aps, dtype=float)
    return pd.DataFrame({"query": np.arange(len(pids)) if queries is None else queries, "pid": pids,
                         "camid": 1, "first_match_rank": ranks, "ap": aps})


def random_frame(rng, n_ids=12, max_q=4) -> pd.DataFrame:
    pids = np.repeat(np.arange(100, 100 + n_ids), rng.integers(1, max_q + 1, n_ids))
    ranks = rng.integers(1, 30, len(pids)).astype(float)
    ranks[rng.random(len(pids)) < 0.1] = np.nan
    return frame(pids, ranks, np.where(np.isnan(ranks), np.nan, rng.random(len(pids))))


def reference_values(f: pd.DataFrame, metric: str, resamples: int, seed: int) -> np.ndarray:
    """Slow: per resample, list the queries of every drawn identity (with repeats) and average them."""
    valid = f[f["first_match_rank"].notna()]
    ids = np.unique(valid["pid"])
    picks = np.random.default_rng(seed).integers(0, len(ids), size=(resamples, len(ids)))  # cluster_draws' draw
    value = valid["ap"] if metric == "mAP" else valid["first_match_rank"] <= int(metric[1:])
    queries_of = {c: value[valid["pid"] == ids[c]].tolist() for c in range(len(ids))}
    return np.array([np.mean([v for c in row for v in queries_of[c]]) for row in picks])


def test_query_values_by_hand():
    f = frame([7, 7, 9, 9], [1, 6, np.nan, 12], [1.0, 0.5, np.nan, 0.25])
    v, p = query_values(f, "R5")
    assert v.tolist() == [1.0, 0.0, 0.0] and p.tolist() == [7, 7, 9]    # the NaN-rank query counts nowhere
    assert query_values(f, "R20")[0].tolist() == [1.0, 1.0, 1.0]
    assert query_values(f, "mAP")[0].tolist() == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="unknown metric 'R3'"):
        query_values(f, "R3")
    with pytest.raises(ValueError, match="no valid query among 1"):
        query_values(frame([1], [np.nan]), "R1")


def test_cluster_draws_count_each_resample():
    w = cluster_draws(5, 7, 3)
    assert w.shape == (7, 5) and (w.sum(1) == 5).all() and (w >= 0).all()
    picks = np.random.default_rng(3).integers(0, 5, size=(7, 5))
    assert all(np.array_equal(w[b], np.bincount(picks[b], minlength=5)) for b in range(7))
    with pytest.raises(ValueError, match="at least 1, got 0"):
        cluster_draws(5, 0, 3)


def test_ratio_of_a_resample_by_hand():
    # identity 7: R1 hits 1 of 2; identity 9: 1 of 1. Drawing 7 twice: 2/4; 9 twice: 2/2; once each: 2/3.
    f = frame([7, 7, 9], [1, 4, 1])
    w = cluster_draws(2, 50, 0)
    expected = {(2, 0): 0.5, (0, 2): 1.0, (1, 1): 2 / 3}
    got = bootstrap_values(f, "R1", 50, 0)
    assert all(got[b] == pytest.approx(expected[tuple(w[b])], abs=1e-15) for b in range(50))


@pytest.mark.parametrize("metric", ["R1", "R5", "mAP"])
def test_vectorised_bootstrap_equals_the_slow_loop(metric):
    f = random_frame(np.random.default_rng(1))
    np.testing.assert_allclose(bootstrap_values(f, metric, 60, 11), reference_values(f, metric, 60, 11),
                               rtol=0, atol=1e-12)


def test_interval_is_the_percentile_interval_of_the_resamples():
    f = random_frame(np.random.default_rng(2), n_ids=30)
    est = interval(f, "mAP", 400, 5)
    boot = reference_values(f, "mAP", 400, 5)
    assert (est.low, est.high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])), abs=1e-12)
    assert est.value == pytest.approx(f["ap"].mean(), abs=1e-12)      # NaN APs (no match) left out
    assert est.low <= est.value <= est.high


def test_one_query_per_identity_agrees_with_scipy():
    rng = np.random.default_rng(4)
    f = frame(np.arange(80), rng.integers(1, 8, 80))
    est = interval(f, "R1", 4000, 0)
    hits = (f["first_match_rank"] <= 1).to_numpy(float)
    ref = stats.bootstrap((hits,), np.mean, n_resamples=4000, method="percentile", rng=np.random.default_rng(9))
    assert est.low == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert est.high == pytest.approx(ref.confidence_interval.high, abs=0.02)


def test_clustered_queries_give_a_wider_interval_than_independent_ones():
    # 40 identities of 5 queries each, all hits or all misses per identity: 40 effective samples, not 200
    pids = np.repeat(np.arange(40), 5)
    ranks = np.where(np.repeat(np.arange(40) % 2 == 0, 5), 1.0, 9.0)
    clustered = interval(frame(pids, ranks), "R1", 2000, 0)
    independent = interval(frame(np.arange(200), ranks), "R1", 2000, 0)
    assert clustered.value == independent.value == 0.5
    assert clustered.high - clustered.low > 1.8 * (independent.high - independent.low)


def test_paired_difference_against_a_slow_loop():
    rng = np.random.default_rng(6)
    a = random_frame(rng, n_ids=15)
    b = a.assign(first_match_rank=np.where(a["first_match_rank"].notna(),
                                           np.maximum(1, a["first_match_rank"] - rng.integers(0, 6, len(a))), np.nan))
    est = paired_difference(b, a, "R5", 300, 8)
    boot = reference_values(b, "R5", 300, 8) - reference_values(a, "R5", 300, 8)   # the same identity draws
    assert (est.low, est.high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])), abs=1e-12)
    assert est.value == pytest.approx(query_values(b, "R5")[0].mean() - query_values(a, "R5")[0].mean())
    same = paired_difference(a, a, "mAP", 300, 8)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)


def test_pairing_removes_the_noise_both_rows_share():
    rng = np.random.default_rng(7)
    a = frame(np.repeat(np.arange(50), 3), rng.integers(1, 4, 150))
    better = np.flatnonzero(a["first_match_rank"] == 2)[:8]             # b: 8 rank-2 queries moved to rank 1
    b = a.copy()
    b.loc[better, "first_match_rank"] = 1.0
    paired = paired_difference(b, a, "R1", 1000, 0)
    each = [interval(f, "R1", 1000, 0) for f in (a, b)]
    assert paired.value == pytest.approx(len(better) / 150) and paired.low > 0
    # an unpaired comparison would see the two rows' query noise: intervals that overlap, a difference not shown
    assert each[1].low < each[0].high
    assert paired.high - paired.low < each[0].high - each[0].low


def test_rows_on_different_queries_are_refused():
    a = frame([1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match=r"different valid queries \(3 vs 2\)"):
        paired_difference(frame([1, 2, 3], [1, 2, np.nan]), a, "R1", 10, 0)


def test_seeds_interval():
    f = random_frame(np.random.default_rng(8), n_ids=20)
    one = interval(f, "mAP", 500, 3)
    assert seeds_interval([f], "mAP", 500, 3) == one
    same = seeds_interval([f, f.copy()], "mAP", 500, 3)                # identical seeds: nothing to add
    assert (same.value, same.low, same.high) == pytest.approx((one.value, one.low, one.high), abs=1e-12)
    g = f.assign(ap=f["ap"] * 0.5)
    both = seeds_interval([f, g], "mAP", 500, 3)
    assert both.value == pytest.approx((f["ap"].mean() + g["ap"].mean()) / 2)
    # seed variation widens the interval beyond the query variation of the mean run
    mean_run = interval(f.assign(ap=f["ap"] * 0.75), "mAP", 500, 3)
    assert both.high - both.low > mean_run.high - mean_run.low


def test_ci_metrics_names_and_values():
    f = random_frame(np.random.default_rng(9))
    per_query = pd.concat([f.assign(protocol="headline", reranked=False), f.assign(protocol="gao", reranked=False),
                           f.assign(protocol="headline", reranked=True)])
    out = ci_metrics(per_query, 100, 0)
    assert len(out) == 3 * 5 * 2
    assert {"R1_ci_low", "gao_mAP_ci_high", "rerank_R20_ci_low"} <= set(out)
    est = intervals(f, 100, 0)["R10"]
    assert (out["gao_R10_ci_low"], out["gao_R10_ci_high"]) == (est.low, est.high)
    assert metric_name("official", True, "mAP") == "official_rerank_mAP"
    assert isinstance(est, Estimate)
