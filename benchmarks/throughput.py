"""Training throughput (images/s) and peak memory per method x backbone on the current device.

Each configuration runs in its own subprocess so that peak memory (CUDA max-allocated, or the
process's max RSS on CPU) belongs to that configuration alone. Usage:

    python benchmarks/throughput.py [--methods mae mocov3] [--backbones vit-nano vit-tiny]
        [--image-size 32] [--channels 3] [--batch-size 64] [--steps 10] [--save]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import pandas as pd
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import save_result  # noqa: E402


def measure(method: str, backbone: str, image_size: int, channels: int, batch: int, steps: int, device: str) -> dict:
    """Runs inside the child process: build the method on random data and time optimiser steps."""
    from ssl_bench.data.base import DatasetInfo, TensorSplit, suggest_patch_size
    from ssl_bench.registry import get_registry
    from ssl_bench.run import build_method, method_config
    from ssl_bench.train.engine import autocast, make_generator, peak_memory_mb
    from ssl_bench.train.optim import build_optimizer

    dev = torch.device(device)
    registry = get_registry()
    cfg = method_config(method, registry, cli={"backbone.name": backbone, "train.batch_size": batch})
    info = DatasetInfo("random", 10, channels, image_size, (0.5,) * channels, (0.25,) * channels,
                       suggest_patch_size(image_size))
    model = build_method(cfg, registry, info).to(dev).train()
    opt, _ = build_optimizer(model, cfg.train, batch)
    gen = make_generator(dev, 0, 0)
    images = torch.randint(0, 256, (batch, channels, image_size, image_size), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, 10, (batch,), device=dev)
    model.prepare(TensorSplit(images.cpu(), labels.cpu()), gen)  # e.g. fit PCA bases, as the runner does

    def step() -> None:
        with autocast(dev, cfg.train.amp):
            loss = model(images, labels, gen).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.on_train_step_end(0.5, 1)

    for _ in range(2):  # warm-up
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    out = {"method": method, "backbone": backbone, "image": f"{image_size}x{image_size}x{channels}", "batch": batch,
           "img_per_s": round(batch * steps / elapsed, 1), "peak_mem_mb": round(peak_memory_mb(dev), 1),
           "params_m": round(sum(p.numel() for p in model.backbone.parameters()) / 1e6, 2)}
    augment = getattr(model, "augmentation_only", None)  # methods whose augmentation is heavy expose it
    if callable(augment):
        t0 = time.perf_counter()
        for _ in range(steps):
            augment(images, gen)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out["augment_img_per_s"] = round(batch * steps / (time.perf_counter() - t0), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="*")
    p.add_argument("--backbones", nargs="*", default=["vit-nano", "vit-tiny"])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--save", action="store_true", help="write the table under benchmarks/results/")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return
    from ssl_bench.registry import get_registry

    methods = args.methods or get_registry().names("method")
    rows = []
    for method in methods:
        for backbone in args.backbones:
            spec = dict(method=method, backbone=backbone, image_size=args.image_size, channels=args.channels,
                        batch=args.batch_size, steps=args.steps, device=args.device)
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode:
                rows.append({"method": method, "backbone": backbone, "error": proc.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    if args.save:
        path = save_result("throughput", table, torch.device(args.device), "python " + " ".join(sys.argv))
        print(f"saved {path}")


if __name__ == "__main__":
    main()
