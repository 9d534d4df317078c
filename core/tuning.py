"""Optuna study of lambda (loss.reg_weight, Eq. 7 [A8]) and the triplet margin (loss.margin, Eq. 9): the only
module that imports optuna. Run it with ``python reproduce/tune.py`` (``-h`` for the flags: core.cli.tune_parser).
The study a spec and the flags resolve to (``Plan``, storage location, default study name) is core.tune_spec's; the
report's words are core.tune_report's (fed plain trial records, ``trial_records``); this module keeps the Optuna code.

Search space (spec ``experiments/tune_lambda_margin.yaml``, checked by core.tune_spec.read_tune_spec):
  ``reg``         categorical {on, off}; off is lambda = 0 (Reg switched off), a legitimate point of the space
  ``reg_weight``  lambda on a log scale in [low, high], suggested only when reg = on (a conditional parameter)
  ``margin``      alpha in [low, high]
A new study gets two trials queued first: the baseline (margin and lambda of the Table 1 "+ Reg" row, read from
experiments/table1.yaml) and the lambda = 0 reference; a resumed study queues nothing.

Objective: validation mAP (percent) after the last epoch, on a split of the TRAINING identities
(core.data.validation; spec key validation.queries: every held-out tracklet a query, or one per identity), never the
test split. Every ``report_every`` epochs a trial reports its validation mAP; a MedianPruner stops trials below the
median of completed trials at the same epoch. Pruned and failed trials keep their reason in the trial's user attrs
("reason"). The last validation's per-query outcomes are the trial run's MLflow artifact VAL_PER_QUERY. Once the
search stops, the best values and the defaults are each trained on the full training set and evaluated once on the
test split (cached by config hash in the study's user attrs, so a resumed study re-evaluates only a new best).

Chosen vs defaults (``compare_chosen``, core.tune_compare): paired cluster-bootstrap intervals of best trial −
baseline trial on validation and of chosen − defaults on test; the test interval of mAP gives the conclusion
(better / not distinguishable / worse) and the values the report recommends (the chosen ones only when better).

Storage: a journal file ``<work-dir>/optuna/<study>.journal`` by default (several local processes can share it),
or ``sqlite:///...``, ``postgresql[+driver]://...``, ``mysql[+driver]://...`` for several machines. Each worker
stops once the study holds n_trials trials finished or running (StopAtBudget: unlike Optuna's MaxTrialsCallback
it counts the running trials of other workers too; a surplus trial asked at the same moment is failed unrun). A trial
killed with its worker is marked failed by the next invocation on that host, or on a database by any worker once it
has sent no heartbeat for GRACE_S, and its parameters are queued again; on that host its training resumes from its
checkpoint; its MLflow run is marked KILLED (core.tracking.end_orphaned_runs). A trial whose model diverges (NaN/inf
loss, weights or features) fails with that reason in its user attrs; it is never scored.

MLflow (core.tracking): one parent run per study (experiment "STA <spec study>", found by the tag study=<name>;
the comparisons as metrics val_delta_mAP[_ci_low|_ci_high], test_delta_..., tags conclusion, recommended_lambda,
recommended_margin), one nested run per trial (resolved config, trial number, lambda, margin, val mAP per report
step, final value, VAL_PER_QUERY) and per test run (per_query.parquet).
"""
from __future__ import annotations

import inspect
import json
import math
import shutil
import statistics
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from core import endpoints, leftovers, record
from core.config import RESULT_NEUTRAL_KEYS, ConfigError, RunConfig, config_hash, to_flat_dict
from core.protocols import chance_name
from core.specs import METRICS
from core.tune_compare import Compared
from core.tune_spec import Plan, TuneSpec, lambda_margin, with_values
# keys that may differ between the workers of one study: those that cannot change a result (config.RESULT_NEUTRAL_KEYS)
# and, though in the config hash, the dataset's path and the extraction batch size
MACHINE_KEYS = (*RESULT_NEUTRAL_KEYS, "data.root", "eval.batch_size")
# keys that only change how the report states its intervals, never a trial: a study may be resumed with others
REPORT_KEYS = ("eval.bootstrap_resamples", "eval.bootstrap_seed", "eval.audit_occluded")
ENDED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
HEARTBEAT_S, GRACE_S = 60, 600          # RDB storages: heartbeat interval, silence after which a trial is failed
VAL_PER_QUERY = "val_per_query.parquet"  # artifact of a trial run: its last validation's per-query outcomes


# ---- storage -------------------------------------------------------------------------------------------------

