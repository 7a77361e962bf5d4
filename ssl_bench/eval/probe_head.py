"""MAE's linear-probe head and how it is trained, shared by both data protocols of the linear probe.

He et al. 2022, App. A.1 "Linear probing"; official code facebookresearch/mae ``main_linprobe.py``:
``BatchNorm1d(D, affine=False, eps=1e-6) -> Linear(D, C)`` on top of the frozen encoder. The
parameter-free BN only standardises the features, so features from methods with very different
scales can share one learning rate; it is equivalent to a re-scaled linear layer at test time, so
the probe stays linear. Defaults: LARS (momentum 0.9, trust coefficient 0.001, no weight decay and
no LARS adaptation for 1-D params), wd 0, lr = blr x batch / 256 with blr 0.1, per-iteration linear
warm-up (10 epochs) then cosine to 0 over 90 epochs, Linear weight ~ trunc_normal(std=0.01), bias 0.
The accuracy is reported after the last epoch (not the best epoch, which would be selection on the
test set).

Why one module: the cached probe (``linear_probe.py``, features of the eval transform) and the
augmented probe (``augmented_probe.py``, features of fresh crops every epoch) differ only in the
data the head sees. The head, its optimiser and schedule, the training step, the prediction and the
protocol record are written once here (:class:`ProbeHead`, :func:`probe_record`), so the two
protocols cannot drift apart.

Optimiser note: ``timm.optim.Lars`` with two param groups reproduces MAE's LARS exactly when
weight decay is 0 (the MAE default): the ndim > 1 group uses ``always_adapt=True``, the ndim <= 1
group gets neither weight decay nor adaptation. With weight decay > 0 timm's trust ratio uses
``||g|| + wd ||w||`` in the denominator where MAE uses ``||g + wd w||``; we record this in the protocol.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.optim import Lars
from timm.scheduler import CosineLRScheduler
from torch import Tensor

from ssl_bench.eval.base import EvalInputError, top1_accuracy

OptimizerName = Literal["lars", "sgd", "adamw"]
DataProtocol = Literal["cached", "augmented"]
DATA_PROTOCOLS: tuple[str, ...] = ("cached", "augmented")

#: The evaluator name both data protocols record (the metrics are ``linear_*``).
PROBE_NAME = "linear"

# Base lr (per 256 samples) when the protocol leaves ``blr=None``. LARS/SGD follow MAE; AdamW needs
# a much smaller step, and 0.1 x batch / 256 would diverge.
DEFAULT_BLR: dict[str, float] = {"lars": 0.1, "sgd": 0.1, "adamw": 1e-3}


@dataclass
class LinearProbeProtocol:
    """Everything that defines a linear-probe evaluation. Defaults are MAE's linear probe.

    ``lr`` overrides the scaling rule when set; otherwise ``lr = blr * batch / 256`` with the
    batch size actually used (``batch_size`` capped to N_train).
    """

    epochs: int = 90
    warmup_epochs: float = 10
    batch_size: int = 256
    blr: float | None = None  # None -> DEFAULT_BLR[optimizer]
    lr: float | None = None
    min_lr: float = 0.0
    weight_decay: float = 0.0
    optimizer: OptimizerName = "lars"
    momentum: float = 0.9  # lars, sgd
    trust_coefficient: float = 0.001  # lars
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    bn_eps: float = 1e-6
    init_std: float = 0.01
    drop_last: bool = True  # as MAE's train loader; also keeps BN off size-1 batches
    report_train_acc: bool = True
    eval_batch_size: int = 8192  # inference chunk, bounds memory only
    protocol: DataProtocol = "cached"  # what the head trains on (linear_probe.py's docstring)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # augmented: RandomResizedCrop's default (MAE's probe)
    flip_p: float = 0.5  # augmented: RandomHorizontalFlip

    def __post_init__(self) -> None:
        if self.protocol not in DATA_PROTOCOLS:
            raise EvalInputError(
                f"unknown linear-probe protocol {self.protocol!r}; choose one of {list(DATA_PROTOCOLS)}"
            )
        self.crop_scale = tuple(float(v) for v in self.crop_scale)  # JSON/YAML round-trips give lists
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise EvalInputError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {self.crop_scale!r}")
        if not 0 <= self.flip_p <= 1:
            raise EvalInputError(f"flip_p must be in [0, 1], got {self.flip_p!r}")
        if self.protocol == "augmented" and not self.drop_last:
            raise EvalInputError(
                "the augmented linear probe always drops the last partial batch (MAE's train loader); "
                "remove drop_last=False or use protocol='cached'"
            )
        if self.optimizer not in DEFAULT_BLR:
            raise EvalInputError(
                f"unknown optimizer {self.optimizer!r}; choose one of {sorted(DEFAULT_BLR)}"
            )
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise EvalInputError(f"epochs must be a positive int, got {self.epochs!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise EvalInputError(
                f"warmup_epochs={self.warmup_epochs} must be in [0, epochs={self.epochs}); "
                "lower warmup_epochs (MAE uses 10 of 90)"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise EvalInputError(
                f"batch_size must be an int >= 2 (BatchNorm needs 2 samples), got {self.batch_size!r}"
            )
        for name in ("blr", "lr"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise EvalInputError(f"{name} must be positive or None, got {v!r}")
        if self.weight_decay < 0 or self.min_lr < 0:
            raise EvalInputError("weight_decay and min_lr must be >= 0")
        self.betas = tuple(self.betas)  # JSON/YAML round-trips give lists

    @property
    def resolved_blr(self) -> float:
        return DEFAULT_BLR[self.optimizer] if self.blr is None else self.blr


def scaled_lr(blr: float, batch_size: int) -> float:
    """Linear scaling rule (Goyal et al. 2017), as in MAE: lr = blr * batch / 256."""
    return blr * batch_size / 256


def resolved_lr(p: LinearProbeProtocol, batch: int) -> float:
    """The given ``lr``, else the scaling rule on the batch actually used."""
    return p.lr if p.lr is not None else scaled_lr(p.resolved_blr, batch)


def schedule_steps(p: LinearProbeProtocol, steps_per_epoch: int) -> tuple[int, int]:
    """(total_steps, warmup_steps) of the per-iteration schedule for ``steps_per_epoch``."""
    return p.epochs * steps_per_epoch, round(p.warmup_epochs * steps_per_epoch)


def build_linear_head(
    dim: int, num_classes: int, bn_eps: float = 1e-6, init_std: float = 0.01,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """MAE probe head: parameter-free BN (standardise only) then Linear(trunc_normal 0.01, bias 0)."""
    # skip_init: nn.Linear's default init would draw from the global RNG before we overwrite it.
    linear = torch.nn.utils.skip_init(nn.Linear, dim, num_classes)
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=bn_eps), linear)
    nn.init.trunc_normal_(linear.weight, std=init_std, generator=generator)
    nn.init.zeros_(linear.bias)
    return head


def _param_groups(head: nn.Module, weight_decay: float, optimizer: str) -> list[dict[str, Any]]:
    """Weight decay (and, for LARS, trust-ratio adaptation) only on ndim > 1 params, as MAE's LARS."""
    decay = [p for p in head.parameters() if p.ndim > 1]
    no_decay = [p for p in head.parameters() if p.ndim <= 1]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if optimizer == "lars":
        groups[0]["always_adapt"] = True
        groups[1]["always_adapt"] = False
    return [g for g in groups if g["params"]]


