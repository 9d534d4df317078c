"""MLflow tracking: the only module that imports mlflow.

Plain functions around one store: a parent run per invocation (``parent_run``), a nested run per row and seed
(``child_run``), the resolved config as params (``log_config``), per-epoch metrics through an engine callback
(``epoch_callback``), final metrics and artifacts (``log_result``), and look-ups for reuse and reports
(``find_finished``, ``runs_frame``, ``load_json``, ``load_table``), and the report, its figures and the claim
verdicts on the table's parent run (``log_report``, ``log_claims``). Metrics R1..mAP and their bootstrap intervals
(``*_ci_low``, ``*_ci_high``) are logged in percent; every query's outcome is the artifact ``per_query.parquet``.
Callers name metrics by their flat names; they are logged under the keys of core.record (``'/'`` sections:
``Headline/R1``, ``interval/R1_ci_low``, ``train/ce`` at step = epochs done) and read back flat (``flat_columns``).

Store: ``configure(uri)``; the URI comes from the argument, else $MLFLOW_TRACKING_URI, else a SQLite database in
the working folder (``sqlite:///mlflow.db``); new experiments keep their artifacts in 'mlruns' beside a SQLite
database (``artifact_root``). Browse it with ``python reproduce/ui.py`` (core.ui).

No telemetry: MLflow 3 reports usage to its developers unless MLFLOW_DISABLE_TELEMETRY or DO_NOT_TRACK is true;
both are set here before mlflow is imported (they also reach the processes this one starts).

Runs are tagged ``worker=<host>:<pid>``; ``end_orphaned_runs`` marks KILLED the RUNNING runs whose process is gone.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"   # read by mlflow.telemetry when mlflow is imported
os.environ["DO_NOT_TRACK"] = "true"              # the cross-tool opt-out, honoured by mlflow.telemetry too

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from core import endpoints, leftovers, record, stores  # noqa: E402
from core.config import ConfigError, RunConfig, to_dict, to_flat_dict  # noqa: E402
from core.provenance import provenance  # noqa: E402
from core.record import (  # noqa: E402
    CLAIMS,
    PER_QUERY,
    PRETRAIN_EXPERIMENT,
    PRETRAIN_KIND,
    REPORT,
    ROW_KIND,
    STUDY_KIND,
    TABLE_KIND,
    TRAIN_WALL_S,
    is_percent,
)
from core.specs import EXPERIMENTS  # noqa: E402

try:  # mlflow was imported before this module (and started its telemetry client): drop that client
    from mlflow.telemetry import get_telemetry_client, set_telemetry_client
    if get_telemetry_client() is not None:
        set_telemetry_client()
except ImportError:  # MLflow 2 has no telemetry
    pass

DEFAULT_URI = "sqlite:///mlflow.db"
# URI schemes of the stores MLflow has (a "+driver" suffix is allowed; a plain folder is a file store); a test checks
# them against the installed mlflow
URI_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "file", "http", "https", "databricks", "databricks-uc", "uc")
# MLflow 3 opens an experiment without this tag in its GenAI view (traces, judges) and asks which kind it is; the
# value its UI names CUSTOM_MODEL_DEVELOPMENT opens the runs table (mlflow/server/js ExperimentKind, MLflow 3.x)
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"             # the description MLflow shows on an experiment's (or run's) page
UI_HOST, UI_PORT = "127.0.0.1", 5000          # where reproduce/ui.py serves MLflow's UI (core.ui), the run URLs
SETTLE_S = 1.0                               # wait before workers that created a study's parent run pick one

logging.getLogger("alembic").setLevel(logging.WARNING)   # the SQLite store's schema migrations are chatty
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def configure(uri: str | None = None, create: bool = True) -> str:
    """Point MLflow at `uri` (else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db); returns the URI used.

    A tracking server or database store must answer within seconds (core.endpoints), else a one-line ConfigError.
    A local store (core.stores) is checked first: an existing SQLite file must be a readable database; a missing
    one is refused when ``create`` is False (reading commands: a misspelt path must not create an empty store whose
    emptiness then rewrites a report), and otherwise created under a lock (two table runs starting together on a
    fresh store), saying where on stdout.
    """
    source = "--tracking-uri" if uri else "$MLFLOW_TRACKING_URI"
    uri = resolved_uri(uri)
    check_uri(uri)
    endpoints.check(uri, source)
    stores.check_local(uri, source, create)
    mlflow.set_tracking_uri(uri)
    if create:
        stores.create_sqlite(uri, lambda: MlflowClient(uri).search_experiments(max_results=1))
    return uri


def check(uri: str | None = None) -> str:
    """What configure checks, without pointing MLflow at the store or creating it; returns the URI."""
    source = "--tracking-uri" if uri else "$MLFLOW_TRACKING_URI"
    uri = resolved_uri(uri)
    check_uri(uri)
    endpoints.check(uri, source)
    stores.check_local(uri, source, create=True)
    return uri


def resolved_uri(uri: str | None = None) -> str:
    """The store a command uses: `uri` (--tracking-uri), else $MLFLOW_TRACKING_URI, else DEFAULT_URI."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def shown_uri(uri: str | None = None) -> str:
    """resolved_uri(uri) as it may be printed: passwords masked."""
    return endpoints.shown(resolved_uri(uri))


