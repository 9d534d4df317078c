"""Chance level of a split (core.evaluation.chance): the closed forms against hand-computed fractions, against the
exhaustive average of ``evaluate`` over every ranking of a small gallery (junk, same-camera and skipped queries
included), against a Monte-Carlo estimate, and as logged by ``score_protocols`` under both protocols."""
import itertools
import math
from fractions import Fraction as F

import numpy as np
import pytest

from core import protocols
from core.evaluation import evaluate, score_protocols
from core.evaluation.chance import chance_level, expected_ap, expected_cmc, match_counts
from tests.test_evaluation_metrics import G_CAMS, G_PIDS, Q_CAMS, Q_PIDS
from tests.test_evaluation_scoring import CAMS, FEATS, G_ROWS, PIDS, Q_ROWS


def _harmonic(n: int) -> F:
    return sum((F(1, k) for k in range(1, n + 1)), F(0))


def test_closed_forms_by_hand_n2_of_3():
    # 3 equally likely placements of 2 matches among 3 items: {1,2}, {1,3}, {2,3}
    #   step AP:      1, (1 + 2/3)/2 = 5/6, (1/2 + 2/3)/2 = 7/12            -> mean 29/36
    #   trapezoid AP: 1, ((1+1)/2 + (1/2 + 2/3)/2)/2 = 19/24,
    #                 ((0 + 1/2)/2 + (1/2 + 2/3)/2)/2 = 5/12                -> mean 53/72
    assert expected_ap([2], [3], "step")[0] == pytest.approx(float(F(29, 36)), abs=1e-15)
    assert expected_ap([2], [3], "trapezoid")[0] == pytest.approx(float(F(53, 72)), abs=1e-15)
    np.testing.assert_allclose(expected_cmc([2], [3], 4)[0], [2 / 3, 1, 1, 1], atol=1e-15)


@pytest.mark.parametrize("big_n", [1, 2, 5, 17])
def test_closed_forms_limits(big_n):
    # one match: E[AP_step] = E[1/r] = H_N / N; every item a match: AP = 1 under both rules
    assert expected_ap([1], [big_n], "step")[0] == pytest.approx(float(_harmonic(big_n) / big_n), abs=1e-14)
    for rule in ("step", "trapezoid"):
        assert expected_ap([big_n], [big_n], rule)[0] == pytest.approx(1.0, abs=1e-14)
    assert expected_cmc([1], [big_n], 20)[0][-1] == pytest.approx(1.0)                 # rank >= N: found
    assert expected_cmc([1], [big_n], 1)[0][0] == pytest.approx(1 / big_n)


@pytest.mark.parametrize("n, big_n", [(1, 4), (2, 4), (3, 5), (2, 6)])
def test_expected_ap_equals_the_average_over_every_placement(n, big_n):
    """E[AP] = the mean of evaluate()'s AP over all C(N, n) placements of the matches (both rules)."""
    for rule in ("step", "trapezoid"):
        aps = []
        for hits in itertools.combinations(range(big_n), n):
            g_pids = np.where(np.isin(np.arange(big_n), hits), 1, 2)
            aps.append(evaluate(np.arange(big_n, dtype=np.float64)[None], [1], g_pids, [0], np.ones(big_n),
                                max_rank=big_n, ap_rule=rule)["mAP"])
        assert len(aps) == math.comb(big_n, n)
        assert expected_ap([n], [big_n], rule)[0] == pytest.approx(np.mean(aps), abs=1e-13)


