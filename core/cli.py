"""Command line of reproduce/tableN.py, reproduce/report.py and reproduce/tune.py (argument parsing only; the work is
in core.tables and core.tuning.run). The flags both pipelines share (dataset, profile, device; --set, stores, folders)
are added by add_data_flags and add_store_flags. The pipelines are imported inside the commands, after the flags are
parsed and checked: `--help`, `--show-config` and a bad flag answer without loading torch, mlflow or optuna
(tests/test_cli.py, tests/test_layers.py)."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import typing
from pathlib import Path
from typing import Any, Sequence

from core.config import SEED_MAX, ConfigError, Dataset
from core.endpoints import shown
from core.layers import show_plan, show_spec
from core.specs import all_spec_paths, load_profiles, load_spec, parse_yaml, select_rows, spec_path

MAX_SEED_COUNT = 1000     # --seeds N runs every row N times: more is a typo (4294967296 took all memory)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose refusals are one line (``error: ...``, exit 2) instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def finite_float(text: str) -> float:
    """argparse type of every float flag: a finite number (NaN and inf are refused, as for config keys)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def parse_seeds(text: str | None) -> list[int] | None:
    """'3' -> [0, 1, 2] (that many seeds); '0,5,7' -> [0, 5, 7]; None -> the config's seed. Seeds are >= 0."""
    if text is None:
        return None
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--seeds takes a count (3) or a list (0,1,2), got {text!r}") from None
    if not values:
        raise ConfigError(f"--seeds takes a count (3) or a list (0,1,2), got {text!r}")
    if len(values) == 1 and "," not in text:
        if not 1 <= values[0] <= MAX_SEED_COUNT:
            raise ConfigError(f"--seeds count must be 1..{MAX_SEED_COUNT}, got {values[0]} (a list such as "
                              f"'{values[0]},' names that one seed)")
        return list(range(values[0]))
    if min(values) < 0 or len(set(values)) != len(values):
        raise ConfigError(f"--seeds {text!r}: seeds must be distinct integers >= 0")
    if max(values) > SEED_MAX:
        raise ConfigError(f"--seeds {text!r}: seed {max(values)} is past {SEED_MAX} (seeds are 32-bit)")
    return values


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """['model.fusion=false', 'train.milestones=[4, 8]'] -> {'model.fusion': False, ...} (values read as YAML)."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (e.g. model.fusion=false), got {item!r}")
        out[key.strip()] = parse_yaml(value, f"--set {item!r}")
    return out


def check_output_dir(flag: str, path: str | Path) -> None:
    """Refuse, before anything runs, an output folder that is a file, lies under a file or cannot be written."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        what = "is not a folder" if existing == path else f"lies under {existing}, which is not a folder"
        raise ConfigError(f"{flag} {str(path)!r} {what}; expected a folder (it is created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {str(path)!r}: {existing} is not writable")


def check_report_target(reports_dir: str | Path, table: str) -> None:
    """Refuse, before anything runs, a report path (<reports-dir>/<table>.md) that is a folder."""
    target = Path(reports_dir) / f"{table}.md"
    if target.is_dir():
        raise ConfigError(f"--reports-dir {str(reports_dir)!r}: the report path {target} is a folder; expected a "
                          f"file (move the folder away)")


def add_data_flags(ap: argparse.ArgumentParser, profile_help: str) -> None:
    """What every pipeline command (tables, tuning) runs on: --dataset, --data-root, --profile, --device."""
    ap.add_argument("--dataset", default="synthetic", choices=typing.get_args(Dataset))
    ap.add_argument("--data-root", help="dataset folder (required for mars/duke; synthetic: where it is generated)")
    ap.add_argument("--profile", default="cpu", choices=sorted(load_profiles()), help=profile_help)
    ap.add_argument("--device", help="train.device: auto | cpu | cuda | cuda:<i> (default: the profile's, auto)")


