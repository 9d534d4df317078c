"""A report section's words on what its runs ran, from their logged configs and tags: data, split sizes, model,
epochs, the pretraining stage, commits, the protocols and intervals, and where the runs depart from their profile."""
from __future__ import annotations

import json
from typing import Sequence

import pandas as pd

from core import ambiguities, protocols, record
from core.config import EvalConfig
from core.reporting.cells import count_cell
from core.reporting.claims import LoadTable
from core.reporting.select import headline_names, run_header
from core.specs import load_profiles


def protocol_lines(runs: pd.DataFrame, datasets: list[str], others: list[str]) -> list[str]:
    """What each protocol column means, per dataset (core.protocols)."""
    out = []
    for ds in datasets:
        names = headline_names(runs, ds)
        named = protocols.named(ds)
        heads = sorted({protocols.headline(ds, record.param(r, "data.gallery_with_queries") is True,
                                           str(record.param(r, "eval.ap_rule"))).describe(ds)
                        for _, r in runs[runs[record.DATASET] == ds].iterrows()})
        equal = f" = `{next(iter(names))}`" if len(names) == 1 and None not in names else ""
        out.append(f"- {run_header(ds)}, **headline**{equal} (MLflow `R1` … `mAP`; data.gallery_with_queries, "
                   f"eval.ap_rule): {' / '.join(heads)}.")
        for n in others:
            out.append(f"- {run_header(ds)}, **`{n}`** (MLflow `{n}_R1` … `{n}_mAP`): {protocols.title(n, ds)}: "
                       f"{named[n].describe(ds)}.")
    return out + ["- Under every protocol a gallery tracklet of the query's identity and camera is ignored, junk "
                  "never counts, distractors stay; a query left without a valid match is skipped and counted.", ""]


def values_text(runs: pd.DataFrame, key: str) -> str:
    col = record.param_col(key)
    vals = sorted({str(v) for v in runs[col].dropna()}) if col in runs else []
    return " / ".join(vals) or "—"


def _setting(runs: pd.DataFrame, key: str) -> str:
    """'eval.ap_rule = trapezoid [A15b]': the runs' values of `key`, tagged with the ambiguity it decides."""
    return f"{key} = {values_text(runs, key)}{ambiguities.tag(key)}"


def _commits(runs: pd.DataFrame) -> str:
    if record.GIT_COMMIT not in runs:
        return "—"
    out = []
    for commit, dirty in sorted({(str(c), str(d)) for c, d in zip(runs[record.GIT_COMMIT],
                                                               runs.get(record.GIT_DIRTY, [""] * len(runs)))}):
        out.append(f"`{commit[:10]}`" + (" (uncommitted changes)" if dirty == "true" else ""))
    return ", ".join(out)


def interval_line(runs: pd.DataFrame, seeds: Sequence[int]) -> str:
    """How the intervals of this run's numbers are computed (once per section)."""
    resamples, seed = (values_text(runs, f"eval.bootstrap_{k}") for k in ("resamples", "seed"))
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


def _per_query_pids(sel: pd.DataFrame, load_table: LoadTable | None) -> int | None:
    """Distinct query identities of a run's test split (its per-query artifact), or None."""
    if load_table is None or sel.empty:
        return None
    frame = load_table(str(sel["run_id"].iloc[0]), record.PER_QUERY) if "run_id" in sel else None
    if frame is None or frame.empty:
        return None
    return int(frame.loc[frame["protocol"] == frame["protocol"].iloc[0], "pid"].nunique())


def _split_text(sub: pd.DataFrame, load_table: LoadTable | None) -> str:
    """'425 queries of 256 identities (0 without a valid match); gallery 1230 tracklets (`official`), 805 (`gao`)'
    from the counts the runs logged."""
    col = [record.metric_col(k) for k in ("num_queries", "num_skipped_queries")]
    totals = sorted({int(a + b) for a, b in zip(sub[col[0]], sub[col[1]]) if pd.notna(a) and pd.notna(b)}) \
        if all(c in sub for c in col) else []
    pids = _per_query_pids(sub, load_table)
    queries = "(not logged)" if not totals else str(totals[0]) if len(totals) == 1 else f"{totals[0]}–{totals[-1]}"
    gallery = ", ".join(f"{count_cell(sub, f'{n}_num_gallery')} (`{n}`)" for n in protocols.NAMES
                        if count_cell(sub, f"{n}_num_gallery") != "—")
    return (f"test split {queries} queries" + (f" of {pids} identities" if pids else "") +
            (f", gallery {gallery} tracklets" if gallery else ""))


