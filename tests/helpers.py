"""Plain helpers shared by several test files (fixtures live in tests/conftest.py).

They are plain functions and constants, not fixtures, because they are called with per-test arguments
(`tiny_cfg(root, **overrides)`), at import time (the tuning spec embeds TINY) or in spawned worker processes
(tests/test_engine_training_ddp.py), where fixtures cannot reach. Test files import them as
`from tests.helpers import ...` instead of importing from one another."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import torch
import yaml
from PIL import Image

from core import protocols, record, tracking
from core.config import RunConfig, apply_overrides, config_hash
from core.specs import load_spec, read_spec, spec_path

REPO = Path(__file__).resolve().parent.parent

# ---- the tiny configuration ------------------------------------------------------------------------------------
# The tiny CPU configuration of the engine tests, as overrides (without the dataset, its root and loss.reg_weight,
# which the tuning study searches). tiny_cfg() builds the whole RunConfig on the tiny synthetic dataset.
TINY = {"data.synthetic_size": "tiny", "data.height": 32, "data.width": 16, "data.seq_len": 2,
        "data.ids_per_batch": 4, "data.tracklets_per_id": 2, "data.num_workers": 0, "model.backbone": "resnet18",
        "model.pretrained": False, "model.feat_dim": 32, "model.num_regions": 2, "train.epochs": 2,
        "train.milestones": [1], "train.device": "cpu", "eval.batch_size": 8}


def tiny_cfg(root, **overrides) -> RunConfig:
    """The tiny configuration on the synthetic dataset at `root`, with `overrides` (dotted keys) on top."""
    base = {"data.dataset": "synthetic", "data.root": str(root), **TINY, "loss.reg_weight": 0.5}
    base.update(overrides)
    return apply_overrides(RunConfig(), base, "tests")


# The tiny table run of the command-line end-to-end tests (64 x 32 frames), as `--set` overrides.
# The cpu profile's pretraining stage shrinks to 8 identities and one epoch of 2 iterations (a few seconds).
TINY_TABLE = {"data.synthetic_size": "tiny", "data.height": 64, "data.width": 32, "data.ids_per_batch": 4,
              "data.tracklets_per_id": 2, "data.num_workers": 0, "model.feat_dim": 32, "train.milestones": "[1]",
              "eval.batch_size": 16, "pretrain.identities": 8, "pretrain.epochs": 1, "pretrain.milestones": "[1]",
              "pretrain.ids_per_batch": 4, "pretrain.tracklets_per_id": 2}


def set_args(overrides: dict) -> list[str]:
    """`--set key=value` arguments of the command line for each override."""
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def states_equal(a: dict, b: dict) -> bool:
    """Two state dicts with the same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- a hand-written MARS tree ------------------------------------------------------------------------------------
# (pid, camera, frames) per tracklet, in name-list order; MARS folders: 0000 distractors, 00-1 junk
MARS_TRAIN = [(5, 1, 3), (5, 2, 2), (7, 1, 2), (12, 3, 2), (12, 3, 1)]
MARS_TEST = [(-1, 1, 2), (0, 3, 2), (3, 1, 2), (3, 2, 2), (3, 4, 1), (9, 2, 2), (9, 5, 2)]
MARS_QUERY = [3, 6]  # 1-based rows of the test table: pid 3 cam 1, pid 9 cam 2


def jpeg(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), value, np.uint8)).save(path)


def mars_folder(pid):
    return "00-1" if pid == -1 else f"{pid:04d}"


def write_mars(root, train=MARS_TRAIN, test=MARS_TEST, query=MARS_QUERY):
    info = root / "info"
    info.mkdir(parents=True)
    for split, spec in (("train", train), ("test", test)):
        names, rows, count = [], [], {}
        for pid, cam, n in spec:
            tnum = count[(pid, cam)] = count.get((pid, cam), 0) + 1
            rows.append([len(names) + 1, len(names) + n, pid, cam])
            for f in range(n):
                name = f"{mars_folder(pid)}C{cam}T{tnum:04d}F{f + 1:03d}.jpg"
                jpeg(root / f"bbox_{split}" / mars_folder(pid) / name, 40 * f)
                names.append(name)
        (info / f"{split}_name.txt").write_text("\n".join(names) + "\n")
        scipy.io.savemat(info / f"tracks_{split}_info.mat", {f"track_{split}_info": np.array(rows, np.int32)})
    scipy.io.savemat(info / "query_IDX.mat", {"query_IDX": np.array([query], np.int32)})
    return root