def open_storage(location: str) -> optuna.storages.BaseStorage:
    """JournalStorage on a file (several local processes), else RDBStorage with a heartbeat: a trial whose worker
    (on any machine) sent none for GRACE_S is failed with a reason and its parameters are queued again. A database
    that does not answer within seconds, or a missing driver, is one ConfigError line (core.endpoints)."""
    if "://" not in location:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(location))
    endpoints.check(location, "--storage")
    callback = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
                inspect.signature(optuna.storages.RDBStorage).parameters else "failed_trial_callback")  # < 4.9
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(location, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                              **{callback: _requeue_stale})
        except Exception as e:  # noqa: BLE001 - drivers raise their own types (IntegrityError, ProgrammingError)
            if attempt == 2:
                raise ConfigError(f"--storage {endpoints.shown(location)}: cannot open ({endpoints.one_line(e)})") \
                    from e
            time.sleep(1 + attempt)     # workers started at once on an empty database race to create its tables


def _requeue_stale(study: optuna.Study, trial) -> None:
    """RDBStorage heartbeat callback (any machine): Optuna has just failed the stale trial, which then takes no
    user attr, so its reason rides on the retry ("retry_reason"; the report shows it on the failed trial)."""
    reason = (f"worker {trial.user_attrs.get('worker', '?')} sent no heartbeat for {GRACE_S} s (killed or cut "
              f"off); its parameters were queued again")
    study.enqueue_trial(_params(trial), user_attrs={"role": trial.user_attrs.get("role", "search"),
                                                  "retry_of": trial.number, "retry_reason": reason})


