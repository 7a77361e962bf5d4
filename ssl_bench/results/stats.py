"""How sure a leaderboard number is: the mean over seeds, its spread, and a 95% interval.

Two things make an accuracy uncertain, and they are independent:

* **training randomness** (initialisation, data order, augmentation): seen as the spread of the
  seeds, and given as a Student-t interval of their mean (``scipy.stats.t``), which needs n >= 2;
* **the test set**: M test images are a sample, so even a fixed model's accuracy p is known only to
  a binomial interval (Wilson's, ``scipy.stats.binomtest(...).proportion_ci``). Every seed is scored
  on the same M images, so this part does not shrink with more seeds.

The interval of a row adds the two half-widths in quadrature (independent sources: their variances
add) around the mean; with one seed it is the Wilson interval alone. Differences between two rows
are judged by the paired test of ``ssl-bench compare``, which is sharper than comparing intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: The confidence of every interval ssl-bench reports.
CONFIDENCE = 0.95


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation with ddof=1), sd None for a single value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_sd of no values")
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


def seed_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """Half-width of the Student-t interval of the mean of ``values`` (None for fewer than 2)."""
    mean, sd = mean_sd(values)
    if sd is None:
        return None
    n = len(values)
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))


def wilson_interval(accuracy: float, n_test: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of an accuracy measured on ``n_test`` images (fractions)."""
    k = int(round(accuracy * n_test))
    ci = stats.binomtest(k, n_test).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def interval(
    values: Sequence[float], n_test: int | None, *, accuracy: bool, confidence: float = CONFIDENCE,
) -> tuple[float | None, float | None]:
    """The 95% interval of the mean of ``values`` (one per seed), as the module docstring says.

    ``accuracy``: the values are fractions scored on ``n_test`` images, so test-set sampling counts
    too (without ``n_test`` only the seed spread is known). Other metrics (an NLL) get the seed
    interval only. (None, None) when nothing can be said (one seed of a non-accuracy metric).
    """
    mean, _ = mean_sd(values)
    h_seed = seed_half_width(values, confidence) or 0.0
    if accuracy and n_test:
        w_lo, w_hi = wilson_interval(mean, n_test, confidence)
        lo = mean - math.hypot(h_seed, mean - w_lo)
        hi = mean + math.hypot(h_seed, w_hi - mean)
        return max(0.0, lo), min(1.0, hi)
    if len(values) < 2:
        return None, None
    return mean - h_seed, mean + h_seed


def summarise(
    values: Sequence[float], n_test: int | None, *, accuracy: bool, scale: float = 1.0, confidence: float = CONFIDENCE,
) -> dict[str, float | None]:
    """``{"mean", "sd", "lo", "hi"}`` of per-seed ``values`` (the 95% :func:`interval`), each times
    ``scale`` (100 for accuracies in percent); all None without values. The one summary the
    leaderboard and the deconstruction chain show."""
    if not values:
        return {"mean": None, "sd": None, "lo": None, "hi": None}
    mean, sd = mean_sd(values)
    lo, hi = interval(values, n_test, accuracy=accuracy, confidence=confidence)
    return {k: None if v is None else scale * v for k, v in (("mean", mean), ("sd", sd), ("lo", lo), ("hi", hi))}


def overlaps(a: tuple[float | None, float | None], b: tuple[float | None, float | None]) -> bool:
    """Whether two intervals share a point; an unknown interval cannot be told apart from anything."""
    if None in a or None in b:
        return True
    return not (a[1] < b[0] or b[1] < a[0])  # type: ignore[operator]
