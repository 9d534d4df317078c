"""The attention-audit section of a report (STA rows on synthetic data; the maths: core.evaluation.attention_audit):
the audit's numbers per row with their intervals, and what they say against the untrained model and chance."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core import record
from core.config import EvalConfig
from core.reporting.cells import count_cell, markdown
from core.reporting.claims import interval_side
from core.reporting.select import run_header
from core.reporting.what_ran import values_text
from core.specs import Spec


def _audit_cell(sel: pd.DataFrame, name: str, digits: int = 3) -> str:
    """A row's audit metric: 'v [low, high]' (one seed), 'mean ± std' (seeds), '—' (not logged)."""
    col = record.metric_col(name)
    vals = sel[col].dropna().astype(float).tolist() if col in sel else []
    if not vals:
        return "—"
    if len(vals) > 1:
        return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"
    low, high = (sel[f"{col}_ci_{b}"].dropna().astype(float).tolist() if f"{col}_ci_{b}" in sel else []
                 for b in ("low", "high"))
    bounds = f" [{low[0]:.{digits}f}, {high[0]:.{digits}f}]" if low and high else ""
    return f"{vals[0]:.{digits}f}{bounds}"


def _regions_cell(sel: pd.DataFrame, name: str) -> str:
    """The per-region AUCs of a row, top region first: 'k1 0.61, k2 0.55, …' (mean over seeds)."""
    out, k = [], 1
    while record.metric_col(f"{name}_k{k}") in sel:
        vals = sel[record.metric_col(f"{name}_k{k}")].dropna().astype(float)
        out.append(f"k{k} {vals.mean():.2f}" if len(vals) else f"k{k} —")
        k += 1
    return ", ".join(out) or "—"


def audit_side(sel: pd.DataFrame, name: str, at: float) -> str | None:
    """Where the 95 % interval of a row's one-seed metric lies against `at`: "above", "below", "around"; None when
    the row has no interval (not logged, or several seeds)."""
    cols = [record.metric_col(f"{name}{b}") for b in ("", "_ci_low", "_ci_high")]
    if len(sel) != 1 or any(c not in sel or pd.isna(sel[c].iloc[0]) for c in cols):
        return None
    low, high = float(sel[cols[1]].iloc[0]), float(sel[cols[2]].iloc[0])
    return interval_side(low, high, at)


def audit_reading(label: str, sel: pd.DataFrame) -> str | None:
    """One sentence on what a row's audit intervals show (None without them): whether the scores and the Eq. 1
    map prefer clean region-frames / cells (AUC interval against 0.5) and whether training moved them (gain
    interval against 0). Read from the logged intervals, so it changes with the numbers."""
    prefer = {"above": "clean preferred over occluded", "below": "occluded preferred over clean",
              "around": "no preference detectable at 95 %"}
    moved = {"above": "more than untrained", "below": "less than untrained", "around": "no different from untrained"}
    parts = []
    for name, what in (("attn_auc_region", "Eq. 4 scores"), ("attn_auc_map", "Eq. 1 map")):
        side, gain = audit_side(sel, name, 0.5), audit_side(sel, f"{name}_gain", 0.0)
        if side is None:
            continue
        text = f"{what}: {prefer[side]} (AUC interval {side} 0.5)"
        if gain is not None:
            text += f", {moved[gain]} (gain interval {gain} 0)"
        parts.append(text)
    return f"- **{label}**: " + "; ".join(parts) + "." if parts else None


def audit_lines(spec: Spec, runs: pd.DataFrame, datasets: list[str]) -> list[str]:
    """The report's attention audit (core.engine.audit): one line per STA row and dataset."""
    table, readings = [], []
    for ds in datasets:
        for row in spec.run_rows:
            sel = runs[(runs[record.DATASET] == ds) & (runs[record.ROW] == row.label)]
            dev = record.metric_col("attn_dev_uniform")
            if sel.empty or dev not in sel or sel[dev].isna().all():
                continue
            reading = audit_reading(f"{row.label} ({run_header(ds)})", sel)
            readings += [reading] if reading else []
            synthetic = "synthetic truth" if ds == "synthetic" else "synthetic truth only"
            pairs = "/".join(count_cell(sel, f"attn_pairs_{k}") for k in ("region", "map"))
            table.append({"row": row.label, "data": run_header(ds),
                          "mean \\|S − 1/N\\|": _audit_cell(sel, "attn_dev_uniform", 4),
                          "entropy / log N": _audit_cell(sel, "attn_entropy", 4),
                          "mean \\|S − 1/N\\| on audited clips: trained / untrained":
                              f"{_audit_cell(sel, 'attn_dev_uniform_audited', 4)} / "
                              f"{_audit_cell(sel, 'attn_dev_uniform_untrained', 4)}",
                          f"AUC scores ({synthetic})": _audit_cell(sel, "attn_auc_region"),
                          "scores untrained": _audit_cell(sel, "attn_auc_region_untrained"),
                          "scores gain": _audit_cell(sel, "attn_auc_region_gain"),
                          "per region (trained)": _regions_cell(sel, "attn_auc_region"),
                          f"AUC Eq. 1 map ({synthetic})": _audit_cell(sel, "attn_auc_map"),
                          "map untrained": _audit_cell(sel, "attn_auc_map_untrained"),
                          "map gain": _audit_cell(sel, "attn_auc_map_gain"),
                          "pairs (region-frames / cells)": pairs})
    if not table:
        return []
    thr = values_text(runs, "eval.audit_occluded")
    thr = EvalConfig.audit_occluded if thr == "—" else thr
    return ["### Attention audit", "",
            "Does STA's attention prefer the frames where a region is visible (the paper's Fig. 1 and 4)? "
            "Uniformity, on every dataset: mean \\|S − 1/N\\| over test clips, frames and regions is 0 and the "
            "per-region entropy over the N frames / log N is 1 when every frame gets 1/N of each region (STA then "
            "pools like a temporal average); a one-hot choice gives 2(N − 1)/N² and 0. AUCs, on **synthetic** data "
            "only (the generator's ground truth of what it occluded, blurred or cut): the probability that a clean "
            "region-frame (nothing damaged) scores above an occluded one (a damaged fraction of at least "
            f"eval.audit_occluded = {thr}) of the same region and clip, ties counting half, pooled over regions; "
            "for the Eq. 1 map the same with clean against occluded grid cells of one frame (audited clips: those with "
            "such a pair). **0.5 = no preference**, "
            "1 = clean always above occluded, below 0.5 = occluded preferred. *Untrained*: the same architecture "
            "with the weights training starts from (seed train.seed), on the same pairs: the AUC that the energy "
            "of Eq. 1 gives without training; *gain* = trained − untrained (paired). Intervals: 95 % cluster "
            "bootstrap over identities (eval.bootstrap_resamples, eval.bootstrap_seed); with several seeds, "
            "mean ± std over seeds. The audit figure (below) draws a few clips with damage: scores over the "
            "frames, true damage outlined.", "",
            markdown(pd.DataFrame(table)), ""] + \
        (["What the intervals show (one seed; written from the numbers above):", "", *readings, ""] if readings else [])
