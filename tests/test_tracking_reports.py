"""Tracking and reports without training: fake run results logged into a SQLite store, looked up, and joined
with the specs into markdown (mean ± std over seeds, synthetic labelled as such, re-ranked rows)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import protocols, tracking
from core.config import config_hash
from core.reporting import cells, figures, select, what_ran
from core.reporting import report as reporting
from core.specs import load_spec, read_spec, spec_path
from tests.helpers import FakeEpoch, FakeResult, fake_per_query

CHANCE = {"R1": 0.0022, "R5": 0.011, "R10": 0.022, "R20": 0.043, "mAP": 0.008}   # a random ranking's (fractions)


def _log_row(spec, row, seed: int, r1: float, dataset: str = "synthetic", rerank: float | None = None) -> str:
    cfg = row.config
    tags = {"table": spec.table, "row": row.label, "dataset": dataset, "profile": spec.profile, "seed": seed,
            "config_hash": f"{config_hash(cfg)}-{seed}-{dataset}"}
    with tracking.child_run(f"{row.label} [seed {seed}]", tags) as run_id:
        tracking.log_config(cfg, {"label": row.label})
        callback = tracking.epoch_callback()
        callback(FakeEpoch(0))             # epoch 0 seen live, epoch 1 back-filled from the history
        metrics = {"R1": r1, "R5": 0.8, "R10": 0.9, "R20": 0.95, "mAP": 0.5, "num_queries": 10.0,
                   "num_skipped_queries": 0.0}
        if rerank is not None:
            metrics.update(rerank_R1=rerank, rerank_R5=0.9, rerank_R10=0.95, rerank_R20=0.99, rerank_mAP=0.7,
                           rerank_set_size=11310.0)
        official = {f"official_{k}": v for k, v in metrics.items()}          # the headline is the official one
        gao = {f"gao_{k}": v + 0.125 if k.endswith(("R1", "mAP")) else v for k, v in metrics.items()}
        metrics.update({**official, **gao, "gao_num_skipped_queries": 2.0, "official_num_gallery": 11310.0,
                        "gao_num_gallery": 9330.0})
        metrics.update({"R1_ci_low": r1 - 0.125, "R1_ci_high": r1 + 0.125, "mAP_ci_low": 0.375,
                        "mAP_ci_high": 0.625})                              # bootstrap interval bounds (fractions)
        metrics.update({protocols.chance_name(m, p): v * (1.5 if p == "gao_" else 1.0) for p in ("", "official_", "gao_")
                        for m, v in CHANCE.items()})                        # the split's chance level (fractions)
        losses = {"loss_ce": 2.5, "loss_triplet": 0.75, "loss_reg_weighted": 0.0125, "loss_total": 3.2625}
        tracking.log_result(FakeResult(metrics, np.linspace(r1, 1.0, 20), [FakeEpoch(0), FakeEpoch(1)], {}, losses,
                                       fake_per_query(metrics)), logged_by=callback)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module: table1 rows 1-2 with 2 seeds, table4's run rows (STA, STA + ReRank, STAN, STAL)."""
    folder = tmp_path_factory.mktemp("store")
    uri = tracking.configure(f"sqlite:///{folder}/mlflow.db")
    t1 = load_spec(spec_path("table1"), "cpu")
    t4 = load_spec(spec_path("table4"), "cpu")
    ids = {}
    with tracking.parent_run(tracking.experiment_name("table1"), "test", {"table": "table1"},
                             tracking.describe(t1.title, t1.path)):
        for seed, r1 in ((0, 0.50), (1, 0.60)):
            ids[("Baseline", seed)] = _log_row(t1, t1.rows[0], seed, r1)
        ids[("Baseline + TL", 0)] = _log_row(t1, t1.rows[1], 0, 0.70)
    t2 = load_spec(spec_path("table2"), "cpu")
    with tracking.parent_run(tracking.experiment_name("table2"), "test", {"table": "table2"}):
        for row, r1 in zip(t2.rows, (0.3, 0.4, 0.42, 0.41)):
            _log_row(t2, row, 0, r1)
    with tracking.parent_run(tracking.experiment_name("table4"), "test", {"table": "table4"}):
        rows = {r.label: r for r in t4.rows if r.run}
        _log_row(t4, rows["STA"], 0, 0.40)
        _log_row(t4, rows["STA + ReRank"], 0, 0.40, rerank=0.45)
        _log_row(t4, rows["STAN (this suite)"], 0, 0.35)
        _log_row(t4, rows["STAL (this suite)"], 0, 0.38)
    return {"uri": uri, "folder": folder, "ids": ids, "t1": t1}


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


