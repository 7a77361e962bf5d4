"""A third-party plugin package, pip-installed, registers a method that trains and is ranked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ssl-bench-rotnet"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed_example():
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(EXAMPLE)]
    subprocess.run(pip, check=True, capture_output=True)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "ssl-bench-rotnet"], check=True, capture_output=True)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / "ssl-bench"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_example_plugin_trains_and_appears_on_leaderboard(installed_example, tmp_path):
    listing = _cli("list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    row = [line for line in listing.stdout.splitlines() if " rotnet " in f" {line} "]
    assert row and row[0].split()[0] == "method" and row[0].split()[-1] == "ssl-bench-rotnet"
    run = _cli(
        "run", "rotnet", "--backbone", "vit-nano", "--epochs", "1", "--out", "runs",
        "--set", "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2",
        "dataset.limit_train=256", "dataset.limit_test=128", "train.batch_size=64",
        "eval.linear.epochs=3", "eval.linear.warmup_epochs=1", cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| rotnet" in run.stdout and "| pixels" in run.stdout


def test_first_party_plugins_are_not_a_bare_plugins_package():
    import importlib.util

    assert importlib.util.find_spec("ssl_bench_plugins.mae") is not None
    assert importlib.util.find_spec("plugins") is None or "site-packages" not in str(importlib.util.find_spec("plugins").origin)
