"""Plugin validation: misspelt hooks, invalid components, name clashes and plugin CLI commands.

A plugin's mistake must cost only its own names, be reported once in one line naming the package,
the name and the fix, and leave every other component and command working.
"""

from __future__ import annotations

import argparse
import logging
import types
from typing import Any

import pytest

import ssl_bench.cli as cli
import ssl_bench.registry as registry_module
from ssl_bench.cli import build_parser, builtin_command_names, main
from ssl_bench.components.base import Method
from ssl_bench.errors import DisabledComponentError, PluginClashError, UnknownComponentError
from ssl_bench.hookspecs import Command, hookimpl
from ssl_bench.registry import FIRST_PARTY, Registry, build_registry


class GoodMethod(Method):
    def training_step(self, images: Any, labels: Any, generator: Any) -> Any:
        raise NotImplementedError

    def probe_features(self, images: Any) -> Any:
        raise NotImplementedError


class OtherGoodMethod(GoodMethod):
    pass


class NoProbe(Method):  # forgets probe_features
    def training_step(self, images: Any, labels: Any, generator: Any) -> Any:
        raise NotImplementedError


class NotAMethod:
    pass


class Hello:
    """A minimal plugin command, as a class (the registry instantiates it)."""

    help = "say hello"
    calls: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--who", default="world")

    def run(self, args: argparse.Namespace) -> int:
        Hello.calls.append(args.who)
        print(f"hello {args.who}")
        return 0