def build_optimizer(head: nn.Module, p: LinearProbeProtocol, lr: float) -> torch.optim.Optimizer:
    groups = _param_groups(head, p.weight_decay, p.optimizer)
    if p.optimizer == "lars":
        # eps=0: MAE has no epsilon; timm guards zero norms with torch.where like MAE does.
        return Lars(groups, lr=lr, momentum=p.momentum, trust_coeff=p.trust_coefficient, eps=0.0)
    if p.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=p.momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=p.betas)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr: float = 0.0
) -> CosineLRScheduler:
    """Per-iteration schedule of MAE's ``adjust_learning_rate``; call ``step_update(t)`` *before*
    step t. lr(t) = lr * t / W for t < W (so step 0 runs at lr 0, as in MAE), then
    min_lr + (lr - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2.
    """
    return CosineLRScheduler(
        optimizer, t_initial=max(total_steps - warmup_steps, 1), lr_min=min_lr,
        warmup_t=warmup_steps, warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False,
    )


def check_final_loss(loss: float, lr: float, p: LinearProbeProtocol) -> None:
    """A diverged head must not be reported as an accuracy."""
    if not math.isfinite(loss):
        raise EvalInputError(
            f"linear probe diverged (final loss {loss}); lower blr/lr "
            f"(got lr={lr:g} with optimizer={p.optimizer})"
        )


