"""The command line as a user meets it: list, run, eval, leaderboard, and its error messages."""

from __future__ import annotations

import pytest

from ssl_bench.cli import main
from tests.conftest import TINY_SET


def test_list_shows_kind_name_and_package(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "method" in out and "mae" in out and "ssl-bench" in out and "vit-b" in out and "knn" in out


def test_unknown_method_suggests_closest(capsys):
    assert main(["run", "mea"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'mea'" in err and "Did you mean 'mae'?" in err


def test_unknown_backbone_and_dataset(capsys, tmp_path):
    assert main(["run", "mae", "--backbone", "vit-bb", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'vit-b'?" in capsys.readouterr().err
    assert main(["run", "mae", "--dataset", "cifar-10", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'cifar10'?" in capsys.readouterr().err


def test_missing_data_names_paths_and_fix(capsys, tmp_path, monkeypatch):
    import ssl_bench.data.datasets as ds

    monkeypatch.setattr(ds, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "no-system-copy",))
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "cache"))
    rc = main(["run", "mae", "--dataset", "fashion-mnist", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "apt-get install dataset-fashion-mnist" in err


def test_run_eval_leaderboard(capsys, tmp_path):
    out = str(tmp_path / "runs")
    args = ["run", "mae", "--backbone", "vit-nano", "--epochs", "1", "--out", out, "--set", *TINY_SET[:-4], "eval.linear.epochs=3", "eval.linear.warmup_epochs=1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| pixels" in text and "| random-init" in text and "| mae" in text
    run_dir = tmp_path / "runs" / "digits" / "vit-nano" / "mae-s0"
    assert main(["eval", str(run_dir), "--out", out]) == 0
    assert "knn_top1" in capsys.readouterr().out
    assert main(["leaderboard", "--format", "csv", "--out", out]) == 0
    csv = capsys.readouterr().out
    assert csv.splitlines()[0].startswith("row,method") and "mae" in csv
    assert main(["leaderboard", "--layout", "table4", "--out", out]) == 0
    assert "paper" in capsys.readouterr().out
    assert main(["leaderboard", "--results", out]) == 0  # a folder holding results.db
    assert "| mae" in capsys.readouterr().out
    assert main(["leaderboard", "--out", out, "--dataset", "nosuch"]) == 2  # an empty table says why
    err = capsys.readouterr().err
    assert "no finished runs for dataset 'nosuch'" in err and "datasets there: digits" in err and err.count("\n") == 1


def test_eval_help_says_config_json_as_the_readme_does(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "config.json" in text and "never executing config.py" in text


def test_leaderboard_without_store(capsys, tmp_path):
    assert main(["leaderboard", "--out", str(tmp_path)]) == 2
    assert "no results store" in capsys.readouterr().err


def test_every_subcommand_has_help(capsys):
    for sub in ("run", "list", "eval", "leaderboard"):
        with pytest.raises(SystemExit) as info:
            main([sub, "--help"])
        assert info.value.code == 0
        assert "usage: ssl-bench" in capsys.readouterr().out


# -- plugin commands and `list` validation ---------------------------------------------------------


def _plugin(name: str, **hooks):
    import types

    from ssl_bench.hookspecs import hookimpl

    mod = types.ModuleType(name)
    for hook, value in hooks.items():
        setattr(mod, hook, hookimpl(lambda value=value: value))
    return mod


class _Echo:
    help = "print the words back"

    def add_arguments(self, parser):
        parser.add_argument("words", nargs="*")

    def run(self, args):
        print("echo:", *args.words)


class _Crash(_Echo):
    help = "always fails"

    def run(self, args):
        raise RuntimeError("boom")


class _BadArgs(_Echo):
    help = "cannot declare its options"

    def add_arguments(self, parser):
        raise TypeError("bad option spec")


@pytest.fixture
def plugin_registry(monkeypatch):
    """Install a registry with extra plugin modules as the process-wide one for `main`."""
    import ssl_bench.registry as registry_module

    def install(*extra, components=False):
        reg = registry_module.build_registry(extra_modules=extra, components=components)
        monkeypatch.setattr(registry_module, "_REGISTRY", reg)
        return reg

    return install


def test_plugin_command_runs_and_is_listed(plugin_registry, capsys):
    plugin_registry(("echo-pkg", _plugin("echo_plugin", ssl_bench_commands={"echo": _Echo()})))
    assert main(["echo", "a", "b"]) == 0  # run() returning None counts as success
    assert "echo: a b" in capsys.readouterr().out
    assert main(["list"]) == 0
    row = [line.split() for line in capsys.readouterr().out.splitlines() if " echo " in f" {line} "]
    assert row == [["command", "echo", "echo-pkg"]]


def test_help_lists_plugin_commands_and_survives_a_broken_plugin(plugin_registry, capsys):
    def broken():
        raise ImportError("no module named torch_magic")

    plugin_registry(("echo-pkg", _plugin("echo_plugin", ssl_bench_commands={"echo": _Echo()})),
                    ("broken-pkg", _plugin("broken_plugin", ssl_bench_commands=None, ssl_bench_methods=None)))
    import ssl_bench.registry as registry_module

    registry_module._REGISTRY.plugins[-1].module.ssl_bench_methods = broken
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "echo" in out and "print the words back" in out and "leaderboard" in out


def test_plugin_command_crash_is_one_line_naming_the_package(plugin_registry, capsys):
    plugin_registry(("crash-pkg", _plugin("crash_plugin", ssl_bench_commands={"crash": _Crash})))
    assert main(["crash"]) == 2
    err = capsys.readouterr().err.strip()
    assert "command 'crash' from package 'crash-pkg' failed: RuntimeError('boom')" in err and "Fix:" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_broken_add_arguments_disables_only_that_command(plugin_registry, capsys):
    plugin_registry(("bad-pkg", _plugin("bad_plugin", ssl_bench_commands={"badargs": _BadArgs(), "echo": _Echo()})))
    assert main(["echo", "x"]) == 0
    captured = capsys.readouterr()
    assert "echo: x" in captured.out
    assert "ssl-bench: warning: plugin failed to load: package 'bad-pkg'" in captured.err and "bad option spec" in captured.err
    assert main(["badargs", "--anything"]) == 2
    err = capsys.readouterr().err
    assert "command 'badargs' from package 'bad-pkg' is unavailable" in err and "bad option spec" in err


def test_list_reports_problems_once_and_exits_1(plugin_registry, capsys):
    class Abstract:
        pass

    plugin_registry(("typo-pkg", _plugin("typo_plugin", ssl_bench_method={}, ssl_bench_methods={"abstract": Abstract})),
                    ("run-pkg", _plugin("run_plugin", ssl_bench_commands={"run": _Echo()})), components=True)
    assert main(["list"]) == 1
    captured = capsys.readouterr()
    assert "mae" in captured.out and "abstract" not in captured.out  # the table still lists everything valid
    err = captured.err
    assert "3 plugin problems:" in err
    assert "unknown hook: module 'typo_plugin' (package 'typo-pkg') defines ssl_bench_method()" in err
    assert "invalid method 'abstract' in package 'typo-pkg'" in err
    assert "name clash: command 'run'" in err and "Fix: rename the command in 'run-pkg'" in err
    assert "warning" not in err  # printed by `list` once, not also logged
    assert main(["leaderboard", "--out", "/nonexistent-dir-for-test"]) == 2  # other commands still work
    assert "warning" not in capsys.readouterr().err  # and do not repeat what `list` showed


def test_warnings_go_to_stderr_once_per_process(plugin_registry, capsys):
    plugin_registry(("typo-pkg", _plugin("typo_plugin", ssl_bench_command={})))
    assert main(["leaderboard", "--out", "/nonexistent-dir-for-test"]) == 2
    err = capsys.readouterr().err
    assert err.count("ssl-bench: warning: unknown hook") == 1 and "rename it to ssl_bench_commands" in err
    assert main(["leaderboard", "--out", "/nonexistent-dir-for-test"]) == 2
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("argv,says", [
    (["--seed", "1", "--seeds", "0", "1"], "--seed and --seeds both given"),
    (["--seeds", "0", "-1"], "--seeds must be non-negative integers"),
    (["--seeds", "0", "1", "--resume"], "--resume continues one run per method"),
])
def test_bad_seeds_are_one_line_before_anything_runs(tmp_path, capsys, argv, says):
    rc = main(["run", "mae", *argv, "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
