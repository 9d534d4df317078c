"""MLflow tracking without training (core/tracking.py): fake run results logged into a SQLite store, looked up,
reused or not, metric sections, artifacts, params, run names."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import tracking
from core.config import config_hash
from core.reporting import report as reporting
from core.specs import read_spec, spec_path
from tests.helpers import fake_per_query, fake_tables_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (tests.helpers.fake_tables_store)."""
    return fake_tables_store(tmp_path_factory.mktemp("store"))


def test_configure_prefers_argument_then_environment_then_sqlite(monkeypatch, store):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.configure() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking.configure() == "sqlite:///elsewhere.db"
    assert tracking.configure(store["uri"]) == store["uri"]


def test_experiments_open_as_model_training_with_the_tables_title_and_spec(store, monkeypatch):
    """MLflow 3 opens an experiment without mlflow.experimentKind in its GenAI view (issue 13)."""
    import mlflow
    tracking.configure(store["uri"])
    t1 = mlflow.get_experiment_by_name("STA table1").tags
    assert t1["mlflow.experimentKind"] == "custom_model_development"
    assert t1["mlflow.note.content"] == f"{store['t1'].title}\n\nSpec: `experiments/table1.yaml`"
    t2 = mlflow.get_experiment_by_name("STA table2").tags
    assert t2["mlflow.experimentKind"] == "custom_model_development" and "mlflow.note.content" not in t2
    monkeypatch.setattr(tracking, "SETTLE_S", 0.0)
    with tracking.study_run("STA tune test", "s1", "s1", description="Optuna tuning\n\nSpec: `x.yaml`"):
        pass
    tags = mlflow.get_experiment_by_name("STA tune test").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == "Optuna tuning\n\nSpec: `x.yaml`"


def test_a_worker_losing_the_race_to_tag_a_new_experiment_goes_on(store, monkeypatch):
    # two workers tagging a fresh experiment at once: the second insert of the same tag key fails in the store
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    tracking.configure(store["uri"])
    real, calls = MlflowClient.set_experiment_tag, []

    def other_worker_was_first(self, experiment_id, key, value):
        calls.append(key)
        real(self, experiment_id, key, value)                            # the other worker's write lands ...
        if len(calls) == 1:
            raise MlflowException("UNIQUE constraint failed: experiment_tags.key")  # ... and ours collides
    monkeypatch.setattr(MlflowClient, "set_experiment_tag", other_worker_was_first)
    tracking.use_experiment("STA race", "Race\n\nSpec: `r.yaml`")
    tags = mlflow.get_experiment_by_name("STA race").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development" and tags["mlflow.note.content"].startswith("Race")
    assert calls == ["mlflow.experimentKind", "mlflow.note.content"]   # no blind retry after the collision

    def always_fails(self, experiment_id, key, value):
        raise MlflowException("store is read-only")
    monkeypatch.setattr(MlflowClient, "set_experiment_tag", always_fails)
    with pytest.raises(MlflowException, match="read-only"):
        tracking.use_experiment("STA race 2", "other")


def test_row_runs_hold_params_metrics_history_and_artifacts(store):
    tracking.configure(store["uri"])
    runs = tracking.runs_frame("STA table1")
    assert len(runs) == 3 and set(runs["status"]) == {"FINISHED"}
    assert runs["params.model.aggregation"].eq("frame").all() and runs["params.data.dataset"].eq("synthetic").all()
    assert sorted(runs["metrics.R1"].round(6)) == [50.0, 60.0, 70.0]          # percent
    assert runs["metrics.train_wall_s"].eq(2.0).all()
    import mlflow
    rid = store["ids"][("Baseline", 0)]
    # step = epochs done (1..E), as the console prints them (issue 23); per-epoch losses under train/
    assert [m.step for m in mlflow.MlflowClient().get_metric_history(rid, "train/ce")] == [1, 2]
    assert tracking.load_json(rid, "cmc.json")["cmc"][0] == pytest.approx(50.0)
    assert tracking.load_json(rid, "missing.json") is None
    assert tracking.runs_frame("STA no such table").empty


