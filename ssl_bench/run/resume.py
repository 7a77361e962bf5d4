"""Continuing a run: which run, with which config, and the command that continues it.

``--resume`` is exact or refused. The run continues with the checkpoint's own config; a setting that
would change training is refused with the differing keys (only :data:`RESUME_FREE_KEYS` may differ).
The command a stopped run prints to continue it (:func:`resume_command`) is shell-quoted and names
absolute ``--out`` / ``--results`` paths, so it works pasted into any directory.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from mmengine.config import Config

from ssl_bench.config import flat_keys
from ssl_bench.errors import CheckpointError, ConfigError
from ssl_bench.run.assemble import resolve_part_specs
from ssl_bench.run.ledger import run_dir_base
from ssl_bench.train.checkpoint import CHECKPOINT_NAME

#: Settings that cannot change what a resumed run computes, so a resume may change them: where the
#: data and the outputs live, loader workers, the checkpoint interval, and the evaluation (a finished
#: run's metrics are replaced only by a successful new evaluation anyway).
RESUME_FREE_KEYS: tuple[str, ...] = (
    "out", "deconstruct", "dataset.data_root", "dataset.num_workers", "train.num_workers", "train.checkpoint_every", "eval",
)


def comparable(tree: Any) -> Any:
    """A config as JSON would store it (tuples -> lists, non-JSON values -> str), for comparing."""
    return json.loads(json.dumps(tree.to_dict() if hasattr(tree, "to_dict") else tree, sort_keys=True, default=str))


def config_diff(stored: dict[str, Any], cfg: Any) -> list[tuple[str, Any, Any]]:
    """[(key, checkpoint value, this command's value)] for every setting that differs and may not
    (everything but ``RESUME_FREE_KEYS``)."""
    before, after = flat_keys(comparable(stored)), flat_keys(comparable(cfg))
    free = lambda k: any(k == f or k.startswith(f + ".") for f in RESUME_FREE_KEYS)  # noqa: E731
    return [(k, before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if not free(k) and before.get(k) != after.get(k)]


def refuse_changed_settings(run_dir: Path, stored: dict[str, Any], cfg: Any) -> None:
    """One ConfigError listing the settings ``cfg`` changes from the run's own (nothing is changed)."""
    diff = config_diff(stored, cfg)
    if diff:
        shown = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, a, b in diff[:6]) + (" ..." if len(diff) > 6 else "")
        raise ConfigError(
            f"--resume {run_dir}: this command changes {len(diff)} setting(s) the run was trained with ({shown}). "
            f"A resume continues the same run: drop those flags (only {', '.join(RESUME_FREE_KEYS)} may change), "
            "or start a new run without --resume. Nothing was changed"
        )


def latest_run_dir(cfg: Any, name: str) -> Path | None:
    """The most recently modified run directory of ``name`` with ``cfg``'s seed, data and backbone."""
    stem = f"{name}-s{cfg.seed}"
    base = run_dir_base(cfg)
    found = [p for p in base.glob(f"{stem}*") if p.name == stem or p.name[len(stem):].lstrip("-").isdigit()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resume_dir(resume: str | Path | bool, cfg: Any, method: str) -> Path:
    """The run directory ``--resume`` means (RUN_DIR, or the latest run of ``method``), with a checkpoint."""
    run_dir = Path(resume) if not isinstance(resume, bool) else latest_run_dir(cfg, method)
    if run_dir is None or not (run_dir / CHECKPOINT_NAME).is_file():
        where = run_dir or run_dir_base(cfg)
        raise CheckpointError(f"--resume: no checkpoint found for {method} (looked in {where}); run without --resume to start a new run")
    return run_dir


def stored_config(run_dir: Path, state: dict[str, Any] | None = None, registry: Any = None) -> dict[str, Any]:
    """The resolved config a run was trained with: its checkpoint carries it, config.json as a fallback
    (part specs resolved with ``registry``, as :func:`read_run_config`)."""
    text = (state or {}).get("config_json")
    if not text and (run_dir / "config.json").is_file():
        text = (run_dir / "config.json").read_text()
    if not text:
        raise CheckpointError(f"the checkpoint in {run_dir} carries no config, so a resume cannot be checked; start a new run")
    stored = json.loads(text)
    return stored if registry is None else resolve_part_specs(Config(stored), registry).to_dict()


def read_run_config(run_dir: Path, registry: Any = None) -> Config:
    """``RUN_DIR/config.json`` as a Config. Data, never code: ``config.py`` is never executed, since a
    run directory may come from someone else. With ``registry`` its part specs are resolved as a new
    config's are (a run recorded by an older ssl-bench may still carry a replaced part's options)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no config.json: it is not an ssl-bench run directory (expected config.json and {CHECKPOINT_NAME})")
    try:
        cfg = Config(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}); it is damaged: re-create it from the checkpoint or retrain") from None
    return cfg if registry is None else resolve_part_specs(cfg, registry)


def resume_command(method: str, run_dir: Path, results: str | Path | None = None, ctx: Any = None) -> str:
    """``ssl-bench run METHOD --resume RUN_DIR --results FILE``, shell-quoted, with absolute paths.

    ``--out`` is not needed once RUN_DIR is named; the results file is, or a command pasted into
    another directory would open (and create) a store there. Under torchrun (``ctx`` with several
    processes) it is the torchrun command with the same process counts: a mid-epoch checkpoint holds
    one state per process."""
    words = ["ssl-bench", "run"]
    if ctx is not None and getattr(ctx, "world_size", 1) > 1:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        words = ["torchrun", "--nnodes", str(ctx.world_size // per_node), "--nproc_per_node", str(per_node), "-m", "ssl_bench.cli", "run"]
    words += [method, "--resume", str(Path(run_dir).resolve())]
    if results is not None:
        words += ["--results", str(Path(results).resolve())]
    return shlex.join(words)


def stopped_before_the_end(state: dict[str, Any], cfg: Any) -> str | None:
    """Where a checkpoint stopped when it is not the end of training (e.g. "epoch 2 of 4"), else None."""
    epochs = int(cfg.train.epochs)
    epoch, step = int(state.get("epoch", 0)), int(state.get("epoch_step", 0) or 0)
    if epoch >= epochs and not step:
        return None
    if step:
        return f"epoch {epoch + 1} of {epochs}, after step {step}"
    return f"the end of epoch {epoch} of {epochs}"


def resume_config(
    method: str, registry: Any, resume: str | Path | bool, *, user_config: str | Path | None = None,
    cli: dict[str, Any] | None = None, set_items: Any = (),
) -> Config:
    """The config of a resumed run: the one it was trained with (``RUN_DIR/config.json``) with this
    command's settings layered on as for a new run. ``run_method`` refuses it if a setting that
    changes training differs (:func:`refuse_changed_settings`)."""
    from ssl_bench.config import load_config
    from ssl_bench.config_schema import validate_config
    from ssl_bench.run.assemble import method_config

    fresh = None
    if resume is True:  # no RUN_DIR: the latest run of this method where a new run would go
        fresh = method_config(method, registry, user_config=user_config, cli=cli, set_items=set_items)
    run_dir = resume_dir(resume, fresh, method)
    try:
        stored = read_run_config(run_dir)
    except ConfigError as exc:
        raise ConfigError(f"--resume {run_dir}: {exc}; a resume needs the run's own config") from None
    cfg = load_config(user_config=user_config, cli=cli, set_items=set_items, base=stored)
    resolve_part_specs(cfg, registry)
    validate_config(cfg)
    return cfg
