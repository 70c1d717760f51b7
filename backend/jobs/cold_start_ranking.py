"""Queue order of a project's scored slices: a GSCU variant over all of them, with the budget
resolved.

The budget sets GSCU's number of k-means clusters (its picks); the continuation ranks every other
slice, so each task gets a queue position. A project can be smaller than the configured budget
(or hold duplicate slices): the count is then lowered to what k-means can form, with a warning,
rather than leaving the project without an order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from backend.config import DEFAULT_COLD_START
from sugfw.records import RecordIndex, SliceRecord
from sugfw.selection import Selection, get_strategy, resolve_budget

log = logging.getLogger(__name__)


def cluster_count(budget: int | float, features: np.ndarray) -> int:
    """``budget`` resolved against the pool, capped at the pool size and at its distinct feature
    rows."""
    n = len(features)
    if isinstance(budget, int) and budget > n:
        log.warning("budget %d exceeds the %d scored tasks; planning for all %d", budget, n, n)
        budget = n
    count = resolve_budget(budget, n)
    distinct = len(np.unique(features, axis=0))
    if distinct < count:
        log.warning(
            "only %d of %d scored tasks are distinct slices; planning %d clusters instead of %d",
            distinct,
            n,
            distinct,
            count,
        )
        count = distinct
    return count


def plan_queue(
    records: Sequence[SliceRecord],
    budget: int | float,
    seed: int,
    strategy: str = DEFAULT_COLD_START,
) -> Selection:
    """``strategy`` over ``records``: ``ranks()`` gives every record's queue position,
    ``clusters`` its cluster."""
    spec = get_strategy(strategy)
    index = RecordIndex.from_records(records)
    return spec.run(index, cluster_count(budget, index.features(spec.features)), seed)