def suggest(trial: optuna.Trial, spec: TuneSpec) -> tuple[float, float]:
    """(lambda, margin) for a trial: the conditional space of the module doc."""
    on = trial.suggest_categorical("reg", ["on", "off"]) == "on" if spec.reg_off else True
    lam = trial.suggest_float("reg_weight", spec.reg_weight.low, spec.reg_weight.high, log=True) if on else 0.0
    margin = trial.suggest_float("margin", spec.margin.low, spec.margin.high, log=spec.margin.log)
    return lam, margin


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE with seed = base seed + trial number, re-created for every trial.

    Suggestions are then a function of the study's history and the trial number only, so a resumed invocation or a
    second worker never replays the random start-up draws of another (one fixed-seed TPE per process would).
    """

    def __init__(self, seed: int, n_startup_trials: int):
        self.seed, self.n_startup_trials = seed, n_startup_trials
        self._tpe: dict[int, optuna.samplers.TPESampler] = {}

    def _for(self, trial) -> optuna.samplers.TPESampler:
        if trial.number not in self._tpe:
            self._tpe[trial.number] = optuna.samplers.TPESampler(seed=self.seed + trial.number,
                                                                 n_startup_trials=self.n_startup_trials)
        return self._tpe[trial.number]

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._tpe.pop(trial.number, None)


class StopAtBudget:
    """Stops this worker once the study holds `n_trials` trials finished or running in any worker (like
    optuna.study.MaxTrialsCallback, but counting other workers' running trials so N workers do not overshoot,
    and not counting a killed trial whose parameters were queued again). Two workers checking at the same moment
    can both ask for one more trial: the objective then fails the higher-numbered one as surplus, unrun."""

    def __init__(self, n_trials: int):
        self.n_trials = n_trials

    def count(self, study: optuna.Study, before: int | None = None) -> int:
        """Trials finished or running, less retried and surplus ones; with `before`, those numbered below it,
        queued ones included (a worker is about to run them)."""
        trials = study.get_trials(deepcopy=False)
        retried = _retried(trials)
        states = (*ENDED_STATES, TrialState.RUNNING) + ((TrialState.WAITING,) if before is not None else ())
        return sum(t.state in states and t.number not in retried and not t.user_attrs.get("surplus")
                   and (before is None or t.number < before) for t in trials)

    def __call__(self, study: optuna.Study, trial) -> None:
        if self.count(study) >= self.n_trials:
            study.stop()


# ---- opening a study -----------------------------------------------------------------------------------------

def _comparable_config(cfg: RunConfig) -> dict[str, Any]:
    flat = to_flat_dict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()
            if k not in MACHINE_KEYS + REPORT_KEYS and k not in ("loss.reg_weight", "loss.margin")}


OBJECTIVE = "val mAP (%)"    # the objective's name in the study (Study.set_metric_names) and in optuna-dashboard


def open_study(plan: Plan, pruner: optuna.pruners.BasePruner | None = None,
               wait_s: float = 60.0) -> tuple[optuna.Study, bool]:
    """Create the study (queueing the baseline and the lambda = 0 reference) or load it and check that it has the
    same search space and base config; returns (study, created). Raises ConfigError before any trial runs."""
    storage = open_storage(plan.storage)
    spec = plan.spec
    sampler = TrialSeededTPE(spec.sampler_seed, spec.n_startup_trials)
    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup,
                                                   n_warmup_steps=spec.pruner_warmup)
    space, base = spec.search_space(), _comparable_config(plan.config)
    try:
        study = optuna.create_study(storage=storage, study_name=plan.study_name, direction="maximize",
                                    sampler=sampler, pruner=pruner)
        with warnings.catch_warnings():      # experimental since Optuna 3.2, unchanged since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE])  # optuna-dashboard's name of the objective (else "Objective 0")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=plan.study_name, storage=storage, sampler=sampler, pruner=pruner)
        _check_existing(study, plan, space, base, wait_s)
        _recover_killed(study)
        return study, False
    study.enqueue_trial(plan.baseline, user_attrs={"role": "baseline"})
    if spec.reg_off and plan.baseline.get("reg") != "off":
        study.enqueue_trial({"reg": "off", "margin": plan.baseline["margin"]},
                            user_attrs={"role": "reference (lambda = 0)"})
    # the base config as its hash and its keys off the defaults: optuna-dashboard shows a user attr on one line, cut
    # (the whole config, 1,400+ characters, read as nothing there); config.json of every trial's MLflow run has it all
    study.set_user_attr("base_config_hash", _hash(base))
    study.set_user_attr("base_config_changed", _changed(base))
    study.set_user_attr("spec", str(spec.path))
    study.set_user_attr("validation", _validation_key(spec))
    study.set_user_attr("search_space", space)   # last: other workers wait for it, so the queue is complete
    return study, True


def _check_existing(study: optuna.Study, plan: Plan, space: dict, base: dict, wait_s: float) -> None:
    where = f"study '{plan.study_name}' in {plan.storage_shown}"
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"{where} minimises; this objective (validation mAP) is maximised: use another "
                          f"--study-name")
    deadline = time.monotonic() + wait_s
    while "search_space" not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)                        # its creator is still queueing the first trials
    stored = study.user_attrs.get("search_space")
    if stored is None:
        raise ConfigError(f"{where} was not created by this tool (no user attr 'search_space'): use another "
                          f"--study-name")
    if stored != json.loads(json.dumps(space)):
        raise ConfigError(f"{where} exists with another search space: stored {stored}, {plan.spec.path} gives "
                          f"{space}; use another --study-name or the spec the study was created with")
    stored = {"queries": "one", **study.user_attrs.get("validation", {})}    # studies before issue 11: one
    if stored != _validation_key(plan.spec):
        raise ConfigError(f"{where} exists with another validation split {stored}; {plan.spec.path} gives "
                          f"{_validation_key(plan.spec)}; use another --study-name or the spec's validation keys "
                          f"the study was created with")
    if "base_config" in study.user_attrs:      # a study created before issue 23: the whole config
        old = {k: v for k, v in study.user_attrs["base_config"].items() if k not in MACHINE_KEYS}  # older: more
        new = base
    elif study.user_attrs.get("base_config_hash") == _hash(base):
        return
    else:
        old, new = {**_comparable_config(RunConfig()), **study.user_attrs.get("base_config_changed", {})}, base
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff or "base_config" not in study.user_attrs:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:8]) or \
            "the same keys off the defaults, other defaults: the code's defaults changed"
        raise ConfigError(f"{where} exists with another base config ({shown}); use another --study-name or the "
                          f"dataset/profile/--set it was created with")


def _hash(base: dict[str, Any]) -> str:
    import hashlib
    return hashlib.sha256(json.dumps(base, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _changed(base: dict[str, Any]) -> dict[str, Any]:
    """The keys of a comparable base config that differ from RunConfig()'s (a short user attr)."""
    default = _comparable_config(RunConfig())
    return {k: v for k, v in base.items() if default.get(k) != v}


def _validation_key(spec: TuneSpec) -> dict[str, Any]:
    """What defines a study's validation split (user attr "validation", compared when it is resumed)."""
    return {"fraction": spec.val_fraction, "seed": spec.val_seed, "queries": spec.val_queries}


