"""Paired comparison of two rows on the same test images: is the gap between them real?

Two models scored on the same M test images make correlated errors (the hard images are hard for
both), so the honest test of their difference is *paired*: it looks at the images one of them gets
right and the other wrong, not at two independent accuracies each with its own sampling error.

* :func:`paired_bootstrap_ci` -- the difference of accuracies A - B with a bootstrap interval that
  resamples test images (the same images for every seed), pooled over the seeds both rows share
  (seed s of A paired with seed s of B). ``scipy.stats.bootstrap``.
* :func:`mcnemar_exact_p` -- McNemar's exact test on one seed's discordant pairs (McNemar 1947; the
  exact form is the two-sided binomial test of b successes in b + c trials at p = 1/2, Edwards 1948 /
  Agresti, *Categorical Data Analysis*, 10.1). ``scipy.stats.binomtest``.
* :func:`compare_predictions` -- both, from per-seed predictions and labels, as a
  :class:`PairedComparison` that can say its :meth:`~PairedComparison.verdict` in one sentence.

numpy and scipy only: the run path reads the predictions files (torch) and hands numpy arrays over.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from ..errors import SSLBenchError

#: Bootstrap elements (resamples x images) materialised at once; bounds memory for ImageNet's 50k images.
BOOTSTRAP_BATCH_ELEMENTS = 2**22


class PairingError(SSLBenchError, ValueError):
    """Two rows cannot be compared image by image (no common seed, different test images)."""


def _bool_matrix(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.dtype != np.bool_:
        raise PairingError(f"{name} must be a bool array [seeds, images] (True where a prediction is right), "
                           f"got {arr.dtype} of shape {arr.shape}; pass preds == labels")
    return arr


def paired_bootstrap_ci(
    correct_a: np.ndarray,  # [S, M] bool
    correct_b: np.ndarray,  # [S, M] bool
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(diff, lo, hi): accuracy of A minus accuracy of B (fractions), pooled over S seeds, and its
    ``confidence`` bootstrap interval over test images.

    Row s of A is paired with row s of B: the same seed, the same M test images. A resample draws M
    image indices with replacement and uses *those same images for every seed*, so the interval
    carries the test-set sampling error once, not S times. Because the pooled difference is a mean,
    ``mean_s mean_m (a[s, m] - b[s, m]) == mean_m d[m]`` with ``d[m] = mean_s (a[s, m] - b[s, m])``:
    resampling the columns of the [S, M] matrices is resampling the M per-image values ``d``, which is
    what is handed to ``scipy.stats.bootstrap`` (its jackknife then leaves out one image, every seed).

    Method: BCa (bias-corrected and accelerated; Efron 1987), scipy's default. The difference of two
    accuracies is a mean of values in {-1, -1/S, ..., 1}: discrete and, near a ceiling or with few
    discordant images, skewed. BCa corrects for the bias and skew of the bootstrap distribution and is
    second-order accurate, where the percentile interval is first-order. When BCa is undefined (a
    bootstrap distribution on one side of the estimate, or constant jackknife values) the percentile
    interval is used instead (:func:`paired_bootstrap` says which). Deterministic for a fixed ``seed``.
    """
    return paired_bootstrap(correct_a, correct_b, confidence, n_resamples, seed)[:3]


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0,
) -> tuple[float, float, float, str]:
    """:func:`paired_bootstrap_ci` plus the interval method used: ``"BCa"``, ``"percentile"`` (BCa
    undefined) or ``"exact"`` (every image has the same difference: no sampling variation at all)."""
    a, b = _bool_matrix("correct_a", correct_a), _bool_matrix("correct_b", correct_b)
    if a.shape != b.shape:
        raise PairingError(f"correct_a has shape {a.shape} but correct_b has {b.shape}; pair the same seeds on the same test images")
    if a.shape[1] == 0:
        raise PairingError("no test images to compare (M = 0); check the test split")
    if not 0 < confidence < 1:
        raise PairingError(f"confidence must be in (0, 1), got {confidence!r}; 0.95 gives a 95% interval")
    d = (a.astype(np.float64) - b.astype(np.float64)).mean(axis=0)  # [M] per-image difference, pooled over seeds
    diff = float(d.mean())
    if np.all(d == d[0]):  # no variation between images: every resample gives the same difference
        return diff, diff, diff, "exact"
    batch = max(1, BOOTSTRAP_BATCH_ELEMENTS // d.size)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning: handled by the fallback
            res = stats.bootstrap(
                (d,), np.mean, n_resamples=n_resamples, batch=batch, confidence_level=confidence,
                method=method, vectorized=True, rng=np.random.default_rng(seed),
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return diff, lo, hi, method
    raise PairingError("the bootstrap interval is undefined for these predictions; compare more test images")


def mcnemar_exact_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """McNemar's exact two-sided p for one seed: b = images only A gets right, c = only B gets right,
    p = ``binomtest(b, b + c, 0.5)``; 1.0 when there are no discordant images (nothing to test)."""
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1:
        raise PairingError(f"McNemar needs two bool arrays [M] of the same images, got shapes {a.shape} and {b_.shape}")
    only_a = int(np.sum(a & ~b_))
    only_b = int(np.sum(~a & b_))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _points(x: float) -> str:
    return f"{100 * x:.1f}"


@dataclass
class PairedComparison:
    """A - B on one metric, paired image by image over the seeds both rows have.

    Accuracies and the difference are fractions; :meth:`verdict` says them in percentage points.
    ``mcnemar_p``: seed -> McNemar's exact p of that seed's pair; ``seed_diff``: seed -> that pair's
    A - B, so a pooled "within noise" made of seeds that each differ, in opposite directions, is seen.
    """

    metric: str
    n_seeds: int
    n_images: int
    mean_a: float
    mean_b: float
    diff: float
    lo: float
    hi: float
    mcnemar_p: dict[int, float] = field(default_factory=dict)
    confidence: float = 0.95
    method: str = "BCa"
    seed_diff: dict[int, float] = field(default_factory=dict)

    def seeds_split(self, alpha: float = 0.05) -> bool:
        """Whether single seeds differ significantly (McNemar p < ``alpha``) in opposite directions."""
        signs = {np.sign(self.seed_diff[s]) for s, p in self.mcnemar_p.items() if p < alpha and s in self.seed_diff}
        return len(signs - {0.0}) > 1

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return self.lo > 0 or self.hi < 0

    def verdict(self, label_a: str = "A", label_b: str = "B") -> str:
        """One sentence: who is better and by how much, or that the two are within noise."""
        seeds = f"{self.n_seeds} seed{'s' if self.n_seeds != 1 else ''}"
        how = (f"({round(100 * self.confidence)}% paired bootstrap over {self.n_images} test images, "
               f"pooled over {seeds})")
        if self.lo > 0:
            return f"{label_a} is better by {_points(self.diff)} points [{_points(self.lo)}, {_points(self.hi)}] {how}"
        if self.hi < 0:
            return f"{label_b} is better by {_points(-self.diff)} points [{_points(-self.hi)}, {_points(-self.lo)}] {how}"
        split = ("; single seeds differ significantly in opposite directions, so the difference depends on the seed"
                 if self.seeds_split() else "")
        return (f"{label_a} and {label_b} are within noise: difference {_points(self.diff)} points "
                f"[{_points(self.lo)}, {_points(self.hi)}] {how}{split}")


Scored = Mapping[int, tuple[Any, Any]]  # seed -> (preds [M] int, labels [M] int)


def _as_ints(side: str, seed: int, what: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise PairingError(f"{side} seed {seed}: {what} must be one integer class per test image [M], "
                           f"got {arr.dtype} of shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def compare_predictions(
    a: Scored, b: Scored, metric: str, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0,
) -> PairedComparison:
    """Pair ``a`` and ``b`` (seed -> (predictions [M], test labels [M])) by seed and compare them.

    Only the seeds both sides have are used, in increasing order. Refused with one
    :class:`PairingError` line when no seed is shared, when a pair's labels differ (not the same test
    images, in the same order) or when the seeds were scored on different numbers of test images.
    """
    shared = sorted(set(a) & set(b))
    if not shared:
        raise PairingError(
            f"{metric}: A and B share no seed (A has seeds {sorted(a)}, B has {sorted(b)}); a paired comparison "
            "needs both scored at the same seed. Fix: run both with the same --seeds"
        )
    correct_a, correct_b = [], []
    for s in shared:
        pa, la = (_as_ints("A", s, w, x) for w, x in zip(("predictions", "labels"), a[s]))
        pb, lb = (_as_ints("B", s, w, x) for w, x in zip(("predictions", "labels"), b[s]))
        if pa.shape != la.shape or pb.shape != lb.shape:
            raise PairingError(f"{metric} seed {s}: predictions and labels differ in length "
                               f"(A {pa.size} vs {la.size}, B {pb.size} vs {lb.size}); the predictions file is damaged: re-score the run")
        if la.shape != lb.shape or not np.array_equal(la, lb):
            differ = "a different number of" if la.shape != lb.shape else f"{int(np.sum(la != lb))} different"
            raise PairingError(
                f"{metric} seed {s}: A and B were not scored on the same test images ({la.size} vs {lb.size} images, "
                f"{differ} labels); compare rows scored on the same dataset and limit_test"
            )
        if correct_a and la.size != correct_a[0].size:
            raise PairingError(f"{metric}: seed {s} has {la.size} test images but seed {shared[0]} has "
                               f"{correct_a[0].size}; compare rows scored on the same test split for every seed")
        correct_a.append(pa == la)
        correct_b.append(pb == lb)
    ca, cb = np.stack(correct_a), np.stack(correct_b)  # [S, M]
    diff, lo, hi, method = paired_bootstrap(ca, cb, confidence, n_resamples, seed)
    return PairedComparison(
        metric=metric, n_seeds=len(shared), n_images=int(ca.shape[1]),
        mean_a=float(ca.mean()), mean_b=float(cb.mean()), diff=diff, lo=lo, hi=hi,
        mcnemar_p={s: mcnemar_exact_p(ca[i], cb[i]) for i, s in enumerate(shared)},
        confidence=confidence, method=method,
        seed_diff={s: float(ca[i].mean() - cb[i].mean()) for i, s in enumerate(shared)},
    )
