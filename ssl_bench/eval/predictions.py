"""Per-test-image predictions of a scored run, kept beside its features cache for paired comparisons.

Two rows can only be told apart honestly image by image (``ssl_bench.results.paired``), so every
scoring writes ``RUN_DIR/predictions.pt``::

    {"key": the features cache key (JSON-normalised: how the features are made, which weights),
     "labels": test labels [M] int64, in the test split's order,
     "evaluators": {evaluator name: {metric name: predicted classes [M] int64}}}

The file is written whole on every scoring (atomically), also when no evaluator returned predictions,
so it always belongs to the latest scoring; its ``key`` says which weights made it, exactly as the
features cache's does. Predictions never go into ``metrics.json`` or the results store: they are
M numbers per metric, and a store row is one number.

:func:`read_predictions` hands numpy arrays over, so the statistics (``ssl_bench.results``) need no
torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_bench.eval.features import normalised_key
from ssl_bench.files import atomic_torch_save

PREDICTIONS_NAME = "predictions.pt"

log = logging.getLogger("ssl_bench")


@dataclass
class Predictions:
    """A run's test predictions, read back: ``preds`` maps a metric name to its predicted classes [M]
    (int64, test-split order; a name two evaluators share is the later one's, as in ``metrics.json``'s
    flat view), ``labels`` the test labels [M], ``key`` the features key of the weights that made them,
    ``evaluator_of`` each metric's evaluator."""

    key: dict[str, Any]
    labels: np.ndarray  # [M] int64
    preds: dict[str, np.ndarray]  # metric -> [M] int64
    evaluator_of: dict[str, str] = field(default_factory=dict)

    def correct(self, metric: str) -> np.ndarray:
        """[M] bool: which test images ``metric``'s predictions get right."""
        return self.preds[metric] == self.labels

    def accuracy(self, metric: str) -> float:
        """The top-1 accuracy (fraction) these predictions give for ``metric``."""
        return float(self.correct(metric).mean())

    def disagreements(self, metrics: Mapping[str, float | None]) -> list[str]:
        """The metrics of ``metrics`` (a run's recorded values) whose accuracy these predictions do not
        reproduce: a sign that the file is not the one the recorded numbers came from."""
        n = self.labels.size
        return [m for m, v in metrics.items()
                if m in self.preds and v is not None and round(float(v) * n) != int(self.correct(m).sum())]


def scored_predictions(run_dir: str | Path | None, metric: str, stored: float | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(predictions [M], test labels [M]) of ``metric`` from ``run_dir``, only when they reproduce the
    run's ``stored`` accuracy: stale or missing predictions are never paired. None otherwise."""
    got = read_predictions(Path(run_dir)) if run_dir else None
    if got is None or metric not in got.preds or got.disagreements({metric: stored}):
        return None
    return got.preds[metric], got.labels


def write_predictions(
    run_dir: Path, key: Mapping[str, Any], labels: Tensor, by_evaluator: Mapping[str, Mapping[str, Tensor]],
) -> Path:
    """``RUN_DIR/predictions.pt`` for one scoring (replacing any earlier one, atomically); its path.

    ``key``: the features cache key (normalised here the way the cache normalises it); ``labels``:
    the test labels [M]; ``by_evaluator``: evaluator -> metric -> predictions [M] (any device)."""
    path = Path(run_dir) / PREDICTIONS_NAME
    atomic_torch_save(path, {
        "key": normalised_key(key),
        "labels": labels.detach().cpu().long(),  # [M]
        "evaluators": {ev: {m: p.detach().cpu().long() for m, p in preds.items()} for ev, preds in by_evaluator.items()},
    })
    return path


def _tensor_1d(x: Any, n: int | None) -> bool:
    return isinstance(x, Tensor) and x.ndim == 1 and x.dtype == torch.long and (n is None or x.numel() == n)


def read_predictions(run_dir: str | Path, expected_key: Mapping[str, Any] | None = None) -> Predictions | None:
    """The predictions of ``run_dir``, or None when there are none to pair: no file, a file that cannot
    be read or is malformed (a warning says which), or, with ``expected_key``, a file made with other
    weights or features (stale: it must never be paired with the run's current numbers). Without
    ``expected_key`` check :attr:`Predictions.key` or :meth:`Predictions.disagreements` yourself."""
    path = Path(run_dir) / PREDICTIONS_NAME
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling / zip error: not a usable file
        log.warning("predictions file %s is unreadable (%s: %s); re-score the run with ssl-bench eval", path, type(exc).__name__, exc)
        return None
    labels = data.get("labels") if isinstance(data, dict) else None
    evaluators = data.get("evaluators") if isinstance(data, dict) else None
    if not (_tensor_1d(labels, None) and isinstance(evaluators, dict) and isinstance(data.get("key"), dict)
            and all(isinstance(v, dict) and all(_tensor_1d(p, labels.numel()) for p in v.values()) for v in evaluators.values())):
        log.warning("predictions file %s is malformed; re-score the run with ssl-bench eval", path)
        return None
    if expected_key is not None and data["key"] != normalised_key(expected_key):
        return None
    preds: dict[str, np.ndarray] = {}
    evaluator_of: dict[str, str] = {}
    for ev, by_metric in evaluators.items():
        for metric, p in by_metric.items():
            preds[metric] = p.numpy()
            evaluator_of[metric] = ev
    return Predictions(key=data["key"], labels=labels.numpy(), preds=preds, evaluator_of=evaluator_of)