def _recover_killed(study: optuna.Study) -> None:
    """Queue again the params of trials interrupted by Ctrl-C, and of trials left RUNNING by a dead worker of this
    host (marked failed first); the retry (user attr retry_of) resumes from the trial's checkpoint."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    for t in trials:
        if t.number in retried or t.state not in (TrialState.RUNNING, TrialState.FAIL):
            continue
        if t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"):
            continue
        if t.state == TrialState.RUNNING:
            worker = t.user_attrs.get("worker", "")
            if not leftovers.worker_gone(worker):
                continue
            # no public setter for the user attrs of another process's trial: the call Trial.set_user_attr makes
            study._storage.set_trial_user_attr(t._trial_id, "reason", f"worker {worker} stopped during the trial "
                                                                      f"(killed); its parameters were queued again")
            study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(_params(t), user_attrs={"role": t.user_attrs.get("role", "search"), "retry_of": t.number})


def _params(trial) -> dict[str, Any]:
    """What a killed trial had to run: its params, or, killed before suggesting them, its queued ones (Optuna keeps
    an enqueued trial's values in the system attr 'fixed_params'; empty for a plain search trial)."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))


def _retried(trials) -> set[int]:
    return {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}


# ---- one trial -----------------------------------------------------------------------------------------------

class ValidationReporter:
    """Engine EpochCallback: every `every` epochs (and after the last) evaluate on the validation split, log it,
    trial.report(mAP %, epochs done) and raise optuna.TrialPruned (with its reason) when the pruner says so."""

    def __init__(self, trial: optuna.Trial, cfg: RunConfig, split, every: int):
        self.trial, self.cfg, self.split, self.every = trial, cfg, split, every
        self.last: tuple[int, float] | None = None      # (epochs done, val mAP %)

    def __call__(self, stats, model) -> None:
        done = stats.epoch + 1
        if done % self.every and done != self.cfg.train.epochs:
            return
        value = self.evaluate(model, done)
        if done < self.cfg.train.epochs and self.trial.should_prune():
            reason = self._reason(done, value)
            self.trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)

    def evaluate(self, model, done: int) -> float:
        from core import tracking
        from core.engine import evaluate_model
        # the headline protocol only: a gallery made of the queries (validation.queries: all) has no "without the
        # queries" variant (the gao protocol), and the objective reads the headline mAP
        ev = evaluate_model(model, self.split.dataset.query, self.split.dataset.gallery, self.cfg, progress=False,
                            named_protocols=False)
        value = 100.0 * ev.metrics["mAP"]
        if not math.isfinite(value):     # never a score: the trial fails with this reason (Objective.__call__)
            raise FloatingPointError(f"validation mAP after epoch {done} is {value}; the trial is failed, not scored")
        self.trial.report(value, done)
        # step = epochs done, as trial.report above, the console and the report (core.tracking's epoch steps too)
        tracking.log_metrics({"val_mAP": value, "val_R1": 100.0 * ev.metrics["R1"]}, step=done)
        if done == self.cfg.train.epochs:       # the objective's evaluation: the report's paired comparison
            tracking.log_table(ev.per_query, VAL_PER_QUERY)
        self.last = (done, value)
        return value

    def _reason(self, done: int, value: float) -> str:
        others = [t.intermediate_values[done] for t in self.trial.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if done in t.intermediate_values]
        pruner = type(self.trial.study.pruner).__name__
        if not others:
            return f"pruned after epoch {done} by {pruner}: val mAP {value:.2f}% (no completed trial reached it)"
        median = statistics.median(others)
        rel = "below" if value < median else "not above"
        return (f"pruned after epoch {done} by {pruner}: val mAP {value:.2f}% {rel} the median {median:.2f}% of "
                f"{len(others)} completed trial(s) at that epoch")


class SurplusTrial(Exception):
    """A trial asked for after the study's budget was reached by other workers; failed unrun, never counted."""


