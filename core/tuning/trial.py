"""One trial of the study: train on the validation split's training identities with the trial's (lambda, margin),
report the validation mAP every ``report_every`` epochs (a MedianPruner stops trials below the median of completed
trials at the same epoch) and return the last one, the objective (percent).

The objective is measured on a split of the TRAINING identities (core.data.validation; spec key validation.queries:
every held-out tracklet a query, or one per identity), never the test split. Pruned and failed trials keep their
reason in the trial's user attrs ("reason"). The last validation's per-query outcomes are the trial run's MLflow
artifact record.VAL_PER_QUERY. A trial whose model diverges (NaN/inf loss, weights or features) fails with that
reason in its user attrs; it is never scored.
"""
from __future__ import annotations

import math
import shutil
import statistics
import uuid

import optuna
from optuna.trial import TrialState

from core import engine, leftovers, record, tracking
from core.config import RunConfig
from core.tuning.spec import Plan, with_values
from core.tuning.study import StopAtBudget, suggest


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
        # the headline protocol only: a gallery made of the queries (validation.queries: all) has no "without the
        # queries" variant (the gao protocol), and the objective reads the headline mAP
        ev = engine.evaluate_model(model, self.split.dataset.query, self.split.dataset.gallery, self.cfg,
                                   progress=False, named_protocols=False)
        value = 100.0 * ev.metrics["mAP"]
        if not math.isfinite(value):     # never a score: the trial fails with this reason (Objective.__call__)
            raise FloatingPointError(f"validation mAP after epoch {done} is {value}; the trial is failed, not scored")
        self.trial.report(value, done)
        # step = epochs done, as trial.report above, the console and the report (core.tracking's epoch steps too)
        tracking.log_metrics({"val_mAP": value, "val_R1": 100.0 * ev.metrics["R1"]}, step=done)
        if done == self.cfg.train.epochs:       # the objective's evaluation: the report's paired comparison
            tracking.log_table(ev.per_query, record.VAL_PER_QUERY)
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
        run_dir = engine.train_dir(cfg, self.plan.work_dir / "optuna" / self.plan.study_name / "trials")
        tags = {"kind": record.TRIAL_KIND, "study": self.plan.study_name, "trial": str(trial.number),
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
                model, _ = engine.train(cfg, self.split.dataset, run_dir, progress=self.progress,
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