def test_per_query_artifact_and_interval_metrics_in_percent(store):
    tracking.configure(store["uri"])
    runs = tracking.runs_frame("STA table1")
    row = runs[runs["run_id"] == store["ids"][("Baseline", 1)]].iloc[0]
    assert (row["metrics.R1_ci_low"], row["metrics.R1"], row["metrics.R1_ci_high"]) == pytest.approx((47.5, 60, 72.5))
    assert row["metrics.mAP_ci_high"] == pytest.approx(62.5)
    assert tracking.is_percent("gao_rerank_mAP_ci_high") and not tracking.is_percent("num_queries")
    frame = tracking.load_table(row["run_id"], tracking.PER_QUERY)
    assert tracking.PER_QUERY == "per_query.parquet"
    metrics = {k.removeprefix("metrics."): v / 100 for k, v in row.items() if k.startswith("metrics.")}
    pd.testing.assert_frame_equal(frame, fake_per_query(metrics))      # what was logged, read back
    headline = frame[frame["protocol"] == "headline"]
    assert (headline["first_match_rank"] == 1).mean() == pytest.approx(0.6)
    assert tracking.load_table(row["run_id"], "missing.parquet") is None


def test_a_finished_run_without_per_query_outcomes_is_not_reused(store):
    tracking.configure(store["uri"])
    with tracking.parent_run("STA older", "test"):
        with tracking.child_run("row", {"config_hash": "0ld"}) as old:
            tracking.log_metrics({"R1": 50.0})              # logged before per-query outcomes were kept
    assert tracking.find_finished("STA older", "0ld") == old
    assert tracking.find_finished("STA older", "0ld", needs=(tracking.PER_QUERY,)) is None
    assert tracking.has_artifact(store["ids"][("Baseline", 0)], tracking.PER_QUERY)
    assert tracking.find_finished("STA table1", f"{config_hash(store['t1'].rows[0].config)}-0-synthetic",
                                  needs=(tracking.PER_QUERY,)) == store["ids"][("Baseline", 0)]


def test_find_finished_matches_the_config_hash_only(store):
    tracking.configure(store["uri"])
    cfg = store["t1"].rows[0].config
    assert tracking.find_finished("STA table1", f"{config_hash(cfg)}-1-synthetic") == store["ids"][("Baseline", 1)]
    assert tracking.find_finished("STA table1", "0000") is None
    assert tracking.find_finished("STA table9", "0000") is None


def test_failed_row_is_marked_failed_and_never_reused(store):
    tracking.configure(store["uri"])
    with tracking.parent_run("STA failures", "test"):
        with pytest.raises(FloatingPointError):
            with tracking.child_run("row", {"config_hash": "deadbeef"}):
                raise FloatingPointError("loss is nan")
    runs = tracking.runs_frame("STA failures")
    assert list(runs["status"]) == ["FAILED"] and "loss is nan" in runs["tags.error"].iloc[0]
    assert tracking.find_finished("STA failures", "deadbeef") is None


def test_claim_verdicts_land_on_the_tables_parent_run(store):
    import time

    import mlflow

    from core.reporting import claims
    from tests.helpers import table1_store
    tracking.configure(store["uri"])
    runs, load = table1_store()
    spec = read_spec(spec_path("table1"))
    with tracking.parent_run("STA claims test", "old", {"profile": "cpu", "dataset": "synthetic"}):
        time.sleep(0.01)                     # the newer run starts later (ordered by start time)
    with tracking.parent_run("STA claims test", "new", {"profile": "cpu", "dataset": "synthetic"}) as parent:
        pass
    records = reporting.claim_records(spec, runs, load)
    assert len(records) == 12 and {r["dataset"] for r in records} == {"synthetic"}
    assert tracking.log_claims("STA claims test", records) == [parent]
    assert tracking.load_json(parent, tracking.CLAIMS)["claims"] == records
    data = mlflow.MlflowClient().get_run(parent).data
    assert data.tags["claim1"] == "Baseline + TL > Baseline" and data.tags["claim1_R1_verdict"] == "supported"
    assert data.metrics["claims/claim1_R1_delta"] == pytest.approx(65.0) and \
        data.metrics["claims/claim1_R1_paper_delta"] == pytest.approx(6.3)
    assert "claims/claim2_R1_ci_low" not in data.metrics and "no verdict" in data.tags["claims"]
    assert claims.PER_QUERY == tracking.PER_QUERY