class ProbeHead:
    """The head of :func:`build_linear_head` with its optimiser and per-iteration schedule: what both
    data protocols train, one :meth:`train_step` per global batch, scored by :meth:`result`.

    The head's init draws from ``generator`` (a private CPU generator: the same head on every
    device for the same seed, and the global RNG untouched).
    """

    def __init__(
        self, dim: int, num_classes: int, p: LinearProbeProtocol, lr: float, total_steps: int, warmup_steps: int,
        generator: torch.Generator, device: torch.device,
    ) -> None:
        self.protocol = p
        self.lr = lr
        self.device = device
        self.head = build_linear_head(dim, num_classes, p.bn_eps, p.init_std, generator=generator).to(device)
        self.optimizer = build_optimizer(self.head, p, lr)
        self.scheduler = build_lr_scheduler(self.optimizer, total_steps, warmup_steps, p.min_lr)
        self.steps = 0
        self.loss = torch.zeros((), device=device)  # the last step's loss

    def train_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One optimiser step on features ``x`` [B, D] and labels ``y`` [B] (int64) at the schedule's
        next position (the lr is set *before* the step, as MAE's ``adjust_learning_rate``); the loss."""
        self.head.train()
        self.scheduler.step_update(self.steps)
        loss = F.cross_entropy(self.head(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        self.loss = loss.detach()
        return self.loss

    @torch.no_grad()
    def predict(self, feats: Tensor) -> Tensor:
        """Predicted classes [M] of features [M, D], in chunks of the protocol's ``eval_batch_size``."""
        self.head.eval()
        batch = self.protocol.eval_batch_size
        feats = feats.detach().to(self.device).float()
        return torch.cat([self.head(feats[i : i + batch]).argmax(dim=1) for i in range(0, len(feats), batch)])

    def result(
        self, test_feats: Tensor, test_labels: Tensor, train_feats: Tensor | None = None,
        train_labels: Tensor | None = None,
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """(metrics, predictions). Metrics: ``linear_top1`` on the test set, ``linear_final_loss`` and
        (when the protocol asks and the train features are given) ``linear_train_top1``. Predictions:
        ``{"linear_top1": predicted classes [M] int64 on the CPU}``, what ``linear_top1`` is the
        accuracy of (for the paired comparison). A diverged head is refused, not scored."""
        final_loss = float(self.loss.item())
        check_final_loss(final_loss, self.lr, self.protocol)
        test_preds = self.predict(test_feats)  # [M]
        metrics = {
            "linear_top1": top1_accuracy(test_preds, test_labels.to(self.device).long()),
            "linear_final_loss": final_loss,
        }
        if self.protocol.report_train_acc and train_feats is not None and train_labels is not None:
            metrics["linear_train_top1"] = top1_accuracy(self.predict(train_feats), train_labels.to(self.device).long())
        return metrics, {"linear_top1": test_preds.cpu().long()}


class KeepsHead(Protocol):
    """An evaluator that keeps the head a probe trained (``LinearProbeEvaluator.last_head``)."""

    name: str
    last_head: nn.Sequential | None


def probe_record(
    p: LinearProbeProtocol, *, evaluator: str, seed: int, n: int, dim: int, n_test: int, num_classes: int,
    batch: int, lr: float, steps_per_epoch: int, warmup_steps: int, total_steps: int, device: torch.device,
) -> dict[str, Any]:
    """The protocol record of either data protocol (the keys the leaderboard reads: ``protocol``,
    ``optimizer``, ``batch_size`` (the batch actually used), ``epochs``)."""
    rec = asdict(p)
    rec["betas"] = list(p.betas)
    rec["crop_scale"] = list(p.crop_scale)
    rec.update({
        "evaluator": evaluator,
        "reference": "facebookresearch/mae main_linprobe.py (He et al. 2022)",
        "head": f"BatchNorm1d(affine=False, eps={p.bn_eps}) -> Linear({dim}, {num_classes})",
        "init": f"weight trunc_normal(std={p.init_std}), bias 0",
        "normalisation": "batchnorm (no affine)",
        "blr": p.resolved_blr,
        "lr": lr,
        "lr_rule": "given" if p.lr is not None else "blr * batch_size / 256",
        "batch_size_requested": p.batch_size,
        "batch_size": batch,
        "steps_per_epoch": steps_per_epoch,
        "warmup_steps": warmup_steps,
        "total_steps": total_steps,
        "schedule": "per-iteration linear warm-up from 0, then cosine to min_lr "
                    "(timm CosineLRScheduler)",
        "weight_decay_on": "params with ndim > 1 only",
        "seed": seed,
        "device": device.type,
        "n_train": n,
        "n_test": n_test,
        "dim": dim,
        "num_classes": int(num_classes),
        "reported": "final epoch (not best)",
        "metric_unit": "fraction",
    })
    if p.protocol == "cached":
        rec.pop("crop_scale")
        rec.pop("flip_p")
        rec["train_data"] = "cached features of the eval transform (no augmentation)"
    if p.optimizer == "lars":
        rec["optimizer_impl"] = "timm.optim.Lars"
        rec["lars_excluded"] = "params with ndim <= 1 (no weight decay, no trust ratio)"
        rec["lars_matches_mae"] = p.weight_decay == 0
    else:
        rec.pop("trust_coefficient")
        rec["optimizer_impl"] = {"sgd": "torch.optim.SGD", "adamw": "torch.optim.AdamW"}[p.optimizer]
    if p.optimizer == "adamw":
        rec.pop("momentum")
    else:
        rec.pop("betas")
    return rec
