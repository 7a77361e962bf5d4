"""Plugin discovery and the component registry.

Plugins are modules named by entry points in the ``ssl_bench`` group. The first-party methods in
``plugins/`` (installed as ``ssl_bench_plugins``) and the built-in components of ``ssl_bench``
itself are registered through the very same mechanism as any third-party package.
"""

from __future__ import annotations

import importlib.metadata as md
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterable

import pluggy

from ssl_bench.errors import PluginClashError, UnknownComponentError
from ssl_bench.hookspecs import KIND_HOOKS, PROJECT, ComponentSpecs

ENTRY_POINT_GROUP = "ssl_bench"


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any
    package: str


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be imported or whose hook raised; the others keep working."""

    package: str
    entry_point: str
    error: str


@dataclass
class Registry:
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)

    def add(self, kind: str, name: str, obj: Any, package: str) -> None:
        if kind not in KIND_HOOKS:
            raise ValueError(f"unknown component kind '{kind}'; kinds are {sorted(KIND_HOOKS)}")
        key = (kind, name)
        if key in self.entries and self.entries[key].obj is not obj:
            other = self.entries[key].package
            raise PluginClashError(
                f"{kind} '{name}' is registered by two packages: '{other}' and '{package}'. "
                f"Uninstall one of them, or rename the {kind} in one package."
            )
        self.entries[key] = Entry(kind, name, obj, package)

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.entries[(kind, name)].obj
        except KeyError:
            raise UnknownComponentError(kind, name, self.names(kind)) from None

    def entry(self, kind: str, name: str) -> Entry:
        self.get(kind, name)
        return self.entries[(kind, name)]

    def names(self, kind: str) -> list[str]:
        return sorted(n for (k, n) in self.entries if k == kind)

    def by_kind(self) -> list[Entry]:
        order = list(KIND_HOOKS)
        return sorted(self.entries.values(), key=lambda e: (order.index(e.kind), e.name))


def _dist_name(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ep.value.split(".")[0]


def _collect(pm: pluggy.PluginManager, registry: Registry, module: ModuleType, package: str, ep_name: str) -> None:
    """Call each hook this module implements and add what it returns, attributed to `package`."""
    for kind, hook_name in KIND_HOOKS.items():
        impl = getattr(module, hook_name, None)
        if impl is None:
            continue
        try:
            provided = impl()
        except Exception as exc:  # a broken hook must not take the others down
            registry.failures.append(PluginFailure(package, ep_name, f"{hook_name} raised {exc!r}"))
            continue
        if not isinstance(provided, dict):
            registry.failures.append(
                PluginFailure(package, ep_name, f"{hook_name} must return a dict name -> factory, got {type(provided).__name__}")
            )
            continue
        for name, obj in provided.items():
            registry.add(kind, name, obj, package)


def build_registry(extra_modules: Iterable[tuple[str, ModuleType]] = ()) -> Registry:
    """Discover every plugin in the entry-point group and build a fresh registry.

    `extra_modules` (package name, module) lets tests add a plugin without installing it.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(ComponentSpecs)
    registry = Registry()
    seen: set[str] = set()
    eps = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.value != "ssl_bench.builtin", e.name))
    loaded: list[tuple[str, str, ModuleType]] = []
    for ep in eps:
        if ep.value in seen:  # the same module listed twice (e.g. editable + regular install)
            continue
        seen.add(ep.value)
        package = _dist_name(ep)
        try:
            module = ep.load()
        except Exception as exc:
            err = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            registry.failures.append(PluginFailure(package, ep.name, err))
            continue
        loaded.append((package, ep.name, module))
    loaded += [(pkg, getattr(m, "__name__", "extra"), m) for pkg, m in extra_modules]
    for package, ep_name, module in loaded:
        pm.register(module, name=f"{package}:{ep_name}")
        _collect(pm, registry, module, package, ep_name)
    return registry


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, discovered once."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = build_registry()
    return _REGISTRY


