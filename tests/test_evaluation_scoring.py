"""Both protocols from one extraction [A15] (core.protocols, core.evaluation.scoring), worked out by hand, and
re-ranking over the distinct tracklets [A16]."""
import numpy as np
import pytest

from core import protocols
from core.data import Tracklet
from core.engine.run import _union
from core.evaluation import PER_QUERY_COLUMNS, evaluate, k_reciprocal_rerank_reference, score_protocols
from core.evaluation.scoring import protocol_gallery

# Distinct test tracklets, 1-d features (distance = |a - b|):
#   row 0: query A  pid 1 cam 1  at 0        row 3: gallery  pid 2 cam 2  at 1
#   row 1: query B  pid 2 cam 1  at 10       row 4: gallery  pid 1 cam 2  at 12
#   row 2: gallery  pid 1 cam 2  at 3        row 5: gallery  pid 3 cam 1  at 21
#   row 6: query C  pid 3 cam 1  at 20 (its only other tracklet, row 5, has its camera: no valid match)
FEATS = np.array([[0.], [10.], [3.], [1.], [12.], [21.], [20.]], dtype=np.float32)
PIDS = np.array([1, 2, 1, 2, 1, 3, 3])
CAMS = np.array([1, 1, 2, 2, 2, 1, 1])
Q_ROWS = np.array([0, 1, 6])
G_ROWS = np.array([0, 1, 2, 3, 4, 5, 6])          # loaded with the queries (official MARS layout)
# With the queries, A ranks (own row ignored): row 3 (1, pid 2), row 2 (3, hit), row 1 (10, pid 2), row 4 (12, hit),
#   hits at ranks 2 and 4: step AP (1/2 + 2/4)/2 = 1/2; trapezoid ((0 + 1/2)/2 + (1/3 + 2/4)/2)/2 = 1/3.
# Without them: row 3, row 2 (hit), row 4 (hit): ranks 2 and 3: step (1/2 + 2/3)/2 = 7/12.
# B (own row ignored) ranks row 4 (2), row 2 (7), row 3 (9, its only match), ...: rank 3 in both galleries:
#   step AP 1/3, trapezoid (0/2 + 1/3)/2 = 1/6. C is skipped. Rank-1: no query; rank-5: both.
OFFICIAL_MAP = (1 / 3 + 1 / 6) / 2                # with queries, trapezoid: 0.25
GAO_MAP = (7 / 12 + 1 / 3) / 2                    # without queries, step: 0.458333


def _protocols(dataset="mars", gwq=True, ap_rule="trapezoid"):
    return [protocols.headline(dataset, gwq, ap_rule), *protocols.named(dataset).values()]


def test_protocol_galleries_by_hand():
    q, g = np.array([0, 1]), np.array([0, 2, 3])   # query 0 is in the loaded gallery, query 1 is not
    official, gao = protocols.named("mars").values()
    assert protocol_gallery(q, g, official).tolist() == [0, 2, 3, 1]
    assert protocol_gallery(q, g, gao).tolist() == [2, 3]
    assert protocol_gallery(q, g, protocols.headline("mars", False, "step")).tolist() == [0, 2, 3]


def test_both_protocols_by_hand_and_the_query_without_match():
    with pytest.warns(UserWarning, match="without a valid gallery match.*of 3: headline 1, official 1, gao 1"):
        scores = score_protocols(FEATS, Q_ROWS, G_ROWS, PIDS, CAMS, _protocols())
    m, cmcs = scores.metrics, scores.cmcs
    assert m["official_mAP"] == pytest.approx(OFFICIAL_MAP) and m["mAP"] == pytest.approx(OFFICIAL_MAP)
    assert m["gao_mAP"] == pytest.approx(GAO_MAP)
    for p in ("", "official_", "gao_"):
        assert (m[f"{p}R1"], m[f"{p}R5"]) == (0.0, 1.0)
        assert (m[f"{p}num_queries"], m[f"{p}num_skipped_queries"]) == (2, 1)
    assert (m["official_num_gallery"], m["gao_num_gallery"]) == (7, 4)
    assert cmcs["cmc"].shape == (20,) and set(cmcs) == {"cmc", "official_cmc", "gao_cmc", "chance_cmc",
                                                         "official_chance_cmc", "gao_chance_cmc"}
    # the headline follows the run's options: gallery as loaded, eval.ap_rule
    with pytest.warns(UserWarning):
        step = score_protocols(FEATS, Q_ROWS, G_ROWS, PIDS, CAMS, _protocols(ap_rule="step")).metrics
    assert step["mAP"] == pytest.approx((1 / 2 + 1 / 3) / 2) and step["gao_mAP"] == pytest.approx(GAO_MAP)


