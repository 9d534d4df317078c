"""Optuna study (core.tuning.run, .study, .trial): tiny studies complete, resume, prune, record failures, share a journal between two
worker processes and log to MLflow; the validation split stays inside the training identities; bad input is
refused before any trial runs."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

import core.config
import core.engine
import core.tuning.compare
import core.tuning.study
from core import tracking
from core.cli import tune_main as main
from core.config import ConfigError
from core.data import load_dataset
from core.data.validation import ValidationSplitError, split_validation
from core.record import VAL_PER_QUERY
from core.tuning.run import report_study, run_study
from core.tuning.spec import plan_study
from core.tuning.study import open_study, suggest
from tests.helpers import REPO, runs_of, uri, write_spec


@pytest.fixture
def make_plan(tiny_synthetic_root, tmp_path):
    def make(study: str = "s", n_trials: int = 3, spec: Path | None = None, epochs: int = 2, **kwargs):
        return plan_study(spec or write_spec(tmp_path), data_root=str(tiny_synthetic_root), study_name=study,
                          n_trials=n_trials, work_dir=tmp_path / "runs", overrides={"train.epochs": epochs},
                          **kwargs)
    return make


def test_study_completes_resumes_and_is_tracked(make_plan, tmp_path, monkeypatch):
    plan = make_plan("s", n_trials=3, epochs=1)
    out = run_study(plan, tracking_uri=uri(tmp_path), reports_dir=tmp_path / "reports", progress=False)
    trials = out.study.trials
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state == TrialState.COMPLETE for t in trials)
    # the baseline (Table 1 "+ Reg" lambda, margin 0.3) first, then the lambda = 0 reference
    assert trials[0].params == {"reg": "on", "reg_weight": 1.0, "margin": 0.3}
    assert trials[0].user_attrs["role"] == "baseline"
    assert trials[1].params == {"reg": "off", "margin": 0.3} and trials[1].user_attrs["lambda"] == 0.0
    assert all(list(t.intermediate_values) == [1] for t in trials)       # report_every 1, 1 epoch
    assert out.test["chosen"]["synthetic"] and set(out.test["defaults"]["metrics"]) >= {"R1", "mAP"}
    text = out.report.read_text()
    assert "synthetic (MARS layout) — not MARS" in text and "| 2 | complete | search |" in text
    assert (tmp_path / "reports" / "figures" / "s_history.png").exists()
    # the baseline is the best here: nothing to compare, the defaults are recommended; test cells carry intervals
    assert "- The best trial (0) has the baseline's values: there is nothing to compare." in text
    assert "**Recommended: keep the defaults, λ = 1, margin = 0.300** — the best trial is the baseline" in text
    assert "python reproduce/table1.py --dataset synthetic --profile cpu    # recommended: the defaults" in text
    assert re.search(r"\| chosen \(trial 0\) \| 1 \| 0.300 \| [\d.]+ \[[\d.]+, [\d.]+\] \|", text)
    # the test numbers beside the test split's chance level (logged by the test run)
    chance = out.test["defaults"]["chance"]
    assert set(chance) == {"R1", "R5", "R10", "R20", "mAP"} and 0 < chance["R1"] < chance["R5"] <= 100
    assert f"| chance (random ranking) | | | {chance['R1']:.2f} | {chance['R5']:.2f} |" in text
    # the config line says what the trials ran: the budget's 2 epochs replaced by the command line's 1
    assert "the spec's `budgets.cpu` overrides (data.height=32, " in text and "data.synthetic_size=tiny, " in text
    assert "train.epochs=2 (replaced by --set train.epochs=1)" in text
    assert "then the command line's --set (train.epochs=1): synthetic preset `tiny` (generator seed 0)" in text
    assert ", 1 epochs (lr x0.1 after 1)" in text
    # every held-out tracklet is a query (tiny: 2 identities, validation.queries: all)
    split = out.study.user_attrs["validation_split"]
    assert split["queries"] == "all" and split["val_query_tracklets"] == split["val_gallery_tracklets"] > 2
    assert f"validation.queries: all; {split['val_query_tracklets']} queries, gallery of the same" in text

    runs = runs_of(tmp_path, "s")
    parent = runs[runs["tags.kind"] == "study"]
    assert len(parent) == 1
    trial_runs = runs[runs["tags.kind"] == "trial"]
    assert sorted(trial_runs["tags.trial"].astype(int)) == [0, 1, 2]
    assert set(trial_runs["tags.mlflow.parentRunId"]) == set(parent["run_id"])
    assert set(trial_runs["params.trial.lambda"].astype(float)) >= {0.0, 1.0}
    assert trial_runs["params.loss.reg_weight"].notna().all() and trial_runs["metrics.val_mAP_final"].notna().all()
    frame = tracking.load_table(trial_runs["run_id"].iloc[0], VAL_PER_QUERY)   # the last validation, per query
    assert len(frame) == split["val_query_tracklets"] and set(frame["protocol"]) == {"headline"}
    assert parent["tags.conclusion"].iloc[0] == "chosen = defaults"
    history = mlflow.tracking.MlflowClient().get_metric_history(trial_runs["run_id"].iloc[0], "val/mAP")
    assert [m.step for m in history] == [1]          # epochs done, as Optuna's intermediate values (issue 23)
    assert (runs["tags.kind"] == "test").sum() == 1                        # chosen == defaults here: one run
    # trial runs named by their values and result; the study's summary as metrics; the objective named
    first = trial_runs[trial_runs["tags.trial"] == "0"].iloc[0]
    assert first["tags.mlflow.runName"] == f"#0 λ=1 m=0.3 → {trials[0].value:.2f}"
    assert parent["metrics.best_val_mAP"].iloc[0] == pytest.approx(max(t.value for t in trials), abs=0.006)
    assert parent["metrics.trials_complete"].iloc[0] == 3 and parent["metrics.best_lambda"].iloc[0] == 1.0
    assert out.study.metric_names == ["val mAP (%)"]
    assert runs[runs["tags.kind"] == "test"]["tags.mlflow.runName"].tolist() == ["test: chosen = defaults (λ=1, m=0.3)"]
    assert len(json.dumps(out.study.user_attrs["base_config_changed"])) < 400   # short enough for optuna-dashboard

    # resumed, with the lambda = 0 reference taken as the best (whatever trial 3 gives): a real comparison
    reference = trials[1]
    monkeypatch.setattr(core.tuning.compare, "best_record",
                        lambda trials: next(t for t in trials if t["number"] == reference.number))
    again = run_study(make_plan("s", n_trials=4, epochs=1), tracking_uri=uri(tmp_path),
                      reports_dir=tmp_path / "reports", progress=False)
    trials = again.study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3] and again.new_trials == 1
    assert trials[3].user_attrs.get("role") is None                      # nothing queued again
    assert sum(t.user_attrs.get("role") == "baseline" for t in trials) == 1
    runs = runs_of(tmp_path, "s")
    assert (runs["tags.kind"] == "study").sum() == 1
    # the earlier test run, now the defaults' run only, says so; the new best has its own
    assert sorted(runs[runs["tags.kind"] == "test"]["tags.mlflow.runName"]) == \
        ["test: chosen (λ=0, m=0.3)", "test: defaults (λ=1, m=0.3)"]
    assert set(runs[runs["tags.kind"] == "trial"]["tags.mlflow.parentRunId"]) == set(parent["run_id"])

    text = again.report.read_text()
    val = re.search(r"- Validation \(best trial 1 − baseline trial 0\): mAP ([-+][\d.]+) points \[([-+][\d.]+), "
                    r"([-+][\d.]+)\], R1 [-+][\d.]+ points \[[-+][\d.]+, [-+][\d.]+\]; (\d+) queries of 2 identities",
                    text)
    assert val and float(val[2]) <= float(val[1]) <= float(val[3]) and int(val[4]) == split["val_query_tracklets"]
    assert float(val[1]) == pytest.approx(trials[1].value - trials[0].value, abs=0.051)   # the objective's difference
    test = re.search(r"- Test \(chosen − defaults, each trained once on the full training split\): mAP "
                     r"([-+][\d.]+) points \[([-+][\d.]+), ([-+][\d.]+)\]", text)
    parent = runs_of(tmp_path, "s").query("`tags.kind` == 'study'").iloc[0]     # the same numbers, unrounded
    low, high = parent["metrics.test_delta_mAP_ci_low"], parent["metrics.test_delta_mAP_ci_high"]
    assert (float(test[2]), float(test[3])) == pytest.approx((low, high), abs=0.051)
    verdict = "better" if low > 0 else "worse" if high < 0 else "not distinguishable"
    assert f"**Conclusion: {verdict}.**" in text and parent["tags.conclusion"] == verdict
    keep = verdict != "better"
    assert ("**Recommended: keep the defaults, λ = 1, margin = 0.300**" in text) == keep
    assert ("--set loss.reg_weight=0 --set loss.margin=0.3    # recommended values" in text) == (not keep)
    assert parent["tags.recommended_lambda"] == ("1" if keep else "0")


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruned_and_failed_trials_keep_their_reason(make_plan, tmp_path, monkeypatch):
    real, seen = core.engine.train, []

    def fails_once(cfg, dataset, *args, **kwargs):
        seen.append(dataset)
        if len(seen) == 1:
            raise RuntimeError("boom: disk full")
        return real(cfg, dataset, *args, **kwargs)

    monkeypatch.setattr(core.engine, "train", fails_once)
    plan = make_plan("p", n_trials=2)
    out = run_study(plan, tracking_uri=uri(tmp_path), evaluate_test=False, progress=False, pruner=AlwaysPrune())
    failed, pruned = out.study.trials
    assert failed.state == TrialState.FAIL and failed.user_attrs["reason"] == "RuntimeError: boom: disk full"
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [1]
    assert pruned.user_attrs["reason"].startswith("pruned after epoch 1 by AlwaysPrune: val mAP ")
    text = report_study(out.study, plan, tmp_path / "reports").read_text()
    assert "boom: disk full" in text and "pruned after epoch 1 by AlwaysPrune" in text
    assert "not drawn: no completed trial yet" in text
    runs = runs_of(tmp_path, "p").set_index("tags.trial")
    assert runs.loc["0", "status"] == "FAILED" and "boom" in runs.loc["0", "tags.error"]
    assert runs.loc["1", "status"] == "FINISHED" and runs.loc["1", "tags.optuna_state"] == "PRUNED"
    # the trial trained on the validation split's training identities, never on the held-out ones
    full = load_dataset(plan.config.data)
    assert seen[1].num_train_pids == full.num_train_pids - 2
    assert not _identities(seen[1].train) & _identities(seen[1].query + seen[1].gallery)


def _identities(tracklets) -> set[str]:
    """Identity folders of MARS-layout tracklets (bbox_train/0003/..., bbox_test/0012/...)."""
    return {Path(t.paths[0]).parent.name for t in tracklets}


def test_validation_split_stays_inside_the_training_identities(tiny_synthetic_root):
    from tests.helpers import tiny_cfg
    ds = load_dataset(tiny_cfg(tiny_synthetic_root).data)
    split = split_validation(ds, 0.25, seed=0, queries="one")
    val = split.dataset
    held = _identities(val.query + val.gallery)
    assert len(held) == len(split.val_pids) == 2 and len(val.query) == 2
    assert held <= _identities(ds.train)
    assert not held & _identities(ds.query + ds.gallery)                  # never the test split
    assert not held & _identities(val.train)                              # never the trial's training data
    assert sorted({t.pid for t in val.train}) == list(range(val.num_train_pids)) and val.num_train_pids == 6
    for q in val.query:                                                   # a match in another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in val.gallery) and q not in val.gallery
    assert split_validation(ds, 0.25, 0, "one") == split                  # fixed by (fraction, seed, queries)
    with pytest.raises(ValidationSplitError, match="holds out 0; at least 2"):
        split_validation(ds, 0.05)


def test_two_workers_share_one_study(tiny_synthetic_root, tmp_path):
    spec = write_spec(tmp_path)
    journal = tmp_path / "shared.journal"
    tracking.configure(uri(tmp_path))
    mlflow.search_experiments()          # create the SQLite tables once, not in two processes at the same time
    cmd = [sys.executable, str(REPO / "reproduce" / "tune.py"), "--spec", str(spec), "--study-name", "w",
           "--storage", str(journal), "--n-trials", "4", "--data-root", str(tiny_synthetic_root),
           "--tracking-uri", uri(tmp_path), "--work-dir", str(tmp_path / "runs"), "--set", "train.epochs=1",
           "--no-test", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    study = optuna.load_study(study_name="w", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(len(numbers))) and 4 <= len(numbers) <= 5   # none lost, none twice
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert sum(t.user_attrs.get("role") == "baseline" for t in study.trials) == 1
    runs = runs_of(tmp_path, "w")
    parent = runs[runs["tags.kind"] == "study"]
    assert len(parent) == 1
    trial_runs = runs[runs["tags.kind"] == "trial"]
    assert sorted(trial_runs["tags.trial"].astype(int)) == numbers
    assert set(trial_runs["tags.mlflow.parentRunId"]) == set(parent["run_id"])


def test_trial_of_a_killed_worker_is_failed_with_its_reason_and_queued_again(make_plan):
    plan = make_plan("k")
    study, _ = open_study(plan)
    trial = study.ask()                                    # the baseline, RUNNING in a worker that then dies
    suggest(trial, plan.spec)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    study, created = open_study(plan)
    killed = study.trials[0]
    assert not created and killed.state == TrialState.FAIL
    assert "stopped during the trial (killed)" in killed.user_attrs["reason"]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING and retry[0].user_attrs["role"] == "baseline"
    study, _ = open_study(plan)                            # resumed again: not queued twice
    assert sum(t.user_attrs.get("retry_of") == 0 for t in study.trials) == 1


@pytest.mark.parametrize("search, message", [
    ({"reg_weight": {"low": 1.0, "high": 0.1}},
     r"search.reg_weight: empty or inverted range: low 1 must be < high 0.1"),
    ({"reg_weight": {"low": 0.0, "high": 1.0}}, r"search.reg_weight: key 'low' is 0; a log-scale range needs low > 0"),
    ({"margin": {"low": 0.3, "high": 0.3}}, r"search.margin: empty or inverted range: low 0.3 must be < high 0.3"),
    ({"margin": {"low": 0.4, "high": 0.6}}, r"baseline margin 0.3 lies outside search.margin \[0.4, 0.6\]"),
    ({"margin": {"low": 0.1, "high": 0.6, "step": 2}}, r"search.margin: unknown key 'step'"),
])
def test_bad_search_space_is_refused(make_plan, tmp_path, search, message):
    with pytest.raises(ConfigError, match=message) as err:
        make_plan(spec=write_spec(tmp_path, **search))
    assert "tune.yaml" in str(err.value)


@pytest.mark.parametrize("storage, message", [
    ("redis://localhost:6379", r"unknown URL scheme 'redis://'"),
    ("sqlite://relative.db", r"unknown URL scheme 'sqlite://'"),
    ("runs/study.db", r"must end in .journal"),
])
def test_bad_storage_is_refused(make_plan, storage, message):
    with pytest.raises(ConfigError, match=message):
        make_plan(storage=storage)


def test_allowed_storages_pass(make_plan):
    for storage in ("sqlite:///x.db", "postgresql+psycopg2://u@h/db", "mysql://u@h/db", "a/b.journal"):
        assert make_plan(storage=storage).storage == storage


def test_study_with_another_search_space_is_refused_before_any_trial(make_plan, tmp_path):
    study, created = open_study(make_plan("x"))
    assert created and [t.state for t in study.trials] == [TrialState.WAITING] * 2
    assert open_study(make_plan("x"))[1] is False                         # same space: resumed
    other = write_spec(tmp_path, "other.yaml", margin={"low": 0.1, "high": 0.5})
    with pytest.raises(ConfigError, match=r"study 'x' .* exists with another search space"):
        open_study(make_plan("x", spec=other))
    assert [t.state for t in study.trials] == [TrialState.WAITING] * 2   # nothing ran


def test_command_line_reports_bad_input(tmp_path, capsys):
    assert main(["--storage", "redis://h", "--work-dir", str(tmp_path)]) == 2
    assert "unknown URL scheme 'redis://'" in capsys.readouterr().err
    assert main(["--set", "loss.margin=0.2", "--work-dir", str(tmp_path)]) == 2
    assert "key 'loss.margin' is what the study searches" in capsys.readouterr().err


def test_too_large_p_is_refused_before_the_study_is_saved(tiny_synthetic_root, tmp_path):
    def plan(p: int):
        return plan_study(write_spec(tmp_path), data_root=str(tiny_synthetic_root), study_name="big_p", n_trials=1,
                          work_dir=tmp_path / "runs", overrides={"train.epochs": 1, "data.ids_per_batch": p})
    # tiny: 8 training identities, 2 of them held out for validation (fraction 0.25) -> 6 left
    with pytest.raises(ConfigError, match=r"leaves 6 training identities, fewer than data.ids_per_batch P=7"):
        run_study(plan(7), tracking_uri=uri(tmp_path), evaluate_test=False, progress=False)
    assert not (tmp_path / "runs" / "optuna").exists()                  # no study in the default journal
    study, created = open_study(plan(4))                                 # the corrected command starts afresh
    assert created and study.user_attrs["base_config_changed"]["data.ids_per_batch"] == 4


def test_a_study_resumes_across_result_neutral_keys_and_refuses_others(tiny_synthetic_root, tmp_path):
    def plan(**overrides):
        return plan_study(write_spec(tmp_path), data_root=str(tiny_synthetic_root), study_name="neutral", n_trials=1,
                          work_dir=tmp_path / "runs", overrides={"train.epochs": 1, **overrides})
    study, created = open_study(plan())
    assert created and not set(study.user_attrs["base_config_changed"]) & set(core.config.study_neutral_keys(report=False))
    assert set(core.config.RESULT_NEUTRAL_KEYS) <= set(core.config.study_neutral_keys(report=False))     # one list: config's
    neutral = {"train.compile": True, "train.checkpoint_every_s": 1.0, "data.num_workers": 0, "eval.batch_size": 3,
               "eval.bootstrap_resamples": 7}
    assert open_study(plan(**neutral))[1] is False
    with pytest.raises(ConfigError, match=r"another base config \(loss.triplet: True -> False\)"):
        open_study(plan(**{"loss.triplet": False}))
    # a study created before issue 23 holds the whole base config (older ones machine keys too): still compared
    study.set_user_attr("base_config", {**core.tuning.study._comparable_config(plan().config), "train.compile": False})
    assert open_study(plan(**neutral))[1] is False
    with pytest.raises(ConfigError, match=r"another base config \(loss.triplet: True -> False\)"):
        open_study(plan(**{"loss.triplet": False}))


def test_bad_tracking_uri_and_output_folder_are_refused_before_the_study_is_saved(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--tracking-uri", "foo://bar", "--work-dir", "runs"]) == 2
    assert "tracking URI 'foo://bar'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / ".cache").exists()     # nor data generated
    (tmp_path / "afile").write_text("x")
    assert main(["--work-dir", "afile"]) == 2
    assert "--work-dir 'afile' is not a folder" in capsys.readouterr().err


def test_trial_asked_past_the_budget_is_failed_unrun_and_not_counted(make_plan):
    from core.tuning.study import StopAtBudget
    from core.tuning.trial import Objective, SurplusTrial
    plan = make_plan("b", n_trials=1)
    study, _ = open_study(plan)
    first = study.ask()                  # the baseline, running in one worker; a second worker asked at that moment
    second = study.ask()
    with pytest.raises(SurplusTrial, match=r"not run: surplus \(1 trials ahead of it, budget 1\)"):
        Objective(plan, split=None, progress=False)(second)          # fails before it trains anything
    study.tell(second, state=TrialState.FAIL)
    assert second.user_attrs["surplus"] and "lambda" not in second.user_attrs and not second.params
    assert StopAtBudget(1).count(study) == 1 and StopAtBudget(1).count(study, before=first.number) == 0


def test_queued_trial_killed_before_suggesting_is_queued_again_with_its_values(make_plan):
    plan = make_plan("q")
    study, _ = open_study(plan)
    trial = study.ask()                                    # the baseline, killed before it suggested its values
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    study, _ = open_study(plan)
    assert study.trials[0].state == TrialState.FAIL and not study.trials[0].params
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].system_attrs["fixed_params"] == plan.baseline
