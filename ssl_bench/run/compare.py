"""``ssl-bench compare ROW_A ROW_B``: are two leaderboard rows really different?

Each row's runs left their per-test-image predictions in their run directories
(``predictions.pt``, written by the one scoring sequence). Seed s of A is paired with seed s of B:
both were scored on the same test images, so the comparison is image by image: a paired bootstrap
95% interval of the difference over test images, pooled over the shared seeds, and McNemar's exact
test per seed (``ssl_bench.results.paired``). Predictions that no longer reproduce the stored
accuracy (a run re-scored since, a damaged file) are refused, never paired.
"""

from __future__ import annotations

from typing import Any

from ssl_bench.errors import SSLBenchError
from ssl_bench.eval.predictions import scored_predictions
from ssl_bench.results.paired import PairedComparison, compare_predictions
from ssl_bench.results.rows import ConfigRow, configuration_rows, find_row

#: The metrics ``compare`` can pair (the built-in evaluators' headline predictions).
COMPARABLE_METRICS: tuple[str, ...] = ("linear_top1", "knn_top1")


def row_predictions(row: ConfigRow, metric: str) -> dict[int, tuple[Any, Any]]:
    """seed -> (predictions [M], test labels [M]) of every run of ``row``; one line naming the run
    and the fix when a run has none, or ones that do not reproduce its stored accuracy."""
    out: dict[int, tuple[Any, Any]] = {}
    for e in row.runs:
        got = scored_predictions(e.run_dir, metric, e.metrics.get(metric))
        if got is None:
            raise SSLBenchError(f"run {e.run_id} of {row.label!r} (seed {e.seed}) has no stored {metric} predictions that "
                                f"reproduce its stored accuracy (scored before ssl-bench kept them, without that evaluator, "
                                f"or re-scored since). Fix: re-score it with `ssl-bench eval {e.run_dir}`")
        out[int(e.seed or 0)] = got
    return out


def compare_rows(
    store: Any, spec_a: str, spec_b: str, metric: str = "linear_top1", dataset: str | None = None, backbone: str | None = None,
) -> tuple[ConfigRow, ConfigRow, PairedComparison]:
    """The two rows ``spec_a`` / ``spec_b`` name (labels or run ids) and their paired comparison."""
    if metric not in COMPARABLE_METRICS:
        raise SSLBenchError(f"cannot compare on {metric!r}: predictions are kept for {', '.join(COMPARABLE_METRICS)}")
    rows = configuration_rows(store, dataset, backbone)  # the store read once for both look-ups
    a, b = find_row(store, spec_a, dataset, backbone, rows), find_row(store, spec_b, dataset, backbone, rows)
    if a.run_ids == b.run_ids:
        raise SSLBenchError(f"{spec_a!r} and {spec_b!r} are the same row ({a.label!r}); compare two different rows")
    return a, b, compare_predictions(row_predictions(a, metric), row_predictions(b, metric), metric)


def report(a: ConfigRow, b: ConfigRow, c: PairedComparison) -> str:
    """The comparison as the terminal shows it: the two means, the difference, McNemar per seed, the verdict."""
    lines = [
        f"{c.metric} on {a.dataset}, {a.backbone}: {c.n_images} test images, seeds {', '.join(map(str, sorted(c.mcnemar_p)))}",
        f"  A  {a.label}: {100 * c.mean_a:.1f}",
        f"  B  {b.label}: {100 * c.mean_b:.1f}",
        f"  A - B: {100 * c.diff:+.1f} points, {round(100 * c.confidence)}% paired bootstrap CI "
        f"[{100 * c.lo:+.1f}, {100 * c.hi:+.1f}] ({c.method})",
        "  per seed, A - B (McNemar exact p): " + ", ".join(
            f"seed {s}: {100 * c.seed_diff[s]:+.1f} (p {p:.3g})" for s, p in sorted(c.mcnemar_p.items())),
        c.verdict(a.label, b.label),
    ]
    return "\n".join(lines)
