"""The one scoring sequence, used by a new run, a resume, ``ssl-bench eval`` and every baseline:

    frozen features (cached, keyed by the weights that made them)
      -> evaluators that need the model (the augmented linear probe; every rank takes part)
      -> evaluators on the cached features (main rank)
      -> the method's own evaluations (a diffusion model's NLL)
      -> every result checked, then recorded (and each evaluator's test predictions kept)

An evaluator is code from any package, so what it returns is checked before anything is written:
an exception, a result that is not ``EvalResult``-like, a metric that is not a finite number, an
accuracy outside [0, 1] (a percentage), or predictions that are not one class per test image is one
line naming the evaluator and its package, and nothing (no ``metrics.json``, no store row, no
``predictions.pt``) is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssl_bench.errors import SSLBenchError
from ssl_bench.eval.features import cached_features
from ssl_bench.eval.predictions import write_predictions
from ssl_bench.files import atomic_write_text
from ssl_bench.results.records import metric_value_problem
from ssl_bench.run.build import BuiltEvaluator

METRICS_JSON = "metrics.json"

#: {evaluator: (metrics, protocol)}, the shape the store and metrics.json take.
Recorded = dict[str, tuple[dict[str, float], dict[str, Any]]]


class EvaluatorError(SSLBenchError):
    """An evaluator failed or returned something that cannot be recorded; nothing was written."""


@dataclass
class Subject:
    """What is scored: a feature function and how it is described and cached."""

    fn: Callable[[torch.Tensor], torch.Tensor]  # normalised images [N, C, H, W] -> features [N, D]
    cache_key: dict[str, Any]  # the features cache is reused only for an equal key (weights included)
    feature: Any  # the "features" entry of every metric's protocol record
    label: str = ""  # progress-bar prefix
    extra: Callable[[], Sequence[tuple[str, Any]]] | None = None  # the method's own evaluations
    extra_source: str = ""  # who provides ``extra`` (for messages), e.g. "method 'ddm' from package 'ssl-bench'"
    recompute: bool = False  # ignore a cached features file


def _fail(source: str, what: str, fix: str) -> EvaluatorError:
    return EvaluatorError(f"{source} {what}; nothing was recorded. Fix: {fix}")


def checked_result(source: str, result: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, protocol) of an evaluator's result, or one EvaluatorError naming ``source``."""
    metrics, protocol = getattr(result, "metrics", None), getattr(result, "protocol", {})
    if not isinstance(metrics, Mapping) or not isinstance(protocol, Mapping):
        raise _fail(source, f"returned {type(result).__name__} {str(result)[:60]!r}, not an EvalResult",
                    "return ssl_bench.eval.base.EvalResult(metrics={name: float}, protocol={...})")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()  # a 0-d tensor is a number
        why = metric_value_problem(str(name), value)  # the store's own rule, checked before anything is written
        if why:
            raise _fail(source, f"returned metric {name!r} = {str(value)[:40]}: {why}",
                        "return finite numbers, accuracies as fractions in [0, 1] (divide a percentage by 100), "
                        "and None for a metric it could not compute")
        out[str(name)] = None if value is None else float(value)
    try:
        json.dumps(dict(protocol), default=str, sort_keys=True)  # as metrics.json writes it
    except (TypeError, ValueError) as exc:
        raise _fail(source, f"returned a protocol record that is not JSON ({exc})", "make the protocol a dict of plain values with string keys") from None
    return out, dict(protocol)


def checked_predictions(source: str, result: Any, metrics: Mapping[str, float], n_test: int) -> dict[str, torch.Tensor]:
    """An evaluator's ``predictions`` (metric -> predicted class of every test image [M] int64, on the
    CPU); {} when it returns none (a plugin evaluator need not). Anything else is one EvaluatorError."""
    predictions = getattr(result, "predictions", None) or {}
    fix = "return predictions={metric: LongTensor [n_test] of predicted classes in test order}, or none"
    if not isinstance(predictions, Mapping):
        raise _fail(source, f"returned predictions of type {type(predictions).__name__}, not a dict", fix)
    out: dict[str, torch.Tensor] = {}
    for name, preds in predictions.items():
        if name not in metrics:
            raise _fail(source, f"returned predictions for {name!r}, which is not one of its metrics", fix)
        if not (isinstance(preds, torch.Tensor) and preds.ndim == 1 and preds.numel() == n_test
                and not preds.is_floating_point() and not preds.is_complex() and preds.dtype != torch.bool):
            what = f"{preds.dtype} of shape {tuple(preds.shape)}" if isinstance(preds, torch.Tensor) else type(preds).__name__
            raise _fail(source, f"returned predictions {name!r} as {what}, not one integer class per test image ({n_test})", fix)
        out[str(name)] = preds.detach().cpu().long()
    return out


