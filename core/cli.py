"""Command line of reproduce/tableN.py and reproduce/report.py (argument parsing only; the work is in core.tables)."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

import yaml

from core.config import ConfigError
from core.specs import all_spec_paths, load_profiles, load_spec, select_rows, spec_path


def parse_seeds(text: str | None) -> list[int] | None:
    """'3' -> [0, 1, 2] (that many seeds); '0,5,7' -> [0, 5, 7]; None -> the config's seed."""
    if text is None:
        return None
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,1,2), got {text!r}") from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise argparse.ArgumentTypeError(f"--seeds count must be >= 1, got {values[0]}")
        return list(range(values[0]))
    return values


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """['model.fusion=false', 'train.milestones=[4, 8]'] -> {'model.fusion': False, ...} (values read as YAML)."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (e.g. model.fusion=false), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def table_parser(table: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=f"reproduce/{table}.py",
        description=f"Train and evaluate every row of the STA paper's {table} (spec experiments/{table}.yaml), "
                    f"log to MLflow, write reports/{table}.md. Without flags: synthetic data, cpu profile.",
        epilog="Multi-GPU: torchrun --nproc_per_node=G reproduce/%s.py --device cuda ... (rank 0 logs)." % table)
    ap.add_argument("--dataset", default="synthetic", choices=["synthetic", "mars", "duke"])
    ap.add_argument("--data-root", help="dataset folder (required for mars/duke; synthetic: where it is generated)")
    ap.add_argument("--profile", default="cpu", choices=sorted(load_profiles()),
                    help="experiments/profiles.yaml: paper (the paper's recipe, GPU) or cpu (small, fast)")
    ap.add_argument("--device", help="train.device: auto | cpu | cuda | cuda:<i> (default: the profile's, auto)")
    ap.add_argument("--rows", nargs="+", metavar="ROW", help="row labels or 1-based indices (default: all rows)")
    ap.add_argument("--seeds", type=parse_seeds, help="number of seeds (3 -> 0,1,2) or a list (0,5,7)")
    ap.add_argument("--epochs", type=int, help="train.epochs (milestones are kept as the profile sets them)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="any config key, e.g. --set loss.reg_weight=0.5 (highest precedence; repeatable)")
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ap.add_argument("--work-dir", default="runs", help="checkpoints (default: ./runs)")
    ap.add_argument("--reports-dir", default="reports", help="markdown reports and figures (default: ./reports)")
    ap.add_argument("--force", action="store_true", help="retrain rows that already have a finished run")
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
    """reproduce/<table>.py: run the table, print where the report is; exit 1 if a row failed."""
    args = table_parser(table).parse_args(argv)
    try:
        spec = load_spec(spec_path(table), profile=args.profile, dataset=args.dataset, data_root=args.data_root,
                         overrides=cli_overrides(args))
        spec = select_rows(spec, args.rows)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from core.tables import run_table
    t0 = time.perf_counter()
    try:
        out = run_table(spec, seeds=args.seeds, work_dir=args.work_dir, force=args.force,
                        tracking_uri=args.tracking_uri, reports_dir=args.reports_dir, progress=not args.quiet)
    except ConfigError as e:     # e.g. an unreachable --tracking-uri (checked before any training)
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out.report is None:       # a non-zero torchrun rank
        return 0
    print(f"{table}: {len(out.trained)} run(s) trained/evaluated, {len(out.reused)} reused, "
          f"{len(out.failed)} failed in {time.perf_counter() - t0:.0f} s")
    for failure in out.failed:
        print(f"  failed: {failure}", file=sys.stderr)
    print(f"report: {out.report}")
    return 1 if out.failed else 0


def report_main(argv: Sequence[str] | None = None) -> int:
    """reproduce/report.py: rebuild every report from the tracking store, no training."""
    ap = argparse.ArgumentParser(prog="reproduce/report.py",
                                 description="Rebuild reports/*.md and figures from the MLflow store (no training).")
    ap.add_argument("tables", nargs="*", help="tables to rebuild (default: all specs in experiments/)")
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ap.add_argument("--reports-dir", default="reports")
    args = ap.parse_args(argv)
    from core.tables import write_report
    try:
        paths = [spec_path(t) for t in args.tables] if args.tables else all_spec_paths()
        for path in paths:
            print(write_report(path, args.reports_dir, args.tracking_uri))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
