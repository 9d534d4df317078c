"""Atomic writes: a file is either absent or complete (temp file in the same folder + os.replace).

The temp file is named ``.<name>.<host>.<pid>.<random>.tmp`` and created like any other file (mode 0o666 less the
user's umask, not mkstemp's 0600). Before each write, temp files of the same target left by a killed process of
this host are removed (core.leftovers).
"""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable

from core import leftovers

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError, ValueError):
    """A write failed for want of space (ENOSPC, EDQUOT): the message names the file and the free space left. A
    ValueError too, so that the commands print it as one `error:` line (exit 2) instead of a traceback."""


class CheckpointError(RuntimeError, ValueError):
    """A checkpoint cannot be resumed (corrupt, unsafe, another config, misfit, non-finite weights, a folder): the
    message names the file and says to delete it. A ValueError too: the commands print it as one line, exit 2."""


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


def save_torch(obj: Any, path: str | Path) -> Path:
    """torch.save through memory: the file write is then a plain write, whose failure on a full disk is an OSError
    (ENOSPC, reported as DiskFullError) instead of torch's zip writer's "unexpected pos"."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_torch(path: str | Path) -> Any:
    """Load a checkpoint written by save_torch with ``weights_only=True``: tensors, numbers, strings, lists and
    dicts only, so a planted file cannot run code. A corrupt or unsafe file is an error naming it."""
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:   # weights_only refused an object (or the pickle stream is garbage)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "global" in ln.lower() and "weights only" not in ln.lower()),
                      lines[0] if lines else type(e).__name__)
        raise CheckpointError(f"checkpoint {path} was refused by the safe loader ({detail}): a resume checkpoint holds "
                           f"only tensors, numbers, strings, lists and dicts, so this file was not written by this "
                           f"suite or is corrupt; nothing in it was run. Delete it to restart that run") from e
    except Exception as e:  # torch raises several types for truncated/corrupt files
        detail = " ".join(str(e).split())[:300] or type(e).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read ({detail}); delete it to restart that run") from e


def save_json(obj: Any, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    return atomic_write(path, lambda f: f.write(text), mode="w")


def save_parquet(frame, path: str | Path) -> Path:
    """A pandas DataFrame as Parquet (pyarrow), without its index."""
    return atomic_write(path, lambda f: frame.to_parquet(f, index=False))


def save_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")
