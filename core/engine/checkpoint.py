"""Atomic writes: a file is either absent or complete (temp file in the same folder + os.replace).

The temp file is named ``.<name>.<host>.<pid>.<random>.tmp`` and created like any other file (mode 0o666 less the
user's umask, not mkstemp's 0600). Before each write, temp files of the same target left by a killed process of
this host are removed (core.leftovers).
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Callable

from core import leftovers


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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_torch(obj: Any, path: str | Path) -> Path:
    import torch
    return atomic_write(path, lambda f: torch.save(obj, f))


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
        raise RuntimeError(f"checkpoint {path} was refused by the safe loader ({detail}): a resume checkpoint holds "
                           f"only tensors, numbers, strings, lists and dicts, so this file was not written by this "
                           f"suite or is corrupt; nothing in it was run. Delete it to restart that run") from e
    except Exception as e:  # torch raises several types for truncated/corrupt files
        raise RuntimeError(f"checkpoint {path} cannot be read ({e}); delete it to restart that run") from e


def save_json(obj: Any, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    return atomic_write(path, lambda f: f.write(text), mode="w")


def save_parquet(frame, path: str | Path) -> Path:
    """A pandas DataFrame as Parquet (pyarrow), without its index."""
    return atomic_write(path, lambda f: frame.to_parquet(f, index=False))


def save_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")