# ---- a tiny tuning study -----------------------------------------------------------------------------------------
SPEC = {
    "study": "tiny", "config": {"spec": "table1", "row": "Baseline + TL + STA + Fusion + Reg"},
    "search": {"reg_weight": {"low": 1.0e-3, "high": 10.0}, "reg_off": True, "margin": {"low": 0.1, "high": 0.6}},
    "validation": {"fraction": 0.25, "seed": 0}, "sampler": {"seed": 0, "n_startup_trials": 2},
    "pruner": {"n_startup_trials": 1, "n_warmup_steps": 1}, "report_every": 1,
    "budgets": {"cpu": {"n_trials": 3, "timeout": None, "overrides": TINY}},
}


def write_spec(folder: Path, name: str = "tune.yaml", **search) -> Path:
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    spec["search"].update(search)
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def runs_of(tmp_path: Path, study: str):
    import mlflow

    from core import tracking
    tracking.configure(uri(tmp_path))
    exp = mlflow.get_experiment_by_name("STA tiny")
    return tracking.flat_columns(mlflow.search_runs([exp.experiment_id], filter_string=f"tags.study = '{study}'",
                                                    output_format="pandas"))      # metrics under their flat names


# ---- fake run results (tracking and reports without training) -----------------------------------------------------
@dataclass(frozen=True)
class FakeEpoch:
    epoch: int
    seconds: float = 1.0

    def metrics(self) -> dict[str, float]:
        return {"ce": 2.0 / (self.epoch + 1), "triplet": 0.1, "lr": 3e-4, "epoch_wall_s": self.seconds}


@dataclass
class FakeResult:
    metrics: dict
    cmc: np.ndarray
    history: list
    scores: dict
    losses: dict
    per_query: pd.DataFrame


def fake_per_query(metrics: dict, num: int = 10) -> pd.DataFrame:
    """A per-query frame (core.evaluation.PER_QUERY_COLUMNS) whose R1 and mAP are those of `metrics` (R1 a
    multiple of 1/num): the first R1 * num queries match at rank 1, the others at rank 2 + their position."""
    frames = []
    for name, prefix in (("headline", ""), ("official", "official_"), ("gao", "gao_")):
        for reranked in (False, True):
            key = f"{prefix}{'rerank_' if reranked else ''}"
            if f"{key}R1" not in metrics:
                continue
            hits = round(metrics[f"{key}R1"] * num)
            frames.append(pd.DataFrame({
                "protocol": name, "reranked": reranked, "query": np.arange(num), "pid": np.arange(num) // 2 + 1,
                "camid": np.ones(num, dtype=np.int64),
                "first_match_rank": np.where(np.arange(num) < hits, 1.0, 2.0 + np.arange(num)),
                "ap": np.full(num, metrics[f"{key}mAP"])}))
    return pd.concat(frames, ignore_index=True)


# ---- per-query frames and a fake MLflow store (claims and reports without training) -----------------------------
def per_query(ranks, pids=None, protocols=("headline", "official", "gao"), reranked_ranks=None) -> pd.DataFrame:
    """A per-query frame: the same outcomes under every protocol; AP = 1 / rank (NaN rank: no valid match)."""
    ranks = np.asarray(ranks, dtype=float)
    pids = np.arange(len(ranks)) // 2 + 1 if pids is None else np.asarray(pids)
    parts = []
    for rr, r in ((False, ranks), (True, reranked_ranks)):
        if r is None:
            continue
        r = np.asarray(r, dtype=float)
        for p in protocols:
            parts.append(pd.DataFrame({"protocol": p, "reranked": rr, "query": np.arange(len(r)), "pid": pids,
                                       "camid": 1, "first_match_rank": r, "ap": 1.0 / r}))
    return pd.concat(parts, ignore_index=True)


