"""Losses: batch-hard triplet (Eq. 9), softmax cross entropy (Eq. 10), inter-frame regulariser (Eq. 6),
combined as L_total + lambda * Reg (Eq. 7, Eq. 11); for STAN also its diversity term (core.models.stan), for
STAL outputs its Eq. 3-6 (`stal_terms`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from core.config import LossConfig
from core.models.sta import EPS
from core.models.stan import diversity_penalty
from core.models.stal import local_distance


def pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean (not squared) distances (B, D) -> (B, B), float32, from the differences a - b.

    Not the matmul expansion ||a||^2 + ||b||^2 - 2ab: with feature norms ~37 its float32 cancellation costs
    ~1.5e-5 relative precision on typical pairs and far more on close ones (the self-distance came out ~0.02).
    torch.cdist without the mm path gives ~1e-7 relative error, exactly 0 from a vector to itself, and a zero
    (finite) gradient there.
    """
    with torch.autocast(x.device.type, enabled=False):  # float32 even when called under autocast
        x = x.float()
        return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")


def batch_hard_triplet(feats: Tensor, targets: Tensor, margin: float = 0.3) -> Tensor:
    """Eq. 9 with its typo corrected [A9]: mean over anchors of
    [margin + max_p ||x_a - x_p|| - min_{n: other identity} ||x_a - x_n||]_+.

    The paper sums over the batch; we average over anchors (the usual implementation). An anchor with no
    negative in the batch contributes 0.
    """
    return batch_hard(pairwise_distances(feats), targets, margin)


def batch_hard(d: Tensor, targets: Tensor, margin: float) -> Tensor:
    """Mean over anchors of [margin + hardest positive - hardest negative]_+ on a (B, B) distance matrix."""
    same = targets[:, None] == targets[None, :]  # (B, B)
    hardest_pos = d.masked_fill(~same, float("-inf")).amax(1)
    hardest_neg = d.masked_fill(same, float("inf")).amin(1)
    return F.relu(margin + hardest_pos - hardest_neg).mean()


def inter_frame_reg(attention: Tensor, generator: torch.Generator | None = None, squared: bool = False) -> Tensor:
    """Eq. 6: ||g_i - g_j||_F for two distinct random frames i != j of each tracklet, averaged over the batch.

    attention: (B, N, h, w) maps of Eq. 1. squared=True gives the "square Frobenius norm" of the text [A8].
    Frame pairs are drawn with `generator` (on its device, CPU when None) so training is reproducible.
    Returns 0 when N == 1.
    """
    b, n = attention.shape[:2]
    if n < 2:
        return attention.new_zeros(())
    dev = generator.device if generator is not None else "cpu"
    i = torch.randint(n, (b,), generator=generator, device=dev)
    j = (i + torch.randint(1, n, (b,), generator=generator, device=dev)) % n  # uniform over the N-1 other frames
    rows = torch.arange(b, device=attention.device)
    i, j = i.to(attention.device), j.to(attention.device)
    diff = (attention[rows, i] - attention[rows, j]).float()  # (B, N, h, w) -> (B, h, w)
    sq = diff.square().sum((1, 2))  # (B, h, w) -> (B,)
    if squared:
        return sq.mean()
    # sqrt with a finite (zero) gradient where g_i == g_j
    return torch.where(sq > 0, sq.clamp_min(EPS).sqrt(), torch.zeros_like(sq)).mean()


@dataclass(frozen=True)
class StalWeights:
    """The weights of STAL's objective (Eq. 3, 4), as LossConfig's stal_* keys give them."""
    margin_global: float   # m_g
    margin_local: float    # m_l
    local_weight: float    # lambda of Eq. 4
    consist_weight: float  # [L6] weight of C_cons (Eq. 3: 1)

    @classmethod
    def from_config(cls, loss: LossConfig) -> "StalWeights":
        return cls(loss.stal_margin_global, loss.stal_margin_local, loss.stal_local_weight, loss.stal_consist_weight)


