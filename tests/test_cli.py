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
    assert csv.splitlines()[0].startswith("method") and "mae" in csv
    assert main(["leaderboard", "--layout", "table4", "--out", out]) == 0
    assert "paper" in capsys.readouterr().out


def test_leaderboard_without_store(capsys, tmp_path):
    assert main(["leaderboard", "--out", str(tmp_path)]) == 2
    assert "no results store" in capsys.readouterr().err


def test_every_subcommand_has_help(capsys):
    for sub in ("run", "list", "eval", "leaderboard"):
        with pytest.raises(SystemExit) as info:
            main([sub, "--help"])
        assert info.value.code == 0
        assert "usage: ssl-bench" in capsys.readouterr().out
