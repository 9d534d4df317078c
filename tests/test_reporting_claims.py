"""Claims as data (specs), their verdicts from hand-made per-query frames (core.reporting.claims), the report's intervals and
Claims section for a fake store, and the verdicts on the table's MLflow run."""
from __future__ import annotations

import re
import textwrap

import numpy as np
import pandas as pd
import pytest

from core.reporting import claims
from core.reporting import report as reporting
from core.config import ConfigError
from core.specs import read_spec, spec_path
from tests.helpers import BAD, GOOD, fake_store, per_query, run_row, table1_store

# ---- the schema -----------------------------------------------------------------------------------------------

ROWS = """rows:
  - {label: A, paper: {mars: {R1: 50.0, mAP: 40.0}}}
  - {label: B, paper: {mars: {R1: 55.0, mAP: 41.5}}}
  - {label: Quoted, run: false, paper: {mars: {R1: 60.0, mAP: null}}}
"""
BAD_CLAIMS = {
    "unknown row": ("- {row: C, beats: [A], metrics: [R1]}", ["claim 1 'C'", "key 'row'", "'C'", "rows: A, B"]),
    "unknown beaten": ("- {row: B, beats: [A, Z], metrics: [R1]}", ["claim 1 'B'", "key 'beats'", "'Z'"]),
    "quoted row": ("- {row: B, beats: [Quoted], metrics: [R1]}", ["key 'beats'", "'Quoted'", "run: false"]),
    "beats itself": ("- {row: B, beats: [B], metrics: [R1]}", ["claim 1 'B'", "key 'beats'", "other rows"]),
    "unknown metric": ("- {row: B, beats: [A], metrics: [R1, R20]}",
                       ["claim 1 'B'", "key 'metrics'", "R20", "allowed: R1, mAP"]),
    "no metrics": ("- {row: B, beats: [A], metrics: []}", ["key 'metrics'", "allowed: R1, mAP"]),
    "missing beats": ("- {row: B, metrics: [R1]}", ["claim 1 'B'", "key 'beats' is required"]),
    "unknown key": ("- {row: B, beat: [A], metrics: [R1]}", ["claim 1 'B'", "unknown key 'beat'"]),
    "not a list": ("- {row: B, beats: A, metrics: [R1]}", ["claim 1 'B'", "key 'beats' must be a list"]),
}


@pytest.mark.parametrize("case", BAD_CLAIMS, ids=list(BAD_CLAIMS))
def test_bad_claim_is_refused_naming_file_claim_and_key(case, tmp_path):
    body, expected = BAD_CLAIMS[case]
    path = tmp_path / "bad.yaml"
    path.write_text("table: t\ntitle: t\nmetrics: [R1, mAP]\n" + ROWS + "claims:\n" + textwrap.indent(body, "  "))
    with pytest.raises(ConfigError) as err:
        read_spec(path)
    for part in ["bad.yaml", *expected]:
        assert part in str(err.value), f"{part!r} not in {err.value}"


def test_shipped_claims():
    t1, t2, t3, t4, t5 = (read_spec(spec_path(f"table{i}")) for i in range(1, 6))
    labels = [r.label for r in t1.rows]
    chain = [(c.row, b) for c in t1.claims for b in c.beats]
    assert all((labels[i], labels[i - 1]) in chain for i in range(1, len(labels)))   # each row beats the one before
    assert [(c.row, c.beats) for c in t3.claims] == [("K=4", ("K=2", "K=8"))]
    assert [(c.row, c.beats) for c in t2.claims] == [("N=4", ("N=2",))] and "N=8 (81.2)" in t2.claims_note
    assert [(c.row, c.beats, c.metrics) for c in t4.claims] == [("STA + ReRank", ("STA",), ("R1", "mAP")),
                                                               ("STA", ("STAN (this suite)",), ("R1", "mAP"))]
    assert t5.claims == () and "ETAP-Net" in t5.claims_note


# ---- verdicts from hand-made frames ---------------------------------------------------------------------------