class Objective:
    """Train on the validation split's training identities with a trial's (lambda, margin); return val mAP (%)."""

    def __init__(self, plan: Plan, split, progress: bool):
        self.plan, self.split, self.progress = plan, split, progress
        self.invocation = uuid.uuid4().hex          # tells this invocation's trials from earlier ones

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", leftovers.worker())
        ahead = StopAtBudget(self.plan.n_trials).count(trial.study, before=trial.number)
        if ahead >= self.plan.n_trials:              # the budget was reached while this worker asked (StopAtBudget)
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("reason", f"not run: surplus ({ahead} trials ahead of it, budget {self.plan.n_trials})")
            raise SurplusTrial(trial.user_attrs["reason"])
        trial.set_user_attr("invocation", self.invocation)
        try:
            lam, margin = suggest(trial, self.plan.spec)
            cfg = with_values(self.plan.config, lam, margin)
            trial.set_user_attr("lambda", lam)
            return self._run(trial, cfg, lam, margin)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            trial.set_user_attr("reason", f"{type(e).__name__}: {e}"[:2000])
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("reason", "interrupted (Ctrl-C); rerun the command to retry it from its checkpoint")
            trial.set_user_attr("interrupted", True)
            raise

    def _run(self, trial: optuna.Trial, cfg: RunConfig, lam: float, margin: float) -> float:
        from core import tracking
        from core.engine import train, train_dir
        run_dir = train_dir(cfg, self.plan.work_dir / "optuna" / self.plan.study_name / "trials")
        tags = {"kind": "trial", "study": self.plan.study_name, "trial": str(trial.number),
                "role": trial.user_attrs.get("role", "search"), "dataset": self.plan.dataset,
                "profile": self.plan.profile, **tracking.provenance_tags()}
        pruned: optuna.TrialPruned | None = None
        with tracking.child_run(record.trial_run_name(trial.number, lam, margin), tags) as run_id:
            trial.set_user_attr("mlflow_run_id", run_id)     # the report reads VAL_PER_QUERY from it
            _link_run(trial, tracking.run_url(run_id))
            tracking.log_config(cfg, extra={"study": self.plan.study_name, "trial": trial.number,
                                            "params": trial.params})
            tracking.log_params({"trial.number": trial.number, "trial.reg": "off" if lam == 0 else "on",
                                 "trial.lambda": lam, "trial.margin": margin})
            reporter = ValidationReporter(trial, cfg, self.split, self.plan.spec.report_every)
            try:
                model, _ = train(cfg, self.split.dataset, run_dir, progress=self.progress,
                                 callbacks=[tracking.epoch_callback(), reporter])
                if reporter.last is None or reporter.last[0] != cfg.train.epochs:   # resumed from a finished checkpoint
                    reporter.evaluate(model, cfg.train.epochs)
                value = reporter.last[1]
                tracking.log_metrics({"val_mAP_final": value})
                tracking.set_tags({"optuna_state": "COMPLETE"})
                tracking.name_run(run_id, record.trial_run_name(trial.number, lam, margin, value))
            except optuna.TrialPruned as e:
                pruned = e
                tracking.set_tags({"optuna_state": "PRUNED", "reason": trial.user_attrs.get("reason", str(e))})
                tracking.name_run(run_id, record.trial_run_name(trial.number, lam, margin, state="pruned"))
        shutil.rmtree(run_dir, ignore_errors=True)     # a finished trial's checkpoint is not needed again
        if pruned is not None:
            raise pruned
        return value


def _link_run(trial: optuna.Trial, url: str) -> None:
    """The trial's MLflow run as a user attr (mlflow_run_url) and, where optuna-dashboard is installed (extra
    'dashboard'), as a clickable link in the trial's note there (user attrs are plain text in the dashboard)."""
    trial.set_user_attr("mlflow_run_url", url)
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    save_note(trial, f"MLflow run of this trial: [{url.rsplit('/runs/', 1)[-1].split('?')[0]}]({url}) "
                     f"(open the MLflow UI with `python reproduce/ui.py`)")


# ---- the study -----------------------------------------------------------------------------------------------

@dataclass
class TuneOutcome:
    study: optuna.Study
    report: Path | None
    test: dict[str, dict]                   # "chosen" / "defaults" -> test result (see evaluate_on_test)
    new_trials: int


