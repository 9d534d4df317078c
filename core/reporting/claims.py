"""Every report number with its 95 % interval, every paper claim with a verdict, from the runs' per-query
results (the MLflow artifact PER_QUERY; columns of core.evaluation.scoring.PER_QUERY_COLUMNS).

Interval of a report cell (one row, protocol and metric; core.evaluation.bootstrap, resampling query identities):
one seed: the cluster-bootstrap percentile interval (``bootstrap.interval``); several seeds: the two-way seed x
query interval (``bootstrap.seeds_interval``). The resamples and their seed are the runs' eval.bootstrap_resamples
and eval.bootstrap_seed.

A claim (core.specs.Claim: `row` beats each row of `beats` on each metric) is judged on the headline protocol by the
difference row − beaten row, estimated with a PAIRED bootstrap (one draw of query identities for both rows; with
several seeds all of them, ``bootstrap.paired_difference``). Verdicts:

    supported       the 95 % interval of the difference lies above 0
    contradicted    it lies below 0
    inconclusive    it contains 0
    not comparable  the rows were not scored on the same queries (another dataset or split): the reason is given
    no verdict      a row has no finished run, a run was logged before per-query results were kept, or its
                    per-query artifact is missing (the reason names the run)

A re-ranked row (eval.rerank: true, Table 4's STA + ReRank) is judged by its re-ranked outcomes, as the report
prints its rerank_* metrics. Runs are rows of an mlflow.search_runs frame; per-query frames come through the
``load_table(run_id, name)`` callable (tracking.load_table: a DataFrame, or None when the run has none). No mlflow
import here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from core import record
from core.config import EvalConfig
from core.record import PER_QUERY
from core.specs import Spec

if TYPE_CHECKING:
    from core.evaluation.bootstrap import Estimate

NO_INTERVAL = "no interval: run logged before per-query results"
MISSING_ARTIFACT = f"no interval: the artifact {PER_QUERY} of run {{run_id}} is missing (deleted from the store?)"


def logged_per_query(run: pd.Series) -> bool:
    """Whether a run was logged by a suite that kept per-query results: those runs also log the bootstrap bounds
    (*_ci_low), so a run that has them but no PER_QUERY artifact lost it."""
    return any(k.startswith("metrics.") and k.endswith("_ci_low") and pd.notna(v) for k, v in run.items())
HEADLINE = "headline"                            # the per-query frames' name of the runs' own protocol
LoadTable = Callable[[str, str], "pd.DataFrame | None"]


def cached(load_table: LoadTable | None) -> LoadTable | None:
    """`load_table` remembering what it returned: a report and its MLflow verdicts read each artifact once."""
    if load_table is None:
        return None
    memo: dict[tuple[str, str], pd.DataFrame | None] = {}

    def load(run_id: str, name: str):
        if (run_id, name) not in memo:
            memo[run_id, name] = load_table(run_id, name)
        return memo[run_id, name]
    return load


def reranked(run: pd.Series) -> bool:
    """Whether a run reports re-ranked metrics (eval.rerank: true)."""
    return record.param(run, "eval.rerank") is True


def bootstrap_options(sel: pd.DataFrame) -> tuple[int, int]:
    """(eval.bootstrap_resamples, eval.bootstrap_seed) of the runs (one row's runs share them: they enter the config
    hash), the config defaults where they were not logged."""
    out = []
    for key, default in (("bootstrap_resamples", EvalConfig.bootstrap_resamples),
                         ("bootstrap_seed", EvalConfig.bootstrap_seed)):
        col = record.param_col(f"eval.{key}")
        vals = sel[col].dropna() if col in sel else pd.Series(dtype=object)
        out.append(int(vals.iloc[0]) if len(vals) else default)
    return out[0], out[1]


def row_frames(sel: pd.DataFrame, protocol: str, load_table: LoadTable | None) -> tuple[list | None, str]:
    """(per-query frames of a row's runs under `protocol`, one per seed; None and why when a run has none)."""
    if sel.empty:
        return None, "not run"
    frames = []
    for _, run in sel.iterrows():
        table = load_table(run["run_id"], PER_QUERY) if load_table is not None else None
        if table is None:
            return None, NO_INTERVAL if load_table is None or not logged_per_query(run) else \
                MISSING_ARTIFACT.format(run_id=run["run_id"])
        frame = table[(table["protocol"] == protocol) & (table["reranked"].astype(bool) == reranked(run))]
        if frame.empty:
            return None, (f"no interval: run {run['run_id']} has no per-query results for protocol {protocol}"
                          f"{' (re-ranked)' if reranked(run) else ''}")
        frames.append(frame)
    return frames, ""


def cell_interval(sel: pd.DataFrame, metric: str, protocol: str, load_table: LoadTable | None,
                  ) -> tuple[Estimate | None, str]:
    """A row's metric under `protocol` with its interval (fractions), or None and why."""
    frames, reason = row_frames(sel, protocol, load_table)
    if frames is None:
        return None, reason
    from core.evaluation import bootstrap  # lazy: core.evaluation imports torch, this module does not
    resamples, seed = bootstrap_options(sel)
    try:
        return bootstrap.seeds_interval(frames, metric, resamples, seed), ""
    except ValueError as e:
        return None, f"no interval: {e}"


@dataclass(frozen=True)
class Verdict:
    """One claim, one beaten row, one metric; differences in percentage points (row − beaten row)."""
    key: str                                     # claim<k>: k counts (claim, beaten row) pairs in spec order
    row: str
    beaten: str
    metric: str
    paper_delta: float | None                    # the paper's, on the reference dataset (None: a '—' in the paper)
    delta: float | None                          # this run's (None: a row not run)
    low: float | None                            # its 95 % paired-bootstrap interval (None: no interval)
    high: float | None
    verdict: str                                 # supported | contradicted | inconclusive | not comparable | no verdict
    reason: str = ""

    @property
    def claim(self) -> str:
        return f"{self.row} > {self.beaten}"


def interval_side(low: float, high: float, at: float = 0.0) -> str:
    """Where a 95 % interval lies against `at`: "above" (low > at), "below" (high < at), else "around". The one
    three-way reading of an interval: claim verdicts, the attention audit, the tuning comparison."""
    return "above" if low > at else "below" if high < at else "around"


def verdict_of(est: Estimate) -> str:
    """supported: the interval of row − beaten lies above 0; contradicted: below 0; else inconclusive."""
    return {"above": "supported", "below": "contradicted", "around": "inconclusive"}[interval_side(est.low, est.high)]


def _logged_mean(sel: pd.DataFrame, metric: str) -> float | None:
    """Mean over a row's runs of a logged headline metric (percent; rerank_<metric> for a re-ranked row)."""
    vals = [float(r[c]) for _, r in sel.iterrows()
            if pd.notna(r.get(c := record.metric_col(f"{'rerank_' if reranked(r) else ''}{metric}")))]
    return float(np.mean(vals)) if vals else None


def _same_queries(frames: list[pd.DataFrame]) -> None:
    """Raise unless every frame holds the same queries (position, identity, camera): rows of one dataset and split.
    (The bootstrap itself checks the valid query positions only.)"""
    keys = [f[["query", "pid", "camid"]].sort_values("query").to_numpy() for f in frames]
    if any(k.shape != keys[0].shape or (k != keys[0]).any() for k in keys[1:]):
        raise ValueError("the rows were scored on different queries (identities or cameras differ): another "
                         "dataset or split")


def judge(sel_row: pd.DataFrame, sel_beaten: pd.DataFrame, metric: str, load_table: LoadTable | None,
          row: str = "row", beaten: str = "beaten row") -> tuple[float | None, float | None, float | None, str, str]:
    """(delta, low, high, verdict, reason) of row − beaten on `metric` (the rows' runs; their labels name them in
    a reason), headline protocol, in percentage points."""
    for sel, label in ((sel_row, row), (sel_beaten, beaten)):
        if sel.empty:
            return None, None, None, "no verdict", f"row '{label}' has no finished run"
    frames_b, reason_b = row_frames(sel_row, HEADLINE, load_table)
    frames_a, reason_a = row_frames(sel_beaten, HEADLINE, load_table)
    if frames_b is None or frames_a is None:
        mean_b, mean_a = _logged_mean(sel_row, metric), _logged_mean(sel_beaten, metric)
        delta = mean_b - mean_a if mean_b is not None and mean_a is not None else None
        return delta, None, None, "no verdict", reason_b or reason_a
    from core.evaluation import bootstrap  # lazy: core.evaluation imports torch
    resamples, seed = bootstrap_options(sel_row)
    try:
        _same_queries(frames_b + frames_a)
        est = bootstrap.paired_difference(frames_b, frames_a, metric, resamples, seed)
    except ValueError as e:
        return None, None, None, "not comparable", str(e)
    return 100 * est.value, 100 * est.low, 100 * est.high, verdict_of(est), ""


def evaluate_claims(spec: Spec, runs: pd.DataFrame, ref: str, load_table: LoadTable | None) -> list[Verdict]:
    """Verdicts of every claim of `spec` from one profile's and dataset's selected runs
    (core.reporting.select.select_runs); the paper's differences from its numbers on dataset `ref`."""
    paper = {r.label: r.paper.get(ref, {}) for r in spec.rows}
    out, k = [], 0
    for claim in spec.claims:
        sel_row = runs[runs[record.ROW] == claim.row] if not runs.empty else runs
        for beaten in claim.beats:
            k += 1
            sel_beaten = runs[runs[record.ROW] == beaten] if not runs.empty else runs
            for m in claim.metrics:
                b, a = paper[claim.row].get(m), paper[beaten].get(m)
                result = judge(sel_row, sel_beaten, m, load_table, claim.row, beaten)
                out.append(Verdict(f"claim{k}", claim.row, beaten, m,
                                   None if a is None or b is None else round(b - a, 6), *result))
    return out


def records(verdicts: list[Verdict], **context) -> list[dict]:
    """JSON-able verdicts (claims.json on the table's MLflow run), each with `context` (profile, dataset, ...)."""
    return [{**context, "claim": v.claim, **asdict(v)} for v in verdicts]
