"""What the built-in commands and plugin commands share: the output options, the results file, the
distributed session. A plugin command (``ssl_bench_commands`` hook) imports these from here, never
from ``ssl_bench.cli``, so the CLI can change without breaking plugins.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ssl_bench.errors import SSLBenchError

RESULTS_NAME = "results.db"


def add_output_options(p: argparse.ArgumentParser, default_out: str = "runs") -> None:
    """``--out`` (run directories) and ``--results`` (the SQLite results file, default OUT/results.db)."""
    p.add_argument("--out", default=default_out,
                   help=f"output directory for run directories and the results store (default: {default_out})")
    p.add_argument("--results", default=None, help=f"SQLite results file, or a folder holding {RESULTS_NAME} (default: OUT/{RESULTS_NAME})")


def results_path(args: argparse.Namespace) -> Path:
    """The results file the command's options name: ``--results`` (a file, or a folder holding
    ``results.db``), else ``OUT/results.db``."""
    if args.results:
        path = Path(args.results)
        return path / RESULTS_NAME if path.is_dir() else path
    return Path(args.out) / RESULTS_NAME


def existing_results(args: argparse.Namespace, how_to_make: str = "run `ssl-bench run METHOD` first") -> Path:
    """The results file a reading command needs, or one line saying where it looked and what to do."""
    path = results_path(args)
    if not path.is_file():
        named = f"--results {args.results}" if args.results else f"--out {args.out}"
        raise SSLBenchError(f"no results store at {path} (from {named}); {how_to_make}, or pass --results FILE")
    return path


def recording_store(args: argparse.Namespace, is_main: bool = True) -> Any:
    """The store a recording command writes to (main rank only; None elsewhere): an existing file is
    checked now, before anything is created; a new one is created only when something is recorded."""
    from ssl_bench.run.ledger import StoreOnUse

    return StoreOnUse(results_path(args)) if is_main else None


@contextlib.contextmanager
def distributed_session(device: str = "auto") -> Iterator[Any]:
    """The process's ``DistContext`` (torchrun or a single process), the process group torn down after."""
    import torch

    from ssl_bench.distributed import init_distributed

    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
