"""Feature extraction and the augmented probe under DDP: two gloo processes on CPU give exactly what
one process gives (same rows, same order, no padding duplicates), and the features cache is decided
by rank 0 alone without leaving the other rank behind in a collective."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from ssl_bench.data.datasets import load_digits
from ssl_bench.eval.augmented_probe import augmented_linear_probe
from ssl_bench.eval.features import cached_features, extract_features
from ssl_bench.eval.linear_probe import LinearProbeProtocol

WORLD = 2
N_TRAIN, N_TEST = 101, 37  # odd: rank 1's shard is padded with a wrapped-around sample
BATCH = 16  # 51 per rank -> batches of 16, 16, 16, 3: a ragged last batch
CPU = torch.device("cpu")
PROTOCOL = {"features": "rowwise", "n": N_TRAIN}
AUG = LinearProbeProtocol(protocol="augmented", epochs=3, warmup_epochs=1, batch_size=20, optimizer="sgd", blr=0.5)


def _dataset() -> Any:
    ds = load_digits(None)
    ds.train = ds.train.subset(torch.arange(N_TRAIN) * 7)  # a spread of classes, not the first N
    ds.test = ds.test.subset(torch.arange(N_TEST))
    return ds


def rowwise_features(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, D] with every row a function of its own image only (elementwise ops):
    a matmul's rounding can depend on the batch size, and this test is about the order of rows,
    not about BLAS. The MLP check below covers a real network up to rounding."""
    flat = x.flatten(1)  # [B, C*H*W]
    return torch.cat([flat, torch.tanh(3 * flat[:, :8]), flat.pow(2).mean(dim=1, keepdim=True)], dim=1)


def _mlp() -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 16)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(16, 64, generator=g) / 8)
        lin.bias.zero_()
    return torch.nn.Sequential(torch.nn.Flatten(), lin, torch.nn.GELU()).eval()


class _Counting:
    """A feature function that counts its calls (a cache hit must call it on no rank)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1
        return rowwise_features(x)


def _folder(root: str) -> Any:
    from ssl_bench.data.datasets import load_imagefolder

    return load_imagefolder(root, image_size=16, num_workers=0)


def _make_folder(root: Path, n_per_class: int = 7) -> Path:
    """JPEGs of varied sizes, 2 classes x 7: 14 train images (crops are cut in the loader)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(2):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n_per_class):
                w, h = int(rng.integers(20, 40)), int(rng.integers(16, 30))
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8) // (c + 1)).save(d / f"{i}.jpg")
    return root


FOLDER_AUG = LinearProbeProtocol(protocol="augmented", epochs=2, warmup_epochs=1, batch_size=6, optimizer="sgd")


