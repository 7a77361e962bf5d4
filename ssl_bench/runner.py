"""Orchestration of one `ssl-bench run`: build -> train -> extract features -> evaluate -> record.

Kept separate from the CLI so tests and notebooks call the same code path the command line does.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config

from ssl_bench.components.base import Method
from ssl_bench.config import config_to_json, load_config
from ssl_bench.errors import CheckpointError, ConfigError
from ssl_bench.eval.base import EvalResult
from ssl_bench.eval.features import cached_features, pixel_features
from ssl_bench.methods.parts import build_backbone
from ssl_bench.provenance import git_commit, package_versions
from ssl_bench.registry import Registry, get_registry
from ssl_bench.results.store import ResultsStore, RunRecord, utc_now
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_bench.train.distributed import DistContext, barrier
from ssl_bench.train.loop import TrainResult, train

log = logging.getLogger("ssl_bench")

BASELINES = ("pixels", "random-init")


@dataclass
class RunOutcome:
    method: str
    run_dir: Path
    run_id: int | None
    metrics: dict[str, float]


def method_config(method: str, registry: Registry, **kwargs: Any) -> Config:
    """Resolved config for `method`: harness defaults < method default < user file < flags < --set."""
    cls = registry.get("method", method)
    cfg = load_config(getattr(cls, "default_config", None), **kwargs)
    cfg.method = cfg.get("method") or {}
    cfg.method["name"] = method
    return cfg


def _unsupported_options(loader: Any, options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(option names ``loader`` does not take, the names it does take); nothing is unsupported
    when it takes ``**kwargs`` or has no signature."""
    try:
        params = inspect.signature(loader).parameters.values()
    except (TypeError, ValueError):
        return [], []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return [], []
    names = {p.name for p in params}
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


def build_method(cfg: Any, registry: Registry, info: Any) -> Method:
    torch.manual_seed(cfg.seed)  # parameter init is part of the seed's contract
    backbone = build_backbone(cfg, registry, info)
    cls = registry.get("method", cfg.method.name)
    return cls(cfg, backbone, info)


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
    feats: dict[str, torch.Tensor], cfg: Any, registry: Registry, num_classes: int, device: torch.device | None = None
) -> list[tuple[str, EvalResult]]:
    """Run every configured evaluator on cached features, on `device` (GPU k-NN and probe on CUDA)."""
    if device is not None and device.type == "cuda":
        feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
    results = []
    for name in cfg.eval.evaluators:
        cls = registry.get("evaluator", name)
        options = dict(cfg.eval.get(name) or {})
        evaluator = cls(seed=cfg.seed, **options) if name == "linear" else cls(**options)
        results.append((name, evaluator(feats["train"], feats["train_labels"], feats["test"], feats["test_labels"], num_classes)))
    return results


