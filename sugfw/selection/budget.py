"""Turn an annotation budget (a count or a ratio of the pool) into a count of slices.

Rounding rule for ratios: ``count = floor(ratio * n + 1/2)`` (round half up), computed in exact
decimal arithmetic on the ratio as Python prints it, then raised to at least 1. So 0.005 of 7040
slices is 35.2 -> 35, 0.05 of 50 is 2.5 -> 3, and 0.145 of 100 is 14.5 -> 15 (a float product
would give 14.499999999999998 and round down). The authors' code truncates (``int(ratio * n)``);
round half up keeps the budget closest to the stated ratio.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from numbers import Integral, Real

from sugfw.errors import BudgetError

_ALLOWED = "an int count in [1, {n}] or a float ratio strictly between 0 and 1"


def resolve_budget(budget: int | float, n: int) -> int:
    """Number of slices to select from a pool of ``n``: ints are counts, floats ratios of ``n``."""
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise BudgetError(
            f"pool size n={n!r} is invalid: expected an int >= 1 (no slices to select from)"
        )
    n = int(n)
    if isinstance(budget, bool):
        raise BudgetError(f"budget {budget!r} is a bool; expected {_ALLOWED.format(n=n)} (n={n})")
    if isinstance(budget, Integral):
        if not 1 <= budget <= n:
            raise BudgetError(
                f"budget {int(budget)} is out of range for n={n} slices; "
                f"expected {_ALLOWED.format(n=n)}"
            )
        return int(budget)
    if isinstance(budget, Real):
        return _count_from_ratio(float(budget), n)
    raise BudgetError(
        f"budget {budget!r} has type {type(budget).__name__}; "
        f"expected {_ALLOWED.format(n=n)} (n={n})"
    )


def _count_from_ratio(ratio: float, n: int) -> int:
    if math.isnan(ratio) or math.isinf(ratio):
        raise BudgetError(
            f"budget ratio {ratio!r} is not finite; expected {_ALLOWED.format(n=n)} (n={n})"
        )
    if ratio == 1.0:
        # 1.0 could mean "all slices" or "one slice"; a count says which.
        raise BudgetError(
            f"budget ratio 1.0 is ambiguous for n={n}: "
            f"use the count ({n} for all slices, 1 for one)"
        )
    if not 0.0 < ratio < 1.0:
        raise BudgetError(
            f"budget ratio {ratio!r} is out of range for n={n} slices; "
            f"expected {_ALLOWED.format(n=n)}"
        )
    exact = Decimal(repr(ratio)) * n
    return max(1, int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def parse_budget(text: str, name: str = "budget", check: bool = True) -> int | float:
    """ "35" → a count, "0.01" → a ratio of the pool; with ``check``, ``check_budget`` on it."""
    try:
        budget: int | float = int(text)
    except ValueError:
        try:
            budget = float(text)
        except ValueError:
            raise BudgetError(
                f"{name}={text!r}: expected a count (35) or a ratio of the pool (0.01)"
            ) from None
    if check:
        check_budget(budget, name)
    return budget


def check_budget(budget: object, name: str = "budget") -> None:
    """A count of at least 1 or a ratio strictly between 0 and 1.

    The pool size is not known yet; ``resolve_budget`` checks a count against it when selecting.
    """
    if isinstance(budget, bool) or not isinstance(budget, Real):
        raise BudgetError(f"{name}={budget!r}: expected a count (35) or a ratio of the pool (0.01)")
    if isinstance(budget, Integral):
        if budget < 1:
            raise BudgetError(f"{name}={budget}: a count must be at least 1")
    elif not 0 < budget < 1:
        raise BudgetError(f"{name}={budget}: a ratio must lie strictly between 0 and 1")
