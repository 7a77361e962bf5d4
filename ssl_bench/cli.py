"""`ssl-bench` command line: run, list, eval, leaderboard, sweep, ... plus the commands plugins register.

Plugin commands come from the `ssl_bench_commands` hook (see `ssl_bench.hookspecs.Command`). The
registry is imported lazily and only its cheap command stage is loaded to build the parser, so
`ssl-bench --help` stays quick and still works when a plugin is broken.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ssl_bench.commands import add_output_options, distributed_session, existing_results, recording_store, results_path
from ssl_bench.errors import RunInterrupted, SSLBenchError, TrainingInterrupted

if TYPE_CHECKING:
    from ssl_bench.registry import Entry, Registry

log = logging.getLogger("ssl_bench")


def run_seeds(args: argparse.Namespace) -> list[int | None]:
    """The seeds ``run`` trains: ``--seeds`` (each its own run of every method), else ``--seed``
    (None: the config's own)."""
    if args.seeds is None:
        return [args.seed]
    if args.seed is not None:
        raise SSLBenchError("--seed and --seeds both given; use --seeds 0 1 2 for several seeds, or --seed N for one")
    seeds = list(dict.fromkeys(args.seeds))
    if any(s < 0 for s in seeds):
        raise SSLBenchError(f"--seeds must be non-negative integers, got {' '.join(map(str, args.seeds))}")
    if args.resume and len(seeds) > 1:
        raise SSLBenchError("--resume continues one run per method; resume each seed's run with --resume RUN_DIR")
    return seeds


def cmd_run(args: argparse.Namespace) -> int:
    from ssl_bench.registry import get_registry
    from ssl_bench.results import build_leaderboard, render
    from ssl_bench.run import check_run, method_config, run_baseline, run_method
    from ssl_bench.run.resume import resume_config

    registry = get_registry()
    for m in args.methods:  # fail before any training if one name is wrong
        registry.get("method", m)
    configs = []  # (method, seed, config) in the order they run: every method of one seed, then the next seed
    for seed in run_seeds(args):
        cli = {**_training_layer(args), "seed": seed, "out": args.out, "name": args.name}
        layers = dict(user_config=args.config, cli=cli, set_items=args.set or ())
        for m in args.methods:
            cfg = resume_config(m, registry, args.resume, **layers) if args.resume else method_config(m, registry, **layers)
            configs.append((m, seed, cfg))
    first = configs[0][2]
    registry.get("backbone", first.backbone.name)
    checked, dataset = [], None
    for _, _, cfg in configs:  # the dataset loaded once, checked for every config
        checked.append(check_run(cfg, registry, dataset))
        dataset = checked[-1].dataset
    results = results_path(args)
    with distributed_session(first.train.device) as ctx:
        store = recording_store(args, ctx.is_main)  # an existing store is checked now, a new one made on first record
        run_dirs = []
        for (method, seed, cfg), check in zip(configs, checked):
            if ctx.is_main:
                log.info("== %s on %s, backbone %s, %d epochs, seed %s, device %s ==", method, cfg.dataset.name, cfg.backbone.name,
                         cfg.train.epochs, cfg.seed, ctx.device)
            run_dirs.append(run_method(method, cfg, store, ctx, resume=args.resume, registry=registry, checked=check, results=results).run_dir)
        if not args.no_baselines:  # every rank takes part: each extracts its shard of the features
            for i, (method, seed, cfg) in enumerate(configs):
                # the plain baselines once per seed (pixels has no seed: its one run is reused), with the first method's config
                for name in cfg.eval.baselines if method == args.methods[0] else ():
                    run_baseline(name, cfg, store, dataset, ctx.device, registry=registry, ctx=ctx, checked=checked[i])
                if "random-init" in cfg.eval.baselines and getattr(registry.get("method", method), "own_random_init", False):
                    run_baseline("random-init", cfg, store, dataset, ctx.device, registry=registry, method=method, ctx=ctx,
                                 tokenizer_from=run_dirs[i], checked=checked[i])
        if not ctx.is_main:
            return 0
    table = build_leaderboard(store, dataset=first.dataset.name, backbone=first.backbone.name)
    print(f"\nLeaderboard: {first.dataset.name}, {first.backbone.name} ({results})\n")
    print(render(table, "md"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print every component and plugin command, then every plugin problem; exit 1 if there is one.

    The table goes to stdout (scripts parse it), the problems to stderr, one line each, so a CI job
    can run `ssl-bench list` to check that a plugin installs cleanly.
    """
    from ssl_bench.registry import get_registry

    registry = get_registry(warn=False)  # the problems are printed below, not logged as warnings too
    entries = [*registry.by_kind(), *sorted(registry.commands.values(), key=lambda e: e.name)]
    rows = [(e.kind, e.name, e.package) for e in entries]
    w = [max(len(r[i]) for r in rows + [("kind", "name", "package")]) for i in range(3)]
    print(f"{'kind':<{w[0]}}  {'name':<{w[1]}}  package")
    for kind, name, pkg in rows:
        print(f"{kind:<{w[0]}}  {name:<{w[1]}}  {pkg}")
    problems = registry.problems()
    registry.mark_reported()
    if problems:
        sys.stdout.flush()  # the table first, then the problems, also when both go to one terminal
        print(f"\n{len(problems)} plugin problem{'s' if len(problems) > 1 else ''}:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
    return 1 if problems else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ssl_bench.run import evaluate_run
    from ssl_bench.run.resume import read_run_config
    from ssl_bench.distributed import resolve_device

    read_run_config(Path(args.run_dir))  # not a run directory: refused before any store is opened or made
    store = recording_store(args)
    out = evaluate_run(args.run_dir, store, resolve_device(args.device), recompute=args.recompute, results=results_path(args),
                       split=args.split)
    for k, v in sorted(out.metrics.items()):
        print(f"{k}: {100 * v:.2f}%" if "top1" in k else f"{k}: {v:.4f}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a grid on a validation split, select on it, report test accuracy for the selection only."""
    from ssl_bench.registry import get_registry
    from ssl_bench.run.sweep import SWEEP_TABLE, parse_grid, run_sweep, sweep_report

    registry = get_registry()
    registry.get("method", args.method)  # a wrong name fails before anything is made
    grid = parse_grid(args.grid)
    cli = _training_layer(args)
    with distributed_session(args.device or "auto") as ctx:
        store = recording_store(args, ctx.is_main)
        result = run_sweep(args.method, registry, store, ctx, grid=grid, seeds=args.seeds, set_items=args.set or (),
                           user_config=args.config, cli=cli, select=args.select, out=args.out, results=results_path(args))
    if result is None:  # not the main rank
        return 0
    print(f"\n{sweep_report(result)}\n\n(also in {result.folder / SWEEP_TABLE})")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from ssl_bench.results import ResultsStore, build_leaderboard, build_table4, render
    from ssl_bench.results.plot import leaderboard_outputs
    from ssl_bench.results.rows import runs_table

    path = existing_results(args)
    store = ResultsStore(path, readonly=True)  # reading never writes: works on read-only media
    if args.plot and (args.layout == "table4" or args.runs):
        raise SSLBenchError("--plot draws the configuration rows; leave out --layout table4 / --runs to draw them")
    if args.layout == "table4":
        table = build_table4(store)
    elif args.runs:
        table = runs_table(store, dataset=args.dataset, backbone=args.backbone)
    else:
        table = build_leaderboard(store, dataset=args.dataset, backbone=args.backbone)
    if table.empty and (args.dataset or args.backbone):
        raise SSLBenchError(_nothing_for(store, path, args.dataset, args.backbone))
    text, _ = leaderboard_outputs(table, args.format, args.plot) if args.layout == "runs" and not args.runs else (render(table, args.format), None)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ssl_bench.results import ResultsStore
    from ssl_bench.run.compare import compare_rows, report

    store = ResultsStore(existing_results(args), readonly=True)
    a, b, comparison = compare_rows(store, args.row_a, args.row_b, args.metric, args.dataset, args.backbone)
    print(report(a, b, comparison))
    return 0


def _nothing_for(store: Any, path: Path, dataset: str | None, backbone: str | None) -> str:
    """Why a filtered leaderboard is empty: what the store does hold."""
    runs = store.runs_frame()
    finished = runs[runs["status"] == "finished"] if not runs.empty else runs
    asked = ", ".join(f"{k} {v!r}" for k, v in (("dataset", dataset), ("backbone", backbone)) if v)
    datasets = sorted({str(d) for d in finished["dataset"].dropna()}) if not finished.empty else []
    backbones = sorted({str(b) for b in finished["backbone"].dropna()}) if not finished.empty else []
    return (f"no finished runs for {asked} in {path} (datasets there: {', '.join(datasets) or 'none'}; "
            f"backbones: {', '.join(backbones) or 'none'}); check the spelling or run one first")


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``sweep`` share: what trains where, and the config layers on top."""
    p.add_argument("--backbone", help="backbone name, e.g. vit-nano, vit-tiny, vit-s, vit-b, vit-l (default from config: vit-tiny)")
    p.add_argument("--dataset", help="dataset name: digits (offline default), fashion-mnist, cifar10, cifar100, stl10, imagefolder, imagenet-1k")
    p.add_argument("--data-root", help="where the dataset lives or is downloaded to")
    p.add_argument("--epochs", type=int, help="pre-training epochs")
    p.add_argument("--batch-size", type=int, help="global batch size (split across torchrun processes)")
    p.add_argument("--config", help="an mmengine Config python file overriding the method's defaults")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override any config key, e.g. --set train.blr=1e-3 method.corruption.mask_ratio=0.6")
    p.add_argument("--device", help="auto (default), cpu or cuda")


def _training_layer(args: argparse.Namespace) -> dict[str, Any]:
    """The config layer of the shared training options (None: the config's own value)."""
    return {
        "backbone.name": args.backbone, "dataset.name": args.dataset, "dataset.data_root": args.data_root,
        "train.epochs": args.epochs, "train.batch_size": args.batch_size, "train.device": args.device,
    }


def _add_builtin_commands(sub: argparse._SubParsersAction) -> None:
    """The CLI's own subcommands; a plugin command may not take one of these names."""
    run = sub.add_parser("run", help="train methods, evaluate them and the baselines, print the leaderboard",
                         description="Train each METHOD, score it by k-NN and linear probe on frozen features, "
                                     "add the pixels and random-init baselines, and print the leaderboard.")
    run.add_argument("methods", nargs="+", metavar="METHOD", help="registered method names (see `ssl-bench list`)")
    _add_training_options(run)
    run.add_argument("--seed", type=int, help="random seed (default 0); same seed, same device -> same metrics")
    run.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                     help="train every METHOD once per seed (e.g. --seeds 0 1 2); the leaderboard shows each configuration's "
                          "mean, sd and 95%% interval over its seeds")
    run.add_argument("--name", help="the leaderboard label of this configuration (default: the method name plus the "
                                    "settings that differ from its defaults); a name never merges two configurations")
    run.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                     help="continue the latest run of each method (or RUN_DIR) from its last checkpoint")
    run.add_argument("--no-baselines", action="store_true", help="skip the pixels and random-init rows")
    add_output_options(run)
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="every registered component and plugin command with its package; exit 1 on plugin problems",
                         description="List every registered component and plugin command (kind, name, package), then "
                                     "report plugin problems: failed imports, name clashes, invalid components and "
                                     "misspelt hooks. Exits 1 when there is a problem, 0 otherwise.")
    lst.set_defaults(func=cmd_list)

    ev = sub.add_parser("eval", help="re-score a trained run directory with the evaluators",
                        description="Rebuild the method from RUN_DIR/config.json (never executing config.py), load its "
                                    "checkpoint, extract features (cached, keyed by the weights) and replace the run's "
                                    "metrics in the results store. A run stopped before its last epoch is refused: "
                                    "finish it with `ssl-bench run METHOD --resume RUN_DIR`.")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--recompute", action="store_true", help="ignore cached features")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--split", choices=["test", "val"], default=None,
                    help="score the test split or the validation split held back from training (default: the run's eval.split); "
                         "the other split's stored metrics are kept")
    add_output_options(ev)
    ev.set_defaults(func=cmd_eval)

    lb = sub.add_parser("leaderboard", help="render the results store as a table",
                        description="One row per configuration (method + the settings that differ from its defaults), "
                                    "the mean ± sd over its seeds with a 95%% interval, baselines first. A * marks the rows "
                                    "that cannot be told apart from the best of a column.")
    lb.add_argument("--format", default="md", choices=["md", "csv", "html"])
    lb.add_argument("--layout", default="runs", choices=["runs", "table4"], help="table4: methods x backbones beside the paper's numbers")
    lb.add_argument("--dataset")
    lb.add_argument("--backbone")
    lb.add_argument("--output", help="also write the table to this file")
    lb.add_argument("--runs", action="store_true",
                    help="list the runs behind each row (one line per seed), sweep runs scored on validation only included")
    lb.add_argument("--plot", metavar="FILE.png",
                    help="also draw each row's mean with its 95%% interval, one panel per metric, baselines as reference lines "
                         "(the html table embeds the same figure)")
    add_output_options(lb)
    lb.set_defaults(func=cmd_leaderboard)

    cmp_ = sub.add_parser("compare", help="is one leaderboard row really better than another? a paired test over test images",
                          description="Pair the two rows' runs seed by seed on the same test images: the difference with a "
                                      "paired bootstrap 95%% interval pooled over seeds, McNemar's exact p per seed, and a "
                                      "verdict. ROW is a row label as the leaderboard prints it, or the id of one of its runs.")
    cmp_.add_argument("row_a", metavar="ROW_A")
    cmp_.add_argument("row_b", metavar="ROW_B")
    cmp_.add_argument("--metric", default="linear_top1", choices=["linear_top1", "knn_top1"])
    cmp_.add_argument("--dataset")
    cmp_.add_argument("--backbone")
    add_output_options(cmp_)
    cmp_.set_defaults(func=cmd_compare)

    sw = sub.add_parser("sweep", help="run a grid of settings, select on a validation split, report test for the selection only",
                        description="Run METHOD for every combination of the --grid values and every seed, each holding back "
                                    "the same stratified validation split of the training data (dataset.val_fraction, default "
                                    "0.1) and scored on it only (eval.split=val; no baselines). Select the setting with the best "
                                    "mean validation score, score only its runs on the test split, and print the table "
                                    "(also written to OUT/sweeps/<sweep id>/sweep.md).")
    sw.add_argument("method", metavar="METHOD", help="a registered method name (see `ssl-bench list`)")
    sw.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                    help="a config key and its values, parsed like --set values; repeat for a product grid "
                         "(e.g. --grid train.blr=1e-4,3e-4,1e-3 --grid train.weight_decay=0.05,0.1)")
    sw.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED", help="seeds run at every grid point (default: 0)")
    sw.add_argument("--select", default="linear_top1",
                    help="the accuracy selected on, read as its validation score (default: linear_top1; or knn_top1)")
    _add_training_options(sw)
    add_output_options(sw)
    sw.set_defaults(func=cmd_sweep)



