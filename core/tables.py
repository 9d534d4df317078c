"""One paper table, end to end: spec rows x seeds -> runs (trained, resumed or reused) -> tracked -> report.

A row whose full resolved config (core.config.config_hash) already has a FINISHED run in the table's MLflow
experiment, with its per-query outcomes (record.PER_QUERY), is reused, not run again, unless ``force``; an
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

from core import endpoints, engine, pretraining, record, tracking
from core.atomic import DiskFullError
from core.config import ConfigError, RunConfig, config_hash, uses_pretraining
from core.data import DatasetError, load_dataset
from core.engine.checkpoint import CheckpointError
from core.engine.device import check_device, current_dist, init_distributed, resolve_device
from core.engine.pretrained import stage_hash
from core.engine.training import check_checkpoint
from core.layers import seeded
from core.record import AUDIT_CLIPS, ROW_WALL_S
from core.reporting import claims, figures
from core.reporting.report import claim_records, write_index, write_report
from core.reporting.select import select_runs
from core.specs import Row, Spec, read_spec
from core.table_console import TableConsole


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
    return [Job(row, seed, cfg) for row in spec.run_rows
            for seed, cfg in seeded(row.config, seeds, f"{spec.path}, row '{row.label}'")]


# ---- torchrun: rank 0 decides, every rank follows -------------------------------------------------------------

def _start_distributed(device: str) -> bool:
    """Join the torchrun process group (if any); True on the main process."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return True
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
    key = cfg.data
    if key not in _DATASETS:
        if main:
            _DATASETS[key] = load_dataset(cfg.data, progress and main)
        _barrier()
        if not main:
            _DATASETS[key] = load_dataset(cfg.data, progress and main)
    return _DATASETS[key]


def _row_tags(spec: Spec, job: Job) -> dict[str, str]:
    ddp = current_dist()  # the device count is a tag, not part of the config (hash): 1 or G GPUs, one row
    return {"table": spec.table, "row": job.row.label, "row_index": str(job.row.index),
            "dataset": job.cfg.data.dataset, "profile": spec.profile or "", "seed": str(job.seed),
            "config_hash": config_hash(job.cfg), "train_dir": engine.train_dir(job.cfg, ".").name,
            "device": str(resolve_device(job.cfg.train.device, ddp)), "world_size": str(ddp.world_size),
            "spec": spec.path.name,
            "mlflow.note.content": job.row.full_deviation, **tracking.provenance_tags()}


