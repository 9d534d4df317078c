"""Leftovers of killed processes: what a process writes carries its "<host>.<pid>", so a later run can tell a
leftover (its writer is gone) from work in progress (its writer still runs) and clean only the former.

Rule: a temp file or folder is stale when the host in its name is this host and no process with its pid exists.
Anything else (another host sharing the folder, a live pid, a name without host and pid) is left alone: a pid
reused by an unrelated process only delays the cleaning, it never removes live work.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
from glob import escape
from pathlib import Path


def token() -> str:
    """'<host>.<pid>.<random>' for the name of a temp file or folder this process writes."""
    return f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"


def worker() -> str:
    """'<host>:<pid>' of this process (the tag of MLflow runs and Optuna trials it runs)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def gone(host: str, pid: int) -> bool:
    """True when `host` is this host and process `pid` does not exist (another host cannot be checked)."""
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:         # exists, owned by another user
        return False
    return False


def worker_gone(worker: str) -> bool:
    """gone() for a worker() string; False for anything else (e.g. a run of an older version without the tag)."""
    host, _, pid = worker.rpartition(":")
    return bool(host) and pid.isdigit() and gone(host, int(pid))


def _token_gone(tok: str) -> bool:
    parts = tok.rsplit(".", 2)            # host may hold dots; pid and random part do not
    return len(parts) == 3 and parts[1].isdigit() and gone(parts[0], int(parts[1]))


def remove_stale(folder: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the entries `<prefix><token()><suffix>` of `folder` whose writer is gone; returns what was removed."""
    removed = []
    for p in Path(folder).glob(f"{escape(prefix)}*{escape(suffix)}"):
        tok = p.name[len(prefix):len(p.name) - len(suffix)]
        if _token_gone(tok):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed
