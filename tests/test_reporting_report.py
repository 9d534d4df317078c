"""Reports without training (core/reporting/): fake runs joined with the specs into markdown (mean ± std over seeds,
intervals, synthetic beside chance, the paper beside paper datasets, re-ranked rows, protocols, profile departures)."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from core import tracking
from core.reporting import cells, select, what_ran
from core.reporting import report as reporting
from core.specs import read_spec, spec_path
from tests.helpers import fake_tables_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (tests.helpers.fake_tables_store)."""
    return fake_tables_store(tmp_path_factory.mktemp("store"))


def _table_lines(text: str, caption: str) -> list[str]:
    """The markdown table right after the paragraph starting with `caption`."""
    part = text[text.index(caption):].split("\n\n")
    return [ln for ln in part[1].splitlines() if ln.startswith("|")]


def test_timing_metrics_renamed_and_old_runs_still_read():
    from core.engine.training import EpochStats
    stats = EpochStats(epoch=0, iterations=1, ce=1.0, triplet=0.0, reg=0.0, total=1.0, train_acc=0.5, lr=1e-3,
                       frames_per_s=10.0, seconds=2.5)
    assert stats.metrics()["epoch_wall_s"] == 2.5 and "seconds" not in stats.metrics()
    old = pd.Series({"metrics.train_wall_s": float("nan"), "metrics.train_seconds": 7.0})   # logged before issue 13
    new = pd.Series({"metrics.train_wall_s": 3.0, "metrics.train_seconds": float("nan")})
    assert cells.logged_metric(old, "train_wall_s") == 7.0 and cells.logged_metric(new, "train_wall_s") == 3.0
    assert cells.logged_metric(pd.Series({"metrics.R1": 1.0}), "train_wall_s") is None


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
