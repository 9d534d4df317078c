"""The comparison tables' cells: a row's number (mean ± std over seeds) with its 95 % interval or a footnote mark
saying why it has none, the paper's number and Δ on a paper dataset, the split's chance level as the first line."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core import protocols, record
from core.record import OLD_METRIC_NAMES
from core.reporting import claims
from core.reporting.claims import LoadTable
from core.reporting.select import compares_with_paper, protocol_tag, reference_dataset, run_header
from core.specs import DATASET_NAMES, PAPER_DATASETS, Spec

MARKS = ("†", "‡", "§", "¶")        # footnote marks of the reasons a number has no interval


CHANCE_ROW = "chance (random ranking)"   # the first line of every comparison table


NO_MATCH = "queries without a valid match"


NO_CHANCE = "chance level not logged: runs logged before the suite computed it (`--force` reruns them)"


def metric_column(run: pd.Series, metric: str, prefix: str = "") -> str:
    """Rows evaluated with re-ranking (eval.rerank: true, Table 4's STA + ReRank) report rerank_<metric>;
    `prefix` picks a protocol ('' headline, 'official_', 'gao_'; core.protocols)."""
    return record.metric_col(f"{prefix}{'rerank_' if claims.reranked(run) else ''}{metric}")


def row_stats(sel: pd.DataFrame, metric: str, prefix: str = "") -> tuple[float, float, int]:
    """(mean, std, seeds) of one metric over a row's runs; std is nan with one seed."""
    vals = [float(r[metric_column(r, metric, prefix)]) for _, r in sel.iterrows()
            if pd.notna(r.get(metric_column(r, metric, prefix)))]
    if not vals:
        return float("nan"), float("nan"), 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan"), len(vals)


def markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True)   # keep "64.0" as printed, not "64"


def logged_metric(run: pd.Series, name: str) -> float | None:
    """A run's metric `name`, or, for a run logged before its rename (OLD_METRIC_NAMES), the old name's."""
    for key in (name, OLD_METRIC_NAMES.get(name)):
        value = run.get(record.metric_col(key)) if key else None
        if value is not None and not pd.isna(value):
            return value
    return None


def fmt(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.1f}"