def test_timing_metrics_renamed_and_old_runs_still_read():
    from core.engine.training import EpochStats
    stats = EpochStats(epoch=0, iterations=1, ce=1.0, triplet=0.0, reg=0.0, total=1.0, train_acc=0.5, lr=1e-3,
                       frames_per_s=10.0, seconds=2.5)
    assert stats.metrics()["epoch_wall_s"] == 2.5 and "seconds" not in stats.metrics()
    old = pd.Series({"metrics.train_wall_s": float("nan"), "metrics.train_seconds": 7.0})   # logged before issue 13
    new = pd.Series({"metrics.train_wall_s": 3.0, "metrics.train_seconds": float("nan")})
    assert cells.logged_metric(old, "train_wall_s") == 7.0 and cells.logged_metric(new, "train_wall_s") == 3.0
    assert cells.logged_metric(pd.Series({"metrics.R1": 1.0}), "train_wall_s") is None


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


def _table_lines(text: str, caption: str) -> list[str]:
    """The markdown table right after the paragraph starting with `caption`."""
    part = text[text.index(caption):].split("\n\n")
    return [ln for ln in part[1].splitlines() if ln.startswith("|")]


def test_report_gives_synthetic_runs_with_intervals_beside_chance_not_beside_the_paper(store, tmp_path):
    tracking.configure(store["uri"])
    spec = read_spec(spec_path("table1"))
    path = reporting.write_report(spec, tracking.runs_frame("STA table1"), tmp_path, load_json=tracking.load_json,
                                  load_table=tracking.load_table)
    text = path.read_text()
    caption = "**Headline protocol — synthetic, MARS layout** (= `official`: gallery with the query tracklets, " \
              "trapezoid AP; 10 queries with a valid match"
    assert caption in text
    head = _table_lines(text, caption)
    # dataset and protocol in the caption, not in every column; no paper or Δ column for synthetic runs
    assert re.sub(r" +", " ", head[0]) == "| # | row | R1 | R5 | R10 | mAP | queries without a valid match |"
    assert "this run (" not in text and "paper (MARS)" not in text and "Δ R1" not in text
    assert re.sub(r" +", " ", head[2]) == "| — | chance (random ranking) | 0.22 | 1.10 | 2.20 | 0.80 | |"
    line = next(ln for ln in head if ln.startswith("| 1 "))
    assert "55.0 ± 7.1 [" in line and "74.5" not in line            # mean ± std [seed x query interval]
    assert "Δ = this run − paper" not in text and "read them against the chance line" in text
    assert re.search(r"\| Baseline \+ TL > Baseline +\| R1 +\| \+6\.3 +\| \+[0-9.]+ \[", text)   # the Claims
    assert "**Claims — synthetic, MARS layout** (this run: headline protocol = `official`; paper Δ: the paper's " \
           "MARS column)" in text
    # the other protocol, in its own table: gao R1 = 0.125 higher, 2 queries skipped, its own chance level
    gao = _table_lines(text, "**Protocol `gao` — synthetic, MARS layout** (gallery without the query tracklets, "
                             "non-interpolated (step) AP; 10 queries with a valid match, 9330 gallery tracklets)")
    assert re.sub(r" +", " ", gao[2]) == "| — | chance (random ranking) | 0.33 | 1.65 | 3.30 | 1.20 | |"
    line = next(ln for ln in gao if ln.startswith("| 1 "))
    assert "67.5 ± 7.1" in line and line.rstrip(" |").endswith("2")
    assert "gallery without the query tracklets, non-interpolated (step) AP" in text
    assert "headline** = `official`" in text and "gallery with the query tracklets, trapezoid AP" in text
    assert max(len(ln) for ln in text.splitlines() if ln.startswith("|")) < 300      # was 1,351 characters
    # what the runs ran, from their logged configs: the cpu profile's settings, nothing departs from it
    assert "**What these runs ran** (from the resolved configs they logged): data: synthetic, MARS layout, preset " \
           "`occluded` (data.synthetic_size), generator seed 0; test split 10 queries" in text
    assert "resnet18_narrow pretrained, frames 64x32" in text and "Training: 20 epochs" in text
    assert "depart from the profile" not in text and "Profile `cpu` as declared" in text
    # run details: the last epoch's weighted loss terms and the gallery sizes
    assert "last epoch λ·Reg" in text and "0.0125" in text and re.search(r"\| 11310 +\| 9330 +\|", text)
    assert "Seeds: 0, 1 (mean ± std over seeds)" in text and "eval.ap_rule = trapezoid" in text
    assert "data.gallery_with_queries = True" in text
    for fig in ("bars", "cmc"):
        assert (tmp_path / "figures" / f"table1_cpu_synthetic_{fig}.png").stat().st_size > 1000
    assert "## The paper's numbers (as printed)" in text and "79.1" in text and "74.5" in text  # the Duke column too
    index = reporting.write_index(tmp_path).read_text()
    assert "[table1](table1.md)" in index