def test_metrics_are_logged_in_sections_with_the_headline_alone_at_the_top(store):
    import mlflow

    from core import record
    tracking.configure(store["uri"])
    logged = set(mlflow.MlflowClient().get_run(store["ids"][("Baseline", 0)]).data.metrics)
    assert all("/" in k for k in logged)                          # no "Model metrics" section: MLflow puts it last
    assert {k for k in logged if k.startswith("Headline/")} == {f"Headline/{m}" for m in ("R1", "R5", "R10", "R20",
                                                                                          "mAP")}
    assert min(k.split("/")[0] for k in logged) == "Headline"       # the chart view's first section (string order)
    assert {"interval/R1_ci_low", "official/R1", "gao/num_gallery", "loss/ce", "train/ce", "time/train_wall_s",
            "eval/num_queries"} <= logged
    for flat in ("R1", "R1_ci_low", "official_rerank_mAP_ci_high", "rerank_set_size", "loss_reg_weighted", "ce",
                 "epoch_wall_s", "attn_auc_map_gain", "val_mAP", "test_delta_mAP_ci_low", "claim3_R1_delta",
                 "best_val_mAP", "system/cpu_utilization_percentage"):
        assert record.flat(record.key(flat)) == flat                # readers get the flat name back
    assert record.key("attn_auc_map") == "audit/auc_map" and record.key("rerank_R1") == "rerank/R1"


def test_a_frame_of_old_flat_and_new_sectioned_runs_reads_as_one_column():
    frame = pd.DataFrame({"run_id": ["old", "new"], "metrics.R1_ci_low": [40.0, np.nan],
                          "metrics.interval/R1_ci_low": [np.nan, 45.0], "metrics.loss/ce": [np.nan, 2.0],
                          "metrics.system/cpu": [1.0, 2.0]})
    flat = tracking.flat_columns(frame)
    assert flat["metrics.R1_ci_low"].tolist() == [40.0, 45.0]
    assert flat["metrics.loss_ce"].isna().tolist() == [True, False] and "metrics.system/cpu" in flat
    assert not any("/" in c for c in flat.columns if c.startswith("metrics.") and "system" not in c)


def test_new_experiments_keep_their_artifacts_beside_a_sqlite_store(tmp_path, monkeypatch):
    import mlflow
    monkeypatch.chdir(tmp_path)
    store_dir = tmp_path / "elsewhere"
    store_dir.mkdir()
    uri = f"sqlite:///{store_dir}/m.db"
    assert tracking.artifact_root(uri) == (store_dir / "mlruns").as_uri()
    assert tracking.artifact_root("sqlite:///mlflow.db") == (tmp_path / "mlruns").as_uri()
    assert tracking.artifact_root("http://127.0.0.1:5000") is None
    tracking.configure(uri)
    try:
        with tracking.parent_run("STA artifacts", "t"):
            tracking.log_dict({"a": 1}, "x.json")
        exp = mlflow.get_experiment_by_name("STA artifacts")
        assert exp.artifact_location.startswith((store_dir / "mlruns").as_uri())
        assert list((store_dir / "mlruns").rglob("x.json")) and not (tmp_path / "mlruns").exists()
    finally:
        mlflow.set_tracking_uri(None)


def test_knobs_the_model_does_not_use_are_not_params_and_are_named(store):
    import mlflow

    from core import record
    from core.config import to_flat_dict
    tracking.configure(store["uri"])
    run = mlflow.MlflowClient().get_run(store["ids"][("Baseline", 0)])       # aggregation frame: no STA knobs
    assert "model.fusion" not in run.data.params and "model.aggregation" in run.data.params
    assert "model.fusion" in run.data.tags["inert_params"] and "model.aggregation is not sta" in \
        run.data.tags["inert_params"]
    sta = store["t1"].rows[-1].config
    assert "model.fusion" not in record.inert(to_flat_dict(sta))
    assert tracking.load_json(store["ids"][("Baseline", 0)], "config.json")["model"]["fusion"] is True  # all there


def test_row_run_names_differ_in_their_first_characters():
    from core import record
    names = [record.row_run_name("table1", i, label, 0) for i, label in
             enumerate(("Baseline + TL + Avg", "Baseline + TL + STA"), start=3)]
    assert [n[:5] for n in names] == ["T1.3 ", "T1.4 "] and names[0].endswith("· seed 0")


def test_the_report_and_its_figures_land_on_the_tables_parent_run(store, tmp_path):
    import mlflow
    tracking.configure(store["uri"])
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "t_bars.png").write_bytes(b"png")
    report = tmp_path / "table9.md"
    report.write_text("# T\n\n![bars](figures/t_bars.png)\n![gone](figures/missing.png)\n", encoding="utf-8")
    with tracking.parent_run("STA report test", "run") as parent:
        pass
    assert tracking.log_report("STA report test", report) == parent
    files = {f.path for f in mlflow.MlflowClient().list_artifacts(parent, "report")}
    assert files == {"report/table9.md", "report/figures"}
    assert tracking.has_artifact(parent, "report/figures/t_bars.png")
    assert tracking.log_report("STA no such experiment", report) is None