def run_study(plan: Plan, tracking_uri: str | None = None, reports_dir: str | Path = "reports",
              evaluate_test: bool = True, progress: bool = True,
              pruner: optuna.pruners.BasePruner | None = None) -> TuneOutcome:
    """Run (or continue, or join) the study of `plan`, evaluate the best values on the test split, write the report.

    ``evaluate_test=False`` (extra workers) skips the test runs and the report. ``pruner`` replaces the spec's
    MedianPruner (tests).
    """
    from core import pretraining, reporting, tracking
    from core.data import load_dataset
    from core.data.validation import split_validation
    from core.engine.device import check_device
    optuna.logging.set_verbosity(optuna.logging.INFO if progress else optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # everything that can refuse the input comes before open_study saves the study to its storage
    check_device(plan.config.train.device)
    # an unreachable study database or tracking server fails here, before the study opens and before a new tracking
    # store is created; --n-trials 0 only reads: it never creates a store
    if "://" in plan.storage:
        endpoints.check(plan.storage, "--storage")
    tracking_uri = tracking.configure(tracking_uri, create=plan.n_trials != 0)
    dataset = load_dataset(plan.config.data, progress)
    split = split_validation(dataset, plan.spec.val_fraction, plan.spec.val_seed, plan.spec.val_queries)
    if split.dataset.num_train_pids < plan.config.data.ids_per_batch:
        raise ConfigError(f"{plan.spec.path}, validation.fraction {plan.spec.val_fraction:g} leaves "
                          f"{split.dataset.num_train_pids} training identities, fewer than data.ids_per_batch "
                          f"P={plan.config.data.ids_per_batch}; lower the fraction or P")
    study, created = open_study(plan, pruner)
    study.set_user_attr("validation_split", split.summary())
    tracking.end_orphaned_runs(plan.experiment)     # trial runs of a killed worker: RUNNING -> KILLED
    budget = StopAtBudget(plan.n_trials)
    test: dict[str, dict] = {}
    report = None
    described = tracking.describe(f"Optuna tuning of {plan.spec.table} row '{plan.spec.row}'", plan.spec.path)
    view = record.runs_view("tags.kind = 'trial'", ["val_mAP_final", "val_mAP"], ["trial.lambda", "trial.margin"])
    # the trials and test runs start from the pretraining stage (model.init=synthetic): cached or trained now, as
    # its own run, before the study's run is active; the study's run names it
    stages = pretraining.ensure_all([plan.config], progress)
    stage_tags = next(iter(stages.values())).tags() if stages else {}
    with tracking.study_run(plan.experiment, plan.study_name, plan.study_name,
                            {**_study_tags(plan, split), **stage_tags}, described, view):
        remaining = plan.n_trials - budget.count(study)
        objective = Objective(plan, split, progress)
        if remaining > 0:
            study.optimize(objective, n_trials=remaining, timeout=plan.timeout, catch=(Exception,),
                           callbacks=[budget], gc_after_trial=True)
        new = sum(t.user_attrs.get("invocation") == objective.invocation for t in study.get_trials(deepcopy=False))
        if evaluate_test:
            test = evaluate_on_test(study, plan, dataset, progress)
            compared = compare_chosen(study, plan)
            report = report_study(study, plan, reports_dir, tracking_uri, compared)
            if compared is not None:
                metrics, tags = _compared_mlflow(compared)
                tracking.log_metrics(metrics)
                tracking.set_tags(tags)
            reporting.write_index(reports_dir)      # reports/README.md lists tuning reports too
            tracking.log_file(report, "report")
            for png in sorted(Path(reports_dir, "figures").glob(f"{plan.study_name}_*.png")):
                tracking.log_file(png, "report/figures")
        tags = _summary_tags(study)
        tracking.set_tags(tags)          # and as metrics, to chart and sort: best_val_mAP, best_lambda, trials_*
        tracking.log_metrics({k: float(v) for k, v in tags.items()})
    return TuneOutcome(study=study, report=report, test=test, new_trials=new)


def _study_tags(plan: Plan, split) -> dict[str, str]:
    return {"dataset": plan.dataset, "profile": plan.profile, "storage": plan.storage_shown,
            "spec": str(plan.spec.path), "n_trials": str(plan.n_trials),
            "search_space": json.dumps(plan.spec.search_space()), "validation": split.describe()}


def _summary_tags(study: optuna.Study) -> dict[str, str]:
    counts = {s.name.lower(): 0 for s in (*ENDED_STATES, TrialState.RUNNING)}
    for t in study.trials:
        if t.state.name.lower() in counts:
            counts[t.state.name.lower()] += 1
    tags = {f"trials_{k}": str(v) for k, v in counts.items()}
    best = _best(study)
    if best is not None:
        lam, margin = lambda_margin(best.params)
        tags.update(best_trial=str(best.number), best_lambda=f"{lam:g}", best_margin=f"{margin:g}",
                    best_val_mAP=f"{best.value:.2f}")
    return tags


def _best(study: optuna.Study):
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def _has_table(run_id: str | None, name: str) -> bool:
    from core import tracking
    try:
        return run_id is not None and tracking.has_artifact(run_id, name)
    except Exception:  # noqa: BLE001 - a run of another store: the backend raises its own error types
        return False


def evaluate_on_test(study: optuna.Study, plan: Plan, dataset, progress: bool = True) -> dict[str, dict]:
    """Train the best trial's values and the defaults on the full training set, evaluate each once on the test
    split; results are kept in the study's user attrs ("test:<config hash>") and in <study>.test.json beside a
    journal file, and reused when the best is unchanged."""
    from core import tracking
    from core.engine import run
    best = _best(study)
    if best is None:
        return {}
    out = {}
    for label, (lam, margin), trial in (("chosen", lambda_margin(best.params), best.number),
                                        ("defaults", plan.baseline_values, None)):
        cfg = with_values(plan.config, lam, margin)
        key = f"test:{config_hash(cfg)}"
        found = study.user_attrs.get(key)
        if found is not None and not _has_table(found.get("mlflow_run_id"), tracking.PER_QUERY):
            found = None     # evaluated before per-query outcomes were kept, or logged to another store: again
        if found is None:
            tags = {"kind": "test", "study": plan.study_name, "label": label, "dataset": plan.dataset,
                    "profile": plan.profile, "config_hash": config_hash(cfg), **tracking.provenance_tags()}
            with tracking.child_run(record.test_run_name([label], lam, margin), tags) as run_id:
                tracking.log_config(cfg, extra={"study": plan.study_name, "label": label, "trial": trial})
                tracking.log_datasets(cfg, dataset)
                callback = tracking.epoch_callback()
                result = run(cfg, plan.work_dir, callbacks=[callback], dataset=dataset, progress=progress)
                tracking.log_result(result, logged_by=callback)
            found = {"lambda": lam, "margin": margin, "dataset": result.dataset_name, "synthetic": result.synthetic,
                     "metrics": {k: 100.0 * result.metrics[k] for k in METRICS},
                     "chance": {k: 100.0 * result.metrics[chance_name(k)] for k in METRICS
                                if chance_name(k) in result.metrics},      # the test split's random ranking
                     "num_queries": int(result.metrics["num_queries"]), "num_gallery": len(dataset.gallery),
                     "mlflow_run_id": run_id, "config_hash": config_hash(cfg)}
            study.set_user_attr(key, found)
        out[label] = {**found, "trial": trial}
    _name_test_runs(plan, out)
    if "://" not in plan.storage:
        from core.engine.checkpoint import save_json
        save_json(out, Path(plan.storage).with_suffix(".test.json"))
    return out


def _name_test_runs(plan: Plan, out: dict[str, dict]) -> None:
    """Name every test run of the study by the roles it has now ('chosen', 'defaults', both, or none: an earlier
    best), so a run evaluated as 'chosen' and later reused as the defaults' run says so (tag label too)."""
    from core import tracking
    roles: dict[str, list[str]] = {}
    for label, res in out.items():
        roles.setdefault(res.get("mlflow_run_id") or "", []).append(label)
    study_tag = plan.study_name.replace("\\", "\\\\").replace("'", "\\'")
    for run in tracking.find_runs(plan.experiment, f"tags.kind = 'test' and tags.study = '{study_tag}'"):
        labels = roles.get(run.info.run_id, [])
        params = run.data.params
        try:
            lam, margin = float(params["loss.reg_weight"]), float(params["loss.margin"])
        except (KeyError, ValueError):
            continue
        name = record.test_run_name(labels, lam, margin)
        if run.info.run_name != name:
            tracking.name_run(run.info.run_id, name, {"label": " = ".join(labels) or "earlier best"})


# ---- chosen vs defaults --------------------------------------------------------------------------------------

def _baseline_trial(study: optuna.Study, plan: Plan):
    """The completed trial of the defaults: the one queued as the baseline (open_study; a retry of it keeps its
    role), else any completed trial with the defaults' values."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((t for t in done if t.user_attrs.get("role") == "baseline"),
                next((t for t in done if lambda_margin(t.params) == plan.baseline_values), None))


def _table(run_id: str | None, name: str):
    from core import tracking
    return None if run_id is None else tracking.load_table(run_id, name)


def compare_chosen(study: optuna.Study, plan: Plan) -> Compared | None:
    """Best trial vs baseline trial on validation and chosen vs defaults on test, from the per-query frames in
    MLflow (the trials' VAL_PER_QUERY, the test runs' per_query.parquet); None before any trial completed."""
    from core import tracking
    from core import tune_compare as tc
    best = _best(study)
    if best is None:
        return None
    resamples, seed = plan.config.eval.bootstrap_resamples, plan.config.eval.bootstrap_seed
    chosen, defaults = lambda_margin(best.params), plan.baseline_values
    baseline = _baseline_trial(study, plan)
    tests = {}
    for label, (lam, margin) in (("chosen", chosen), ("defaults", defaults)):
        res = study.user_attrs.get(f"test:{config_hash(with_values(plan.config, lam, margin))}") or {}
        tests[label] = _table(res.get("mlflow_run_id"), tracking.PER_QUERY)
    if baseline is None:
        val = "the baseline trial has not completed (pruned, failed or not run yet)"
    else:
        frames = [_table(t.user_attrs.get("mlflow_run_id"), VAL_PER_QUERY) for t in (best, baseline)]
        val = _compare(*frames, resamples, seed) if all(f is not None for f in frames) else (
            "the per-query validation results of trial(s) " + ", ".join(
                str(t.number) for t, f in zip((best, baseline), frames) if f is None) +
            " are not in this MLflow store (run before they were kept, or logged to another store)")
    if any(f is None for f in tests.values()):
        test = (f"a test run's per-query results are missing (run with --no-test?); run `python reproduce/tune.py "
                f"--study-name {plan.study_name} --n-trials 0` to evaluate both")
    else:
        test = _compare(tests["chosen"], tests["defaults"], resamples, seed)
    rec = tc.recommend(test if not isinstance(test, str) else None, chosen, defaults,
                       missing=test if isinstance(test, str) else "")
    return Compared(best.number, None if baseline is None else baseline.number, chosen == defaults, val, test, rec,
                    tests)


def _compare(frame_b, frame_a, resamples: int, seed: int):
    """tune_compare.compare, or why the two frames cannot be compared (a report is written either way)."""
    from core import tune_compare as tc
    try:
        return tc.compare(frame_b, frame_a, resamples, seed)
    except ValueError as e:      # other queries (bootstrap.paired_difference), no headline rows
        return f"not comparable: {e}"


def _compared_mlflow(c: Compared) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics (percentage points) and tags of the study's parent run: val_delta_mAP, test_delta_mAP_ci_low, ...;
    conclusion, recommended_lambda, recommended_margin (delta: chosen − defaults, as core.claims)."""
    metrics = {}
    for kind, comp in (("val", c.val), ("test", c.test)):
        if isinstance(comp, str) or c.same_values:
            continue
        for m, est in comp.estimates.items():
            metrics.update({f"{kind}_delta_{m}": 100 * est.value, f"{kind}_delta_{m}_ci_low": 100 * est.low,
                            f"{kind}_delta_{m}_ci_high": 100 * est.high})
    conclusion = ("chosen = defaults" if c.same_values else
                  c.test.conclusion if not isinstance(c.test, str) else "no test comparison")
    lam, margin = c.recommendation.values
    return metrics, {"conclusion": conclusion, "recommended_lambda": f"{lam:g}", "recommended_margin": f"{margin:g}"}


# ---- report (words: core.tune_report) ------------------------------------------------------------------------

def write_figures(study: optuna.Study, stem: str, figures_dir: Path) -> dict[str, str]:
    """Optimisation history, parameter importances and the lambda-margin contour as PNGs (Agg backend);
    returns {figure: file name or 'not drawn: why'}. An old PNG of a figure not drawn now is removed by
    core.tune_report once the new markdown (which no longer links it) is in place."""
    from core import figures as figs       # sets the Agg backend
    from optuna.visualization import matplotlib as ovm
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with_lambda = [t for t in complete if "reg_weight" in t.params]
    plans = {
        "history": (lambda: ovm.plot_optimization_history(study, target_name="val mAP (%)"),
                    None if complete else "no completed trial yet"),
        "importances": (lambda: ovm.plot_param_importances(study, target_name="val mAP (%)"),
                        None if len(complete) >= 3 else f"needs >= 3 completed trials, has {len(complete)}"),
        "contour": (lambda: ovm.plot_contour(study, params=["reg_weight", "margin"], target_name="val mAP (%)"),
                    None if len(with_lambda) >= 3 else
                    f"needs >= 3 completed trials with reg = on, has {len(with_lambda)}"),
    }
    out = {}
    for name, (draw, skip) in plans.items():
        path = figures_dir / f"{stem}_{name}.png"
        if skip is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ax = draw()
                fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
                figs.save(fig, path)
                out[name] = path.name
                continue
            except Exception as e:  # noqa: BLE001 - optuna refuses degenerate studies in several ways
                skip = f"{type(e).__name__}: {e}"
        out[name] = f"not drawn: {skip}"
    return out


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's trials as plain records for core.tune_report (state: Optuna's state name, lower-case)."""
    return [{"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
             "intermediate": dict(t.intermediate_values), "value": t.value,
             "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
             if t.datetime_complete and t.datetime_start else None, "user_attrs": dict(t.user_attrs)}
            for t in study.trials]


def report_study(study: optuna.Study, plan: Plan, reports_dir: str | Path = "reports",
                 tracking_uri: str = "sqlite:///mlflow.db", compared: Compared | None = None) -> Path:
    """reports/<study>.md (core.tune_report) from the study storage (trials, user attrs), the plan and the per-query
    frames in MLflow (``compare_chosen``, computed here unless given); figures under figures/."""
    from core.tune_report import write_tuning_report
    compared = compared or compare_chosen(study, plan)
    figures = write_figures(study, plan.study_name, Path(reports_dir) / "figures")
    return write_tuning_report(plan, trial_records(study), dict(study.user_attrs), figures, compared, reports_dir,
                               tracking_uri)