def judge(frame_row, frame_beaten, metric="R1", **kw):
    runs, load = fake_store([(run_row("b", "B", frame_row, **kw), frame_row),
                             (run_row("a", "A", frame_beaten), frame_beaten)])
    return claims.judge(runs[runs["tags.row"] == "B"], runs[runs["tags.row"] == "A"], metric, load)


def test_supported_contradicted_inconclusive():
    assert judge(per_query(GOOD), per_query(BAD)) == (100.0, 100.0, 100.0, "supported", "")
    assert judge(per_query(BAD), per_query(GOOD), "mAP") == (-80.0, -80.0, -80.0, "contradicted", "")
    assert judge(per_query(GOOD), per_query(GOOD))[3] == "inconclusive"               # [0, 0] is not above 0
    # one identity of ten improves: Δ = +10 points, but resamples without it give 0 -> inconclusive
    delta, low, high, verdict, _ = judge(per_query([1, 1] + BAD[2:]), per_query(BAD))
    assert delta == pytest.approx(10.0) and low == 0.0 and high > 10.0 and verdict == "inconclusive"


def test_verdict_of_an_interval():
    from core.evaluation.bootstrap import Estimate
    assert claims.verdict_of(Estimate(0.02, 0.001, 0.04)) == "supported"
    assert claims.verdict_of(Estimate(-0.02, -0.04, -0.001)) == "contradicted"
    assert claims.verdict_of(Estimate(0.02, 0.0, 0.04)) == "inconclusive"


