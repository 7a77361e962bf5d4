"""Linear probe on a frozen encoder, following the MAE protocol (He et al. 2022, App. A.1 "Linear probing").

MAE ``main_linprobe.py`` trains ``BatchNorm1d(D, affine=False, eps=1e-6) -> Linear(D, C)`` on top
of the frozen encoder. The parameter-free BN only standardises the features, so features from
methods with very different scales can share one learning rate; it is equivalent to a re-scaled
linear layer at test time, so the probe stays linear. Defaults: LARS (momentum 0.9, trust
coefficient 0.001, no weight decay and no LARS adaptation for 1-D params), wd 0,
lr = blr x batch / 256 with blr 0.1, per-iteration linear warm-up (10 epochs) then cosine to 0 over
90 epochs, Linear weight ~ trunc_normal(std=0.01), bias 0. We report the accuracy after the last
epoch (not the best epoch, which would be selection on the test set).

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

Optimiser note: ``timm.optim.Lars`` with two param groups reproduces MAE's LARS exactly when
weight decay is 0 (the MAE default): the ndim > 1 group uses ``always_adapt=True``, the ndim <= 1
group gets neither weight decay nor adaptation. With weight decay > 0 timm's trust ratio uses
``||g|| + wd ||w||`` in the denominator where MAE uses ``||g + wd w||``; we record this in the protocol.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.optim import Lars
from timm.scheduler import CosineLRScheduler
from torch import Tensor

from ssl_bench.eval.base import EvalInputError, EvalResult, check_eval_inputs, top1_accuracy
from ssl_bench.progress import progress

if TYPE_CHECKING:
    from ssl_bench.distributed import DistContext

OptimizerName = Literal["lars", "sgd", "adamw"]
DataProtocol = Literal["cached", "augmented"]
DATA_PROTOCOLS: tuple[str, ...] = ("cached", "augmented")

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
    protocol: DataProtocol = "cached"  # what the head trains on (module docstring)
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


@torch.no_grad()
def _predict(head: nn.Module, feats: Tensor, batch: int) -> Tensor:
    head.eval()
    return torch.cat([head(feats[i : i + batch]).argmax(dim=1) for i in range(0, len(feats), batch)])


def schedule_steps(p: LinearProbeProtocol, steps_per_epoch: int) -> tuple[int, int]:
    """(total_steps, warmup_steps) of the per-iteration schedule for ``steps_per_epoch``."""
    return p.epochs * steps_per_epoch, round(p.warmup_epochs * steps_per_epoch)


def resolved_lr(p: LinearProbeProtocol, batch: int) -> float:
    """The given ``lr``, else the scaling rule on the batch actually used."""
    return p.lr if p.lr is not None else scaled_lr(p.resolved_blr, batch)


def check_final_loss(loss: float, lr: float, p: LinearProbeProtocol) -> None:
    """A diverged head must not be reported as an accuracy."""
    if not math.isfinite(loss):
        raise EvalInputError(
            f"linear probe diverged (final loss {loss}); lower blr/lr "
            f"(got lr={lr:g} with optimizer={p.optimizer})"
        )


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


class LinearProbeEvaluator:
    """MAE linear probe. Metrics: ``linear_top1`` (final epoch, test), ``linear_train_top1`` (final
    epoch, train set in eval mode) and ``linear_final_loss``.

    Deterministic given ``seed``: the head init and the per-epoch shuffles draw from a private
    CPU ``torch.Generator``, never from the global RNG. Runs on the features' device.
    The trained head of the last call is kept as ``self.last_head`` for inspection.

    With ``protocol="augmented"`` it needs images (``needs_images``): call :meth:`evaluate_images`;
    calling it on features is refused.
    """

    name = "linear"

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
        from ssl_bench.eval.augmented_probe import augmented_linear_probe  # it imports this module

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
        x_test = test_feats.detach().to(device).float()  # [M, D]
        y_test = test_labels.to(device).long()  # [M]

        gen = torch.Generator().manual_seed(self.seed)  # CPU: same stream on every device
        head = build_linear_head(dim, num_classes, p.bn_eps, p.init_std, generator=gen).to(device)

        batch = min(p.batch_size, n)
        if p.drop_last:
            steps_per_epoch = n // batch
        else:  # a trailing batch of 1 would break BN in train mode: fold it away
            steps_per_epoch = math.ceil(n / batch) - (1 if n % batch == 1 else 0)
        total_steps, warmup_steps = schedule_steps(p, steps_per_epoch)
        lr = resolved_lr(p, batch)

        optimizer = build_optimizer(head, p, lr)
        scheduler = build_lr_scheduler(optimizer, total_steps, warmup_steps, p.min_lr)

        step = 0
        loss = torch.zeros((), device=device)
        for _ in progress(range(p.epochs), desc="linear probe", unit="epoch"):
            head.train()
            perm = torch.randperm(n, generator=gen).to(device)  # [N]
            for i in range(steps_per_epoch):
                idx = perm[i * batch : (i + 1) * batch]  # [B]
                scheduler.step_update(step)
                loss = F.cross_entropy(head(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
        final_loss = float(loss.item())
        check_final_loss(final_loss, lr, p)

        metrics = {
            "linear_top1": top1_accuracy(_predict(head, x_test, p.eval_batch_size), y_test),
            "linear_final_loss": final_loss,
        }
        if p.report_train_acc:
            metrics["linear_train_top1"] = top1_accuracy(
                _predict(head, x_train, p.eval_batch_size), y_train
            )
        self.last_head = head
        return EvalResult(metrics=metrics, protocol=probe_record(
            p, evaluator=self.name, seed=self.seed, n=n, dim=dim, n_test=int(test_feats.shape[0]),
            num_classes=num_classes, batch=batch, lr=lr, steps_per_epoch=steps_per_epoch,
            warmup_steps=warmup_steps, total_steps=total_steps, device=device,
        ))