def check_uri(uri: str) -> None:
    """Refuse, before anything runs, a tracking URI MLflow has no store for (ConfigError naming it and the schemes)."""
    scheme = urllib.parse.urlparse(uri).scheme.split("+", 1)[0].lower()
    if scheme and scheme not in URI_SCHEMES:
        raise ConfigError(f"tracking URI {endpoints.shown(repr(uri))} (--tracking-uri or $MLFLOW_TRACKING_URI): unknown scheme "
                          f"'{scheme}'; allowed: {', '.join(URI_SCHEMES)} (e.g. sqlite:///mlflow.db, "
                          f"http://host:5000) or a plain folder")


def experiment_name(table: str) -> str:
    """'table1' -> 'STA table1' (one MLflow experiment per paper table)."""
    return f"STA {table}"


def describe(title: str, spec_path: str | Path) -> str:
    """An experiment's description (markdown): its title and the spec it runs, relative to the repository when
    inside it, e.g. 'Table 1 ...\n\nSpec: `experiments/table1.yaml`'."""
    path = Path(spec_path).resolve()
    shown = path.relative_to(EXPERIMENTS.parent) if path.is_relative_to(EXPERIMENTS.parent) else path
    return f"{title}\n\nSpec: `{shown.as_posix()}`"


def provenance_tags() -> dict[str, str]:
    """git commit, package versions and hardware (core.provenance) as run tags."""
    p = provenance()
    return {"git_commit": p["git_commit"], "git_dirty": p["git_dirty"], "gpu": p["device"], "torch": p["torch"],
            "torchvision": p["torchvision"], "python": p["python"], "platform": p["platform"]}


def _system_metrics(enabled: bool) -> bool:
    if not enabled:
        return False
    try:
        import psutil  # noqa: F401  (MLflow's system-metrics sampler needs it)
    except ImportError:
        warnings.warn("psutil is not installed: MLflow system metrics are not logged (pip install psutil nvidia-ml-py)")
        return False
    return True


def use_experiment(name: str, description: str | None = None, view: Mapping[str, Any] | None = None) -> str:
    """Make experiment `name` (created if missing) the active one; returns its id.

    Tags it as a model-training experiment (EXPERIMENT_KIND; MLflow 3.17's UI ignores it: core.ui) and, given a
    `description` (a table's title and spec path), sets it as the experiment's description (NOTE_TAG), given a
    `view` (core.record.runs_view) saves it as the experiment's shared runs view (record.VIEW_TAG); all are set
    again by every invocation.

    Safe for workers that create it at the same moment: when another process wins the creation, MLflow's
    set_experiment returns it without activating it, and nested runs then land in the 'Default' experiment.
    """
    if mlflow.get_experiment_by_name(name) is None:
        _create_experiment(name)
    exp = mlflow.set_experiment(name)
    mlflow.set_experiment(experiment_id=exp.experiment_id)
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **({NOTE_TAG: description} if description else {}),
            **({record.VIEW_TAG: json.dumps(view)} if view else {})}
    client = MlflowClient()
    for key, value in tags.items():
        if exp.tags.get(key) != value:
            _set_experiment_tag(client, exp.experiment_id, key, value)
    return exp.experiment_id