def _run_job(spec: Spec, job: Job, work_dir: Path, main: bool, progress: bool,
             stage_tags: dict[str, str] | None = None):
    """Train/resume and evaluate one row and seed; on rank 0 log everything into a nested run (with the tags of the
    pretraining stage it starts from, if any); returns the engine's RunResult (None on other ranks)."""
    dataset = _dataset(job.cfg, main, progress)
    if not main:
        engine.run(job.cfg, work_dir, dataset=dataset, progress=False)
        return None
    tags = {**_row_tags(spec, job), **(stage_tags or {})}
    run_name = record.row_run_name(spec.table, job.row.index, job.row.label, job.seed)
    with tracking.child_run(run_name, tags, system_metrics=tags["device"].startswith("cuda")):
        tracking.log_config(job.cfg, extra={"label": job.row.label, "overrides": job.row.overrides,
                                            "paper": job.row.paper, "deviation": job.row.full_deviation,
                                            "preset": job.row.preset.name if job.row.preset else None,
                                            "spec": str(spec.path), "profile": spec.profile, "seed": job.seed})
        tracking.log_datasets(job.cfg, dataset)
        callback = tracking.epoch_callback()
        t0 = time.perf_counter()
        result = engine.run(job.cfg, work_dir, callbacks=[callback], dataset=dataset, progress=progress)
        tracking.log_result(result, logged_by=callback, extra_metrics={ROW_WALL_S: time.perf_counter() - t0})
        _log_figures(job, result, dataset)
        if job.cfg.train.log_checkpoint and callback.logged:    # the run that trained it (Table 2's others share it)
            tracking.log_file(result.run_dir / "last.pt", "checkpoint")
        tracking.set_tags({"checkpoint_path": str((result.run_dir / "last.pt").resolve())})
    return result


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
        tracking.check(tracking_uri)               # the store is usable (nothing created yet)
    if not force:                                  # every checkpoint a row would resume (--force deletes them)
        _check_checkpoints(todo, work_dir)
    for job in todo:                               # the data, once per data config: refused before any row trains
        check_data_fits(job.cfg, _dataset(job.cfg, main, progress))
    if main:
        tracking.configure(tracking_uri)
        tracking.end_orphaned_runs(experiment)     # runs of a killed earlier invocation: RUNNING -> KILLED
    found = [_agree(None if force else tracking.find_finished(experiment, config_hash(job.cfg),
                                                               needs=(record.PER_QUERY,)) if main else None)
             for job in todo]
    cleared: set[Path] = set()
    console = TableConsole(spec.table, [j.name for j in todo], found, tracking.shown_uri(tracking_uri),
                           Path(reports_dir) / f"{spec.table}.md", enabled=main and progress)
    stages = pretraining.ensure_all([j.cfg for j, f in zip(todo, found) if not f], progress) if main else {}
    _barrier()                                   # the other ranks load the stage's weights from the cache
    parent = tracking.parent_run(experiment, _parent_name(spec), _parent_tags(spec, todo),
                                 tracking.describe(spec.title, spec.path), _runs_view(spec)) if main \
        else contextlib.nullcontext()
    with parent:
        for i, (job, reuse) in enumerate(zip(todo, found)):
            if reuse:
                if main:
                    tracking.mark_used(reuse)
                outcome.reused.append(job.name)
                continue
            if force:
                _clear_checkpoint(job.cfg, work_dir, cleared, main)
            stage = stages.get(stage_hash(job.cfg)) if uses_pretraining(job.cfg) else None
            console.start(i)
            try:
                result = _run_job(spec, job, work_dir, main, progress, stage.tags() if stage else None)
                console.done(i, result)
                outcome.trained.append(job.name)
            except (DatasetError, CheckpointError, DiskFullError):
                raise                # a broken dataset, checkpoint or full disk: stop with its one-line error
            except Exception as e:  # noqa: BLE001 - one failed row (e.g. a NaN loss) does not stop the table
                console.failed(i, e)
                outcome.failed.append(f"{job.name}: {type(e).__name__}: {e}")
                if not isinstance(e, FloatingPointError):   # a diverged row's message says it all (and what to do)
                    traceback.print_exc(file=sys.stderr)
                if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                    raise  # under torchrun the ranks must stay in step: stop them all
        if main:
            tracking.set_tags({"trained": len(outcome.trained), "reused": len(outcome.reused),
                               "failed": len(outcome.failed)})
    if main:
        try:
            outcome.report = rebuild_report(spec.path, reports_dir, tracking_uri)
        except KeptReport as kept:        # every selected row failed on a store without earlier runs
            print(kept, file=sys.stderr)
            outcome.report = kept.path
    _barrier()
    return outcome


def check_data_fits(cfg: RunConfig, dataset) -> None:
    """Refuse, before any row trains, a dataset a config cannot train or be scored on: fewer than 2 training
    identities, fewer than data.ids_per_batch (P) of them, or no query with a gallery tracklet of its identity from
    another camera (every query would be ignored: nothing to score)."""
    ids = dataset.num_train_pids
    if ids < 2:
        raise DatasetError(f"{dataset.name} ({cfg.data.root or cfg.data.dataset}): the training split has {ids} "
                           f"identit{'y' if ids == 1 else 'ies'}; expected at least 2 (a classifier and a triplet "
                           f"loss need several)")
    if cfg.data.ids_per_batch > ids:
        raise ConfigError(f"key 'data.ids_per_batch' is {cfg.data.ids_per_batch} but the training split of "
                          f"{dataset.name} has only {ids} identities; expected P <= {ids} (--set "
                          f"data.ids_per_batch={ids})")
    cams: dict[int, set[int]] = {}
    for t in dataset.gallery:
        cams.setdefault(t.pid, set()).add(t.camid)
    if not any(cams.get(q.pid, set()) - {q.camid} for q in dataset.query if q.pid > 0):
        raise DatasetError(f"{dataset.name} ({cfg.data.root or cfg.data.dataset}): none of its {len(dataset.query)} "
                           f"queries has a gallery tracklet of its identity from another camera; expected a "
                           f"query/gallery split in which queries can be matched")


