"""Screenshots of what the suite's runs look like in MLflow's UI and in optuna-dashboard (docs/*.png, linked from
docs/tracking.md and docs/tuning.md), taken in headless Chromium with a fresh profile from a store made by the
suite's own commands:

    python reproduce/table1.py --rows 1 2 3 4 5 6 --epochs 2 --tracking-uri sqlite:///$S/mlflow.db \
        --set data.synthetic_size=tiny ...            # any tiny table run
    python reproduce/tune.py --tracking-uri sqlite:///$S/mlflow.db --storage $S/study.journal \
        --set data.synthetic_size=tiny ...            # any tiny study
    python docs/screenshots.py --tracking-uri sqlite:///$S/mlflow.db --journal $S/study.journal

Needs the extras 'browser' (playwright, driving the system Chromium: apt-get install chromium) and 'dashboard'
(optuna-dashboard). The servers bind 127.0.0.1 only, with MLflow's telemetry off (core.ui.server_env)."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import tracking, ui  # noqa: E402
from core.bench.servers import free_port  # noqa: E402
from tests.browser import chromium, ui_server  # noqa: E402

DOCS = REPO / "docs"
SIZE = {"width": 1600, "height": 900}


def _close_assistant(page) -> None:
    """Close MLflow's Assistant panel (a quarter of the width) if it is open."""
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Close").last.click(timeout=3000)


def _settle(page, ms: int = 2500) -> None:
    page.wait_for_timeout(ms)


def mlflow_shots(page, base: str, exp_id: str) -> list[Path]:
    out = []
    page.goto(ui.runs_url(base, exp_id))
    page.get_by_text("T1.1 ", exact=False).first.wait_for()
    _close_assistant(page)
    _settle(page)
    out.append(DOCS / "mlflow_runs.png")
    page.screenshot(path=str(out[-1]))
    page.goto(ui.runs_url(base, exp_id, chart=True))
    page.get_by_test_id("experiment-view-compare-runs-chart-area").get_by_text("Headline/mAP").first.wait_for()
    _close_assistant(page)
    _settle(page, 4000)
    out.append(DOCS / "mlflow_charts.png")
    page.screenshot(path=str(out[-1]))
    # Compare: the row runs' page of MLflow's compare view, every row selected
    runs = [r.info.run_id for r in tracking.find_runs(tracking.experiment_name("table1"), "tags.kind = 'row'")]
    ids = "[" + ",".join(f'"{r}"' for r in runs) + "]"
    page.goto(f"{base}/#/compare-runs?runs={urllib.request.quote(ids)}&experiments=%5B%22{exp_id}%22%5D"
              f"&workflowType=machine_learning")
    page.get_by_text("Parameters").first.wait_for()
    _close_assistant(page)
    with contextlib.suppress(Exception):
        page.get_by_text("Show diff only").first.click(timeout=3000)
    _settle(page)
    out.append(DOCS / "mlflow_compare.png")
    page.screenshot(path=str(out[-1]), full_page=False)
    return out


@contextlib.contextmanager
def dashboard(journal: Path, port: int):
    exe = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(exe), str(journal), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/api/meta", timeout=2):
                    break
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def dashboard_shot(page, base: str) -> Path:
    import json
    with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as r:
        study_id = json.load(r)["study_summaries"][0]["study_id"]
    page.goto(f"{base}/dashboard/studies/{study_id}")
    page.get_by_text("val mAP (%)").first.wait_for()
    _settle(page, 3000)
    path = DOCS / "optuna_dashboard.png"
    page.screenshot(path=str(path))
    return path


def main() -> int:
    from playwright.sync_api import sync_playwright
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", required=True, help="the store holding a tiny table1 run (sqlite:///...)")
    ap.add_argument("--journal", type=Path, help="a tiny study's journal file (optuna-dashboard shot)")
    ap.add_argument("--dashboard-only", action="store_true", help="only the optuna-dashboard shot")
    args = ap.parse_args()
    uri = tracking.configure(args.tracking_uri)
    exp = tracking.find_runs(tracking.experiment_name("table1"), "tags.kind = 'row'")
    if not exp:
        print(f"error: no table1 row runs in {uri}", file=sys.stderr)
        return 2
    exp_id = exp[0].info.experiment_id
    shots = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True)
        page = browser.new_context(viewport=SIZE).new_page()      # a fresh profile, as a new user has
        page.set_default_timeout(120_000)
        if not args.dashboard_only:
            with ui_server(uri, free_port(), Path(os.devnull)) as base:
                shots += mlflow_shots(page, base, exp_id)
        if args.journal:
            with dashboard(args.journal, free_port()) as base:
                shots.append(dashboard_shot(page, base))
        browser.close()
    for path in shots:
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