def artifact_root(uri: str) -> str | None:
    """Where new experiments keep their artifacts: the folder 'mlruns' beside a SQLite database
    ('sqlite:////data/m.db' -> 'file:///data/mlruns', 'sqlite:///mlflow.db' -> ./mlruns), so moving the database
    and that folder together keeps every figure; None (the store's own default) for servers, other databases and
    folders."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme.split("+", 1)[0].lower() != "sqlite" or ":///" not in uri:
        return None
    path = uri.split(":///", 1)[1].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return (Path(path).expanduser().resolve().parent / "mlruns").as_uri()


def _create_experiment(name: str) -> None:
    """Create experiment `name` with its artifacts under artifact_root() of the store (when it has one); another
    worker creating it at the same moment is fine."""
    root = artifact_root(mlflow.get_tracking_uri())
    folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    try:
        mlflow.create_experiment(name, artifact_location=f"{root}/{folder}" if root else None)
    except mlflow.exceptions.MlflowException:
        if mlflow.get_experiment_by_name(name) is None:
            raise


def _set_experiment_tag(client: MlflowClient, experiment_id: str, key: str, value: str) -> None:
    """Set an experiment tag that another worker may be setting at the same moment: the store's upsert is a read
    then an insert, so the second of two simultaneous inserts can fail on the key the first just wrote. Then the tag
    is already there; if it is not (another error), one more try, which raises if it fails too."""
    try:
        client.set_experiment_tag(experiment_id, key, value)
    except mlflow.exceptions.MlflowException:
        if client.get_experiment(experiment_id).tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)


@contextlib.contextmanager
def parent_run(experiment: str, name: str, tags: Mapping[str, str] | None = None,
               description: str | None = None, view: Mapping[str, Any] | None = None) -> Iterator[str]:
    """Start the invocation's run in `experiment` (created if missing, described by `description`: use_experiment);
    yields its run id.

    The status is FINISHED on a normal exit, FAILED when the body raises, KILLED on Ctrl-C.
    """
    use_experiment(experiment, description, view)
    with _run(run_name=name, tags={"kind": TABLE_KIND, "worker": leftovers.worker(), **(tags or {})}) as run_id:
        yield run_id


@contextlib.contextmanager
def child_run(name: str, tags: Mapping[str, str] | None = None, system_metrics: bool = False) -> Iterator[str]:
    """A run nested in the active run (one per row and seed); yields its run id.

    ``system_metrics=True`` (GPU runs) also samples CPU/GPU utilisation when psutil is installed.
    """
    with _run(run_name=name, nested=True, tags={"kind": ROW_KIND, "worker": leftovers.worker(), **(tags or {})},
              log_system_metrics=_system_metrics(system_metrics)) as run_id:
        yield run_id


@contextlib.contextmanager
def study_run(experiment: str, study: str, name: str, tags: Mapping[str, str] | None = None,
              description: str | None = None, view: Mapping[str, Any] | None = None) -> Iterator[str]:
    """The parent run of an Optuna study (core.tuning), made the active run so child_run() nests under it.

    Found by the tags kind=study and study=<study> in `experiment`, or created: every worker and every resumed
    invocation of one study hangs its trials under the same run. When two workers create one at the same moment,
    both keep the older and the newer is deleted. `description`: the experiment's (use_experiment). Yields the
    run id.
    """
    use_experiment(experiment, description, view)
    run_id = _study_run_id(experiment, study, name)
    with _run(tags={"kind": STUDY_KIND, "study": study, **(tags or {})}, run_id=run_id) as rid:
        yield rid


def _study_run_id(experiment: str, study: str, name: str) -> str:
    client = MlflowClient()
    exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
    study_tag = study.replace("\\", "\\\\").replace("'", "\\'")

    def oldest() -> str | None:
        runs = client.search_runs([exp_id], f"tags.kind = '{STUDY_KIND}' and tags.study = '{study_tag}'",
                                  max_results=100)
        runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        return runs[0].info.run_id if runs else None

    found = oldest()
    if found:
        return found
    mine = client.create_run(exp_id, tags={"kind": STUDY_KIND, "study": study}, run_name=name).info.run_id
    time.sleep(SETTLE_S)    # a worker that looked just before this one created its run: both now see both runs
    winner = oldest() or mine
    if winner != mine:
        client.delete_run(mine)
    return winner


@contextlib.contextmanager
def _run(tags: Mapping[str, str], **kwargs) -> Iterator[str]:
    run = mlflow.start_run(tags={k: str(v) for k, v in tags.items()}, **kwargs)
    try:
        yield run.info.run_id
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException as e:
        mlflow.set_tag("error", endpoints.shown(f"{type(e).__name__}: {e}")[:4000])
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def end_orphaned_runs(experiment: str) -> list[str]:
    """Mark KILLED the RUNNING runs of `experiment` whose process (tag worker, this host) no longer exists: a killed
    table invocation or Optuna worker leaves its runs RUNNING forever. Study runs (shared by workers) are left
    alone. Returns the run ids marked."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    client = MlflowClient()
    marked = []
    for run in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=10000):
        worker = run.data.tags.get("worker", "")
        if run.data.tags.get("kind") == STUDY_KIND or not leftovers.worker_gone(worker):
            continue
        client.set_tag(run.info.run_id, "error", f"process {worker} stopped without ending this run (killed); "
                                                 f"marked KILLED by {leftovers.worker()}")
        client.set_terminated(run.info.run_id, "KILLED")
        marked.append(run.info.run_id)
    return marked