def _call(source: str, call: Callable[[], Any]) -> Any:
    """Run one evaluation; a plugin's own exception becomes one line naming it."""
    try:
        return call()
    except SSLBenchError:  # already one clear line (a diverged probe, bad inputs)
        raise
    except Exception as exc:
        raise _fail(source, f"raised {type(exc).__name__}: {str(exc)[:200]}", "this is a bug in that package; report it there, "
                    "or leave the evaluator out (--set eval.evaluators=...)") from exc


def describe(ev: BuiltEvaluator) -> str:
    return f"evaluator '{ev.name}' from package '{ev.package}'"


def score(
    subject: Subject, dataset: Any, run_dir: Path, evaluators: list[BuiltEvaluator], cfg: Any, ctx: Any,
) -> Recorded | None:
    """Score ``subject`` with ``evaluators``; the checked results on the main rank, None on the others.

    Under torchrun every rank calls this: each extracts its shard of the features and of the
    augmented probe's batches; only the main rank evaluates features and gets the results.
    """
    device = ctx.device
    feats = cached_features(run_dir, subject.fn, dataset, cfg.eval.batch_size, device, subject.cache_key,
                            recompute=subject.recompute, ctx=ctx, label=subject.label)
    image_results: dict[str, Any] = {}
    for ev in evaluators:
        if ev.needs_images:
            res = _call(describe(ev), lambda ev=ev: ev.evaluator.evaluate_images(
                subject.fn, dataset.train, dataset.info, feats, dataset.info.num_classes, device, ctx))
            if res is not None:
                image_results[ev.name] = res
    if not ctx.is_main:
        return None
    if device.type == "cuda":  # GPU k-NN and probe
        feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
    recorded: Recorded = {}
    predictions: dict[str, dict[str, torch.Tensor]] = {}  # evaluator -> metric -> [M]
    n_test = int(feats["test_labels"].shape[0])

    def check(source: str, name: str, res: Any) -> None:
        metrics, protocol = checked_result(source, res)
        preds = checked_predictions(source, res, metrics, n_test)
        recorded[name] = (metrics, {**protocol, "features": subject.feature})
        if preds:
            predictions[name] = preds

    for ev in evaluators:
        if ev.needs_images:
            res = image_results[ev.name]
        else:
            res = _call(describe(ev), lambda ev=ev: ev.evaluator(
                feats["train"], feats["train_labels"], feats["test"], feats["test_labels"], dataset.info.num_classes))
        check(describe(ev), ev.name, res)
    if subject.extra is not None:
        for name, res in _call(subject.extra_source, subject.extra):
            check(f"{subject.extra_source} (evaluation '{name}')", name, res)
    # written on every scoring, also without predictions, so an earlier scoring's file never outlives it
    write_predictions(run_dir, subject.cache_key, feats["test_labels"], predictions)
    return recorded


def flat_metrics(recorded: Recorded) -> dict[str, float]:
    """Every evaluator's metrics in one dict (later evaluators win a shared name)."""
    flat: dict[str, float] = {}
    for metrics, _ in recorded.values():
        flat.update(metrics)
    return flat


def summary(metrics: Mapping[str, float]) -> str:
    """The headline accuracies as one log line (``knn_top1 63.6%, linear_top1 89.7%``)."""
    return ", ".join(f"{k} {100 * v:.1f}%" for k, v in metrics.items() if k in ("knn_top1", "linear_top1") and v is not None)


def write_metrics_json(run_dir: Path, recorded: Recorded) -> None:
    """``RUN_DIR/metrics.json``: every evaluator's metrics and protocol, atomically (a kill or a full
    disk leaves the previous file whole). Keys sorted at every level, so the bytes depend only on the
    values: the same config, seed, machine and thread count give the same file, and a resumed run
    writes the same bytes as an uninterrupted one whatever order its records were built in."""
    text = json.dumps({n: {"metrics": m, "protocol": p} for n, (m, p) in recorded.items()}, indent=1, default=str,
                      sort_keys=True)
    atomic_write_text(Path(run_dir) / METRICS_JSON, text)
