"""Masking vs additive latent noise, everything else held equal.

For each network (l-DAE's DiT on patch-PCA tokens with the original-image target; MAE's ViT
encoder/decoder on pixel tokens with the normalised-pixel target) the two config files of this
folder differ only in ``method.corruption`` (tests/test_corruption_benchmark.py checks that), so the
table compares the corruptions and nothing else. Same seed, epochs, batch, lr, probes; the raw-pixel
and untrained-network baselines of the same data beside them.

    python benchmarks/corruption/compare.py --dataset digits --backbone vit-nano [--epochs 10] [--save]
    python benchmarks/corruption/compare.py --dataset fashion-mnist --backbone vit-nano --epochs 3 \\
        --set dataset.limit_train=5000 dataset.limit_test=2000 --save

Runs go to ``--out`` (default runs/corruption/<dataset>); each config trains as ``ssl-bench run
<method> --config <file>`` would.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import save_result  # noqa: E402

from ssl_bench.distributed import DistContext, resolve_device  # noqa: E402
from ssl_bench.registry import get_registry  # noqa: E402
from ssl_bench.run import check_run, method_config, open_store, run_baseline, run_method  # noqa: E402

#: (network, method, corruption) -> config file; the pairs differ only in the corruption
CONFIGS: dict[tuple[str, str, str], str] = {
    ("DiT (l-DAE): patch-PCA tokens, original-image target", "ldae", "additive latent noise"): "ldae_noise.py",
    ("DiT (l-DAE): patch-PCA tokens, original-image target", "ldae", "random masking 75%"): "ldae_masking.py",
    ("ViT enc/dec (MAE): pixel tokens, norm-pix target", "mae", "random masking 75%"): "mae_masking.py",
    ("ViT enc/dec (MAE): pixel tokens, norm-pix target", "mae", "additive latent noise"): "mae_noise.py",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--backbone", default="vit-nano")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--save", action="store_true")
    args = p.parse_args()

    registry = get_registry()
    device = resolve_device(args.device)
    ctx = DistContext(0, 1, 0, device)
    out = args.out or f"runs/corruption/{args.dataset}"
    cli = {"dataset.name": args.dataset, "backbone.name": args.backbone, "train.epochs": args.epochs, "seed": args.seed, "out": out}
    store = open_store(Path(out) / "results.db")
    rows, dataset, t_start = [], None, time.perf_counter()
    for (network, method, corruption), name in CONFIGS.items():
        cfg = method_config(method, registry, user_config=HERE / name, cli=cli, set_items=args.set)
        cfg.out = str(Path(out) / Path(name).stem)
        checked = check_run(cfg, registry, dataset)  # the dataset loaded once, checked for each config
        dataset = checked.dataset
        t0 = time.perf_counter()
        res = run_method(method, cfg, store, ctx, registry=registry, checked=checked)
        knn = res.metrics.get("knn_top1_k20", res.metrics["knn_top1"])
        rows.append({"network": network, "corruption": corruption, "config": name, "linear top-1": 100 * res.metrics["linear_top1"],
                     "k-NN top-1": 100 * knn, "train + eval (s)": time.perf_counter() - t0})
        if method == "ldae":  # the DiT's own untrained network, probed the same way
            base = run_baseline("random-init", cfg, store, dataset, device, registry=registry, method=method, checked=checked)
            rows.append({"network": network, "corruption": "none (untrained network)", "config": name,
                         "linear top-1": 100 * base.metrics["linear_top1"], "k-NN top-1": 100 * base.metrics["knn_top1"], "train + eval (s)": None})
    for name in ("pixels", "random-init"):
        base = run_baseline(name, cfg, store, dataset, device, registry=registry)
        rows.append({"network": f"baseline: {name}", "corruption": "", "config": "", "linear top-1": 100 * base.metrics["linear_top1"],
                     "k-NN top-1": 100 * base.metrics["knn_top1"], "train + eval (s)": None})
    table = pd.DataFrame(rows).round(1).to_markdown(index=False)
    print(table)
    if args.save:
        command = "python benchmarks/corruption/compare.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        text = (f"dataset {args.dataset}, backbone {args.backbone}, seed {args.seed}, {len(dataset.train)} train / "
                f"{len(dataset.test)} test images, total {time.perf_counter() - t_start:.0f} s\n\n{table}")
        path = save_result(f"corruption_{args.dataset}", text, device, command)
        print(f"saved {path}")


if __name__ == "__main__":
    main()
