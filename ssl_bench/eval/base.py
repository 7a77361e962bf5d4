"""Shared evaluator interface: every SSL method is scored by the same frozen-feature evaluators.

An evaluator sees only cached features and labels, never the model, so two methods can be compared
on exactly the same footing. Its result carries both the metrics and a JSON-serialisable record of
everything that defines the evaluation (the *protocol*), so a number in the results store can always
be traced back to how it was produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ssl_bench.errors import SSLBenchError


class EvalInputError(SSLBenchError, ValueError):
    """Features/labels handed to an evaluator are inconsistent; the message names the fix.

    Subclasses ``ValueError`` so plain Python callers can catch it as such, and ``SSLBenchError``
    so the CLI prints it as one clear line instead of a traceback.
    """


@dataclass
class EvalResult:
    """Metrics (accuracies are fractions in [0, 1]) plus the protocol that produced them.

    ``predictions`` (optional): metric name -> the predicted class of every test image [M] int64, in
    the test split's order, for the metrics that are a top-1 accuracy of one set of predictions. The
    run keeps them beside the features cache (``ssl_bench.eval.predictions``) so two rows can be
    compared image by image; they never go into ``metrics.json`` or the results store. An evaluator
    that leaves them out is scored as before, it just cannot be compared pairwise.
    """

    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, Tensor] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record: metrics and protocol (the predictions are tensors, kept apart)."""
        return {"metrics": dict(self.metrics), "protocol": dict(self.protocol)}


@runtime_checkable
class Evaluator(Protocol):
    """A frozen-feature evaluator: features in, metrics + protocol record out."""

    name: str

    def __call__(
        self,
        train_feats: Tensor,  # [N, D] float
        train_labels: Tensor,  # [N] int64
        test_feats: Tensor,  # [M, D] float
        test_labels: Tensor,  # [M] int64
        num_classes: int,
    ) -> EvalResult: ...


def check_features(name: str, feats: Tensor) -> None:
    """2-D, non-empty in D, finite. NaNs would otherwise silently turn into chance accuracy."""
    if not isinstance(feats, Tensor):
        raise EvalInputError(f"{name} must be a torch.Tensor, got {type(feats).__name__}; "
                             "convert with torch.as_tensor(...)")
    if feats.ndim != 2:
        raise EvalInputError(
            f"{name} must have shape [num_samples, dim], got shape {tuple(feats.shape)}; "
            "flatten or pool the backbone output to one vector per sample first"
        )
    if not feats.is_floating_point():
        raise EvalInputError(f"{name} must be floating point, got {feats.dtype}; cast with .float()")
    if feats.shape[1] == 0:
        raise EvalInputError(f"{name} has feature dimension 0; the feature extractor returned nothing")
    if feats.numel() and not bool(torch.isfinite(feats).all()):
        raise EvalInputError(
            f"{name} contains NaN or inf; the backbone diverged or the features were cast to a "
            "too-narrow dtype (e.g. float16 overflow). Re-extract features in float32."
        )


def check_labels(name: str, labels: Tensor, n: int, num_classes: int) -> None:
    """Labels must be 1-D ints, one per sample, all inside [0, num_classes)."""
    if not isinstance(labels, Tensor):
        raise EvalInputError(f"{name} must be a torch.Tensor, got {type(labels).__name__}; "
                             "convert with torch.as_tensor(..., dtype=torch.long)")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise EvalInputError(
            f"{name} must have shape [{n}] (one label per feature row), got {tuple(labels.shape)}; "
            "features and labels must come from the same pass over the dataset"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise EvalInputError(f"{name} must be an integer tensor, got {labels.dtype}; cast with .long()")
    if n == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise EvalInputError(
            f"{name} contains values outside [0, num_classes={num_classes}) (min={lo}, max={hi}); "
            "pass the dataset's total number of classes as num_classes, or remap labels to 0..C-1"
        )


def check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise EvalInputError(
            f"num_classes must be a positive int, got {num_classes!r}; pass the dataset's class "
            "count (not the number of unique labels seen in one split)"
        )


def check_eval_inputs(
    train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor | None,
    num_classes: int,
) -> None:
    """All the checks an evaluator needs before it does any work."""
    check_num_classes(num_classes)
    check_features("train_feats", train_feats)
    check_features("test_feats", test_feats)
    if train_feats.shape[0] == 0:
        raise EvalInputError(
            "train set is empty (train_feats has 0 rows); check the train split path/filter "
            "used for feature extraction"
        )
    if train_feats.shape[1] != test_feats.shape[1]:
        raise EvalInputError(
            f"feature dims differ: train_feats has D={train_feats.shape[1]}, test_feats has "
            f"D={test_feats.shape[1]}; extract both splits with the same backbone and pooling"
        )
    check_labels("train_labels", train_labels, train_feats.shape[0], num_classes)
    if test_labels is not None:
        check_labels("test_labels", test_labels, test_feats.shape[0], num_classes)


def top1_accuracy(preds: Tensor, labels: Tensor) -> float:
    """Fraction of exact matches; both [M] on any device."""
    if labels.numel() == 0:
        raise EvalInputError("test set is empty (0 rows); accuracy is undefined. Check the test split.")
    return float((preds.to(labels.device) == labels).double().mean().item())
