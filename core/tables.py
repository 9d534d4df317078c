"""One paper table, end to end: spec rows x seeds -> runs (trained, resumed or reused) -> tracked -> report.

A row whose full resolved config (core.config.config_hash) already has a FINISHED run in the table's MLflow
experiment, with its per-query outcomes (tracking.PER_QUERY), is reused, not run again, unless ``force``; an
interrupted row resumes from its checkpoint in ``work_dir`` (the engine does that). Rows that differ only in evaluation options (Table 2's test N, Table 4's
re-ranking) share one trained model through core.engine.train_dir.

Under ``torchrun`` every rank trains (DDP, in the engine) and only rank 0 talks to MLflow and writes reports;
rank 0's reuse decisions are broadcast to the other ranks.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch.distributed as dist

from core import claims, figures, reporting, tracking
from core.config import RunConfig, apply_overrides, config_hash
from core.reporting import AUDIT_CLIPS
from core.specs import ROW_WALL_S, Row, Spec, read_spec


@dataclass
class TableOutcome:
    report: Path | None = None
    trained: list[str] = field(default_factory=list)   # "label [seed s]" of rows run in this invocation
    reused: list[str] = field(default_factory=list)    # rows whose finished run was reused
    failed: list[str] = field(default_factory=list)    # "label [seed s]: error"


@dataclass(frozen=True)
class Job:
    row: Row
    seed: int
    cfg: RunConfig

    @property
    def name(self) -> str:
        return f"{self.row.label} [seed {self.seed}]"


def jobs(spec: Spec, seeds: Sequence[int] | None = None) -> list[Job]:
    """Runnable rows x seeds (train.seed = each seed; None keeps the config's seed)."""
    out = []
    for row in spec.run_rows:
        for seed in (seeds if seeds else [row.config.train.seed]):
            cfg = apply_overrides(row.config, {"train.seed": int(seed)}, f"{spec.path}, row '{row.label}'")
            out.append(Job(row, int(seed), cfg))
    return out


# ---- torchrun: rank 0 decides, every rank follows -------------------------------------------------------------

def _start_distributed(device: str) -> bool:
    """Join the torchrun process group (if any); True on the main process."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return True
    from core.engine.device import init_distributed, resolve_device
    ddp = init_distributed(device)
    resolve_device(device, ddp)  # sets the CUDA device the NCCL broadcasts use
    return ddp.is_main


def _agree(value: Any) -> Any:
    """Rank 0's `value` on every rank (identity without torchrun)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ---- datasets and one job ------------------------------------------------------------------------------------

_DATASETS: dict = {}


def _dataset(cfg: RunConfig, main: bool, progress: bool = True):
    """Load (generating synthetic data on first use) once per data config; rank 0 first under torchrun."""
    from core.data import load_dataset
    key = cfg.data
    if key not in _DATASETS:
        if main:
            _DATASETS[key] = load_dataset(cfg.data, progress and main)
        _barrier()
        if not main:
            _DATASETS[key] = load_dataset(cfg.data, progress and main)
    return _DATASETS[key]


def _row_tags(spec: Spec, job: Job) -> dict[str, str]:
    from core.engine import train_dir
    from core.engine.device import current_dist, resolve_device
    ddp = current_dist()  # the device count is a tag, not part of the config (hash): 1 or G GPUs, one row
    return {"table": spec.table, "row": job.row.label, "row_index": str(job.row.index),
            "dataset": job.cfg.data.dataset, "profile": spec.profile or "", "seed": str(job.seed),
            "config_hash": config_hash(job.cfg), "train_dir": train_dir(job.cfg, ".").name,
            "device": str(resolve_device(job.cfg.train.device, ddp)), "world_size": str(ddp.world_size),
            "spec": spec.path.name,
            "mlflow.note.content": job.row.full_deviation, **tracking.provenance_tags()}


def _run_job(spec: Spec, job: Job, work_dir: Path, main: bool, progress: bool) -> None:
    """Train/resume and evaluate one row and seed; on rank 0 log everything into a nested run."""
    from core.engine import run
    dataset = _dataset(job.cfg, main, progress)
    if not main:
        run(job.cfg, work_dir, dataset=dataset, progress=False)
        return
    tags = _row_tags(spec, job)
    with tracking.child_run(job.name, tags, system_metrics=tags["device"].startswith("cuda")):
        tracking.log_config(job.cfg, extra={"label": job.row.label, "overrides": job.row.overrides,
                                            "paper": job.row.paper, "deviation": job.row.full_deviation,
                                            "preset": job.row.preset.name if job.row.preset else None,
                                            "spec": str(spec.path), "profile": spec.profile, "seed": job.seed})
        callback = tracking.epoch_callback()
        t0 = time.perf_counter()
        result = run(job.cfg, work_dir, callbacks=[callback], dataset=dataset, progress=progress)
        tracking.log_result(result, logged_by=callback, extra_metrics={ROW_WALL_S: time.perf_counter() - t0})
        _log_figures(job, result, dataset)
        if spec.profile == "paper" and callback.logged:     # the run that trained it (Table 2's others share it)
            tracking.log_file(result.run_dir / "last.pt", "checkpoint")
        tracking.set_tags({"checkpoint_path": str((result.run_dir / "last.pt").resolve())})


def _log_figures(job: Job, result, dataset) -> None:
    chance = getattr(result, "chance_cmc", ())            # the split's random-ranking CMC (core.evaluation.chance)
    fig = figures.cmc_figure({job.row.label: [100.0 * c for c in result.cmc]}, title=f"CMC — {job.row.label}",
                             chance=[100.0 * c for c in chance] if len(chance) else None)
    tracking.log_figure(fig, "cmc.png")
    figures.close(fig)
    clips = figures.attention_clips(result.scores, dataset.query, job.cfg.eval.seq_len, job.cfg.eval.sampling)
    if clips:
        tracking.log_dict({"clips": clips}, "scores.json")
        fig = figures.attention_figure(clips, title=f"N x K attention scores — {job.row.label}",
                                       size=(job.cfg.data.height, job.cfg.data.width))
        tracking.log_figure(fig, "attention.png")
        figures.close(fig)
    audit_clips = getattr(result, "audit_clips", None)       # the attention audit's clips with damage (synthetic)
    if audit_clips:
        tracking.log_dict({"clips": audit_clips}, AUDIT_CLIPS)
        fig = figures.attention_figure(audit_clips, title=f"Attention audit — {job.row.label}",
                                       size=(job.cfg.data.height, job.cfg.data.width))
        tracking.log_figure(fig, "attention_audit.png")
        figures.close(fig)


# ---- the table -----------------------------------------------------------------------------------------------

def run_table(spec: Spec, seeds: Sequence[int] | None = None, work_dir: str | Path = "runs", force: bool = False,
              tracking_uri: str | None = None, reports_dir: str | Path = "reports", progress: bool = True,
              ) -> TableOutcome:
    """Run (or reuse) every runnable row of a load_spec()-resolved spec for each seed, then write its report."""
    from core.data import DatasetError
    from core.engine.device import check_device
    todo = jobs(spec, seeds)
    if not todo:
        raise ValueError(f"{spec.path}: no runnable rows selected")
    for device in dict.fromkeys(job.cfg.train.device for job in todo):
        check_device(device)                 # a missing GPU is refused before any row runs
    main = _start_distributed(todo[0].cfg.train.device)
    work_dir = Path(work_dir)
    outcome = TableOutcome()
    experiment = tracking.experiment_name(spec.table)
    if main:
        tracking.configure(tracking_uri)
        tracking.end_orphaned_runs(experiment)     # runs of a killed earlier invocation: RUNNING -> KILLED
    cleared: set[Path] = set()
    parent = tracking.parent_run(experiment, _parent_name(spec), _parent_tags(spec, todo),
                                 tracking.describe(spec.title, spec.path)) if main \
        else contextlib.nullcontext()
    with parent:
        for job in todo:
            found = tracking.find_finished(experiment, config_hash(job.cfg), needs=(tracking.PER_QUERY,)) \
                if main else None
            found = _agree(None if force else found)
            if found:
                if main:
                    tracking.mark_used(found)
                outcome.reused.append(job.name)
                continue
            if force:
                _clear_checkpoint(job.cfg, work_dir, cleared, main)
            try:
                _run_job(spec, job, work_dir, main, progress)
                outcome.trained.append(job.name)
            except DatasetError:
                raise                # a broken dataset fails every row: stop with its one-line error
            except Exception as e:  # noqa: BLE001 - one failed row (e.g. a NaN loss) does not stop the table
                outcome.failed.append(f"{job.name}: {type(e).__name__}: {e}")
                traceback.print_exc(file=sys.stderr)
                if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                    raise  # under torchrun the ranks must stay in step: stop them all
        if main:
            tracking.set_tags({"trained": len(outcome.trained), "reused": len(outcome.reused),
                               "failed": len(outcome.failed)})
    if main:
        outcome.report = rebuild_report(spec.path, reports_dir, tracking_uri)
    _barrier()
    return outcome


def _parent_name(spec: Spec) -> str:
    return f"{spec.table} {spec.dataset} {spec.profile} {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _parent_tags(spec: Spec, todo: list[Job]) -> dict[str, str]:
    return {"table": spec.table, "dataset": spec.dataset or "", "profile": spec.profile or "",
            "rows": "; ".join(dict.fromkeys(j.row.label for j in todo)),
            "seeds": ",".join(str(s) for s in dict.fromkeys(j.seed for j in todo)),
            "cli_overrides": str(spec.cli_overrides), **tracking.provenance_tags()}


def _clear_checkpoint(cfg: RunConfig, work_dir: Path, cleared: set[Path], main: bool) -> None:
    """--force: retrain from scratch, once per trained model (Table 2's rows share one)."""
    from core.engine import train_dir
    path = train_dir(cfg, work_dir)
    if path in cleared:
        return
    cleared.add(path)
    if main and path.exists():
        shutil.rmtree(path)
    _barrier()


def rebuild_report(spec_path: str | Path, reports_dir: str | Path = "reports",
                   tracking_uri: str | None = None) -> Path:
    """Rebuild reports/<table>.md and its figures from the tracking store (no training), and the index; log the
    claim verdicts on the table's parent run (tracking.log_claims)."""
    tracking.configure(tracking_uri)
    spec = read_spec(spec_path)
    experiment = tracking.experiment_name(spec.table)
    runs = tracking.runs_frame(experiment)
    load_table = claims.cached(tracking.load_table)     # each per-query artifact read once for report and verdicts
    path = reporting.write_report(spec, runs, reports_dir, load_json=tracking.load_json, load_table=load_table)
    reporting.write_index(reports_dir)
    tracking.log_claims(experiment, reporting.claim_records(spec, runs, load_table))
    return path
