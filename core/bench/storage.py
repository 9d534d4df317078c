"""python -m core.bench storage: per-trial overhead of the Optuna storages of reproduce/tune.py, PostgreSQL against
the default journal file (and SQLite).

Every backend runs the same studies of no-op trials through core.tuning's own machinery (open_study with its queue,
TrialSeededTPE, MedianPruner, StopAtBudget after every trial), with the objective's storage calls: worker and
invocation user attrs, the surplus check, suggest, then per validation step one report + should_prune. Nothing
trains, so the time is the storage's alone, split into
  per trial   a study of --trials trials with no validation step (ask, attrs, suggest, tell, budget callback)
  per report  the extra time of --reports validation steps per trial, divided by their number
A real trial trains for minutes to hours; the paper profile validates every `report_every` epochs (400 steps
for 800 epochs). PostgreSQL is a throwaway local server with durable settings (core.bench.servers), or --url;
over a network every storage call also pays one round trip.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from core.tuning import study as tuning
from core.tuning.spec import DEFAULT_SPEC, Plan, plan_study


def objective(plan: Plan, reports: int):
    """The storage calls of core.tuning.trial.Objective, without training."""
    def run(trial) -> float:
        trial.set_user_attr("worker", "bench:0")
        tuning.StopAtBudget(plan.n_trials).count(trial.study, before=trial.number)
        trial.set_user_attr("invocation", "bench")
        lam, margin = tuning.suggest(trial, plan.spec)
        trial.set_user_attr("lambda", lam)
        value = 50.0 + 10 * margin
        for step in range(1, reports + 1):
            trial.report(value, step)
            trial.should_prune()
        return value
    return run


def study_seconds(location: str, trials: int, reports: int, work: Path) -> tuple[float, float]:
    """(seconds to create the study, seconds for `trials` trials) on a fresh study."""
    plan = plan_study(DEFAULT_SPEC, storage=location, study_name=f"bench-{uuid.uuid4().hex[:8]}",
                             n_trials=trials, work_dir=work)
    t0 = time.perf_counter()
    study, _ = tuning.open_study(plan)
    t1 = time.perf_counter()
    study.optimize(objective(plan, reports), n_trials=trials, callbacks=[tuning.StopAtBudget(trials)])
    return t1 - t0, time.perf_counter() - t1


def measure(name: str, location: str, trials: int, reports: int, work: Path) -> dict:
    create, plain = study_seconds(location, trials, 0, work)
    _, with_reports = study_seconds(location, trials, reports, work)
    return {"storage": name, "create_s": create, "trial_ms": 1e3 * plain / trials,
            "report_ms": 1e3 * (with_reports - plain) / (trials * reports) if reports else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.bench storage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=40, help="trials per study (default 40)")
    ap.add_argument("--reports", type=int, default=20, help="validation steps per trial (default 20)")
    ap.add_argument("--url", help="an existing PostgreSQL/MySQL database instead of a throwaway local server")
    args = ap.parse_args(argv)
    tuning.quiet(progress=False)        # optuna only through core.tuning.study; its ExperimentalWarnings (heartbeat)
    from core.bench import servers
    rows = []
    with tempfile.TemporaryDirectory(prefix="sta-bench-storage-") as tmp:
        work = Path(tmp)
        rows.append(measure("journal file", str(work / "bench.journal"), args.trials, args.reports, work))
        rows.append(measure("SQLite", f"sqlite:///{work / 'bench.db'}", args.trials, args.reports, work))
        if args.url:
            rows.append(measure("database (--url)", args.url, args.trials, args.reports, work))
        elif servers.postgres_bin() is None:
            print("PostgreSQL not installed: no /usr/lib/postgresql/*/bin (apt-get install postgresql), or pass --url")
        else:
            with servers.postgres(durable=True) as pg:
                rows.append(measure("PostgreSQL (local, fsync on)", pg.create_database("bench"), args.trials,
                                    args.reports, work))
    base = rows[0]
    print(f"{args.trials} no-op trials per study, {args.reports} validation steps per trial in the second study")
    print(f"{'storage':<30} {'create study':>12} {'per trial':>10} {'per report':>11} {'trial vs journal':>17}")
    for r in rows:
        print(f"{r['storage']:<30} {r['create_s']:>10.2f} s {r['trial_ms']:>7.1f} ms {r['report_ms']:>8.2f} ms "
              f"{r['trial_ms'] / base['trial_ms']:>16.2f}x")
    return 0
