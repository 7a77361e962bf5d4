"""PLACEHOLDER until helper C's builder lands: method_config / build_backbone / build_method as runner.py had them."""

from __future__ import annotations

from typing import Any

import torch

from ssl_bench.config import load_config
from ssl_bench.config_schema import validate_config
from ssl_bench.methods.parts import build_backbone


def method_config(method: str, registry: Any, **kwargs: Any) -> Any:
    cls = registry.get("method", method)
    cfg = load_config(getattr(cls, "default_config", None), **kwargs)
    cfg.method = cfg.get("method") or {}
    cfg.method["name"] = method
    validate_config(cfg)
    return cfg


def build_method(cfg: Any, registry: Any, info: Any) -> Any:
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg, registry, info)
    cls = registry.get("method", cfg.method.name)
    return cls(cfg, backbone, info)


__all__ = ["build_backbone", "build_method", "method_config"]