def _module(name: str, **hooks: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook, value in hooks.items():
        setattr(mod, hook, hookimpl(lambda value=value: value))
    return mod


def _commands_only(*extra: tuple[str, types.ModuleType]) -> Registry:
    return build_registry(extra_modules=extra, components=False)


# -- misspelt hooks -----------------------------------------------------------------------------


def test_misspelt_hook_names_module_bad_name_and_closest_hook():
    mod = _module("typo_plugin", ssl_bench_method={"typo": GoodMethod}, ssl_bench_datasets={"typo-data": lambda **kw: None})
    reg = _commands_only(("typo-pkg", mod))
    [hook] = reg.unknown_hooks
    assert (hook.package, hook.module, hook.hook, hook.suggestion) == ("typo-pkg", "typo_plugin", "ssl_bench_method", "ssl_bench_methods")
    line = hook.message()
    assert "typo_plugin" in line and "ssl_bench_method()" in line and "rename it to ssl_bench_methods" in line
    assert "\n" not in line
    assert "typo-data" in reg.names("dataset")  # the plugin's correctly named hook still works
    assert "typo" not in reg.names("method")


def test_first_party_plugins_have_no_problems(registry):
    ours = [*registry.unknown_hooks, *registry.invalid, *registry.failures]
    assert [p for p in ours if p.package == FIRST_PARTY] == []
    assert [c for c in registry.clashes if FIRST_PARTY in c.packages and c.winner != FIRST_PARTY] == []


# -- invalid components -------------------------------------------------------------------------


def test_abstract_method_is_rejected_and_the_rest_of_the_plugin_registers():
    mod = _module("half_plugin", ssl_bench_methods={"no-probe": NoProbe, "fine": GoodMethod, "not-a-method": NotAMethod})
    reg = build_registry(extra_modules=[("half-pkg", mod)])
    assert reg.get("method", "fine") is GoodMethod
    assert "mae" in reg.names("method")
    bad = {i.name: i for i in reg.invalid}
    assert set(bad) == {"no-probe", "not-a-method"}
    assert bad["no-probe"].package == "half-pkg" and "probe_features" in bad["no-probe"].reason
    assert "half-pkg" in bad["no-probe"].message() and "Fix: implement probe_features in NoProbe" in bad["no-probe"].message()
    assert "not a subclass of ssl_bench.components.base.Method" in bad["not-a-method"].reason
    with pytest.raises(DisabledComponentError, match="probe_features") as info:
        reg.get("method", "no-probe")
    assert isinstance(info.value, UnknownComponentError) and "half-pkg" in str(info.value)


def test_non_callable_component_is_rejected():
    mod = _module("num_plugin", ssl_bench_tokenizers={"forty-two": 42, "ok": lambda **kw: None})
    reg = build_registry(extra_modules=[("num-pkg", mod)])
    [bad] = reg.invalid
    assert (bad.kind, bad.name, bad.package) == ("tokenizer", "forty-two", "num-pkg") and "not callable" in bad.reason
    assert "ok" in reg.names("tokenizer") and "forty-two" not in reg.names("tokenizer")


# -- name clashes --------------------------------------------------------------------------------


def test_clash_between_two_third_party_packages_disables_the_name():
    a = _module("a_plugin", ssl_bench_methods={"twin": GoodMethod, "only-a": GoodMethod})
    b = _module("b_plugin", ssl_bench_methods={"twin": OtherGoodMethod})
    reg = build_registry(extra_modules=[("a-pkg", a), ("b-pkg", b)])  # no raise: every other name works
    assert "twin" not in reg.names("method") and reg.get("method", "only-a") is GoodMethod and "mae" in reg.names("method")
    [clash] = reg.clashes
    assert clash.winner is None and clash.packages == ("a-pkg", "b-pkg")
    line = clash.message()
    assert "'a-pkg' and 'b-pkg'" in line and "neither is used" in line and "Fix:" in line and "\n" not in line
    assert line in reg.problems()
    with pytest.raises(DisabledComponentError, match="'a-pkg' and 'b-pkg'") as info:
        reg.get("method", "twin")
    assert isinstance(info.value, PluginClashError) and "is disabled" in str(info.value)


def test_first_party_wins_whatever_the_load_order():
    for order in ([(FIRST_PARTY, GoodMethod), ("third", OtherGoodMethod)], [("third", OtherGoodMethod), (FIRST_PARTY, GoodMethod)]):
        reg = Registry()
        for package, cls in order:
            reg.add("method", "m", cls, package)
        assert reg.get("method", "m") is GoodMethod and reg.entry("method", "m").package == FIRST_PARTY
        [clash] = reg.clashes
        assert clash.winner == FIRST_PARTY and "Fix: rename the method in 'third'" in clash.message()


def test_the_same_object_from_two_entry_points_is_no_clash():
    reg = Registry()
    reg.add("method", "m", GoodMethod, "one")
    reg.add("method", "m", GoodMethod, "two")
    assert reg.get("method", "m") is GoodMethod and reg.clashes == []


def test_a_third_clashing_package_keeps_the_name_disabled():
    reg = Registry()
    for package, cls in (("a", GoodMethod), ("b", OtherGoodMethod), ("c", NoProbe)):
        reg.add("method", "m", cls, package)
    with pytest.raises(DisabledComponentError, match="'a', 'b' and 'c'"):
        reg.get("method", "m")


# -- warnings -------------------------------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_problems_are_warned_once_each():
    mod = _module("typo_plugin", ssl_bench_evaluator={})
    reg = _commands_only(("typo-pkg", mod))
    handler = _Lines()
    logger = logging.getLogger("ssl_bench.registry")
    logger.addHandler(handler)
    try:
        reg.warn_problems()
        reg.warn_problems()
        reg.add("method", "m", GoodMethod, "x")
        reg.add("method", "m", OtherGoodMethod, "y")
        reg.warn_problems()
    finally:
        logger.removeHandler(handler)
    assert len(handler.lines) == 2, handler.lines
    assert "ssl_bench_evaluators" in handler.lines[0] and "'x' and 'y'" in handler.lines[1]
    assert all(line.startswith("ssl-bench: warning: ") for line in handler.lines)


# -- plugin commands ------------------------------------------------------------------------------


def test_command_hook_registers_a_command_under_kind_command():
    reg = _commands_only(("hello-pkg", _module("hello_plugin", ssl_bench_commands={"hello": Hello})))
    assert "hello" in reg.names("command")
    entry = reg.entry("command", "hello")
    assert entry.package == "hello-pkg" and isinstance(entry.obj, Hello) and isinstance(entry.obj, Command)
    assert not reg.components_loaded  # commands alone do not run the component hooks (no torch import)


def test_invalid_command_is_rejected():
    class NoRun:
        help = "nothing to run"

        def add_arguments(self, parser: argparse.ArgumentParser) -> None:
            pass

    reg = _commands_only(("bad-pkg", _module("bad_cmd", ssl_bench_commands={"norun": NoRun(), "has space": Hello})))
    bad = {i.name: i for i in reg.invalid}
    assert set(bad) == {"norun", "has space"} and "run()" in bad["norun"].reason and "bad-pkg" in bad["norun"].message()
    assert not {"norun", "has space"} & set(reg.commands)


def test_command_cannot_shadow_a_builtin_or_another_plugin():
    from ssl_bench.hookspecs import BUILTIN_COMMAND_NAMES

    # the registry reserves the names hookspecs lists; the parser must build exactly those
    assert sorted(builtin_command_names()) == sorted(BUILTIN_COMMAND_NAMES) == ["compare", "eval", "leaderboard", "list", "run", "sweep"]
    a = _module("a_cmds", ssl_bench_commands={"run": Hello, "twin": Hello})
    b = _module("b_cmds", ssl_bench_commands={"twin": Hello})
    reg = _commands_only(("a-pkg", a), ("b-pkg", b))
    assert not {"run", "twin"} & set(reg.commands)
    lines = "\n".join(reg.problems())
    assert "command 'run'" in lines and "built-in `ssl-bench run`" in lines and "'a-pkg' and 'b-pkg'" in lines
    args = build_parser(reg).parse_args(["run", "mae"])
    assert args.func is cli.cmd_run  # the built-in still answers


def test_plugin_command_takes_over_once_the_builtin_is_removed(monkeypatch, capsys):
    """The path `deconstruct` will take: today a built-in, later a plugin command of the same name."""
    original = cli._add_builtin_commands

    def with_fake_builtin(sub: argparse._SubParsersAction) -> None:
        original(sub)
        sub.add_parser("fake-chain", help="built-in version").set_defaults(func=lambda args: 7)

    plugin = ("chain-pkg", _module("chain_plugin", ssl_bench_commands={"fake-chain": Hello}))
    names = registry_module.BUILTIN_COMMAND_NAMES  # the names the registry reserves (hookspecs lists them)
    monkeypatch.setattr(cli, "_add_builtin_commands", with_fake_builtin)
    monkeypatch.setattr(registry_module, "BUILTIN_COMMAND_NAMES", (*names, "fake-chain"))
    reg = _commands_only(plugin)
    assert "fake-chain" not in reg.commands and any("built-in `ssl-bench fake-chain`" in p for p in reg.problems())
    monkeypatch.setattr(registry_module, "_REGISTRY", reg)
    assert main(["fake-chain"]) == 7  # the built-in wins while it exists

    monkeypatch.setattr(cli, "_add_builtin_commands", original)  # the built-in is removed ...
    monkeypatch.setattr(registry_module, "BUILTIN_COMMAND_NAMES", names)
    reg = _commands_only(plugin)
    assert reg.problems() == [] and reg.entry("command", "fake-chain").package == "chain-pkg"
    monkeypatch.setattr(registry_module, "_REGISTRY", reg)
    Hello.calls.clear()
    assert main(["fake-chain", "--who", "chain"]) == 0  # ... and the plugin's takes over
    assert Hello.calls == ["chain"] and "hello chain" in capsys.readouterr().out
