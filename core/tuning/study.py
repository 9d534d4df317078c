"""The Optuna study of lambda (loss.reg_weight, Eq. 7 [A8]) and the triplet margin (loss.margin, Eq. 9): storage,
sampler, budget, creating or resuming a study, recovering killed trials, and its trials read back. With
core.tuning.trial (one trial) and core.tuning.figures (Optuna's plots), the only code that imports optuna; the
pipeline around it (core.tuning.run) hands plain records to the comparison and the report.

Search space (spec ``experiments/tune_lambda_margin.yaml``, checked by core.tuning.spec.read_tune_spec):
  ``reg``         categorical {on, off}; off is lambda = 0 (Reg switched off), a legitimate point of the space
  ``reg_weight``  lambda on a log scale in [low, high], suggested only when reg = on (a conditional parameter)
  ``margin``      alpha in [low, high]
A new study gets two trials queued first: the baseline (margin and lambda of the Table 1 "+ Reg" row, read from
experiments/table1.yaml) and the lambda = 0 reference; a resumed study queues nothing.

Storage: a journal file ``<work-dir>/optuna/<study>.journal`` by default (several local processes can share it),
or ``sqlite:///...``, ``postgresql[+driver]://...``, ``mysql[+driver]://...`` for several machines. Each worker
stops once the study holds n_trials trials finished or running (StopAtBudget: unlike Optuna's MaxTrialsCallback
it counts the running trials of other workers too; a surplus trial asked at the same moment is failed unrun). A trial
killed with its worker is marked failed by the next invocation on that host, or on a database by any worker once it
has sent no heartbeat for GRACE_S, and its parameters are queued again; on that host its training resumes from its
checkpoint; its MLflow run is marked KILLED (core.tracking.end_orphaned_runs).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from core import endpoints, leftovers
from core.config import ConfigError, RunConfig, study_neutral_keys, to_flat_dict
from core.tuning import compare
from core.tuning.spec import Plan, TuneSpec, lambda_margin

ENDED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
HEARTBEAT_S, GRACE_S = 60, 600          # RDB storages: heartbeat interval, silence after which a trial is failed
OBJECTIVE = "val mAP (%)"    # the objective's name in the study (Study.set_metric_names) and in optuna-dashboard


# ---- storage, sampler, budget ------------------------------------------------------------------------------------

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


# ---- opening a study ---------------------------------------------------------------------------------------------

def _comparable_config(cfg: RunConfig) -> dict[str, Any]:
    left_out = {*study_neutral_keys(), "loss.reg_weight", "loss.margin"}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in to_flat_dict(cfg).items() if k not in left_out}


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
    stored = {"queries": "one", **study.user_attrs.get("validation", {})}    # older studies: one (CHANGELOG.md)
    if stored != _validation_key(plan.spec):
        raise ConfigError(f"{where} exists with another validation split {stored}; {plan.spec.path} gives "
                          f"{_validation_key(plan.spec)}; use another --study-name or the spec's validation keys "
                          f"the study was created with")
    if "base_config" in study.user_attrs:      # an older study: the whole config (CHANGELOG.md)
        machine = set(study_neutral_keys(report=False))      # may differ between workers
        old = {k: v for k, v in study.user_attrs["base_config"].items() if k not in machine}
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


# ---- running it, reading it back ---------------------------------------------------------------------------------

def quiet(progress: bool) -> None:
    """Optuna's own log lines only with progress; its ExperimentalWarnings never (the APIs used are stable)."""
    optuna.logging.set_verbosity(optuna.logging.INFO if progress else optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def optimize(study: optuna.Study, objective: Callable, n_trials: int, timeout: float | None,
             budget: StopAtBudget) -> None:
    """Run up to `n_trials` trials of `objective` in this worker; a failing trial fails alone (catch=Exception)."""
    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,), callbacks=[budget],
                   gc_after_trial=True)


def summary_tags(study: optuna.Study) -> dict[str, str]:
    records = trial_records(study)
    counts = {s.name.lower(): 0 for s in (*ENDED_STATES, TrialState.RUNNING)}
    for t in records:
        if t["state"] in counts:
            counts[t["state"]] += 1
    tags = {f"trials_{k}": str(v) for k, v in counts.items()}
    best = compare.best_record(records)
    if best is not None:
        lam, margin = lambda_margin(best["params"])
        tags.update(best_trial=str(best["number"]), best_lambda=f"{lam:g}", best_margin=f"{margin:g}",
                    best_val_mAP=f"{best['value']:.2f}")
    return tags


def best_trial(study: optuna.Study) -> dict[str, Any] | None:
    """The best completed trial as a plain record (core.tuning.compare.best_record's rule), None before any."""
    return compare.best_record(trial_records(study))


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's trials as plain records for core.tuning.report (state: Optuna's state name, lower-case)."""
    return [{"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
             "intermediate": dict(t.intermediate_values), "value": t.value,
             "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
             if t.datetime_complete and t.datetime_start else None, "user_attrs": dict(t.user_attrs)}
            for t in study.trials]
