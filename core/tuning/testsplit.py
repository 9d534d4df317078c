"""The test split, once the search stops: the best trial's values and the defaults, each trained on the full training
set and evaluated once on the test split (cached by config hash in the study's user attrs, so a resumed study
re-evaluates only a new best). Logged as the study's "test" runs (core.tracking); no optuna code here: the study is
read through its user attrs only.
"""
from __future__ import annotations

from pathlib import Path

from core import atomic, engine, record, tracking
from core.config import config_hash
from core.protocols import chance_name
from core.tuning.spec import Plan, lambda_margin, with_values


def _has_table(run_id: str | None, name: str) -> bool:
    try:
        return run_id is not None and tracking.has_artifact(run_id, name)
    except Exception:  # noqa: BLE001 - a run of another store: the backend raises its own error types
        return False


def evaluate_on_test(study, best, plan: Plan, dataset, progress: bool = True) -> dict[str, dict]:
    """Train the best trial's values and the defaults on the full training set, evaluate each once on the test
    split; results are kept in the study's user attrs ("test:<config hash>") and in <study>.test.json beside a
    journal file, and reused when the best is unchanged."""
    if best is None:
        return {}
    out = {}
    for label, (lam, margin), trial in (("chosen", lambda_margin(best["params"]), best["number"]),
                                        ("defaults", plan.baseline_values, None)):
        cfg = with_values(plan.config, lam, margin)
        key = f"test:{config_hash(cfg)}"
        found = study.user_attrs.get(key)
        if found is not None and not _has_table(found.get("mlflow_run_id"), record.PER_QUERY):
            found = None     # evaluated before per-query outcomes were kept, or logged to another store: again
        if found is None:
            tags = {"kind": record.TEST_KIND, "study": plan.study_name, "label": label, "dataset": plan.dataset,
                    "profile": plan.profile, "config_hash": config_hash(cfg), **tracking.provenance_tags()}
            with tracking.child_run(record.test_run_name([label], lam, margin), tags) as run_id:
                tracking.log_config(cfg, extra={"study": plan.study_name, "label": label, "trial": trial})
                tracking.log_datasets(cfg, dataset)
                callback = tracking.epoch_callback()
                result = engine.run(cfg, plan.work_dir, callbacks=[callback], dataset=dataset, progress=progress)
                tracking.log_result(result, logged_by=callback)
            found = {"lambda": lam, "margin": margin, "dataset": result.dataset_name, "synthetic": result.synthetic,
                     "metrics": {k: 100.0 * result.metrics[k] for k in record.METRICS},
                     "chance": {k: 100.0 * result.metrics[chance_name(k)] for k in record.METRICS
                                if chance_name(k) in result.metrics},      # the test split's random ranking
                     "num_queries": int(result.metrics["num_queries"]), "num_gallery": len(dataset.gallery),
                     "mlflow_run_id": run_id, "config_hash": config_hash(cfg)}
            study.set_user_attr(key, found)
        out[label] = {**found, "trial": trial}
    _name_test_runs(plan, out)
    if "://" not in plan.storage:
        atomic.save_json(out, Path(plan.storage).with_suffix(".test.json"))
    return out


def _name_test_runs(plan: Plan, out: dict[str, dict]) -> None:
    """Name every test run of the study by the roles it has now ('chosen', 'defaults', both, or none: an earlier
    best), so a run evaluated as 'chosen' and later reused as the defaults' run says so (tag label too)."""
    roles: dict[str, list[str]] = {}
    for label, res in out.items():
        roles.setdefault(res.get("mlflow_run_id") or "", []).append(label)
    study_tag = plan.study_name.replace("\\", "\\\\").replace("'", "\\'")
    for run in tracking.find_runs(plan.experiment, f"tags.kind = '{record.TEST_KIND}' and tags.study = '{study_tag}'"):
        labels = roles.get(run.run_id, [])
        lam, margin = run.config.get("loss.reg_weight"), run.config.get("loss.margin")
        if not (isinstance(lam, float) and isinstance(margin, float)):
            continue
        name = record.test_run_name(labels, lam, margin)
        if run.name != name:
            tracking.name_run(run.run_id, name, {"label": " = ".join(labels) or "earlier best"})