def log_config(cfg: RunConfig, extra: Mapping[str, Any] | None = None) -> None:
    """The resolved config as params (same dotted names for every run) and, in full, as config.json.

    Knobs the run's model does not use (core.record.inert, e.g. model.fusion on an avg row) are left out of the
    params and named in the tag ``inert_params``, so Compare's "Show diff only" shows only real differences.
    `extra` (e.g. the spec row) is written beside it as spec_row.json.
    """
    flat = to_flat_dict(cfg)
    unused = record.inert(flat)
    mlflow.log_params({k: _param(v) for k, v in flat.items() if k not in unused})
    if unused:
        why: dict[str, list[str]] = {}
        for k, reason in unused.items():
            why.setdefault(reason, []).append(k)
        mlflow.set_tag("inert_params", "; ".join(f"{', '.join(ks)} ({r})" for r, ks in why.items()))
    mlflow.log_dict(to_dict(cfg), record.CONFIG)
    if extra is not None:
        mlflow.log_dict(dict(extra), "spec_row.json")


def log_datasets(cfg: RunConfig, dataset) -> None:
    """The run's training and test data as MLflow dataset inputs (contexts 'training' and 'test'), so the runs
    table's Dataset column and filter show them: name '<dataset>/<synthetic size or folder name>/<split>', source
    the data's folder, digest a hash of the data config's identity and the split's tracklet and frame counts."""

    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    d = cfg.data
    where = f"{d.synthetic_size}-seed{d.synthetic_seed}" if d.dataset == "synthetic" else Path(d.root or "").name
    root = Path(d.root).resolve().as_uri() if d.root else f"synthetic:{where}"
    summary = dataset.summary()
    for context, splits in (("training", ("train",)), ("test", ("query", "gallery"))):
        ident = json.dumps([d.dataset, where, root, [summary[s] for s in splits]], sort_keys=True)
        meta = MetaDataset(LocalArtifactDatasetSource(root), name=f"{d.dataset}/{where}/{'+'.join(splits)}",
                           digest=hashlib.sha256(ident.encode()).hexdigest()[:8])
        mlflow.log_input(meta, context=context)


def _param(value: Any) -> str:
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)


class _EpochLogger:
    """Engine EpochCallback: logs EpochStats.metrics() (ce, triplet, reg, total, train_acc, lr, iterations under
    train/; frames_per_s, compute_frames_per_s, epoch_wall_s under time/: core.record) at step = epochs done (1..E,
    the epoch the console prints) into the active run, and remembers which epochs (0-based) it logged."""

    def __init__(self) -> None:
        self.logged: set[int] = set()

    def __call__(self, stats, model=None) -> None:
        mlflow.log_metrics(record.keyed(stats.metrics()), step=stats.epoch + 1)
        self.logged.add(stats.epoch)