SHOW_CONFIG_HELP = ("print every config key of %s: its value and the layer that set it (default, profile, table "
                    "profile override, preset, table base, row%s, command line), and the config hash; then exit "
                    "without training or writing anything")


def add_store_flags(ap: argparse.ArgumentParser, set_help: str, work_dir_help: str,
                    reports_dir_help: str | None = None) -> None:
    """Config overrides and where every pipeline command writes: --set, --tracking-uri, --work-dir, --reports-dir."""
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ap.add_argument("--work-dir", default="runs", help=work_dir_help)
    ap.add_argument("--reports-dir", default="reports", help=reports_dir_help)


def table_parser(table: str) -> argparse.ArgumentParser:
    ap = OneLineParser(
        prog=f"reproduce/{table}.py",
        description=f"Train and evaluate every row of the STA paper's {table} (spec experiments/{table}.yaml), "
                    f"log to MLflow, write reports/{table}.md. Without flags: synthetic data, cpu profile.",
        epilog="Multi-GPU: torchrun --nproc_per_node=G reproduce/%s.py --device cuda ... (rank 0 logs)." % table)
    add_data_flags(ap, "experiments/profiles.yaml: paper (the paper's recipe, GPU) or cpu (small, fast)")
    ap.add_argument("--rows", nargs="+", metavar="ROW", help="row labels or 1-based indices (default: all rows)")
    ap.add_argument("--seeds", help="number of seeds (3 -> 0,1,2) or a list (0,5,7)")
    ap.add_argument("--epochs", type=int, help="train.epochs (milestones are kept as the profile sets them)")
    add_store_flags(ap, "any config key, e.g. --set loss.reg_weight=0.5 (highest precedence; repeatable)",
                    "checkpoints (default: ./runs)", "markdown reports and figures (default: ./reports)")
    ap.add_argument("--force", action="store_true", help="retrain rows that already have a finished run")
    ap.add_argument("--show-config", action="store_true", help=SHOW_CONFIG_HELP % ("each selected row", ""))
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.device:
        out["train.device"] = args.device
    if args.epochs is not None:
        out["train.epochs"] = args.epochs
    out.update(parse_set(args.overrides))
    return out


