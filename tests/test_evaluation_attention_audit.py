"""core.evaluation.attention_audit (issue 14): uniformity by hand, the fast pair counts against explicit loops, the
AUC intervals (core.evaluation.bootstrap.ratio_interval, paired_ratio_difference)."""
import numpy as np
import pytest

from core.evaluation import attention_audit as aa
from core.evaluation.bootstrap import paired_ratio_difference, ratio_interval


def test_uniform_scores_deviate_by_0_and_have_entropy_1():
    out = aa.uniformity(np.full((3, 4, 2), 0.25))
    assert out == {"dev_uniform": 0.0, "entropy": pytest.approx(1.0)}


def test_one_hot_scores_give_the_known_values():
    # N = 4 frames, K = 2 regions, the first frame takes everything: |1 - 1/4| + 3 |0 - 1/4| = 1.5 over 4 frames
    s = np.zeros((1, 4, 2))
    s[0, 0] = 1.0
    assert aa.uniformity(s) == {"dev_uniform": pytest.approx(2 * 3 / 16), "entropy": 0.0}
    # half and half in one region (entropy log 2 / log 4 = 0.5), uniform in the other (1): mean 0.75
    s = np.array([[[0.5, 0.25], [0.5, 0.25], [0.0, 0.25], [0.0, 0.25]]])
    assert aa.uniformity(s) == {"dev_uniform": pytest.approx(4 * 0.25 / 8), "entropy": pytest.approx(0.75)}


def test_one_frame_has_no_entropy():
    assert np.isnan(aa.uniformity(np.ones((2, 1, 3)))["entropy"])


def test_labels_follow_the_threshold():
    f = np.array([0.0, 1e-9, 0.49, 0.5, 1.0])
    assert aa.occlusion_labels(f, 0.5).tolist() == [aa.CLEAN, 0, 0, aa.OCCLUDED, aa.OCCLUDED]
    with pytest.raises(ValueError, match="threshold must be in"):
        aa.occlusion_labels(f, 0.0)


def test_a_hand_counted_clip():
    # one clip, 3 frames, 1 region: clean 0.4 and 0.3, occluded 0.3 -> 1 win + 1 tie of 2 pairs: AUC 0.75
    wins, pairs = aa.region_pairs(np.array([[[0.4], [0.3], [0.3]]]), np.array([[[0.0], [0.0], [0.7]]]), 0.5)
    assert wins.tolist() == [[1.5]] and pairs.tolist() == [[2.0]]
    # nothing clean-and-occluded (fractions between 0 and the threshold): no pairs
    wins, pairs = aa.region_pairs(np.full((2, 3, 2), 1 / 3), np.full((2, 3, 2), 0.2), 0.5)
    assert not wins.any() and not pairs.any() and pairs.shape == (2, 2)


def _slow_pairs(values, labels, groups, num_groups):
    wins, pairs = np.zeros(num_groups), np.zeros(num_groups)
    for i in range(len(values)):
        for j in range(len(values)):
            if groups[i] == groups[j] and labels[i] == aa.CLEAN and labels[j] == aa.OCCLUDED:
                pairs[groups[i]] += 1
                wins[groups[i]] += 1.0 if values[i] > values[j] else 0.5 if values[i] == values[j] else 0.0
    return wins, pairs


@pytest.mark.parametrize("seed", range(4))
def test_fast_pair_counts_equal_explicit_loops_on_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    c, n, k, h, w = 7, 5, 3, 3, 2
    scores = rng.integers(0, 4, (c, n, k)) / 8                 # few distinct values: many ties
    fractions = rng.choice([0.0, 0.0, 0.3, 0.5, 1.0], (c, n, k))
    wins, pairs = aa.region_pairs(scores, fractions, 0.5)
    labels = aa.occlusion_labels(fractions, 0.5)
    groups = np.arange(c)[:, None, None] * k + np.arange(k) + np.zeros((1, n, 1), int)
    slow = _slow_pairs(scores.ravel(), labels.ravel(), groups.ravel(), c * k)
    assert np.array_equal(wins.ravel(), slow[0]) and np.array_equal(pairs.ravel(), slow[1])
    maps = rng.integers(0, 3, (c, n, h, w)) / 6
    cells = rng.choice([0.0, 0.2, 0.6], (c, n, h, w))
    mw, mp = aa.map_pairs(maps, cells, 0.5)
    frame = np.broadcast_to(np.arange(c * n).reshape(c, n, 1, 1), maps.shape)
    slow = _slow_pairs(maps.ravel(), aa.occlusion_labels(cells, 0.5).ravel(), frame.ravel(), c * n)
    assert np.array_equal(mw, slow[0].reshape(c, n).sum(1)) and np.array_equal(mp, slow[1].reshape(c, n).sum(1))


def test_auc_metrics_pool_regions_and_name_them():
    wins = np.array([[2.0, 0.0], [1.0, 1.0]])
    pairs = np.array([[2.0, 0.0], [2.0, 4.0]])
    out = aa.auc_metrics("attn_auc_region", wins, pairs, np.array([1, 2]), 50, 0)
    assert out["attn_auc_region"] == pytest.approx(4 / 8)
    assert out["attn_auc_region_k1"] == pytest.approx(3 / 4) and out["attn_auc_region_k2"] == pytest.approx(1 / 4)
    assert out["attn_auc_region_ci_low"] <= 0.5 <= out["attn_auc_region_ci_high"]


def test_ratio_interval_resamples_clusters_whole():
    # two observations of one cluster: the cluster is drawn whole, so the ratio never changes
    est = ratio_interval(np.array([1.0, 3.0]), np.array([2.0, 2.0]), np.array([7, 7]), 100, 0)
    assert (est.value, est.low, est.high) == (1.0, 1.0, 1.0)
    est = ratio_interval(np.array([0.0, 2.0]), np.array([2.0, 2.0]), np.array([1, 2]), 400, 0)
    assert est.value == 0.5 and est.low == 0.0 and est.high == 1.0
    assert np.isnan(ratio_interval(np.zeros(2), np.zeros(2), np.array([1, 2]), 10, 0).value)


def test_paired_difference_of_a_ratio_with_itself_is_exactly_0():
    rng = np.random.default_rng(0)
    num, den, clusters = rng.random(20), rng.random(20) + 1, rng.integers(0, 5, 20)
    est = paired_ratio_difference(num, den, num, den, clusters, 200, 0)
    assert (est.value, est.low, est.high) == (0.0, 0.0, 0.0)
    shifted = paired_ratio_difference(num + den * 0.1, den, num, den, clusters, 200, 0)
    assert shifted.value == pytest.approx(0.1) and shifted.low == pytest.approx(0.1)
