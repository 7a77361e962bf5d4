"""Plugin discovery, validation and the component registry.

Plugins are modules named by entry points in the ``ssl_bench`` group. The first-party methods in
``plugins/`` (installed as ``ssl_bench_plugins``) and the built-in components of ``ssl_bench``
itself are registered through the very same mechanism as any third-party package.

Nothing one plugin does wrong (fails to import, misspells a hook, registers an abstract method,
takes a name another package uses) may break the CLI for everyone: the registry drops only the
offending name, records a one-line problem, and `ssl-bench list` (exit code 1) or a one-time
warning on the ``ssl_bench`` logger tells the user which package to fix.

Loading is two-staged so that `ssl-bench --help` stays fast: importing the plugin modules and
collecting their commands is cheap, while the component hooks import torch and the method code;
they run on first use of a component (``load_components``).
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import inspect
import logging
import reprlib
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterable

import pluggy

from ssl_bench.errors import DisabledComponentError, UnknownComponentError
from ssl_bench.hookspecs import (
    BUILTIN_COMMAND_NAMES,
    COMMAND_HOOK,
    COMMAND_KIND,
    HOOK_NAMES,
    KIND_HOOKS,
    PROJECT,
    CommandSpecs,
    ComponentSpecs,
)

ENTRY_POINT_GROUP = "ssl_bench"
# The distribution of this project: its names win a clash against a third-party package, because
# the harness's own configs and docs rely on them meaning the first-party component.
FIRST_PARTY = "ssl-bench"

log = logging.getLogger("ssl_bench.registry")


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any
    package: str


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin module, kept so its component hooks can run later than its command hook."""

    package: str
    entry_point: str
    module: ModuleType


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be imported or whose hook raised; the others keep working."""

    package: str
    entry_point: str
    error: str

    def message(self) -> str:
        return (f"plugin failed to load: package '{self.package}' (entry point '{self.entry_point}'): {self.error}. "
                f"Fix: repair or upgrade '{self.package}', or uninstall it.")


@dataclass(frozen=True)
class Clash:
    """Several packages registered different objects under one kind+name.

    `winner` is the package whose object is used (the first-party one), or None when the name is
    disabled; `builtin` marks a plugin command named like a built-in subcommand.
    """

    kind: str
    name: str
    packages: tuple[str, ...]
    winner: str | None
    builtin: bool = False

    def reason(self) -> str:
        """Why the name is (partly) disabled and the fix, without the kind/name prefix."""
        others = _quoted_and(p for p in self.packages if p != self.winner)
        if self.builtin:
            return (f"{others} register{'s' if len(set(self.packages)) == 1 else ''} a command with the name of the built-in "
                    f"`ssl-bench {self.name}`, which wins. Fix: rename the command in {others}.")
        if len(set(self.packages)) == 1:
            return (f"package '{self.packages[0]}' registers it {len(self.packages)} times with different objects. "
                    f"Fix: register it once in '{self.packages[0]}'.")
        if self.winner is not None:
            return (f"it is registered by both '{self.winner}' and {others}; the one from '{self.winner}' is used and "
                    f"the one from {others} is disabled. Fix: rename the {self.kind} in {others}.")
        return (f"it is registered by both {_quoted_and(self.packages)}, so neither is used. "
                f"Fix: uninstall one of these packages, or rename the {self.kind} in one of them.")

    def message(self) -> str:
        return f"name clash: {self.kind} '{self.name}': {self.reason()}"


@dataclass(frozen=True)
class InvalidComponent:
    """A registration that cannot work (abstract method class, non-callable factory, ...); only it is dropped."""

    package: str
    kind: str
    name: str
    reason: str
    fix: str

    def message(self) -> str:
        return f"invalid {self.kind} '{self.name}' in package '{self.package}': {self.reason}, so it is not registered. Fix: {self.fix}."


@dataclass(frozen=True)
class UnknownHook:
    """A function named like a hook that is not one: pluggy would silently never call it."""

    package: str
    module: str
    hook: str
    suggestion: str | None

    def message(self) -> str:
        fix = (f"rename it to {self.suggestion}" if self.suggestion
               else f"rename it to one of {', '.join(sorted(HOOK_NAMES))}, or drop the ssl_bench_ prefix")
        return (f"unknown hook: module '{self.module}' (package '{self.package}') defines {self.hook}(), which is not "
                f"an ssl-bench hook and is never called. Fix: {fix}.")


@dataclass
class Registry:
    """Components (`entries`, keyed by kind and name) and plugin CLI commands (`commands`, by name).

    `failures`, `clashes`, `invalid` and `unknown_hooks` are the problems found while loading;
    `problems()` renders them one line each.
    """

    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    commands: dict[str, Entry] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    invalid: list[InvalidComponent] = field(default_factory=list)
    unknown_hooks: list[UnknownHook] = field(default_factory=list)
    # names of the CLI's own subcommands: a plugin command may not shadow them
    reserved_commands: frozenset[str] = frozenset()
    plugins: list[Plugin] = field(default_factory=list)
    components_loaded: bool = True  # build_registry sets False until the component hooks have run
    _offers: dict[tuple[str, str], list[Entry]] = field(default_factory=dict, repr=False)
    _clashes: dict[tuple[str, str], Clash] = field(default_factory=dict, repr=False)
    _rejected: dict[tuple[str, str], InvalidComponent] = field(default_factory=dict, repr=False)
    _reported: set[str] = field(default_factory=set, repr=False)

    @property
    def clashes(self) -> list[Clash]:
        return list(self._clashes.values())

    def add(self, kind: str, name: str, obj: Any, package: str) -> None:
        """Offer `obj` as kind+name from `package`; clashes are resolved here, never raised."""
        if kind not in KIND_HOOKS and kind != COMMAND_KIND:
            raise ValueError(f"unknown component kind '{kind}'; kinds are {sorted([*KIND_HOOKS, COMMAND_KIND])}")
        key = (kind, name)
        offers = self._offers.setdefault(key, [])
        if any(o.obj is obj for o in offers):  # one module reached twice (e.g. editable + regular install)
            return
        offers.append(Entry(kind, name, obj, package))
        self._resolve(key)

    def _resolve(self, key: tuple[str, str]) -> None:
        """Pick the object used for `key` from all offers, independent of the order plugins loaded in."""
        kind, name = key
        offers = self._offers[key]
        packages = tuple(o.package for o in offers)
        winner: Entry | None
        clash: Clash | None = None
        if kind == COMMAND_KIND and name in self.reserved_commands:
            winner, clash = None, Clash(kind, name, packages, None, builtin=True)
        elif len(offers) == 1:
            winner = offers[0]
        else:
            first_party = [o for o in offers if o.package == FIRST_PARTY]
            winner = first_party[0] if len(first_party) == 1 else None
            clash = Clash(kind, name, packages, winner.package if winner else None)
        table: dict[Any, Entry] = self.commands if kind == COMMAND_KIND else self.entries
        slot: Any = name if kind == COMMAND_KIND else key
        if winner is None:
            table.pop(slot, None)
        else:
            table[slot] = winner
        if clash is None:
            self._clashes.pop(key, None)
        else:
            self._clashes[key] = clash

    def reject(self, problem: InvalidComponent) -> None:
        """Record a registration that failed validation; asking for that name then says why."""
        self.invalid.append(problem)
        self._rejected.setdefault((problem.kind, problem.name), problem)

    def get(self, kind: str, name: str) -> Any:
        key = (kind, name)
        if kind == COMMAND_KIND:
            found = self.commands.get(name)
        else:
            self.load_components()
            found = self.entries.get(key)
        if found is not None:
            return found.obj
        if key in self._clashes:
            raise DisabledComponentError(kind, name, self._clashes[key].reason())
        if key in self._rejected:
            bad = self._rejected[key]
            raise DisabledComponentError(kind, name, f"package '{bad.package}' registers it, but {bad.reason}. Fix: {bad.fix}.")
        raise UnknownComponentError(kind, name, self.names(kind))

    def entry(self, kind: str, name: str) -> Entry:
        self.get(kind, name)
        return self.commands[name] if kind == COMMAND_KIND else self.entries[(kind, name)]

    def names(self, kind: str) -> list[str]:
        if kind == COMMAND_KIND:
            return sorted(self.commands)
        self.load_components()
        return sorted(n for (k, n) in self.entries if k == kind)

    def by_kind(self) -> list[Entry]:
        """Every component, in hook order then by name (commands are in `commands`)."""
        self.load_components()
        order = list(KIND_HOOKS)
        return sorted(self.entries.values(), key=lambda e: (order.index(e.kind), e.name))

    def load_components(self) -> None:
        """Run every plugin's component hooks (once); until then only commands are known."""
        if self.components_loaded:
            return
        self.components_loaded = True
        for plugin in self.plugins:
            for kind, hook_name in KIND_HOOKS.items():
                _collect(self, plugin, kind, hook_name)

    def problems(self) -> list[str]:
        """One line per problem found so far: failures, clashes, invalid registrations, unknown hooks."""
        return [p.message() for p in [*self.failures, *self.clashes, *self.invalid, *self.unknown_hooks]]

    def warn_problems(self) -> None:
        """Log each problem not reported yet as a warning, so a user meets it once per process."""
        for line in self.problems():
            if line not in self._reported:
                self._reported.add(line)
                log.warning("ssl-bench: warning: %s", line)

    def mark_reported(self) -> None:
        """The caller showed every problem itself (`ssl-bench list`): do not repeat them as warnings."""
        self._reported.update(self.problems())


