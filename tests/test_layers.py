"""--show-config (core.layers) of reproduce/tableN.py and tune.py: each key's value is what a run resolves, the layer
named is the one that set it, nothing is trained or written; and the rule for overrides that restate a default."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from core.cli import main, table_parser, tune_main, tune_parser
from core.config import Dataset, RunConfig, apply_overrides, coerce, config_hash, to_flat_dict
from core.layers import (COMMAND_LINE, DEFAULT, PROFILE, ROW, Layer, restatements, settings, shown_value)
from core.specs import all_spec_paths, load_profiles, load_spec
from core.tuning.spec import plan_study

REPO = Path(__file__).resolve().parent.parent
KEY_LINE = re.compile(r"^  ([a-z]+\.[a-z0-9_]+) {2,}(\S.*?) {2,}(\S.*)$")      # "  key  value  set by"
PROFILES = sorted(load_profiles())


def shown_rows(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """--show-config output -> {row header: {key: (value, set by)}} (a header is a line not indented)."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    head = None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            head = line
            out[head] = {}
        elif head is not None and (m := KEY_LINE.match(line)):
            out[head][m[1]] = (m[2], m[3])
    return out


def show(table: str, *flags: str, capsys) -> dict[str, dict[str, tuple[str, str]]]:
    assert main(table, ["--show-config", *flags]) == 0
    return shown_rows(capsys.readouterr().out)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("path", all_spec_paths(), ids=lambda p: p.stem)
def test_shown_values_are_the_resolved_config_of_every_row(path, profile, capsys, tmp_path):
    """Every key of every run row, both profiles, synthetic and (paper profile) MARS: the printed value is the value
    of load_spec's config, and the layer named gives that value (or the dataclass default does)."""
    for dataset in ("synthetic", "mars") if profile == "paper" else ("synthetic",):
        flags = ["--profile", profile, "--dataset", dataset] + (["--data-root", str(tmp_path)] if dataset == "mars"
                                                                else [])
        printed = list(show(path.stem, *flags, capsys=capsys).values())
        spec = load_spec(path, profile=profile, dataset=dataset, data_root=str(tmp_path) if dataset == "mars" else None)
        assert len(printed) == len(spec.rows)
        defaults = to_flat_dict(RunConfig())
        for row, keys in zip(spec.rows, printed):
            if not row.run:
                assert keys == {}
                continue
            flat = to_flat_dict(row.config)
            assert {k: v for k, (v, _) in keys.items()} == {k: shown_value(v) for k, v in flat.items()}
            assert apply_overrides(RunConfig(), {k: v for layer in row.layers for k, v in layer.overrides.items()}) \
                == row.config                                   # the layers recorded are all there is, in order
            for s in settings(row.config, row.layers):
                layer = [la for la in row.layers if s.key in la.overrides]
                assert s.value == (defaults[s.key] if s.layer == DEFAULT else coerce(s.key, layer[-1].overrides[s.key]))
                assert s.layer == (layer[-1].name if layer else DEFAULT) and keys[s.key][1].startswith(s.layer)


def test_each_layer_is_named_for_a_key_it_sets(capsys):
    """Hand-checked: one key set at each layer, from the YAML files as they are."""
    t1 = show("table1", "--rows", "1", "--set", "train.lr=0.001", capsys=capsys)
    (row1,) = t1.values()
    assert row1["model.attention"] == ("energy", "default")
    assert row1["model.backbone"] == ("resnet18_narrow", "profile")                  # profiles.yaml, cpu
    assert row1["model.aggregation"] == ("frame", "row")
    assert row1["loss.reg_weight"] == ("0.0", "row (restates default)")             # kept: the knob Table 1 varies
    assert row1["train.lr"] == ("0.001", "command line")
    assert row1["data.dataset"] == ("synthetic", "command line")                    # --dataset's default
    assert row1["data.seq_len"] == ("4", "profile (restates default)")
    t3 = show("table3", "--rows", "K=8", "--set", "model.num_regions=2", "--epochs", "3", capsys=capsys)
    (k8,) = t3.values()
    assert k8["data.height"] == ("128", "table profile override")                   # profile_overrides.cpu
    assert k8["pretrain.epochs"] == ("30", "table profile override")
    assert k8["loss.reg_weight"] == ("1.0", "preset")                               # full_sta
    assert k8["model.num_regions"] == ("2", "command line")                         # --set beats the row's 8
    assert k8["train.epochs"] == ("3", "command line")
    (t5,) = show("table5", "--rows", "STA", "--profile", "paper", "--device", "cpu", capsys=capsys).values()
    assert t5["eval.ap_rule"] == ("step", "table base")
    assert t5["train.device"] == ("cpu", "command line")
    assert t5["data.num_workers"] == ("8", "profile")
    assert t5["pretrain.epochs"] == ("80", "default")


