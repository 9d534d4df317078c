"""Local MLflow stores (``sqlite:///PATH``, ``file://PATH`` or a plain folder), checked before anything runs.

* An existing SQLite file must be a readable SQLite database (a garbage or truncated ``mlflow.db`` is refused in one
  line naming it, instead of a traceback from MLflow's schema migration).
* A missing store is never created by a reading command (``create=False``: ``reproduce/report.py``,
  ``reproduce/tune.py --n-trials 0``): a misspelt path is refused, naming what was looked for.
* A new SQLite store is created under an exclusive lock (a lock file in the temp folder, keyed by the database's
  path), so two table runs started together on a fresh store do not race in MLflow's table creation; the command
  says on stdout where the new store is.
* A file store (``file://`` or a plain folder) is refused when the installed MLflow refuses it (MLflow 3.7+ unless
  MLFLOW_ALLOW_FILE_STORE=true).

Imports mlflow only to ask whether it opens file stores; core.tracking passes the creating call in.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import sqlite3
import tempfile
import urllib.parse
from pathlib import Path
from typing import Callable

from core.config import ConfigError
from core.endpoints import shown

SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (``sqlite:////abs`` absolute), else None."""
    if not uri.lower().startswith("sqlite:"):
        return None
    path = uri.split(":", 1)[1]
    if not path.startswith("///"):
        return None                           # sqlite:// (in memory) or a malformed URI: MLflow's business
    path = urllib.parse.unquote(path[3:].split("?", 1)[0])
    return Path(path) if path else None


def folder_path(uri: str) -> Path | None:
    """The folder of a file store (``file:///PATH`` or a plain path), else None."""
    if uri.lower().startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
    return None if "://" in uri else Path(uri)


def check_local(uri: str, source: str, create: bool) -> None:
    """Raise a one-line ConfigError for a local store that cannot be used (module doc)."""
    db = sqlite_path(uri)
    if db is None and uri.lower().startswith("sqlite:"):
        raise ConfigError(f"{source} {shown(uri)}: names no database file (an in-memory store keeps nothing); "
                          f"expected sqlite:///PATH.db, e.g. sqlite:///mlflow.db")
    if db is not None:
        if db.exists():
            check_sqlite(db, uri, source)
        elif not create:
            raise ConfigError(f"{source} {shown(uri)}: no MLflow store at {db} (looked for that SQLite file); a "
                              f"reading command never creates one: check the path, or run a table first")
        return
    folder = folder_path(uri)
    if folder is None:
        return
    if not file_store_supported():
        raise ConfigError(f"{source} {shown(uri)}: a file store (plain folder or file://), which the installed "
                          f"MLflow refuses unless MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///PATH.db (e.g. "
                          f"sqlite:///mlflow.db)")
    if not folder.is_dir() and not create:
        raise ConfigError(f"{source} {shown(uri)}: no MLflow store at {folder} (looked for that folder); a reading "
                          f"command never creates one: check the path")


def check_sqlite(db: Path, uri: str, source: str) -> None:
    """An existing file must be a readable SQLite database whose pages pass a quick integrity check."""
    if db.is_dir():
        raise ConfigError(f"{source} {shown(uri)}: {db} is a folder; expected an SQLite database file")
    try:
        with open(db, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise ConfigError(f"{source} {shown(uri)}: cannot read {db} ({e.strerror or e})") from None
    if head and head != SQLITE_HEADER:
        raise ConfigError(f"{source} {shown(uri)}: {db} is not an SQLite database (it does not start with the "
                          f"SQLite header); expected an MLflow store: move it away to start a new one")
    if not head:
        return                                  # an empty file: SQLite treats it as a new database
    try:
        with contextlib.closing(sqlite3.connect(f"file:{urllib.parse.quote(str(db.resolve()))}?mode=ro",
                                                uri=True, timeout=30)) as con:
            result = con.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{source} {shown(uri)}: {db} is a damaged SQLite database ({e}); expected an MLflow "
                          f"store: restore it from a backup or move it away to start a new one") from None
    if not result or result[0] != "ok":
        raise ConfigError(f"{source} {shown(uri)}: {db} is a damaged SQLite database (integrity check: "
                          f"{result[0] if result else 'no answer'}); restore it from a backup or move it away")


@contextlib.contextmanager
def _lock(db: Path):
    key = hashlib.sha1(str(db.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"sta-mlflow-{key}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def create_sqlite(uri: str, init: Callable[[], object]) -> None:
    """Create the SQLite store of `uri` if missing (``init`` makes MLflow build its tables), one process at a time,
    saying where on stdout. Nothing for other stores or an existing database."""
    db = sqlite_path(uri)
    if db is None or (db.is_file() and db.stat().st_size > 0):
        return
    with _lock(db):
        new = not db.is_file() or db.stat().st_size == 0
        if new:
            print(f"note: creating a new MLflow store at {db.resolve()}", flush=True)
        init()


def file_store_supported() -> bool:
    """Whether the installed MLflow opens a file store: MLflow 3.7+ refuses one unless MLFLOW_ALLOW_FILE_STORE is
    true (its file store is in maintenance mode); older versions always do."""
    import importlib.util
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:
        try:
            return importlib.util.find_spec("mlflow.store.tracking.file_store") is not None
        except (ImportError, ValueError):
            return False
    return bool(MLFLOW_ALLOW_FILE_STORE.get())