def main(table: str, argv: Sequence[str] | None = None) -> int:
    """reproduce/<table>.py: run the table, print where the report is; exit 1 if a row failed, 2 on bad input."""
    args = table_parser(table).parse_args(argv)
    t0 = time.perf_counter()
    from core import interrupt
    interrupt.install()
    try:
        seeds = parse_seeds(args.seeds)
        if not args.show_config:        # it writes nothing
            check_output_dir("--work-dir", args.work_dir)
            check_output_dir("--reports-dir", args.reports_dir)
            check_report_target(args.reports_dir, table)
        spec = load_spec(spec_path(table), profile=args.profile, dataset=args.dataset, data_root=args.data_root,
                         overrides=cli_overrides(args))
        try:
            spec = select_rows(spec, args.rows)
        except ConfigError as e:
            raise ConfigError(f"--rows {' '.join(args.rows)}: {e}") from None
        if args.show_config:
            print(show_spec(spec, seeds), end="")
            return 0
        from core.tables import run_table
        out = run_table(spec, seeds=seeds, work_dir=args.work_dir, force=args.force,
                        tracking_uri=args.tracking_uri, reports_dir=args.reports_dir, progress=not args.quiet)
    except ValueError as e:     # ConfigError, DatasetError: bad input, named in one line
        print(f"error: {shown(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        interrupt.clear()
        print(f"interrupted (Ctrl+C): finished rows are in the MLflow store, the interrupted row's last checkpoint "
              f"is kept under {args.work_dir}/ (its runs are marked KILLED); run the same command again to resume",
              file=sys.stderr)
        return 130
    if out.report is None:       # a non-zero torchrun rank
        return 0
    print(f"{table}: {len(out.trained)} run(s) trained/evaluated, {len(out.reused)} reused, "
          f"{len(out.failed)} failed in {time.perf_counter() - t0:.0f} s")
    for failure in out.failed:
        print(f"  failed: {shown(failure)}", file=sys.stderr)
    print(f"report: {out.report}")
    return 1 if out.failed else 0


def report_main(argv: Sequence[str] | None = None) -> int:
    """reproduce/report.py: rebuild every report from the tracking store, no training."""
    ap = OneLineParser(prog="reproduce/report.py",
                                 description="Rebuild reports/*.md and figures from the MLflow store (no training).")
    ap.add_argument("tables", nargs="*", help="tables to rebuild (default: all specs in experiments/)")
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ap.add_argument("--reports-dir", default="reports")
    args = ap.parse_args(argv)
    from core.tables import KeptReport, rebuild_report
    try:
        check_output_dir("--reports-dir", args.reports_dir)
        paths = [spec_path(t) for t in args.tables] if args.tables else all_spec_paths()
        for path in paths:
            check_report_target(args.reports_dir, Path(path).stem)
        for path in paths:
            try:
                print(rebuild_report(path, args.reports_dir, args.tracking_uri, create=False))
            except KeptReport as kept:
                print(shown(str(kept)))
    except ConfigError as e:
        print(f"error: {shown(str(e))}", file=sys.stderr)
        return 2
    return 0


# ---- reproduce/tune.py ---------------------------------------------------------------------------------------

def tune_parser() -> argparse.ArgumentParser:
    from core.tuning.spec import DEFAULT_SPEC
    ap = OneLineParser(
        prog="reproduce/tune.py",
        description="Optuna study of lambda (loss.reg_weight) and the triplet margin (loss.margin) on a validation "
                    "split of the training identities; the best values and the defaults are then evaluated once on "
                    "the test split; writes reports/<study>.md. Without flags: synthetic data, cpu profile.",
        epilog="Several workers on one study: run the same command with the same --study-name and --no-test in N "
               "shells (the default journal file is shared by local processes) or on N machines with a shared "
               "--storage postgresql://... / mysql://...; each stops when the study holds --n-trials trials. Then "
               "run it once with --n-trials 0 to evaluate the best values on the test split and write the report.")
    ap.add_argument("--spec", default=str(DEFAULT_SPEC), help="search-space spec (default: %(default)s)")
    add_data_flags(ap, "experiments/profiles.yaml profile (default: cpu); the spec's budgets.<profile> applies")
    ap.add_argument("--n-trials", type=int, help="the study's total number of trials (default: the spec's budget); "
                                                 "0: only evaluate and report")
    ap.add_argument("--timeout", type=finite_float, help="seconds of search in this invocation (default: the spec's "
                                                  "budget; 0: no limit)")
    ap.add_argument("--study-name", help="default: the spec's study (+ _<dataset>_<profile> off synthetic/cpu)")
    ap.add_argument("--storage", help="sqlite:///PATH, postgresql://..., mysql://... or PATH.journal "
                                      "(default: <work-dir>/optuna/<study>.journal)")
    add_store_flags(ap, "any config key except loss.reg_weight / loss.margin (repeatable)",
                    "checkpoints and the default journal (default: ./runs)")
    ap.add_argument("--no-test", action="store_true", help="workers: no test runs, no report")
    ap.add_argument("--show-config", action="store_true",
                    help=SHOW_CONFIG_HELP % ("the trials' base config", ", tune budget; searched keys marked"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars, no per-trial log lines")
    return ap


def tune_plan(args: argparse.Namespace):
    """The study (core.tuning.spec.Plan) that parsed tune flags identify; ConfigError on bad input."""
    from core.tuning.spec import plan_study
    overrides = parse_set(args.overrides)
    if args.device:
        overrides["train.device"] = args.device
    return plan_study(args.spec, profile=args.profile, dataset=args.dataset, data_root=args.data_root,
                      overrides=overrides, study_name=args.study_name, storage=args.storage,
                      n_trials=args.n_trials, timeout=args.timeout, work_dir=args.work_dir)


def tune_main(argv: Sequence[str] | None = None) -> int:
    """reproduce/tune.py: run or continue a study, print where the report is; exit 2 on bad input."""
    args = tune_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        if not args.show_config:        # it writes nothing
            check_output_dir("--work-dir", args.work_dir)
            check_output_dir("--reports-dir", args.reports_dir)
        plan = tune_plan(args)
        if args.show_config:
            print(show_plan(plan), end="")
            return 0
        from core.tuning.run import run_study
        out = run_study(plan, tracking_uri=args.tracking_uri, reports_dir=args.reports_dir,
                        evaluate_test=not args.no_test, progress=not args.quiet)
    except ValueError as e:             # ConfigError, DatasetError, ValidationSplitError
        print(f"error: {shown(str(e))}", file=sys.stderr)
        return 2
    from core.tuning.compare import best_record
    from core.tuning.spec import lambda_margin
    from core.tuning.study import trial_records
    best = best_record(trial_records(out.study))
    print(f"study {plan.study_name} ({plan.storage_shown}): {out.new_trials} new trial(s), "
          f"{len(out.study.trials)} in all, in {time.perf_counter() - t0:.0f} s")
    if best is not None:
        lam, margin = lambda_margin(best["params"])
        print(f"best: trial {best['number']}, lambda {lam:.4g}, margin {margin:.3f}, val mAP {best['value']:.2f}%")
    for label, res in out.test.items():
        print(f"test ({res['dataset']}), {label}: lambda {res['lambda']:.4g}, margin {res['margin']:.3f}: "
              + ", ".join(f"{k} {v:.1f}" for k, v in res["metrics"].items()))
    if out.report:
        print(f"report: {out.report}")
    return 0


# ---- reproduce/pretrain.py -----------------------------------------------------------------------------------

def pretrain_main(argv: Sequence[str] | None = None) -> int:
    """reproduce/pretrain.py: run (or find in the cache) the pretraining stage of a profile, log it to MLflow, print
    where its weights are; exit 2 on bad input."""
    ap = argparse.ArgumentParser(
        prog="reproduce/pretrain.py",
        description="The one-time pretraining stage of model.init=synthetic (the cpu profile's stand-in for ImageNet "
                    "weights): Avg + TL on synthetic identities disjoint from every split, cached under "
                    ".cache/pretrain_<hash>/ and logged as a run of the MLflow experiment 'STA pretraining'. Every "
                    "table and tune.py runs it first on their own; this command runs it alone.")
    ap.add_argument("--profile", default="cpu", choices=sorted(load_profiles()))
    ap.add_argument("--device", help="train.device: auto | cpu | cuda | cuda:<i> (default: the profile's, auto)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="any config key, e.g. --set pretrain.epochs=4 (repeatable)")
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        from core.config import RunConfig, apply_overrides, uses_pretraining
        overrides = {**load_profiles()[args.profile], **parse_set(args.overrides)}
        if args.device:
            overrides["train.device"] = args.device
        cfg = apply_overrides(RunConfig(), overrides, f"profile '{args.profile}' with --set")
        if not uses_pretraining(cfg):
            raise ConfigError(f"profile '{args.profile}' does not start from the pretraining stage (model.pretrained "
                              f"{cfg.model.pretrained}, model.init {cfg.model.init!r}); nothing to do")
        from core import pretraining, tracking
        tracking.configure(args.tracking_uri)
        done = pretraining.ensure_logged(cfg, progress=not args.quiet)
    except ValueError as e:            # ConfigError, DatasetError: bad input, named in one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    how = "trained" if done.stage.trained else "found in the cache"
    print(f"pretraining stage {done.stage.hash}: {how} in {time.perf_counter() - t0:.0f} s; weights: "
          f"{done.stage.path}; MLflow run {done.run_id} (experiment 'STA pretraining')")
    return 0
