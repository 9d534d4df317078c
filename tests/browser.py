"""Helpers of the browser test (tests/test_ui_browser.py) and of docs/screenshots.py: the system Chromium, a small
table store logged through the suite's own tracking code, and the suite's MLflow UI server (core.ui).

Playwright drives the SYSTEM Chromium (``executable_path``): its own browser download needs the internet. Install
them with ``pip install -e ".[browser]"`` and ``apt-get install chromium`` (.ci/run does both)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The system Chromium's path, or None."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def playwright_missing() -> str | None:
    """Why the browser test cannot run here (None: it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[browser]'"
    if chromium() is None:
        return "no system Chromium (chromium, chromium-browser, google-chrome): apt-get install chromium"
    return None


def log_table_store(uri: str, rows: tuple[int, ...] = (1, 2, 3, 6)) -> str:
    """Table 1's `rows` (1-based) as row runs under one parent run, logged by core.tracking with the names, tags
    and metric keys a real table run gives (no training: fake numbers); returns the experiment id."""
    from core import record, tables, tracking
    from core.specs import load_spec, spec_path
    from tests.helpers import FakeEpoch, FakeResult, fake_per_query
    tracking.configure(uri)
    spec = load_spec(spec_path("table1"), "cpu")
    experiment = tracking.experiment_name("table1")
    with tracking.parent_run(experiment, "table1 synthetic cpu", {"table": "table1", "profile": "cpu",
                                                                   "dataset": "synthetic"},
                             tracking.describe(spec.title, spec.path), tables._runs_view(spec)):
        for i in rows:
            row = spec.rows[i - 1]
            r1 = 0.40 + 0.05 * i
            tags = {"table": "table1", "row": row.label, "row_index": str(i), "dataset": "synthetic",
                    "profile": "cpu", "seed": "0", "config_hash": f"fake{i}"}
            with tracking.child_run(record.row_run_name("table1", i, row.label, 0), tags):
                tracking.log_config(row.config)
                m = {"R1": r1, "R5": r1 + 0.1, "R10": r1 + 0.15, "R20": r1 + 0.2, "mAP": r1 - 0.1,
                     "num_queries": 10.0, "num_skipped_queries": 0.0}
                m.update({f"{p}_{k}": v for p in ("official", "gao") for k, v in list(m.items())})
                m.update({f"{k}{s}": m[k] + d for k in ("R1", "mAP") for s, d in (("_ci_low", -.05), ("_ci_high", .05))})
                losses = {"loss_ce": 2.0 / i, "loss_triplet": 0.3, "loss_reg_weighted": 0.0, "loss_total": 2.3}
                tracking.log_result(FakeResult(m, np.linspace(r1, 1.0, 20), [FakeEpoch(0), FakeEpoch(1)], {},
                                               losses, fake_per_query(m)))
    import mlflow
    return mlflow.get_experiment_by_name(experiment).experiment_id


@contextlib.contextmanager
def ui_server(uri: str, port: int, log: Path) -> Iterator[str]:
    """reproduce/ui.py's server (core.ui.server_command: 127.0.0.1, telemetry off) on `uri`; yields its URL."""
    from core import tracking, ui
    base = f"http://{tracking.UI_HOST}:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(ui.server_command(uri, port), env=ui.server_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)   # its own group: uvicorn too
    try:
        ui.wait_until_up(base, proc=proc)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)          # the server and the uvicorn process it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
