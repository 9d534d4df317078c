"""A diverged trial (issue 12; core.tuning): the trial fails with its reason, is never scored, and its MLflow run is
FAILED."""
from __future__ import annotations


def test_diverged_trial_fails_with_its_reason_and_is_never_scored(tiny_synthetic_root, tmp_path):
    from optuna.trial import TrialState

    from core.tuning.spec import plan_study
    from core.tuning.run import run_study
    from tests.helpers import runs_of, uri, write_spec
    plan = plan_study(write_spec(tmp_path), data_root=str(tiny_synthetic_root), study_name="nan", n_trials=1,
                      work_dir=tmp_path / "runs",
                      overrides={"train.epochs": 1, "train.lr": 1e10, "data.ids_per_batch": 6})
    out = run_study(plan, tracking_uri=uri(tmp_path), evaluate_test=False, progress=False)
    trial = out.study.trials[0]                              # the baseline; the lambda = 0 reference waits
    assert trial.state == TrialState.FAIL and trial.value is None
    assert trial.user_attrs["reason"].startswith("FloatingPointError: ") and "non-finite" in trial.user_attrs["reason"]
    runs = runs_of(tmp_path, "nan")
    assert list(runs[runs["tags.kind"] == "trial"]["status"]) == ["FAILED"]
