"""One Ctrl+C stops a run: the SIGINT handler of the commands remembers the interrupt as well as raising
KeyboardInterrupt, because an interrupt that lands in a finaliser (a DataLoader iterator's ``__del__`` at a
training/extraction boundary) is swallowed by Python ("Exception ignored in ..."); the training and extraction loops
call ``check()`` once per batch, which raises it again. The commands then print one line saying what was kept and
how to resume (core.cli)."""
from __future__ import annotations

import signal
import threading

_pending = False


def _handler(signum, frame) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def install() -> None:
    """Use the remembering handler for SIGINT (main thread only; elsewhere a no-op)."""
    global _pending
    _pending = False
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)


def check() -> None:
    """Raise KeyboardInterrupt if a Ctrl+C arrived (even one swallowed by a finaliser)."""
    if _pending:
        raise KeyboardInterrupt


def clear() -> None:
    global _pending
    _pending = False
