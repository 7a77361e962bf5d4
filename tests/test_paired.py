"""Paired comparison maths (ssl_bench.results.paired) against scipy on fixed inputs.

The expected numbers were computed once in a scratch shell with scipy 1.17 directly (not through the
code under test) and are written here as literals:

    d = (A.astype(float) - B).mean(0)                     # per-image difference, pooled over seeds
    stats.bootstrap((d,), np.mean, n_resamples=9999, confidence_level=0.95, method=M,
                    vectorized=True, rng=np.random.default_rng(0))
    stats.binomtest(b, b + c, 0.5).pvalue                 # McNemar exact, per seed
"""

from __future__ import annotations

import numpy as np
import pytest

from ssl_bench.errors import SSLBenchError
from ssl_bench.results.paired import (
    PairedComparison,
    PairingError,
    compare_predictions,
    mcnemar_exact_p,
    paired_bootstrap,
    paired_bootstrap_ci,
)

# Two seeds x 40 test images, True where the prediction is right.
A = np.array([
    [1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
], dtype=bool)
B = np.array([
    [1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1],
    [0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0],
], dtype=bool)


def test_bootstrap_pooled_over_seeds_matches_scipy_bca():
    diff, lo, hi = paired_bootstrap_ci(A, B)
    assert diff == pytest.approx(0.2125, abs=1e-15)  # 0.825 - 0.6125
    assert (lo, hi) == pytest.approx((0.05, 0.3625), abs=1e-12)
    assert paired_bootstrap(A, B)[3] == "BCa"


def test_bootstrap_one_seed_matches_scipy_and_is_deterministic():
    diff, lo, hi = paired_bootstrap_ci(A[0], B[0])
    assert diff == pytest.approx(0.1, abs=1e-15)  # 0.725 - 0.625
    assert (lo, hi) == pytest.approx((-0.075, 0.275), abs=1e-12)
    assert paired_bootstrap_ci(A[0], B[0]) == (diff, lo, hi)


def test_bootstrap_pairs_images_across_seeds():
    """Shuffling the images of one seed only breaks the pairing: the interval must change (the same
    image indices are drawn for every seed), although both accuracies stay the same."""
    shuffled = B.copy()
    shuffled[1] = B[1][np.random.default_rng(1).permutation(40)]
    assert paired_bootstrap_ci(A, shuffled)[0] == pytest.approx(0.2125)
    assert paired_bootstrap_ci(A, shuffled)[1:] != paired_bootstrap_ci(A, B)[1:]


def test_bootstrap_without_any_variation_is_exact():
    same = np.ones((2, 10), dtype=bool)
    assert paired_bootstrap(same, same) == (0.0, 0.0, 0.0, "exact")
    assert paired_bootstrap(same, ~same) == (1.0, 1.0, 1.0, "exact")


def test_bootstrap_refuses_mismatched_shapes():
    with pytest.raises(PairingError, match="shape"):
        paired_bootstrap_ci(A, B[:, :30])


def test_mcnemar_exact_on_hand_made_table():
    # b = 10 images only A gets right, c = 2 only B gets right, 5 both right, 3 both wrong.
    a = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3, dtype=bool)
    assert mcnemar_exact_p(a, b) == pytest.approx(0.03857421875, rel=1e-12)  # 2 * sum_{k<=2} C(12,k) / 2**12
    assert mcnemar_exact_p(b, a) == pytest.approx(0.03857421875, rel=1e-12)  # two-sided: symmetric
    assert mcnemar_exact_p(a, a) == 1.0  # no discordant pairs


def test_mcnemar_per_seed_matches_scipy():
    assert mcnemar_exact_p(A[0], B[0]) == pytest.approx(0.4239501953125, rel=1e-12)  # b=9, c=5
    assert mcnemar_exact_p(A[1], B[1]) == pytest.approx(0.004425048828125, rel=1e-12)  # b=16, c=3


LABELS = np.arange(40) % 3


