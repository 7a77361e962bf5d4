"""From a method's name to a built method: the config resolved once, the parts built once.

Two steps, both here so that model code never looks anything up (no ``get_registry()`` and no
config file read in ``ssl_bench.methods``, ``ssl_bench.components`` or a plugin's ``method.py``):

1. :func:`method_config`: harness defaults < the method's default config < the user's ``--config``
   file < command-line flags < ``--set``, then the part specs (``method.tokenizer`` / ``noise_schedule``
   / ``corruption`` / ``target``) resolved against the registered constructors
   (:func:`resolve_part_specs`), then ``validate_config``. The result is what config.json, the
   checkpoint and the results store record; resolving it again changes nothing.
2. :func:`build_method`: seed, the backbone on the dataset's geometry, the parts in
   ``PART_KINDS`` order (noise schedule, tokenizer, corruption, target), then the method with its
   parts and a factory of the configured backbone on another geometry. The order of these random
   draws is part of a seed's contract (``torch.manual_seed(cfg.seed)`` first).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from mmengine.config import Config

from ssl_bench.components.base import Backbone, Method, Parts, Tokenizer
from ssl_bench.config import load_config, read_config_file
from ssl_bench.config_schema import validate_config
from ssl_bench.errors import ConfigError
from ssl_bench.hookspecs import PART_KINDS
from ssl_bench.methods.parts import build_part, keyword_options, part_spec, resolve_spec
from ssl_bench.methods.reconstruction import PixelGeometry
from ssl_bench.registry import Registry


# ---------------------------------------------------------------------------------------------
# the config
# ---------------------------------------------------------------------------------------------


def method_default(method: str, registry: Registry) -> dict[str, Any]:
    """The method's own default config file (``Method.default_config``, its ``_base_`` followed) as a
    dict; {} for a method that names none."""
    path = getattr(registry.get("method", method), "default_config", None)
    return {} if path is None else read_config_file(path, "method default")


def takes_parts(method_cls: Any) -> bool:
    """Whether the method's constructor receives built parts (``parts=``: a reconstruction method)."""
    names, _ = keyword_options(method_cls)
    return "parts" in names


def resolve_part_specs(cfg: Config, registry: Registry, default: Mapping[str, Any] | None = None) -> Config:
    """Resolve ``cfg.method``'s part specs in place (and return ``cfg``): each becomes
    ``dict(name=..., **options)``, loses the options the method's default config gave a part it
    replaced (logged), and a misspelt option is one ConfigError naming it, the component and what it
    takes (``ssl_bench.methods.parts.resolve_spec``). Only for methods that take parts.

    ``default``: the method's default config as read by :func:`method_default` (read here when None).
    Idempotent: a resolved config (config.json of a run) resolves to itself.
    """
    method = cfg.method.name
    if not takes_parts(registry.get("method", method)):
        return cfg
    default_method = (method_default(method, registry) if default is None else default).get("method") or {}
    for key, kind in PART_KINDS.items():
        spec = part_spec(cfg.method.get(key), key)
        if spec is None:
            continue
        try:
            default_spec = part_spec(default_method.get(key), key)
        except ConfigError:  # a default that is not a spec has no options to inherit
            default_spec = None
        cfg.method[key] = resolve_spec(kind, key, spec, registry.get(kind, spec["name"]), default_spec)
    return cfg


def method_config(
    method: str, registry: Registry, *, default: Mapping[str, Any] | None = None, resolve: bool = True, **load_config_kwargs: Any,
) -> Config:
    """Resolved, validated config for ``method``: harness defaults < method default < user file <
    flags < --set (``load_config_kwargs``: ``user_config``, ``cli``, ``set_items``), then the part
    specs (:func:`resolve_part_specs`), then ``validate_config``.

    ``default``: the method's default config already read (:func:`method_default`), else it is read
    here. ``resolve=False`` leaves the part specs as the layers gave them, for a caller that adds a
    layer of its own and then calls :func:`resolve_part_specs` (the deconstruction chain's sweep keys).
    """
    default = method_default(method, registry) if default is None else default
    cfg = load_config(default, **load_config_kwargs)
    cfg.method = cfg.get("method") or {}
    cfg.method["name"] = method
    if resolve:
        resolve_part_specs(cfg, registry, default)
    validate_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------