def test_rows_on_other_queries_are_not_comparable_and_old_runs_give_no_verdict():
    delta, low, high, verdict, reason = judge(per_query(GOOD), per_query(BAD[:16]))
    assert (delta, low, verdict) == (None, None, "not comparable") and "different queries" in reason
    other_split = per_query(BAD, pids=np.arange(20) // 2 + 100)                 # same positions, other identities
    assert judge(per_query(GOOD), other_split)[3:] == ("not comparable", "the rows were scored on different "
                                                       "queries (identities or cameras differ): another dataset or "
                                                       "split")
    runs, load = fake_store([(run_row("b", "B", per_query(GOOD)), per_query(GOOD)),
                             (run_row("a", "A", per_query(BAD)), None)])          # A: no per-query artifact
    out = claims.judge(runs[runs["tags.row"] == "B"], runs[runs["tags.row"] == "A"], "R1", load)
    assert out == (100.0, None, None, "no verdict", claims.NO_INTERVAL)          # Δ of the logged metrics
    assert claims.judge(runs[runs["tags.row"] == "B"], runs.iloc[:0], "R1", load)[3:] == \
        ("no verdict", "row 'beaten row' has no finished run")


def test_reranked_row_is_judged_by_its_reranked_outcomes_and_seeds_pool():
    rr = per_query(BAD, reranked_ranks=GOOD)                  # plain distances as bad as A, re-ranked all right
    assert judge(rr, per_query(BAD), rerank=True)[:4] == (100.0, 100.0, 100.0, "supported")
    assert judge(rr, per_query(BAD), rerank=False)[:4] == (0.0, 0.0, 0.0, "inconclusive")
    # two seeds of B (R1 1.0 and 0.5 on the same queries) against A (0.0): Δ = mean over seeds = 75 points
    half = per_query([1] * 10 + [5] * 10)
    runs, load = fake_store([(run_row("b0", "B", per_query(GOOD), 0), per_query(GOOD)),
                             (run_row("b1", "B", half, 1), half), (run_row("a", "A", per_query(BAD)), per_query(BAD))])
    delta, low, high, verdict, _ = claims.judge(runs[runs["tags.row"] == "B"], runs[runs["tags.row"] == "A"],
                                                "R1", load)
    assert delta == pytest.approx(75.0) and verdict == "supported" and low < 75.0 < high


def test_evaluate_claims_numbers_pairs_and_paper_delta(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("table: t\ntitle: t\nmetrics: [R1, mAP]\n" + ROWS + "claims:\n"
                    "  - {row: B, beats: [A], metrics: [R1, mAP]}\n")
    spec = read_spec(path)
    runs, load = fake_store([(run_row("b", "B", per_query(GOOD)), per_query(GOOD)),
                             (run_row("a", "A", per_query(BAD)), per_query(BAD))])
    out = claims.evaluate_claims(spec, runs, "mars", load)
    assert [(v.key, v.claim, v.metric, v.paper_delta, v.verdict) for v in out] == [
        ("claim1", "B > A", "R1", 5.0, "supported"), ("claim1", "B > A", "mAP", 1.5, "supported")]
    rec = claims.records(out, profile="cpu", dataset="synthetic")[1]
    assert rec["claim"] == "B > A" and rec["delta"] == pytest.approx(80.0) and rec["profile"] == "cpu"


# ---- the report -----------------------------------------------------------------------------------------------

def test_report_shows_intervals_claims_and_forest_plot(tmp_path):
    runs, load = table1_store()
    text = reporting.write_report(read_spec(spec_path("table1")), runs, tmp_path, load_table=load).read_text()
    lines = text.splitlines()
    base = next(ln for ln in lines if ln.startswith("| 1 "))
    assert "35.0 ± 7.1 [" in base                                # mean ± std over two seeds, then the interval
    tl = next(ln for ln in lines if ln.startswith("| 2 "))
    assert "100.0 [100.0, 100.0]" in tl                          # one seed: the cluster-bootstrap interval
    avg = next(ln for ln in lines if ln.startswith("| 3 "))
    assert "100.0 †" in avg and f"† {claims.NO_INTERVAL}" in text
    assert "95 % bootstrap percentile interval (200 resamples, seed 0" in text and "two-way" in text
    gao = text[text.index("**Protocol `gao`"):]
    assert "100.0 [100.0, 100.0]" in next(ln for ln in gao.splitlines() if ln.startswith("| 2 "))
    # the Claims section: one line per claim and metric, synthetic labelled in the table itself
    claims_part = text[text.index("### Claims"):]
    assert "**Claims — synthetic, MARS layout** (this run: headline protocol = `official`; paper Δ: the paper's MARS " \
           "column)" in claims_part and "| this run Δ [95 % interval] |" in re.sub(r" +", " ", claims_part)
    assert "| paper Δ " in claims_part and "this run (MARS" not in text
    r1 = next(ln for ln in claims_part.splitlines() if ln.startswith("| Baseline + TL > Baseline ") and "R1" in ln)
    assert "+6.3" in r1 and "+65.0 [" in r1 and "supported" in r1
    avg_claim = next(ln for ln in claims_part.splitlines() if ln.startswith("| Baseline + TL + Avg > Baseline + TL "))
    assert "no verdict (no interval: run logged before per-query results)" in avg_claim and "+0.0" in avg_claim
    assert "no verdict (row 'Baseline + TL + STA' has no finished run)" in claims_part
    assert "4.0% and 4.0% on MARS" in claims_part                       # a claim's note
    assert "![claims](figures/table1_cpu_synthetic_claims.png)" in text
    assert (tmp_path / "figures" / "table1_cpu_synthetic_claims.png").stat().st_size > 1000


def test_report_without_per_query_loader_still_renders_and_table5_says_why_no_claim(tmp_path):
    runs, _ = table1_store()
    text = reporting.render(read_spec(spec_path("table1")), runs, tmp_path)
    assert f"† {claims.NO_INTERVAL}" in text and "[" not in next(ln for ln in text.splitlines()
                                                                  if ln.startswith("| 2 "))
    t5 = reporting.render(read_spec(spec_path("table5")), pd.DataFrame(), tmp_path)
    assert "No finished runs yet" in t5
    runs5, load5 = fake_store([(run_row("s", "STA", per_query(GOOD)), per_query(GOOD))])
    t5 = reporting.render(read_spec(spec_path("table5")), runs5, tmp_path, load_table=load5)
    assert "### Claims" in t5 and "ETAP-Net (R1 96.2 vs 83.6" in t5 and "declares no claim" in t5

