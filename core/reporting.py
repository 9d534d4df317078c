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
the runs' per-query results (core.claims); a run logged before those were kept shows its number without one. Per
row and seed
the report takes the latest used FINISHED run (a reused run is stamped `used_at`); a row averages only runs whose
resolved configs equal that of its latest used run apart from the seed; the others are listed as left out. No
mlflow import here: artifacts come through the `load_json(run_id, name)` (JSON) and `load_table(run_id, name)`
(Parquet, a DataFrame) callables, each returning None for a missing artifact.

Writing order: the figures first, the markdown that links them next, and only then old figures no longer linked are
deleted, so a report killed half-way never links a missing figure.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from core import ambiguities, claims, figures, protocols
from core.claims import LoadTable
from core.config import RESULT_NEUTRAL_KEYS, EvalConfig, allowed_keys
from core.specs import DATASET_NAMES, OLD_METRIC_NAMES, PAPER_DATASETS, TRAIN_WALL_S, Spec, profile_descriptions

LoadJson = Callable[[str, str], object]
DATASET_ORDER = ("mars", "duke", "synthetic")
# keys in which the seeds of one report row may differ: the seed itself and the keys that cannot change a result
# (the same list core.config.config_hash leaves out)
SEED_KEYS = ("train.seed", *RESULT_NEUTRAL_KEYS)
MARKS = ("†", "‡", "§", "¶")        # footnote marks of the reasons a number has no interval
AUDIT_CLIPS = "audit_clips.json"    # artifact of an STA row run on synthetic data: the audit figure's clips
CHANCE_ROW = "chance (random ranking)"   # the first line of every comparison table
NO_MATCH = "queries without a valid match"
NO_CHANCE = "chance level not logged: runs logged before the suite computed it (`--force` reruns them)"


def reference_dataset(spec: Spec, dataset: str) -> str:
    """The paper dataset a run on `dataset` is compared with (synthetic: MARS, the layout it imitates)."""
    have = [d for d in PAPER_DATASETS if any(d in r.paper for r in spec.rows)]
    return dataset if dataset in have else (have[0] if have else "mars")


def run_header(dataset: str) -> str:
    return "synthetic, MARS layout" if dataset == "synthetic" else DATASET_NAMES.get(dataset, dataset)


def select_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """FINISHED row runs, the latest used per (profile, dataset, row, seed)."""
    if runs.empty or "tags.row" not in runs:
        return pd.DataFrame()
    df = runs[runs["status"] == "FINISHED"].copy()
    if df.empty:
        return df
    start = pd.to_datetime(df["start_time"], utc=True).astype("int64") / 1e9
    used = pd.to_numeric(df["tags.used_at"], errors="coerce") if "tags.used_at" in df else pd.Series(np.nan, df.index)
    df["_used"] = used.fillna(start)
    df = df.sort_values("_used").groupby(["tags.profile", "tags.dataset", "tags.row", "tags.seed"]).tail(1)
    return df.reset_index(drop=True)