def epoch_callback() -> _EpochLogger:
    """A callback for core.engine.run(callbacks=[...]); pass it to log_result(logged_by=...) too."""
    return _EpochLogger()


def log_history(history, skip: set[int] | frozenset = frozenset()) -> None:
    """Per-epoch metrics of epochs not logged live (a reused or resumed checkpoint's earlier epochs)."""
    for stats in history:
        if stats.epoch not in skip:
            mlflow.log_metrics(record.keyed(stats.metrics()), step=stats.epoch + 1)


def log_result(result, logged_by: _EpochLogger | None = None, extra_metrics: Mapping[str, float] | None = None) -> None:
    """Final metrics of a core.engine.RunResult (R1..mAP of every protocol and their *_ci_low / *_ci_high in
    percent, counts; core.protocols), the last epoch's loss terms as they enter the total (loss_ce, loss_triplet,
    loss_reg_weighted, loss_total, loss_reg), TRAIN_WALL_S, the epochs the callback did not see, the cmc.json
    artifact (the report rebuilds its figures from it; "chance": the split's CMC under a random ranking) and the per-query outcomes as the artifact PER_QUERY."""
    log_history(result.history, logged_by.logged if logged_by else set())
    metrics = {k: 100.0 * v if is_percent(k) else v for k, v in result.metrics.items()}
    metrics.update(result.losses)
    metrics[TRAIN_WALL_S] = sum(h.seconds for h in result.history)
    mlflow.log_metrics(record.keyed({**metrics, **(extra_metrics or {})}))
    chance = getattr(result, "chance_cmc", ())     # the split's chance level (core.evaluation.chance)
    mlflow.log_dict({"rank": list(range(1, len(result.cmc) + 1)), "cmc": [100.0 * float(c) for c in result.cmc],
                     **({"chance": [100.0 * float(c) for c in chance]} if len(chance) else {})}, record.CMC)
    log_table(result.per_query, PER_QUERY)


def log_table(frame: pd.DataFrame, name: str) -> None:
    """A DataFrame as a Parquet artifact `name` (e.g. 'per_query.parquet') of the active run, without its index."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), os.path.dirname(name) or None)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Flat-named metrics of the active run under their MLflow keys (core.record.key), e.g. a trial's validation
    mAP 'val_mAP' as 'val/mAP' at step = epochs done."""
    mlflow.log_metrics({record.key(k): float(v) for k, v in metrics.items()}, step=step)


def log_params(params: Mapping[str, Any]) -> None:
    """Extra params of the active run (e.g. an Optuna trial's number and suggested values)."""
    mlflow.log_params({k: _param(v) for k, v in params.items()})


def log_dict(data: Mapping[str, Any], name: str) -> None:
    mlflow.log_dict(dict(data), name)


def log_figure(fig, name: str) -> None:
    """A matplotlib figure as a PNG artifact."""
    mlflow.log_figure(fig, name)


def log_file(path: str | Path, folder: str | None = None) -> None:
    mlflow.log_artifact(str(path), folder)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def find_finished(experiment: str, config_hash: str, needs: Sequence[str] = ()) -> str | None:
    """Run id of the newest FINISHED row run of `experiment` whose tag config_hash matches and that holds every
    artifact in `needs` (e.g. PER_QUERY: a run logged before the suite kept per-query outcomes is not reused, so
    its row is evaluated again from its checkpoint), else None."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return None
    client = MlflowClient()
    runs = client.search_runs(
        [exp.experiment_id], max_results=20, order_by=["attributes.start_time DESC"],
        filter_string=f"tags.kind = '{ROW_KIND}' and tags.config_hash = '{config_hash}' "
                      f"and attributes.status = 'FINISHED'")
    for run in runs:
        if all(has_artifact(run.info.run_id, name, client) for name in needs):
            return run.info.run_id
    return None


def has_artifact(run_id: str, name: str, client: MlflowClient | None = None) -> bool:
    """Whether run `run_id` holds the artifact file `name` (a path inside its artifacts)."""
    folder = os.path.dirname(name)
    files = (client or MlflowClient()).list_artifacts(run_id, folder or None)
    return any(f.path == name and not f.is_dir for f in files)


def mark_used(run_id: str) -> None:
    """Stamp a run as the one the latest invocation used (reports take, per row and seed, the latest used)."""
    MlflowClient().set_tag(run_id, "used_at", f"{time.time():.3f}")


def runs_frame(experiment: str) -> pd.DataFrame:
    """All row runs of `experiment` as mlflow.search_runs gives them (columns metrics.*, params.*, tags.*);
    empty when the experiment does not exist."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame()
    return flat_columns(mlflow.search_runs([exp.experiment_id], filter_string=f"tags.kind = '{ROW_KIND}'",
                                           output_format="pandas"))


