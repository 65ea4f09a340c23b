"""How much to prune, PyTorch's rule: an int is a count, a float in [0, 1] a fraction of the
entries (or channels), rounded with Python's round()."""
from __future__ import annotations

import numbers


def check_amount(amount) -> None:
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(f"Invalid type for amount: {amount!r}. Must be int or float.")
    if (isinstance(amount, numbers.Integral) and amount < 0) or \
            (not isinstance(amount, numbers.Integral) and not 0.0 <= float(amount) <= 1.0):
        raise ValueError(f"amount={amount} should either be a float in the range [0, 1] or a non-negative integer")


def count_to_prune(amount, size: int) -> int:
    """How many of `size` entries `amount` prunes (ValueError when a count exceeds size)."""
    count = int(amount) if isinstance(amount, numbers.Integral) else round(float(amount) * size)
    if count > size:
        raise ValueError(f"amount={amount} should be smaller than the number of parameters to prune={size}")
    return count