def _quoted_and(names: Iterable[str]) -> str:
    uniq = [f"'{n}'" for n in dict.fromkeys(names)]
    return uniq[0] if len(uniq) == 1 else f"{', '.join(uniq[:-1])} and {uniq[-1]}"


def _describe(obj: Any) -> str:
    if inspect.isclass(obj):
        return f"class {obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__name__} {reprlib.repr(obj)}".replace("\n", " ")


def _check(kind: str, name: Any, obj: Any) -> tuple[Any, str | None, str]:
    """(object to register, reason it is invalid or None, fix). A command class becomes its instance."""
    if not isinstance(name, str) or not name.strip():
        return obj, f"the name {name!r} is not a non-empty string", "register it under a non-empty string name"
    if kind == "method":
        from ssl_bench.components.base import Method  # imports torch: only when methods are collected

        if not (inspect.isclass(obj) and issubclass(obj, Method)):
            return obj, f"{_describe(obj)} is not a subclass of ssl_bench.components.base.Method", \
                "register a class that subclasses Method"
        missing = sorted(getattr(obj, "__abstractmethods__", ()))
        if missing:
            return obj, f"class {obj.__qualname__} is abstract: it does not implement {', '.join(missing)}", \
                f"implement {', '.join(missing)} in {obj.__qualname__} (see ssl_bench.components.base.Method)"
        return obj, None, ""
    if kind == COMMAND_KIND:
        if name.startswith("-") or any(c.isspace() for c in name):
            return obj, "it is not a usable subcommand name", "use a name without spaces that does not start with '-'"
        if inspect.isclass(obj):
            try:
                obj = obj()
            except Exception as exc:
                return obj, f"{_describe(obj)} cannot be instantiated with no arguments ({exc!r})", \
                    "give the class a no-argument constructor, or register an instance"
        lacks = [] if isinstance(getattr(obj, "help", None), str) else ["help (a string)"]
        lacks += [f"{m}()" for m in ("add_arguments", "run") if not callable(getattr(obj, m, None))]
        if lacks:
            return obj, f"{_describe(obj)} lacks {', '.join(lacks)}", \
                "give it help: str, add_arguments(parser) and run(args) -> int (see ssl_bench.hookspecs.Command)"
        return obj, None, ""
    if not callable(obj):
        return obj, f"{_describe(obj)} is not callable", f"register the {kind}'s class or a factory function"
    return obj, None, ""


