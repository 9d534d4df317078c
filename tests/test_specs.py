"""Specs: every experiments/tableN.yaml validates for every profile and dataset; bad specs are refused on load
with a message naming the file, the row and the key."""
from __future__ import annotations

import re
import textwrap

import pytest

from core.config import ConfigError, config_hash
from core.record import METRICS
from core.specs import (all_spec_paths, load_profiles, load_spec, read_spec, select_rows)

SPECS = all_spec_paths()
PROFILES = sorted(load_profiles())


def test_there_is_one_spec_per_paper_table():
    assert [p.stem for p in SPECS] == ["table1", "table2", "table3", "table4", "table5"]
    assert {"paper", "cpu"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("dataset", ["synthetic", "mars", "duke"])
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_validates(path, profile, dataset, tmp_path):
    root = None if dataset == "synthetic" else str(tmp_path)
    if profile == "cpu" and dataset != "synthetic":     # its pretraining stage is synthetic-only: one clear refusal
        with pytest.raises(ConfigError, match="model.init' is 'synthetic' but data.dataset is"):
            load_spec(path, profile=profile, dataset=dataset, data_root=root)
        spec = load_spec(path, profile=profile, dataset=dataset, data_root=root,
                         overrides={"model.pretrained": False})
    else:
        spec = load_spec(path, profile=profile, dataset=dataset, data_root=root)
    assert spec.run_rows, "every table runs at least one row"
    for row in spec.rows:
        assert row.paper, f"{row.label} has paper numbers"
        for numbers in row.paper.values():
            assert set(numbers) == set(spec.metrics) and set(spec.metrics) <= set(METRICS)
        if row.run:
            assert row.config.data.dataset == dataset
    assert len({r.label for r in spec.rows}) == len(spec.rows)


def test_table1_rows_map_to_the_components():
    rows = {r.label: r.config for r in load_spec(SPECS[0], "cpu").rows}
    base, tl, avg = rows["Baseline"], rows["Baseline + TL"], rows["Baseline + TL + Avg"]
    sta, fusion, reg = (rows["Baseline + TL + STA"], rows["Baseline + TL + STA + Fusion"],
                        rows["Baseline + TL + STA + Fusion + Reg"])
    assert (base.model.aggregation, base.loss.triplet, base.loss.reg_weight) == ("frame", False, 0.0)
    assert (tl.model.aggregation, tl.loss.triplet) == ("frame", True)
    assert avg.model.aggregation == "avg"
    assert (sta.model.aggregation, sta.model.fusion, sta.loss.reg_weight) == ("sta", False, 0.0)
    assert (fusion.model.fusion, fusion.loss.reg_weight) == (True, 0.0)
    assert reg.model.fusion and reg.loss.reg_weight > 0


def test_table2_rows_share_one_trained_model_and_table4_rerank_reuses_sta():
    train_sections = ("data", "model", "loss", "train")
    t2 = load_spec(SPECS[1], "paper").run_rows
    assert [r.config.eval.seq_len for r in t2] == [2, 4, 6, 8]
    assert len({config_hash(r.config, train_sections) for r in t2}) == 1
    assert len({config_hash(r.config) for r in t2}) == 4
    assert all(r.config.data.seq_len == 4 and r.config.model.num_regions == 4 for r in t2)
    t4 = {r.label: r for r in load_spec(SPECS[3], "paper").rows}
    sta, rr = t4["STA"].config, t4["STA + ReRank"].config
    assert config_hash(sta, train_sections) == config_hash(rr, train_sections) and rr.eval.rerank
    assert sum(not r.run for r in t4.values()) == 11


def test_cli_layer_wins_and_rows_select_by_label_or_index():
    spec = load_spec(SPECS[0], "cpu", overrides={"train.epochs": 1, "model.backbone": "resnet34"})
    assert all(r.config.train.epochs == 1 and r.config.model.backbone == "resnet34" for r in spec.run_rows)
    chosen = select_rows(spec, ["Baseline", "3"])
    assert [r.label for r in chosen.rows] == ["Baseline", "Baseline + TL + Avg"]
    with pytest.raises(ConfigError, match="no row 'nope'; rows are 1: Baseline"):
        select_rows(spec, ["nope"])


GOOD_ROW = """
  - label: Row A
    overrides: {model.aggregation: sta}
    paper:
      mars: {R1: 1.0, mAP: 2.0}
"""


def _write(tmp_path, body: str, name: str = "bad.yaml"):
    path = tmp_path / name
    path.write_text("table: tableX\ntitle: test\nmetrics: [R1, mAP]\nrows:\n" + textwrap.dedent(body))
    return path


BAD = {
    "unknown key": ("""
  - label: Row A
    overrides: {model.fusoin: true}
    paper: {mars: {R1: 1.0, mAP: 2.0}}
""", ["bad.yaml", "Row A", "model.fusoin", "model.fusion"]),
    "unknown row key": ("""
  - label: Row A
    overides: {model.fusion: true}
    paper: {mars: {R1: 1.0, mAP: 2.0}}
""", ["bad.yaml", "Row A", "overides", "allowed: label, overrides"]),
    "wrong type": ("""
  - label: Row A
    overrides: {model.fusion: "yes please"}
    paper: {mars: {R1: 1.0, mAP: 2.0}}
""", ["bad.yaml", "Row A", "model.fusion", "true or false"]),
    "K too large": ("""
  - label: Row A
    overrides: {model.num_regions: 16}
    paper: {mars: {R1: 1.0, mAP: 2.0}}
""", ["bad.yaml", "Row A", "model.num_regions", "K must be <= 4"]),
    "N < 1": ("""
  - label: Row A
    overrides: {eval.seq_len: 0}
    paper: {mars: {R1: 1.0, mAP: 2.0}}
""", ["bad.yaml", "Row A", "eval.seq_len", ">= 1"]),
    "missing paper numbers": ("""
  - label: Row A
    overrides: {model.fusion: true}
""", ["bad.yaml", "Row A", "paper", "required"]),
    "incomplete paper numbers": ("""
  - label: Row A
    paper: {mars: {R1: 1.0}}
""", ["bad.yaml", "Row A", "paper.mars", "mAP"]),
    "duplicate label": (GOOD_ROW + GOOD_ROW, ["bad.yaml", "row 2", "duplicate label 'Row A'"]),
    "bad choice": ("""
  - label: Row A
    overrides: {model.aggregation: max}
    paper: {mars: {R1: 1.0, mAP: 2.0}}
""", ["bad.yaml", "Row A", "model.aggregation", "frame, avg, sta"]),
    "non-finite number": ("""
  - label: Row A
    overrides: {loss.margin: .nan}
    paper: {mars: {R1: 1.0, mAP: 2.0}}
""", ["bad.yaml", "Row A", "loss.margin", "is nan; must be a finite number"]),
    "infinite number": ("""
  - label: Row A
    overrides: {train.lr: -.inf}
    paper: {mars: {R1: 1.0, mAP: 2.0}}
""", ["bad.yaml", "Row A", "train.lr", "is -inf; must be a finite number"]),
    "YAML syntax": ("""
  - label: Row A
    overrides: {train.milestones: [1, }
""", ["bad.yaml: not valid YAML (line 7, column 37: expected the node content, but found '}')"]),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_spec_is_refused_naming_file_row_and_key(case, tmp_path):
    body, expected = BAD[case]
    with pytest.raises(ConfigError) as err:
        load_spec(_write(tmp_path, body), profile="cpu")  # cpu: 64-pixel frames -> 4-row maps
    for part in expected:
        assert part in str(err.value), f"{part!r} not in {err.value}"
    assert "\n" not in str(err.value)


def test_numbers_in_specs_read_as_users_write_them(tmp_path):
    path = _write(tmp_path, """
  - label: Row A
    overrides: {train.lr: 1e-3, train.weight_decay: 5E-4, loss.margin: .5, train.epochs: 1_000}
    paper: {mars: {R1: 1.0, mAP: 2.0}}
""")
    cfg = load_spec(path, profile="cpu").rows[0].config
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.loss.margin, cfg.train.epochs) == (1e-3, 5e-4, 0.5, 1000)


def test_missing_or_absent_dataset_root_is_refused(tmp_path):
    path = _write(tmp_path, GOOD_ROW)
    with pytest.raises(ConfigError, match=r"bad.yaml, row 1 'Row A'.*'data.root' is required"):
        load_spec(path, profile="paper", dataset="mars")
    with pytest.raises(ConfigError, match=r"bad.yaml, row 1 'Row A'.*'data.root' is '/no/such/folder'"):
        load_spec(path, profile="paper", dataset="duke", data_root="/no/such/folder")


def test_bad_top_level_key_and_unknown_profile(tmp_path):
    path = tmp_path / "top.yaml"
    path.write_text("table: t\ntitle: t\nmetrics: [R1]\nrowz: []\nrows: []\n")
    with pytest.raises(ConfigError, match="top.yaml: unknown key 'rowz'"):
        read_spec(path)
    with pytest.raises(ConfigError, match="unknown profile 'gpu'; allowed: paper, cpu"):
        load_spec(_write(tmp_path, GOOD_ROW), profile="gpu")


def test_figure_kind_is_read_from_the_spec_and_bad_ones_are_refused(tmp_path):
    from core.specs import Figure
    assert [read_spec(p).figure for p in SPECS[:3]] == [
        Figure("bars"), Figure("lines", "eval.seq_len", "test sequence length N"),
        Figure("lines", "model.num_regions", "number of regions K")]
    head = "table: t\ntitle: t\nmetrics: [R1]\nrows: [{label: A, paper: {mars: {R1: 1.0}}}]\n"
    for figure, message in [("{kind: pie}", "key 'kind' is 'pie'; allowed: bars, lines"),
                            ("{kind: lines, x: eval.nope, label: N}", "kind 'lines' needs 'x'"),
                            ("{kind: bars, x: eval.seq_len}", "keys 'x' and 'label' are for kind 'lines' only")]:
        (tmp_path / "f.yaml").write_text(head + f"figure: {figure}\n")
        with pytest.raises(ConfigError, match=re.escape(f"f.yaml, figure: {message}")):
            read_spec(tmp_path / "f.yaml")


def test_full_sta_is_written_once_with_its_lambda_and_reason():
    from core.specs import EXPERIMENTS, load_presets
    full = load_presets()["full_sta"]
    assert full.overrides["loss.reg_weight"] == 1.0 and "placeholder" not in full.deviation
    assert "never gives it (A8)" in full.deviation and "loss_reg_weighted" in full.deviation
    assert not any("reg_weight: 1" in p.read_text() for p in SPECS)      # lambda lives in presets.yaml only
    assert "placeholder" not in "".join(p.read_text() for p in EXPERIMENTS.glob("*.yaml"))
    sections = ("model", "loss")
    t1 = {r.label: r for r in load_spec(SPECS[0], "paper").rows}["Baseline + TL + STA + Fusion + Reg"]
    assert t1.preset == full and full.deviation in t1.full_deviation
    for path in SPECS[1:]:
        for row in load_spec(path, "paper").run_rows:
            assert row.preset is not None and row.preset.name == "full_sta", (path.stem, row.label)
            if row.label.endswith("(this suite)"):  # Table 4's STAN and STAL: another aggregation, STA's Reg off
                assert path.stem == "table4" and row.config.model.aggregation in ("stan", "stal")
                assert row.config.loss.reg_weight == 0.0 and row.config.data == t1.config.data
                continue
            same = {k: getattr(row.config, k) for k in sections} == {k: getattr(t1.config, k) for k in sections}
            assert same or path.stem == "table3", (path.stem, row.label)   # Table 3 changes K only
            assert row.config.loss.reg_weight == 1.0


def test_table5_headline_is_dukes_released_evaluation(tmp_path):
    from core.protocols import headline_name
    spec = load_spec(SPECS[4], "paper", dataset="duke", data_root=str(tmp_path))
    cfg = spec.run_rows[0].config
    assert cfg.eval.ap_rule == "step"
    assert headline_name("duke", cfg.data.gallery_with_queries, cfg.eval.ap_rule) == "official"
    assert "released evaluation" in spec.notes and "non-interpolated" in spec.notes


def test_unknown_preset_and_preset_on_a_quoted_row_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"bad.yaml, row 1 'Row A': key 'preset' is 'full'; allowed: full_sta"):
        load_spec(_write(tmp_path, GOOD_ROW + "    preset: full\n"), profile="cpu")
    quoted = """
  - label: Quoted
    run: false
    preset: full_sta
    paper: {mars: {R1: 1.0, mAP: 2.0}}
"""
    with pytest.raises(ConfigError, match="key 'preset' given on a row with run: false"):
        load_spec(_write(tmp_path, GOOD_ROW + quoted), profile="cpu")