def test_chance_level_of_the_hand_split():
    """tests/test_evaluation_metrics.py's split: q0 (pid 1, cam 1) keeps g1 g3 g4 g5 (g0 same identity and camera, g2
    junk): N = 4, n = 2; q1 (pid 2) keeps g0 g1 g3 g4 g5: N = 5, n = 1; q2 has no match: skipped.
      R1  = (2/4 + 1/5) / 2                                     = 7/20
      R2  = ((1 - C(2,2)/C(4,2)) + (1 - C(4,2)/C(5,2))) / 2     = (5/6 + 2/5) / 2 = 37/60
      step AP: q0 = H4/4 + (4 - H4)/12 = 25/48 + 23/144 = 49/72;  q1 = H5/5 = 137/300
      trapezoid AP: q0 = (49/72 + 2/4)/2 = 85/144;  q1 = (137/300 + 1/5)/2 = 197/600"""
    n, big_n = match_counts(Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    assert n.tolist() == [2, 1, 0] and big_n.tolist() == [4, 5, 5]
    step = chance_level(Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, "step", max_rank=5)
    trap = chance_level(Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, "trapezoid", max_rank=5)
    assert step["num_valid"] == 2
    assert step["R1"] == pytest.approx(7 / 20, abs=1e-15) and step["R5"] == pytest.approx(1.0)
    assert step["cmc"][1] == pytest.approx(37 / 60, abs=1e-15)
    assert step["mAP"] == pytest.approx(float((F(49, 72) + F(137, 300)) / 2), abs=1e-15)
    assert trap["mAP"] == pytest.approx(float((F(85, 144) + F(197, 600)) / 2), abs=1e-15)
    np.testing.assert_array_equal(trap["cmc"], step["cmc"])              # the AP rule changes only the mAP


@pytest.mark.parametrize("rule", ["step", "trapezoid"])
def test_chance_level_equals_evaluate_averaged_over_every_ranking(rule):
    """The same split, all 6! = 720 orders of the gallery: evaluate()'s mean CMC and mAP are the chance level
    (the junk, same-camera and no-match rules applied by evaluate itself)."""
    perms = np.array(list(itertools.permutations(range(6))), dtype=np.float64)       # [720, 6]
    dist = np.repeat(perms, len(Q_PIDS), axis=0)                                     # every query, every order
    tile = (len(perms),)
    with np.errstate(all="ignore"):
        res = evaluate(dist, np.tile(Q_PIDS, tile), G_PIDS, np.tile(Q_CAMS, tile), G_CAMS, max_rank=5, ap_rule=rule)
    chance = chance_level(Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, rule, max_rank=5)
    assert res["mAP"] == pytest.approx(chance["mAP"], abs=1e-12)
    np.testing.assert_allclose(res["cmc"], chance["cmc"], atol=1e-12)


def test_chance_level_against_monte_carlo():
    """A random split (distractors, junk, several cameras): 400 random rankings per query; the Monte-Carlo mean of
    evaluate() is within 4 standard errors of the closed form, for R1, R5 and both AP rules."""
    rng = np.random.default_rng(0)
    q_pids, q_cams = rng.integers(1, 15, 40), rng.integers(0, 3, 40)
    g_pids, g_cams = rng.integers(-1, 15, 120), rng.integers(0, 3, 120)
    reps = 400
    dist = rng.random((reps * len(q_pids), len(g_pids)))
    for rule in ("step", "trapezoid"):
        res = evaluate(dist, np.tile(q_pids, reps), g_pids, np.tile(q_cams, reps), g_cams, ap_rule=rule)
        chance = chance_level(q_pids, g_pids, q_cams, g_cams, rule)
        valid = ~np.isnan(res["AP"])
        se_ap = res["AP"][valid].std() / np.sqrt(valid.sum())
        assert abs(res["mAP"] - chance["mAP"]) < 4 * se_ap
        ranks = res["first_match_rank"][valid]
        for k in (1, 5):
            p = chance[f"R{k}"]
            assert abs(res[f"R{k}"] - p) < 4 * np.sqrt(p * (1 - p) / valid.sum()) + 1e-12
            assert res[f"R{k}"] == pytest.approx(np.mean(ranks <= k))
    assert 0 < chance["R1"] < chance["R5"] < 1


def test_chance_level_needs_a_valid_query():
    with pytest.raises(ValueError, match="no query has a valid match"):
        chance_level([3], [1, 2], [0], [0])
    with pytest.raises(ValueError, match="unknown ap_rule"):
        chance_level([1], [1], [0], [1], "interpolated")


def test_score_protocols_logs_the_chance_level_of_each_protocol():
    """tests/test_evaluation_scoring.py's split. Official (gallery with the queries, trapezoid): A keeps rows 1-6
    (N = 6, n = 2), B rows 0, 2-6 (N = 6, n = 1), C none valid (skipped). Gao (without queries, step): A keeps
    rows 2-5 (N = 4, n = 2), B the same (n = 1).
      official R1 = (2/6 + 1/6)/2 = 1/4;  gao R1 = (2/4 + 1/4)/2 = 3/8
      official mAP: A (H6/6 + (6 - H6)/30 + 2/6)/2 = (79/150 + 1/3)/2 = 43/100, B (H6/6 + 1/6)/2 = 23/80
      gao mAP: A H4/4 + (4 - H4)/12 = 49/72, B H4/4 = 25/48"""
    with pytest.warns(UserWarning):
        scores = score_protocols(FEATS, Q_ROWS, G_ROWS, PIDS, CAMS,
                                 [protocols.headline("mars", True, "trapezoid"), *protocols.named("mars").values()])
    m, name = scores.metrics, protocols.chance_name
    assert m[name("R1")] == m[name("R1", "official_")] == pytest.approx(1 / 4, abs=1e-15)
    assert m[name("R1", "gao_")] == pytest.approx(3 / 8, abs=1e-15)
    assert m[name("mAP")] == m[name("mAP", "official_")] == pytest.approx(float((F(43, 100) + F(23, 80)) / 2),
                                                                        abs=1e-15)
    assert m[name("mAP", "gao_")] == pytest.approx(float((F(49, 72) + F(25, 48)) / 2), abs=1e-15)
    assert scores.cmcs[name("cmc", "gao_")].shape == (20,) and scores.cmcs[name("cmc")][0] == m[name("R1")]
    assert name("mAP", "gao_") == "gao_chance_mAP"           # the MLflow names the reports read
