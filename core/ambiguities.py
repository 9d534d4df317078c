"""Which config key decides which ambiguity of the paper (`../shared/paper/ambiguities.md`, items A1..A16; A17 is
ours, see core/config.py), as data: the reports' protocol line tags each key with its item from here, and
tests/test_ambiguities.py checks that every item is either decided by a key here or fixed in code (FIXED)."""
from __future__ import annotations

# config key -> ambiguity item (A15 has two parts: a gallery, b AP rule)
AMBIGUITY: dict[str, str] = {
    "model.attention": "A1",
    "model.remainder": "A4",
    "model.f2_weights": "A5",
    "model.feat_dim": "A7",
    "loss.reg_weight": "A8", "loss.reg_squared": "A8",
    "data.epoch_def": "A10", "train.epochs": "A10", "train.milestones": "A10",
    "data.height": "A11", "data.width": "A11",
    "data.train_sampling": "A12", "eval.sampling": "A12",
    "data.gallery_with_queries": "A15a",
    "eval.ap_rule": "A15b",
    "eval.rerank": "A16", "eval.rerank_k1": "A16", "eval.rerank_k2": "A16", "eval.rerank_lambda": "A16",
    "data.flip_per": "A17",
}

# items with one reading, decided in code rather than by a key (experiments/README.md says which)
FIXED: dict[str, str] = {
    "A2": "core/models/sta.py block_scores (Eq. 3 is a block sum)",
    "A3": "core/models/sta.py normalize_scores (Eq. 4 over the N frames)",
    "A6": "core/models/sta.py fuse_maps / fuse_pooled (Alg. 1: per region, the frame with the highest score)",
    "A9": "core/losses.py batch-hard triplet (Eq. 9's hardest negative over j != i)",
    "A13": "core/models/model.py (image baselines: mean of the N frame features)",
    "A14": "core/evaluation/metrics.py (R1, R5, R10, R20 and mAP for every run)",
}


def tag(key: str) -> str:
    """' [A15b]' for a key that decides an ambiguity, '' otherwise."""
    return f" [{AMBIGUITY[key]}]" if key in AMBIGUITY else ""
