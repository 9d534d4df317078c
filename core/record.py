"""The run record: what the suite writes to MLflow and reads back, by name, in one place. Metric names, their units
and their '/' sections, tag names and values, artifact names, the columns of a run in core.tracking.runs_frame (and
its params read back typed), the knobs a model does not use, and the names of runs. No mlflow import here
(core.tracking writes and reads; core.reporting and core.tuning read through it).

Metric sections. MLflow's chart view groups metrics by the prefix before the first '/', so the code names a metric by
its flat name (``R1``, ``official_rerank_mAP_ci_low``, ``loss_ce``, ``attn_auc_map``, ``ce``) and ``key(flat)``
gives the key logged. MLflow 3.17 orders the sections by plain string order and puts the metrics without a section
("Model metrics") after all of them (mlflow/server/js, RunsChartsCard section generation), so the headline gets a
section whose capital first letter sorts before the lower-case ones: ``Headline/R1`` opens the chart view (the
study's summary, ``Study/``, likewise):

=============  ===========================================  ==========================================
section        flat names                                   logged as
=============  ===========================================  ==========================================
Headline       R1 R5 R10 R20 mAP (the headline protocol)   Headline/R1: the chart view's first section
interval       R1_ci_low ... mAP_ci_high                    interval/R1_ci_low
rerank         rerank_*                                     rerank/R1, rerank/R1_ci_low, rerank/set_size
official, gao  official_*, gao_* (named protocols)          official/R1, gao/rerank_mAP_ci_high, ...
eval           num_queries, num_skipped_queries             eval/num_queries
loss           loss_* (the last epoch's terms)              loss/ce, loss/reg_weighted
train          per-epoch ce triplet reg total ... lr        train/ce (step = epochs done, 1..E)
time           epoch_wall_s frames_per_s train_wall_s ...   time/epoch_wall_s
audit          attn_* (attention audit)                     audit/auc_map
val, test      val_*, test_* (tuning)                       val/mAP (step = epochs done), test/delta_mAP
claims         claim<k>_* (verdicts, table's parent run)    claims/claim1_mAP_delta
Study          best_*, trials_* (a study's parent run)      Study/best_val_mAP, Study/trials_complete
=============  ===========================================  ==========================================

``flat(key)`` is the inverse: readers (``core.tracking.runs_frame``) turn the logged keys back into flat names, so
reports read ``metrics.R1_ci_low`` from stores written with and without sections alike (CHANGELOG.md).

Units: R1..mAP under any protocol prefix and their interval bounds are logged in percent (``is_percent``); the
engine computes fractions (core.evaluation), core.tracking.log_result converts once.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import types
import typing
from typing import Any, Mapping

from core.config import PretrainConfig, field_type

# ---- metrics -----------------------------------------------------------------------------------------------------
METRICS = ("R1", "R5", "R10", "R20", "mAP")      # what every run computes [A14]; percent in MLflow
CI_SUFFIXES = ("_ci_low", "_ci_high")        # bootstrap interval bounds of a metric (core.evaluation.bootstrap)
EPOCH_WALL_S = "epoch_wall_s"     # per epoch (step = epoch): wall clock between the ends of two epochs
TRAIN_WALL_S = "train_wall_s"     # per row run: sum of its epochs' EPOCH_WALL_S, resumed epochs included
ROW_WALL_S = "row_wall_s"         # per row run: this invocation end to end (data, training or reuse, evaluation,
                                  # logging)
# the names the timing metrics had in stores written before they were renamed; reports read them as a fallback
OLD_METRIC_NAMES = {EPOCH_WALL_S: "seconds", TRAIN_WALL_S: "train_seconds", ROW_WALL_S: "wall_seconds"}
EPOCH_TRAIN = ("ce", "triplet", "reg", "total", "train_acc", "lr", "iterations", "div", "triplet_local", "consist")
TIMES = (EPOCH_WALL_S, "frames_per_s", "compute_frames_per_s", TRAIN_WALL_S, ROW_WALL_S)


def is_percent(name: str) -> bool:
    """R1..mAP under any protocol prefix ('R1', 'rerank_mAP', 'gao_R5', 'official_rerank_R1') and their interval
    bounds ('R1_ci_low', 'gao_rerank_mAP_ci_high') are percentages."""
    for suffix in CI_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.rsplit("_", 1)[-1] in METRICS


# ---- artifacts ---------------------------------------------------------------------------------------------------
PER_QUERY = "per_query.parquet"    # a row or test run: core.evaluation.PER_QUERY_COLUMNS, one row per (protocol,
                                   # reranked, query); the reports' intervals and verdicts come from it
VAL_PER_QUERY = "val_per_query.parquet"   # a trial run: its last validation's per-query outcomes
CMC = "cmc.json"                   # a row run: {"rank", "cmc", "chance"} in percent; the report's CMC figures
AUDIT_CLIPS = "audit_clips.json"   # an STA row run on synthetic data: the audit figure's clips
CONFIG = "config.json"             # every run: its resolved config, nested (core.config.to_dict)
CLAIMS = "claims.json"             # a table's parent run: core.reporting.report.claim_records
REPORT = "report"                  # artifact folder of a table's parent run: tableN.md, figures/

# ---- the values of the tag "kind" (what a run is) ----------------------------------------------------------------
ROW_KIND, TABLE_KIND = "row", "table"        # a table row and seed / an invocation's parent run
STUDY_KIND, TRIAL_KIND, TEST_KIND = "study", "trial", "test"     # an Optuna study's parent run / trial / test run
PRETRAIN_KIND = "pretrain"         # a pretraining stage (experiment PRETRAIN_EXPERIMENT, tag stage_hash)
PRETRAIN_EXPERIMENT = "STA pretraining"


# ---- a run as core.tracking.runs_frame gives it (mlflow.search_runs, metric keys flat) ---------------------------

def metric_col(name: str) -> str:
    """The column of a flat-named metric: 'R1' -> 'metrics.R1'."""
    return f"metrics.{name}"


def param_col(key: str) -> str:
    """The column of a config key: 'eval.rerank' -> 'params.eval.rerank'."""
    return f"params.{key}"


def tag_col(name: str) -> str:
    return f"tags.{name}"


ROW, DATASET, PROFILE, SEED = tag_col("row"), tag_col("dataset"), tag_col("profile"), tag_col("seed")
USED_AT = tag_col("used_at")       # a reused run's last use (seconds since the epoch): the report's latest run
CONFIG_HASH = tag_col("config_hash")
PRETRAIN_HASH, PRETRAIN_RUN = tag_col("pretrain_hash"), tag_col("pretrain_run")
GIT_COMMIT, GIT_DIRTY, DEVICE = tag_col("git_commit"), tag_col("git_dirty"), tag_col("device")


def typed(key: str, text: Any) -> Any:
    """A config value as MLflow keeps it (text: 'True', '[15]', 'None', '0.3') read back with the type of its field;
    None for a missing value; the text itself for a param that is no config key ('trial.number', 'label') or a value
    of another type."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    try:
        hint = field_type(key)
    except (KeyError, ValueError):
        return text
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if text == "None":
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            return {"True": True, "False": False}[str(text)]
        if hint in (int, float):
            return hint(text)
        if typing.get_origin(hint) is tuple:
            return tuple(ast.literal_eval(str(text)))
    except (KeyError, ValueError, SyntaxError):
        return text                       # not what this suite logs for the key: shown as it is
    return str(text)


