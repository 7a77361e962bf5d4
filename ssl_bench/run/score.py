"""The one scoring sequence, used by a new run, a resume, ``ssl-bench eval`` and every baseline:

    the scored split chosen (``eval.split``: the test split, or the validation split held back from training)
      -> frozen features (cached, keyed by the weights that made them and the split)
      -> evaluators that need the model (the augmented linear probe; every rank takes part)
      -> evaluators on the cached features (main rank)
      -> the method's own evaluations (a diffusion model's NLL)
      -> every result checked, then recorded (and each evaluator's test predictions kept)

An evaluator is code from any package, so what it returns is checked before anything is written:
an exception, a result that is not ``EvalResult``-like, a metric that is not a finite number, an
accuracy outside [0, 1] (a percentage), or predictions that are not one class per test image is one
line naming the evaluator and its package, and nothing (no ``metrics.json``, no store row, no
``predictions.pt``) is written.

Scored on the validation split, every evaluator sees the validation images where it would see the
test images (the method's own evaluations too), so no test number is ever computed; every metric is
recorded as ``val_<name>`` (``val_knn_top1``, ``val_linear_top1``) with ``"split": "val"`` in its
protocol record, in ``metrics-val.json``, beside (never replacing) the run's test metrics. Per-image
predictions are kept for the test split only (``predictions.pt``: what ``ssl-bench compare`` pairs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ssl_bench.errors import SSLBenchError
from ssl_bench.eval.features import cached_features
from ssl_bench.eval.predictions import write_predictions
from ssl_bench.files import atomic_write_text
from ssl_bench.results.records import VAL_PREFIX, metric_value_problem
from ssl_bench.run.build import BuiltEvaluator

METRICS_JSON = "metrics.json"
#: The validation split's scores, kept beside the test scores of ``METRICS_JSON``.
VAL_METRICS_JSON = "metrics-val.json"
#: The splits an evaluation may score (``eval.split``).
SPLITS = ("test", "val")

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
    extra: Callable[[Any], Sequence[tuple[str, Any]]] | None = None  # the method's own evaluations of the scored dataset
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


def eval_split(cfg: Any) -> str:
    """The split ``cfg`` is scored on (``eval.split``; a config from before the key existed: test)."""
    return (cfg.get("eval") or {}).get("split") or "test"


def split_key(cfg: Any, split: str) -> dict[str, Any]:
    """What the features cache key adds for the scored split: nothing for the test split of a run
    without a validation split (the key such runs always had), else the split and how it was drawn,
    so validation features are never scored as test features (nor the reverse)."""
    fraction = cfg.dataset.get("val_fraction")
    if split == "test" and fraction is None:
        return {}
    return {"eval_data": {"split": split, "val_fraction": fraction, "val_seed": cfg.dataset.get("val_seed")}}


def scored_dataset(dataset: Any, split: str) -> Any:
    """``dataset`` as the evaluators see it: its ``test`` is the split they score (the validation
    split stands in for it), so no evaluator can reach the test images of a validation scoring."""
    if split == "test":
        return dataset
    return replace(dataset, test=dataset.split(split), val=None)


def split_metrics(metrics: dict[str, float], protocol: dict[str, Any], split: str) -> tuple[dict[str, float], dict[str, Any]]:
    """A result under its split's names: validation metrics as ``val_<name>`` with ``"split": "val"``
    in the protocol record; test results as they always were."""
    if split == "test":
        return metrics, protocol
    return {f"{VAL_PREFIX}{k}": v for k, v in metrics.items()}, {**protocol, "split": split}


def score(
    subject: Subject, dataset: Any, run_dir: Path, evaluators: list[BuiltEvaluator], cfg: Any, ctx: Any,
    split: str | None = None,
) -> Recorded | None:
    """Score ``subject`` with ``evaluators`` on ``split`` (None: ``cfg.eval.split``); the checked
    results on the main rank, None on the others.

    Under torchrun every rank calls this: each extracts its shard of the features and of the
    augmented probe's batches; only the main rank evaluates features and gets the results.
    """
    device = ctx.device
    split = split or eval_split(cfg)
    dataset = scored_dataset(dataset, split)
    key = {**subject.cache_key, **split_key(cfg, split)}
    label = subject.label if split == "test" else f"{subject.label} {split}".strip()
    feats = cached_features(run_dir, subject.fn, dataset, cfg.eval.batch_size, device, key,
                            recompute=subject.recompute, ctx=ctx, label=label)
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
        recorded[name] = split_metrics(metrics, {**protocol, "features": subject.feature}, split)
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
        for name, res in _call(subject.extra_source, lambda: subject.extra(dataset)):
            check(f"{subject.extra_source} (evaluation '{name}')", name, res)
    if split == "test":  # written on every test scoring, also without predictions, so an earlier scoring's file never outlives it
        write_predictions(run_dir, key, feats["test_labels"], predictions)
    return recorded


def flat_metrics(recorded: Recorded) -> dict[str, float]:
    """Every evaluator's metrics in one dict (later evaluators win a shared name)."""
    flat: dict[str, float] = {}
    for metrics, _ in recorded.values():
        flat.update(metrics)
    return flat


def summary(metrics: Mapping[str, float]) -> str:
    """The headline accuracies as one log line (``knn_top1 63.6%, linear_top1 89.7%``; on the
    validation split ``val_knn_top1 ...``)."""
    heads = ("knn_top1", "linear_top1")
    heads += tuple(VAL_PREFIX + k for k in heads)
    return ", ".join(f"{k} {100 * v:.1f}%" for k, v in metrics.items() if k in heads and v is not None)


def metrics_json_name(split: str) -> str:
    """The file in a run directory that holds the scores of ``split``."""
    return METRICS_JSON if split == "test" else VAL_METRICS_JSON


def write_metrics_json(run_dir: Path, recorded: Recorded, split: str = "test") -> None:
    """``RUN_DIR/metrics.json`` (the test split; ``metrics-val.json`` for the validation split): every
    evaluator's metrics and protocol, atomically (a kill or a full disk leaves the previous file
    whole). Keys sorted at every level, so the bytes depend only on the values: the same config,
    seed, machine and thread count give the same file, and a resumed run writes the same bytes as an
    uninterrupted one whatever order its records were built in."""
    text = json.dumps({n: {"metrics": m, "protocol": p} for n, (m, p) in recorded.items()}, indent=1, default=str,
                      sort_keys=True)
    atomic_write_text(Path(run_dir) / metrics_json_name(split), text)
