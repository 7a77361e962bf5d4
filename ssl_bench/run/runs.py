"""A method's run from start to record, and the re-scoring of a trained run.

What a result may and may not do (the store enforces the last two):

* everything that can be checked is checked before anything is written: the config (when it was
  resolved), the dataset, the evaluators and the method are built, a resumed checkpoint is read and
  loaded (strictly) into the model. A refused run leaves no run directory and no row.
* ``--resume`` is exact or refused (``ssl_bench.run.resume``).
* a stopped run is never scored as finished: ``ssl-bench eval`` refuses a checkpoint from before the
  last epoch, naming where it stopped and the command that finishes it; the features cache is keyed
  by the weights that made it, so a resumed run never scores the features of an earlier checkpoint.
* a finished run is immutable: only a successful new evaluation replaces its metrics; a failed or
  interrupted attempt leaves it finished.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssl_bench.config import config_to_json
from ssl_bench.distributed import DistContext, barrier, broadcast_object
from ssl_bench.errors import CheckpointError, ConfigError, RunInterrupted
from ssl_bench.files import atomic_write_text, remove_partial_writes
from ssl_bench.run.build import BuiltEvaluator, build_evaluators, build_model, load_dataset, validate_dataset, weights_fingerprint
from ssl_bench.run.ledger import claim_run_dir, find_run, record_scores, recording, run_record
from ssl_bench.run.resume import (
    read_run_config,
    refuse_changed_settings,
    resume_command,
    resume_dir,
    stopped_before_the_end,
    stored_config,
)
from ssl_bench.run.score import SPLITS, Subject, eval_split, flat_metrics, score, summary, write_metrics_json
from ssl_bench.run.variant import variant_of
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_bench.train.epoch_log import RunLogHandler
from ssl_bench.train.loop import train

log = logging.getLogger("ssl_bench")


@dataclass
class RunOutcome:
    method: str
    run_dir: Path
    run_id: int | None
    metrics: dict[str, float]


@dataclass
class Checked:
    """A config with its dataset checked for it and its evaluators built: what a run needs before it
    may write anything (``ssl-bench run`` checks every method's before the first one trains)."""

    cfg: Any
    dataset: Any
    evaluators: list[BuiltEvaluator]


def check_run(cfg: Any, registry: Any, dataset: Any = None) -> Checked:
    """Load the dataset (unless given), check it for ``cfg`` and build ``cfg``'s evaluators."""
    dataset = load_dataset(cfg, registry) if dataset is None else dataset
    validate_dataset(dataset, cfg)
    return Checked(cfg, dataset, build_evaluators(cfg, registry))


def features_key(method: str, model: Any, epoch: int, step: int, is_main: bool) -> dict[str, Any]:
    """The features cache key of a trained model: how its features are computed and which weights."""
    weights = {"epoch": int(epoch), "step": int(step), "sha256": weights_fingerprint(model) if is_main else None}
    return {"features": model.probe_protocol(), "method": method, "weights": weights}


def method_subject(model: Any, key: dict[str, Any], device: torch.device, source: str, recompute: bool = False) -> Subject:
    """A trained (or loaded) method as what is scored: its probe features and its own evaluations (of
    the dataset as the scoring sees it: on the validation split, that split stands in for test)."""
    return Subject(
        fn=model.probe_features, cache_key=key, feature=key["features"],
        extra=lambda scored: model.extra_evaluations(scored, device), extra_source=source, recompute=recompute,
    )


def run_method(
    method: str, cfg: Any, store: Any, ctx: DistContext, dataset: Any = None, resume: str | Path | bool | None = None,
    registry: Any = None, *, checked: Checked | None = None, results: str | Path | None = None,
) -> RunOutcome:
    """Train ``method`` with ``cfg``, score it and record it; or continue ``resume`` (a run dir, or True
    for the latest run of the method) exactly: ``cfg`` must then equal the checkpoint's config up to
    ``RESUME_FREE_KEYS``. ``cfg`` is a resolved config (``method_config`` / the resume's own).

    ``store`` is used on the main rank only (None elsewhere); ``results``: its path, for the resume
    command a stopped run prints. ``checked``: the dataset and evaluators already checked for ``cfg``.
    """
    from ssl_bench.registry import get_registry

    registry = registry or get_registry()
    checked = checked or check_run(cfg, registry, dataset)
    dataset = checked.dataset
    state, run_dir = None, None
    if resume:
        run_dir = resume_dir(resume, cfg, method)
        state = load_checkpoint(run_dir / CHECKPOINT_NAME)  # a corrupt checkpoint fails here, untouched
        refuse_changed_settings(run_dir, stored_config(run_dir, state, registry), cfg)
    model = build_model(cfg, registry, dataset.info, state, run_dir)  # a failed build leaves nothing behind
    run_id, finished_before = None, False
    if ctx.is_main:
        if resume:
            remove_partial_writes(run_dir)
            run_id = find_run(store, run_dir)
            finished_before = run_id is not None and store.get_run(run_id).status == "finished"
        else:
            run_dir = claim_run_dir(cfg, method)
    run_dir = Path(broadcast_object(str(run_dir) if run_dir is not None else None, ctx))
    model.run_dir = run_dir  # where a method writes its own artefacts (PCA bases, figures)
    handler = None
    if ctx.is_main:
        try:
            if not resume:
                cfg.dump(str(run_dir / "config.py"))
                atomic_write_text(run_dir / "config.json", config_to_json(cfg))
            handler = _attach_logfile(run_dir)
            if run_id is None:
                run_id = store.add_run(run_record(cfg, method, run_dir, ctx.device, epochs=cfg.train.epochs,
                                                  uses_labels=bool(getattr(model, "uses_labels", False)),
                                                  variant=variant_of(cfg, method, registry)))
            elif not finished_before:
                store.update_run(run_id, status="running")  # re-claims it for this process
        except BaseException:  # a run that could not even be recorded leaves no directory behind
            _detach_logfile(handler)
            if not resume and run_id is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    barrier(ctx)
    metrics: dict[str, float] = {}
    command = resume_command(method, run_dir, results, ctx)
    try:
        with recording(store, run_id, finished_before=finished_before), _interrupt_names(command):
            model.to(ctx.device)
            if state is None:
                model.prepare(dataset.train, torch.Generator(device=ctx.device).manual_seed(cfg.seed))
            else:
                model.on_resume(dataset.train)
            result = train(model, dataset.train, cfg, run_dir, ctx, resume_state=state, resume_command=command)
            del state
            model.eval()
            key = features_key(method, model, result.epochs, result.steps, ctx.is_main)
            source = f"method '{method}' from package '{registry.entry('method', method).package}'"
            subject = method_subject(model, key, ctx.device, source)
            recorded = score(subject, dataset, run_dir, checked.evaluators, cfg, ctx)
            if ctx.is_main:
                write_metrics_json(run_dir, recorded, eval_split(cfg))
                record_scores(store, run_id, recorded, finished_before=finished_before, wall_time_s=result.wall_time_s,
                              throughput_img_s=result.throughput_img_s, peak_mem_mb=result.peak_mem_mb)
                metrics = flat_metrics(recorded)
                log.info("%s: %s (run dir %s)", method, summary(metrics), run_dir)
    finally:
        _detach_logfile(handler)
    barrier(ctx)
    return RunOutcome(method, run_dir, run_id, metrics)


@contextlib.contextmanager
def _interrupt_names(command: str) -> Iterator[None]:
    """A Ctrl-C outside the training loop (which stops at a step boundary itself) says how to continue."""
    try:
        yield
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted; the run is marked 'interrupted' and its last checkpoint is kept. Resume with: {command}") from None


def _attach_logfile(run_dir: Path) -> logging.Handler:
    """``RUN_DIR/train.log`` receives the ``ssl_bench`` log for the duration of the run."""
    handler = RunLogHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("ssl_bench").addHandler(handler)
    return handler


def _detach_logfile(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger("ssl_bench").removeHandler(handler)
        with contextlib.suppress(OSError):  # a full disk was reported when it happened
            handler.close()


def load_trained_method(run_dir: str | Path, registry: Any = None) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(config, dataset, method with the checkpoint's weights on CPU, the checkpoint) of a run directory.

    The config comes from ``config.json`` (data), never from ``config.py``: a run directory may come
    from someone else, and a Python config file would execute whatever it contains.
    """
    from ssl_bench.registry import get_registry

    registry = registry or get_registry()
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, registry)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location="cpu")
    dataset = load_dataset(cfg, registry)
    model = build_model(cfg, registry, dataset.info, state, run_dir)
    model.run_dir = run_dir
    return cfg, dataset, model, state


def evaluate_run(
    run_dir: str | Path, store: Any, device: torch.device, recompute: bool = False, registry: Any = None,
    ctx: DistContext | None = None, results: str | Path | None = None, split: str | None = None,
) -> RunOutcome:
    """``ssl-bench eval RUN_DIR [--split test|val]``: rebuild the method from its config, load its
    checkpoint, re-score on ``split`` (None: the run's own ``eval.split``).

    The new scores replace the run's scores of that split only (the other split's are kept), in the
    store and in its file (``metrics.json`` / ``metrics-val.json``): a sweep scores its runs on the
    validation split and then only the selected ones on test. ``split="val"`` needs a run with
    ``dataset.val_fraction``. The returned metrics are those of this scoring (``val_*`` for val).

    A checkpoint from before the run's last epoch is refused (it is not the trained model; scoring it
    would record a finished N-epoch run with fewer epochs' weights): the message names where it
    stopped and the command that finishes it. ``ctx``: None (one process) or, under torchrun, every
    rank's context (every rank calls; only the main rank touches ``store``).
    """
    from ssl_bench.registry import get_registry

    registry = registry or get_registry()
    ctx = ctx or DistContext(0, 1, 0, device)
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir, registry)
    method = cfg.method.name
    split = split or eval_split(cfg)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; score 'test' or 'val'")
    if split == "val" and cfg.dataset.get("val_fraction") is None:
        raise ConfigError(
            f"{run_dir} was trained without a validation split (dataset.val_fraction is not set), so it has none to "
            "score; score it on test, or train a run with --set dataset.val_fraction=0.1"
        )
    state = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location="cpu")
    stopped = stopped_before_the_end(state, cfg)
    if stopped:
        raise CheckpointError(
            f"{run_dir} stopped at {stopped}: its checkpoint is not the trained {cfg.train.epochs}-epoch model, so "
            f"scoring it would record a finished run with the wrong weights. Finish training first: "
            f"{resume_command(method, run_dir, results)}; nothing was recorded"
        )
    checked = check_run(cfg, registry)
    model = build_model(cfg, registry, checked.dataset.info, state, run_dir)
    model.run_dir = run_dir
    model.to(device).eval()
    key = features_key(method, model, state["epoch"], state.get("step", 0), ctx.is_main)
    del state
    source = f"method '{method}' from package '{registry.entry('method', method).package}'"
    subject = method_subject(model, key, device, source, recompute)
    recorded = score(subject, checked.dataset, run_dir, checked.evaluators, cfg, ctx, split=split)
    if not ctx.is_main:
        return RunOutcome(method, run_dir, None, {})
    remove_partial_writes(run_dir)
    write_metrics_json(run_dir, recorded, split)
    run_id = find_run(store, run_dir)
    if run_id is None:
        run_id = store.add_run(run_record(cfg, method, run_dir, device, epochs=cfg.train.epochs,
                                          uses_labels=bool(getattr(model, "uses_labels", False))))
        record_scores(store, run_id, recorded, finished_before=False)
    else:  # a run interrupted or failed after training: a full evaluation finishes it
        record_scores(store, run_id, recorded, finished_before=store.get_run(run_id).status == "finished")
    return RunOutcome(method, run_dir, run_id, flat_metrics(recorded))
