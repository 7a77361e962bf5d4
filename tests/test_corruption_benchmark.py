"""benchmarks/corruption: the paired configs differ only in the corruption, and the comparison
script runs end to end (tiny settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_bench.config import flat_keys
from ssl_bench.run import method_config

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "corruption"
PAIRS = [("ldae", "ldae_noise.py", "ldae_masking.py"), ("mae", "mae_masking.py", "mae_noise.py")]


@pytest.mark.parametrize("method,a,b", PAIRS)
def test_pair_differs_only_in_the_corruption(registry, method, a, b):
    ca = flat_keys(method_config(method, registry, user_config=BENCH / a).to_dict())
    cb = flat_keys(method_config(method, registry, user_config=BENCH / b).to_dict())
    differing = {k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k)}
    assert differing and all(k.startswith("method.corruption.") for k in differing), differing


@pytest.mark.slow
def test_compare_script_runs(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(BENCH / "compare.py"), "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "runs"),
           "--set", "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=256",
           "dataset.limit_test=128", "train.batch_size=64", "eval.linear.epochs=3", "eval.linear.warmup_epochs=1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout[out.stdout.index("| network"):]
    assert table.count("additive latent noise") == 2 and table.count("random masking 75%") == 2
    assert "baseline: pixels" in table and "untrained network" in table
