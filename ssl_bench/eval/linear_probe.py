"""Linear probe on a frozen encoder, following the MAE protocol (He et al. 2022, App. A.1 "Linear probing").

The head, its optimiser and schedule, the training step and the protocol record are MAE's
``main_linprobe.py`` recipe, written once in ``probe_head.py`` for both data protocols. This module
holds the evaluator and the cached protocol's loop.

Two data protocols (``protocol``, recorded in every result):

* ``"cached"`` (default): the head trains on cached features of the un-augmented eval transform.
  The backbone is frozen, so this is thousands of times cheaper than re-encoding images every
  epoch, and on small data sets it is what the probe budget allows.
* ``"augmented"``: MAE's own data (``main_linprobe.py``: ``RandomResizedCrop(224,
  interpolation=3)`` + ``RandomHorizontalFlip``), the frozen encoder's features of fresh crops every
  epoch, tested on the cached centre-crop features. It needs the model, so it is not a
  features-in evaluator: :meth:`LinearProbeEvaluator.evaluate_images` runs
  ``ssl_bench.eval.augmented_probe.augmented_linear_probe``, and the runner calls it when
  ``needs_images`` is True.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn
from torch import Tensor

from ssl_bench.eval.augmented_probe import augmented_linear_probe
from ssl_bench.eval.base import EvalInputError, EvalResult, check_eval_inputs
from ssl_bench.eval.probe_head import (
    PROBE_NAME,
    LinearProbeProtocol,
    ProbeHead,
    probe_record,
    resolved_lr,
    schedule_steps,
)
from ssl_bench.progress import progress

if TYPE_CHECKING:
    from ssl_bench.distributed import DistContext

__all__ = ["LinearProbeEvaluator", "LinearProbeProtocol"]


class LinearProbeEvaluator:
    """MAE linear probe. Metrics: ``linear_top1`` (final epoch, test), ``linear_train_top1`` (final
    epoch, train set in eval mode) and ``linear_final_loss``; ``predictions["linear_top1"]``: the
    test predictions [M] behind ``linear_top1``.

    Deterministic given ``seed``: the head init and the per-epoch shuffles draw from a private
    CPU ``torch.Generator``, never from the global RNG. Runs on the features' device.
    The trained head of the last call is kept as ``self.last_head`` for inspection.

    With ``protocol="augmented"`` it needs images (``needs_images``): call :meth:`evaluate_images`;
    calling it on features is refused.
    """

    name = PROBE_NAME

    def __init__(self, protocol: LinearProbeProtocol | str | None = None, seed: int = 0, **overrides: Any):
        if isinstance(protocol, str):  # the config key eval.linear.protocol="cached"|"augmented" arrives by name
            overrides["protocol"] = protocol
            protocol = None
        if protocol is None:
            protocol = LinearProbeProtocol(**overrides)
        elif overrides:
            raise TypeError("pass either a LinearProbeProtocol or keyword overrides, not both")
        self.protocol = protocol
        self.seed = seed
        self.last_head: nn.Sequential | None = None

    @property
    def needs_images(self) -> bool:
        """True when the head trains on augmented images (the runner then calls ``evaluate_images``)."""
        return self.protocol.protocol == "augmented"

    def evaluate_images(
        self, feature_fn: Callable[[Tensor], Tensor], train_split: Any, info: Any, feats: dict[str, Tensor] | None,
        num_classes: int, device: torch.device, ctx: DistContext | None = None,
    ) -> EvalResult | None:
        """The augmented probe (every rank calls it under DDP; rank 0 gets the result, the others None).

        ``feats`` is the cached-features dict (``test`` / ``test_labels`` are the test set, ``train`` /
        ``train_labels`` give the train accuracy); None on ranks other than 0.
        """
        return augmented_linear_probe(
            feature_fn, train_split, info,
            None if feats is None else feats["test"], None if feats is None else feats["test_labels"],
            num_classes, self.protocol, seed=self.seed, device=device, ctx=ctx,
            train_feats=None if feats is None else feats.get("train"),
            train_labels=None if feats is None else feats.get("train_labels"),
            evaluator=self,
        )

    def __call__(
        self,
        train_feats: Tensor,  # [N, D]
        train_labels: Tensor,  # [N]
        test_feats: Tensor,  # [M, D]
        test_labels: Tensor,  # [M]
        num_classes: int,
    ) -> EvalResult:
        p = self.protocol
        if self.needs_images:
            raise EvalInputError(
                "linear probe protocol 'augmented' trains on augmented images, not on features; run it with "
                "LinearProbeEvaluator.evaluate_images (the runner does), or use protocol='cached'"
            )
        check_eval_inputs(train_feats, train_labels, test_feats, test_labels, num_classes)
        n, dim = train_feats.shape
        if n < 2:
            raise EvalInputError(
                f"linear probe needs at least 2 training samples (BatchNorm), got {n}"
            )
        if test_feats.shape[0] == 0:
            raise EvalInputError("test set is empty (test_feats has 0 rows); check the test split")

        device = train_feats.device
        x_train = train_feats.detach().float()  # [N, D]
        y_train = train_labels.to(device).long()  # [N]

        gen = torch.Generator().manual_seed(self.seed)  # CPU: same stream on every device
        batch = min(p.batch_size, n)
        if p.drop_last:
            steps_per_epoch = n // batch
        else:  # a trailing batch of 1 would break BN in train mode: fold it away
            steps_per_epoch = math.ceil(n / batch) - (1 if n % batch == 1 else 0)
        total_steps, warmup_steps = schedule_steps(p, steps_per_epoch)
        lr = resolved_lr(p, batch)
        probe = ProbeHead(dim, num_classes, p, lr, total_steps, warmup_steps, gen, device)  # draws the init from gen

        for _ in progress(range(p.epochs), desc="linear probe", unit="epoch"):
            perm = torch.randperm(n, generator=gen).to(device)  # [N]
            for i in range(steps_per_epoch):
                idx = perm[i * batch : (i + 1) * batch]  # [B]
                probe.train_step(x_train[idx], y_train[idx])

        metrics, predictions = probe.result(test_feats, test_labels, train_feats, train_labels)
        self.last_head = probe.head
        return EvalResult(metrics=metrics, predictions=predictions, protocol=probe_record(
            p, evaluator=self.name, seed=self.seed, n=n, dim=dim, n_test=int(test_feats.shape[0]),
            num_classes=num_classes, batch=batch, lr=lr, steps_per_epoch=steps_per_epoch,
            warmup_steps=warmup_steps, total_steps=total_steps, device=device,
        ))
