"""Shared pytest fixtures (keep small)."""
import pytest

import core.tracking  # noqa: F401  (first: it switches MLflow telemetry off before any test module imports mlflow)


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory):
    """Path of the "tiny" synthetic dataset (MARS layout, seed 0), generated once per test session (~1 s)."""
    from core.data.synthetic import generate
    return generate(tmp_path_factory.mktemp("synthetic") / "tiny_seed0", "tiny", seed=0, progress=False)
