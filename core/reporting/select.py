"""Which runs a report shows: per (profile, dataset, row, seed) the latest used FINISHED run; a row averages only
runs whose resolved configs equal its latest run's apart from the seed (the others are listed as left out); the
datasets and the protocols a section shows."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from core import protocols, record
from core.config import allowed_keys, seed_keys
from core.specs import DATASET_NAMES, PAPER_DATASETS, Spec

DATASET_ORDER = ("mars", "duke", "synthetic")


SEED_KEYS = seed_keys()       # the seeds of one report row may differ in these (core.config knob properties)


def reference_dataset(spec: Spec, dataset: str) -> str:
    """The paper dataset a run on `dataset` is compared with (synthetic: MARS, the layout it imitates)."""
    have = [d for d in PAPER_DATASETS if any(d in r.paper for r in spec.rows)]
    return dataset if dataset in have else (have[0] if have else "mars")


def run_header(dataset: str) -> str:
    return "synthetic, MARS layout" if dataset == "synthetic" else DATASET_NAMES.get(dataset, dataset)


def select_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """FINISHED row runs, the latest used per (profile, dataset, row, seed)."""
    if runs.empty or record.ROW not in runs:
        return pd.DataFrame()
    df = runs[runs["status"] == "FINISHED"].copy()
    if df.empty:
        return df
    start = pd.to_datetime(df["start_time"], utc=True).astype("int64") / 1e9
    used = pd.to_numeric(df[record.USED_AT], errors="coerce") if record.USED_AT in df else pd.Series(np.nan, df.index)
    df["_used"] = used.fillna(start)
    df = df.sort_values("_used").groupby([record.PROFILE, record.DATASET, record.ROW, record.SEED]).tail(1)
    return df.reset_index(drop=True)


def _param_text(value) -> str:
    return "(not logged)" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _compared_keys(frame: pd.DataFrame) -> list[str]:
    """The config keys the runs of one report row must agree on (all but SEED_KEYS) that `frame` has logged."""
    return [k for k in allowed_keys() if k not in SEED_KEYS and record.param_col(k) in frame]


def _config_diff(run: pd.Series, ref: pd.Series, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{key: (the run's value, the reference run's)} where their logged params differ, as MLflow keeps them."""
    texts = {k: (_param_text(run.get(record.param_col(k))), _param_text(ref.get(record.param_col(k)))) for k in keys}
    return {k: pair for k, pair in texts.items() if pair[0] != pair[1]}


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
        older = older[older.set_index([record.PROFILE, record.DATASET, record.ROW]).index.isin(
            sel.set_index([record.PROFILE, record.DATASET, record.ROW]).index)]
        if not older.empty:
            kept, left = same_config_runs(sel)
            refs = {key: g.loc[g["_used"].idxmax()] if "_used" in g else g.iloc[-1]
                    for key, g in sel.groupby([record.PROFILE, record.DATASET, record.ROW], sort=False)}
            keys = _compared_keys(runs)
            for _, run in older.sort_values("start_time").iterrows():
                ref = refs[run[record.PROFILE], run[record.DATASET], run[record.ROW]]
                diff = _config_diff(run, ref, keys)
                if diff:
                    left.append({"profile": run[record.PROFILE], "dataset": run[record.DATASET],
                                 "row": run[record.ROW], "seed": run[record.SEED], "run_id": run["run_id"],
                                 "keys": diff})
            return kept, left
    keys = _compared_keys(sel)
    order = sel["_used"] if "_used" in sel else pd.to_datetime(sel["start_time"], utc=True).astype("int64")
    keep, left = [], []
    for _, group in sel.groupby([record.PROFILE, record.DATASET, record.ROW], sort=False):
        ref = group.loc[order[group.index].idxmax()]
        for idx, run in group.iterrows():
            diff = _config_diff(run, ref, keys)
            if diff:
                left.append({"profile": run[record.PROFILE], "dataset": run[record.DATASET], "row": run[record.ROW],
                             "seed": run[record.SEED], "run_id": run["run_id"], "keys": diff})
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


def headline_names(runs: pd.DataFrame, ds: str) -> set[str | None]:
    """The named protocol each run's headline metrics equal (None: another combination of the options)."""
    sub = runs[runs[record.DATASET] == ds]
    return {protocols.headline_name(ds, record.param(r, "data.gallery_with_queries") is True,
                                    str(record.param(r, "eval.ap_rule"))) for _, r in sub.iterrows()}


def protocol_tag(runs: pd.DataFrame, ds: str, protocol: str | None) -> str:
    """Column tag of a protocol: its name, or for the headline the named protocol it equals, else 'headline'."""
    if protocol:
        return protocol
    names = headline_names(runs, ds)
    return next(iter(names)) if len(names) == 1 and None not in names else "headline"


def other_protocols(runs: pd.DataFrame, datasets: list[str]) -> list[str]:
    """The named protocols to show beside the headline: all but one every dataset's headline already equals."""
    return [n for n in protocols.NAMES if any(headline_names(runs, ds) != {n} for ds in datasets)]


def compares_with_paper(dataset: str) -> bool:
    """Whether a dataset's numbers are set beside the paper's (MARS, DukeMTMC-VideoReID), not synthetic data."""
    return dataset != "synthetic"
