"""Throwaway local servers for the storage benchmark and the test suite (tests/conftest.py): a PostgreSQL cluster
and an MLflow tracking server on it, both on 127.0.0.1 and a free port, stopped and removed on exit.

PostgreSQL: ``initdb`` in a temporary folder (a password-protected role, TCP only from 127.0.0.1), then ``pg_ctl``;
when run as root (which PostgreSQL refuses) both run as the ``postgres`` system user, owner of that folder.
Binaries: the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package), else ``pg_ctl`` on
PATH. MLflow: ``mlflow server`` with the database as backend store and ``--serve-artifacts``, so clients upload
artifacts over HTTP into ``--artifacts-destination`` as they would from another machine.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROLE = "sta"


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None where PostgreSQL is not installed."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")]
    if found:
        return max(found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Postgres:
    port: int
    password: str
    bin: Path
    host: str = "127.0.0.1"

    def url(self, database: str, driver: str = "") -> str:
        """e.g. postgresql://sta:<password>@127.0.0.1:<port>/<database> (driver '+psycopg' etc. optional)."""
        return f"postgresql{driver}://{ROLE}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name; returns its URL."""
        _run([str(self.bin / "createdb"), "-h", self.host, "-p", str(self.port), "-U", ROLE, name],
             env={**os.environ, "PGPASSWORD": self.password})
        return self.url(name)


def _run(cmd: list[str], **kwargs) -> None:
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stdout.strip()[-2000:]}")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def postgres(durable: bool = True, bin_dir: Path | None = None) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster; ``durable=False`` turns fsync off (tests), True keeps a real server's settings
    (the benchmark)."""
    bin_dir = bin_dir or postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl, no pg_ctl on PATH); "
                           "on Debian/Ubuntu: apt-get install postgresql")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user and not _user_exists("postgres"):
        raise RuntimeError("PostgreSQL refuses to run as root and there is no 'postgres' system user to run it as")
    root = Path(tempfile.mkdtemp(prefix="sta-pg-"))
    password = secrets.token_hex(12)
    (root / "pw").write_text(password + "\n")
    if as_user:
        for path in (root, root / "pw"):
            shutil.chown(path, "postgres", "postgres")
    data, port = root / "data", free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    try:
        _run(as_user + [str(bin_dir / "initdb"), "-D", str(data), "-U", ROLE, f"--pwfile={root / 'pw'}",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"], cwd=root)
        _run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", options,
                        "-w", "-t", "60", "start"], cwd=root)
        try:
            yield Postgres(port=port, password=password, bin=bin_dir)
        finally:
            subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, timeout: float = 120.0) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with `backend_uri` and served artifacts under `artifacts`; yields its URL once
    /health answers (RuntimeError with the server's log if it exits or stays silent for `timeout` s)."""
    artifacts = Path(artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = artifacts.parent / f"mlflow-server-{port}.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--serve-artifacts",
           "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start ({' '.join(cmd)}): "
                                       f"{log_path.read_text()[-3000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)          # the server and its uvicorn worker
        try:
            proc.wait(timeout=1)       # a throwaway server: no need to wait for idle keep-alive clients
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
