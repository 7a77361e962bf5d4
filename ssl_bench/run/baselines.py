"""The baselines every method is read against, scored by the same sequence as the methods.

* ``pixels``: the normalised pixels, flattened (deterministic: one per data and evaluation);
* ``random-init``: the untrained plain backbone (timm's init at the run's seed);
* ``random-init:<method>``: for a method whose own network is not the plain backbone
  (``Method.own_random_init``, e.g. a denoising method probed through a t-conditioned DiT), that
  method built and prepared (its tokenizer fitted) but never trained, probed the same way.

A baseline is identified by what decides its numbers (data, backbone, evaluation, seed, and the
method's config for ``random-init:<method>``). The same baseline is run once: its row is claimed in
the results store in one transaction, so concurrent commands (four runs of one seed started
together) share it, and a later command reuses the finished one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ssl_bench.errors import ConfigError
from ssl_bench.eval.features import pixel_features
from ssl_bench.results import BASELINE_METHOD_NAMES, metrics_by_run
from ssl_bench.run.assemble import build_backbone
from ssl_bench.run.build import build_model
from ssl_bench.run.ledger import claim_run_dir, recording, run_record
from ssl_bench.run.resume import CHECKPOINT_NAME, comparable
from ssl_bench.run.runs import Checked, RunOutcome, check_run
from ssl_bench.run.score import Subject, flat_metrics, score, summary
from ssl_bench.run.variant import baseline_variant
from ssl_bench.train.checkpoint import load_checkpoint
from ssl_bench.distributed import DistContext, broadcast_object

log = logging.getLogger("ssl_bench")

#: How long a command waits for another process that is running the same baseline.
WAIT_FOR_OTHER_S = 24 * 3600.0


def baseline_identity(cfg: Any, label: str, own: str | None) -> str:
    """What decides a baseline's numbers: the same identity means the same baseline (reused, not re-run)."""
    data = comparable(cfg)
    keys = ("dataset", "backbone", "eval", "deconstruct") + (() if label == "pixels" else ("seed",))  # pixels: no randomness
    keep = {k: data.get(k) for k in keys}
    if own is not None:
        keep["method"] = data.get("method")
    return json.dumps({"baseline": label, **keep}, sort_keys=True)


def _same_baseline(label: str, own: str | None, identity: str) -> Any:
    def same(row: dict[str, Any]) -> bool:
        try:
            stored = json.loads(row.get("config_json") or "{}")
        except ValueError:
            return False
        return baseline_identity(stored, label, own) == identity

    return same


def _subject(name: str, own: str | None, cfg: Any, registry: Any, dataset: Any, device: torch.device,
             tokenizer_from: str | Path | None) -> Subject:
    if name == "pixels":
        feature: Any = {"feature": "normalised pixels, flattened"}
        return Subject(fn=torch.no_grad()(pixel_features), cache_key=feature, feature=feature["feature"], label=name)
    if own is None:
        torch.manual_seed(cfg.seed)
        backbone = build_backbone(cfg, registry, dataset.info).to(device).eval()
        pool = (cfg.get("method") or {}).get("probe_pool", "cls")
        feature = {"feature": f"untrained {cfg.backbone.name} (timm init, seed {cfg.seed}), {pool} token after final norm"}
        return Subject(fn=torch.no_grad()(lambda x: backbone.features(x, pool=pool)), cache_key=feature,
                       feature=feature["feature"], label="random-init")
    model = build_model(cfg, registry, dataset.info).to(device)
    if not load_fitted_tokenizer(model, tokenizer_from):
        model.prepare(dataset.train, torch.Generator(device=device).manual_seed(cfg.seed))  # the tokenizer, as the run fits it
    model.eval()
    label = f"random-init:{own}"
    feature = {"feature": f"untrained {own} network (seed {cfg.seed}, tokenizer fitted, no gradient step)", "probe": model.probe_protocol()}
    return Subject(fn=torch.no_grad()(model.probe_features), cache_key=feature, feature=feature["feature"], label=label)


