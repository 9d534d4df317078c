"""Interval rules tested inside their cases, not only at a boundary (issue 22, "Tests that would not notice").

A verdict rule that reads the wrong bound (``"contradicted" if est.low < 0`` instead of ``est.high < 0``) passed
tests whose inconclusive intervals all started exactly at 0. Every rule that reads an interval against a threshold
is tested here on an interval lying above, lying below, STRADDLING the threshold (the common inconclusive case),
and touching it from either side: the claim verdicts (core.reporting.claims), the attention audit's reading
(core.reporting.audit.audit_side) and the tuning comparison (core.tuning.compare.conclude), all three through
core.reporting.claims.interval_side."""
from __future__ import annotations

import pandas as pd
import pytest

from core.reporting import claims
from core.reporting.audit import audit_side
from core.tuning import compare as tune_compare
from core.evaluation.bootstrap import Estimate

# (low, high) relative to the threshold t -> the side it is on
CASES = [((1, 3), "above"), ((-3, -1), "below"), ((-1, 1), "around"), ((-3, 0.5), "around"),
         ((-0.5, 3), "around"), ((0, 2), "around"), ((-2, 0), "around")]


@pytest.mark.parametrize("bounds, side", CASES)
def test_claim_verdict_reads_the_right_bound(bounds, side):
    low, high = (0.01 * b for b in bounds)
    verdict = claims.verdict_of(Estimate((low + high) / 2, low, high))
    assert verdict == {"above": "supported", "below": "contradicted", "around": "inconclusive"}[side]


@pytest.mark.parametrize("at", [0.0, 0.5])
@pytest.mark.parametrize("bounds, side", CASES)
def test_audit_reading_reads_the_right_bound(bounds, side, at):
    low, high = (at + 0.1 * b for b in bounds)
    sel = pd.DataFrame([{"metrics.attn_auc_region": (low + high) / 2, "metrics.attn_auc_region_ci_low": low,
                         "metrics.attn_auc_region_ci_high": high}])
    assert audit_side(sel, "attn_auc_region", at) == side


@pytest.mark.parametrize("bounds, side", CASES)
def test_tuning_comparison_reads_the_right_bound(bounds, side):
    low, high = (0.01 * b for b in bounds)
    expect = {"above": tune_compare.BETTER, "below": tune_compare.WORSE, "around": tune_compare.SAME}[side]
    assert tune_compare.conclude(Estimate((low + high) / 2, low, high)) == expect


def test_a_straddling_claim_is_inconclusive_in_the_report_records():
    """End to end through judge(): a difference whose interval straddles 0 (one query better, one worse)."""
    from tests.helpers import per_query, run_row
    a = per_query([1, 5] * 10)
    b = per_query([5, 5, 1, 1] + [1, 5] * 8)       # identity 1 worse (query 0), identity 2 better (query 2)
    ra, rb = pd.DataFrame([run_row("a", "A", a)]), pd.DataFrame([run_row("b", "B", b)])
    tables = {"a": a, "b": b}
    delta, low, high, verdict, _ = claims.judge(rb, ra, "R1", lambda run_id, name: tables[run_id])
    assert low < 0 < high and verdict == "inconclusive"