def _worker(rank: int, init_file: str, out_dir: str, folder_root: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    from ssl_bench.distributed import DistContext

    # a timeout, so a rank left waiting in a collective fails the test instead of hanging it
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    try:
        ctx = DistContext(rank, WORLD, 0, CPU)
        ds = _dataset()
        out: dict[str, Any] = {}
        out["train"] = extract_features(rowwise_features, ds.train, ds.info, BATCH, CPU, ctx)
        out["test"] = extract_features(rowwise_features, ds.test, ds.info, BATCH, CPU, ctx)
        with torch.no_grad():
            out["mlp"] = extract_features(_mlp(), ds.train, ds.info, BATCH, CPU, ctx)

        run_dir = Path(out_dir)  # rank 0 alone reads and writes the cache here
        miss, hit, again = _Counting(), _Counting(), _Counting()
        out["miss"] = cached_features(run_dir, miss, ds, BATCH, CPU, PROTOCOL, ctx=ctx)
        out["hit"] = cached_features(run_dir, hit, ds, BATCH, CPU, PROTOCOL, ctx=ctx)
        out["recompute"] = cached_features(run_dir, again, ds, BATCH, CPU, PROTOCOL, recompute=True, ctx=ctx)
        out["calls"] = (miss.calls, hit.calls, again.calls)

        feats = out["hit"]
        res = augmented_linear_probe(
            rowwise_features, ds.train, ds.info, None if feats is None else feats["test"],
            None if feats is None else feats["test_labels"], ds.info.num_classes, AUG, seed=3, device=CPU, ctx=ctx,
        )
        out["aug"] = None if res is None else (res.metrics, res.protocol)

        folder = _folder(folder_root)  # crops cut from the full image in the loader (the ImageNet path)
        test_f = extract_features(rowwise_features, folder.test, folder.info, 8, CPU, ctx)
        res = augmented_linear_probe(
            rowwise_features, folder.train, folder.info, None if test_f is None else test_f[0],
            None if test_f is None else test_f[1], 2, FOLDER_AUG, seed=0, device=CPU, ctx=ctx,
        )
        out["folder_aug"] = None if res is None else res.metrics
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_extraction_and_augmented_probe_equal_one_process(tmp_path: Path) -> None:
    folder_root = str(_make_folder(tmp_path / "folder"))
    mp.spawn(_worker, args=(str(tmp_path / "pg_init"), str(tmp_path), folder_root), nprocs=WORLD, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    ds = _dataset()

    # gathered features == one process, row for row, and the padding sample is not duplicated
    for split, name in ((ds.train, "train"), (ds.test, "test")):
        want_f, want_y = extract_features(rowwise_features, split, ds.info, BATCH, CPU)
        got_f, got_y = r0[name]
        assert got_f.shape == (len(split), want_f.shape[1])
        assert torch.equal(got_f, want_f) and torch.equal(got_y, want_y)
        assert torch.equal(got_y, split.labels)  # the dataset's own order
        assert r1[name] is None  # only rank 0 holds the features
    with torch.no_grad():
        want_mlp, _ = extract_features(_mlp(), ds.train, ds.info, BATCH, CPU)
    torch.testing.assert_close(r0["mlp"][0], want_mlp, rtol=1e-5, atol=1e-6)  # a real network: up to rounding

    # cache: extracted on the miss, read by rank 0 alone on the hit (no rank called the model), recomputed on request
    assert r0["calls"][1] == 0 and r1["calls"][1] == 0
    assert r0["calls"][0] > 0 and r1["calls"][0] > 0 and r0["calls"][2] > 0 and r1["calls"][2] > 0
    for key in ("miss", "hit", "recompute"):
        assert r1[key] is None
        assert torch.equal(r0[key]["train"], r0["train"][0]) and torch.equal(r0[key]["test_labels"], r0["test"][1])
    assert (tmp_path / "features.pt").is_file()

    # the augmented probe: rank 0 trains on the gathered shards exactly what one process trains on
    single = augmented_linear_probe(
        rowwise_features, ds.train, ds.info, r0["test"][0], r0["test"][1], ds.info.num_classes, AUG, seed=3, device=CPU,
    )
    metrics, proto = r0["aug"]
    assert r1["aug"] is None
    assert metrics == single.metrics
    assert proto["world_size"] == 2 and single.protocol["world_size"] == 1
    assert proto["batch_size"] == single.protocol["batch_size"] == 20 and proto["steps_per_epoch"] == N_TRAIN // 20

    # the same on a folder split, whose crops come from the sample index and the shared epoch seed
    folder = _folder(folder_root)
    test_f, test_y = extract_features(rowwise_features, folder.test, folder.info, 8, CPU)
    single = augmented_linear_probe(rowwise_features, folder.train, folder.info, test_f, test_y, 2, FOLDER_AUG, seed=0)
    assert r0["folder_aug"] == single.metrics and r1["folder_aug"] is None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_run_with_the_augmented_probe_then_a_rescore_from_the_cache(tmp_path: Path) -> None:
    """The runner under torchrun: both ranks extract and run the augmented probe, rank 0 records; a
    --resume of the finished run re-scores it from rank 0's features cache without a rank hanging."""
    import json
    import sqlite3
    import subprocess
    import sys

    def run(*extra: str) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "-m", "ssl_bench.cli",
            "run", "mae", "--backbone", "vit-nano", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "runs"),
            "--no-baselines", "--set", "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2",
            "dataset.limit_train=129", "dataset.limit_test=65", "train.batch_size=32", "eval.batch_size=16", "eval.knn.ks=(10,20)",
            "eval.linear.protocol=augmented", "eval.linear.epochs=2", "eval.linear.warmup_epochs=1", "eval.linear.batch_size=32",
            *extra,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)

    first = run()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    run_dir = tmp_path / "runs" / "digits" / "vit-nano" / "mae-s0"
    cache = torch.load(run_dir / "features.pt", weights_only=True)
    assert cache["train"].shape[0] == 129 and cache["test"].shape[0] == 65  # gathered, padding dropped
    con = sqlite3.connect(tmp_path / "runs" / "results.db")
    protos = [json.loads(p) for (p,) in con.execute("SELECT protocol_json FROM metrics WHERE name = 'linear_top1'")]
    con.close()
    assert len(protos) == 1 and protos[0]["protocol"] == "augmented" and protos[0]["world_size"] == 2
    mtime = (run_dir / "features.pt").stat().st_mtime_ns

    again = run("--resume")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-4000:]
    assert (run_dir / "features.pt").stat().st_mtime_ns == mtime  # rank 0 read the cache; nobody rewrote it