def _collect(registry: Registry, plugin: Plugin, kind: str, hook_name: str) -> None:
    """Call one hook of this plugin and add what it returns, attributed to its package."""
    impl = getattr(plugin.module, hook_name, None)
    if impl is None:
        return
    try:
        provided = impl()
    except Exception as exc:  # a broken hook must not take the others down
        registry.failures.append(PluginFailure(plugin.package, plugin.entry_point, f"{hook_name} raised {exc!r}"))
        return
    if not isinstance(provided, dict):
        registry.failures.append(PluginFailure(
            plugin.package, plugin.entry_point, f"{hook_name} must return a dict name -> object, got {type(provided).__name__}"))
        return
    for name, obj in provided.items():
        try:
            obj, reason, fix = _check(kind, name, obj)
        except Exception as exc:  # e.g. a property raising on getattr
            reason, fix = f"checking it raised {exc!r}", "make the registered object inspectable"
        if reason is not None:
            registry.reject(InvalidComponent(plugin.package, kind, str(name), reason, fix))
        else:
            registry.add(kind, name, obj, plugin.package)


def _unknown_hooks(plugin: Plugin) -> list[UnknownHook]:
    """Functions named ssl_bench_* that are no hook: almost always a misspelt hook name."""
    found = []
    for attr, value in sorted(getattr(plugin.module, "__dict__", {}).items()):
        if attr.startswith("ssl_bench_") and attr not in HOOK_NAMES and inspect.isroutine(value):
            close = difflib.get_close_matches(attr, sorted(HOOK_NAMES), n=1, cutoff=0.6)
            module = getattr(plugin.module, "__name__", plugin.entry_point)
            found.append(UnknownHook(plugin.package, module, attr, close[0] if close else None))
    return found


