"""Reports: the tracking store's runs (an mlflow.search_runs frame) joined with a spec -> reports/<table>.md.

Each (profile, dataset) the store holds runs for gets a table in the paper's layout, once under the headline protocol
(the runs' eval options) and once under each other protocol of ``core.protocols`` (the paper never states its
own), dataset, protocol and split size in the table's caption: per metric this run's number (mean ± std over seeds)
and, on MARS and DukeMTMC-VideoReID, the paper's number and the difference; the count of queries that had no valid
match; and as the first line the split's chance level (the expected value of a uniformly random ranking, logged by
every run; core.evaluation.chance). Synthetic runs (MARS layout) are labelled synthetic and set beside chance, not
beside the paper. The section opens with what the runs ran, from their logged configs (data preset, split sizes,
model, epochs, …), and the keys in which they depart from their profile's declared settings. Every number of
this run carries its 95 % bootstrap interval and every claim of the spec (``claims:``) a verdict, both computed from
the runs' per-query results (core.reporting.claims); a run logged before those were kept shows its number without one.
Per row and seed the report takes the latest used FINISHED run (a reused run is stamped `used_at`); a row averages only runs whose
resolved configs equal that of its latest used run apart from the seed; the others are listed as left out. No
mlflow import here: artifacts come through the `load_json(run_id, name)` (JSON) and `load_table(run_id, name)`
(Parquet, a DataFrame) callables, each returning None for a missing artifact.

Writing order: the figures first, the markdown that links them next, and only then old figures no longer linked are
deleted, so a report killed half-way never links a missing figure.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from core import atomic, protocols, record
from core.record import AUDIT_CLIPS, TRAIN_WALL_S
from core.reporting import claims, figures
from core.reporting.audit import audit_lines
from core.reporting.cells import (
    chance_values,
    comparison_frame,
    fmt,
    logged_metric,
    mark,
    markdown,
    paper_frame,
    row_stats,
    table_caption,
)
from core.reporting.claims import LoadTable
from core.reporting.claims_section import claims_lines
from core.reporting.select import (
    DATASET_ORDER,
    compares_with_paper,
    left_out_lines,
    other_protocols,
    protocol_tag,
    reference_dataset,
    run_header,
    same_config_runs,
    select_runs,
)
from core.reporting.what_ran import interval_line, profile_lines, protocol_lines, ran_lines
from core.specs import DATASET_NAMES, Spec, profile_descriptions

LoadJson = Callable[[str, str], object]


def section(spec: Spec, runs: pd.DataFrame, profile: str, fig_dir: Path, rel: str,
            load_json: LoadJson | None, left_out: Sequence[dict] = (), load_table: LoadTable | None = None) -> str:
    """Markdown for one profile: protocol line, comparison tables with intervals, left-out runs, claims,
    figures, runs used."""
    datasets = [d for d in DATASET_ORDER if d in set(runs[record.DATASET])]
    seeds = sorted({int(s) for s in runs[record.SEED]})
    desc = profile_descriptions().get(profile, "")
    lines = [f"## Profile `{profile}` — {', '.join(run_header(d) for d in datasets)}", ""]
    if "synthetic" in datasets:
        lines += ["**Synthetic data.** These runs use the suite's generated dataset in the MARS layout; they test "
                  "the pipeline, are not MARS results and are not set beside the paper's numbers (those are at the "
                  "end, *The paper's numbers*): read them against the chance line of each table.", ""]
    lines += [*ran_lines(runs, datasets, seeds, load_table),
              *profile_lines(runs, profile, desc),
              "Metrics in percent" + ("; Δ = this run − paper." if any(map(compares_with_paper, datasets))
                                      else "."), "", interval_line(runs, seeds), ""]
    others = other_protocols(runs, datasets)
    lines += ["Protocols [A15] (the paper does not state its own; both are computed from one feature extraction):",
              "", *protocol_lines(runs, datasets, others)]
    notes: list[str] = []
    for name in (None, *others):
        for ds in datasets:
            lines += [table_caption(spec, runs, ds, name), "",
                      comparison_frame(spec, runs, ds, name, load_table, notes).pipe(markdown), ""]
    lines += [f"{mark(reason, notes)} {reason}" for reason in list(notes)] + ([""] if notes else [])
    lines += left_out_lines(left_out)
    lines += claims_lines(spec, runs, datasets, profile, fig_dir, rel, load_table)
    lines += audit_lines(spec, runs, datasets)
    for ds in datasets:
        sub = runs[runs[record.DATASET] == ds]
        for name, fig in _figures(spec, sub, ds, load_json, load_table):
            path = figures.save(fig, fig_dir / f"{spec.table}_{profile}_{ds}_{name}.png")
            lines += [f"![{name}]({rel}/{path.name})", ""]
    lines += ["<details><summary>Runs used (MLflow)</summary>", "", _runs_frame(spec, runs).pipe(markdown),
              "", "</details>", ""]
    return "\n".join(lines)


def _runs_frame(spec: Spec, runs: pd.DataFrame) -> pd.DataFrame:
    order = {r.label: r.index for r in spec.rows}
    out = [{"row": r[record.ROW], "dataset": r[record.DATASET], "seed": r[record.SEED], "run id": r["run_id"],
            "config hash": r.get(record.CONFIG_HASH, ""), "epochs": r.get(record.param_col("train.epochs"), ""),
            "model training s": fmt(logged_metric(r, TRAIN_WALL_S)), "device": r.get(record.DEVICE, ""),
            **_loss_terms(r), **_set_sizes(r)}
           for _, r in runs.iterrows()]
    df = pd.DataFrame(out)
    return df.sort_values(["dataset", "row", "seed"], key=lambda s: s.map(order) if s.name == "row" else s)


def _loss_terms(run: pd.Series) -> dict[str, str]:
    """The last epoch's mean loss terms, weighted as they enter the total (Eq. 7, 11)."""
    names = {"CE": "loss_ce", "triplet": "loss_triplet", "λ·Reg": "loss_reg_weighted", "total": "loss_total"}
    return {f"last epoch {k}": _fmt_loss(run.get(record.metric_col(v))) for k, v in names.items()}


