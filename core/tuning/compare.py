"""Do the tuned values beat the defaults? The paired comparisons, conclusion and recommendation of the tuning report
Free of optuna and mlflow: it reads the study's trials as plain records (core.tuning.study.trial_records) and the
per-query frames through a `load_table` callable; it decides and words the comparison.

Two comparisons, each a paired cluster bootstrap over query identities (``bootstrap.paired_difference``: every
resample draws one set of identities for both sides, so what both models get right or wrong together cancels):

* validation: the best trial minus the baseline trial (the defaults), on the validation queries of the study
  (core.data.validation). The best trial was picked because its validation value is the highest, so this
  difference is biased upwards (the winner's curse): it says whether the choice stands out at all.
* test: the chosen values minus the defaults, each trained once on the full training split and evaluated on the
  test split. The test split decides only between these two candidates, fixed before it was looked at.

The conclusion reads the test interval of the objective's metric (``DECISION_METRIC``, mAP): **better** when its
95 % interval lies above 0, **worse** when below, else **not distinguishable**. The suite recommends the chosen
values only when they are better; otherwise it recommends keeping the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from core import record
from core.config import config_hash
from core.evaluation import bootstrap
from core.reporting.claims import interval_side
from core.tuning.spec import Plan, lambda_margin, with_values

DECISION_METRIC = "mAP"          # the study's objective (validation mAP) decides, on the test split
SHOWN = ("mAP", "R1")            # differences printed in the report
BETTER, SAME, WORSE = "better", "not distinguishable", "worse"


@dataclass(frozen=True)
class Comparison:
    """b − a on the same queries: per metric the difference (fraction) with its 95 % interval."""
    estimates: dict[str, bootstrap.Estimate]
    queries: int                     # valid queries (with a match) compared
    identities: int                  # their identities: the bootstrap's clusters
    resamples: int
    seed: int

    @property
    def conclusion(self) -> str:
        return conclude(self.estimates[DECISION_METRIC])


def conclude(difference: bootstrap.Estimate) -> str:
    """better / not distinguishable / worse from the 95 % interval of a difference b − a."""
    return {"above": BETTER, "below": WORSE, "around": SAME}[interval_side(difference.low, difference.high)]


def headline_rows(per_query: pd.DataFrame) -> pd.DataFrame:
    """The rows of the headline metrics (protocol 'headline', distances not re-ranked) of a per-query frame."""
    rows = per_query[(per_query["protocol"] == "headline") & ~per_query["reranked"].astype(bool)]
    if rows.empty:
        raise ValueError(f"the per-query frame has no headline row (protocols: "
                         f"{sorted(per_query['protocol'].unique())})")
    return rows


def compare(frame_b: pd.DataFrame, frame_a: pd.DataFrame, resamples: int, seed: int,
            metrics: tuple[str, ...] = SHOWN) -> Comparison:
    """Paired comparison b − a of two per-query frames of the same queries (their headline rows)."""
    b, a = headline_rows(frame_b), headline_rows(frame_a)
    valid = a[a["first_match_rank"].notna()]
    estimates = {m: bootstrap.paired_difference(b, a, m, resamples, seed) for m in
                 dict.fromkeys((DECISION_METRIC, *metrics))}
    return Comparison(estimates, len(valid), valid["pid"].nunique(), resamples, seed)


def points(est: bootstrap.Estimate) -> str:
    """A difference in percentage points with its interval: '+2.4 points [-1.0, +5.9]'."""
    return f"{100 * est.value:+.1f} points [{100 * est.low:+.1f}, {100 * est.high:+.1f}]"


def differences(c: Comparison) -> str:
    return ", ".join(f"{m} {points(e)}" for m, e in c.estimates.items())


@dataclass(frozen=True)
class Recommendation:
    values: tuple[float, float]      # (lambda, margin) the suite recommends
    keep_defaults: bool
    text: str                        # one markdown sentence (why)


def recommend(test: Comparison | None, chosen: tuple[float, float], defaults: tuple[float, float],
              missing: str = "") -> Recommendation:
    """The values the suite recommends: the chosen ones only when the test comparison says better."""
    if chosen == defaults:
        return Recommendation(defaults, True, "the best trial is the baseline: the chosen values are the defaults")
    if test is None:
        return Recommendation(defaults, True, f"no test comparison yet ({missing}); keep the defaults until one "
                                              f"says the chosen values are better")
    verdict = test.conclusion
    if verdict == BETTER:
        return Recommendation(chosen, False, f"the chosen values are better than the defaults on the test split "
                                             f"({DECISION_METRIC} interval above 0)")
    rel = "not distinguishable from" if verdict == SAME else "worse than"
    return Recommendation(defaults, True, f"the chosen values are {rel} the defaults on the test split "
                                          f"({DECISION_METRIC} interval {'contains' if verdict == SAME else 'below'} "
                                          f"0), so the study gives no reason to change them")


def values_text(v: tuple[float, float]) -> str:
    return f"λ = {v[0]:.4g}, margin = {v[1]:.3f}"


def section(val: Comparison | str, test: Comparison | str, best: int, baseline: int | None,
            rec: Recommendation, same_values: bool, resamples: int, seed: int) -> list[str]:
    """The report's "Chosen vs defaults" section; `val` / `test` are a comparison or why there is none."""
    out = ["## Chosen vs defaults (95 % intervals)", "",
           f"Paired cluster bootstrap over query identities (`core/evaluation/bootstrap.py` paired_difference: both "
           f"sides scored on the same queries, one identity resample for both; {resamples} resamples, seed {seed}), "
           f"in percentage points of chosen − defaults. The conclusion reads the {DECISION_METRIC} interval (the "
           f"objective's metric) on the test split: better when it lies above 0, worse when below, else not "
           f"distinguishable.", ""]
    if same_values:
        out += [f"- The best trial ({best}) has the baseline's values: there is nothing to compare.", ""]
    else:
        where = f"best trial {best} − baseline trial {baseline}" if baseline is not None else f"best trial {best}"
        out.append(f"- Validation ({where}): " + (
            f"{differences(val)}; {val.queries} queries of {val.identities} identities. The best trial was picked "
            f"for its validation value, so this difference is biased upwards."
            if isinstance(val, Comparison) else f"not available: {val}."))
        out.append("- Test (chosen − defaults, each trained once on the full training split): " + (
            f"{differences(test)}; {test.queries} queries of {test.identities} identities."
            if isinstance(test, Comparison)
            else f"not available: {test}."))
        verdict = test.conclusion if isinstance(test, Comparison) else "no conclusion yet"
        out += ["", f"**Conclusion: {verdict}.**", ""]
    what = "keep the defaults" if rec.keep_defaults else "use the chosen values"
    out += [f"**Recommended: {what}, {values_text(rec.values)}** — {rec.text}.", ""]
    return out