def builtin_command_names() -> list[str]:
    """The built-in subcommands, read off the parser itself.

    The registry reserves ``ssl_bench.hookspecs.BUILTIN_COMMAND_NAMES`` (it stands below the CLI and
    never imports it); a test keeps the two lists equal.
    """
    sub = argparse.ArgumentParser(prog="ssl-bench").add_subparsers()
    _add_builtin_commands(sub)
    return list(sub.choices)


def _plugin_registry() -> Registry | None:
    """The registry with commands only (no torch import); None if discovery itself is broken."""
    try:
        from ssl_bench.registry import get_registry

        return get_registry(components=False, warn=False)
    except Exception as exc:  # --help and the built-in commands must survive a bug in discovery
        log.warning("ssl-bench: warning: plugin commands are unavailable, plugin discovery failed: %r. "
                    "Fix: run `ssl-bench list` and repair or uninstall the plugin it names.", exc)
        return None


def _plugin_runner(name: str, entry: Entry) -> Callable[[argparse.Namespace], int]:
    """Dispatch to a plugin command; its crash becomes one line naming the package, like other plugin failures."""

    def run(args: argparse.Namespace) -> int:
        try:
            rc: Any = entry.obj.run(args)
        except (SSLBenchError, FileNotFoundError):  # already one clear line; main prints them as usual
            raise
        except Exception as exc:
            raise SSLBenchError(f"command '{name}' from package '{entry.package}' failed: {exc!r}. "
                                f"Fix: this is a bug in '{entry.package}'; report it there, or uninstall it.") from exc
        if rc is None:
            return 0
        if isinstance(rc, bool) or not isinstance(rc, int):
            raise SSLBenchError(f"command '{name}' from package '{entry.package}' returned {rc!r}, not an exit code. "
                                f"Fix: make its run() return an int in '{entry.package}'.")
        return rc

    return run