def _param_text(value) -> str:
    return "(not logged)" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def same_config_runs(sel: pd.DataFrame, runs: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Split select_runs() output: per (profile, dataset, row) the runs whose resolved config (MLflow params of
    every config key but SEED_KEYS) equals that of the row's latest used run, and the others, left out as
    {profile, dataset, row, seed, run_id, keys: {key: (its value, the kept runs' value)}}. Given `runs` (all the
    runs select_runs chose from), the older FINISHED runs of a row and seed that select_runs passed over are left
    out too when their config differs (an earlier config of that seed: listed, not silently dropped)."""
    if sel.empty:
        return sel, []
    if runs is not None and not runs.empty and "run_id" in runs:
        older = runs[(runs["status"] == "FINISHED") & ~runs["run_id"].isin(sel["run_id"])]
        older = older[older.set_index(["tags.profile", "tags.dataset", "tags.row"]).index.isin(
            sel.set_index(["tags.profile", "tags.dataset", "tags.row"]).index)]
        if not older.empty:
            kept, left = same_config_runs(sel)
            refs = {key: g.loc[g["_used"].idxmax()] if "_used" in g else g.iloc[-1]
                    for key, g in sel.groupby(["tags.profile", "tags.dataset", "tags.row"], sort=False)}
            cols = [f"params.{k}" for k in allowed_keys() if k not in SEED_KEYS and f"params.{k}" in runs]
            for _, run in older.sort_values("start_time").iterrows():
                ref = refs[run["tags.profile"], run["tags.dataset"], run["tags.row"]]
                diff = {c[len("params."):]: (_param_text(run.get(c)), _param_text(ref.get(c))) for c in cols
                        if _param_text(run.get(c)) != _param_text(ref.get(c))}
                if diff:
                    left.append({"profile": run["tags.profile"], "dataset": run["tags.dataset"],
                                 "row": run["tags.row"], "seed": run["tags.seed"], "run_id": run["run_id"],
                                 "keys": diff})
            return kept, left
    cols = [f"params.{k}" for k in allowed_keys() if k not in SEED_KEYS and f"params.{k}" in sel]
    order = sel["_used"] if "_used" in sel else pd.to_datetime(sel["start_time"], utc=True).astype("int64")
    keep, left = [], []
    for _, group in sel.groupby(["tags.profile", "tags.dataset", "tags.row"], sort=False):
        ref = group.loc[order[group.index].idxmax()]
        for idx, run in group.iterrows():
            diff = {c[len("params."):]: (_param_text(run.get(c)), _param_text(ref.get(c))) for c in cols
                    if _param_text(run.get(c)) != _param_text(ref.get(c))}
            if diff:
                left.append({"profile": run["tags.profile"], "dataset": run["tags.dataset"], "row": run["tags.row"],
                             "seed": run["tags.seed"], "run_id": run["run_id"], "keys": diff})
            else:
                keep.append(idx)
    return sel.loc[keep].reset_index(drop=True), left


def left_out_lines(left: Sequence[dict]) -> list[str]:
    """Markdown lines naming each left-out run and the keys in which it differs."""
    if not left:
        return []
    lines = ["**Left out** (resolved config differs from the row's latest run in more than the seed, so it is not "
             "averaged with it):", ""]
    for lo in left:
        keys = ", ".join(f"{k} = {mine} (kept runs: {kept})" for k, (mine, kept) in lo["keys"].items())
        lines.append(f"- {lo['row']} ({run_header(lo['dataset'])}), seed {lo['seed']}: run `{lo['run_id']}` — {keys}")
    return lines + [""]


def metric_column(run: pd.Series, metric: str, prefix: str = "") -> str:
    """Rows evaluated with re-ranking (eval.rerank: true, Table 4's STA + ReRank) report rerank_<metric>;
    `prefix` picks a protocol ('' headline, 'official_', 'gao_'; core.protocols)."""
    return f"metrics.{prefix}rerank_{metric}" if claims.reranked(run) else f"metrics.{prefix}{metric}"


def row_stats(sel: pd.DataFrame, metric: str, prefix: str = "") -> tuple[float, float, int]:
    """(mean, std, seeds) of one metric over a row's runs; std is nan with one seed."""
    vals = [float(r[metric_column(r, metric, prefix)]) for _, r in sel.iterrows()
            if pd.notna(r.get(metric_column(r, metric, prefix)))]
    if not vals:
        return float("nan"), float("nan"), 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan"), len(vals)


def _markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True)   # keep "64.0" as printed, not "64"


def _metric(run: pd.Series, name: str) -> float | None:
    """A run's metric `name`, or, for a run logged before its rename (OLD_METRIC_NAMES), the old name's."""
    for key in (name, OLD_METRIC_NAMES.get(name)):
        value = run.get(f"metrics.{key}") if key else None
        if value is not None and not pd.isna(value):
            return value
    return None


def _fmt(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.1f}"


def _fmt_stat(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "—"
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def _mark(reason: str, notes: list[str]) -> str:
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
        return f"{text} {_mark(reason, notes)}"
    return f"{text} [{100 * est.low:.1f}, {100 * est.high:.1f}]"


def _fmt_delta(v: float | None) -> str:
    return "—" if v is None or np.isnan(v) else f"{v:+.1f}"


def headline_names(runs: pd.DataFrame, ds: str) -> set[str | None]:
    """The named protocol each run's headline metrics equal (None: another combination of the options)."""
    sub = runs[runs["tags.dataset"] == ds]
    return {protocols.headline_name(ds, str(r.get("params.data.gallery_with_queries")) == "True",
                                    str(r.get("params.eval.ap_rule"))) for _, r in sub.iterrows()}


def _tag(runs: pd.DataFrame, ds: str, protocol: str | None) -> str:
    """Column tag of a protocol: its name, or for the headline the named protocol it equals, else 'headline'."""
    if protocol:
        return protocol
    names = headline_names(runs, ds)
    return next(iter(names)) if len(names) == 1 and None not in names else "headline"


def other_protocols(runs: pd.DataFrame, datasets: list[str]) -> list[str]:
    """The named protocols to show beside the headline: all but one every dataset's headline already equals."""
    return [n for n in protocols.NAMES if any(headline_names(runs, ds) != {n} for ds in datasets)]


def comparison_frame(spec: Spec, runs: pd.DataFrame, ds: str, protocol: str | None = None,
                     load_table: LoadTable | None = None, notes: list[str] | None = None) -> pd.DataFrame:
    """One dataset under one protocol (named in the table's caption, table_caption, not in its columns): per
    metric this run's number with its 95 % interval (core.claims), and on a paper dataset the paper's number and
    Δ beside it (synthetic runs are not comparable with the paper: no paper columns, and rows the suite does not
    run are left out), then the number of queries without a valid match. The first line is the split's chance
    level (core.evaluation.chance, logged per run). `protocol`: None for the headline metrics (R1 …), else a name
    of core.protocols (official_R1 …). A cell without an interval gets a footnote mark whose reason is appended
    to `notes`."""
    notes = [] if notes is None else notes
    prefix = f"{protocol}_" if protocol else ""
    ref = reference_dataset(spec, ds)
    paper_cols = compares_with_paper(ds)
    sub = runs[runs["tags.dataset"] == ds] if not runs.empty else runs
    table = []
    for row in spec.rows:
        if not row.run and not paper_cols:
            continue
        line = {"#": row.index, "row": row.label}
        sel = sub[sub["tags.row"] == row.label] if not sub.empty else sub
        for m in spec.metrics:
            paper = row.paper.get(ref, {}).get(m)
            mean, std, n = row_stats(sel, m, prefix) if row.run else (float("nan"), float("nan"), 0)
            est, why = claims.cell_interval(sel, m, protocol or claims.HEADLINE, load_table) if n else (None, "")
            if paper_cols:
                line[f"paper {m}"] = _fmt(paper)
            line[m] = _fmt_cell(mean, std, n, est, why, notes) if row.run else "quoted"
            if paper_cols:
                line[f"Δ {m}"] = _fmt(mean - paper) if n and paper is not None else "—"
        line[NO_MATCH] = _count(sel, f"{prefix}num_skipped_queries") if row.run else ""
        table.append(line)
    chance = {"#": "—", "row": CHANCE_ROW}          # first line, its footnote mark after the rows' own
    for m in spec.metrics:
        chance.update({f"paper {m}": "—"} if paper_cols else {})
        chance[m] = chance_cell(sub, m, prefix)
        if chance[m] == "—" and not sub.empty:
            chance[m] += f" {_mark(NO_CHANCE, notes)}"
        chance.update({f"Δ {m}": "—"} if paper_cols else {})
    return pd.DataFrame([{**chance, NO_MATCH: ""}, *table])


def compares_with_paper(dataset: str) -> bool:
    """Whether a dataset's numbers are set beside the paper's (MARS, DukeMTMC-VideoReID), not synthetic data."""
    return dataset != "synthetic"


def chance_values(sel: pd.DataFrame, metric: str, prefix: str = "") -> list[float]:
    """The chance level of `metric` (percent) logged by each run of `sel` under a protocol prefix."""
    col = f"metrics.{protocols.chance_name(metric, prefix)}"
    return sel[col].dropna().astype(float).tolist() if col in sel else []


def chance_cell(sel: pd.DataFrame, metric: str, prefix: str = "") -> str:
    """'0.22' (every run's split the same), '0.22–0.31' (splits differ), '—' (runs logged before chance levels)."""
    vals = sorted({round(v, 2) for v in chance_values(sel, metric, prefix)})
    return "—" if not vals else f"{vals[0]:.2f}" if len(vals) == 1 else f"{vals[0]:.2f}–{vals[-1]:.2f}"


def table_caption(spec: Spec, runs: pd.DataFrame, ds: str, protocol: str | None) -> str:
    """The caption of one comparison table: which numbers, which dataset, which protocol, the split's size, what
    the chance line is (the columns then need neither dataset nor protocol)."""
    prefix = f"{protocol}_" if protocol else ""
    sub = runs[runs["tags.dataset"] == ds]
    if protocol:
        head, what = f"**Protocol `{protocol}` — {run_header(ds)}**", protocols.named(ds)[protocol].describe(ds)
    else:
        heads = sorted({protocols.headline(ds, str(r.get("params.data.gallery_with_queries")) == "True",
                                           str(r.get("params.eval.ap_rule"))).describe(ds) for _, r in sub.iterrows()})
        tag = _tag(runs, ds, None)
        head = f"**Headline protocol — {run_header(ds)}**"
        what = ("" if tag == "headline" else f"= `{tag}`: ") + " / ".join(heads)
    sizes = [f"{v} {name}" for v, name in ((_count(sub, f"{prefix}num_queries"), "queries with a valid match"),
                                           (_count(sub, f"{prefix}num_gallery"), "gallery tracklets")) if v != "—"]
    paper = (f" Paper: the paper's {DATASET_NAMES[reference_dataset(spec, ds)]} column; Δ = this run − paper."
             if compares_with_paper(ds) else "")
    return (f"{head} ({what}{'; ' + ', '.join(sizes) if sizes else ''}). Percent: this run's value [95 % interval]; "
            f"first line: the chance level, the expected value of a uniformly random ranking of this split under this "
            f"protocol (`core/evaluation/chance.py`).{paper}")


def _count(sel: pd.DataFrame, metric: str) -> str:
    """A count logged per run (e.g. num_skipped_queries): one number, or 'a–b' when the seeds differ."""
    col = f"metrics.{metric}"
    vals = sorted({int(v) for v in sel[col].dropna()}) if col in sel else []
    return "—" if not vals else str(vals[0]) if len(vals) == 1 else f"{vals[0]}–{vals[-1]}"


def protocol_lines(runs: pd.DataFrame, datasets: list[str], others: list[str]) -> list[str]:
    """What each protocol column means, per dataset (core.protocols)."""
    out = []
    for ds in datasets:
        names = headline_names(runs, ds)
        named = protocols.named(ds)
        heads = sorted({protocols.headline(ds, str(r.get("params.data.gallery_with_queries")) == "True",
                                           str(r.get("params.eval.ap_rule"))).describe(ds)
                        for _, r in runs[runs["tags.dataset"] == ds].iterrows()})
        equal = f" = `{next(iter(names))}`" if len(names) == 1 and None not in names else ""
        out.append(f"- {run_header(ds)}, **headline**{equal} (MLflow `R1` … `mAP`; data.gallery_with_queries, "
                   f"eval.ap_rule): {' / '.join(heads)}.")
        for n in others:
            out.append(f"- {run_header(ds)}, **`{n}`** (MLflow `{n}_R1` … `{n}_mAP`): {protocols.title(n, ds)}: "
                       f"{named[n].describe(ds)}.")
    return out + ["- Under every protocol a gallery tracklet of the query's identity and camera is ignored, junk "
                  "never counts, distractors stay; a query left without a valid match is skipped and counted.", ""]


def paper_frame(spec: Spec) -> pd.DataFrame:
    """The paper's table as printed (every dataset it reports)."""
    datasets = [d for d in PAPER_DATASETS if any(d in r.paper for r in spec.rows)]
    return pd.DataFrame([{"#": r.index, "row": r.label,
                          **{f"{DATASET_NAMES[d]} {m}": _fmt(r.paper.get(d, {}).get(m))
                             for d in datasets for m in spec.metrics}} for r in spec.rows])


def _values(runs: pd.DataFrame, key: str) -> str:
    col = f"params.{key}"
    vals = sorted({str(v) for v in runs[col].dropna()}) if col in runs else []
    return " / ".join(vals) or "—"


def _setting(runs: pd.DataFrame, key: str) -> str:
    """'eval.ap_rule = trapezoid [A15b]': the runs' values of `key`, tagged with the ambiguity it decides."""
    return f"{key} = {_values(runs, key)}{ambiguities.tag(key)}"


def _commits(runs: pd.DataFrame) -> str:
    if "tags.git_commit" not in runs:
        return "—"
    out = []
    for commit, dirty in sorted({(str(c), str(d)) for c, d in zip(runs["tags.git_commit"],
                                                               runs.get("tags.git_dirty", [""] * len(runs)))}):
        out.append(f"`{commit[:10]}`" + (" (uncommitted changes)" if dirty == "true" else ""))
    return ", ".join(out)


def interval_line(runs: pd.DataFrame, seeds: Sequence[int]) -> str:
    """How the intervals of this run's numbers are computed (once per section)."""
    resamples, seed = (_values(runs, f"eval.bootstrap_{k}") for k in ("resamples", "seed"))
    resamples = EvalConfig.bootstrap_resamples if resamples == "—" else resamples
    seed = EvalConfig.bootstrap_seed if seed == "—" else seed
    several = ("With several seeds the number is the mean ± std over seeds and the interval is a two-way "
               "bootstrap: each resample draws the query identities and, independently, as many seeds with "
               "replacement, so it holds both the seed and the query variation.") if len(seeds) > 1 else \
        "With one seed the interval holds the query variation only."
    return (f"Intervals: [low, high] after this run's numbers is the 95 % bootstrap percentile interval "
            f"({resamples} resamples, seed {seed}: eval.bootstrap_resamples, eval.bootstrap_seed) that resamples the "
            f"query identities with all their queries (a cluster bootstrap: queries of one identity are not "
            f"independent; core/evaluation/bootstrap.py). {several}")


def claims_block(spec: Spec, runs: pd.DataFrame, ds: str, profile: str, fig_dir: Path, rel: str,
                 load_table: LoadTable | None) -> list[str]:
    """Markdown lines for the claims on one dataset: one line per claim and metric, and the forest plot."""
    ref = reference_dataset(spec, ds)
    verdicts = claims.evaluate_claims(spec, runs, ref, load_table)
    table = pd.DataFrame([{"claim": v.claim, "metric": v.metric, "paper Δ": _fmt_delta(v.paper_delta),
                           "this run Δ [95 % interval]": _fmt_delta(v.delta) + (
                               f" [{v.low:+.1f}, {v.high:+.1f}]" if v.low is not None else ""),
                           "verdict": v.verdict + (f" ({v.reason})" if v.reason else "")} for v in verdicts])
    tag = _tag(runs, ds, None)
    lines = [f"**Claims — {run_header(ds)}** (this run: headline protocol" + (f" = `{tag}`" if tag != "headline"
                                                                            else "") +
             f"; paper Δ: the paper's {DATASET_NAMES[ref]} column)", "", _markdown(table), ""]
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
    """The report's Claims section of one profile (core.claims)."""
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
        lines += claims_block(spec, runs[runs["tags.dataset"] == ds], ds, profile, fig_dir, rel, load_table)
    return lines


def _audit_cell(sel: pd.DataFrame, name: str, digits: int = 3) -> str:
    """A row's audit metric: 'v [low, high]' (one seed), 'mean ± std' (seeds), '—' (not logged)."""
    col = f"metrics.{name}"
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
    while f"metrics.{name}_k{k}" in sel:
        vals = sel[f"metrics.{name}_k{k}"].dropna().astype(float)
        out.append(f"k{k} {vals.mean():.2f}" if len(vals) else f"k{k} —")
        k += 1
    return ", ".join(out) or "—"


def _side(sel: pd.DataFrame, name: str, at: float) -> str | None:
    """Where the 95 % interval of a row's one-seed metric lies against `at`: "above", "below", "around"; None when
    the row has no interval (not logged, or several seeds)."""
    cols = [f"metrics.{name}{b}" for b in ("", "_ci_low", "_ci_high")]
    if len(sel) != 1 or any(c not in sel or pd.isna(sel[c].iloc[0]) for c in cols):
        return None
    low, high = float(sel[cols[1]].iloc[0]), float(sel[cols[2]].iloc[0])
    return "above" if low > at else "below" if high < at else "around"


def audit_reading(label: str, sel: pd.DataFrame) -> str | None:
    """One sentence on what a row's audit intervals show (None without them): whether the scores and the Eq. 1
    map prefer clean region-frames / cells (AUC interval against 0.5) and whether training moved them (gain
    interval against 0). Read from the logged intervals, so it changes with the numbers."""
    prefer = {"above": "clean preferred over occluded", "below": "occluded preferred over clean",
              "around": "no preference detectable at 95 %"}
    moved = {"above": "more than untrained", "below": "less than untrained", "around": "no different from untrained"}
    parts = []
    for name, what in (("attn_auc_region", "Eq. 4 scores"), ("attn_auc_map", "Eq. 1 map")):
        side, gain = _side(sel, name, 0.5), _side(sel, f"{name}_gain", 0.0)
        if side is None:
            continue
        text = f"{what}: {prefer[side]} (AUC interval {side} 0.5)"
        if gain is not None:
            text += f", {moved[gain]} (gain interval {gain} 0)"
        parts.append(text)
    return f"- **{label}**: " + "; ".join(parts) + "." if parts else None


def audit_lines(spec: Spec, runs: pd.DataFrame, datasets: list[str]) -> list[str]:
    """The report's attention audit (issue 14; core.engine.audit): one line per STA row and dataset."""
    table, readings = [], []
    for ds in datasets:
        for row in spec.run_rows:
            sel = runs[(runs["tags.dataset"] == ds) & (runs["tags.row"] == row.label)]
            if sel.empty or "metrics.attn_dev_uniform" not in sel or sel["metrics.attn_dev_uniform"].isna().all():
                continue
            reading = audit_reading(f"{row.label} ({run_header(ds)})", sel)
            readings += [reading] if reading else []
            synthetic = "synthetic truth" if ds == "synthetic" else "synthetic truth only"
            pairs = "/".join(_count(sel, f"attn_pairs_{k}") for k in ("region", "map"))
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
    thr = _values(runs, "eval.audit_occluded")
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
            _markdown(pd.DataFrame(table)), ""] + \
        (["What the intervals show (one seed; written from the numbers above):", "", *readings, ""] if readings else [])


def _per_query_pids(sel: pd.DataFrame, load_table: LoadTable | None) -> int | None:
    """Distinct query identities of a run's test split (its per-query artifact), or None."""
    if load_table is None or sel.empty:
        return None
    frame = load_table(str(sel["run_id"].iloc[0]), claims.PER_QUERY) if "run_id" in sel else None
    if frame is None or frame.empty:
        return None
    return int(frame.loc[frame["protocol"] == frame["protocol"].iloc[0], "pid"].nunique())


def _split_text(sub: pd.DataFrame, load_table: LoadTable | None) -> str:
    """'425 queries of 256 identities (0 without a valid match); gallery 1230 tracklets (`official`), 805 (`gao`)'
    from the counts the runs logged."""
    col = [f"metrics.{k}" for k in ("num_queries", "num_skipped_queries")]
    totals = sorted({int(a + b) for a, b in zip(sub[col[0]], sub[col[1]]) if pd.notna(a) and pd.notna(b)}) \
        if all(c in sub for c in col) else []
    pids = _per_query_pids(sub, load_table)
    queries = "(not logged)" if not totals else str(totals[0]) if len(totals) == 1 else f"{totals[0]}–{totals[-1]}"
    gallery = ", ".join(f"{_count(sub, f'{n}_num_gallery')} (`{n}`)" for n in protocols.NAMES
                        if _count(sub, f"{n}_num_gallery") != "—")
    return (f"test split {queries} queries" + (f" of {pids} identities" if pids else "") +
            (f", gallery {gallery} tracklets" if gallery else ""))


def _stage_text(runs: pd.DataFrame) -> str:
    """' from the synthetic pretraining stage `<hash>` (MLflow run `<id>` of experiment 'STA pretraining', not ImageNet)'
    for runs that started from it (tags pretrain_hash / pretrain_run, core.pretraining), else ''."""
    if "tags.pretrain_hash" not in runs or runs["tags.pretrain_hash"].isna().all():
        return ""
    run_ids = runs["tags.pretrain_run"] if "tags.pretrain_run" in runs else runs["tags.pretrain_hash"]
    stages = sorted({(h, r) for h, r in zip(runs["tags.pretrain_hash"], run_ids) if isinstance(h, str)})
    named = "; ".join(f"`{h}` (MLflow run `{r}`)" for h, r in stages)
    return (f" from the synthetic pretraining stage {named} of experiment 'STA pretraining' (model.init = synthetic, "
            f"the cpu profile's stand-in for ImageNet weights; docs/learning.md)")


def ran_lines(runs: pd.DataFrame, datasets: list[str], seeds: Sequence[int],
              load_table: LoadTable | None = None) -> list[str]:
    """What the runs of one profile actually ran, from the resolved configs they logged (params) and the split
    sizes they counted: data (preset or root), split, model, training, evaluation options, seeds, commit."""
    data = []
    for ds in datasets:
        sub = runs[runs["tags.dataset"] == ds]
        source = (f"preset `{_values(sub, 'data.synthetic_size')}` (data.synthetic_size), generator seed "
                  f"{_values(sub, 'data.synthetic_seed')}" if ds == "synthetic"
                  else f"root `{_values(sub, 'data.root')}`")
        data.append(f"{run_header(ds)}, {source}; {_split_text(sub, load_table)}")
    pretrained = {"True": "pretrained", "False": "from scratch"}
    weights = " / ".join(pretrained.get(v, v) for v in _values(runs, "model.pretrained").split(" / "))
    path = _values(runs, "model.weights_path")
    weights += f" (weights `{path}`)" if path not in ("—", "None") else ""
    weights += _stage_text(runs)
    return [f"**What these runs ran** (from the resolved configs they logged): data: {'; '.join(data)}. Model: "
            f"{_values(runs, 'model.backbone')} {weights}, frames {_values(runs, 'data.height')}x"
            f"{_values(runs, 'data.width')}, N = {_values(runs, 'data.seq_len')} frames per training clip, K = "
            f"{_values(runs, 'model.num_regions')} regions. Training: {_values(runs, 'train.epochs')} epochs "
            f"({_setting(runs, 'data.epoch_def')}), batches of {_values(runs, 'data.ids_per_batch')} identities x "
            f"{_values(runs, 'data.tracklets_per_id')} tracklets, lr {_values(runs, 'train.lr')} "
            f"(x{_values(runs, 'train.gamma')} after epochs {_values(runs, 'train.milestones')}), "
            f"{_setting(runs, 'loss.reg_weight')}. Evaluation: {_setting(runs, 'eval.ap_rule')}, "
            f"{_setting(runs, 'data.gallery_with_queries')}, {_setting(runs, 'eval.sampling')}, N = "
            f"{_values(runs, 'eval.seq_len')} (eval.seq_len), {_setting(runs, 'eval.distance')}. Seeds: "
            f"{', '.join(map(str, seeds))} ({'mean ± std over seeds' if len(seeds) > 1 else 'one seed'}). Commit: "
            f"{_commits(runs)}.", ""]


def profile_differences(runs: pd.DataFrame, profile: str) -> list[tuple[str, str, str]]:
    """(key, the runs' values, the profile's value) for each key the profile sets that some run has otherwise
    (a command-line --set or --epochs, a spec row; keys a run did not log are skipped)."""
    from core.specs import load_profiles
    try:
        declared = load_profiles().get(profile, {})
    except Exception:  # noqa: BLE001 - a store made with another profiles.yaml: no comparison, no failure
        return []
    out = []
    for key, value in declared.items():
        col = f"params.{key}"
        if col not in runs or runs[col].isna().all():
            continue
        want = json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)
        if any(str(v) != want for v in runs[col].dropna()):
            out.append((key, _values(runs, key), want))
    return out


def profile_lines(runs: pd.DataFrame, profile: str, desc: str) -> list[str]:
    """The profile's declared description, preceded by the keys in which these runs depart from it."""
    diff = profile_differences(runs, profile)
    lines = []
    if diff:
        lines += [f"**These runs depart from the profile `{profile}`** in: " + ", ".join(
            f"{k} = {mine} (profile: {theirs})" for k, mine, theirs in diff) +
            ". The profile's description below is the profile as declared; where it disagrees, the line above is "
            "what ran.", ""]
    if desc:
        lines += [f"Profile `{profile}` as declared (`experiments/profiles.yaml`): {desc}", ""]
    return lines


def section(spec: Spec, runs: pd.DataFrame, profile: str, fig_dir: Path, rel: str,
            load_json: LoadJson | None, left_out: Sequence[dict] = (), load_table: LoadTable | None = None) -> str:
    """Markdown for one profile: protocol line, comparison tables with intervals, left-out runs, claims,
    figures, runs used."""
    datasets = [d for d in DATASET_ORDER if d in set(runs["tags.dataset"])]
    seeds = sorted({int(s) for s in runs["tags.seed"]})
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
                      comparison_frame(spec, runs, ds, name, load_table, notes).pipe(_markdown), ""]
    lines += [f"{_mark(reason, notes)} {reason}" for reason in list(notes)] + ([""] if notes else [])
    lines += left_out_lines(left_out)
    lines += claims_lines(spec, runs, datasets, profile, fig_dir, rel, load_table)
    lines += audit_lines(spec, runs, datasets)
    for ds in datasets:
        sub = runs[runs["tags.dataset"] == ds]
        for name, fig in _figures(spec, sub, ds, load_json, load_table):
            path = figures.save(fig, fig_dir / f"{spec.table}_{profile}_{ds}_{name}.png")
            lines += [f"![{name}]({rel}/{path.name})", ""]
    lines += ["<details><summary>Runs used (MLflow)</summary>", "", _runs_frame(spec, runs).pipe(_markdown),
              "", "</details>", ""]
    return "\n".join(lines)


def _runs_frame(spec: Spec, runs: pd.DataFrame) -> pd.DataFrame:
    order = {r.label: r.index for r in spec.rows}
    out = [{"row": r["tags.row"], "dataset": r["tags.dataset"], "seed": r["tags.seed"], "run id": r["run_id"],
            "config hash": r.get("tags.config_hash", ""), "epochs": r.get("params.train.epochs", ""),
            "model training s": _fmt(_metric(r, TRAIN_WALL_S)), "device": r.get("tags.device", ""),
            **_loss_terms(r), **_set_sizes(r)}
           for _, r in runs.iterrows()]
    df = pd.DataFrame(out)
    return df.sort_values(["dataset", "row", "seed"], key=lambda s: s.map(order) if s.name == "row" else s)


def _loss_terms(run: pd.Series) -> dict[str, str]:
    """The last epoch's mean loss terms, weighted as they enter the total (Eq. 7, 11)."""
    names = {"CE": "loss_ce", "triplet": "loss_triplet", "λ·Reg": "loss_reg_weighted", "total": "loss_total"}
    return {f"last epoch {k}": _fmt_loss(run.get(f"metrics.{v}")) for k, v in names.items()}


def _fmt_loss(v) -> str:
    return "—" if v is None or pd.isna(v) else f"{float(v):.4g}"


def _set_sizes(run: pd.Series) -> dict[str, str]:
    """Gallery sizes of the named protocols and the re-ranked set (distinct tracklets), where logged."""
    sizes = {f"gallery {n}": run.get(f"metrics.{n}_num_gallery") for n in protocols.NAMES}
    sizes["re-ranked set"] = run.get("metrics.rerank_set_size")
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
    rows = [r for r in spec.run_rows if (runs["tags.row"] == r.label).any() and (ref in r.paper or not paper_too)]
    kind, key, x_name = (spec.figure.kind, spec.figure.x, spec.figure.label) if spec.figure else ("", "", "")
    if rows and kind:
        paper = {m: [r.paper[ref][m] if r.paper[ref][m] is not None else np.nan for r in rows]
                 for m in spec.metrics} if paper_too else None
        ours = {m: [_interval(runs[runs["tags.row"] == r.label], m, load_table) for r in rows] for m in spec.metrics}
        chance = {m: float(np.mean(v)) if (v := chance_values(runs, m)) else np.nan for m in spec.metrics}
        title = f"{spec.title} — {run_header(ds)}, headline protocol ({_tag(runs, ds, None)})"
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
        sel = runs[runs["tags.row"] == r.label]
        found = [c for c in (load_json(rid, "cmc.json") for rid in sel["run_id"]) if c]
        if found:
            curves[r.label] = np.mean(np.array([c["cmc"] for c in found], dtype=float), axis=0).tolist()
            chance_cmc = chance_cmc or next((c["chance"] for c in found if c.get("chance")), None)
    for r in reversed(spec.run_rows):    # the last row with scores (STA models): the full model
        found = next((c for c in (load_json(rid, "scores.json") for rid in runs.loc[runs["tags.row"] == r.label,
                                                                                      "run_id"]) if c), None)
        if found:
            clips, clip_row = found["clips"], r.label
            break
    if curves:
        yield "cmc", figures.cmc_figure(curves, f"CMC — {spec.title} — {run_header(ds)}", chance_cmc)
    if clips:
        yield "attention", figures.attention_figure(clips, f"N x K attention scores — {clip_row} ({run_header(ds)})")
    for r in reversed(spec.run_rows):    # the attention audit's clips (synthetic data with ground truth)
        found = next((c for c in (load_json(rid, AUDIT_CLIPS) for rid in runs.loc[runs["tags.row"] == r.label,
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
    for profile in sorted(set(sel["tags.profile"])) if not sel.empty else []:
        out.append(section(spec, sel[sel["tags.profile"] == profile], profile, fig_dir, rel, load_json,
                           [lo for lo in left if lo["profile"] == profile], load_table))
    deviations = [f"- **{r.label}**: {r.deviation}" for r in spec.rows if r.deviation]
    used = {r.preset.name: r.preset for r in spec.run_rows if r.preset}
    for name, preset in used.items():
        rows = ", ".join(r.label for r in spec.run_rows if r.preset and r.preset.name == name)
        deviations.append(f"- **preset `{name}`** (`experiments/presets.yaml`; rows: {rows}): {preset.deviation}")
    if deviations:
        out += ["## Deviations from the paper", "", *deviations, ""]
    out += ["## The paper's numbers (as printed)", "", paper_frame(spec).pipe(_markdown), ""]
    return "\n".join(out)


def write_report(spec: Spec, runs: pd.DataFrame, reports_dir: str | Path = "reports",
                 load_json: LoadJson | None = None, load_table: LoadTable | None = None) -> Path:
    """Write reports/<table>.md (+ reports/figures/<table>_*.png); returns the markdown path.

    Figures first, then the markdown, then old figures it no longer links are deleted (see the module doc)."""
    reports_dir = Path(reports_dir)
    fig_dir = reports_dir / "figures"
    text = render(spec, runs, fig_dir, "figures", load_json, load_table)  # saves the figures (each atomically)
    from core.engine.checkpoint import save_text  # lazy: keeps this module free of torch
    path = save_text(text, reports_dir / f"{spec.table}.md")
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
    for (profile, ds), group in (sel.groupby(["tags.profile", "tags.dataset"]) if not sel.empty else []):
        ref = reference_dataset(spec, ds)
        out += claims.records(claims.evaluate_claims(spec, group, ref, load_table), table=spec.table,
                              profile=profile, dataset=ds, reference=ref, protocol=_tag(group, ds, None))
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
    from core.engine.checkpoint import save_text
    return save_text("\n".join(lines) + "\n", reports_dir / "README.md")
