"""Frozen-feature evaluators shared by every method: weighted k-NN (DINO) and linear probe (MAE)."""

from ssl_bench.eval.base import EvalInputError, EvalResult, Evaluator
from ssl_bench.eval.knn import KNNEvaluator, KNNProtocol, knn_predict
from ssl_bench.eval.linear_probe import LinearProbeEvaluator, LinearProbeProtocol
from ssl_bench.eval.predictions import PREDICTIONS_NAME, Predictions, read_predictions, scored_predictions

__all__ = [
    "EvalInputError",
    "EvalResult",
    "Evaluator",
    "KNNEvaluator",
    "KNNProtocol",
    "LinearProbeEvaluator",
    "LinearProbeProtocol",
    "PREDICTIONS_NAME",
    "Predictions",
    "knn_predict",
    "read_predictions",
    "scored_predictions",
]
