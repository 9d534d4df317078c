"""Pairwise distances between feature sets, computed in torch (chunked).

Both the evaluation (query x gallery) and the re-ranking (all x all) go through this
module, so the fast re-ranking and its reference see bit-identical float32 distances
(their neighbour rankings then agree exactly; see ``rerank.py``).
"""
from __future__ import annotations

import contextlib
import typing
from dataclasses import dataclass

import numpy as np
import torch

from core.config import Distance

DISTANCES = typing.get_args(Distance)  # euclidean | cosine


@dataclass(frozen=True)
class PartLayout:
    """How a model's retrieval vector is read as a sum of distances (STAL's test distance, d = d_l + w * d_g).

    A row is [global (global_dim), part 1 .. part R (part_dim each), part weights (R)]. The distance of rows i, j
    is global_weight * d(global_i, global_j) + sum_r wt_i^r wt_j^r d(part_i^r, part_j^r) (STAL Eq. 8), d the
    chosen metric on each slice. A model declares it in its output ("layout"); others have none and are ranked by
    one distance over the whole vector.
    """
    global_dim: int
    num_parts: int
    part_dim: int
    global_weight: float = 1.0

    @property
    def width(self) -> int:
        return self.global_dim + self.num_parts * (self.part_dim + 1)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """[M, width] -> (global [M, global_dim], R x part [M, part_dim], weights [M, R])."""
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ValueError(f"features of shape {tuple(x.shape)} do not match the part layout {self} "
                             f"(rows of width {self.width})")
        parts = x[:, self.global_dim:self.width - self.num_parts]
        return x[:, :self.global_dim], list(parts.split(self.part_dim, 1)), x[:, self.width - self.num_parts:]


def parts_distance(q: torch.Tensor, g: torch.Tensor, layout: PartLayout, dist) -> torch.Tensor:
    """layout.global_weight * dist(global) + sum_r (wq^r wg^r) * dist(part r) -> [m, n].

    `dist(a, b)` gives one slice's [m, n] distances. The weight product is formed before it multiplies the
    distance, so a symmetric `dist` gives an exactly symmetric sum (the re-ranking relies on that).
    """
    qg, q_parts, qw = layout.split(q)
    gg, g_parts, gw = layout.split(g)
    out = dist(qg, gg).mul_(layout.global_weight)
    for r, (a, b) in enumerate(zip(q_parts, g_parts)):
        out.add_(dist(a, b).mul_(qw[:, r, None] * gw[None, :, r]))
    return out


def as_tensor(x, device=None, dtype=torch.float32) -> torch.Tensor:
    """numpy array or tensor -> tensor of `dtype` on `device` (None: keep a tensor's device, CPU for numpy)."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=dtype)


@contextlib.contextmanager
def full_precision_matmul():
    """Run float32 matmuls in full float32 (no TF32 / bf16 shortcuts set elsewhere), restore on exit."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def _euclidean_block(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Plain (not squared) Euclidean distances of rows a [p, d] to rows b [r, d] -> [p, r].

    ||a-b|| = sqrt(clamp(|a|^2 + |b|^2 - 2 a.b, min=0)); the clamp removes the small negative
    values that cancellation leaves for near-identical vectors.
    """
    d2 = torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.T, beta=1.0, alpha=-2.0)
    return d2.clamp_(min=0.0).sqrt_()


def pairwise_distance(q, g, metric: str = "euclidean", chunk: int = 2048, device=None,
                      layout: PartLayout | None = None) -> torch.Tensor:
    """Distance of every query feature to every gallery feature.

    Args:
        q: query features, numpy array or tensor of shape [m, d].
        g: gallery features, numpy array or tensor of shape [n, d].
        metric: "euclidean" (plain L2 distance, not squared) or "cosine" (1 - cosine similarity).
        chunk: query rows computed per matmul (bounds the temporaries to chunk x n).
        device: where to compute (None: the device of `q` if it is a tensor, else CPU).
        layout: None: one distance over the whole vector; a PartLayout: its weighted sum of the metric over the
            slices (``parts_distance``).

    Returns:
        float32 tensor of shape [m, n] on the compute device.
    """
    if metric not in DISTANCES:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(DISTANCES)}")
    q = as_tensor(q, device)
    g = as_tensor(g, q.device)
    if layout is not None:
        return parts_distance(q, g, layout, lambda a, b: pairwise_distance(a, b, metric, chunk))
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be [m, d] and [n, d], got {tuple(q.shape)} and {tuple(g.shape)}")
    out = torch.empty(q.shape[0], g.shape[0], dtype=torch.float32, device=q.device)
    with full_precision_matmul():
        if metric == "cosine":
            qn = torch.nn.functional.normalize(q, dim=1)
            gn = torch.nn.functional.normalize(g, dim=1)
            for s in range(0, q.shape[0], chunk):
                out[s:s + chunk] = 1.0 - qn[s:s + chunk] @ gn.T
            return out
        q_sq, g_sq = (q * q).sum(1), (g * g).sum(1)
        for s in range(0, q.shape[0], chunk):
            out[s:s + chunk] = _euclidean_block(q[s:s + chunk], g, q_sq[s:s + chunk], g_sq)
    return out


def self_euclidean(x, block: int = 1024, device=None, layout: PartLayout | None = None) -> torch.Tensor:
    """Plain Euclidean distances among all rows of x, exactly symmetric, zero diagonal.

    Only the blocks on and above the diagonal are multiplied (half the flops of x @ x.T),
    in place in the output; each is mirrored, so out[i, j] == out[j, i] bit for bit. The
    result depends only on x and `block`, so two callers with the same arguments get
    identical numbers.

    Args:
        x: features, numpy array or tensor of shape [N, d].
        block: side of the square blocks (temporaries: about one block x block float32).
        device: where to compute (None: x's device, CPU for numpy).
        layout: a PartLayout: the weighted sum of the slices' self_euclidean (still exactly symmetric, zero
            diagonal: ``parts_distance``).

    Returns:
        float32 tensor of shape [N, N] on the compute device.
    """
    x = as_tensor(x, device)
    if layout is not None:
        return parts_distance(x, x, layout, lambda a, _: self_euclidean(a, block))
    n = x.shape[0]
    sq = (x * x).sum(1)
    out = torch.empty(n, n, dtype=torch.float32, device=x.device)
    with full_precision_matmul():
        for s in range(0, n, block):
            e = min(s + block, n)
            for t in range(s, n, block):
                f = min(t + block, n)
                d = out[s:e, t:f]                                    # |a|^2 + |b|^2 - 2 a.b, in place
                torch.add(sq[s:e, None], sq[None, t:f], out=d)
                d.addmm_(x[s:e], x[t:f].T, beta=1.0, alpha=-2.0)
                d.clamp_(min=0.0).sqrt_()
                if t == s:  # diagonal block: keep its upper triangle, mirror it, zero the diagonal
                    upper = d.triu(1)
                    torch.add(upper, upper.T, out=d)
                else:
                    out[t:f, s:e] = d.T
    return out