def stage_text(runs: pd.DataFrame) -> str:
    """' from the synthetic pretraining stage `<hash>` (MLflow run `<id>` of experiment 'STA pretraining', not ImageNet)'
    for runs that started from it (tags pretrain_hash / pretrain_run, core.pretraining), else ''."""
    if record.PRETRAIN_HASH not in runs or runs[record.PRETRAIN_HASH].isna().all():
        return ""
    run_ids = runs[record.PRETRAIN_RUN] if record.PRETRAIN_RUN in runs else runs[record.PRETRAIN_HASH]
    stages = sorted({(h, r) for h, r in zip(runs[record.PRETRAIN_HASH], run_ids) if isinstance(h, str)})
    named = "; ".join(f"`{h}` (MLflow run `{r}`)" for h, r in stages)
    return (f" from the synthetic pretraining stage {named} of experiment 'STA pretraining' (model.init = synthetic, "
            f"the cpu profile's stand-in for ImageNet weights; docs/learning.md)")


def ran_lines(runs: pd.DataFrame, datasets: list[str], seeds: Sequence[int],
              load_table: LoadTable | None = None) -> list[str]:
    """What the runs of one profile actually ran, from the resolved configs they logged (params) and the split
    sizes they counted: data (preset or root), split, model, training, evaluation options, seeds, commit."""
    data = []
    for ds in datasets:
        sub = runs[runs[record.DATASET] == ds]
        source = (f"preset `{values_text(sub, 'data.synthetic_size')}` (data.synthetic_size), generator seed "
                  f"{values_text(sub, 'data.synthetic_seed')}" if ds == "synthetic"
                  else f"root `{values_text(sub, 'data.root')}`")
        data.append(f"{run_header(ds)}, {source}; {_split_text(sub, load_table)}")
    pretrained = {"True": "pretrained", "False": "from scratch"}
    weights = " / ".join(pretrained.get(v, v) for v in values_text(runs, "model.pretrained").split(" / "))
    path = values_text(runs, "model.weights_path")
    weights += f" (weights `{path}`)" if path not in ("—", "None") else ""
    weights += stage_text(runs)
    return [f"**What these runs ran** (from the resolved configs they logged): data: {'; '.join(data)}. Model: "
            f"{values_text(runs, 'model.backbone')} {weights}, frames {values_text(runs, 'data.height')}x"
            f"{values_text(runs, 'data.width')}, N = {values_text(runs, 'data.seq_len')} frames per training clip, K = "
            f"{values_text(runs, 'model.num_regions')} regions. Training: {values_text(runs, 'train.epochs')} epochs "
            f"({_setting(runs, 'data.epoch_def')}), batches of {values_text(runs, 'data.ids_per_batch')} identities x "
            f"{values_text(runs, 'data.tracklets_per_id')} tracklets, lr {values_text(runs, 'train.lr')} "
            f"(x{values_text(runs, 'train.gamma')} after epochs {values_text(runs, 'train.milestones')}), "
            f"{_setting(runs, 'loss.reg_weight')}. Evaluation: {_setting(runs, 'eval.ap_rule')}, "
            f"{_setting(runs, 'data.gallery_with_queries')}, {_setting(runs, 'eval.sampling')}, N = "
            f"{values_text(runs, 'eval.seq_len')} (eval.seq_len), {_setting(runs, 'eval.distance')}. Seeds: "
            f"{', '.join(map(str, seeds))} ({'mean ± std over seeds' if len(seeds) > 1 else 'one seed'}). Commit: "
            f"{_commits(runs)}.", ""]


def profile_differences(runs: pd.DataFrame, profile: str) -> list[tuple[str, str, str]]:
    """(key, the runs' values, the profile's value) for each key the profile sets that some run has otherwise
    (a command-line --set or --epochs, a spec row; keys a run did not log are skipped)."""
    try:
        declared = load_profiles().get(profile, {})
    except Exception:  # noqa: BLE001 - a store made with another profiles.yaml: no comparison, no failure
        return []
    out = []
    for key, value in declared.items():
        col = record.param_col(key)
        if col not in runs or runs[col].isna().all():
            continue
        want = json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)
        if any(str(v) != want for v in runs[col].dropna()):
            out.append((key, values_text(runs, key), want))
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