def stal_terms(out: dict, targets: Tensor, use_triplet: bool, margin_local: float,
               gather: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """STAL's local triplet (Eq. 4's second sum, unweighted) and consistency constraint (Eq. 6), unweighted.

    [L5] Eq. 4 sums over the triplets of a batch of one triplet; here batch-hard mining over the P x K batch with
    the local distance d_l (Eq. 8, `local_distance`), mean over anchors, as the global triplet. [L6] Eq. 5 and 6
    print the softmax probability itself; read as the cross entropy -log p, averaged over the B x N x R units
    (the paper sums over them) with one classifier W^r per part shared over frames.
    """
    parts, w = gather(out["parts"]), gather(out["part_weights"])  # (B, R, F), (B, R)
    triplet_local = batch_hard(local_distance(parts, w, parts, w), gather(targets), margin_local) if use_triplet \
        else parts.new_zeros(())
    logits = out["part_logits"]  # (B, N, R, K)
    units = logits.shape[1] * logits.shape[2]
    consist = F.cross_entropy(logits.flatten(0, 2).float(), targets.repeat_interleave(units))  # (B*N*R, K)
    return {"triplet_local": triplet_local, "consist": consist}


def compute_losses(out: dict, pids: Tensor, margin: float, use_triplet: bool, reg_weight: float, reg_squared: bool,
                   generator: torch.Generator | None = None,
                   gather: Callable[[Tensor], Tensor] | None = None, div_weight: float = 0.0,
                   div_squared: bool = True, stal: StalWeights | None = None) -> dict[str, Tensor]:
    """{"ce", "triplet", "reg", "div", "triplet_local", "consist", "total"} for a model output dict;
    total = ce + triplet + reg_weight * reg (Eq. 7, 11) + div_weight * div.

    STAL outputs (they carry "parts") need `stal` and give STAL's Eq. 3: "ce" is L_cls (Eq. 5, on the global
    feature), "triplet" the global triplet of Eq. 4 (margin m_g, not `margin`) and two more terms, "triplet_local"
    and "consist" (`stal_terms`, unweighted); total = ce + triplet + lambda * triplet_local + w_c * consist
    (+ reg_weight * reg).

    "reg" is the unweighted Eq. 6 value, computed (and detached) even when reg_weight is 0 so it can be logged.
    For frame-level training (frames_per_clip > 1) each label is repeated for the frames of its clip.
    `gather` (core.engine.device.gather_rows under torchrun) joins the ranks' features and labels so that
    batch-hard mining (Eq. 9) sees the whole P x K batch, as in one process.
    "div" is STAN's diversity term ||QQ^T - I||_F^2 on out["spatial"] [S5] (0 for models without it), logged like
    "reg": computed (and detached) even when div_weight is 0.
    """
    targets = pids.repeat_interleave(out["frames_per_clip"])  # (B,) -> (B * frames_per_clip,)
    ce = F.cross_entropy(out["logits"].float(), targets)  # Eq. 10 (averaged over the batch)
    gather = gather or (lambda x: x)
    is_stal = "parts" in out
    if is_stal and stal is None:
        raise ValueError("a STAL output needs its loss weights: compute_losses(..., stal=StalWeights(...))")
    feats, margin = (out["global"], stal.margin_global) if is_stal else (out["feat"], margin)
    triplet = batch_hard_triplet(gather(feats), gather(targets), margin) if use_triplet \
        else ce.new_zeros(())  # Eq. 9 (STAL: Eq. 4's global sum)
    reg = inter_frame_reg(out["attention"], generator, reg_squared)  # Eq. 6
    spatial = out.get("spatial")
    div = diversity_penalty(spatial, div_squared) if spatial is not None else ce.new_zeros(())  # STAN [S5]
    total = ce + triplet  # Eq. 11
    extra = stal_terms(out, targets, use_triplet, stal.margin_local, gather) if is_stal else {}
    if is_stal:  # STAL Eq. 3 and 4
        total = total + stal.local_weight * extra["triplet_local"] + stal.consist_weight * extra["consist"]
    if reg_weight > 0:
        total = total + reg_weight * reg  # Eq. 7
    else:
        reg = reg.detach()
    if div_weight > 0 and spatial is not None:
        total = total + div_weight * div
    else:
        div = div.detach()
    extra = extra or {"triplet_local": ce.new_zeros(()), "consist": ce.new_zeros(())}  # 0 unless STAL
    return {"ce": ce, "triplet": triplet, "reg": reg, "div": div, "total": total, **extra}
