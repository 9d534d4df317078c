"""Open the suite's MLflow store in MLflow's own UI on its runs table: ``python reproduce/ui.py``.

Why a command and not a setting of the store: MLflow 3.17's UI ignores the experiment tag
``mlflow.experimentKind``. Its bundled JavaScript (mlflow/server/js/build/static/js/main.*.js, the hook that reads
that tag) returns the kind picked by the "workflow type" instead, behind a flag that is compiled in as on: the
``workflowType`` URL parameter (``genai`` | ``machine_learning``), else the browser's localStorage key
``mlflow.workflowType_v1``, else ``genai``, which lands every experiment on its GenAI "Overview" page. The store has
no say; a URL with ``workflowType=machine_learning`` lands on the runs table, so this command prints those URLs.

The server it starts (``mlflow server``, MLflow's telemetry off) binds 127.0.0.1 only, serves the store's
artifacts from where the runs keep them (core.tracking.artifact_root: 'mlruns' beside a SQLite database) and stops
with Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Sequence

from core import endpoints, record, tracking
from core.config import ConfigError



def runs_url(base: str, experiment_id: str, shared_view: bool = True, chart: bool = False) -> str:
    """The runs table of one experiment in the model-training view; `shared_view`: the view the suite saved with the
    experiment (core.record.runs_view: rows flat and ordered by name, results as columns); `chart`: its chart
    view (sections by the prefix before '/', Headline/ first)."""
    query = {"workflowType": "machine_learning"}
    if shared_view:
        query["viewStateShareKey"] = record.VIEW_KEY
    if chart:
        query["compareRunsMode"] = "CHART"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"


def experiment_urls(base: str) -> list[tuple[str, str]]:
    """(experiment name, runs URL) of every suite experiment ('STA ...') in the configured store."""
    return [(name, runs_url(base, exp_id, shared_view=has_view)) for exp_id, name, has_view in
            tracking.suite_experiments()]


def server_command(uri: str, port: int) -> list[str]:
    """`mlflow server` on the store `uri`, bound to 127.0.0.1, new experiments' artifacts beside the store."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", tracking.UI_HOST, "--port", str(port), "--workers", "1"]   # one user: one worker starts fastest
    root = tracking.artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    return cmd


def server_env() -> dict[str, str]:
    """The environment of the server: MLflow's telemetry (the server's and the UI's, which asks the server) off."""
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def wait_until_up(base: str, timeout_s: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {base} did not answer within {timeout_s:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start MLflow's UI on the suite's store (127.0.0.1) and print the URL "
                                             "of each experiment's runs table.")
    ap.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    ap.add_argument("--port", type=int, default=tracking.UI_PORT)
    ap.add_argument("--print-only", action="store_true", help="print the URLs of a server already running")
    args = ap.parse_args(argv)
    try:
        uri = tracking.configure(args.tracking_uri)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if uri.startswith(("http://", "https://")):
        base, proc = uri.rstrip("/"), None           # a tracking server: its own UI
    else:
        base = f"http://{tracking.UI_HOST}:{args.port}"
        proc = None if args.print_only else subprocess.Popen(server_command(uri, args.port), env=server_env())
    try:
        if proc is not None:
            wait_until_up(base, proc=proc)
        urls = experiment_urls(base)
        print(f"MLflow UI on {base} (store {endpoints.shown(uri)}); each experiment's runs table:")
        for name, url in urls:
            print(f"  {name}: {url}")
        if not urls:
            print("  (no experiment yet: run python reproduce/table1.py or reproduce/tune.py first)")
        if proc is not None:
            print("Ctrl-C stops the server.")
            proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    return 0