def test_report_sets_the_paper_beside_runs_on_a_paper_dataset(tmp_path):
    from tests.helpers import GOOD, fake_store, per_query, run_row
    frame = per_query(GOOD)
    row = {**run_row("m0", "Baseline + TL", frame, dataset="mars"), "metrics.chance_R1": 0.05,
           "metrics.chance_mAP": 0.3, "metrics.num_gallery": 11310.0}
    runs, load = fake_store([(row, frame)])
    text = reporting.render(read_spec(spec_path("table1")), runs, tmp_path, load_table=load)
    caption = "**Headline protocol — MARS** (= `official`: gallery with the query tracklets, trapezoid AP; " \
              "11310 gallery tracklets)"
    assert caption in text and "Paper: the paper's MARS column; Δ = this run − paper." in text
    head = _table_lines(text, caption)
    assert re.sub(r" +", " ", head[0]).startswith("| # | row | paper R1 | R1 | Δ R1 | paper R5 | R5 | Δ R5 |")
    assert re.sub(r" +", " ", head[2]).startswith("| — | chance (random ranking) | — | 0.05 | — | — | — † | — |")
    line = next(ln for ln in head if ln.startswith("| 2 "))
    assert "| 80.8 | 100.0 [100.0, 100.0] | 19.2 |" in re.sub(r" +", " ", line)     # paper | this run | Δ
    assert "† chance level not logged" in text


def test_bars_figure_shows_intervals_beside_chance_on_an_axis_that_fits_them():
    label = "Baseline + TL + STA + Fusion + Reg"
    fig = figures.bars_figure(["Baseline", label], ["R1", "mAP"],
                              {"R1": [(2.0, 1.0, 3.0), (5.0, 4.0, 6.5)], "mAP": [(1.0, 0.5, 1.5), (1.2, float("nan"),
                                                                                                float("nan"))]},
                              "this run (synthetic, MARS layout)", "t", chance={"R1": 0.22, "mAP": 0.8})
    r1, ap = fig.axes[:2]
    lo, hi = r1.get_xlim()
    assert 0 <= lo <= 0.22 and 6.5 <= hi < 8                     # holds every interval and chance, not 0-100
    segments = sorted(tuple(np.round(s[:, 0], 6)) for s in r1.collections[0].get_segments())
    assert segments == [(1.0, 3.0), (4.0, 6.5)]                  # whiskers = the intervals the tables print
    assert [(t.get_text(), t.get_position()[1]) for t in r1.get_yticklabels()] == [("Baseline", 1), (label, 0)]
    # full labels, the first row at the top
    assert r1.get_legend() is None and fig.legends               # the legend is the figure's, below the panels
    chance = [ln for ln in r1.get_lines() if ln.get_label() == figures.CHANCE_LABEL]
    assert chance and chance[0].get_xdata()[0] == 0.22
    assert ap.get_xlim()[1] < 2                                   # each panel its own span
    # the paper's values (real datasets) are drawn as well and widen the axis to hold them
    fig = figures.bars_figure(["A"], ["R1"], {"R1": [(70.0, 65.0, 75.0)]}, "this run (MARS)", "t",
                              paper={"R1": [80.8]}, paper_name="paper (MARS)")
    assert 62 < fig.axes[0].get_xlim()[0] < 65 and 80.8 < fig.axes[0].get_xlim()[1] <= 100
    figures.close(fig)