def flat_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A search_runs frame with its metric columns under their flat names (core.record.flat: 'metrics.interval/
    R1_ci_low' -> 'metrics.R1_ci_low'), so runs logged with flat keys (older stores, CHANGELOG.md) and with sections read alike; where
    both kinds of run are in one frame, their values share one column."""
    names = {c: "metrics." + record.flat(c[len("metrics."):]) if c.startswith("metrics.") else c
             for c in frame.columns}
    columns: dict[str, pd.Series] = {}
    for col in frame.columns:          # a flat name (older stores) and its sectioned key: one column
        name = names[col]
        columns[name] = columns[name].combine_first(frame[col]) if name in columns else frame[col]
    return pd.DataFrame(columns, index=frame.index)


def load_json(run_id: str, name: str) -> Any | None:
    """A JSON artifact of a run (e.g. 'cmc.json'), or None when it is missing."""
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{name}")
    except Exception:  # noqa: BLE001 - a missing artifact raises backend-specific errors
        return None


def load_table(run_id: str, name: str) -> pd.DataFrame | None:
    """A Parquet artifact of a run as a DataFrame (e.g. PER_QUERY = 'per_query.parquet'), or None when it is
    missing."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=tmp)
        except Exception:  # noqa: BLE001 - a missing artifact raises backend-specific errors
            return None
        return pd.read_parquet(path)


def log_report(experiment: str, report: str | Path) -> str | None:
    """The table's report (reports/tableN.md) and the figures it links (figures/...png) as artifacts REPORT/ of the
    latest table run of `experiment` (the invocation's parent run); returns its run id (None without one).
    Rebuilding a report logs it again (the files are replaced)."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return None
    client = MlflowClient()
    found = client.search_runs([exp.experiment_id], f"tags.kind = '{TABLE_KIND}'", max_results=1,
                               order_by=["attributes.start_time DESC"])
    if not found:
        return None
    run_id, report = found[0].info.run_id, Path(report)
    client.log_artifact(run_id, str(report), REPORT)
    for rel in dict.fromkeys(re.findall(r"\]\((figures/[^)\s]+\.png)\)", report.read_text(encoding="utf-8"))):
        if (report.parent / rel).is_file():
            client.log_artifact(run_id, str(report.parent / rel), f"{REPORT}/figures")
    return run_id


def suite_experiments() -> list[tuple[str, str, bool]]:
    """(id, name, whether it has the suite's shared runs view: record.VIEW_TAG) of the suite's experiments
    ('STA ...') in the store, by name."""
    exps = MlflowClient().search_experiments(filter_string="name LIKE 'STA %'", max_results=1000)
    return sorted(((e.experiment_id, e.name, record.VIEW_TAG in e.tags) for e in exps), key=lambda e: e[1])


def run_url(run_id: str) -> str:
    """The run's page in MLflow's UI: on the tracking server for an http(s) store, else where reproduce/ui.py serves
    it (http://127.0.0.1:5000), in the model-training view."""
    uri = mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://{UI_HOST}:{UI_PORT}"
    exp_id = MlflowClient().get_run(run_id).info.experiment_id
    return f"{endpoints.shown(base)}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning"


def find_runs(experiment: str, filter_string: str) -> list[record.RunRecord]:
    """Runs of `experiment` matching an MLflow filter (e.g. "tags.kind = 'test' and tags.study = 's'"), newest first,
    as typed records."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = MlflowClient().search_runs([exp.experiment_id], filter_string, max_results=1000,
                                      order_by=["attributes.start_time DESC"])
    return [record.RunRecord.of(r.info.run_id, r.info.run_name, r.info.status, r.data.params, r.data.tags,
                                r.data.metrics) for r in runs]


def name_run(run_id: str, name: str, tags: Mapping[str, Any] | None = None) -> None:
    """Rename a run (e.g. a trial once its value is known) and set tags on it."""
    client = MlflowClient()
    client.set_tag(run_id, "mlflow.runName", name)
    for k, v in (tags or {}).items():
        client.set_tag(run_id, k, str(v))


def log_claims(experiment: str, records: list[dict]) -> list[str]:
    """The report's claim verdicts (core.reporting.report.claim_records) on the table's parent run: per (profile, dataset), the
    latest run of `experiment` with tags kind=table, profile and dataset gets the artifact CLAIMS (its records),
    the metrics ``<key>_<metric>_delta``, ``_ci_low``, ``_ci_high`` and ``_paper_delta`` (percentage points; key
    claim<k>, as in the records), the tags ``<key>`` (the claim, e.g. 'N=4 > N=2') and ``<key>_<metric>_verdict``,
    and the tag ``claims`` counting the verdicts. Rebuilding a report logs them again (the latest values win).
    Returns the run ids written."""
    from mlflow.entities import Metric, RunTag
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None or not records:
        return []
    client, now, written = MlflowClient(), int(time.time() * 1000), []
    groups: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["profile"], rec["dataset"]), []).append(rec)
    for (profile, dataset), recs in groups.items():
        found = client.search_runs([exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                                   filter_string=f"tags.kind = '{TABLE_KIND}' and tags.profile = '{profile}' "
                                                 f"and tags.dataset = '{dataset}'")
        if not found:
            continue
        run_id = found[0].info.run_id
        client.log_dict(run_id, {"claims": recs}, CLAIMS)
        metrics = [Metric(record.key(f"{r['key']}_{r['metric']}_{name}"), float(r[field]), now, 0) for r in recs
                   for name, field in (("delta", "delta"), ("ci_low", "low"), ("ci_high", "high"),
                                       ("paper_delta", "paper_delta")) if r[field] is not None]
        counts: dict[str, int] = {}
        for r in recs:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        tags = {**{r["key"]: r["claim"] for r in recs}, **{f"{r['key']}_{r['metric']}_verdict": r["verdict"]
                                                            for r in recs},
                "claims": ", ".join(f"{n} {v}" for v, n in counts.items())}
        tags = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, max(len(metrics), len(tags)), 100):       # MLflow takes at most 100 tags per batch
            client.log_batch(run_id, metrics=metrics[i:i + 100], tags=tags[i:i + 100])
        written.append(run_id)
    return written


# ---- the pretraining stage (core.engine.pretrain) ------------------------------------------------------------



def find_stage_run(stage_hash: str) -> str | None:
    """Run id of the newest FINISHED pretraining-stage run with tag stage_hash, else None."""
    exp = mlflow.get_experiment_by_name(PRETRAIN_EXPERIMENT)
    if exp is None:
        return None
    runs = MlflowClient().search_runs(
        [exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
        filter_string=f"tags.kind = '{PRETRAIN_KIND}' and tags.stage_hash = '{stage_hash}' "
                      f"and attributes.status = 'FINISHED'")
    return runs[0].info.run_id if runs else None


@contextlib.contextmanager
def stage_run(stage_hash: str, tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """A top-level run of the pretraining stage `stage_hash` in PRETRAIN_EXPERIMENT (start it before a table's
    parent run); yields its run id."""
    use_experiment(PRETRAIN_EXPERIMENT, "The one-time pretraining stage of model.init=synthetic (core.engine."
                                        "pretrain): Avg + TL on synthetic identities disjoint from every split, "
                                        "the cpu profile's stand-in for ImageNet weights.")
    name = f"pretrain {stage_hash}"
    with _run(run_name=name, tags={"kind": PRETRAIN_KIND, "stage_hash": stage_hash, "worker": leftovers.worker(),
                                   **provenance_tags(), **(tags or {})}) as run_id:
        yield run_id
