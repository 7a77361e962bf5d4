"""Building a method's parts by name from the registry.

A reconstruction method names each part in its config as ``dict(name=..., **options)`` (or just the
name): ``method.tokenizer``, ``method.noise_schedule``, ``method.corruption``, ``method.target``. The
part is built through the registry, so a third-party component is exactly as usable as a built-in
one. The factory is called with

* the user's options (``None`` values dropped: None means "the component's default"), checked
  against the constructor's signature, and
* the pipeline's context keywords for that kind (image size, patch size, the noise schedule, the
  tokenizer, ...; see ``ssl_bench.components.base``), passed only when the constructor names them.

Switching a part's name keeps the other options of the dict (mmengine merges ``--set``). An option
that the method's own default config gave for a *different* component (e.g. the PCA tokenizer's
``latent_scale`` after ``--set method.tokenizer.name=patch-ae``) is dropped with a log line; any other
option the constructor does not take is a ``ConfigError`` naming the option, the component and what
it does take.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from ssl_bench.errors import ConfigError

log = logging.getLogger("ssl_bench")

#: method config key -> registry kind, in build order (the tokenizer's and target's constructors may
#: draw random initial weights: this order is part of a seed's contract).
PART_KINDS: dict[str, str] = {
    "noise_schedule": "noise-schedule",
    "tokenizer": "tokenizer",
    "corruption": "corruption",
    "target": "target",
}


def part_spec(value: Any, key: str) -> dict[str, Any] | None:
    """``"name"`` or ``dict(name=..., **options)`` -> a plain dict; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return dict(value)
    raise ConfigError(
        f"method.{key} must be a component name or dict(name=..., **options), got {value!r} "
        f"(example: --set method.{key}.name=NAME)"
    )


def keyword_options(factory: Any) -> tuple[set[str], bool]:
    """(keyword names the factory takes, whether it takes **kwargs): what may be passed to it by name."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: pass everything
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def build_part(
    kind: str,
    key: str,
    spec: Mapping[str, Any],
    registry: Any,
    context: Mapping[str, Any] | None = None,
    default_spec: Mapping[str, Any] | None = None,
) -> Any:
    """Build ``spec`` (a dict with ``name``) of registry ``kind`` with the pipeline's ``context``."""
    name = spec["name"]
    factory = registry.get(kind, name)
    names, var_kw = keyword_options(factory)
    context = dict(context or {})
    options = {k: v for k, v in spec.items() if k != "name" and v is not None}
    reserved = sorted(set(options) & set(context))
    if reserved:
        raise ConfigError(
            f"method.{key}: {', '.join(reserved)} is set by the method itself ({kind} constructors receive it); "
            f"drop it with --set " + " ".join(f"method.{key}.{r}=None" for r in reserved)
        )
    if not var_kw:
        unknown = sorted(set(options) - names)
        inherited = {
            k for k in unknown
            if default_spec is not None and default_spec.get("name") != name and k in default_spec and default_spec[k] == options[k]
        }
        bad = [k for k in unknown if k not in inherited]
        if bad:
            takes = sorted(names - set(context)) or ["no options"]
            raise ConfigError(
                f"method.{key}: {kind} '{name}' takes no option {', '.join(bad)} (it takes: {', '.join(takes)}). "
                f"Check the spelling, or drop it with --set " + " ".join(f"method.{key}.{b}=None" for b in bad)
            )
        for k in sorted(inherited):
            options.pop(k)
        if inherited:
            log.info("method.%s: %s of the default %s '%s' do not apply to '%s'; ignored",
                     key, ", ".join(sorted(inherited)), kind, default_spec.get("name"), name)
    passed = {k: v for k, v in context.items() if var_kw or k in names}
    try:
        return factory(**passed, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method.{key} ({kind} '{name}'): {exc}") from None


def used_options(spec: Mapping[str, Any], part: Any) -> dict[str, Any]:
    """The options of ``spec`` that reached the part (for the probe protocol record)."""
    names, var_kw = keyword_options(type(part))
    return {k: v for k, v in spec.items() if k == "name" or (v is not None and (var_kw or k in names))}


def build_backbone(
    cfg: Any, registry: Any, info: Any, *, image_size: int | None = None, patch_size: int | None = None, in_chans: int | None = None
) -> Any:
    """The configured backbone (``cfg.backbone``) on the dataset's geometry, or on another one (a
    method whose network reads a latent image instead of pixels rebuilds it on the latent grid)."""
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