def build_backbone(
    cfg: Any, registry: Registry, info: Any, *, image_size: int | None = None, patch_size: int | None = None, in_chans: int | None = None,
) -> Backbone:
    """The configured backbone (``cfg.backbone``) on the dataset's geometry, or on another one (a
    network that reads a latent image instead of pixels is the same backbone on the latent grid)."""
    bcfg = cfg.backbone
    factory = registry.get("backbone", bcfg.name)
    overrides = {k: v for k, v in bcfg.items() if k not in ("name", "patch_size") and v is not None}
    try:
        return factory(
            image_size=image_size or info.image_size,
            patch_size=patch_size or bcfg.get("patch_size") or info.default_patch_size,
            in_chans=in_chans or info.channels,
            **overrides,
        )
    except TypeError as exc:  # an option the backbone does not take
        raise ConfigError(f"backbone '{bcfg.name}': {exc}; check the backbone.* keys") from None


def _geometry(cfg: Any, info: Any, grid: int | None) -> PixelGeometry:
    """The parts' geometry; ``grid`` None: the token grid the configured backbone will have."""
    if grid is None:
        grid = info.image_size // int(cfg.backbone.get("patch_size") or info.default_patch_size)
    return PixelGeometry.of(cfg, info, grid, cfg.backbone.name)


def build_tokenizer(cfg: Any, registry: Registry, info: Any) -> Tokenizer:
    """The tokenizer ``cfg`` resolves to on a dataset, alone and unfitted: cheap (no network, no
    backbone), e.g. to read the latent size d a config gives."""
    spec = part_spec(cfg.method.get("tokenizer"), "tokenizer")
    if spec is None:
        raise ConfigError("method.tokenizer is not set; name one with --set method.tokenizer.name=NAME (see `ssl-bench list`)")
    return build_part("tokenizer", "tokenizer", spec, registry, _geometry(cfg, info, None).as_context())


def build_parts(cfg: Any, registry: Registry, info: Any, grid: int | None = None) -> Parts:
    """A reconstruction method's parts from the resolved ``cfg.method`` specs, in build order: the
    noise schedule, the tokenizer (image size, the network's pixel patch, channels), the corruption
    (the schedule), the target (schedule, tokenizer, geometry). ``grid``: the backbone's token grid
    per side (None: the one the configured backbone will have)."""
    m = cfg.method
    specs = {key: part_spec(m.get(key), key) for key in PART_KINDS}
    for key in ("tokenizer", "corruption", "target"):
        if specs[key] is None:
            raise ConfigError(f"method.{key} is not set; name one with --set method.{key}.name=NAME (see `ssl-bench list`)")
    geometry = _geometry(cfg, info, grid).as_context()
    spec = specs["noise_schedule"]
    noise_schedule = None if spec is None else build_part("noise-schedule", "noise_schedule", spec, registry, {})
    tokenizer = build_part("tokenizer", "tokenizer", specs["tokenizer"], registry, geometry)
    corruption_cls = registry.get("corruption", specs["corruption"]["name"])
    if getattr(corruption_cls, "needs_schedule", False) and noise_schedule is None:
        raise ConfigError(
            f"corruption '{specs['corruption']['name']}' adds noise but method.noise_schedule is not set; "
            "set one, e.g. --set method.noise_schedule.name=sigma-linear"
        )
    corruption = build_part("corruption", "corruption", specs["corruption"], registry, {"schedule": noise_schedule})
    target = build_part("target", "target", specs["target"], registry, {"schedule": noise_schedule, "tokenizer": tokenizer, **geometry})
    return Parts(tokenizer=tokenizer, corruption=corruption, target=target, noise_schedule=noise_schedule, specs=specs)


def build_method(cfg: Any, registry: Registry, info: Any) -> Method:
    """The method ``cfg.method.name`` with fresh weights, seeded by ``cfg.seed``.

    Order of the random draws (a seed's contract): the backbone on the dataset's geometry, then (for
    a method that takes parts) the parts in build order, then the method's own modules; a network on
    another geometry calls ``make_backbone`` from its constructor, at the point it needs it.
    """
    torch.manual_seed(cfg.seed)  # parameter init is part of the seed's contract
    backbone = build_backbone(cfg, registry, info)
    cls = registry.get("method", cfg.method.name)
    if not takes_parts(cls):
        return cls(cfg, backbone, info)
    names, _ = keyword_options(cls)
    extra: dict[str, Any] = {"parts": build_parts(cfg, registry, info, grid=backbone.image_size // backbone.patch_size)}
    if "make_backbone" in names:
        extra["make_backbone"] = functools.partial(build_backbone, cfg, registry, info)
    return cls(cfg, backbone, info, **extra)


__all__ = [
    "build_backbone", "build_method", "build_parts", "build_tokenizer", "method_config", "method_default",
    "resolve_part_specs", "takes_parts",
]