def _fmt_loss(v) -> str:
    return "—" if v is None or pd.isna(v) else f"{float(v):.4g}"


def _set_sizes(run: pd.Series) -> dict[str, str]:
    """Gallery sizes of the named protocols and the re-ranked set (distinct tracklets), where logged."""
    sizes = {f"gallery {n}": run.get(record.metric_col(f"{n}_num_gallery")) for n in protocols.NAMES}
    sizes["re-ranked set"] = run.get(record.metric_col("rerank_set_size"))
    return {k: "—" if v is None or pd.isna(v) else str(int(v)) for k, v in sizes.items()}


def _interval(sel: pd.DataFrame, metric: str, load_table: LoadTable | None) -> tuple[float, float, float]:
    """(value, low, high) in percent of a row's headline metric, as its table cell prints it (nan: none)."""
    mean, _, n = row_stats(sel, metric)
    est = claims.cell_interval(sel, metric, claims.HEADLINE, load_table)[0] if n else None
    return (mean, np.nan, np.nan) if est is None else (mean, 100 * est.low, 100 * est.high)


def _figures(spec: Spec, runs: pd.DataFrame, ds: str, load_json: LoadJson | None,
             load_table: LoadTable | None = None):
    """(name, Figure) pairs: rows with their 95 % intervals and chance (Tables 1-3; the paper's numbers beside
    them on paper datasets only), CMC curves with the chance CMC, attention over frames."""
    ref = reference_dataset(spec, ds)
    paper_too = compares_with_paper(ds)
    paper_name, ours_name = f"paper ({DATASET_NAMES[ref]})", f"this run ({run_header(ds)})"
    rows = [r for r in spec.run_rows if (runs[record.ROW] == r.label).any() and (ref in r.paper or not paper_too)]
    kind, key, x_name = (spec.figure.kind, spec.figure.x, spec.figure.label) if spec.figure else ("", "", "")
    if rows and kind:
        paper = {m: [r.paper[ref][m] if r.paper[ref][m] is not None else np.nan for r in rows]
                 for m in spec.metrics} if paper_too else None
        ours = {m: [_interval(runs[runs[record.ROW] == r.label], m, load_table) for r in rows] for m in spec.metrics}
        chance = {m: float(np.mean(v)) if (v := chance_values(runs, m)) else np.nan for m in spec.metrics}
        title = f"{spec.title} — {run_header(ds)}, headline protocol ({protocol_tag(runs, ds, None)})"
        if kind == "bars":
            yield "bars", figures.bars_figure([r.label for r in rows], spec.metrics, ours, ours_name, title,
                                              paper, paper_name, chance)
        elif all(key in r.overrides for r in rows):
            yield "lines", figures.lines_figure([r.overrides[key] for r in rows], x_name, spec.metrics, ours,
                                                ours_name, title, paper, paper_name, chance)
    if load_json is None:
        return
    curves, chance_cmc, clips, clip_row = {}, None, None, ""
    for r in spec.run_rows:
        sel = runs[runs[record.ROW] == r.label]
        found = [c for c in (load_json(rid, record.CMC) for rid in sel["run_id"]) if c]
        if found:
            curves[r.label] = np.mean(np.array([c["cmc"] for c in found], dtype=float), axis=0).tolist()
            chance_cmc = chance_cmc or next((c["chance"] for c in found if c.get("chance")), None)
    for r in reversed(spec.run_rows):    # the last row with scores (STA models): the full model
        found = next((c for c in (load_json(rid, "scores.json") for rid in runs.loc[runs[record.ROW] == r.label,
                                                                                      "run_id"]) if c), None)
        if found:
            clips, clip_row = found["clips"], r.label
            break
    if curves:
        yield "cmc", figures.cmc_figure(curves, f"CMC — {spec.title} — {run_header(ds)}", chance_cmc)
    if clips:
        yield "attention", figures.attention_figure(clips, f"N x K attention scores — {clip_row} ({run_header(ds)})")
    for r in reversed(spec.run_rows):    # the attention audit's clips (synthetic data with ground truth)
        found = next((c for c in (load_json(rid, AUDIT_CLIPS) for rid in runs.loc[runs[record.ROW] == r.label,
                                                                                    "run_id"]) if c), None)
        if found:
            yield "attention_audit", figures.attention_figure(
                found["clips"], f"Attention audit — {r.label} ({run_header(ds)}): clips with damage")
            break