def _dist_name(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ep.value.split(".")[0]


def build_registry(extra_modules: Iterable[tuple[str, ModuleType]] = (), *, components: bool = True,
                   reserved_commands: Iterable[str] | None = None) -> Registry:
    """Discover every plugin in the entry-point group and build a fresh registry.

    `extra_modules` (package name, module) lets tests add a plugin without installing it.
    `components=False` loads the plugin modules and their commands only (cheap); components are
    then collected on first use. `reserved_commands` defaults to the CLI's built-in subcommands.
    """
    reserved = frozenset(BUILTIN_COMMAND_NAMES if reserved_commands is None else reserved_commands)
    registry = Registry(reserved_commands=reserved, components_loaded=False)
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(ComponentSpecs)
    pm.add_hookspecs(CommandSpecs)
    seen: set[str] = set()
    eps = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.value != "ssl_bench.builtin", e.name))
    loaded: list[Plugin] = []
    for ep in eps:
        if ep.value in seen:  # the same module listed twice (e.g. editable + regular install)
            continue
        seen.add(ep.value)
        package = _dist_name(ep)
        try:
            module = ep.load()
        except Exception as exc:
            err = "".join(traceback.format_exception_only(type(exc), exc)).strip().replace("\n", " ")
            registry.failures.append(PluginFailure(package, ep.name, err))
            continue
        loaded.append(Plugin(package, ep.name, module))
    loaded += [Plugin(pkg, getattr(m, "__name__", "extra"), m) for pkg, m in extra_modules]
    for plugin in loaded:
        if any(p.module is plugin.module for p in registry.plugins):
            continue
        try:  # pluggy checks each hookimpl's signature against its spec
            pm.register(plugin.module, name=f"{plugin.package}:{plugin.entry_point}")
        except pluggy.PluginValidationError as exc:
            registry.failures.append(PluginFailure(plugin.package, plugin.entry_point, str(exc).replace("\n", " ")))
            continue
        registry.plugins.append(plugin)
        registry.unknown_hooks += _unknown_hooks(plugin)
        _collect(registry, plugin, COMMAND_KIND, COMMAND_HOOK)
    if components:
        registry.load_components()
    return registry


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False, *, components: bool = True, warn: bool = True) -> Registry:
    """The process-wide registry, discovered once.

    `components=False` is for the CLI parser (commands only, no torch import). With `warn`, every
    problem not reported yet is logged once as a warning on the ``ssl_bench`` logger.
    """
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = build_registry(components=components)
    elif components:
        _REGISTRY.load_components()
    if warn:
        _REGISTRY.warn_problems()
    return _REGISTRY