def param(run: Mapping[str, Any], key: str) -> Any:
    """A run's config value `key` from its columns (a row of core.tracking.runs_frame), typed (see typed())."""
    return typed(key, run.get(param_col(key)))


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A run as the suite reads it back (core.tracking.find_runs): id, name, status, its config with typed values
    (flat keys; params that are no config key stay text), its tags, its metrics under their flat names."""
    run_id: str
    name: str
    status: str
    config: Mapping[str, Any]
    tags: Mapping[str, str]
    metrics: Mapping[str, float]

    @classmethod
    def of(cls, run_id: str, name: str, status: str, params: Mapping[str, str], tags: Mapping[str, str],
           metrics: Mapping[str, float]) -> RunRecord:
        """From what MLflow stores: params as text, metric keys with their sections."""
        return cls(run_id, name, status, {k: typed(k, v) for k, v in params.items()}, dict(tags),
                   {flat(k): v for k, v in metrics.items()})


def _headline_ci(name: str) -> bool:
    return any(name.endswith(s) and name[:-len(s)] in METRICS for s in CI_SUFFIXES)


# (section, flat prefix, which flat names): key = section + "/" + name without the prefix; first match wins
HEADLINE = "Headline"
SECTIONS: tuple[tuple[str, str, Any], ...] = (
    (HEADLINE, "", lambda n: n in METRICS),
    ("chance", "chance_", lambda n: n.startswith("chance_")),     # a uniformly random ranking of the split
    ("rerank", "rerank_", lambda n: n.startswith("rerank_")),
    ("official", "official_", lambda n: n.startswith("official_")),
    ("gao", "gao_", lambda n: n.startswith("gao_")),
    ("interval", "", _headline_ci),
    ("eval", "", lambda n: n in ("num_queries", "num_skipped_queries", "num_gallery")),
    ("loss", "loss_", lambda n: n.startswith("loss_")),
    ("train", "", lambda n: n in EPOCH_TRAIN),
    ("time", "", lambda n: n in TIMES),
    ("audit", "attn_", lambda n: n.startswith("attn_")),
    ("val", "val_", lambda n: n.startswith("val_")),
    ("test", "test_", lambda n: n.startswith("test_")),
    ("claims", "", lambda n: n.startswith("claim") and n[5:6].isdigit()),
    ("Study", "", lambda n: n.startswith(("best_", "trials_"))),
)
_PREFIX = {section: prefix for section, prefix, _ in SECTIONS}


def key(flat_name: str) -> str:
    """The MLflow key of a metric: 'R1' -> 'Headline/R1', 'R1_ci_low' -> 'interval/R1_ci_low', 'official_rerank_mAP' ->
    'official/rerank_mAP', 'loss_ce' -> 'loss/ce', 'ce' -> 'train/ce', 'attn_auc_map' -> 'audit/auc_map'.
    A name already holding a '/' (MLflow's system/...) and any other name stay as they are."""
    if "/" in flat_name:
        return flat_name
    for section, prefix, matches in SECTIONS:
        if matches(flat_name):
            return f"{section}/{flat_name[len(prefix):]}"
    return flat_name


def flat(mlflow_key: str) -> str:
    """The inverse of key(): 'interval/R1_ci_low' -> 'R1_ci_low'; a key of no section here stays as it is."""
    section, sep, rest = mlflow_key.partition("/")
    return _PREFIX[section] + rest if sep and section in _PREFIX else mlflow_key


def keyed(metrics: Mapping[str, float]) -> dict[str, float]:
    """{key(name): value} of flat-named metrics."""
    return {key(k): v for k, v in metrics.items()}


# ---- params: the knobs a run's model does not use ----------------------------------------------------------------
# (flat config keys, why they do nothing, when): logged in the config.json artifact and the config hash, but not as
# MLflow params, so Compare's "Show diff only" shows only differences that change the model or the loss
_INERT: tuple[tuple[tuple[str, ...], str, Any], ...] = (
    (("model.fusion", "model.num_regions", "model.f2_weights"), "model.aggregation is not sta",
     lambda c: c["model.aggregation"] != "sta"),
    (("model.stan_models", "model.stan_hidden", "model.stan_embed", "loss.div_weight", "loss.div_squared"),
     "model.aggregation is not stan", lambda c: c["model.aggregation"] != "stan"),
    (("model.stal_parts", "model.stal_ran", "model.stal_part_norm", "loss.stal_margin_global",
      "loss.stal_margin_local", "loss.stal_local_weight", "loss.stal_consist_weight"),
     "model.aggregation is not stal", lambda c: c["model.aggregation"] != "stal"),
    (("loss.margin",), "loss.triplet is false", lambda c: not c["loss.triplet"]),
    (("loss.reg_squared",), "loss.reg_weight is 0", lambda c: not c["loss.reg_weight"]),
    (("model.weights_path", "model.init"), "model.pretrained is false", lambda c: not c["model.pretrained"]),
    (tuple(f"pretrain.{f.name}" for f in dataclasses.fields(PretrainConfig)),
     "the backbone does not start from the pretraining stage (model.pretrained and model.init=synthetic)",
     lambda c: not (c["model.pretrained"] and c["model.init"] == "synthetic")),
    (("train.momentum",), "train.optimizer is not sgd", lambda c: c["train.optimizer"] != "sgd"),
)


def inert(flat_config: Mapping[str, Any]) -> dict[str, str]:
    """{config key: why it has no effect} for a run's flat config (core.config.to_flat_dict)."""
    out: dict[str, str] = {}
    for keys, why, applies in _INERT:
        if applies(flat_config):
            out.update({k: why for k in keys if k in flat_config and k not in out})
    return out


# ---- run names: they differ in their first characters ------------------------------------------------------------

def row_run_name(table: str, index: int, label: str, seed: int) -> str:
    """'T1.3 Baseline + TL + Avg · seed 0': the table and row index first, so truncated names still differ."""
    short = table.replace("table", "T") if table.startswith("table") else table
    return f"{short}.{index} {label} · seed {seed}"


def trial_run_name(number: int, lam: float, margin: float, value: float | None = None, state: str = "") -> str:
    """'#3 λ=0.01 m=0.3 → 41.20' (value: val mAP %, once known; else the state, e.g. 'pruned')."""
    tail = f" → {value:.2f}" if value is not None else f" ({state})" if state else ""
    return f"#{number} λ={lam:g} m={margin:g}{tail}"


def test_run_name(labels: list[str], lam: float, margin: float) -> str:
    """'test: chosen = defaults (λ=0.01, m=0.3)'; labels empty: a test run no longer chosen nor the defaults."""
    return f"test: {' = '.join(labels) or 'earlier best'} (λ={lam:g}, m={margin:g})"


# ---- the runs table's columns: an experiment's shared view -------------------------------------------------------
# MLflow 3.17 shows Source, Models and Dataset by default, no result. A view saved as the experiment tag
# 'mlflow.sharedViewState.<key>' (JSON: search facets and UI state, as its "Share" button writes it) opens with the URL
# parameter viewStateShareKey=<key> (core.ui.runs_url): rows flat (a filter and an order other than the start time
# switch off the nesting under the parent run), ordered by name, with the results and the rows' knobs as columns.
VIEW_KEY = "suite"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
RUN_NAME_ORDER = "tags.`mlflow.runName`"


def runs_view(search_filter: str, metrics: list[str], params: list[str]) -> dict[str, Any]:
    """The shared view of an experiment's runs: `search_filter` (e.g. "tags.kind = 'row'"), ordered by run name,
    columns Dataset, the flat-named `metrics` (under their keys) and the `params`."""
    columns = ["attributes.`Dataset`", *(f"metrics.`{key(m)}`" for m in metrics), *(f"params.`{p}`" for p in params)]
    return {"searchFilter": search_filter, "orderByKey": RUN_NAME_ORDER, "orderByAsc": True,
            "selectedColumns": columns}
