"""MLflow's telemetry is off (issue 12): importing core.tracking switches it off, in a fresh process and in this one."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO


def test_mlflow_telemetry_is_off_once_core_tracking_is_imported():
    """In a fresh process without any opt-out or CI marker in its environment, importing core.tracking leaves
    MLflow's own switch on "disabled" and no telemetry client; in this process too (mlflow imported earlier)."""
    ci = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    env = {k: v for k, v in os.environ.items() if k not in ci}
    code = ("import core.tracking\n"
            "from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY\n"
            "from mlflow.telemetry import get_telemetry_client\n"
            "from mlflow.telemetry.utils import is_telemetry_disabled\n"
            "print(MLFLOW_DISABLE_TELEMETRY.get(), is_telemetry_disabled(), get_telemetry_client())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "None"], out.stderr
    from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY
    from mlflow.telemetry import get_telemetry_client
    assert MLFLOW_DISABLE_TELEMETRY.get() is True and os.environ["DO_NOT_TRACK"] == "true"
    assert get_telemetry_client() is None