def test_seeds_and_the_config_hash_are_those_of_the_runs(capsys):
    assert main("table2", ["--show-config", "--rows", "N=2", "--seeds", "0,5"]) == 0
    out = capsys.readouterr().out
    (keys,) = shown_rows(out).values()
    assert keys["train.seed"] == ("0, 5", "command line (--seeds)")
    row = load_spec(REPO / "experiments" / "table2.yaml").rows[0]
    hashes = [config_hash(apply_overrides(row.config, {"train.seed": s})) for s in (0, 5)]
    assert f"config hash: {hashes[0]} (seed 0), {hashes[1]} (seed 5)" in out and hashes[0] != hashes[1]
    assert main("table2", ["--show-config", "--rows", "2"]) == 0
    assert f"config hash: {config_hash(load_spec(REPO / 'experiments' / 'table2.yaml').rows[1].config)} (seed 0)" \
        in capsys.readouterr().out


def test_a_quoted_row_has_no_config(capsys):
    shown = show("table4", "--rows", "1", "STA", capsys=capsys)
    heads = list(shown)
    assert heads[0].endswith("quoted from the literature (run: false), no config") and shown[heads[0]] == {}
    assert shown[heads[1]]["model.stal_parts"] == ("4", "table profile override")


def test_tune_shows_the_trials_base_config_and_the_searched_keys(capsys):
    assert tune_main(["--show-config", "--set", "train.lr=0.002"]) == 0
    out = capsys.readouterr().out
    (keys,) = shown_rows(out).values()
    plan = plan_study(overrides={"train.lr": 0.002})
    assert {k: v for k, (v, _) in keys.items()} == {k: shown_value(v) for k, v in to_flat_dict(plan.config).items()}
    assert keys["data.tracklets_per_id"] == ("2", "tune budget")                  # budgets.cpu
    assert keys["data.height"] == ("64", "tune budget (restates profile)")
    assert keys["train.lr"] == ("0.002", "command line")
    assert keys["loss.reg_weight"] == ("1.0", "searched 0.001..10, log scale, or 0 (reg off); baseline from preset")
    assert keys["loss.margin"] == ("0.3", "searched 0.1..0.6; baseline from default")
    assert f"config hash of the baseline (the 'defaults' test run): {config_hash(plan.config)}" in out


@pytest.mark.parametrize("command", [["reproduce/table1.py", "--rows", "1", "6", "--seeds", "2"],
                                     ["reproduce/table3.py", "--profile", "paper"],
                                     ["reproduce/tune.py"]])
def test_show_config_trains_nothing_and_writes_nothing(command, tmp_path):
    """In an empty folder (the default work dir, reports, MLflow store, synthetic data and Optuna journal all land
    there otherwise): exit 0, the table on stdout, no file, no torch, no MLflow, no Optuna."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    code = ("import runpy, sys; sys.argv = sys.argv[1:]\ntry:\n runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n heavy = [m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules]\n"
            " print('exit', e.code, heavy, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / command[0]), *command[1:], "--show-config"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.stderr.strip().splitlines()[-1] == "exit 0 []", out.stderr
    assert "config hash" in out.stdout and "  model.aggregation " in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_bad_rows_with_show_config_is_still_one_error_line(capsys):
    assert main("table1", ["--show-config", "--rows", "7"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: --rows 7: ") and "no row '7'" in captured.err


def test_restatements_compare_values_as_the_config_holds_them():
    layers = [Layer(PROFILE, {"data.height": 64, "train.milestones": [200, 400], "train.lr": 3e-4}),
              Layer(ROW, {"data.height": 64, "loss.margin": 1, "train.epochs": 800, "eval.rerank": True}),
              Layer(COMMAND_LINE, {"eval.rerank": True, "loss.margin": 0.5})]
    found = {(r.layer.name, r.key, r.below) for r in restatements(layers)}
    assert found == {(PROFILE, "train.milestones", DEFAULT), (PROFILE, "train.lr", DEFAULT),
                     (ROW, "data.height", PROFILE), (ROW, "train.epochs", DEFAULT),
                     (COMMAND_LINE, "eval.rerank", ROW)}               # margin 1 is not 0.3, 0.5 is not 1


@pytest.mark.parametrize("profile", PROFILES)
def test_a_row_restates_only_a_knob_its_table_varies(profile):
    """experiments/README.md, "What a file states": an override that repeats the layers below it is kept on a row
    only for a knob the table's run rows set to different values (so each row reads on its own)."""
    for path in all_spec_paths():
        spec = load_spec(path, profile=profile)
        for row in spec.run_rows:
            for r in restatements(row.layers):
                if r.layer.name == ROW:
                    values = {repr(to_flat_dict(other.config)[r.key]) for other in spec.run_rows}
                    assert len(values) > 1, (f"{path.name}, row '{row.label}': {r.key} = {r.value!r} restates "
                                             f"the {r.below} and no other row changes it: drop it")


def test_dataset_and_profile_choices_come_from_their_definitions():
    for parser in (table_parser("table1"), tune_parser()):
        flags = {a.dest: a for a in parser._actions}
        assert tuple(flags["dataset"].choices) == typing.get_args(Dataset)
        assert sorted(flags["profile"].choices) == PROFILES
