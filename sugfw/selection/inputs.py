"""Input checks every selection strategy shares, so each rejects bad input with the same errors."""

from __future__ import annotations

from numbers import Integral

import numpy as np

from sugfw.errors import BudgetError, InvalidInputError
from sugfw.selection.budget import resolve_budget

_MAX_SEED = 2**32 - 1  # sklearn's random_state range


def check_inputs(
    features: np.ndarray, uncertainty: np.ndarray, budget: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated float64 copies of ``features`` (N, D) and ``uncertainty`` (N,), and the budget."""
    features = _real_array("features", features, "2-D array (N slices, D dims)", ndim=2)
    if features.shape[1] == 0:
        raise InvalidInputError(
            f"features have shape {features.shape}: expected at least 1 dim per slice"
        )
    n = features.shape[0]
    uncertainty = _real_array("uncertainty", uncertainty, "1-D array (N slices,)", ndim=1)
    if len(uncertainty) != n:
        raise InvalidInputError(
            f"uncertainty has {len(uncertainty)} values but features have {n} rows: "
            "expected one per slice"
        )
    if isinstance(budget, bool) or not isinstance(budget, Integral):
        raise BudgetError(
            f"budget {budget!r} is not an int count: strategies take a count in [1, {n}]; "
            "convert a ratio with resolve_budget first"
        )
    budget = resolve_budget(budget, n)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed <= _MAX_SEED:
        raise InvalidInputError(f"seed {seed!r} is invalid: expected an int in [0, 2**32 - 1]")
    return features, uncertainty, budget


def l2_normalised(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; a zero row has no direction, so it is an error."""
    norms = np.linalg.norm(features, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise InvalidInputError(
            f"features have {zero.size} all-zero rows (first at slice {int(zero[0])}): "
            "expected non-zero rows, since this strategy L2-normalises or compares directions"
        )
    return features / norms[:, None]


def require_distinct_rows(features: np.ndarray, n_clusters: int) -> None:
    """Clustering into ``n_clusters`` non-empty groups needs that many distinct rows."""
    n_distinct = len(np.unique(features, axis=0))
    if n_distinct < n_clusters:
        raise BudgetError(
            f"budget needs {n_clusters} clusters, but the features have only "
            f"{n_distinct} distinct rows among {len(features)}; "
            f"lower the budget so that at most {n_distinct} clusters are needed"
        )


def _real_array(name: str, value: object, expected: str, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"{name} cannot be read as an array ({err}): expected a {expected}"
        ) from err
    if array.ndim != ndim:
        raise InvalidInputError(f"{name} has shape {array.shape}: expected a {expected}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InvalidInputError(
            f"{name} has dtype {array.dtype}: expected real numbers in a {expected}"
        )
    array = array.astype(np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(k) for k in np.argwhere(bad)[0])
        raise InvalidInputError(
            f"{name} has {int(bad.sum())} non-finite values (first at index {first}): "
            "expected finite numbers"
        )
    return array
