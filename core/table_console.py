"""What a table run prints while it works (stdout, one line per event): where its report and MLflow store are,
which row is running (i of n), each finished row's R1 / mAP with its 95 % interval, and an estimate of the time
left (the mean wall time of the rows trained so far times the rows still to train)."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import IO, Sequence


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _interval(metrics: dict, name: str) -> str:
    """'63.2 [58.1, 68.0]' (percent) from fractions name, name_ci_low, name_ci_high."""
    value = metrics.get(name)
    if value is None or not math.isfinite(value):
        return "n/a"
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    bounds = f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None and high is not None else ""
    return f"{100 * value:.1f}{bounds}"


class TableConsole:
    """Console lines of one table invocation; `todo` are its jobs (Job.name), `finished` the run id each reuses
    (or None: to train)."""

    def __init__(self, table: str, names: Sequence[str], finished: Sequence[str | None], store: str,
                 report: Path, enabled: bool = True, stream: IO | None = None):
        self.names, self.enabled, self.stream = list(names), enabled, stream or sys.stdout
        self.to_train = [i for i, f in enumerate(finished) if not f]
        self.walls: list[float] = []
        self.t0 = 0.0
        reused = len(self.names) - len(self.to_train)
        self._say(f"{table}: {len(self.names)} run(s): {len(self.to_train)} to train and evaluate, {reused} reused "
                  f"from the store; MLflow store: {store}; report: {report}")

    def _say(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.stream, flush=True)

    def _position(self, i: int) -> str:
        return f"[{self.to_train.index(i) + 1}/{len(self.to_train)}]" if i in self.to_train else "[-]"

    def _left(self, i: int) -> str:
        rest = len(self.to_train) - self.to_train.index(i) - 1
        if not self.walls:
            return ""
        return f"; about {_duration(rest * sum(self.walls) / len(self.walls))} left" if rest else "; last row"

    def start(self, i: int) -> None:
        self.t0 = time.perf_counter()
        self._say(f"{self._position(i)} {self.names[i]}: training and evaluating{self._left(i) if i else ''}")

    def done(self, i: int, result) -> None:
        wall = time.perf_counter() - self.t0
        self.walls.append(wall)
        metrics = getattr(result, "metrics", None) or {}
        chance = ""
        if "chance_R1" in metrics and "chance_mAP" in metrics:
            chance = f" (chance: R1 {100 * metrics['chance_R1']:.2f}, mAP {100 * metrics['chance_mAP']:.2f})"
        self._say(f"{self._position(i)} {self.names[i]}: R1 {_interval(metrics, 'R1')}, "
                  f"mAP {_interval(metrics, 'mAP')}{chance} in {_duration(wall)}{self._left(i)}")

    def failed(self, i: int, error: BaseException) -> None:
        self.walls.append(time.perf_counter() - self.t0)
        self._say(f"{self._position(i)} {self.names[i]}: failed ({type(error).__name__}: {error}){self._left(i)}")
