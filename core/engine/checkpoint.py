"""Checkpoints on disk: torch.save through core.atomic (a file is either absent or complete) and a safe loader."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from core.atomic import atomic_write


class CheckpointError(RuntimeError, ValueError):
    """A checkpoint cannot be resumed (corrupt, unsafe, another config, misfit, non-finite weights, a folder): the
    message names the file and says to delete it. A ValueError too: the commands print it as one line, exit 2."""


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