def _check_checkpoints(todo: list[Job], work_dir: Path) -> None:
    """Every checkpoint in the rows' training folders must be resumable (training.check_checkpoint): a bad one stops
    the table in one line before the store is opened and any row trains (also that of a row whose finished run would
    be reused: the file is damaged either way, and the message says to delete it)."""
    for path in dict.fromkeys(engine.train_dir(job.cfg, work_dir) / "last.pt" for job in todo):
        if path.exists():
            check_checkpoint(path, next(j.cfg for j in todo if engine.train_dir(j.cfg, work_dir) / "last.pt" == path))


def _runs_view(spec: Spec) -> dict:
    """The experiment's runs table (core.record.runs_view): its row runs, the spec's metrics, the knobs its rows set."""
    knobs = dict.fromkeys(k for row in spec.rows if row.run for k in row.overrides)
    return record.runs_view(f"tags.kind = '{record.ROW_KIND}'", list(spec.metrics), list(knobs))


def _parent_name(spec: Spec) -> str:
    return f"{spec.table} {spec.dataset} {spec.profile} {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _parent_tags(spec: Spec, todo: list[Job]) -> dict[str, str]:
    return {"table": spec.table, "dataset": spec.dataset or "", "profile": spec.profile or "",
            "rows": "; ".join(dict.fromkeys(j.row.label for j in todo)),
            "seeds": ",".join(str(s) for s in dict.fromkeys(j.seed for j in todo)),
            "cli_overrides": str(spec.cli_overrides), **tracking.provenance_tags()}


def _clear_checkpoint(cfg: RunConfig, work_dir: Path, cleared: set[Path], main: bool) -> None:
    """--force: retrain from scratch, once per trained model (Table 2's rows share one)."""
    path = engine.train_dir(cfg, work_dir)
    if path in cleared:
        return
    cleared.add(path)
    if main and path.exists():
        shutil.rmtree(path)
    _barrier()


class KeptReport(Exception):
    """rebuild_report found no finished run and kept the existing report; the message says what was looked for."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = path


def rebuild_report(spec_path: str | Path, reports_dir: str | Path = "reports",
                   tracking_uri: str | None = None, create: bool = True) -> Path:
    """Rebuild reports/<table>.md and its figures from the tracking store (no training), and the index; log the
    claim verdicts (tracking.log_claims), the report and its figures (tracking.log_report) on the table's parent
    run.

    A report with no finished run behind it never replaces an existing one (a misspelt store, or a table not run on
    this store): KeptReport, naming the experiment and the store looked in, and nothing is written. ``create=False``
    (reproduce/report.py): a missing local store is refused, never created (tracking.configure)."""
    uri = tracking.configure(tracking_uri, create=create)
    spec = read_spec(spec_path)
    experiment = tracking.experiment_name(spec.table)
    runs = tracking.runs_frame(experiment)
    target = Path(reports_dir) / f"{spec.table}.md"
    if select_runs(runs).empty and target.exists():
        raise KeptReport(target, f"kept {target}: experiment '{experiment}' in {endpoints.shown(uri)} has no "
                                 f"finished row runs, so a rebuilt report would show the paper's numbers only")
    load_table = claims.cached(tracking.load_table)     # each per-query artifact read once for report and verdicts
    path = write_report(spec, runs, reports_dir, load_json=tracking.load_json, load_table=load_table)
    write_index(reports_dir)
    tracking.log_claims(experiment, claim_records(spec, runs, load_table))
    tracking.log_report(experiment, path)
    return path
