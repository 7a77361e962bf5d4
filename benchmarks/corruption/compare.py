"""Masking vs additive latent noise, everything else held equal, with seeds, intervals and paired tests.

For each network (l-DAE's DiT on patch-PCA tokens with the original-image target; MAE's ViT
encoder/decoder on pixel tokens with the normalised-pixel target) the two config files of this
folder differ only in ``method.corruption`` (tests/test_corruption_benchmark.py checks that). Each of
the four arms gets its own learning rate from a validation sweep (``ssl-bench sweep``: every blr x
seed trained on the training split less a stratified 10% validation split, scored on that split;
the blr with the best mean validation linear top-1 is selected, and only its runs are scored on
test). Then, per seed of the selected setting, the arm's own untrained network (the DiT's
``random-init:ldae``; the plain untrained ViT for MAE) and the raw pixels are scored on the same
data, and the two corruptions of each network are compared image by image (``ssl-bench compare``:
paired bootstrap 95% CI pooled over seeds, McNemar per seed).

    python benchmarks/corruption/compare.py --dataset digits --backbone vit-nano --seeds 0 1 2 --save
    python benchmarks/corruption/compare.py --dataset fashion-mnist --backbone vit-nano --epochs 3 \\
        --seeds 0 1 2 --set dataset.limit_train=5000 dataset.limit_test=2000 --save

Runs go to ``--out`` (default runs/corruption/<dataset>), one results store there.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import save_result  # noqa: E402

from ssl_bench.distributed import DistContext, resolve_device  # noqa: E402
from ssl_bench.registry import get_registry  # noqa: E402
from ssl_bench.results import build_leaderboard, render  # noqa: E402
from ssl_bench.results.columns import KNN_COL, LINEAR_COL  # noqa: E402
from ssl_bench.run import check_run, open_store, run_baseline  # noqa: E402
from ssl_bench.run.compare import compare_rows  # noqa: E402
from ssl_bench.run.resume import read_run_config  # noqa: E402
from ssl_bench.run.sweep import run_sweep, sweep_frame, selection_line  # noqa: E402

#: (network, method, corruption) -> config file; the pairs differ only in the corruption
CONFIGS: dict[tuple[str, str, str], str] = {
    ("DiT (l-DAE): patch-PCA tokens, original-image target", "ldae", "additive latent noise"): "ldae_noise.py",
    ("DiT (l-DAE): patch-PCA tokens, original-image target", "ldae", "random masking 75%"): "ldae_masking.py",
    ("ViT enc/dec (MAE): pixel tokens, norm-pix target", "mae", "random masking 75%"): "mae_masking.py",
    ("ViT enc/dec (MAE): pixel tokens, norm-pix target", "mae", "additive latent noise"): "mae_noise.py",
}
#: The base learning rates each arm's validation sweep tries (x batch / 256).
DEFAULT_BLRS: tuple[str, ...] = ("3e-4", "1e-3", "3e-3")


def table_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard columns the write-up needs, readable (mean ± sd *, 95% interval, gain)."""
    keep = ["row", "n"]
    for col in (LINEAR_COL, KNN_COL):
        keep += [col, f"{col} sd", f"{col} lo", f"{col} hi", f"{col} best", f"{col} gain"]
    out = df[keep + ["settings"]].copy()
    out.attrs = dict(df.attrs, metric_columns=[LINEAR_COL, KNN_COL])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--backbone", default="vit-nano")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--blrs", nargs="+", default=list(DEFAULT_BLRS), help="the validation sweep's base learning rates")
    p.add_argument("--arms", nargs="+", default=list(CONFIGS.values()), help="config files to run (default: all four)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--save", action="store_true")
    args = p.parse_args()

    registry = get_registry()
    device = resolve_device(args.device)
    ctx = DistContext(0, 1, 0, device)
    out = Path(args.out or f"runs/corruption/{args.dataset}")
    cli = {"dataset.name": args.dataset, "backbone.name": args.backbone, "train.epochs": args.epochs}
    store = open_store(out / "results.db")
    t_start = time.perf_counter()
    sweeps, arm_rows, dataset = [], {}, None
    for (network, method, corruption), name in CONFIGS.items():
        if name not in args.arms:
            continue
        result = run_sweep(method, registry, store, ctx, grid={"train.blr": args.blrs}, seeds=args.seeds,
                           user_config=str(HERE / name), cli=cli, set_items=[*args.set, f"name={Path(name).stem}"],
                           out=out / Path(name).stem)
        sweeps.append((network, corruption, name, result))
        selected = [r for r in result.runs if r.label == result.selected]
        for run in selected:  # beside each selected run: its own untrained network and the pixels, same data
            cfg = read_run_config(Path(run.run_dir))
            cfg.eval.split = "test"  # the run was trained and selected on validation; its baselines are read on test, as it is
            checked = check_run(cfg, registry, dataset)
            dataset = checked.dataset
            run_baseline("random-init", cfg, store, dataset, device, registry=registry, method=method, checked=checked,
                         tokenizer_from=run.run_dir)
            if run is selected[0]:
                run_baseline("pixels", cfg, store, dataset, device, registry=registry, checked=checked)
        arm_rows[name] = str(selected[0].run_id)  # a row is named by any run id of it
    board = build_leaderboard(store, dataset=args.dataset, backbone=args.backbone)
    table = render(table_columns(board), "md")
    pairs = []
    for a, b in (("ldae_noise.py", "ldae_masking.py"), ("mae_masking.py", "mae_noise.py")):
        if a in arm_rows and b in arm_rows:
            for metric in ("linear_top1", "knn_top1"):
                ra, rb, c = compare_rows(store, arm_rows[a], arm_rows[b], metric, args.dataset, args.backbone)
                pairs.append(f"- {metric}: {c.verdict(ra.label, rb.label)}; per seed, A - B (McNemar exact p): "
                             + ", ".join(f"seed {s}: {100 * c.seed_diff[s]:+.1f} (p {pv:.3g})" for s, pv in sorted(c.mcnemar_p.items())))
    sweep_text = "\n\n".join(
        f"**{network}, {corruption}** (`{name}`): {selection_line(r)}\n\n{sweep_frame(r).to_markdown(index=False, disable_numparse=True)}"
        for network, corruption, name, r in sweeps)
    text = (f"dataset {args.dataset}, backbone {args.backbone}, seeds {' '.join(map(str, args.seeds))}, "
            f"{torch.get_num_threads()} thread(s), {len(dataset.train)} training images (after holding back a stratified "
            f"{len(dataset.val)}-image validation split) / {len(dataset.test)} test images, total {time.perf_counter() - t_start:.0f} s\n\n"
            f"## Learning rate per arm, chosen on validation\n\n{sweep_text}\n\n"
            f"## Test, selected learning rate per arm (mean ± sd over seeds, 95% interval; * = cannot be told apart from "
            f"the column's best; gain = over the row's own untrained network)\n\n{table}\n\n"
            "## Paired comparisons (same test images, seed by seed)\n\n" + "\n".join(pairs))
    print(text)
    if args.save:
        command = "python benchmarks/corruption/compare.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        path = save_result(f"corruption_{args.dataset}", text, device, command)
        print(f"saved {path}")


if __name__ == "__main__":
    main()
