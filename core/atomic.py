"""Atomic writes: a file is either absent or complete (temp file in the same folder + os.replace). Torch-free, so
every layer (engine, tracking, reports, tuning) writes through it.

The temp file is named ``.<name>.<host>.<pid>.<random>.tmp`` and created like any other file (mode 0o666 less the
user's umask, not mkstemp's 0600). Before each write, temp files of the same target left by a killed process of
this host are removed (core.leftovers).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from core import leftovers

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError, ValueError):
    """A write failed for want of space (ENOSPC, EDQUOT): the message names the file and the free space left. A
    ValueError too, so that the commands print it as one `error:` line (exit 2) instead of a traceback."""


def _no_space(path: Path, error: OSError) -> DiskFullError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    return DiskFullError(error.errno, f"no space left on device writing {path} ({free}); free some space or point "
                                      f"the output (--work-dir / --reports-dir) at another disk")


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call write(fileobj) on a temp file beside `path`, fsync it, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leftovers.remove_stale(path.parent, f".{path.name}.", ".tmp")
    tmp = path.parent / f".{path.name}.{leftovers.token()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # the kernel applies the umask
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in NO_SPACE and not isinstance(e, DiskFullError):
            raise _no_space(path, e) from None
        raise
    return path


def save_json(obj: Any, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    return atomic_write(path, lambda f: f.write(text), mode="w")


def save_parquet(frame, path: str | Path) -> Path:
    """A pandas DataFrame as Parquet (pyarrow), without its index."""
    return atomic_write(path, lambda f: frame.to_parquet(f, index=False))


def save_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")