def run_row(run_id: str, row: str, frame: pd.DataFrame | None, seed: int = 0, rerank: bool = False,
            dataset: str = "synthetic") -> dict:
    """A row run as mlflow.search_runs gives it, its logged metrics (percent) computed from `frame`."""
    out = {"run_id": run_id, "status": "FINISHED", "start_time": pd.Timestamp(seed + 1, unit="s", tz="UTC"),
           "tags.profile": "cpu", "tags.dataset": dataset, "tags.row": row, "tags.seed": str(seed),
           "params.eval.rerank": str(rerank), "params.data.gallery_with_queries": "True",
           "params.eval.ap_rule": "trapezoid", "params.eval.bootstrap_resamples": "200",
           "params.eval.bootstrap_seed": "0", "params.train.seed": str(seed)}
    if frame is not None:
        for p, prefix in (("headline", ""), ("official", "official_"), ("gao", "gao_")):
            for rr in (False, True):
                f = frame[(frame["protocol"] == p) & (frame["reranked"] == rr)]
                if f.empty:
                    continue
                key = f"{prefix}{'rerank_' if rr else ''}"
                valid = f[f["first_match_rank"].notna()]
                for k in (1, 5, 10, 20):
                    out[f"metrics.{key}R{k}"] = 100 * float((valid["first_match_rank"] <= k).mean())
                out[f"metrics.{key}mAP"] = 100 * float(valid["ap"].mean())
    return out


def fake_store(rows: list[tuple[dict, pd.DataFrame | None]]):
    """(runs frame, load_table) from (run row, per-query frame or None: a run logged before per-query results)."""
    tables = {r["run_id"]: f for r, f in rows}
    runs = pd.DataFrame([r for r, _ in rows])

    def load_table(run_id: str, name: str):
        assert name == record.PER_QUERY
        return tables.get(run_id)
    return runs, load_table


GOOD, BAD = [1] * 20, [5] * 20            # 20 queries of 10 identities: every query right at rank 1, or at rank 5


def table1_store():
    """Table 1's first three rows: Baseline (2 seeds), + TL (1 seed), + Avg (logged before per-query results)."""
    labels = [r.label for r in read_spec(spec_path("table1")).rows]
    base0, base1 = per_query([1] * 6 + [5] * 14), per_query([1] * 8 + [5] * 12)
    tl = per_query(GOOD)
    return fake_store([(run_row("r0", labels[0], base0, 0), base0), (run_row("r1", labels[0], base1, 1), base1),
                       (run_row("r2", labels[1], tl, 0), tl), (run_row("r3", labels[2], tl, 0), None)])


# ---- one-line refusals ---------------------------------------------------------------------------------------

def error_line(err: str) -> str:
    """The single `error: ...` line of a refused command's stderr (MLflow's INFO lines aside); fails the test
    unless there is exactly one line, it starts with 'error: ' and no traceback was printed."""
    lines = [line for line in err.splitlines() if " INFO mlflow." not in line and " INFO alembic." not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---- leftovers of killed processes, planted files ----------------------------------------------------------------
HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def no_temp(folder: Path) -> bool:
    """No temp file of an atomic write (``*.tmp``) is left in `folder`."""
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


class RunsCode:
    """Unpickling this calls os.mkdir(target): a planted checkpoint that runs code."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (str(self.target),)


# ---- a store of fake row runs (tests/test_tracking.py, tests/test_reporting_report.py) ----------------------------


FAKE_CHANCE = {"R1": 0.0022, "R5": 0.011, "R10": 0.022, "R20": 0.043, "mAP": 0.008}   # a random ranking's (fractions)


def log_fake_row(spec, row, seed: int, r1: float, dataset: str = "synthetic", rerank: float | None = None) -> str:
    """A finished row run with made-up results (fractions): every protocol, intervals, chance, losses, per-query."""
    cfg = row.config
    tags = {"table": spec.table, "row": row.label, "dataset": dataset, "profile": spec.profile, "seed": seed,
            "config_hash": f"{config_hash(cfg)}-{seed}-{dataset}"}
    with tracking.child_run(f"{row.label} [seed {seed}]", tags) as run_id:
        tracking.log_config(cfg, {"label": row.label})
        callback = tracking.epoch_callback()
        callback(FakeEpoch(0))             # epoch 0 seen live, epoch 1 back-filled from the history
        metrics = {"R1": r1, "R5": 0.8, "R10": 0.9, "R20": 0.95, "mAP": 0.5, "num_queries": 10.0,
                   "num_skipped_queries": 0.0}
        if rerank is not None:
            metrics.update(rerank_R1=rerank, rerank_R5=0.9, rerank_R10=0.95, rerank_R20=0.99, rerank_mAP=0.7,
                           rerank_set_size=11310.0)
        official = {f"official_{k}": v for k, v in metrics.items()}          # the headline is the official one
        gao = {f"gao_{k}": v + 0.125 if k.endswith(("R1", "mAP")) else v for k, v in metrics.items()}
        metrics.update({**official, **gao, "gao_num_skipped_queries": 2.0, "official_num_gallery": 11310.0,
                        "gao_num_gallery": 9330.0})
        metrics.update({"R1_ci_low": r1 - 0.125, "R1_ci_high": r1 + 0.125, "mAP_ci_low": 0.375,
                        "mAP_ci_high": 0.625})                              # bootstrap interval bounds (fractions)
        metrics.update({protocols.chance_name(m, p): v * (1.5 if p == "gao_" else 1.0) for p in ("", "official_", "gao_")
                        for m, v in FAKE_CHANCE.items()})                        # the split's chance level (fractions)
        losses = {"loss_ce": 2.5, "loss_triplet": 0.75, "loss_reg_weighted": 0.0125, "loss_total": 3.2625}
        tracking.log_result(FakeResult(metrics, np.linspace(r1, 1.0, 20), [FakeEpoch(0), FakeEpoch(1)], {}, losses,
                                       fake_per_query(metrics)), logged_by=callback)
    return run_id


def fake_tables_store(folder: Path) -> dict:
    """One SQLite store for the module: table1 rows 1-2 with 2 seeds, table4's run rows (STA, STA + ReRank, STAN, STAL)."""
    uri = tracking.configure(f"sqlite:///{folder}/mlflow.db")
    t1 = load_spec(spec_path("table1"), "cpu")
    t4 = load_spec(spec_path("table4"), "cpu")
    ids = {}
    with tracking.parent_run(tracking.experiment_name("table1"), "test", {"table": "table1"},
                             tracking.describe(t1.title, t1.path)):
        for seed, r1 in ((0, 0.50), (1, 0.60)):
            ids[("Baseline", seed)] = log_fake_row(t1, t1.rows[0], seed, r1)
        ids[("Baseline + TL", 0)] = log_fake_row(t1, t1.rows[1], 0, 0.70)
    t2 = load_spec(spec_path("table2"), "cpu")
    with tracking.parent_run(tracking.experiment_name("table2"), "test", {"table": "table2"}):
        for row, r1 in zip(t2.rows, (0.3, 0.4, 0.42, 0.41)):
            log_fake_row(t2, row, 0, r1)
    with tracking.parent_run(tracking.experiment_name("table4"), "test", {"table": "table4"}):
        rows = {r.label: r for r in t4.rows if r.run}
        log_fake_row(t4, rows["STA"], 0, 0.40)
        log_fake_row(t4, rows["STA + ReRank"], 0, 0.40, rerank=0.45)
        log_fake_row(t4, rows["STAN (this suite)"], 0, 0.35)
        log_fake_row(t4, rows["STAL (this suite)"], 0, 0.38)
    return {"uri": uri, "folder": folder, "ids": ids, "t1": t1}
