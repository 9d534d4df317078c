"""Shared pytest fixtures (keep small)."""
import pytest

import core.tracking  # noqa: F401  (first: it switches MLflow telemetry off before any test module imports mlflow)


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory):
    """Path of the "tiny" synthetic dataset (MARS layout, seed 0), generated once per test session (~1 s)."""
    from core.data.synthetic import generate
    return generate(tmp_path_factory.mktemp("synthetic") / "tiny_seed0", "tiny", seed=0, progress=False)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_synthetic_root):
    """The tiny synthetic dataset loaded as the tiny configuration (tests.helpers.tiny_cfg) reads it; once per
    session (a frozen VideoDataset: tests must not change it)."""
    from core.data import load_dataset
    from tests.helpers import tiny_cfg
    return load_dataset(tiny_cfg(tiny_synthetic_root).data)


def _unavailable(reason: str):
    """Skip with the reason; under CI (which installs PostgreSQL and the [postgres] extra) fail instead."""
    import os
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL on 127.0.0.1 (core.bench.servers), one per session; Postgres.create_database(name)
    gives each test its own database. Skipped (with the reason) where PostgreSQL or its driver is missing."""
    from core.bench.servers import postgres, postgres_bin
    if postgres_bin() is None:
        _unavailable("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin): apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("PostgreSQL driver not installed: pip install -e \".[postgres]\"")
    with postgres(durable=False) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(postgres_server, tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with the PostgreSQL database 'mlflow' as backend store and artifacts served
    over HTTP into <tmp>/artifacts; yields (url, artifacts folder)."""
    from core.bench.servers import mlflow_server as serve
    artifacts = tmp_path_factory.mktemp("mlflow-server") / "artifacts"
    with serve(postgres_server.create_database("mlflow"), artifacts) as url:
        yield url, artifacts


@pytest.fixture(autouse=True)
def no_full_pretraining_stage(monkeypatch):
    """A test that reaches the cpu profile's real pretraining stage (2,000 identities, minutes of training) fails at
    once, naming the fix, instead of running into the per-test timeout: tiny tables set TINY_TABLE's pretrain keys
    or model.pretrained=false."""
    from core.engine import pretrain
    real = pretrain.ensure

    def guarded(cfg, *args, **kwargs):
        if cfg.pretrain.identities > 64:
            pytest.fail(f"this test would train the full pretraining stage ({cfg.pretrain.identities} identities): "
                        f"use tests.helpers.TINY_TABLE's pretrain keys or model.pretrained=false")
        return real(cfg, *args, **kwargs)
    monkeypatch.setattr(pretrain, "ensure", guarded)