def _unavailable(name: str, entry: Entry, error: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise SSLBenchError(f"command '{name}' from package '{entry.package}' is unavailable: {error}. "
                            f"Fix: this is a bug in '{entry.package}'; report it there, or uninstall it.")

    return run


class _AnyArguments(argparse.ArgumentParser):
    """Stands in for a plugin command whose parser could not be built: takes any arguments, so the
    user meets the command's failure instead of an argparse usage error."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        return argparse.Namespace(**self._defaults), []


def _add_plugin_commands(sub: argparse._SubParsersAction, registry: Registry) -> None:
    """One subparser per registered plugin command; a broken `add_arguments` disables only that command."""
    from ssl_bench.registry import PluginFailure

    for name, entry in sorted(registry.commands.items()):
        if name in sub.choices:  # a built-in: the registry normally disabled this name already
            continue
        cmd = entry.obj
        p = sub.add_parser(name, help=cmd.help, description=getattr(cmd, "description", None) or cmd.help)
        try:
            cmd.add_arguments(p)
        except Exception as exc:
            error = f"its add_arguments raised {exc!r}"
            registry.failures.append(PluginFailure(entry.package, f"command {name}", error))
            p = _AnyArguments(prog=p.prog, add_help=False)
            sub.choices[name] = p
            p.set_defaults(func=_unavailable(name, entry, error))
            continue
        p.set_defaults(func=_plugin_runner(name, entry))  # after add_arguments: the plugin cannot override it


def build_parser(registry: Registry | None = None, *, plugins: bool = True) -> argparse.ArgumentParser:
    """The built-in subcommands plus, with `plugins`, those of `registry` (default: the process-wide one)."""
    parser = argparse.ArgumentParser(
        prog="ssl-bench",
        description="Train self-supervised methods on one harness and score them with the same evaluators.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_builtin_commands(sub)
    if plugins and registry is None:
        registry = _plugin_registry()
    if plugins and registry is not None:
        _add_plugin_commands(sub, registry)
    return parser


class _StdStream(logging.StreamHandler):
    """A handler on whatever sys.stdout / sys.stderr is when a record is emitted (a redirect, pytest's capture)."""

    def __init__(self, to_stderr: bool) -> None:
        super().__init__()
        self.to_stderr = to_stderr

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr if self.to_stderr else sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns one; the property decides
        pass


def _setup_logging() -> None:
    """Our messages only (third-party INFO chatter such as faiss stays quiet): info to stdout, warnings to stderr."""
    if log.handlers:
        return
    out, err = _StdStream(to_stderr=False), _StdStream(to_stderr=True)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _os_error_line(exc: OSError) -> str:
    """An OSError as one line naming the file, the cause and the fix."""
    import errno

    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc)
    fixes = {
        errno.ENOSPC: "free space on that disk or point --out at another one",
        errno.EROFS: "the location is read-only: point --out (and --results) at a writable folder",
        errno.EACCES: "no permission to write there: point --out (and --results) at a folder you own",
        errno.EPERM: "no permission to write there: point --out (and --results) at a folder you own",
    }
    fix = fixes.get(exc.errno or -1, "check the path and the disk")
    return f"cannot write{where}: {reason}. Fix: {fix}"


def main(argv: Sequence[str] | None = None) -> int:
    _setup_logging()
    registry = _plugin_registry()
    args = build_parser(registry, plugins=registry is not None).parse_args(argv)
    if registry is not None and args.command != "list":  # `list` prints the problems itself
        registry.warn_problems()
    try:
        return args.func(args)
    except (TrainingInterrupted, RunInterrupted) as exc:  # Ctrl-C / SIGTERM: the run is 'interrupted', its checkpoint kept
        if _is_main_process():
            print(f"ssl-bench: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside any run (a run says how to continue itself, as RunInterrupted)
        if _is_main_process():
            print("ssl-bench: interrupted", file=sys.stderr)
        return 130
    except SSLBenchError as exc:
        print(f"ssl-bench: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # datasets raise a subclass with the paths tried
        print(f"ssl-bench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ssl-bench list | head`
        return 0
    except OSError as exc:  # disk full, read-only or unwritable output: one line, the run is marked failed
        print(f"ssl-bench: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
