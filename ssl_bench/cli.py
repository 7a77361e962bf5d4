"""`ssl-bench` command line: run, list, eval, leaderboard."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ssl_bench.errors import SSLBenchError

RESULTS_NAME = "results.db"

log = logging.getLogger("ssl_bench")


def _results_path(args: argparse.Namespace) -> Path:
    return Path(args.results) if args.results else Path(args.out) / RESULTS_NAME


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs", help="output directory for run directories and the results store (default: runs)")
    p.add_argument("--results", default=None, help="SQLite results file (default: OUT/results.db)")


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from ssl_bench.registry import get_registry
    from ssl_bench.results.leaderboard import build_leaderboard, render
    from ssl_bench.results.store import ResultsStore
    from ssl_bench.runner import load_dataset, method_config, run_baseline, run_method
    from ssl_bench.train.distributed import init_distributed

    registry = get_registry()
    for m in args.methods:  # fail before any training if one name is wrong
        registry.get("method", m)
    cli = {
        "backbone.name": args.backbone, "dataset.name": args.dataset, "dataset.data_root": args.data_root,
        "train.epochs": args.epochs, "train.batch_size": args.batch_size, "seed": args.seed,
        "train.device": args.device, "out": args.out,
    }
    cfgs = {m: method_config(m, registry, user_config=args.config, cli=cli, set_items=args.set or ()) for m in args.methods}
    first = cfgs[args.methods[0]]
    registry.get("backbone", first.backbone.name)
    ctx = init_distributed(first.train.device)
    dataset = load_dataset(first, registry)
    store = ResultsStore(_results_path(args)) if ctx.is_main else None
    for method, cfg in cfgs.items():
        if ctx.is_main:
            log.info("== %s on %s, backbone %s, %d epochs, device %s ==", method, cfg.dataset.name, cfg.backbone.name, cfg.train.epochs, ctx.device)
        run_method(method, cfg, store, ctx, dataset=dataset, resume=args.resume, registry=registry)
    if not ctx.is_main:
        return 0
    if not args.no_baselines:
        for name in first.eval.baselines:
            run_baseline(name, first, store, dataset, ctx.device, registry=registry)
    table = build_leaderboard(store, dataset=first.dataset.name, backbone=first.backbone.name)
    print(f"\nLeaderboard: {first.dataset.name}, {first.backbone.name} ({_results_path(args)})\n")
    print(render(table, "md"))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ssl_bench.registry import get_registry

    registry = get_registry()
    rows = [(e.kind, e.name, e.package) for e in registry.by_kind()]
    w = [max(len(r[i]) for r in rows + [("kind", "name", "package")]) for i in range(3)]
    print(f"{'kind':<{w[0]}}  {'name':<{w[1]}}  package")
    for kind, name, pkg in rows:
        print(f"{kind:<{w[0]}}  {name:<{w[1]}}  {pkg}")
    for f in registry.failures:
        print(f"\nplugin failed to load: package '{f.package}' (entry point '{f.entry_point}'): {f.error}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ssl_bench.results.store import ResultsStore
    from ssl_bench.runner import evaluate_run
    from ssl_bench.train.distributed import resolve_device

    store = ResultsStore(_results_path(args))
    out = evaluate_run(args.run_dir, store, resolve_device(args.device), recompute=args.recompute)
    for k, v in sorted(out.metrics.items()):
        print(f"{k}: {100 * v:.2f}%" if "top1" in k else f"{k}: {v:.4f}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from ssl_bench.results.leaderboard import build_leaderboard, build_table4, render
    from ssl_bench.results.store import ResultsStore

    path = _results_path(args)
    if not path.is_file():
        raise SSLBenchError(f"no results store at {path}; run `ssl-bench run METHOD` first, or pass --results FILE")
    store = ResultsStore(path)
    if args.layout == "table4":
        table = build_table4(store)
    else:
        table = build_leaderboard(store, dataset=args.dataset, backbone=args.backbone)
    text = render(table, args.format)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-bench",
        description="Train self-supervised methods on one harness and score them with the same evaluators.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train methods, evaluate them and the baselines, print the leaderboard",
                         description="Train each METHOD, score it by k-NN and linear probe on frozen features, "
                                     "add the pixels and random-init baselines, and print the leaderboard.")
    run.add_argument("methods", nargs="+", metavar="METHOD", help="registered method names (see `ssl-bench list`)")
    run.add_argument("--backbone", help="backbone name, e.g. vit-nano, vit-tiny, vit-s, vit-b, vit-l (default from config: vit-tiny)")
    run.add_argument("--dataset", help="dataset name: digits (offline default), fashion-mnist, cifar10, cifar100, stl10, imagefolder")
    run.add_argument("--data-root", help="where the dataset lives or is downloaded to")
    run.add_argument("--epochs", type=int, help="pre-training epochs")
    run.add_argument("--batch-size", type=int, help="global batch size (split across torchrun processes)")
    run.add_argument("--config", help="an mmengine Config python file overriding the method's defaults")
    run.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any config key, e.g. --set train.blr=1e-3 method.mask_ratio=0.6")
    run.add_argument("--seed", type=int, help="random seed (default 0); same seed, same device -> same metrics")
    run.add_argument("--device", help="auto (default), cpu or cuda")
    run.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                     help="continue the latest run of each method (or RUN_DIR) from its last checkpoint")
    run.add_argument("--no-baselines", action="store_true", help="skip the pixels and random-init rows")
    _add_common(run)
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="every registered component with its kind and providing package")
    lst.set_defaults(func=cmd_list)

    ev = sub.add_parser("eval", help="re-score a trained run directory with the evaluators",
                        description="Rebuild the method from RUN_DIR/config.py, load its checkpoint, extract "
                                    "features (cached) and replace the run's metrics in the results store.")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--recompute", action="store_true", help="ignore cached features")
    ev.add_argument("--device", default="auto")
    _add_common(ev)
    ev.set_defaults(func=cmd_eval)

    lb = sub.add_parser("leaderboard", help="render the results store as a table",
                        description="Latest finished run per method/backbone/dataset, baselines first.")
    lb.add_argument("--format", default="md", choices=["md", "csv", "html"])
    lb.add_argument("--layout", default="runs", choices=["runs", "table4"], help="table4: methods x backbones beside the paper's numbers")
    lb.add_argument("--dataset")
    lb.add_argument("--backbone")
    lb.add_argument("--output", help="also write the table to this file")
    _add_common(lb)
    lb.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not log.handlers:  # our messages only; third-party INFO chatter (faiss) stays quiet
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        return args.func(args)
    except SSLBenchError as exc:
        print(f"ssl-bench: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # datasets raise a subclass with the paths tried
        print(f"ssl-bench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ssl-bench list | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
