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
           "--seeds", "0", "1", "--blrs", "1e-3", "3e-3", "--set", "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=256",
           "dataset.limit_test=128", "train.batch_size=64", "eval.linear.epochs=3", "eval.linear.warmup_epochs=1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert text.count("by validation linear_top1 (mean of 2 seeds); test accuracy reported for this setting only") == 4
    table = text[text.index("## Test"):text.index("## Paired")]
    rows = [ln for ln in table.splitlines() if ln.startswith("| ")][1:]  # past the header (the rule starts "|:")
    labels = [ln.split("|")[1].strip() for ln in rows]
    assert labels[0] == "pixels" and labels[1].startswith("random-init")
    # each arm is its own row (named after its config file, with the selected blr), n = 2 seeds; each DiT arm beside its untrained network
    for arm in ("ldae_noise", "ldae_masking", "mae_masking", "mae_noise"):
        assert sum(lb.startswith(f"{arm} · train.blr=") for lb in labels) == 1
        assert [ln.split("|")[2].strip() for ln in rows if ln.split("|")[1].strip().startswith(arm)] == ["2"]
    assert sum(lb.startswith("random-init:ldae_") for lb in labels) == 2
    paired = text[text.index("## Paired"):]
    assert paired.count("- linear_top1: ") == 2 and paired.count("- knn_top1: ") == 2
