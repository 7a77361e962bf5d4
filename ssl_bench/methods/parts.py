"""A reconstruction method's parts as named in its config: resolving the specs and building one part.

A reconstruction method names each part in its config as ``dict(name=..., **options)`` (or just the
name): ``method.tokenizer``, ``method.noise_schedule``, ``method.corruption``, ``method.target``
(``ssl_bench.hookspecs.PART_KINDS``). The part is built through the registry, so a third-party
component is exactly as usable as a built-in one. Two steps, both pure functions of a factory:

* :func:`resolve_spec`, once, when the config is resolved: ``"name"`` becomes ``dict(name=...)``;
  an option that the method's own default config gave for a *different* component (e.g. the PCA
  tokenizer's ``latent_scale`` after ``--set method.tokenizer.name=patch-ae``) is dropped with a log
  line, so the resolved config (config.json, the results store) never carries it; any other option
  the constructor does not take is a ``ConfigError`` naming the option, the component and what it
  does take. Resolving a resolved spec changes nothing.
* :func:`build_part`, by the run's builder: the factory is called with the spec's options (``None``
  values dropped: None means "the component's default") and the pipeline's context keywords for
  that kind (``ssl_bench.hookspecs.PART_CONTEXT``: image size, patch size, the noise schedule, the
  tokenizer, ...), passed only when the constructor names them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from ssl_bench.errors import ConfigError
from ssl_bench.hookspecs import PART_CONTEXT

log = logging.getLogger("ssl_bench")


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


def resolve_spec(
    kind: str, key: str, spec: dict[str, Any], factory: Any, default_spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``spec`` (a dict with ``name``) of registry ``kind`` checked against ``factory``'s signature.

    Returns the spec without the options inherited from a replaced default part: those the method's
    default spec (``default_spec``) gave, with the same value, for a component of another name, and
    that this component does not take. Raises ConfigError for any other option it does not take
    (None-valued ones excepted: None means "the component's default", and ``--set
    method.<part>.<option>=None`` is how a user drops an option).
    """
    names, var_kw = keyword_options(factory)
    if var_kw:
        return dict(spec)
    name = spec["name"]
    unknown = [k for k in spec if k != "name" and k not in names]
    replaced = default_spec is not None and default_spec.get("name") != name
    inherited = [k for k in unknown if replaced and k in default_spec and default_spec[k] == spec[k]]
    bad = [k for k in unknown if k not in inherited and spec[k] is not None]
    if bad:
        takes = sorted(names - set(PART_CONTEXT.get(kind, ()))) or ["no options"]
        raise ConfigError(
            f"method.{key}: {kind} '{name}' takes no option {', '.join(bad)} (it takes: {', '.join(takes)}). "
            f"Check the spelling, or drop it with --set " + " ".join(f"method.{key}.{b}=None" for b in bad)
        )
    if inherited:
        log.info("method.%s: %s of the default %s '%s' do not apply to '%s'; ignored",
                 key, ", ".join(sorted(inherited)), kind, default_spec.get("name"), name)
    return {k: v for k, v in spec.items() if k not in inherited}


def build_part(kind: str, key: str, spec: Mapping[str, Any], registry: Any, context: Mapping[str, Any] | None = None) -> Any:
    """Build ``spec`` (a resolved dict with ``name``) of registry ``kind`` with the pipeline's ``context``."""
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
    resolve_spec(kind, key, dict(spec), factory)  # a spec that did not come through the config resolution: same check
    passed = {k: v for k, v in context.items() if var_kw or k in names}
    try:
        return factory(**passed, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method.{key} ({kind} '{name}'): {exc}") from None


def used_options(spec: Mapping[str, Any], part: Any) -> dict[str, Any]:
    """The options of ``spec`` that reached the part (for the probe protocol record)."""
    names, var_kw = keyword_options(type(part))
    return {k: v for k, v in spec.items() if k == "name" or (v is not None and (var_kw or k in names))}
