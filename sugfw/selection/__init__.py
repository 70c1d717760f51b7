"""Selection strategies behind one signature, and a registry pairing each with its feature kind.

To add a strategy: write ``sugfw/selection/<name>.py`` with a function of the
``SelectionStrategy`` signature and add one ``StrategySpec`` entry to ``STRATEGIES`` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from sugfw.errors import InvalidInputError
from sugfw.records import RecordIndex
from sugfw.registry import Registry
from sugfw.selection.alps import alps
from sugfw.selection.base import Selection, SelectionStrategy
from sugfw.selection.budget import check_budget, parse_budget, resolve_budget
from sugfw.selection.calr import calr
from sugfw.selection.fps import fps
from sugfw.selection.gscu import (
    gscu,
    gscu_content_aware,
    gscu_index_order,
    gscu_tie_aware,
    gscu_without_clustering,
    gscu_without_greedy,
    tie_share,
)
from sugfw.selection.probcover import probcover
from sugfw.selection.random_baseline import random_selection
from sugfw.selection.typiclust import typiclust, typiclust_sugfw

FeatureKind = Literal["pgdr", "mean"]
"""Which per-slice vector a strategy clusters: uncertainty-weighted (PGDR, Eq. 4-5) or plain mean
pooling of the patch features."""


@dataclass(frozen=True)
class StrategySpec:
    select: SelectionStrategy
    features: FeatureKind
    uses_content: bool = False
    """The strategy takes each slice's central brightness as a fifth argument."""

    def __post_init__(self) -> None:
        if self.features not in get_args(FeatureKind):
            raise InvalidInputError(
                f"feature kind {self.features!r} is unknown: "
                f"expected one of {get_args(FeatureKind)}"
            )

    def run(self, index: RecordIndex, budget: int, seed: int) -> Selection:
        """The strategy on a scored pool, with the inputs it declares."""
        features = index.features(self.features)
        if self.uses_content:
            if index.content is None or not np.isfinite(index.content).all():
                raise InvalidInputError(
                    "this strategy needs each slice's central brightness; the scored index has "
                    "none (rescore the slices with this version)"
                )
            return self.select(features, index.uncertainty, budget, seed, index.content)
        return self.select(features, index.uncertainty, budget, seed)


STRATEGIES: Registry[StrategySpec] = Registry(
    {
        "gscu": StrategySpec(gscu, "pgdr"),
        # GSCU with clusters visited by smallest member and ties to the lowest index (file order).
        "gscu_index_order": StrategySpec(gscu_index_order, "pgdr"),
        # GSCU with the slices at Û = 0.5 (no disagreement between views) queued last.
        "gscu_tie_aware": StrategySpec(gscu_tie_aware, "pgdr"),
        # Tie-aware GSCU that also queues the darkest-centred third of the pool last (label-free
        # prior for organ-centred scans; sugfw/content.py).
        "gscu_content_aware": StrategySpec(gscu_content_aware, "pgdr", uses_content=True),
        # "w/o PGDR" changes the features, not the selection rule.
        "gscu_no_pgdr": StrategySpec(gscu, "mean"),
        "gscu_no_clustering": StrategySpec(gscu_without_clustering, "pgdr"),
        "gscu_no_greedy": StrategySpec(gscu_without_greedy, "pgdr"),
        # Baselines of the paper's Table 1, all run on PGDR features as in the paper. Random is
        # reported as the mean over 5 seeds; TypiClust as its authors define it, and the SUGFW
        # authors' simplified variant beside it.
        "random": StrategySpec(random_selection, "pgdr"),
        "probcover": StrategySpec(probcover, "pgdr"),
        "fps": StrategySpec(fps, "pgdr"),
        "typiclust": StrategySpec(typiclust, "pgdr"),
        "typiclust_sugfw": StrategySpec(typiclust_sugfw, "pgdr"),
        "calr": StrategySpec(calr, "pgdr"),
        "alps": StrategySpec(alps, "pgdr"),
    },
    refusal="selection strategy {name!r} is unknown: expected one of {sorted_choices}",
)


def get_strategy(name: str) -> StrategySpec:
    """The registered strategy called ``name``."""
    return STRATEGIES.lookup(name)


__all__ = [
    "STRATEGIES",
    "FeatureKind",
    "Selection",
    "SelectionStrategy",
    "StrategySpec",
    "alps",
    "calr",
    "fps",
    "get_strategy",
    "gscu",
    "gscu_content_aware",
    "gscu_index_order",
    "gscu_tie_aware",
    "gscu_without_clustering",
    "gscu_without_greedy",
    "probcover",
    "random_selection",
    "check_budget",
    "parse_budget",
    "resolve_budget",
    "tie_share",
    "typiclust",
    "typiclust_sugfw",
]