def test_cmc_figure_draws_the_chance_cmc():
    chance = np.linspace(1, 20, 20)
    fig = figures.cmc_figure({"A": np.linspace(10, 60, 20)}, "t", chance)
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == figures.CHANCE_LABEL)
    np.testing.assert_array_equal(line.get_ydata(), chance)
    figures.close(fig)


def test_attention_colour_scale_is_fixed_around_one_over_n():
    norm = figures.attention_norm(4)
    assert (norm(0.0), norm(0.25), norm(0.5), norm(0.9)) == pytest.approx((0.0, 0.5, 1.0, 1.0))
    assert norm(0.26) == pytest.approx(0.52)                      # a 0.01 deviation stays next to white
    fig = figures.attention_figure([{"query": 0, "pid": 1, "camid": 1, "frames": [],
                                     "scores": [[0.26, 0.24], [0.24, 0.26], [0.25, 0.25], [0.25, 0.25]]}], "t")
    assert "fixed scale (N = 4: 1/N = 0.25, 2/N = 0.5)" in fig._suptitle.get_text()
    figures.close(fig)


def test_report_states_where_the_runs_depart_from_their_profile():
    runs = pd.DataFrame({"tags.dataset": ["synthetic"] * 2, "params.data.synthetic_size": ["tiny"] * 2,
                         "params.train.epochs": ["2", "2"], "params.train.milestones": ["[15]", "[15]"],
                         "params.model.num_regions": ["2", "4"], "params.model.backbone": ["resnet18_narrow"] * 2,
                         "metrics.num_queries": [13.0, 13.0], "metrics.num_skipped_queries": [0.0, 0.0],
                         "metrics.gao_num_gallery": [14.0, 14.0]})
    assert what_ran.profile_differences(runs, "cpu") == [("model.num_regions", "2 / 4", "4"),
                                                          ("data.synthetic_size", "tiny", "occluded"),
                                                          ("train.epochs", "2", "20")]
    text = "\n".join(what_ran.profile_lines(runs, "cpu", "the occluded data, 10 epochs"))
    assert "**These runs depart from the profile `cpu`** in: model.num_regions = 2 / 4 (profile: 4), " \
           "data.synthetic_size = tiny (profile: occluded), train.epochs = 2 (profile: 20)." in text
    assert "Profile `cpu` as declared (`experiments/profiles.yaml`): the occluded data, 10 epochs" in text
    ran = "\n".join(what_ran.ran_lines(runs, ["synthetic"], [0]))
    assert "preset `tiny` (data.synthetic_size)" in ran and "test split 13 queries, gallery 14 (`gao`) tracklets" \
        in ran and "Training: 2 epochs" in ran and "Seeds: 0 (one seed)" in ran


