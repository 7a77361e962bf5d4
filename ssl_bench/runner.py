"""Orchestration of one `ssl-bench run`: build -> train -> extract features -> evaluate -> record.

Kept separate from the CLI so tests and notebooks call the same code path the command line does.

What a result may and may not do (the store enforces the last two):

* everything that can be checked is checked before anything is written: the config's types and
  ranges, the dataset (at least 2 classes, every test class seen in training, enough training
  images for k-NN), the method and its evaluators are built, a resumed checkpoint is read and
  matched against the model and its config. A refused run leaves no run directory and no row.
* ``--resume`` is exact or refused: the run continues with the checkpoint's own config; a setting
  that would change training is refused with the differing keys (only ``RESUME_FREE_KEYS`` may differ).
* a finished run is immutable: only a successful new evaluation replaces its metrics; a failed or
  interrupted attempt leaves it finished.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config

from ssl_bench.components.base import Method
from ssl_bench.config import config_to_json, flat_keys
from ssl_bench.config_schema import validate_config
from ssl_bench.errors import CheckpointError, ConfigError, SSLBenchError, TrainingInterrupted
from ssl_bench.eval.base import EvalResult
from ssl_bench.eval.features import broadcast_flag, cached_features, pixel_features
from ssl_bench.methods.parts import keyword_options
from ssl_bench.provenance import git_commit, package_versions
from ssl_bench.registry import Registry, get_registry
from ssl_bench.results.leaderboard import BASELINE_METHOD_NAMES
from ssl_bench.results.store import ResultsStore, RunRecord, utc_now
from ssl_bench.run.assemble import build_backbone, build_method, method_config, resolve_part_specs  # also re-exported here
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_bench.train.distributed import DistContext, barrier
from ssl_bench.train.loop import TrainResult, train

log = logging.getLogger("ssl_bench")

BASELINES = BASELINE_METHOD_NAMES  # the baselines a run can add, as the leaderboard orders them
#: Settings that cannot change what a resumed run computes, so a resume may change them: where the
#: data and the outputs live, loader workers, the checkpoint interval, and the evaluation (a finished
#: run's metrics are replaced only by a successful new evaluation anyway).
RESUME_FREE_KEYS: tuple[str, ...] = (
    "out", "deconstruct", "dataset.data_root", "dataset.num_workers", "train.num_workers", "train.checkpoint_every", "eval",
)


@dataclass
class RunOutcome:
    method: str
    run_dir: Path
    run_id: int | None
    metrics: dict[str, float]


def validate_dataset(dataset: Any, cfg: Any) -> None:
    """Refuse data that cannot give a meaningful number (one line naming the problem and the fix)."""
    name = cfg.dataset.name
    train_y, test_y = dataset.train.labels, dataset.test.labels
    if dataset.info.num_classes < 2 or len(set(train_y.tolist())) < 2:
        raise ConfigError(
            f"dataset {name!r} has {len(set(train_y.tolist()))} class(es) in its training split: a probe on one class "
            "scores 100% and means nothing. Use a dataset (or --set dataset.limit_train) with at least 2 classes"
        )
    if len(test_y) == 0:
        raise ConfigError(f"dataset {name!r} has an empty test split; nothing can be scored. Check the val/ or test data")
    missing = sorted(set(test_y.tolist()) - set(train_y.tolist()))
    if missing:
        raise ConfigError(
            f"dataset {name!r}: test class(es) {missing[:10]} never occur in the training split, so no probe can predict "
            "them; use the full training split or a larger dataset.limit_train"
        )
    if "knn" in cfg.eval.evaluators:
        ks = tuple((cfg.eval.get("knn") or {}).get("ks") or (20,))
        if len(train_y) < max(ks):
            raise ConfigError(
                f"k-NN with k up to {max(ks)} needs at least {max(ks)} training images, dataset {name!r} has {len(train_y)}; "
                f"lower eval.knn.ks (e.g. --set \"eval.knn.ks=(10,20)\") or use more data"
            )


def build_evaluators(cfg: Any, registry: Registry) -> list[tuple[str, Any]]:
    """The configured evaluators, constructed (so a bad option fails before training, not after)."""
    out = []
    for name in cfg.eval.evaluators:
        cls = registry.get("evaluator", name)
        options = dict(cfg.eval.get(name) or {})
        if "seed" in inspect.signature(cls).parameters:
            options["seed"] = cfg.seed
        try:
            out.append((name, cls(**options)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"eval.{name}: {exc}") from None
    return out


def _unsupported_options(loader: Any, options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(option names ``loader`` does not take, the names it does take); nothing is unsupported
    when it takes ``**kwargs`` or has no signature."""
    names, takes_any = keyword_options(loader)
    if takes_any:
        return [], []
    return sorted(set(options) - names), sorted(names - {"data_root"})


