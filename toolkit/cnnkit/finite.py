"""Non-finite values (NaN, +Inf, -Inf) are failures, never numbers that happen to compare false.

``NaN > atol`` is False, so a check written as "fail when the difference exceeds the tolerance" passes on NaN;
every gate therefore counts non-finite values first, with :func:`nonfinite`, and fails on any.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cnnkit.errors import CnnkitError


@dataclass(frozen=True)
class NonFinite:
    """``count`` non-finite values in ``samples`` samples (rows of the first axis), the first in sample ``first``."""

    count: int
    samples: int
    first: int

    def describe(self, what: str = "value", sample: str = "sample") -> str:
        return (f"{self.count} non-finite {what}(s) (NaN/Inf) in {self.samples} {sample}(s), "
                f"first in {sample} {self.first}")


class NonFiniteError(CnnkitError):
    """A model whose outputs, or data whose values, hold NaN or Inf."""


def nonfinite(array: Any, offset: int = 0) -> NonFinite | None:
    """The non-finite values of ``array`` (first axis: samples), or None when all are finite.

    ``offset`` is added to the sample index (for batches of a larger set). Integer arrays are always finite.
    """
    import numpy as np  # lazily: the CLI's --help path imports this module

    a = np.asarray(array)
    if a.dtype.kind not in "fc" or a.size == 0:
        return None
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    per_sample = bad.reshape(len(a), -1).any(axis=1) if a.ndim else bad.reshape(1)
    return NonFinite(int(bad.sum()), int(per_sample.sum()), offset + int(np.flatnonzero(per_sample)[0]))


def merge(a: NonFinite | None, b: NonFinite | None) -> NonFinite | None:
    """Two counts of the same kind over consecutive batches (``b``'s indices already offset)."""
    if a is None or b is None:
        return a or b
    return NonFinite(a.count + b.count, a.samples + b.samples, min(a.first, b.first))


def require_finite(option: str, value: float | None) -> None:
    """A numeric option must be a number: ``nan`` or ``inf`` would make every comparison with it false."""
    if value is not None and not math.isfinite(value):
        raise CnnkitError(f"{option} must be a finite number, got {value}", hint=f"give a number, e.g. {option} 1")


def finite_or_none(value: float) -> float | None:
    """A figure for a JSON result: non-finite becomes None (null); the result states why beside it."""
    return float(value) if math.isfinite(value) else None


def number(value: float | None, spec: str = ".3g") -> str:
    """A figure as text; None (a figure that could not be computed: the result says why) as "-"."""
    return "-" if value is None else format(value, spec)