def render(spec: Spec, runs: pd.DataFrame, fig_dir: Path, rel: str = "figures",
           load_json: LoadJson | None = None, load_table: LoadTable | None = None) -> str:
    """The whole report as markdown."""
    load_table = claims.cached(load_table)
    sel, left = same_config_runs(select_runs(runs), runs)
    out = [f"# {spec.title}", "",
           f"Reproduction of Fu et al., *STA: Spatial-Temporal Attention for Large-Scale Video-based Person "
           f"Re-Identification* (AAAI 2019). Spec: `experiments/{spec.path.name}`. Generated from the MLflow "
           f"experiment `STA {spec.table}` by `python reproduce/report.py` (rebuilt after every "
           f"`python reproduce/{spec.table}.py`); never edited by hand.", ""]
    if spec.notes:
        out += [spec.notes, ""]
    if sel.empty:
        out += ["No finished runs yet in the tracking store; only the paper's numbers are shown.", ""]
    for profile in sorted(set(sel[record.PROFILE])) if not sel.empty else []:
        out.append(section(spec, sel[sel[record.PROFILE] == profile], profile, fig_dir, rel, load_json,
                           [lo for lo in left if lo["profile"] == profile], load_table))
    deviations = [f"- **{r.label}**: {r.deviation}" for r in spec.rows if r.deviation]
    used = {r.preset.name: r.preset for r in spec.run_rows if r.preset}
    for name, preset in used.items():
        rows = ", ".join(r.label for r in spec.run_rows if r.preset and r.preset.name == name)
        deviations.append(f"- **preset `{name}`** (`experiments/presets.yaml`; rows: {rows}): {preset.deviation}")
    if deviations:
        out += ["## Deviations from the paper", "", *deviations, ""]
    out += ["## The paper's numbers (as printed)", "", paper_frame(spec).pipe(markdown), ""]
    return "\n".join(out)


def write_report(spec: Spec, runs: pd.DataFrame, reports_dir: str | Path = "reports",
                 load_json: LoadJson | None = None, load_table: LoadTable | None = None) -> Path:
    """Write reports/<table>.md (+ reports/figures/<table>_*.png); returns the markdown path.

    Figures first, then the markdown, then old figures it no longer links are deleted (see the module doc)."""
    reports_dir = Path(reports_dir)
    fig_dir = reports_dir / "figures"
    text = render(spec, runs, fig_dir, "figures", load_json, load_table)  # saves the figures (each atomically)
    path = atomic.save_text(text, reports_dir / f"{spec.table}.md")
    linked = set(re.findall(r"\]\(figures/([^)]+)\)", text))
    for old in fig_dir.glob(f"{spec.table}_*.png"):
        if old.name not in linked:
            old.unlink(missing_ok=True)
    return path


def claim_records(spec: Spec, runs: pd.DataFrame, load_table: LoadTable | None = None) -> list[dict]:
    """The report's claim verdicts as JSON-able records, one per (profile, dataset, claim, beaten row, metric),
    for MLflow (tracking.log_claims): the same runs and computation as the report's Claims section."""
    sel, _ = same_config_runs(select_runs(runs))
    out: list[dict] = []
    for (profile, ds), group in (sel.groupby([record.PROFILE, record.DATASET]) if not sel.empty else []):
        ref = reference_dataset(spec, ds)
        out += claims.records(claims.evaluate_claims(spec, group, ref, load_table), table=spec.table,
                              profile=profile, dataset=ds, reference=ref, protocol=protocol_tag(group, ds, None))
    return out


def write_index(reports_dir: str | Path = "reports") -> Path:
    """reports/README.md: one line per report present (the tables first, then e.g. tuning reports)."""
    reports_dir = Path(reports_dir)
    lines = ["# Reports", "", "Generated from the MLflow store joined with `experiments/*.yaml` "
             "(`python reproduce/report.py` rebuilds the tables' reports without training). Numbers in percent; "
             "synthetic runs are labelled as such and are not MARS or DukeMTMC-VideoReID results.", ""]
    pages = sorted((p for p in reports_dir.glob("*.md") if p.name != "README.md"),
                   key=lambda p: (not p.stem.startswith("table"), p.stem))
    for md in pages:
        title = md.read_text().splitlines()[0].lstrip("# ").strip() if md.stat().st_size else md.stem
        lines.append(f"- [{md.stem}]({md.name}): {title}")
    return atomic.save_text("\n".join(lines) + "\n", reports_dir / "README.md")
