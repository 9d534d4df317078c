"""Command line (core.cli, reproduce/tableN.py and report.py): values parse as users write them, and every bad
input gets one line naming it (exit 2) before anything trains or is written."""
from __future__ import annotations

import pytest
import torch

from core import tracking
from core.cli import main, parse_seeds, parse_set, report_main
from core.config import ConfigError, RunConfig, apply_overrides
from tests.helpers import write_mars


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("3E-4", 3e-4), (".5", 0.5), ("-2.5e-2", -0.025),
                                         ("1.0e5", 1e5), ("+1e+2", 100.0), ("1e3", 1000.0)])
def test_set_reads_numbers_as_users_write_them(text, value):
    parsed = parse_set([f"train.lr={text}"])["train.lr"]
    assert isinstance(parsed, float) and parsed == value
    if value >= 0:
        assert apply_overrides(RunConfig(), parse_set([f"train.lr={text}"])).train.lr == value


def test_set_keeps_ints_lists_booleans_and_strings():
    assert parse_set(["train.epochs=1_000", "train.milestones=[4, 8]", "model.fusion=false", "data.root=1e3dir",
                      "model.backbone=resnet18"]) == {"train.epochs": 1000, "train.milestones": [4, 8],
                                                       "model.fusion": False, "data.root": "1e3dir",
                                                       "model.backbone": "resnet18"}


def test_seed_and_set_parsing():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,5") == [0, 5] and parse_seeds(None) is None
    assert parse_set(["model.fusion=false", "train.milestones=[2, 4]"]) == {
        "model.fusion": False, "train.milestones": [2, 4]}


def test_set_with_broken_yaml_names_the_item():
    with pytest.raises(ConfigError) as err:
        parse_set(["train.epochs=2", "train.milestones=[1,"])
    assert str(err.value).startswith("--set 'train.milestones=[1,': not valid YAML (line 1, column")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [("-1,2", "seeds must be distinct integers >= 0"),
                                           ("0,0", "seeds must be distinct integers >= 0"),
                                           ("0", "count must be 1..1000, got 0"), ("a,b", "takes a count (3) or a list")])
def test_bad_seeds_are_refused(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_seeds(text)


def test_tracking_uri_schemes_are_the_ones_mlflow_has():
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    assert set(tracking.URI_SCHEMES) == set(_tracking_store_registry._registry) - {""}
    for ok in ("sqlite:///mlflow.db", "postgresql+psycopg2://u@h/db", "http://h:5000", "mlruns", "file:///tmp/x"):
        tracking.check_uri(ok)
    with pytest.raises(ConfigError, match=r"tracking URI 'foo://bar' .*unknown scheme 'foo'; allowed: sqlite, "):
        tracking.check_uri("foo://bar")


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys):
    """run_cli(*flags, expect=[...]): reproduce/table1.py with small settings in an empty folder must exit 2 with
    one line (besides MLflow's INFO lines when it creates a store) naming each of `expect`, and leave no checkpoint
    or report."""
    monkeypatch.chdir(tmp_path)

    def run(*flags: str, expect: list[str], table: str = "table1") -> None:
        base = ["--rows", "1", "--epochs", "1", "--quiet", "--work-dir", "runs", "--reports-dir", "reports",
                "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
        assert main(table, base + list(flags)) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if " INFO mlflow." not in line]   # a new store says so
        assert len(lines) == 1 and lines[0].startswith("error: ") and err.endswith("\n"), err
        for part in expect:
            assert part in err, f"{part!r} not in {err}"
        assert not (tmp_path / "runs").is_dir() and not (tmp_path / "reports").is_dir()
    return run


def test_bad_values_are_refused_in_one_line(run_cli):
    run_cli("--set", "train.lr=.nan", expect=["key 'train.lr' is nan; must be a finite number"])
    run_cli("--set", "train.lr=.inf", expect=["key 'train.lr' is inf; must be a finite number"])
    run_cli("--set", "train.milestones=[1,", expect=["--set 'train.milestones=[1,': not valid YAML"])
    run_cli("--set", "train.milestones=[4, 2]", expect=["key 'train.milestones' is [4, 2]; must be strictly"])
    run_cli("--set", "model.weights_path=/w.pth", "--set", "model.pretrained=false",
            expect=["'model.weights_path' is '/w.pth' but 'model.pretrained'"])
    run_cli("--set", "model.weights_path=/w.pth", expect=["'model.weights_path' is set but model.init is 'synthetic'"])
    run_cli("--seeds=-1,2", expect=["--seeds '-1,2': seeds must be distinct integers >= 0"])


def test_bad_outputs_tracking_uri_and_device_are_refused_before_any_run(run_cli, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    run_cli("--work-dir", "afile", expect=["--work-dir 'afile' is not a folder"])
    run_cli("--reports-dir", "afile/reports", expect=["--reports-dir 'afile/reports' lies under afile, which is not"])
    run_cli("--tracking-uri", "foo://bar", expect=["tracking URI 'foo://bar'", "unknown scheme 'foo'", "sqlite"])
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_cli("--device", "cuda", expect=["key 'train.device' is 'cuda' but this machine has no CUDA device"])
    run_cli("--device", "cuda:1", expect=["key 'train.device' is 'cuda:1' but this machine has no CUDA device"])


def test_broken_dataset_stops_the_table_in_one_line(run_cli, tmp_path):
    root = write_mars(tmp_path / "MARS")
    (root / "info" / "test_name.txt").write_bytes(b"\xff\xfe")
    run_cli("--dataset", "mars", "--data-root", str(root), "--set", "model.pretrained=false",   # cpu: synthetic stage
            expect=["test_name.txt: not UTF-8 text (byte 0xff"])


def test_report_refuses_a_reports_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert report_main(["--reports-dir", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_tune_report_continue_command_parses_back_to_the_same_study(tmp_path):
    """The tuning report's "continue" line (core.tuning.report.continue_command), read by the real tune parser,
    resolves to the same study (plan: spec, name, dataset, profile, config with every --set, storage, work dir)."""
    import shlex

    from core.cli import tune_parser, tune_plan
    from core.tuning.report import continue_command
    argv = ["--study-name", "lm9", "--set", "train.epochs=3", "--set", "train.milestones=[1, 2]", "--set",
            "model.fusion=false", "--device", "cpu", "--work-dir", str(tmp_path / "w d"), "--storage",
            str(tmp_path / "s.journal"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
            "--data-root", str(tmp_path / "data")]
    args = tune_parser().parse_args(argv)
    plan = tune_plan(args)
    words = shlex.split(continue_command(plan, args.tracking_uri))
    assert words[:2] == ["python", "reproduce/tune.py"]
    again = tune_parser().parse_args(words[2:])
    assert tune_plan(again) == plan and again.tracking_uri == args.tracking_uri
    without_set = words[2:words.index("--set")] + words[words.index("--work-dir"):]
    assert "--set" not in without_set and tune_plan(tune_parser().parse_args(without_set)) != plan   # they count
    # defaults: the line is as short as it always was
    default = tune_plan(tune_parser().parse_args([]))
    assert continue_command(default, "sqlite:///mlflow.db") == \
        "python reproduce/tune.py --study-name tune_lambda_margin --dataset synthetic --profile cpu"


def test_tuning_command_line_spec_and_report_need_no_optuna():
    """Only core.tuning.study, .trial and .figures import optuna (and only core.tracking mlflow): the tune command line, the study's
    resolution and the report's words load without either."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    code = ("import sys, core.cli, core.tuning.report, core.tuning.spec, core.tuning.compare; "
            "print(sorted(m for m in ('mlflow', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert out.stdout.strip() == "[]"
