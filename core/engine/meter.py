"""Per-epoch training figures kept on the device, read once per logging interval (no host sync per iteration).

``LossMeter`` sums the loss terms and the classifier hits in a device tensor and remembers, still on the device,
the first iteration whose terms were not finite; ``read`` copies all of it to the host in one transfer.
``StepTimer`` times the training steps alone (CUDA events on a GPU, so no sync per step; wall clock on a CPU).
"""
from __future__ import annotations

import time
from typing import Sequence

import torch


class LossMeter:
    def __init__(self, terms: Sequence[str], device: torch.device):
        self.terms = tuple(terms)
        n = len(self.terms)
        self.sums = torch.zeros(n, dtype=torch.float64, device=device)
        self.hits = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # iteration, -1: none
        self.bad_values = torch.zeros(n, dtype=torch.float64, device=device)    # the terms at that iteration
        self.iterations = self.seen = 0

    def add(self, iteration: int, losses: dict[str, torch.Tensor], logits: torch.Tensor,
            labels: torch.Tensor) -> None:
        """Accumulate one iteration's loss terms (scalars) and hits of logits (B, C) on labels (B,)."""
        values = torch.stack([losses[k].detach().to(torch.float64) for k in self.terms])
        self.sums += values
        self.hits += (logits.detach().argmax(1) == labels).sum()
        new_bad = (self.first_bad < 0) & ~torch.isfinite(values).all()
        self.first_bad = torch.where(new_bad, iteration, self.first_bad)
        self.bad_values = torch.where(new_bad, values, self.bad_values)
        self.iterations += 1
        self.seen += labels.numel()

    def read(self) -> dict:
        """{"means": {term: mean so far}, "train_acc", "first_bad": None or (iteration, {term: value})}: one copy."""
        host = torch.cat([self.sums, self.hits.double()[None], self.first_bad.double()[None],
                          self.bad_values]).tolist()
        n = len(self.terms)
        sums, hits, first_bad, bad = host[:n], host[n], int(host[n + 1]), host[n + 2:]
        k = max(self.iterations, 1)
        return {"means": {t: s / k for t, s in zip(self.terms, sums)}, "train_acc": hits / max(self.seen, 1),
                "first_bad": None if first_bad < 0 else (first_bad, dict(zip(self.terms, bad)))}


class StepTimer:
    """Sum of the durations of the spans between start() and stop(); seconds() waits for the device."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: list = []
        self.total = 0.0
        self._start = None

    def start(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.spans.append((self._start, end))
        else:
            self.total += time.perf_counter() - self._start

    def seconds(self) -> float:
        if self.cuda and self.spans:
            self.spans[-1][1].synchronize()
            self.total += sum(s.elapsed_time(e) for s, e in self.spans) / 1000.0
            self.spans = []
        return self.total
