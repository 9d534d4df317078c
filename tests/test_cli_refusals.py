"""Command-line refusals (issue 22): every bad flag or out-of-range value is one `error:` line, exit 2, before any
folder, store, checkpoint or report is written: float flags refuse NaN/inf, unbounded values (seeds, seed counts,
clip lengths) are capped, `--rows` takes ASCII row numbers, argparse's own refusals are one line too, and a report
path that is a folder is refused up front."""
from __future__ import annotations

import pytest

from core.cli import main, report_main, tune_main
from tests.helpers import error_line


@pytest.fixture
def refused(tmp_path, monkeypatch, capsys):
    """refused(command, *flags, expect=[...]): the command (table1 by default) exits 2 with one error line naming
    each of `expect`, and leaves nothing behind in the (empty) working folder."""
    monkeypatch.chdir(tmp_path)

    def check(*flags: str, expect: list[str], command=None) -> str:
        base = ["--rows", "1", "--epochs", "1", "--quiet", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
        rc = command(list(flags)) if command else main("table1", base + list(flags))
        assert rc == 2
        line = error_line(capsys.readouterr().err)
        for part in expect:
            assert part in line, f"{part!r} not in {line}"
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused command wrote something"
        return line
    return check


def exits(code_call) -> int:
    with pytest.raises(SystemExit) as info:
        code_call()
    return info.value.code


def test_float_flags_refuse_nan_and_inf(refused):
    for value in ("nan", "inf", "-inf", "NaN"):
        refused(f"--timeout={value}", "--n-trials", "1", command=lambda a: exits(lambda: tune_main(a)),
                expect=["--timeout", f"expected a finite number, got '{value}'"])
    refused("--timeout", "abc", command=lambda a: exits(lambda: tune_main(a)), expect=["expected a number"])


def test_argparse_refusals_are_one_line(refused):
    refused("--epochs", "x", command=lambda a: exits(lambda: main("table1", a)),
            expect=["argument --epochs: invalid int value: 'x'", "reproduce/table1.py --help"])
    refused("--no-such-flag", command=lambda a: exits(lambda: report_main(a)), expect=["unrecognized arguments"])


@pytest.mark.parametrize("seeds, expect", [
    ("4294967296", "--seeds count must be 1..1000, got 4294967296"),   # read as a count: was a MemoryError
    ("1001", "--seeds count must be 1..1000, got 1001"),
    ("0,4294967296", "seed 4294967296 is past 4294967295"),
])
def test_seed_counts_and_seeds_are_bounded(refused, seeds, expect):
    refused("--seeds", seeds, expect=[expect])


@pytest.mark.parametrize("key, value, expect", [
    ("train.seed", 2**64, f"key 'train.seed' is {2**64}; must be <= 4294967295"),
    ("train.seed", 2**32, "must be <= 4294967295"),
    ("data.seq_len", 1000, "key 'data.seq_len' is 1000; must be <= 64"),   # was killed by the kernel at 11 GB
    ("eval.seq_len", 65, "key 'eval.seq_len' is 65; must be <= 64"),
    ("data.synthetic_seed", 2**40, "must be <= 4294967295"),
])
def test_unbounded_config_values_are_refused(refused, key, value, expect):
    refused("--set", f"{key}={value}", expect=[expect])


def test_the_largest_allowed_values_pass_validation():
    """The bounds are inclusive: the maxima themselves are valid configs (no off-by-one refusal)."""
    from core.config import RunConfig, apply_overrides
    cfg = apply_overrides(RunConfig(), {"train.seed": 2**32 - 1, "data.seq_len": 64, "eval.seq_len": 64}, "test")
    assert cfg.train.seed == 2**32 - 1 and cfg.data.seq_len == 64


def test_rows_with_a_non_ascii_digit_name_the_flag(refused):
    line = refused("--rows", "²", expect=["--rows ²:", "no row '²'; rows are 1: Baseline"])
    assert "ValueError" not in line
    refused("--rows", "0", expect=["--rows 0:", "no row '0'"])


def test_a_report_path_that_is_a_folder_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports" / "table1.md").mkdir(parents=True)
    assert main("table1", ["--rows", "1", "--quiet", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    assert "the report path reports/table1.md is a folder" in error_line(capsys.readouterr().err)
    assert report_main(["table1", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    assert "reports/table1.md is a folder" in error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]      # no store, no runs folder