@dataclass(frozen=True)
class Compared:
    """The report's paired comparisons (this module) and the test runs' per-query frames."""
    best: int                               # trial numbers
    baseline: int | None                    # the completed baseline trial (the defaults), if any
    same_values: bool                       # the best trial has the defaults' values
    val: Any                                # Comparison, or why there is none (str)
    test: Any
    recommendation: Any                     # Recommendation
    test_frames: dict[str, Any]             # "chosen" / "defaults" -> per-query frame of the test run, or None


# ---- chosen vs defaults, from the trials' records and the per-query frames in MLflow -----------------------------

def best_record(trials: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The best completed trial of core.tuning.study.trial_records: the highest value, the lowest number among
    equals."""
    done = [t for t in trials if t["state"] == "complete"]
    return max(done, key=lambda t: (t["value"], -t["number"])) if done else None


def baseline_record(trials: Sequence[Mapping[str, Any]], defaults: tuple[float, float]) -> Mapping[str, Any] | None:
    """The completed trial of the defaults: the one queued as the baseline (core.tuning.study.open_study; a retry of
    it keeps its role), else any completed trial with the defaults' values."""
    done = [t for t in trials if t["state"] == "complete"]
    return next((t for t in done if t["user_attrs"].get("role") == "baseline"),
                next((t for t in done if lambda_margin(t["params"]) == defaults), None))


def compare_chosen(trials: Sequence[Mapping[str, Any]], study_attrs: Mapping[str, Any], plan: Plan,
                   load_table: Callable[[str, str], pd.DataFrame | None]) -> Compared | None:
    """Best trial vs baseline trial on validation and chosen vs defaults on test, from the per-query frames that
    `load_table(run_id, name)` reads (the trials' record.VAL_PER_QUERY, the test runs' record.PER_QUERY; None when
    missing); None before any trial completed."""
    best = best_record(trials)
    if best is None:
        return None

    def table(run_id: str | None, name: str) -> pd.DataFrame | None:
        return None if run_id is None else load_table(run_id, name)

    resamples, seed = plan.config.eval.bootstrap_resamples, plan.config.eval.bootstrap_seed
    chosen, defaults = lambda_margin(best["params"]), plan.baseline_values
    baseline = baseline_record(trials, defaults)
    tests = {}
    for label, (lam, margin) in (("chosen", chosen), ("defaults", defaults)):
        res = study_attrs.get(f"test:{config_hash(with_values(plan.config, lam, margin))}") or {}
        tests[label] = table(res.get("mlflow_run_id"), record.PER_QUERY)
    if baseline is None:
        val = "the baseline trial has not completed (pruned, failed or not run yet)"
    else:
        frames = [table(t["user_attrs"].get("mlflow_run_id"), record.VAL_PER_QUERY) for t in (best, baseline)]
        val = _compare(*frames, resamples, seed) if all(f is not None for f in frames) else (
            "the per-query validation results of trial(s) " + ", ".join(
                str(t["number"]) for t, f in zip((best, baseline), frames) if f is None) +
            " are not in this MLflow store (run before they were kept, or logged to another store)")
    if any(f is None for f in tests.values()):
        test = (f"a test run's per-query results are missing (run with --no-test?); run `python reproduce/tune.py "
                f"--study-name {plan.study_name} --n-trials 0` to evaluate both")
    else:
        test = _compare(tests["chosen"], tests["defaults"], resamples, seed)
    rec = recommend(test if not isinstance(test, str) else None, chosen, defaults,
                    missing=test if isinstance(test, str) else "")
    return Compared(best["number"], None if baseline is None else baseline["number"], chosen == defaults, val, test,
                    rec, tests)


def _compare(frame_b, frame_a, resamples: int, seed: int):
    """compare(), or why the two frames cannot be compared (a report is written either way)."""
    try:
        return compare(frame_b, frame_a, resamples, seed)
    except ValueError as e:      # other queries (bootstrap.paired_difference), no headline rows
        return f"not comparable: {e}"


def compared_mlflow(c: Compared) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics (percentage points) and tags of the study's parent run: val_delta_mAP, test_delta_mAP_ci_low, ...;
    conclusion, recommended_lambda, recommended_margin (delta: chosen − defaults, as core.reporting.claims)."""
    metrics = {}
    for kind, comp in (("val", c.val), ("test", c.test)):
        if isinstance(comp, str) or c.same_values:
            continue
        for m, est in comp.estimates.items():
            metrics.update({f"{kind}_delta_{m}": 100 * est.value, f"{kind}_delta_{m}_ci_low": 100 * est.low,
                            f"{kind}_delta_{m}_ci_high": 100 * est.high})
    conclusion = ("chosen = defaults" if c.same_values else
                  c.test.conclusion if not isinstance(c.test, str) else "no test comparison")
    lam, margin = c.recommendation.values
    return metrics, {"conclusion": conclusion, "recommended_lambda": f"{lam:g}", "recommended_margin": f"{margin:g}"}