def _attach_logfile(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("ssl_bench").addHandler(handler)
    return handler


def _record(store: ResultsStore, run_id: int, results: list[tuple[str, EvalResult]], extra: dict[str, Any], replace: bool = False) -> dict[str, float]:
    flat: dict[str, float] = {}
    for name, res in results:
        protocol = {**res.protocol, **extra}
        (store.replace_metrics if replace else store.add_metrics)(run_id, name, res.metrics, protocol)
        flat.update(res.metrics)
    return flat


def _summary(metrics: dict[str, float]) -> str:
    parts = [f"{k} {100 * v:.1f}%" for k, v in metrics.items() if k in ("knn_top1", "linear_top1")]
    return ", ".join(parts)


def run_method(
    method: str, cfg: Any, store: ResultsStore, ctx: DistContext, dataset: Any | None = None,
    resume: str | Path | bool | None = None, registry: Registry | None = None,
) -> RunOutcome:
    registry = registry or get_registry()
    dataset = dataset if dataset is not None else load_dataset(cfg, registry)
    info = dataset.info
    if resume:
        run_dir = Path(resume) if not isinstance(resume, bool) else latest_run_dir(cfg.out, cfg, method)
        if run_dir is None or not (run_dir / CHECKPOINT_NAME).is_file():
            raise CheckpointError(
                f"--resume: no checkpoint found for {method} (looked in {run_dir or Path(cfg.out) / cfg.dataset.name / cfg.backbone.name}); "
                "run without --resume to start a new run"
            )
        load_checkpoint(run_dir / CHECKPOINT_NAME)  # fail early and clearly if it is corrupt
    else:
        run_dir = new_run_dir(cfg.out, cfg, method)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump(str(run_dir / "config.py"))
        (run_dir / "config.json").write_text(config_to_json(cfg))
        handler = _attach_logfile(run_dir)
    barrier(ctx)
    model = build_method(cfg, registry, info)
    model.run_dir = run_dir  # where a method writes its own artefacts (PCA bases, figures)
    run_id = None
    if ctx.is_main:
        run_id = store.find_run(str(run_dir)) if resume else None
        record = dict(
            method=method, backbone=cfg.backbone.name, dataset=cfg.dataset.name, run_dir=str(run_dir),
            config_json=config_to_json(cfg), seed=cfg.seed, git_commit=git_commit(), versions_json=package_versions(),
            epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, device=str(ctx.device),
            uses_labels=bool(getattr(model, "uses_labels", False)),
        )
        if run_id is None:
            run_id = store.add_run(RunRecord(**record))
        else:
            store.update_run(run_id, status="running")
    try:
        model.to(ctx.device)
        if not resume:
            model.prepare(dataset.train, torch.Generator(device=ctx.device).manual_seed(cfg.seed))
        else:
            model.on_resume(dataset.train)
        result: TrainResult = train(model, dataset.train, cfg, run_dir, ctx, resume=bool(resume))
    except BaseException:
        if ctx.is_main and run_id is not None:
            store.update_run(run_id, status="failed", finished_at=utc_now())
            logging.getLogger("ssl_bench").removeHandler(handler)
        raise
    metrics: dict[str, float] = {}
    if ctx.is_main:
        model.eval()
        protocol = {"features": model.probe_protocol(), "method": method}
        feats = cached_features(run_dir, model.probe_features, dataset, cfg.eval.batch_size, ctx.device, protocol)
        results = evaluate_features(feats, cfg, registry, info.num_classes, ctx.device)
        results += model.extra_evaluations(dataset, ctx.device)
        metrics = _record(store, run_id, results, {"features": protocol["features"]})
        (run_dir / "metrics.json").write_text(json.dumps({n: r.to_dict() for n, r in results}, indent=1, default=str))
        store.update_run(
            run_id, status="finished", finished_at=utc_now(), wall_time_s=result.wall_time_s,
            throughput_img_s=result.throughput_img_s, peak_mem_mb=result.peak_mem_mb,
        )
        log.info("%s: %s (run dir %s)", method, _summary(metrics), run_dir)
        logging.getLogger("ssl_bench").removeHandler(handler)
    barrier(ctx)
    return RunOutcome(method, run_dir, run_id, metrics)


def run_baseline(name: str, cfg: Any, store: ResultsStore, dataset: Any, device: torch.device, registry: Registry | None = None) -> RunOutcome:
    """`pixels` (raw normalised pixels) or `random-init` (the untrained backbone), same evaluators."""
    registry = registry or get_registry()
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline '{name}'; baselines are {', '.join(BASELINES)}")
    run_dir = new_run_dir(cfg.out, cfg, name)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if name == "pixels":
        fn, feature = pixel_features, {"feature": "normalised pixels, flattened"}
    else:
        torch.manual_seed(cfg.seed)
        backbone = build_backbone(cfg, registry, dataset.info).to(device).eval()
        pool = (cfg.get("method") or {}).get("probe_pool", "cls")
        fn = lambda x: backbone.features(x, pool=pool)  # noqa: E731
        feature = {"feature": f"untrained {cfg.backbone.name} (timm init, seed {cfg.seed}), {pool} token after final norm"}
    run_id = store.add_run(RunRecord(
        method=name, backbone=cfg.backbone.name, dataset=cfg.dataset.name, run_dir=str(run_dir),
        config_json=config_to_json(cfg), seed=cfg.seed, git_commit=git_commit(), versions_json=package_versions(),
        epochs=0, device=str(device), is_baseline=True,
    ))
    feats = cached_features(run_dir, torch.no_grad()(fn), dataset, cfg.eval.batch_size, device, feature)
    results = evaluate_features(feats, cfg, registry, dataset.info.num_classes, device)
    metrics = _record(store, run_id, results, {"features": feature["feature"]})
    store.update_run(run_id, status="finished", finished_at=utc_now(), wall_time_s=time.perf_counter() - t0)
    log.info("%s: %s", name, _summary(metrics))
    return RunOutcome(name, run_dir, run_id, metrics)


def load_trained_method(run_dir: str | Path, registry: Registry | None = None) -> tuple[Any, Any, Method]:
    """(config, dataset, method with its checkpoint's weights, on CPU) of a finished run directory."""
    registry = registry or get_registry()
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.py"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir} has no config.py: it is not an ssl-bench run directory (expected config.py and {CHECKPOINT_NAME})")
    cfg = Config.fromfile(str(cfg_path))
    dataset = load_dataset(cfg, registry)
    model = build_method(cfg, registry, dataset.info)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME, map_location="cpu")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint in {run_dir} does not match its config ({exc})") from None
    model.run_dir = run_dir
    return cfg, dataset, model


def evaluate_run(run_dir: str | Path, store: ResultsStore, device: torch.device, recompute: bool = False, registry: Registry | None = None) -> RunOutcome:
    """`ssl-bench eval RUN_DIR`: rebuild the method from its saved config, load the checkpoint, re-score."""
    registry = registry or get_registry()
    run_dir = Path(run_dir)
    cfg, dataset, model = load_trained_method(run_dir, registry)
    model.to(device).eval()
    protocol = {"features": model.probe_protocol(), "method": cfg.method.name}
    feats = cached_features(run_dir, model.probe_features, dataset, cfg.eval.batch_size, device, protocol, recompute=recompute)
    results = evaluate_features(feats, cfg, registry, dataset.info.num_classes, device)
    results += model.extra_evaluations(dataset, device)
    run_id = store.find_run(str(run_dir))
    if run_id is None:
        run_id = store.add_run(RunRecord(
            method=cfg.method.name, backbone=cfg.backbone.name, dataset=cfg.dataset.name, run_dir=str(run_dir),
            config_json=config_to_json(cfg), seed=cfg.seed, epochs=cfg.train.epochs, batch_size=cfg.train.batch_size,
            git_commit=git_commit(), versions_json=package_versions(), device=str(device), status="finished",
        ))
    metrics = _record(store, run_id, results, {"features": protocol["features"]}, replace=True)
    return RunOutcome(cfg.method.name, run_dir, run_id, metrics)