def test_per_query_frame_by_hand():
    with pytest.warns(UserWarning):
        frame = score_protocols(FEATS, Q_ROWS, G_ROWS, PIDS, CAMS, _protocols()).per_query
    assert tuple(frame.columns) == PER_QUERY_COLUMNS and len(frame) == 3 * 3   # 3 protocols x 3 queries
    assert frame["protocol"].tolist() == ["headline"] * 3 + ["official"] * 3 + ["gao"] * 3
    assert not frame["reranked"].any() and frame["query"].tolist() == [0, 1, 2] * 3
    assert frame["pid"].tolist() == [1, 2, 3] * 3 and frame["camid"].tolist() == [1, 1, 1] * 3
    for name, aps in (("headline", [1 / 3, 1 / 6]), ("official", [1 / 3, 1 / 6]), ("gao", [7 / 12, 1 / 3])):
        rows = frame[frame["protocol"] == name]
        np.testing.assert_array_equal(rows["first_match_rank"], [2.0, 3.0, np.nan])   # C has no valid match
        np.testing.assert_allclose(rows["ap"], [*aps, np.nan], atol=1e-12)
    assert frame.dtypes.astype(str).tolist()[1:] == ["bool", "int64", "int64", "int64", "float64", "float64"]
    assert frame["protocol"].map(type).eq(str).all()


def test_headline_without_queries_equals_gao():
    loaded = np.array([2, 3, 4, 5])                 # data.gallery_with_queries = false: the loader dropped them
    with pytest.warns(UserWarning):
        m = score_protocols(FEATS, Q_ROWS, loaded, PIDS, CAMS, _protocols(gwq=False, ap_rule="step")).metrics
    assert m["mAP"] == m["gao_mAP"] == pytest.approx(GAO_MAP)
    assert m["official_mAP"] == pytest.approx(OFFICIAL_MAP)   # the queries are put back for the official one


def test_named_protocols_per_dataset():
    assert protocols.named("mars")["official"] == protocols.Protocol("official", True, "trapezoid")
    assert protocols.named("duke")["official"] == protocols.Protocol("official", True, "step")  # released code
    assert protocols.named("synthetic")["gao"] == protocols.Protocol("gao", False, "step")
    assert protocols.headline_name("mars", True, "trapezoid") == "official"
    assert protocols.headline_name("mars", False, "step") == "gao"
    assert protocols.headline_name("mars", True, "step") is None
    assert protocols.headline_name("duke", False, "step") == "official"      # the Duke loader keeps gallery/


def _clusters(m_only, shared, n_only, seed=0, ids=6, d=8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, d)) * 3
    total = m_only + shared + n_only
    pids = rng.integers(1, ids, total)
    feats = (centres[pids] + rng.standard_normal((total, d))).astype(np.float32)
    return feats, pids, rng.integers(1, 4, total)


def test_rerank_runs_once_over_the_distinct_tracklets():
    # 10 queries, 8 of them also in the loaded gallery (rows 2..9), 30 gallery-only tracklets: 40 distinct items
    feats, pids, cams = _clusters(2, 8, 30)
    q_rows, g_rows = np.arange(10), np.arange(2, 40)
    scores = score_protocols(feats, q_rows, g_rows, pids, cams, _protocols(), rerank=(4, 2, 0.3))
    m, cmcs, frame = scores.metrics, scores.cmcs, scores.per_query
    assert m["rerank_set_size"] == 40                 # not 10 + 38 = 48: no query meets a copy of itself
    expected = k_reciprocal_rerank_reference(feats[:10], feats[10:], 4, 2, 0.3, include_queries=True)  # [10, 40]
    for name, cols in (("official", np.r_[2:40, 0:2]), ("gao", np.arange(10, 40)), ("", g_rows)):
        p = {"": protocols.headline("mars", True, "trapezoid"), **protocols.named("mars")}[name]
        ref = evaluate(expected[:, cols], pids[q_rows], pids[cols], cams[q_rows], cams[cols], ap_rule=p.ap_rule)
        prefix = f"{name}_" if name else ""
        assert m[f"{prefix}rerank_mAP"] == pytest.approx(ref["mAP"], abs=1e-6), name
        assert m[f"{prefix}rerank_R1"] == pytest.approx(ref["R1"]), name
        rows = frame[(frame["protocol"] == p.name) & frame["reranked"]]
        np.testing.assert_array_equal(rows["first_match_rank"], ref["first_match_rank"])
        np.testing.assert_allclose(rows["ap"], ref["AP"], atol=1e-6)
    assert len(frame) == 3 * 2 * 10 and frame["reranked"].sum() == 30
    assert {"rerank_cmc", "official_rerank_cmc", "gao_rerank_cmc"} <= set(cmcs)


def test_rerank_refuses_cosine():
    with pytest.raises(ValueError, match="Euclidean"):
        score_protocols(FEATS, Q_ROWS, G_ROWS, PIDS, CAMS, _protocols(), distance="cosine", rerank=(2, 1, 0.3))


def test_union_merges_copies_of_a_query_stored_under_another_path():
    # DukeMTMC-VideoReID: gallery/ holds a copy of each query tracklet (same frame names, other folder)
    q = Tracklet(("/d/query/0001/0001/0001_C1_F0001_X1.jpg", "/d/query/0001/0001/0001_C1_F0002_X2.jpg"), 1, 1)
    copy = Tracklet(tuple(p.replace("/query/", "/gallery/") for p in q.paths), 1, 1)
    other = Tracklet(("/d/gallery/0001/0002/0001_C2_F0001_X9.jpg",), 1, 2)
    tracklets, q_rows, g_rows = _union([q], [copy, other])
    assert tracklets == [q, other] and q_rows.tolist() == [0] and g_rows.tolist() == [0, 1]