def _scored(correct: np.ndarray, seeds: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """seed -> (predictions right exactly where ``correct`` says, labels)."""
    return {s: (np.where(c, LABELS, (LABELS + 1) % 3), LABELS.copy()) for s, c in zip(seeds, correct)}


def test_compare_predictions_pairs_the_shared_seeds():
    a = _scored(np.vstack([A, B[:1]]), [0, 1, 5])  # seed 5 only in A
    b = _scored(np.vstack([B, A[:1]]), [0, 1, 7])  # seed 7 only in B
    cmp = compare_predictions(a, b, "knn_top1")
    assert (cmp.metric, cmp.n_seeds, cmp.n_images) == ("knn_top1", 2, 40)
    assert (cmp.mean_a, cmp.mean_b) == pytest.approx((0.825, 0.6125))
    assert (cmp.diff, cmp.lo, cmp.hi) == pytest.approx((0.2125, 0.05, 0.3625), abs=1e-12)
    assert cmp.mcnemar_p == pytest.approx({0: 0.4239501953125, 1: 0.004425048828125}, rel=1e-12)
    assert cmp.verdict("mae", "noise") == (
        "mae is better by 21.2 points [5.0, 36.2] (95% paired bootstrap over 40 test images, pooled over 2 seeds)"
    )


def test_compare_predictions_refuses_rows_without_a_common_seed():
    with pytest.raises(PairingError) as err:
        compare_predictions(_scored(A, [0, 1]), _scored(B, [2, 3]), "linear_top1")
    msg = str(err.value)
    assert isinstance(err.value, SSLBenchError) and "\n" not in msg
    assert "A has seeds [0, 1], B has [2, 3]" in msg and "--seeds" in msg


def test_compare_predictions_refuses_different_test_images():
    b = _scored(B, [0, 1])
    b[1] = (b[1][0], (b[1][1] + 1) % 3)
    with pytest.raises(PairingError, match="seed 1: A and B were not scored on the same test images"):
        compare_predictions(_scored(A, [0, 1]), b, "linear_top1")
    short = {0: (LABELS[:30], LABELS[:30])}
    with pytest.raises(PairingError, match="40 vs 30 images"):
        compare_predictions(_scored(A[:1], [0]), short, "linear_top1")


def _comparison(diff: float, lo: float, hi: float) -> PairedComparison:
    return PairedComparison("linear_top1", n_seeds=3, n_images=360, mean_a=0.9, mean_b=0.9 - diff, diff=diff, lo=lo, hi=hi)


def test_verdict_when_the_interval_excludes_zero():
    assert _comparison(0.021, 0.008, 0.034).verdict("A", "B") == (
        "A is better by 2.1 points [0.8, 3.4] (95% paired bootstrap over 360 test images, pooled over 3 seeds)"
    )
    assert _comparison(-0.021, -0.034, -0.008).verdict("A", "B") == (
        "B is better by 2.1 points [0.8, 3.4] (95% paired bootstrap over 360 test images, pooled over 3 seeds)"
    )


def test_verdict_within_noise():
    assert _comparison(0.004, -0.011, 0.019).verdict("A", "B") == (
        "A and B are within noise: difference 0.4 points [-1.1, 1.9] "
        "(95% paired bootstrap over 360 test images, pooled over 3 seeds)"
    )
    one_seed = PairedComparison("knn_top1", 1, 40, 0.725, 0.625, 0.1, -0.075, 0.275)
    assert one_seed.verdict("x", "y").endswith("pooled over 1 seed)")


def test_verdict_says_when_single_seeds_split_in_opposite_directions():
    """Pooled within noise, but seed 0 has A significantly ahead and seed 1 B: the verdict says so."""
    split = PairedComparison("linear_top1", 2, 360, 0.80, 0.80, 0.0, -0.01, 0.01,
                             mcnemar_p={0: 0.001, 1: 0.002}, seed_diff={0: 0.05, 1: -0.05})
    assert split.seeds_split() and split.verdict("A", "B").endswith("so the difference depends on the seed")
    same = PairedComparison("linear_top1", 2, 360, 0.80, 0.80, 0.0, -0.01, 0.01,
                            mcnemar_p={0: 0.001, 1: 0.5}, seed_diff={0: 0.05, 1: -0.05})
    assert not same.seeds_split() and same.verdict("A", "B").endswith("pooled over 2 seeds)")
