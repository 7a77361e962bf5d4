"""Optimiser construction: AdamW (default), SGD or LARS over the method's parameter groups.

Composed from torch and timm rather than written by hand, so the update rules are the ones the
papers' code used: ``torch.optim.AdamW``/``SGD`` and ``timm.optim.Lars``.

Per-group options a :meth:`Method.param_groups` group may carry (the rest of the dict goes to the
optimiser as usual):

* ``"lr_scale": s`` -- the group's lr is ``s`` x the scheduled lr, warm-up and cosine included
  (timm's schedulers multiply by ``lr_scale`` themselves; MAE fine-tuning's layer decay uses it).
* ``"fixed_lr": True`` -- the group keeps the base lr ``blr x global_batch / 256`` for the whole
  run, with no warm-up and no decay: SimSiam's ``--fix-pred-lr`` for its predictor
  (facebookresearch/simsiam, main_simsiam.py). :func:`apply_fixed_lr` re-applies it after every
  ``scheduler.step_update``.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch
from timm.optim import Lars
from timm.scheduler import CosineLRScheduler

from ssl_bench.components.base import Method
from ssl_bench.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd", "lars")


def check_optimizer_options(tcfg: Any) -> tuple[str, float]:
    """(optimizer name, momentum), validated: a bad value is a one-line ConfigError naming the key.

    Public so that the runner can call it before it creates a run directory."""
    name = tcfg.get("optimizer") or "adamw"  # configs saved before the key existed train with AdamW
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ConfigError(
            f"train.optimizer={name!r} is not supported; use one of {', '.join(OPTIMIZERS)} "
            "(e.g. --set train.optimizer=adamw)"
        )
    momentum = tcfg.get("momentum", 0.9)
    if momentum is None:
        momentum = 0.9
    if isinstance(momentum, bool) or not isinstance(momentum, Real) or not 0.0 <= float(momentum) < 1.0:
        raise ConfigError(
            f"train.momentum={momentum!r} is invalid; use a number in [0, 1) (e.g. --set train.momentum=0.9)"
        )
    return name.lower(), float(momentum)


def _check_groups(method: Method, groups: list[dict[str, Any]]) -> None:
    """A plugin's malformed group option fails here, naming the method, not deep inside timm."""
    for i, group in enumerate(groups):
        scale = group.get("lr_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, Real) or scale < 0:
            raise ValueError(
                f"{type(method).__name__}.param_groups()[{i}] has lr_scale={scale!r}; it must be a number >= 0"
            )
        if not isinstance(group.get("fixed_lr", False), bool):
            raise ValueError(
                f"{type(method).__name__}.param_groups()[{i}] has fixed_lr={group['fixed_lr']!r}; it must be True or False"
            )


def _lars_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split each group by parameter rank, as MAE's LARS decides per parameter: matrices and
    kernels (ndim > 1) get the group's weight decay and the trust-ratio adaptation even when that
    decay is 0; biases and norms (ndim <= 1) get neither. timm's Lars decides per group (it adapts
    when the group's weight_decay != 0, or always with ``always_adapt``), so the groups carry it."""
    out = []
    for group in groups:
        params = list(group["params"])
        high = [p for p in params if p.ndim > 1]
        low = [p for p in params if p.ndim <= 1]
        if high:
            out.append({**group, "params": high, "always_adapt": True})
        if low:
            out.append({**group, "params": low, "weight_decay": 0.0, "always_adapt": False})
    return out


def build_optimizer(method: Method, tcfg: Any, global_batch: int) -> tuple[torch.optim.Optimizer, float]:
    """(optimizer over ``method.param_groups(train.weight_decay)``, base lr = blr x batch / 256).

    ``train.optimizer``: adamw (betas ``train.betas``), sgd or lars (momentum ``train.momentum``).
    The AdamW path is exactly the one used before the option existed.
    """
    name, momentum = check_optimizer_options(tcfg)
    lr = tcfg.blr * global_batch / 256
    groups = method.param_groups(tcfg.weight_decay)
    _check_groups(method, groups)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(tcfg.betas)), lr
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum), lr
    return Lars(_lars_groups(groups), lr=lr, momentum=momentum), lr


def apply_fixed_lr(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """Reset ``fixed_lr`` groups to the base lr; call after every ``scheduler.step_update``
    (which has just set every group to its scheduled lr x lr_scale)."""
    for group in optimizer.param_groups:
        if group.get("fixed_lr"):
            group["lr"] = base_lr


def scheduled_lr(optimizer: torch.optim.Optimizer) -> float:
    """The schedule's current lr (what the epoch line and metrics.jsonl report): read off the
    first scheduled group and divided by its lr_scale, so a scaled or fixed first group does not
    change the reported value."""
    for group in optimizer.param_groups:
        scale = group.get("lr_scale", 1.0)
        if not group.get("fixed_lr") and scale > 0:
            return group["lr"] / scale
    return optimizer.param_groups[0]["lr"]


def build_scheduler(optimizer: torch.optim.Optimizer, tcfg: Any, total_steps: int, warmup_steps: int) -> CosineLRScheduler:
    """MAE's schedule per optimiser step: a linear warm-up from 0 over ``warmup_steps``, then a
    half-cosine to ``train.min_lr`` over the rest (timm's CosineLRScheduler, ``step_update``)."""
    return CosineLRScheduler(
        optimizer,
        t_initial=max(total_steps - warmup_steps, 1),
        lr_min=tcfg.min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
