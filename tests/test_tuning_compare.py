"""Tuning report statistics (core.tuning.compare) on hand-made per-query frames, and the validation split's query
modes (core.data.validation): cheap, no training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from core.tuning import spec as tune_spec
from core.config import ConfigError
from core.data import load_dataset
from core.data.validation import QUERY_MODES, ValidationSplitError, split_validation
from core.evaluation.bootstrap import Estimate
from core.evaluation.metrics import evaluate
from core.tuning.compare import BETTER, SAME, WORSE, compare, conclude, recommend, section


def frame(hits: list[bool], pids: list[int], protocol: str = "headline") -> pd.DataFrame:
    """A per-query frame: a hit is a first match at rank 1 (AP 1), a miss at rank 25 (AP 0.1)."""
    n = len(hits)
    return pd.DataFrame({"protocol": protocol, "reranked": False, "query": np.arange(n), "pid": pids,
                         "camid": 1, "first_match_rank": [1.0 if h else 25.0 for h in hits],
                         "ap": [1.0 if h else 0.1 for h in hits]})


PIDS = [p for p in range(20) for _ in range(3)]            # 20 identities x 3 queries


def test_conclusion_reads_the_interval_of_the_difference():
    assert conclude(Estimate(0.05, 0.001, 0.1)) == BETTER
    assert conclude(Estimate(0.05, 0.0, 0.1)) == SAME             # touching 0 is not above it
    assert conclude(Estimate(-0.05, -0.1, 0.02)) == SAME
    assert conclude(Estimate(-0.05, -0.1, -0.001)) == WORSE


def test_paired_comparison_on_hand_made_frames():
    base = frame([i % 2 == 0 for i in range(60)], PIDS)
    best = frame([True] * 60, PIDS)                               # hits every query the base misses, and the rest
    c = compare(best, base, resamples=500, seed=0)
    assert (c.queries, c.identities) == (60, 20)
    assert c.estimates["mAP"].value == pytest.approx(30 * 0.9 / 60)   # 30 misses move from AP 0.1 to 1
    assert c.estimates["R1"].value == pytest.approx(0.5) and c.conclusion == BETTER
    assert compare(base, best, 500, 0).conclusion == WORSE
    # b differs from a on 2 queries of 2 identities, one better, one worse: difference 0, interval around it
    flipped = [i % 2 == 0 for i in range(60)]
    flipped[0], flipped[3] = False, True                           # identities 0 and 1
    same = compare(frame(flipped, PIDS), base, 500, 0)
    assert same.estimates["mAP"].value == pytest.approx(0.0, abs=1e-12) and same.conclusion == SAME
    assert same.estimates["mAP"].low < 0 < same.estimates["mAP"].high
    # only the headline rows count: a gao row that says otherwise changes nothing
    noisy = pd.concat([frame([False] * 60, PIDS, "gao"), best])
    assert compare(noisy, base, 500, 0).estimates == c.estimates


def test_recommendation_follows_the_test_conclusion():
    base = frame([i % 2 == 0 for i in range(60)], PIDS)
    better, worse = compare(frame([True] * 60, PIDS), base, 200, 0), compare(base, frame([True] * 60, PIDS), 200, 0)
    same = compare(base, base, 200, 0)
    chosen, defaults = (0.1, 0.5), (1.0, 0.3)
    rec = recommend(better, chosen, defaults)
    assert rec.values == chosen and not rec.keep_defaults
    for c in (same, worse):
        rec = recommend(c, chosen, defaults)
        assert rec.values == defaults and rec.keep_defaults
    assert "not distinguishable from the defaults" in recommend(same, chosen, defaults).text
    assert "worse than the defaults" in recommend(worse, chosen, defaults).text
    assert recommend(None, chosen, defaults, "run with --no-test").values == defaults
    assert recommend(better, defaults, defaults).values == defaults        # the baseline was the best


def test_section_gives_both_intervals_the_conclusion_and_the_recommendation():
    base = frame([i % 2 == 0 for i in range(60)], PIDS)
    val = compare(frame([True] * 60, PIDS), base, 200, 0)
    test = compare(base, base, 200, 0)
    rec = recommend(test, (0.1, 0.5), (1.0, 0.3))
    text = "\n".join(section(val, test, best=5, baseline=0, rec=rec, same_values=False, resamples=200, seed=0))
    assert "one identity resample for both; 200 resamples, seed 0)" in text
    low, high = (100 * getattr(val.estimates["mAP"], k) for k in ("low", "high"))
    assert f"Validation (best trial 5 − baseline trial 0): mAP +45.0 points [+{low:.1f}, +{high:.1f}], R1 +50.0 " \
           f"points" in text
    assert "mAP +0.0 points [+0.0, +0.0], R1 +0.0 points [+0.0, +0.0]; 60 queries of 20 identities" in text
    assert "**Conclusion: not distinguishable.**" in text
    assert "**Recommended: keep the defaults, λ = 1, margin = 0.300**" in text
    missing = "\n".join(section("the trials ran before per-query results were kept", "run with --no-test", 5, 0,
                                recommend(None, (0.1, 0.5), (1.0, 0.3), "run with --no-test"), False, 200, 0))
    assert "Validation (best trial 5 − baseline trial 0): not available: the trials ran before" in missing
    assert "**Conclusion: no conclusion yet.**" in missing


# ---- the validation split ------------------------------------------------------------------------------------

def _identities(tracklets) -> set[str]:
    return {Path(t.paths[0]).parent.name for t in tracklets}


def test_every_validation_tracklet_is_a_query_against_the_others(tiny_synthetic_root):
    from tests.helpers import tiny_cfg
    ds = load_dataset(tiny_cfg(tiny_synthetic_root).data)
    one, split = split_validation(ds, 0.25, 0, "one"), split_validation(ds, 0.25, 0, "all")
    assert split.val_pids == one.val_pids and split.dataset.train == one.dataset.train   # same held-out identities
    val = split.dataset
    assert len(val.query) == len(one.dataset.query) + len(one.dataset.gallery) == len(val.gallery)
    assert len(val.query) > len(split.val_pids) == 2
    held = _identities(val.query)
    assert held <= _identities(ds.train) and not held & _identities(ds.query + ds.gallery)   # never the test split
    assert not held & _identities(val.train)
    assert split.summary()["queries"] == "all" and "every held-out tracklet is a query" in split.describe()
    # the own tracklet is at distance 0 and same-identity tracklets at 2, others at 1: if the own tracklet
    # counted, every query would hit at rank 1; the protocol's rule (same identity and camera) ignores it
    q = np.array([t.pid for t in val.query]), np.array([t.camid for t in val.query])
    same = q[0][:, None] == q[0][None, :]
    dist = np.where(same, 2.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    res = evaluate(dist, q[0], q[0], q[1], q[1])
    assert res["num_skipped"] == 0 and res["R1"] == 0.0          # every query has a match, never itself
    with pytest.raises(ValidationSplitError, match="validation queries 'some'"):
        split_validation(ds, 0.25, 0, "some")


def test_spec_names_the_query_mode(tmp_path):
    assert tune_spec.QUERY_MODES == QUERY_MODES
    assert tune_spec.read_tune_spec().val_queries == "all"                 # experiments/tune_lambda_margin.yaml
    tree = yaml.safe_load(tune_spec.DEFAULT_SPEC.read_text())
    tree["validation"]["queries"] = "every"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"bad.yaml, validation: key 'queries' is 'every'; allowed: all, one"):
        tune_spec.read_tune_spec(bad)
