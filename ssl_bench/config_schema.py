"""Types and ranges of the numeric / enumerated config keys, checked once before anything is written.

A value out of range would otherwise surface late and lie: ``--epochs 0`` trained nothing and stored
the untrained encoder as a finished run; ``batch_size=0`` failed deep in a sampler. Each rule says
what it accepts, so the error is one line naming the key, the value and the accepted values.
Keys that are absent are not checked (a method without ``method.corruption`` has no mask ratio);
component options (``method.tokenizer.*`` and friends) are further checked by the component's own
constructor when the method is built, which also happens before anything is written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from ssl_bench.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """One key's accepted values: ``kind`` int | float | pair | ints | choice | bool | device | text."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False  # None allowed (means "the default" / "off")
    choices: tuple[str, ...] = ()
    example: str = ""
    ordered: bool = False  # pair: first <= second (a range such as a crop scale)

    def accepted(self) -> str:
        if self.kind == "choice":
            text = "one of " + ", ".join(self.choices)
        elif self.kind == "bool":
            text = "True or False"
        elif self.kind == "device":
            text = "auto, cpu, cuda or cuda:N"
        elif self.kind == "text":
            text = "a one-line text of 1 to 80 characters"
        else:
            noun = {"int": "an integer", "float": "a number", "pair": "a pair of numbers" + (" (low, high)" if self.ordered else ""),
                    "ints": "a non-empty tuple of integers"}[self.kind]
            text = f"{noun}{self._range()}"
        return text + (" or None" if self.optional else "")

    def _range(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f" in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f" {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f" {'<' if self.hi_open else '<='} {self.hi:g}"
        return ""

    def _in_range(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind == "int":
            return isinstance(value, Integral) and not isinstance(value, bool) and self._in_range(float(value))
        if self.kind == "float":
            return isinstance(value, Real) and not isinstance(value, bool) and self._in_range(float(value))
        if self.kind == "pair":
            element = Rule("float", self.lo, self.hi, self.lo_open, self.hi_open)
            return (isinstance(value, (tuple, list)) and len(value) == 2 and all(element.ok(v) for v in value)
                    and (not self.ordered or float(value[0]) <= float(value[1])))
        if self.kind == "ints":
            return isinstance(value, (tuple, list)) and len(value) > 0 and all(Rule("int", self.lo).ok(v) for v in value)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "device":
            return isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) is not None
        if self.kind == "text":
            return isinstance(value, str) and 0 < len(value.strip()) <= 80 and "\n" not in value
        raise ValueError(f"unknown rule kind {self.kind!r}")


def _int(lo: float = 0, optional: bool = False, example: str = "") -> Rule:
    return Rule("int", lo=lo, optional=optional, example=example)


def _num(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False, optional: bool = False, example: str = "") -> Rule:
    return Rule("float", lo, hi, lo_open, hi_open, optional, example=example)


RULES: dict[str, Rule] = {
    "seed": _int(0, example="0"),
    "name": Rule("text", optional=True, example="mae-noise"),
    "sweep": Rule("text", optional=True, example="mae-20260101T000000Z"),
    "train.epochs": _int(1, example="10"),
    "train.batch_size": _int(1, example="128"),
    "train.accum_iter": _int(1, example="1"),
    "train.blr": _num(0, lo_open=True, example="1.5e-4"),
    "train.min_lr": _num(0, example="0.0"),
    "train.warmup_epochs": _num(0, example="1"),
    "train.weight_decay": _num(0, example="0.05"),
    "train.betas": Rule("pair", 0, 1, hi_open=True, example="(0.9,0.95)"),
    "train.grad_clip": _num(0, lo_open=True, optional=True, example="1.0"),
    "train.optimizer": Rule("choice", choices=("adamw", "sgd", "lars"), example="adamw"),
    "train.momentum": _num(0, 1, hi_open=True, example="0.9"),
    "train.checkpoint_every": _int(1, example="1"),
    "train.num_workers": _int(0, example="2"),
    "train.amp": Rule("choice", choices=("auto", "bf16", "fp32", "off"), example="auto"),
    "train.compile": Rule("bool", example="False"),
    "train.device": Rule("device", example="auto"),
    "eval.batch_size": _int(1, example="256"),
    "eval.knn.ks": Rule("ints", lo=1, example="(10,20,100,200)"),
    "eval.knn.temperature": _num(0, lo_open=True, example="0.07"),
    "eval.linear.epochs": _int(1, example="90"),
    "eval.linear.warmup_epochs": _num(0, example="10"),
    "eval.linear.blr": _num(0, lo_open=True, optional=True, example="0.1"),
    "eval.linear.batch_size": _int(2, example="256"),
    "eval.linear.optimizer": Rule("choice", choices=("sgd", "lars", "adamw"), example="sgd"),
    "eval.linear.protocol": Rule("choice", choices=("cached", "augmented"), example="augmented"),
    "eval.linear.crop_scale": Rule("pair", 0, 1, lo_open=True, example="(0.08,1.0)", ordered=True),
    "eval.linear.flip_p": _num(0, 1, example="0.5"),
    "dataset.limit_train": _int(1, optional=True, example="1000"),
    "dataset.limit_test": _int(1, optional=True, example="500"),
    "dataset.val_fraction": _num(0, 1, lo_open=True, hi_open=True, optional=True, example="0.1"),
    "dataset.val_seed": _int(0, example="0"),
    "eval.split": Rule("choice", choices=("test", "val"), example="val"),
    "dataset.image_size": _int(1, optional=True, example="224"),
    "dataset.num_workers": _int(0, optional=True, example="8"),
    "backbone.patch_size": _int(1, optional=True, example="16"),
    "backbone.embed_dim": _int(1, optional=True, example="192"),
    "backbone.depth": _int(1, optional=True, example="12"),
    "backbone.num_heads": _int(1, optional=True, example="3"),
    "method.image_size": _int(1, optional=True, example="64"),
    "method.class_dropout": _num(0, 1, hi_open=True, example="0.1"),
    "method.augment.flip_p": _num(0, 1, example="0.5"),
    "method.augment.crop_scale": Rule("pair", 0, 1, lo_open=True, optional=True, example="(0.2,1.0)", ordered=True),
    "method.corruption.mask_ratio": _num(0, 1, lo_open=True, hi_open=True, example="0.75"),
    "method.probe.t": _int(0, optional=True, example="10"),
    "method.temperature": _num(0, lo_open=True, example="0.2"),
    "method.momentum": _num(0, 1, example="0.99"),
    "method.crop_scale": Rule("pair", 0, 1, lo_open=True, example="(0.08,1.0)", ordered=True),
}


def _lookup(cfg: Any, key: str) -> tuple[bool, Any]:
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "get") or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate_config(cfg: Any) -> None:
    """Raise one ConfigError line for the first value out of its rule (in ``RULES`` order), and for the
    cross-key conditions that would otherwise only fail after training (probe warm-up < probe epochs;
    scoring the validation split needs one held back)."""
    for key, rule in RULES.items():
        present, value = _lookup(cfg, key)
        if present and not rule.ok(value):
            example = f" (e.g. --set {key}={rule.example})" if rule.example else ""
            raise ConfigError(f"{key}={value!r} is invalid: expected {rule.accepted()}{example}")
    has_e, epochs = _lookup(cfg, "eval.linear.epochs")
    has_w, warmup = _lookup(cfg, "eval.linear.warmup_epochs")
    if has_e and has_w and warmup >= epochs:
        raise ConfigError(
            f"eval.linear.warmup_epochs={warmup!r} must be below eval.linear.epochs={epochs!r} "
            "(e.g. --set eval.linear.warmup_epochs=1)"
        )
    _, split = _lookup(cfg, "eval.split")
    _, val_fraction = _lookup(cfg, "dataset.val_fraction")
    if split == "val" and val_fraction is None:
        raise ConfigError(
            "eval.split='val' scores the validation split, but there is none: dataset.val_fraction is not set. "
            "Hold one back from the training data, e.g. --set dataset.val_fraction=0.1"
        )
