"""Progress bars: the only module that imports tqdm ("--quiet must silence every progress bar; when
output is not a terminal, a line per stage or per epoch is enough").

``bar(iterable, desc, enabled, ...)`` returns
- nothing visible when ``enabled`` is False (``--quiet``): a disabled tqdm;
- a tqdm bar when the stream is a terminal;
- otherwise (a log file, CI) a ``StageLine``: no carriage-return redraws, one plain line when the stage ends
  ("desc: n/total unit in s s, postfix"), so a log holds a line per stage (per epoch for the training bars).
``StageLine`` has the part of tqdm's interface the suite uses: iteration, ``update``, ``set_postfix``, ``close``
and ``with``.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Any, Iterable, Iterator

from tqdm.auto import tqdm


def is_terminal(stream: IO) -> bool:
    """Whether `stream` is an interactive terminal (a closed or odd stream counts as not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def bar(iterable: Iterable | None = None, desc: str = "", enabled: bool = True, total: int | None = None,
        stream: IO | None = None, **kwargs: Any):
    """A progress bar over `iterable` (or updated by hand with `total`): see the module docstring. `kwargs` go to
    tqdm (leave, unit, initial, ...); a StageLine reads ``unit`` and ``initial``."""
    stream = stream if stream is not None else sys.stderr
    if enabled and not is_terminal(stream):
        return StageLine(iterable, desc, total, stream, unit=kwargs.get("unit", "it"), initial=kwargs.get("initial", 0))
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, file=stream, **kwargs)


class StageLine:
    """A progress 'bar' for non-terminal output: counts silently, writes one line when closed."""

    def __init__(self, iterable: Iterable | None, desc: str, total: int | None, stream: IO, unit: str = "it",
                 initial: int = 0):
        self.iterable, self.desc, self.stream, self.unit = iterable, desc, stream, unit
        self.total = total if total is not None else _len(iterable)
        self.n, self.postfix, self.closed = initial, "", False
        self.start = time.perf_counter()

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        tail = f", {self.postfix}" if self.postfix else ""
        self.stream.write(f"{self.desc}: {count} {self.unit} in {time.perf_counter() - self.start:.1f} s{tail}\n")
        self.stream.flush()

    def __enter__(self) -> "StageLine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _len(iterable: Iterable | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
