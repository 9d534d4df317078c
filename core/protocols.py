"""The evaluation protocols every run is scored under [A15]; torch-free (the reports use it too).

The paper never states its protocol, and the codebases it could have used differ in the gallery and the AP rule.
Every run is scored under both named protocols from one feature extraction, plus the headline protocol picked by
the run's own options (``data.gallery_with_queries`` [A15a], ``eval.ap_rule`` [A15b]):

* ``official``: the dataset's released evaluation. MARS (``test_mars.m``): the gallery is every test tracklet but
  junk, the 1,980 queries included (11,310), trapezoid AP. DukeMTMC-VideoReID: ``gallery/`` as released (its 702
  query tracklets included), non-interpolated AP. Synthetic data (MARS layout): as MARS.
* ``gao``: Gao & Nevatia's video re-ID code (also torchreid): the gallery without the query tracklets (9,330 on
  MARS), non-interpolated (step) AP. Its recipe (identity sampling, 800 epochs, steps at 200/400) is the paper's.

Under all of them a gallery item with the query's identity and camera is ignored, junk (identity -1) never counts
and distractors (identity 0) stay as negatives; a query left with no valid match is skipped and counted.

Metric names (percent; flat names, logged in MLflow under core.record's '/' sections: ``Headline/R1``,
``official/R1``, ``rerank/mAP``): headline ``R1 R5 R10 R20 mAP`` (and ``rerank_*``), then ``official_R1`` …
``official_mAP``, ``gao_R1`` … ``gao_mAP`` (and ``official_rerank_*``, ``gao_rerank_*``); per protocol also
``<prefix>num_queries`` (queries with a valid match), ``<prefix>num_skipped_queries`` (without one) and
``<prefix>num_gallery``; ``rerank_set_size`` is the number of distinct tracklets re-ranked. The chance level of
each protocol's split (the expected results of a uniformly random ranking, ``core.evaluation.chance``):
``chance_R1`` … ``chance_mAP`` (headline), ``official_chance_R1`` …, ``gao_chance_R1`` … (percent), its CMC curve
beside the run's in ``cmc.json`` (key ``chance``); every such name comes from ``chance_name``.
"""
from __future__ import annotations

from dataclasses import dataclass

NAMES = ("official", "gao")   # the named protocols, in report order
CHANCE = "chance_"            # the one place that names chance-level metrics (see chance_name)


def chance_name(metric: str, prefix: str = "") -> str:
    """MLflow name of the chance level of `metric` ('R1' … 'mAP', 'cmc') under a protocol prefix ('' headline,
    'official_', 'gao_'): 'chance_R1', 'gao_chance_mAP'."""
    return f"{prefix}{CHANCE}{metric}"


@dataclass(frozen=True)
class Protocol:
    name: str                       # "official" | "gao" | "headline"
    gallery_with_queries: bool      # [A15a]
    ap_rule: str                    # [A15b] trapezoid | step

    @property
    def prefix(self) -> str:
        """Prefix of its MLflow metric names: '' for the headline, 'official_', 'gao_'."""
        return "" if self.name == "headline" else f"{self.name}_"

    def describe(self, dataset: str) -> str:
        gallery = ("`gallery/` as released, query tracklets included" if dataset == "duke" and self.gallery_with_queries
                   else "gallery with the query tracklets" if self.gallery_with_queries
                   else "gallery without the query tracklets")
        ap = "trapezoid AP" if self.ap_rule == "trapezoid" else "non-interpolated (step) AP"
        return f"{gallery}, {ap}"


def named(dataset: str) -> dict[str, Protocol]:
    """{'official': ..., 'gao': ...} for a dataset (mars | duke | synthetic)."""
    return {"official": Protocol("official", True, "step" if dataset == "duke" else "trapezoid"),
            "gao": Protocol("gao", False, "step")}


def title(name: str, dataset: str) -> str:
    """Who uses a named protocol, for reports."""
    if name == "official":
        return ("DukeMTMC-VideoReID's released evaluation" if dataset == "duke"
                else "official MARS evaluation (test_mars.m)")
    return "Gao & Nevatia's code (and torchreid)" if name == "gao" else "headline"


def headline(dataset: str, gallery_with_queries: bool, ap_rule: str) -> Protocol:
    """The protocol of the R1..mAP metrics: the gallery as loaded and eval.ap_rule. The DukeMTMC-VideoReID loader
    keeps `gallery/` as released (queries included) whatever data.gallery_with_queries says."""
    return Protocol("headline", gallery_with_queries or dataset == "duke", ap_rule)


def headline_name(dataset: str, gallery_with_queries: bool, ap_rule: str) -> str | None:
    """The named protocol the headline metrics equal ('official' or 'gao'), or None for another combination."""
    h = headline(dataset, gallery_with_queries, ap_rule)
    return next((n for n, p in named(dataset).items()
                 if (p.gallery_with_queries, p.ap_rule) == (h.gallery_with_queries, h.ap_rule)), None)
