"""Two processes on CPU (gloo) through torchrun: the same code path as multi-GPU DDP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from ssl_bench.results.store import ResultsStore
from ssl_bench.train.checkpoint import CHECKPOINT_NAME


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_run(tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), "-m", "ssl_bench.cli",
        "run", "mae", "--backbone", "vit-nano", "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "runs"),
        "--set", "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=256",
        "dataset.limit_test=128", "train.batch_size=64",
        "train.accum_iter=2",  # 2 ranks x 2 micro-batches of 16: exercises DDP's no_sync on the first
        "eval.linear.epochs=3", "eval.linear.warmup_epochs=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "| mae" in proc.stdout
    run_dir = tmp_path / "runs" / "digits" / "vit-nano" / "mae-s0"
    state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 2 * (256 // 64)  # optimiser steps of the global batch
    runs = ResultsStore(tmp_path / "runs" / "results.db").runs_frame()
    assert (runs["method"] == "mae").sum() == 1  # only rank 0 records
