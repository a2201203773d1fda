"""JSON records of results: numbers rounded once, the same way everywhere."""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["rounded"]


def rounded(value: Tensor | float | list | tuple, digits: int = 6) -> Any:
    """``value`` as JSON-ready floats rounded to ``digits``: a tensor or a (nested) list
    becomes nested lists of the same shape, a number a float."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return round(float(value), digits)
