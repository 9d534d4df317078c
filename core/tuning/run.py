"""``python reproduce/tune.py``: the tuning pipeline, spec -> study -> test split -> comparison -> report.

core.tuning.spec resolves the spec and the flags to a Plan; core.tuning.study opens (or resumes, or joins) the Optuna
study and core.tuning.trial runs its trials; core.tuning.testsplit evaluates the chosen values and the defaults on
the test split; core.tuning.compare decides whether the chosen values beat the defaults (paired cluster-bootstrap
intervals: best trial − baseline trial on validation, chosen − defaults on test); core.tuning.report writes
reports/<study>.md from plain records.

MLflow (core.tracking): one parent run per study (experiment "STA <spec study>", found by the tag study=<name>;
the comparisons as metrics val_delta_mAP[_ci_low|_ci_high], test_delta_..., tags conclusion, recommended_lambda,
recommended_margin), one nested run per trial (resolved config, trial number, lambda, margin, val mAP per report
step, final value, record.VAL_PER_QUERY) and per test run (record.PER_QUERY).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core import endpoints, pretraining, record, tracking
from core.config import ConfigError
from core.data import load_dataset
from core.data.validation import split_validation
from core.engine.device import check_device
from core.reporting.report import write_index
from core.tuning import study as st
from core.tuning.compare import Compared, compare_chosen, compared_mlflow
from core.tuning.figures import write_figures
from core.tuning.report import write_tuning_report
from core.tuning.spec import Plan
from core.tuning.testsplit import evaluate_on_test
from core.tuning.trial import Objective


@dataclass
class TuneOutcome:
    study: object                          # the optuna.Study
    report: Path | None
    test: dict[str, dict]                   # "chosen" / "defaults" -> test result (see evaluate_on_test)
    new_trials: int


def run_study(plan: Plan, tracking_uri: str | None = None, reports_dir: str | Path = "reports",
              evaluate_test: bool = True, progress: bool = True,
              pruner=None) -> TuneOutcome:
    """Run (or continue, or join) the study of `plan`, evaluate the best values on the test split, write the report.

    ``evaluate_test=False`` (extra workers) skips the test runs and the report. ``pruner`` replaces the spec's
    MedianPruner (tests).
    """
    st.quiet(progress)
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
    study, created = st.open_study(plan, pruner)
    study.set_user_attr("validation_split", split.summary())
    tracking.end_orphaned_runs(plan.experiment)     # trial runs of a killed worker: RUNNING -> KILLED
    budget = st.StopAtBudget(plan.n_trials)
    test: dict[str, dict] = {}
    report = None
    described = tracking.describe(f"Optuna tuning of {plan.spec.table} row '{plan.spec.row}'", plan.spec.path)
    view = record.runs_view(f"tags.kind = '{record.TRIAL_KIND}'", ["val_mAP_final", "val_mAP"],
                            ["trial.lambda", "trial.margin"])
    # the trials and test runs start from the pretraining stage (model.init=synthetic): cached or trained now, as
    # its own run, before the study's run is active; the study's run names it
    stages = pretraining.ensure_all([plan.config], progress)
    stage_tags = next(iter(stages.values())).tags() if stages else {}
    with tracking.study_run(plan.experiment, plan.study_name, plan.study_name,
                            {**_study_tags(plan, split), **stage_tags}, described, view):
        remaining = plan.n_trials - budget.count(study)
        objective = Objective(plan, split, progress)
        if remaining > 0:
            st.optimize(study, objective, remaining, plan.timeout, budget)
        new = sum(t["user_attrs"].get("invocation") == objective.invocation for t in st.trial_records(study))
        if evaluate_test:
            test = evaluate_on_test(study, st.best_trial(study), plan, dataset, progress)
            compared = _compare(study, plan)
            report = report_study(study, plan, reports_dir, tracking_uri, compared)
            if compared is not None:
                metrics, tags = compared_mlflow(compared)
                tracking.log_metrics(metrics)
                tracking.set_tags(tags)
            write_index(reports_dir)      # reports/README.md lists tuning reports too
            tracking.log_file(report, "report")
            for png in sorted(Path(reports_dir, "figures").glob(f"{plan.study_name}_*.png")):
                tracking.log_file(png, "report/figures")
        tags = st.summary_tags(study)
        tracking.set_tags(tags)          # and as metrics, to chart and sort: best_val_mAP, best_lambda, trials_*
        tracking.log_metrics({k: float(v) for k, v in tags.items()})
    return TuneOutcome(study=study, report=report, test=test, new_trials=new)


def _study_tags(plan: Plan, split) -> dict[str, str]:
    return {"dataset": plan.dataset, "profile": plan.profile, "storage": plan.storage_shown,
            "spec": str(plan.spec.path), "n_trials": str(plan.n_trials),
            "search_space": json.dumps(plan.spec.search_space()), "validation": split.describe()}


def _compare(study, plan: Plan) -> Compared | None:
    return compare_chosen(st.trial_records(study), study.user_attrs, plan, tracking.load_table)


def report_study(study, plan: Plan, reports_dir: str | Path = "reports",
                 tracking_uri: str = "sqlite:///mlflow.db", compared: Compared | None = None) -> Path:
    """reports/<study>.md (core.tuning.report) from the study storage (trials, user attrs), the plan and the
    per-query frames in MLflow (core.tuning.compare.compare_chosen, computed here unless given); figures under
    figures/."""
    compared = compared or _compare(study, plan)
    figures = write_figures(study, plan.study_name, Path(reports_dir) / "figures")
    return write_tuning_report(plan, st.trial_records(study), dict(study.user_attrs), figures, compared, reports_dir,
                               tracking_uri)
