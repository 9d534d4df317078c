"""Evaluation: distances, CMC/mAP under the MARS protocol [A14, A15], k-reciprocal re-ranking [A16], and one
extraction scored under every protocol (``scoring``, protocols in ``core.protocols``).

Fast, vectorised implementations; ``core.evaluation.reference`` holds the straightforward
per-query / per-item versions they are tested and benchmarked against.
"""
from core.evaluation.distance import pairwise_distance, self_euclidean
from core.evaluation.metrics import AP_RULES, evaluate
from core.evaluation.reference import evaluate_reference, k_reciprocal_rerank_reference
from core.evaluation.rerank import k_reciprocal_rerank
from core.evaluation.scoring import PER_QUERY_COLUMNS, Scores, score_protocols

__all__ = ["AP_RULES", "PER_QUERY_COLUMNS", "Scores", "evaluate", "evaluate_reference", "k_reciprocal_rerank",
           "k_reciprocal_rerank_reference", "pairwise_distance", "score_protocols", "self_euclidean"]