def load_dataset(cfg: Any, registry: Registry) -> Any:
    dcfg = cfg.dataset
    loader = registry.get("dataset", dcfg.name)
    options = {k: v for k, v in dcfg.items() if k not in ("name", "data_root") and v is not None}
    bad, takes = _unsupported_options(loader, options)
    if bad:
        raise ConfigError(
            f"dataset {dcfg.name!r} does not take option(s) {', '.join(bad)} (it takes: {', '.join(takes)}); "
            "they probably come from a config written for another dataset. Drop them with --set "
            + " ".join(f"dataset.{k}=None" for k in bad)
        )
    return loader(dcfg.get("data_root"), **options)


def new_run_dir(out: str | Path, cfg: Any, name: str) -> Path:
    """`out/<dataset>/<backbone>/<name>-s<seed>[-N]`: a fresh directory; earlier runs are never reused."""
    base = Path(out) / cfg.dataset.name / cfg.backbone.name
    stem = f"{name}-s{cfg.seed}"
    path, i = base / stem, 1
    while path.exists():
        path, i = base / f"{stem}-{i}", i + 1
    return path


def latest_run_dir(out: str | Path, cfg: Any, name: str) -> Path | None:
    base = Path(out) / cfg.dataset.name / cfg.backbone.name
    stem = f"{name}-s{cfg.seed}"
    found = [p for p in base.glob(f"{stem}*") if p.name == stem or p.name[len(stem):].lstrip("-").isdigit()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def evaluate_features(
    feats: dict[str, torch.Tensor], cfg: Any, registry: Registry, num_classes: int, device: torch.device | None = None,
    image_results: dict[str, EvalResult] | None = None,
) -> list[tuple[str, EvalResult]]:
    """Run every configured evaluator on cached features, on `device` (GPU k-NN and probe on CUDA),
    in the configured order; an evaluator that needs images (the augmented linear probe) takes its
    result from ``image_results`` (:func:`evaluate_on_images`, which needs the model)."""
    image_results = image_results or {}
    if device is not None and device.type == "cuda":
        feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
    out = []
    for name, evaluator in build_evaluators(cfg, registry):
        if getattr(evaluator, "needs_images", False):
            if name not in image_results:
                raise ConfigError(
                    f"eval.{name} trains on augmented images and needs the model, which this caller did not run; "
                    f"run it with evaluate_on_images, or set eval.{name}.protocol=\"cached\""
                )
            out.append((name, image_results[name]))
        else:
            out.append((name, evaluator(feats["train"], feats["train_labels"], feats["test"], feats["test_labels"], num_classes)))
    return out


def evaluate_on_images(
    fn: Any, dataset: Any, feats: dict[str, torch.Tensor] | None, cfg: Any, registry: Registry, device: torch.device,
    ctx: DistContext | None = None,
) -> dict[str, EvalResult]:
    """The evaluators that need the model's feature function ``fn`` and the training images (the
    augmented linear probe), {name: result}. Under DDP every rank calls this (each encodes its shard);
    the results, and ``feats`` (the cached features: the test set), exist on the main rank only."""
    out: dict[str, EvalResult] = {}
    for name, evaluator in build_evaluators(cfg, registry):
        if getattr(evaluator, "needs_images", False):
            res = evaluator.evaluate_images(fn, dataset.train, dataset.info, feats, dataset.info.num_classes, device, ctx)
            if res is not None:
                out[name] = res
    return out


def _find_run(store: ResultsStore, run_dir: Path) -> int | None:
    """The store's run for ``run_dir``, however the path was spelt when it was recorded (relative to
    the working directory, as ``--out runs`` gives, or absolute)."""
    run_dir = Path(run_dir)
    candidates = [str(run_dir), str(run_dir.resolve())]
    try:
        candidates.append(os.path.relpath(run_dir.resolve()))
    except ValueError:  # another drive (Windows)
        pass
    for candidate in dict.fromkeys(candidates):
        run_id = store.find_run(candidate)
        if run_id is not None:
            return run_id
    return None


def _attach_logfile(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("ssl_bench").addHandler(handler)
    return handler


def _flat(results: list[tuple[str, EvalResult]]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for _, res in results:
        flat.update(res.metrics)
    return flat


def _with_features(results: list[tuple[str, EvalResult]], features: Any) -> dict[str, tuple[dict[str, float], dict[str, Any]]]:
    return {name: (res.metrics, {**res.protocol, "features": features}) for name, res in results}


def _summary(metrics: dict[str, float]) -> str:
    parts = [f"{k} {100 * v:.1f}%" for k, v in metrics.items() if k in ("knn_top1", "linear_top1")]
    return ", ".join(parts)


def _comparable(tree: Any) -> Any:
    """A config as JSON would store it (tuples -> lists, non-JSON values -> str), for comparing."""
    return json.loads(json.dumps(tree.to_dict() if hasattr(tree, "to_dict") else tree, sort_keys=True, default=str))


def resume_config_diff(stored: dict[str, Any], cfg: Any) -> list[tuple[str, Any, Any]]:
    """[(key, checkpoint value, this command's value)] for every setting that differs and may not
    (everything but ``RESUME_FREE_KEYS``)."""
    before, after = flat_keys(_comparable(stored)), flat_keys(_comparable(cfg))
    free = lambda k: any(k == f or k.startswith(f + ".") for f in RESUME_FREE_KEYS)  # noqa: E731
    return [(k, before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if not free(k) and before.get(k) != after.get(k)]


def stored_config(state: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The resolved config a checkpoint was trained with (it carries it; config.json as a fallback)."""
    text = state.get("config_json")
    if not text and (run_dir / "config.json").is_file():
        text = (run_dir / "config.json").read_text()
    if not text:
        raise CheckpointError(f"the checkpoint in {run_dir} carries no config, so a resume cannot be checked; start a new run")
    return json.loads(text)


def resume_dir(resume: str | Path | bool, cfg: Any, method: str) -> Path:
    """The run directory ``--resume`` means (RUN_DIR, or the latest run of ``method``), with a checkpoint."""
    run_dir = Path(resume) if not isinstance(resume, bool) else latest_run_dir(cfg.out, cfg, method)
    if run_dir is None or not (run_dir / CHECKPOINT_NAME).is_file():
        raise CheckpointError(
            f"--resume: no checkpoint found for {method} (looked in {run_dir or Path(cfg.out) / cfg.dataset.name / cfg.backbone.name}); "
            "run without --resume to start a new run"
        )
    return run_dir


def _prepared_model(cfg: Any, registry: Registry, info: Any, state: dict[str, Any] | None, run_dir: Path) -> Method:
    """Build the method; with a checkpoint, load it (strict) so a mismatch fails before anything is written."""
    model = build_method(cfg, registry, info)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint in {run_dir} does not match this model/config ({str(exc).splitlines()[0]}); nothing was changed"
            ) from None
    return model


def run_method(
    method: str, cfg: Any, store: ResultsStore, ctx: DistContext, dataset: Any | None = None,
    resume: str | Path | bool | None = None, registry: Registry | None = None,
) -> RunOutcome:
    """Train ``method`` with ``cfg``, evaluate it and record it; or continue ``resume`` (a run dir, or
    True for the latest run) exactly: ``cfg`` must then equal the checkpoint's config up to
    ``RESUME_FREE_KEYS`` (the CLI builds it as the checkpoint's config plus the user's flags)."""
    registry = registry or get_registry()
    validate_config(cfg)  # includes train.optimizer and train.momentum (build_optimizer checks them again for API callers)
    dataset = dataset if dataset is not None else load_dataset(cfg, registry)
    validate_dataset(dataset, cfg)
    info = dataset.info
    state = None
    if resume:
        run_dir = resume_dir(resume, cfg, method)
        state = load_checkpoint(run_dir / CHECKPOINT_NAME)  # a corrupt checkpoint fails here, untouched
        diff = resume_config_diff(stored_config(state, run_dir), cfg)
        if diff:
            shown = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, a, b in diff[:6]) + (" ..." if len(diff) > 6 else "")
            raise ConfigError(
                f"--resume {run_dir}: this command changes {len(diff)} setting(s) the run was trained with ({shown}). "
                f"A resume continues the same run: drop those flags (only {', '.join(RESUME_FREE_KEYS)} may change), "
                "or start a new run without --resume. Nothing was changed"
            )
    else:
        run_dir = new_run_dir(cfg.out, cfg, method)
    build_evaluators(cfg, registry)  # options checked now, not after training
    model = _prepared_model(cfg, registry, info, state, run_dir)  # a failed build leaves nothing behind
    model.run_dir = run_dir  # where a method writes its own artefacts (PCA bases, figures)

    run_id, finished_before, handler = None, False, None
    if ctx.is_main:
        if resume:
            run_id = _find_run(store, run_dir)
            finished_before = run_id is not None and store.get_run(run_id).status == "finished"
        else:
            run_dir.mkdir(parents=True, exist_ok=False)
            cfg.dump(str(run_dir / "config.py"))
            (run_dir / "config.json").write_text(config_to_json(cfg))
        handler = _attach_logfile(run_dir)
        record = dict(
            method=method, backbone=cfg.backbone.name, dataset=cfg.dataset.name, run_dir=str(run_dir),
            config_json=config_to_json(cfg), seed=cfg.seed, git_commit=git_commit(), versions_json=package_versions(),
            epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, device=str(ctx.device),
            uses_labels=bool(getattr(model, "uses_labels", False)),
        )
        if run_id is None:
            run_id = store.add_run(RunRecord(**record))
        elif not finished_before:
            store.update_run(run_id, status="running")  # re-claims it for this process
    barrier(ctx)
    metrics: dict[str, float] = {}
    try:
        model.to(ctx.device)
        if not resume:
            model.prepare(dataset.train, torch.Generator(device=ctx.device).manual_seed(cfg.seed))
        else:
            model.on_resume(dataset.train)
        result: TrainResult = train(model, dataset.train, cfg, run_dir, ctx, resume=bool(resume), resume_state=state)
        del state
        model.eval()
        protocol = {"features": model.probe_protocol(), "method": method}
        # Every rank extracts its shard; rank 0 alone reads / writes the cache and gets the features.
        feats = cached_features(run_dir, model.probe_features, dataset, cfg.eval.batch_size, ctx.device, protocol, ctx=ctx)
        image_results = evaluate_on_images(model.probe_features, dataset, feats, cfg, registry, ctx.device, ctx)
        if ctx.is_main:
            results = evaluate_features(feats, cfg, registry, info.num_classes, ctx.device, image_results)
            results += model.extra_evaluations(dataset, ctx.device)
            metrics = _flat(results)
            recorded = _with_features(results, protocol["features"])
            (run_dir / "metrics.json").write_text(
                json.dumps({n: {"metrics": m, "protocol": pr} for n, (m, pr) in recorded.items()}, indent=1, default=str)
            )
            _record(store, run_id, recorded, finished_before, wall_time_s=result.wall_time_s,
                    throughput_img_s=result.throughput_img_s, peak_mem_mb=result.peak_mem_mb)
            log.info("%s: %s (run dir %s)", method, _summary(metrics), run_dir)
    except BaseException as exc:
        if ctx.is_main and run_id is not None and not finished_before:
            interrupted = isinstance(exc, (KeyboardInterrupt, TrainingInterrupted))
            try:
                store.update_run(run_id, status="interrupted" if interrupted else "failed", finished_at=utc_now())
            except SSLBenchError as store_exc:  # the store itself is the problem (disk full, read-only)
                log.warning("could not mark run %s as %s: %s", run_id, "interrupted" if interrupted else "failed", store_exc)
        raise
    finally:
        if handler is not None:
            logging.getLogger("ssl_bench").removeHandler(handler)
            handler.close()
    barrier(ctx)
    return RunOutcome(method, run_dir, run_id, metrics)


def _baseline_identity(cfg: Any, name: str, method: str | None) -> str:
    """What decides a baseline's numbers: the same identity means the same baseline (reused, not re-run)."""
    data = _comparable(cfg)
    keep = {k: data.get(k) for k in ("dataset", "backbone", "eval", "seed", "deconstruct")}
    if method is not None:
        keep["method"] = data.get("method")
    return json.dumps({"baseline": name, **keep}, sort_keys=True)


def _stored_baseline(store: ResultsStore, name: str, identity: str) -> int | None:
    """A finished baseline run with this identity (the latest), or None."""
    runs = store.runs_frame()
    if runs.empty:
        return None
    runs = runs[(runs["method"] == name) & (runs["status"] == "finished") & runs["is_baseline"].astype(bool)]
    own = name.split(":", 1)[1] if ":" in name else None
    for rec in runs.sort_values("id", ascending=False).to_dict("records"):
        if _baseline_identity(json.loads(rec["config_json"] or "{}"), name, own) == identity:
            return int(rec["id"])
    return None


def run_baseline(
    name: str, cfg: Any, store: ResultsStore | None, dataset: Any, device: torch.device, registry: Registry | None = None,
    method: str | None = None, ctx: DistContext | None = None, tokenizer_from: str | Path | None = None,
) -> RunOutcome:
    """`pixels` (raw normalised pixels) or `random-init`, scored by the same evaluators.

    ``random-init`` is the untrained plain backbone, unless ``method`` names a method whose own
    network is the honest baseline (``Method.own_random_init``, e.g. a denoising method probed
    through a fresh DiT encoder at the probe t): then it is that method, built and prepared (its
    tokenizer fitted) but never trained, probed the same way, recorded as ``random-init:<method>``.
    A finished baseline with the same identity (dataset, backbone, evaluation, seed, and method
    config) is reused, not run again.

    ``ctx``: None (one process, the usual call) or, under torchrun, every rank's context: then every
    rank must call it, each extracts its shard of the features (and of the augmented probe's
    batches), and only the main rank touches ``store`` (None elsewhere) and returns the metrics.
    ``tokenizer_from``: the run directory of the same config's trained run; its checkpoint's fitted
    tokenizer is loaded instead of fitting it again (fitting is deterministic for a seed, so this is
    the same tokenizer, without refitting e.g. a conv VAE).
    """
    registry = registry or get_registry()
    main = ctx is None or ctx.is_main
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline '{name}'; baselines are {', '.join(BASELINES)}")
    own = None
    if name == "random-init" and method is not None and getattr(registry.get("method", method), "own_random_init", False):
        own = method
    label = f"random-init:{own}" if own else name
    identity = _baseline_identity(cfg, label, own)
    existing = _stored_baseline(store, label, identity) if main else None
    if broadcast_flag(existing is not None, ctx) and not main:
        return RunOutcome(label, Path("."), None, {})
    if existing is not None:
        from ssl_bench.results.leaderboard import metrics_by_run

        values, _ = metrics_by_run(store, [existing])[existing]
        log.info("%s: reusing the stored baseline (run %d)", label, existing)
        return RunOutcome(label, Path(store.get_run(existing).run_dir or "."), existing, {k: v for k, v in values.items() if v is not None})
    run_dir = new_run_dir(cfg.out, cfg, label.replace(":", "-"))
    t0 = time.perf_counter()
    if name == "pixels":
        fn, feature = pixel_features, {"feature": "normalised pixels, flattened"}
    elif own is None:
        torch.manual_seed(cfg.seed)
        backbone = build_backbone(cfg, registry, dataset.info).to(device).eval()
        pool = (cfg.get("method") or {}).get("probe_pool", "cls")
        fn = lambda x: backbone.features(x, pool=pool)  # noqa: E731
        feature = {"feature": f"untrained {cfg.backbone.name} (timm init, seed {cfg.seed}), {pool} token after final norm"}
    else:
        model = build_method(cfg, registry, dataset.info).to(device)
        if not _load_fitted_tokenizer(model, tokenizer_from):
            model.prepare(dataset.train, torch.Generator(device=device).manual_seed(cfg.seed))  # the tokenizer, as the run fits it
        model.eval()
        fn = model.probe_features
        feature = {"feature": f"untrained {own} network (seed {cfg.seed}, tokenizer fitted, no gradient step)", "probe": model.probe_protocol()}
    run_id = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=False)
        run_id = store.add_run(RunRecord(
            method=label, backbone=cfg.backbone.name, dataset=cfg.dataset.name, run_dir=str(run_dir),
            config_json=config_to_json(cfg), seed=cfg.seed, git_commit=git_commit(), versions_json=package_versions(),
            epochs=0, device=str(device), is_baseline=True,
        ))
    fn = torch.no_grad()(fn)
    try:
        feats = cached_features(run_dir, fn, dataset, cfg.eval.batch_size, device, feature, ctx=ctx, label=label)
        image_results = evaluate_on_images(fn, dataset, feats, cfg, registry, device, ctx)
        if not main:
            return RunOutcome(label, run_dir, None, {})
        results = evaluate_features(feats, cfg, registry, dataset.info.num_classes, device, image_results)
        store.finish_run(run_id, _with_features(results, feature["feature"]), wall_time_s=time.perf_counter() - t0)
    except BaseException as exc:
        if run_id is not None:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            try:
                store.update_run(run_id, status=status, finished_at=utc_now())
            except SSLBenchError:
                pass
        raise
    metrics = _flat(results)
    log.info("%s: %s", label, _summary(metrics))
    return RunOutcome(label, run_dir, run_id, metrics)


def _load_fitted_tokenizer(model: Method, run_dir: str | Path | None) -> bool:
    """Load ``model.tokenizer``'s fitted state from ``run_dir``'s checkpoint; False when there is
    nothing to load (no run dir, no checkpoint, a method without a fitted tokenizer, a mismatch)."""
    tokenizer = getattr(model, "tokenizer", None)
    if run_dir is None or tokenizer is None or not getattr(tokenizer, "needs_fit", False):
        return False
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return False
    state = load_checkpoint(path)["model"]
    prefix = "tokenizer."
    try:
        tokenizer.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    except (RuntimeError, ValueError, KeyError):
        return False
    return True


def load_trained_method(run_dir: str | Path, registry: Registry | None = None) -> tuple[Any, Any, Method]:
    """(config, dataset, method with its checkpoint's weights, on CPU) of a finished run directory.

    The config comes from ``config.json`` (data), never from ``config.py``: a run directory may come
    from someone else, and a Python config file would execute whatever it contains.
    """
    registry = registry or get_registry()
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir} has no config.json: it is not an ssl-bench run directory (expected config.json and {CHECKPOINT_NAME})")
    try:
        cfg = Config(json.loads(cfg_path.read_text()))
    except ValueError as exc:
        raise ConfigError(f"{cfg_path} is not valid JSON ({exc}); it is damaged: re-create it from the checkpoint or retrain") from None
    resolve_part_specs(cfg, registry)  # a no-op on a resolved config; an older run's config resolves as a new one would
    dataset = load_dataset(cfg, registry)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location="cpu")
    model = _prepared_model(cfg, registry, dataset.info, state, run_dir)
    model.run_dir = run_dir
    return cfg, dataset, model


def _record(store: ResultsStore, run_id: int, recorded: dict[str, Any], finished: bool, **fields: Any) -> None:
    """Store a run's evaluation: a finished run's metrics are replaced (all evaluators in one
    transaction, nothing else about the run changes); any other run is finished with them."""
    if finished:
        store.replace_all_metrics(run_id, recorded)
    else:
        store.finish_run(run_id, recorded, **fields)


def evaluate_run(
    run_dir: str | Path, store: ResultsStore | None, device: torch.device, recompute: bool = False, registry: Registry | None = None,
    ctx: DistContext | None = None,
) -> RunOutcome:
    """`ssl-bench eval RUN_DIR`: rebuild the method from its saved config, load the checkpoint, re-score.

    ``ctx``: None (one process) or, under torchrun, every rank's context (every rank calls; each
    extracts its shard; only the main rank touches ``store`` and returns the metrics).
    """
    registry = registry or get_registry()
    run_dir = Path(run_dir)
    cfg, dataset, model = load_trained_method(run_dir, registry)
    model.to(device).eval()
    protocol = {"features": model.probe_protocol(), "method": cfg.method.name}
    feats = cached_features(run_dir, model.probe_features, dataset, cfg.eval.batch_size, device, protocol, recompute=recompute, ctx=ctx)
    image_results = evaluate_on_images(model.probe_features, dataset, feats, cfg, registry, device, ctx)
    if ctx is not None and not ctx.is_main:
        return RunOutcome(cfg.method.name, run_dir, None, {})
    results = evaluate_features(feats, cfg, registry, dataset.info.num_classes, device, image_results)
    results += model.extra_evaluations(dataset, device)
    recorded = _with_features(results, protocol["features"])
    run_id = _find_run(store, run_dir)
    if run_id is None:
        run_id = store.add_run(RunRecord(
            method=cfg.method.name, backbone=cfg.backbone.name, dataset=cfg.dataset.name, run_dir=str(run_dir),
            config_json=config_to_json(cfg), seed=cfg.seed, epochs=cfg.train.epochs, batch_size=cfg.train.batch_size,
            git_commit=git_commit(), versions_json=package_versions(), device=str(device),
        ))
        store.finish_run(run_id, recorded)
    else:  # a run interrupted or failed after training: a full evaluation finishes it
        _record(store, run_id, recorded, store.get_run(run_id).status == "finished")
    return RunOutcome(cfg.method.name, run_dir, run_id, _flat(results))