def _fmt_stat(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "—"
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def mark(reason: str, notes: list[str]) -> str:
    """The footnote mark of `reason`, added to `notes` (the section's reasons, in order) when new."""
    if reason not in notes:
        notes.append(reason)
    i = notes.index(reason)
    return MARKS[i] if i < len(MARKS) else f"({i + 1})"


def _fmt_cell(mean: float, std: float, n: int, est, reason: str, notes: list[str]) -> str:
    """'64.0 [61.2, 66.8]' (one seed), '55.0 ± 7.1 [46.3, 63.0]' (seeds), '64.0 †' (no interval: see the note)."""
    text = _fmt_stat(mean, std, n)
    if n == 0:
        return text
    if est is None:
        return f"{text} {mark(reason, notes)}"
    return f"{text} [{100 * est.low:.1f}, {100 * est.high:.1f}]"


def fmt_delta(v: float | None) -> str:
    return "—" if v is None or np.isnan(v) else f"{v:+.1f}"


def comparison_frame(spec: Spec, runs: pd.DataFrame, ds: str, protocol: str | None = None,
                     load_table: LoadTable | None = None, notes: list[str] | None = None) -> pd.DataFrame:
    """One dataset under one protocol (named in the table's caption, table_caption, not in its columns): per
    metric this run's number with its 95 % interval (core.reporting.claims), and on a paper dataset the paper's number
    and Δ beside it (synthetic runs are not comparable with the paper: no paper columns, and rows the suite does not
    run are left out), then the number of queries without a valid match. The first line is the split's chance
    level (core.evaluation.chance, logged per run). `protocol`: None for the headline metrics (R1 …), else a name
    of core.protocols (official_R1 …). A cell without an interval gets a footnote mark whose reason is appended
    to `notes`."""
    notes = [] if notes is None else notes
    prefix = f"{protocol}_" if protocol else ""
    ref = reference_dataset(spec, ds)
    paper_cols = compares_with_paper(ds)
    sub = runs[runs[record.DATASET] == ds] if not runs.empty else runs
    table = []
    for row in spec.rows:
        if not row.run and not paper_cols:
            continue
        line = {"#": row.index, "row": row.label}
        sel = sub[sub[record.ROW] == row.label] if not sub.empty else sub
        for m in spec.metrics:
            paper = row.paper.get(ref, {}).get(m)
            mean, std, n = row_stats(sel, m, prefix) if row.run else (float("nan"), float("nan"), 0)
            est, why = claims.cell_interval(sel, m, protocol or claims.HEADLINE, load_table) if n else (None, "")
            if paper_cols:
                line[f"paper {m}"] = fmt(paper)
            line[m] = _fmt_cell(mean, std, n, est, why, notes) if row.run else "quoted"
            if paper_cols:
                line[f"Δ {m}"] = fmt(mean - paper) if n and paper is not None else "—"
        line[NO_MATCH] = count_cell(sel, f"{prefix}num_skipped_queries") if row.run else ""
        table.append(line)
    chance = {"#": "—", "row": CHANCE_ROW}          # first line, its footnote mark after the rows' own
    for m in spec.metrics:
        chance.update({f"paper {m}": "—"} if paper_cols else {})
        chance[m] = chance_cell(sub, m, prefix)
        if chance[m] == "—" and not sub.empty:
            chance[m] += f" {mark(NO_CHANCE, notes)}"
        chance.update({f"Δ {m}": "—"} if paper_cols else {})
    return pd.DataFrame([{**chance, NO_MATCH: ""}, *table])


def chance_values(sel: pd.DataFrame, metric: str, prefix: str = "") -> list[float]:
    """The chance level of `metric` (percent) logged by each run of `sel` under a protocol prefix."""
    col = record.metric_col(protocols.chance_name(metric, prefix))
    return sel[col].dropna().astype(float).tolist() if col in sel else []


def chance_cell(sel: pd.DataFrame, metric: str, prefix: str = "") -> str:
    """'0.22' (every run's split the same), '0.22–0.31' (splits differ), '—' (runs logged before chance levels)."""
    vals = sorted({round(v, 2) for v in chance_values(sel, metric, prefix)})
    return "—" if not vals else f"{vals[0]:.2f}" if len(vals) == 1 else f"{vals[0]:.2f}–{vals[-1]:.2f}"


def table_caption(spec: Spec, runs: pd.DataFrame, ds: str, protocol: str | None) -> str:
    """The caption of one comparison table: which numbers, which dataset, which protocol, the split's size, what
    the chance line is (the columns then need neither dataset nor protocol)."""
    prefix = f"{protocol}_" if protocol else ""
    sub = runs[runs[record.DATASET] == ds]
    if protocol:
        head, what = f"**Protocol `{protocol}` — {run_header(ds)}**", protocols.named(ds)[protocol].describe(ds)
    else:
        heads = sorted({protocols.headline(ds, record.param(r, "data.gallery_with_queries") is True,
                                           str(record.param(r, "eval.ap_rule"))).describe(ds)
                        for _, r in sub.iterrows()})
        tag = protocol_tag(runs, ds, None)
        head = f"**Headline protocol — {run_header(ds)}**"
        what = ("" if tag == "headline" else f"= `{tag}`: ") + " / ".join(heads)
    sizes = [f"{v} {name}" for v, name in ((count_cell(sub, f"{prefix}num_queries"), "queries with a valid match"),
                                           (count_cell(sub, f"{prefix}num_gallery"), "gallery tracklets")) if v != "—"]
    paper = (f" Paper: the paper's {DATASET_NAMES[reference_dataset(spec, ds)]} column; Δ = this run − paper."
             if compares_with_paper(ds) else "")
    return (f"{head} ({what}{'; ' + ', '.join(sizes) if sizes else ''}). Percent: this run's value [95 % interval]; "
            f"first line: the chance level, the expected value of a uniformly random ranking of this split under this "
            f"protocol (`core/evaluation/chance.py`).{paper}")


def count_cell(sel: pd.DataFrame, metric: str) -> str:
    """A count logged per run (e.g. num_skipped_queries): one number, or 'a–b' when the seeds differ."""
    col = record.metric_col(metric)
    vals = sorted({int(v) for v in sel[col].dropna()}) if col in sel else []
    return "—" if not vals else str(vals[0]) if len(vals) == 1 else f"{vals[0]}–{vals[-1]}"


def paper_frame(spec: Spec) -> pd.DataFrame:
    """The paper's table as printed (every dataset it reports)."""
    datasets = [d for d in PAPER_DATASETS if any(d in r.paper for r in spec.rows)]
    return pd.DataFrame([{"#": r.index, "row": r.label,
                          **{f"{DATASET_NAMES[d]} {m}": fmt(r.paper.get(d, {}).get(m))
                             for d in datasets for m in spec.metrics}} for r in spec.rows])
