"""The claims section of a report: every paper claim of the spec with its verdict (core.reporting.claims)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core import record
from core.reporting import claims, figures
from core.reporting.cells import fmt_delta, markdown
from core.reporting.claims import LoadTable
from core.reporting.select import protocol_tag, reference_dataset, run_header
from core.specs import DATASET_NAMES, Spec


def claims_block(spec: Spec, runs: pd.DataFrame, ds: str, profile: str, fig_dir: Path, rel: str,
                 load_table: LoadTable | None) -> list[str]:
    """Markdown lines for the claims on one dataset: one line per claim and metric, and the forest plot."""
    ref = reference_dataset(spec, ds)
    verdicts = claims.evaluate_claims(spec, runs, ref, load_table)
    table = pd.DataFrame([{"claim": v.claim, "metric": v.metric, "paper Δ": fmt_delta(v.paper_delta),
                           "this run Δ [95 % interval]": fmt_delta(v.delta) + (
                               f" [{v.low:+.1f}, {v.high:+.1f}]" if v.low is not None else ""),
                           "verdict": v.verdict + (f" ({v.reason})" if v.reason else "")} for v in verdicts])
    tag = protocol_tag(runs, ds, None)
    lines = [f"**Claims — {run_header(ds)}** (this run: headline protocol" + (f" = `{tag}`" if tag != "headline"
                                                                            else "") +
             f"; paper Δ: the paper's {DATASET_NAMES[ref]} column)", "", markdown(table), ""]
    if any(v.delta is not None for v in verdicts):
        nan = float("nan")
        fig = figures.forest_figure(
            [f"{v.claim} ({v.metric})" for v in verdicts],
            [nan if v.paper_delta is None else v.paper_delta for v in verdicts],
            [tuple(nan if x is None else x for x in (v.delta, v.low, v.high)) for v in verdicts],
            f"paper ({DATASET_NAMES[ref]})", f"this run ({run_header(ds)})",
            f"Claims — {spec.title} — {run_header(ds)}")
        path = figures.save(fig, fig_dir / f"{spec.table}_{profile}_{ds}_claims.png")
        lines += [f"![claims]({rel}/{path.name})", ""]
    return lines


def claims_lines(spec: Spec, runs: pd.DataFrame, datasets: list[str], profile: str, fig_dir: Path, rel: str,
                 load_table: LoadTable | None) -> list[str]:
    """The report's Claims section of one profile (core.reporting.claims)."""
    lines = ["### Claims", ""]
    if spec.claims_note:
        lines += [spec.claims_note, ""]
    if not spec.claims:
        return lines + [f"`experiments/{spec.path.name}` declares no claim.", ""]
    lines += [f"The paper's claims as declared in `experiments/{spec.path.name}` (`claims:`). Δ = the claimed row "
              f"− the beaten row, in percentage points, headline protocol; this run's Δ with its 95 % paired "
              f"bootstrap interval (both rows on the same resampled query identities; with several seeds, seeds "
              f"drawn per row too). Verdict: supported (the interval lies above 0), contradicted (below 0), "
              f"inconclusive (it contains 0); not comparable when the rows were not scored on the same queries.", ""]
    lines += [f"- {c.row} > {', '.join(c.beats)}: {c.note}" for c in spec.claims if c.note]
    lines += [""] if any(c.note for c in spec.claims) else []
    for ds in datasets:
        lines += claims_block(spec, runs[runs[record.DATASET] == ds], ds, profile, fig_dir, rel, load_table)
    return lines
