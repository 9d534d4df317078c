"""Checkpoints that do not stall training: when to write one, and writing it on a background thread.

The training loop only pays for a copy of the state to host memory (:func:`to_host`); serialising and the
fsync'ed atomic write (``checkpoint.save_torch``) run on one background thread, one write at a time.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from core.atomic import DiskFullError
from core.engine.checkpoint import save_torch


def checkpoint_due(epoch: int, epochs: int, milestones: Sequence[int], seconds_since_save: float,
                   every_s: float) -> bool:
    """Write a checkpoint after 0-based `epoch`?

    Yes after the last epoch, after an epoch whose end is an lr milestone (the lr changes from the next epoch
    on), and when `every_s` seconds of training have passed since the last write (every_s = 0: every epoch).
    """
    return epoch + 1 == epochs or epoch + 1 in milestones or seconds_since_save >= every_s


def to_host(obj: Any) -> Any:
    """A copy of a (nested dict/list/tuple of) state with every tensor copied to CPU memory.

    The copy is what the writer serialises while training keeps updating the live tensors in place.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(v) for v in obj)
    return obj


class CheckpointWriter:
    """Writes checkpoints on a background thread: ``submit`` returns after the host copy.

    One write is in flight at a time (``submit`` first waits for the previous one); ``join`` waits for the last.
    An error in the writer is raised by the next ``submit`` or ``join``, naming the file.
    """

    def __init__(self, save: Callable[[Any, Path], Any] = save_torch):
        self._save = save
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._path: Path | None = None
        self.written: list[Path] = []

    def submit(self, state: dict, path: str | Path) -> None:
        self.join()
        host, path = to_host(state), Path(path)
        self._path = path
        self._thread = threading.Thread(target=self._write, args=(host, path), name="checkpoint-writer",
                                        daemon=False)
        self._thread.start()

    def _write(self, state: dict, path: Path) -> None:
        try:
            self._save(state, path)
            self.written.append(path)
        except BaseException as e:  # noqa: BLE001 - re-raised in the training thread by join()
            self._error = e

    def join(self) -> None:
        """Wait for the write in flight; raise its error (RuntimeError naming the file) if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, DiskFullError):
                raise error                   # names the file and the free space: one line for the commands
            raise RuntimeError(f"writing checkpoint {self._path} failed: {type(error).__name__}: {error}") from error
