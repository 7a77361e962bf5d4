"""Plugin discovery: entry points, clashes, broken plugins, helpful unknown-name errors."""

from __future__ import annotations

import types

import pytest

from ssl_bench.errors import UnknownComponentError
from ssl_bench.hookspecs import KIND_HOOKS, hookimpl
from ssl_bench.registry import Registry, build_registry


def _module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook, value in hooks.items():
        setattr(mod, hook, hookimpl(lambda value=value: value))
    return mod


def test_first_party_plugins_come_through_entry_points(registry):
    assert registry.entry("method", "mae").package == "ssl-bench"
    for name in ("vit-nano", "vit-tiny", "vit-s", "vit-b", "vit-l"):
        assert name in registry.names("backbone")
    for kind in ("tokenizer", "corruption", "target", "noise-schedule", "dataset", "evaluator"):
        assert registry.names(kind), kind
    assert not [f for f in registry.failures if f.package == "ssl-bench"], registry.failures


def test_every_kind_has_a_hook():
    assert set(KIND_HOOKS) == {"method", "tokenizer", "corruption", "noise-schedule", "target", "backbone", "dataset", "evaluator"}


def test_name_clash_names_both_packages():
    """A clash no longer raises (it broke every command): the first-party name wins, the other is disabled."""
    from ssl_bench_plugins.mae.method import MAE

    class Other(MAE):  # a different, valid method under an existing name
        pass

    clash = _module("clash_plugin", ssl_bench_methods={"mae": Other})
    reg = build_registry(extra_modules=[("clash-pkg", clash)])
    assert reg.get("method", "mae") is MAE and reg.entry("method", "mae").package == "ssl-bench"
    [problem] = [c.message() for c in reg.clashes if c.name == "mae"]
    assert "'ssl-bench' and 'clash-pkg'" in problem and "Fix: rename the method in 'clash-pkg'" in problem
    assert problem in reg.problems()


def test_broken_hook_is_reported_and_others_keep_working():
    def broken():
        raise ImportError("no module named torch_magic")

    mod = types.ModuleType("broken_plugin")
    mod.ssl_bench_methods = hookimpl(broken)
    reg = build_registry(extra_modules=[("broken-pkg", mod)])
    assert any(f.package == "broken-pkg" and "torch_magic" in f.error for f in reg.failures)
    assert "mae" in reg.names("method")


def test_failing_entry_point_import_is_reported(monkeypatch):
    import importlib.metadata as md

    real = md.entry_points

    class FakeEP:
        name, value, group = "ghost", "ghost_module_that_does_not_exist", "ssl_bench"
        dist = types.SimpleNamespace(name="ghost-pkg")

        def load(self):
            raise ModuleNotFoundError("No module named 'ghost_module_that_does_not_exist'")

    monkeypatch.setattr(md, "entry_points", lambda group: [*real(group=group), FakeEP()])
    reg = build_registry()
    failure = [f for f in reg.failures if f.package == "ghost-pkg"]
    assert failure and "ghost_module_that_does_not_exist" in failure[0].error
    assert "mae" in reg.names("method")


def test_unknown_name_lists_choices_and_suggests_closest(registry):
    with pytest.raises(UnknownComponentError) as info:
        registry.get("backbone", "vit-tny")
    msg = str(info.value)
    assert "Did you mean 'vit-tiny'?" in msg and "vit-b" in msg and "ssl-bench list" in msg
    with pytest.raises(UnknownComponentError, match="Did you mean 'mae'"):
        registry.get("method", "mea")
    with pytest.raises(UnknownComponentError, match="Did you mean 'fashion-mnist'"):
        registry.get("dataset", "fashion_mnist")


def test_registry_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        Registry().add("optimiser", "x", object(), "pkg")
