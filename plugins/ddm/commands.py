"""The DDM plugin's subcommands, added to `ssl-bench` through the `ssl_bench_commands` hook:

* ``ssl-bench deconstruct``: the l-DAE deconstruction chain (Tables 1-3, Fig. 5) row by row, ours
  beside the paper's (``plugins/ddm/deconstruct``; configs shipped as package data);
* ``ssl-bench sample RUN_DIR``: a sample grid from a trained ddm run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_bench.commands import add_output_options, distributed_session, recording_store, results_path
from ssl_bench.errors import ConfigError, SSLBenchError


class DeconstructCommand:
    help = "run the l-DAE deconstruction chain (Tables 1-3, Fig. 5) and compare with the paper"
    description = (
        "Run rows of the l-DAE deconstruction chain (each a `run` of ddm with that row's config, one change per "
        "row; rows whose resolved configs coincide share one run, and each run's own network untrained is probed "
        "as its random-init baseline) and print our linear probe (the paper's metric) and k-NN top-1 beside the "
        "paper's linear probe. Rows that need a supervised network are listed as not run."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rows", nargs="+", default=["all"], metavar="ROW",
                            help="groups (all, table1, table2, table3, fig5, trajectory), row names or globs, e.g. 't2_patch-pca_*'")
        parser.add_argument("--backbone", help="backbone name (the encoder), e.g. vit-nano, vit-b, vit-l")
        parser.add_argument("--dataset", help="dataset name, e.g. digits, fashion-mnist, cifar10, imagefolder")
        parser.add_argument("--data-root", help="where the dataset lives or is downloaded to")
        parser.add_argument("--epochs", type=int, help="pre-training epochs of every row")
        parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any config key in every row")
        parser.add_argument("--seed", type=int, help="random seed (default 0)")
        parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                            help="train every row once per seed (and its untrained network per seed); the table "
                                 "shows each row's mean ± sd over these seeds with a 95%% interval")
        parser.add_argument("--device", help="auto (default), cpu or cuda")
        parser.add_argument("--chain-dir", help="the chain's config folder (default: the one shipped with the ddm plugin)")
        parser.add_argument("--no-random-init", action="store_true", help="skip the untrained-network baseline of each row")
        parser.add_argument("--table-only", action="store_true", help="train nothing: rebuild the table from the results store")
        parser.add_argument("--format", default="md", choices=["md", "csv", "html"])
        parser.add_argument("--output", help="also write the table to this file")
        parser.add_argument("--plot", metavar="FILE.png",
                            help="also draw ours (mean, 95%% interval) beside the paper's linear probe, row by row")
        add_output_options(parser, default_out="runs/deconstruct")

    def run(self, args: argparse.Namespace) -> int:
        from ssl_bench.registry import get_registry
        from ssl_bench.results import ResultsStore
        from ssl_bench.run import load_dataset
        from ssl_bench.run.score import eval_split
        from ssl_bench_plugins.ddm.deconstruct import chain as dc

        registry = get_registry()
        if args.seed is not None and args.seeds:
            raise ConfigError("--seed and --seeds both given; use --seeds 0 1 2 for several seeds or --seed N for one")
        seeds: list[int | None] = list(dict.fromkeys(args.seeds)) if args.seeds else [args.seed]
        steps = dc.select_steps(args.rows)
        chain_dir = dc.chain_dir_or_error(args.chain_dir)
        cli = {
            "backbone.name": args.backbone, "dataset.name": args.dataset, "dataset.data_root": args.data_root,
            "train.epochs": args.epochs, "seed": seeds[0], "train.device": args.device,
        }
        first = next((s for s in steps if s.config is not None), None)
        probe = dc.base_config(first, registry, chain_dir, cli, args.set or ()) if first else None  # dataset, device
        outcomes: list = []
        is_main = True
        path = results_path(args)
        store = None
        if first is not None and not args.table_only:
            dataset = load_dataset(probe, registry)
            with distributed_session(probe.train.device) as ctx:
                is_main = ctx.is_main
                store = recording_store(args, ctx.is_main)  # a new store only once a row is recorded
                for seed in seeds:  # seed by seed: an interrupted chain leaves whole seeds behind
                    outcomes += dc.run_chain(steps, registry=registry, chain_dir=chain_dir, store=store, ctx=ctx,
                                             cli={**cli, "seed": seed}, set_items=args.set or (), out=args.out,
                                             dataset=dataset, random_init=not args.no_random_init)
        if not is_main:
            return 0
        if not path.is_file() and args.table_only:
            raise SSLBenchError(f"no results store at {path}; run `ssl-bench deconstruct` without --table-only first")
        dataset = probe.dataset.name if probe is not None else args.dataset
        backbone = probe.backbone.name if probe is not None else args.backbone
        if store is None or not path.is_file():
            store = ResultsStore(path, readonly=True) if path.is_file() else None
        if store is None:
            raise SSLBenchError(f"nothing was recorded, so there is no results store at {path}; see the errors above")
        split = eval_split(probe) if probe is not None else "test"
        table = dc.build_table(steps, store, dataset=dataset, backbone=backbone, outcomes=outcomes, split=split,
                               seeds=[int(x) for x in seeds if x is not None] if args.seeds else None)
        text = dc.render_table(table, args.format)
        scored = "the validation split" if split == "val" else "the test split"
        print(f"\nDeconstruction chain: {dataset}, {backbone} ({path}), scored on {scored}; mean ± sd over seeds, "
              f"95% interval (seeds and test-set sampling); paper: ImageNet-1k, DiT-L (ViT-1/2L encoder)\n")
        print(text)
        if args.output:
            Path(args.output).write_text(text)
        if args.plot:
            dc.plot_table(table, args.plot, title=dc.chain_title(dataset, backbone, seeds))
            print(f"figure: {args.plot}")
        return 1 if any(o.status == "failed" for o in outcomes) else 0


class SampleCommand:
    help = "write a sample grid PNG from a trained diffusion run (ddm)"
    description = ("Rebuild the method from RUN_DIR's saved config and its checkpoint, sample with DDIM or respaced DDPM "
                   "in the latent, decode through the tokenizer and write a PNG grid.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", metavar="RUN_DIR")
        parser.add_argument("--steps", type=int, default=None, help="sampling steps (respaced; default from the run config: 50)")
        parser.add_argument("--sampler", choices=["ddpm", "ddim"], default=None, help="ddim (eta 0, default) or ancestral ddpm")
        parser.add_argument("--num", type=int, default=None, help="number of samples (default 16)")
        parser.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance scale, class-conditional runs only (default 4.0)")
        parser.add_argument("--seed", type=int, default=None, help="sampling seed (default 0)")
        parser.add_argument("--output", default=None, help="PNG path (default RUN_DIR/samples.png)")
        parser.add_argument("--device", default="auto")

    def run(self, args: argparse.Namespace) -> int:
        from ssl_bench.run import load_trained_method
        from ssl_bench.distributed import resolve_device

        run_dir = Path(args.run_dir)
        cfg, _, model, _ = load_trained_method(run_dir)
        if not hasattr(model, "write_samples"):
            raise ConfigError(f"method '{cfg.method.name}' cannot sample (no write_samples); only diffusion methods (ddm) can")
        device = resolve_device(args.device)
        model.to(device).eval()
        try:
            path = model.write_samples(args.output or run_dir / "samples.png", num=args.num, steps=args.steps, sampler=args.sampler,
                                       cfg_scale=args.cfg_scale, seed=args.seed, device=device)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        print(path)
        return 0