def run_baseline(
    name: str, cfg: Any, store: Any, dataset: Any, device: torch.device, registry: Any = None,
    method: str | None = None, ctx: DistContext | None = None, tokenizer_from: str | Path | None = None,
    *, checked: Checked | None = None,
) -> RunOutcome:
    """Score baseline ``name`` (``pixels`` or ``random-init``) for ``cfg``, or reuse the stored one.

    ``method``: with ``random-init``, a method whose own untrained network is the honest baseline
    (``own_random_init``) makes it ``random-init:<method>``. ``ctx``: None (one process) or, under
    torchrun, every rank's context: every rank calls, each extracts its shard, only the main rank
    touches ``store`` (None elsewhere) and returns the metrics. ``tokenizer_from``: the trained run
    of the same config, whose fitted tokenizer is loaded instead of fitting it again (fitting is
    deterministic for a seed: the same tokenizer).
    """
    from ssl_bench.registry import get_registry

    registry = registry or get_registry()
    ctx = ctx or DistContext(0, 1, 0, device)
    if name not in BASELINE_METHOD_NAMES:
        raise ConfigError(f"unknown baseline '{name}'; baselines are {', '.join(BASELINE_METHOD_NAMES)}")
    own = method if name == "random-init" and method is not None and getattr(registry.get("method", method), "own_random_init", False) else None
    label = f"random-init:{own}" if own else name
    checked = checked or check_run(cfg, registry, dataset)
    claim = _claim(store, cfg, label, own, device, baseline_variant(name, cfg, own, registry)) if ctx.is_main else None
    run_id, run_dir, reused = broadcast_object(claim, ctx) or (None, None, False)
    if reused:
        return _reused(store, label, run_id, ctx)
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    with recording(store, run_id if ctx.is_main else None):
        subject = _subject(name, own, cfg, registry, checked.dataset, device, tokenizer_from)
        recorded = score(subject, checked.dataset, run_dir, checked.evaluators, cfg, ctx)
        if not ctx.is_main:
            return RunOutcome(label, run_dir, None, {})
        store.finish_run(run_id, recorded, wall_time_s=time.perf_counter() - t0)
    metrics = flat_metrics(recorded)
    log.info("%s: %s", label, summary(metrics))
    return RunOutcome(label, run_dir, run_id, metrics)


def _claim(store: Any, cfg: Any, label: str, own: str | None, device: torch.device, variant: dict[str, Any]) -> tuple[int, str, bool]:
    """(run id, run dir, reused): this process's claim on the baseline, or the stored one to reuse.

    A baseline another live process is scoring is waited for; if that process fails, it is claimed
    again here."""
    identity = baseline_identity(cfg, label, own)
    same = _same_baseline(label, own, identity)
    while True:
        run_dir = claim_run_dir(cfg, label.replace(":", "-"))
        record = run_record(cfg, label, run_dir, device, epochs=0, is_baseline=True, variant=variant)
        try:
            run_id, status = store.claim_run(record, same)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        if status == "claimed":
            return run_id, str(run_dir), False
        shutil.rmtree(run_dir, ignore_errors=True)  # not ours: the empty directory goes
        if status == "finished":
            return run_id, str(store.get_run(run_id).run_dir or "."), True
        log.info("%s: another process is scoring this baseline (run %d); waiting for it", label, run_id)
        if store.wait_for_run(run_id, timeout_s=WAIT_FOR_OTHER_S) == "finished":
            return run_id, str(store.get_run(run_id).run_dir or "."), True


def _reused(store: Any, label: str, run_id: int, ctx: DistContext) -> RunOutcome:
    if not ctx.is_main:
        return RunOutcome(label, Path("."), None, {})
    values, _ = metrics_by_run(store, [run_id])[run_id]
    log.info("%s: reusing the stored baseline (run %d)", label, run_id)
    return RunOutcome(label, Path(store.get_run(run_id).run_dir or "."), run_id, {k: v for k, v in values.items() if v is not None})


def load_fitted_tokenizer(model: Any, run_dir: str | Path | None) -> bool:
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