def test_rerank_row_reports_reranked_metrics_and_literature_rows_are_quoted(store, tmp_path):
    tracking.configure(store["uri"])
    text = reporting.write_report(read_spec(spec_path("table4")), tracking.runs_frame("STA table4"), tmp_path,
                                  load_json=tracking.load_json, load_table=tracking.load_table).read_text()
    line = {ln.split("|")[1].strip(): ln for ln in text[:text.index("**Protocol `gao`")].splitlines()
            if ln.startswith("| ") and ln.split("|")[1].strip().isdigit()}
    sta, rerank, stan, stal = line["12"], line["15"], line["13"], line["14"]
    assert "| STA " in sta and "40.0" in sta and "45.0" in rerank and "87.2" not in rerank   # synthetic: no paper
    assert "STAN (this suite)" in stan and "35.0" in stan and "quoted" not in stan
    assert "STAL (this suite)" in stal and "38.0" in stal and "quoted" not in stal
    assert "11" not in line                           # a row quoted from the literature: in the paper's table only
    assert "57.5" in next(ln for ln in text[text.index("**Protocol `gao`"):].splitlines() if ln.startswith("| 15 "))
    assert "re-ranked set" in text and "11310" in text
    assert "preset `full_sta`" in text and "never gives it (A8)" in text and "placeholder" not in text
    qan = next(ln for ln in text.splitlines() if ln.startswith("| 4 "))
    assert "QAN" in qan and "73.7" in qan                         # the paper's table, as printed


def test_report_without_runs_shows_the_paper_only(tmp_path):
    import pandas as pd
    text = reporting.render(read_spec(spec_path("table5")), pd.DataFrame(), Path(tmp_path))
    assert "No finished runs yet" in text and "ETAP-Net" in text and "96.2" in text
    assert "DukeMTMC-VideoReID's released evaluation" in text and "non-interpolated" in text   # the spec's notes


def test_latest_used_run_wins_per_row_and_seed():
    import pandas as pd
    runs = pd.DataFrame({"run_id": ["old", "new", "reused"], "status": ["FINISHED"] * 3,
                         "start_time": pd.to_datetime([1, 2, 0], unit="s", utc=True),
                         "tags.used_at": [None, None, "3"], "tags.profile": ["cpu"] * 3,
                         "tags.dataset": ["synthetic"] * 3, "tags.row": ["A"] * 3, "tags.seed": ["0"] * 3})
    assert list(select.select_runs(runs)["run_id"]) == ["reused"]
    assert list(select.select_runs(runs.iloc[:2])["run_id"]) == ["new"]


def test_table2_report_draws_lines_over_n(store, tmp_path):
    tracking.configure(store["uri"])
    text = reporting.write_report(read_spec(spec_path("table2")), tracking.runs_frame("STA table2"), tmp_path,
                                  load_json=tracking.load_json).read_text()
    assert "![lines](figures/table2_cpu_synthetic_lines.png)" in text
    assert (tmp_path / "figures" / "table2_cpu_synthetic_lines.png").stat().st_size > 1000
    assert "| N=8 " in text.replace("  ", " ")


def test_seeds_give_one_job_per_row_and_seed():
    from core.tables import jobs
    spec = load_spec(spec_path("table3"), "cpu")
    todo = jobs(spec, [0, 1, 2])
    assert len(todo) == 9 and [j.cfg.train.seed for j in todo[:3]] == [0, 1, 2]
    assert len({config_hash(j.cfg) for j in todo}) == 9
    assert [j.seed for j in jobs(spec)] == [0, 0, 0]


def test_duke_report_states_its_released_evaluation_and_gives_gao_beside_it():
    import pandas as pd
    runs = pd.DataFrame({"tags.dataset": ["duke"], "params.data.gallery_with_queries": ["True"],
                         "params.eval.ap_rule": ["step"]})
    assert select.other_protocols(runs, ["duke"]) == ["gao"]
    text = "\n".join(what_ran.protocol_lines(runs, ["duke"], ["gao"]))
    assert "**headline** = `official`" in text and "`gallery/` as released, query tracklets included, " \
           "non-interpolated (step) AP" in text
    assert "**`gao`**" in text and "gallery without the query tracklets" in text
    mixed = pd.concat([runs, runs.assign(**{"params.eval.ap_rule": "trapezoid"})])   # a headline of neither
    assert select.other_protocols(mixed, ["duke"]) == ["official", "gao"]


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


# ---- issue 23: metric sections, old stores, artifacts beside the store, inert knobs, the table run's report ------

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
