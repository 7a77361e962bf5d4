"""One prepared GPU check: everything a short loan of one GPU machine should measure, in one command.

    bash benchmarks/gpu_check.sh                    # on the GPU machine (installs .whl/ + ssl-bench, then this)
    python benchmarks/gpu_check.py --dry-run        # the same code paths at tiny sizes on CPU (the test suite runs it)

Why one script: device time is scarce (minutes per task, one command at a time), so the checks are
prepared, budgeted and self-reporting. Five parts, each in its own process with its own time limit,
so that a crash, a CUDA error or a hang in one is written into the results file and the others run:

1. ``throughput``: bf16 training throughput, peak memory and MFU of mae, ldae, ddm, mocov3 at
   ViT-B/16, 224 px, built as the runner builds them (``method_config`` + ``build_method``, the
   Table-4 recipe's method settings), stepped as ``ssl_bench.train.engine.train_one_epoch`` steps them.
2. ``data``: the folder data pipeline (``benchmarks/data_speed.py``'s pipelines) with one worker per
   spare core, CPU decoders vs nvJPEG, ours vs torchvision's ImageFolder, against part 1's MAE speed.
3. ``knn``: ``ssl_bench.eval.knn`` on CUDA (torch; faiss-gpu when importable) on 100k x 768
   features, and its predictions against the CPU backends on a subset of the queries.
4. ``ddp``: ``torchrun --nproc_per_node 1 -m ssl_bench.cli run mae`` on digits, and a direct
   1-rank NCCL DistributedDataParallel step check.
5. ``fashion``: ``ssl-bench run`` of all four methods on Fashion-MNIST at vit-tiny, with the leaderboard.

The parts share one time budget (``--budget``, seconds): part i must end by the sum of the
allotments of parts 1..i, so time a part leaves unused goes to the next ones, and a part with too
little time left is skipped with a note. The results file is
``benchmarks/results/gpu_check-<date>-<device>.md`` (``--out``); with ``$OUT`` set it is also
copied there, with each part's log (the device tool returns what is under ``$OUT``).

``--dry-run``: CPU, a width-32 depth-2 ViT at 32 px, a handful of steps, a tiny generated JPEG
folder, gloo instead of NCCL, digits instead of Fashion-MNIST, k-NN on a few hundred features; the
results go to ``--out`` (default: a new temporary directory), never to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
TABLE4 = BENCH / "table4"
sys.path.insert(0, str(BENCH))

PARTS = ("throughput", "data", "knn", "ddp", "fashion")
TITLES = {
    "throughput": "1. bf16 training throughput and MFU (ViT-B/16, 224 px)",
    "data": "2. Data pipeline: can it feed the GPU?",
    "knn": "3. k-NN on the GPU",
    "ddp": "4. DDP smoke run (torchrun, 1 process)",
    "fashion": "5. Fashion-MNIST, all four methods at vit-tiny",
}
DRY_TITLES = {
    "throughput": "1. Training throughput and MFU (dry run: CPU, fp32, width-32 depth-2 ViT, 32 px)",
    "data": "2. Data pipeline (dry run: tiny generated JPEG folder, CPU decoders)",
    "knn": "3. k-NN (dry run: CPU, a few hundred features)",
    "ddp": "4. DDP smoke run (dry run: torchrun, 1 process, gloo, CPU)",
    "fashion": "5. All four methods (dry run: digits instead of Fashion-MNIST, tiny ViT)",
}
#: Seconds per part on the GPU machine (sum 410: with the wrapper's installs, under 8 minutes).
ALLOTMENT = {"throughput": 120, "data": 60, "knn": 30, "ddp": 50, "fashion": 150}
METHOD_NAMES = ("mae", "ldae", "ddm", "mocov3")
#: Per-GPU batch of the throughput part: the Table-4 recipes' global batches over 8 GPUs are 512
#: (MAE, MoCo v3) and 256 (l-DAE); these are smaller so that every method fits quickly.
DEFAULT_BATCH = {"mae": 256, "ldae": 128, "ddm": 128, "mocov3": 128}
#: Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from NVIDIA's datasheets: H100 SXM and H200
#: SXM 989.4 (1,979 "with sparsity"), A100 312. PCIe / NVL variants have lower clocks and are not
#: matched: pass --peak-tflops for them (and for any other device), else MFU is left blank.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100", 989.4), ("A100", 312.0))
MIN_PART_S = 8.0  # a part with less time than this left is skipped, not started
#: The tests' tiny settings (tests/conftest.py TINY_SET), for the dry run's ssl-bench runs.
TINY_RUN_SET = [
    "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=256",
    "dataset.limit_test=128", "train.batch_size=64", "eval.linear.epochs=5", "eval.linear.warmup_epochs=1",
]
TINY_DDM_SET = ["method.nll.num_images=8", "method.nll.batch_size=8", "method.samples.num=4", "method.samples.steps=4"]


# ----------------------------------------------------------------------------------- helpers


def peak_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    """(peak bf16 TFLOP/s, where it comes from) for MFU; (None, why) when unknown."""
    if override:
        return override, f"--peak-tflops {override:g}"
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name and not any(v in device_name for v in ("PCIe", "NVL")):
            return value, f"{key} dense bf16 tensor-core peak, NVIDIA datasheet"
    return None, f"no peak known for {device_name!r} (pass --peak-tflops): MFU left blank"


def nccl_version() -> str:
    """torch's NCCL version as text (a tuple in recent torch, an int such as 21803 in older ones)."""
    import torch

    v = torch.cuda.nccl.version()
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def fmt(value: Any) -> str:
    """Numbers for a table: thousands separated, one decimal from 1 up, three significant digits
    below 1 (the dry run's tiny models would otherwise all read 0.0)."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or value == 0:
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) >= 1 else f"{value:.3g}"


def md_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` (dicts) with ``columns`` = [(key, header)]."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _kill(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the child's process group (torchrun forwards it to its workers, which run in their
    own sessions), then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None,
               cwd: Path = REPO) -> tuple[int | None, float]:
    """Run ``cmd`` (own process group) with stdout+stderr appended to ``log``; (exit code or None on
    timeout, seconds)."""
    t0 = time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
        try:
            rc: int | None = proc.wait(max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc = None
            fh.write(f"\n[gpu_check] killed after {timeout:.0f} s (time limit)\n")
    return rc, time.monotonic() - t0


class Record:
    """A part's results, written to JSON after every change so that a part killed at its time limit
    still reports what it measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"rows": [], "notes": []}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)

    def row(self, row: dict[str, Any], key: str = "rows") -> None:
        self.data.setdefault(key, []).append(row)
        self.save()
        print(json.dumps(row, default=str), flush=True)

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()
        print(text, flush=True)

    def set(self, **items: Any) -> None:
        self.data.update(items)
        self.save()


def spawn(spec: dict[str, Any], work: Path, timeout: float, launcher: list[str] | None = None) -> dict[str, Any]:
    """Run task ``spec["task"]`` in a child process (``--child``) with ``timeout``; its record, plus
    ``status`` (ok | failed | timed out), ``seconds`` and ``error`` (the log's last lines)."""
    name = spec.get("name") or spec["task"]
    result = work / f"{name}.json"
    log = work / f"{name}.log"
    result.unlink(missing_ok=True)
    spec = {**spec, "json": str(result), "timeout": timeout}
    cmd = [*(launcher or [sys.executable]), str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    rc, seconds = run_logged(cmd, log, timeout)
    try:
        data = json.loads(result.read_text())
    except (OSError, ValueError):
        data = {"rows": [], "notes": []}
    data["seconds"] = round(seconds, 1)
    data["log"] = str(log)
    if rc is None:
        data["status"] = "timed out"
        data["error"] = f"killed at its time limit ({timeout:.0f} s); last log lines:\n{tail(log)}"
    elif rc != 0:
        data["status"] = "failed"
        data["error"] = data.get("error") or f"exit code {rc}; last log lines:\n{tail(log)}"
    else:
        data["status"] = "ok"
    return data


# ------------------------------------------------------------------------------ child tasks


def _inject(spec: dict[str, Any]) -> None:
    """Test hook (--inject PART=raise|hang): prove that a failing or hanging part is reported and
    the others still run."""
    what = spec.get("inject")
    if what == "raise":
        raise RuntimeError("injected failure (--inject)")
    if what == "hang":
        time.sleep(3600)


def task_throughput(spec: dict[str, Any], rec: Record) -> None:
    """Part 1: one child per method (own CUDA context, own peak memory; an OOM or a CUDA error in
    one method leaves the others measured)."""
    _inject(spec)
    work = Path(spec["work"])
    deadline = time.monotonic() + spec["timeout"] - 2.0
    methods = spec["methods"]
    for i, method in enumerate(methods):
        left = deadline - time.monotonic()
        # all the part's time but a reserve for each method still to come: a slow first process (a
        # cold CUDA start) is not killed early, a hung one still leaves the others their turn
        share = left - (len(methods) - i - 1) * float(spec["method_reserve_s"])
        if share < MIN_PART_S:
            rec.row({"method": method, "status": f"skipped: {left:.0f} s left in the part's budget"})
            continue
        sub = {**spec, "task": "throughput_one", "name": f"throughput-{method}", "method": method}
        sub.pop("inject", None)
        out = spawn(sub, work, share)
        rows = out.get("rows") or [{"method": method}]
        row = rows[-1]
        row["status"] = out["status"] if out["status"] != "ok" else row.get("status", "ok")
        if out["status"] != "ok":
            row["error"] = out.get("error", "")
        rec.row(row)


def task_throughput_one(spec: dict[str, Any], rec: Record) -> None:
    """Build ``spec["method"]`` at ViT-B as ``ssl-bench run`` would and time the training step."""
    import torch

    dev = torch.device(spec["device"])
    method = spec["method"]
    batch = int(spec["batch"][method])
    row: dict[str, Any] = {"method": method, "status": "running"}
    for attempt in range(2):
        try:
            row.update(_measure(spec, method, batch, dev))
            break
        except torch.cuda.OutOfMemoryError:
            if attempt:
                raise
            torch.cuda.empty_cache()
            row["note"] = f"batch {batch} ran out of memory; halved"
            batch //= 2
    row["status"] = "ok"
    rec.row(row)


def _attention_ops() -> Any:
    """A dispatch mode that records the attention / softmax ops a step runs, to say whether
    FlopCounterMode (which knows only some attention kernels) counted the attention matmuls."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class AttentionOps(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            name = str(func.overloadpacket)
            if "attention" in name or "softmax" in name:
                self.names.add(name)
            return func(*args, **(kwargs or {}))

    return AttentionOps()


def _measure(spec: dict[str, Any], method: str, batch: int, dev: Any) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ssl_bench.data.base import DatasetInfo, TensorSplit, suggest_patch_size
    from ssl_bench.data.datasets import IMAGENET_MEAN, IMAGENET_STD
    from ssl_bench.registry import get_registry
    from ssl_bench.run import build_method, method_config
    from ssl_bench.train.engine import autocast, make_generator, peak_memory_mb, uses_bf16
    from ssl_bench.train.optim import build_optimizer

    size = int(spec["image_size"])
    registry = get_registry()
    recipe = TABLE4 / f"{method}_vit_b.py"
    info = DatasetInfo("imagenet-like", 1000, 3, size, IMAGENET_MEAN, IMAGENET_STD, suggest_patch_size(size))
    set_items = [*spec.get("set_all", []), *spec.get("set", {}).get(method, [])]
    cfg = method_config(method, registry, user_config=recipe if recipe.is_file() else None,
                        cli={"backbone.name": "vit-b"}, set_items=set_items)
    model = build_method(cfg, registry, info).to(dev).train()
    gen = make_generator(dev, 0, 0)
    g = torch.Generator(device=dev).manual_seed(0)
    prep = torch.randint(0, 256, (int(spec["prepare_images"]), 3, size, size), dtype=torch.uint8, device=dev, generator=g)
    model.prepare(TensorSplit(prep.cpu(), torch.zeros(prep.shape[0], dtype=torch.long)), gen)  # e.g. PCA bases
    del prep
    optimizer, _ = build_optimizer(model, cfg.train, cfg.train.batch_size)  # as the loop builds it
    views = model.train_views() or []
    # the folder loader's crops: uint8 [N, V, C, S, S] on the device; the step does the rest (flip,
    # normalisation, masking / noise, the network) as on ImageNet
    shape = (batch, len(views), 3, views[0].size, views[0].size) if views else (batch, 3, size, size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=dev, generator=g)
    labels = torch.randint(0, 1000, (batch,), device=dev, generator=g)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def forward_backward() -> torch.Tensor:
        with autocast(dev, cfg.train.amp):
            loss = model(images, labels, gen).loss
        loss.backward()
        return loss

    def step() -> None:  # the loop's order: zero_grad, forward + backward, finite check (a host sync), step
        optimizer.zero_grad(set_to_none=True)
        loss = forward_backward()
        if not torch.isfinite(loss.detach().float()):
            raise FloatingPointError(f"{method}: non-finite loss {loss.item()}")
        optimizer.step()
        model.on_train_step_end(0.5, 1)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(int(spec["warmup"])):
        step()
    sync()
    steps = int(spec["steps"])
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    step_s = (time.perf_counter() - t0) / steps
    peak_gib = peak_memory_mb(dev) / 1024  # as the training loop reports it (CPU: max RSS)

    optimizer.zero_grad(set_to_none=True)  # FLOPs of one forward + backward, counted once
    attention = _attention_ops()
    with FlopCounterMode(display=False) as counter, attention:
        forward_backward()
    sync()
    flops = counter.get_total_flops()
    counted = {str(op) for op in counter.get_flop_counts().get("Global", {})}
    sdpa_seen = sorted(n for n in attention.names if "attention" in n and "backward" not in n)
    if sdpa_seen:
        missed = [n for n in sdpa_seen if n not in counted]
        att = "no: " + ", ".join(missed) + " not counted" if missed else "yes (" + ", ".join(sdpa_seen) + ")"
    else:
        att = "yes (as bmm)" if any("bmm" in c for c in counted) else "no attention op seen"
    probe = _probe_rates(model, spec, size, dev, g, sync)
    peak, _ = peak_tflops(spec.get("device_name", ""), spec.get("peak_tflops"))
    achieved = flops / step_s / 1e12
    return {
        "recipe": f"table4/{method}_vit_b.py" if (TABLE4 / f"{method}_vit_b.py").is_file() else f"{method} defaults",
        "batch": batch, "views": len(views) or 1, "input": "x".join(map(str, shape)),
        "amp": "bf16" if uses_bf16(dev, cfg.train.amp) else "fp32",
        "params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "img_s": batch / step_s, "step_ms": 1000 * step_s, "peak_gib": peak_gib,
        "gflop_step": flops / 1e9, "gflop_img": flops / 1e9 / batch, "tflops": achieved,
        "mfu_pct": 100 * achieved / peak if peak else None,
        "attention_counted": att, "steps": f"{spec['warmup']}+{steps}", **probe,
        "optimizer": f"{type(optimizer).__name__} betas={tuple(cfg.train.betas)} wd={cfg.train.weight_decay}",
    }


def _probe_rates(model: Any, spec: dict[str, Any], size: int, dev: Any, g: Any, sync: Callable[[], None]) -> dict[str, Any]:
    """Images/s of ``model.probe_features`` (the frozen encoder the feature extraction and the
    augmented linear probe run, 90 epochs of it in the Table-4 recipes): as ``eval.features`` calls
    it today (no_grad, no autocast: fp32) and under bf16 autocast (what it would give)."""
    import contextlib

    import torch

    model.eval()
    batch, steps = int(spec["probe_batch"]), int(spec["probe_steps"])
    x = torch.randn(batch, 3, size, size, device=dev, generator=g)  # stands in for normalised images
    modes: dict[str, Any] = {"probe_fp32_img_s": contextlib.nullcontext}
    if dev.type == "cuda":
        modes["probe_bf16_img_s"] = lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    out: dict[str, Any] = {}
    with torch.no_grad():
        for key, mode in modes.items():
            with mode():
                for _ in range(2):
                    model.probe_features(x)
                sync()
                t0 = time.perf_counter()
                for _ in range(steps):
                    model.probe_features(x)
                sync()
            out[key] = batch * steps / (time.perf_counter() - t0)
    model.train()
    return out


def _generate_folder(root: Path, images: int, classes: int, widths: tuple[int, int], procs: int) -> float:
    """``data_speed.make_folder`` in ``procs`` processes (chunks merged into one class-folder tree);
    MiB written."""
    from concurrent.futures import ProcessPoolExecutor

    from data_speed import make_folder

    chunks = max(1, min(procs, images))
    per = [images // chunks + (k < images % chunks) for k in range(chunks)]
    subs = [root.parent / f"{root.name}-part{k}" for k in range(chunks)]
    for sub in subs:
        sub.mkdir(parents=True)
    with ProcessPoolExecutor(chunks) as pool:
        list(pool.map(make_folder, subs, per, [classes] * chunks, range(chunks), [widths] * chunks))
    for k, sub in enumerate(subs):
        for f in sub.rglob("*.JPEG"):
            dest = root / f.parent.name
            dest.mkdir(parents=True, exist_ok=True)
            f.rename(dest / f"{k}_{f.name}")
        shutil.rmtree(sub)
    return sum(f.stat().st_size for f in root.rglob("*.JPEG")) / 2**20


def task_data(spec: dict[str, Any], rec: Record) -> None:
    """Part 2: data_speed's pipelines (MAE one view, MoCo v3 two views) with all spare cores."""
    _inject(spec)
    import torch

    from data_speed import MAE, MOCO, Pipeline, _const, _epochs, cpu_description, standard_loader
    from ssl_bench.data.folder import FolderSplit, default_num_workers

    deadline = time.monotonic() + spec["timeout"] - 3.0
    device = torch.device(spec["device"])
    workers = int(spec.get("workers") or default_num_workers())
    batch, repeats = int(spec["data_batch"]), int(spec["repeats"])
    with tempfile.TemporaryDirectory(prefix="ssl-bench-gpu-check-jpeg-") as tmp:
        root = Path(tmp) / "train"
        root.mkdir()
        t0 = time.perf_counter()
        mib = _generate_folder(root, int(spec["images"]), int(spec["classes"]), tuple(spec["widths"]), os.cpu_count() or 1)
        rec.set(cpu=cpu_description(), workers=workers, batch=batch, repeats=repeats,
                folder=f"{spec['images']} generated JPEGs (data_speed.make_folder: q90, {spec['widths'][0]}-{spec['widths'][1]} px "
                       f"wide, aspect 0.6-1.4), {mib:.0f} MiB, generated in {time.perf_counter() - t0:.0f} s")
        decoders = ["torchvision", "pil"] + (["cuda"] if device.type == "cuda" else [])
        cpu = torch.device("cpu")
        for task, kind, views in (("MAE, 1 view", "mae", MAE), ("MoCo v3, 2 views", "moco", MOCO)):
            left = deadline - time.monotonic()
            if left < spec["min_task_s"]:
                rec.note(f"{task}: skipped, {left:.0f} s left in the part's budget")
                continue
            pipes = [Pipeline("standard (ImageFolder + PIL transforms)", _const(standard_loader(root, kind, batch, workers)), cpu)]
            for decoder in decoders:
                split = FolderSplit(str(root), 224, num_workers=workers, decoder=decoder)
                dev = device if decoder == "cuda" else cpu
                g = torch.Generator().manual_seed(0)
                pipes.append(Pipeline(f"ours (decoder={decoder})", _epochs(split, batch, g, dev, views), dev, split))
            for pipe in pipes:
                pipe.warm_up(workers + 1)
            for _ in range(repeats):  # interleaved, best of: other load hits every pipeline alike
                for pipe in pipes:
                    pipe.timed_pass()
            for pipe in pipes:
                rec.row({"task": task, "pipeline": pipe.name, "workers": workers, "img_s": round(pipe.best, 1),
                         "img_cpu_s": round(pipe.best_cpu, 1)})
            del pipes


def _features(n: int, m: int, dim: int, classes: int, device: Any) -> tuple[Any, Any, Any]:
    """Class-structured random features (a centre per class plus noise), so neighbours mostly share
    a label as with real features; on ``device``."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    centres = torch.randn(classes, dim, generator=g, device=device)
    train_y = torch.randint(0, classes, (n,), generator=g, device=device)
    test_y = torch.randint(0, classes, (m,), generator=g, device=device)
    train = centres[train_y] + 1.5 * torch.randn(n, dim, generator=g, device=device)
    test = centres[test_y] + 1.5 * torch.randn(m, dim, generator=g, device=device)
    return train, train_y, test


def task_knn(spec: dict[str, Any], rec: Record) -> None:
    """Part 3: the k-NN evaluator's search on the device, and the same predictions from the CPU."""
    _inject(spec)
    import torch

    from ssl_bench.eval.knn import KNNEvaluator, faiss_available, faiss_gpu_available, knn_predict

    device = torch.device(spec["device"])
    n, m, dim, classes = int(spec["knn_train"]), int(spec["knn_test"]), int(spec["knn_dim"]), int(spec["knn_classes"])
    sub = min(int(spec["knn_subset"]), m)
    ks = (10, 20, 100, 200)
    train, train_y, test = _features(n, m, dim, classes, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    knn_predict(train[:1000], train_y[:1000], test[:100], classes, ks=(10,), backend="torch")  # warm-up (cuBLAS init)
    sync()
    backends = ["torch"] + (["faiss"] if device.type == "cuda" and faiss_gpu_available() else [])
    device_preds: dict[str, dict[int, Any]] = {}
    for backend in backends:
        t0 = time.perf_counter()
        preds = knn_predict(train, train_y, test, classes, ks=ks, backend=backend)
        sync()
        seconds = time.perf_counter() - t0
        device_preds[backend] = {k: v.cpu() for k, v in preds.items()}
        rec.row({"backend": backend, "device": device.type, "n_train": n, "n_test": m, "dim": dim,
                 "seconds": seconds, "queries_s": round(m / seconds)})
    # the evaluator as the runner calls it (backend auto): which backend it picks on this device
    t0 = time.perf_counter()
    result = KNNEvaluator(ks=ks)(train, train_y, test, torch.zeros(m, dtype=torch.long, device=device), classes)
    sync()
    rec.set(evaluator={"backend_used": result.protocol["backend_used"], "seconds": f"{time.perf_counter() - t0:.3g}",
                       "faiss_importable": faiss_available(), "faiss_gpu": faiss_gpu_available()})
    # the CPU backends on the first `sub` queries against the full training set: same predictions?
    train_c, train_yc, test_c = train.cpu(), train_y.cpu(), test[:sub].cpu()
    reference = device_preds["torch"]
    for backend in ["torch"] + (["faiss"] if faiss_available() else []):
        t0 = time.perf_counter()
        preds = knn_predict(train_c, train_yc, test_c, classes, ks=ks, backend=backend)
        seconds = time.perf_counter() - t0
        agree = {k: float((preds[k] == reference[k][:sub]).float().mean()) for k in ks}
        differ = sum(int((preds[k] != reference[k][:sub]).sum()) for k in ks)
        rec.row({"backend": backend, "device": "cpu", "n_train": n, "n_test": sub, "dim": dim, "seconds": seconds,
                 "queries_s": round(sub / seconds), "agreement": f"{min(agree.values()):.5f}",
                 "differing": f"{differ} of {sub * len(ks)} (k={','.join(map(str, ks))})"}, key="cpu_rows")


def _cli_env(spec: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    if spec["dry_run"]:
        env["OMP_NUM_THREADS"] = "1"  # two tiny processes on 2 cores: more threads only contend
    return env


def _leaderboard(log_text: str) -> list[str]:
    """The markdown table ``ssl-bench run`` / ``leaderboard`` prints after its 'Leaderboard:' line."""
    lines = log_text.splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith("Leaderboard:")), default=None)
    if start is None:
        return []
    return [line for line in lines[start + 1:] if line.startswith("|")]


def _epoch_line(log_text: str) -> str:
    found = re.findall(r"epoch \d+/\d+ loss .*", log_text)
    return found[-1].strip() if found else ""


def task_ddp(spec: dict[str, Any], rec: Record) -> None:
    """Part 4: the CLI through torchrun on the device, then a direct 1-rank DDP step check."""
    _inject(spec)
    work = Path(spec["work"])
    deadline = time.monotonic() + spec["timeout"] - 2.0
    out = Path(tempfile.mkdtemp(prefix="ssl-bench-gpu-check-ddp-"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    cmd = [*torchrun, "-m", "ssl_bench.cli", "run", "mae", "--dataset", "digits", "--backbone", "vit-tiny",
           "--epochs", "1", "--device", spec["device"], "--out", str(out), "--no-baselines"]
    if spec["dry_run"]:
        cmd += ["--set", *TINY_RUN_SET]
    log = work / "ddp-cli.log"
    rc, seconds = run_logged(cmd, log, max(deadline - time.monotonic() - 20.0, 5.0), env=_cli_env(spec))
    text = log.read_text(errors="replace")
    board = _leaderboard(text)
    mae = [line for line in board if line.startswith("| mae ")]
    rec.set(cli={"command": " ".join(["torchrun --nproc_per_node 1", *cmd[len(torchrun):]]).replace(str(out), "$TMP"),
                 "exit_code": rc if rc is not None else "timed out", "seconds": round(seconds, 1),
                 "epoch_line": _epoch_line(text), "leaderboard": board[:2] + mae if mae else board})
    shutil.rmtree(out, ignore_errors=True)
    left = deadline - time.monotonic()
    if left < MIN_PART_S:
        rec.note(f"direct DDP step check skipped: {left:.0f} s left in the part's budget")
        return
    sub = {**spec, "task": "ddp_step", "name": "ddp-step"}
    sub.pop("inject", None)
    launcher = [*torchrun[:-1], str(free_port())]
    res = spawn(sub, work, left, launcher=launcher)
    step = res.get("step") or {}
    step["status"] = res["status"]
    if res["status"] != "ok":
        step["error"] = res.get("error", "")
    rec.set(step=step)


def task_ddp_step(spec: dict[str, Any], rec: Record) -> None:
    """Under torchrun: a process group on NCCL (gloo on CPU), MAE wrapped in DDP, three optimiser
    steps beside an unwrapped replica fed the same batches; their weights must agree."""
    import copy

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ssl_bench.data.base import DatasetInfo, suggest_patch_size
    from ssl_bench.registry import get_registry
    from ssl_bench.run import build_method, method_config
    from ssl_bench.train.engine import autocast, make_generator
    from ssl_bench.train.optim import build_optimizer

    cuda = spec["device"] == "cuda"
    backend = "nccl" if cuda else "gloo"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend)
    try:
        registry = get_registry()
        cfg = method_config("mae", registry, cli={"backbone.name": "vit-tiny"}, set_items=spec.get("ddp_set", []))
        info = DatasetInfo("synthetic", 10, 3, 32, (0.5,) * 3, (0.25,) * 3, suggest_patch_size(32))
        model = build_method(cfg, registry, info).to(dev)
        replica = copy.deepcopy(model)
        ddp = DistributedDataParallel(model, device_ids=[local] if cuda else None)
        opt, _ = build_optimizer(model, cfg.train, 64)
        opt_r, _ = build_optimizer(replica, cfg.train, 64)
        images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device=dev)
        labels = torch.zeros(64, dtype=torch.long, device=dev)
        losses = []
        for i in range(3):
            for net, o, out in ((ddp, opt, losses), (replica, opt_r, None)):
                o.zero_grad(set_to_none=True)
                with autocast(dev, cfg.train.amp):
                    loss = net(images, labels, make_generator(dev, 0, i)).loss
                loss.backward()
                o.step()
                if out is not None:
                    out.append(float(loss))
        diff = max(float((a - b).abs().max()) for a, b in zip(model.parameters(), replica.parameters()))
        probe = torch.full((4,), float(dist.get_rank() + 1), device=dev)
        dist.all_reduce(probe)
        nccl = nccl_version() if cuda else None
        rec.set(step={"backend": dist.get_backend(), "world_size": dist.get_world_size(), "device": str(dev),
                      "nccl": nccl, "steps": 3, "losses": [round(x, 4) for x in losses],
                      "max_abs_weight_diff_vs_unwrapped": diff, "all_reduce_ok": bool((probe == dist.get_world_size()).all())})
    finally:
        dist.destroy_process_group()


def task_fashion(spec: dict[str, Any], rec: Record) -> None:
    """Part 5: ``ssl-bench run METHOD`` for each method (one store, so the baselines are run once and
    reused), then ``ssl-bench leaderboard``; a method that fails or times out leaves the others."""
    _inject(spec)
    work = Path(spec["work"])
    deadline = time.monotonic() + spec["timeout"] - 2.0
    out = Path(tempfile.mkdtemp(prefix="ssl-bench-gpu-check-fashion-"))
    base = ["--backbone", "vit-tiny", "--epochs", str(spec["fashion_epochs"]), "--device", spec["device"], "--out", str(out)]
    if spec["dry_run"]:
        data = ["--dataset", "digits"]
    else:
        root = Path(spec["fashion_root"])
        root = root if root.is_absolute() else REPO / root
        if not list(root.glob("train-images-idx3-ubyte*")):
            rec.set(skipped=f"Fashion-MNIST not found in {spec['fashion_root']} (carry it: see benchmarks/GPU.md)")
            return
        data = ["--dataset", "fashion-mnist", "--data-root", str(root)]
    rec.set(command="ssl-bench run METHOD " + " ".join(data + base).replace(str(out), "$TMP").replace(str(REPO) + "/", ""))
    for method in spec["methods"]:
        left = deadline - time.monotonic() - 10.0  # keep time for the leaderboard
        if left < MIN_PART_S:
            rec.row({"method": method, "exit_code": f"skipped: {left + 10:.0f} s left in the part's budget"})
            continue
        extra = [*TINY_RUN_SET, *(TINY_DDM_SET if method == "ddm" else [])] if spec["dry_run"] else []
        cmd = [sys.executable, "-m", "ssl_bench.cli", "run", method, *data, *base, *(["--set", *extra] if extra else [])]
        log = work / f"fashion-{method}.log"
        rc, seconds = run_logged(cmd, log, left, env=_cli_env(spec))
        text = log.read_text(errors="replace")
        rec.row({"method": method, "exit_code": rc if rc is not None else "timed out", "seconds": round(seconds, 1),
                 "epoch_line": _epoch_line(text), "error": "" if rc == 0 else tail(log, 6)})
    log = work / "fashion-leaderboard.log"
    name = "digits" if spec["dry_run"] else "fashion-mnist"
    cmd = [sys.executable, "-m", "ssl_bench.cli", "leaderboard", "--out", str(out), "--dataset", name, "--backbone", "vit-tiny"]
    rc, _ = run_logged(cmd, log, max(deadline - time.monotonic(), 5.0), env=_cli_env(spec))
    text = log.read_text(errors="replace")
    rec.set(leaderboard=[line for line in text.splitlines() if line.startswith("|")] if rc == 0 else [],
            leaderboard_error="" if rc == 0 else tail(log, 6))
    shutil.rmtree(out, ignore_errors=True)


TASKS: dict[str, Callable[[dict[str, Any], Record], None]] = {
    "throughput": task_throughput, "throughput_one": task_throughput_one, "data": task_data, "knn": task_knn,
    "ddp": task_ddp, "ddp_step": task_ddp_step, "fashion": task_fashion,
}


def child_main(spec: dict[str, Any]) -> int:
    rec = Record(Path(spec["json"]))
    rec.save()
    if spec["dry_run"]:
        import torch

        torch.set_num_threads(1)  # the test machine has 2 cores; tiny ops only contend with more
    try:
        TASKS[spec["task"]](spec, rec)
    except BaseException as exc:  # the parent reports it; the other parts still run
        traceback.print_exc()
        rec.set(error=f"{type(exc).__name__}: {exc}"[:2000])
        return 1
    return 0


# --------------------------------------------------------------------------------- reporting


def _status_line(data: dict[str, Any]) -> str:
    line = f"status: {data['status']}"
    if data.get("seconds") is not None:
        line += f" ({data['seconds']} s of {data.get('allotted', 0):.0f} s allowed)"
    return line


def _error_block(data: dict[str, Any]) -> str:
    return f"\n```\n{data['error'].strip()}\n```\n" if data.get("error") else ""


def render_throughput(data: dict[str, Any], ctx: dict[str, Any]) -> str:
    rows = data.get("rows", [])
    cols = [("method", "method"), ("recipe", "method settings"), ("batch", "per-GPU batch"), ("views", "views"),
            ("img_s", "images/s"), ("step_ms", "step (ms)"), ("peak_gib", "peak mem (GiB)"), ("params_m", "trained params (M)"),
            ("gflop_img", "GFLOP/image (fwd+bwd)"), ("tflops", "achieved TFLOP/s"), ("mfu_pct", "MFU (%)"),
            ("attention_counted", "attention matmuls counted"), ("probe_fp32_img_s", "probe features images/s (fp32)"),
            ("probe_bf16_img_s", "probe features images/s (bf16)"), ("status", "status")]
    text = md_table(rows, cols)
    errors = [f"- {r['method']}: {r['error'].strip().splitlines()[-1] if r['error'].strip() else ''}" for r in rows if r.get("error")]
    notes = [r.get("note") for r in rows if r.get("note")]
    first = next((r for r in rows if r.get("optimizer")), {})
    size = ctx["spec"]["image_size"]
    text += "\n\n" + "\n".join([
        "- What: each method built as `ssl-bench run` builds it: `ssl_bench.run.method_config` with "
        "`benchmarks/table4/<method>_vit_b.py` as the user config and `--backbone vit-b`, `ssl_bench.run.build_method` with "
        f"`DatasetInfo(\"imagenet-like\", 1000, 3, {size}, IMAGENET_MEAN, IMAGENET_STD, {16 if size == 224 else 4})`, "
        "then `prepare()` on synthetic images (the PCA bases of ldae / ddm). ddm has no Table-4 recipe: its plugin "
        "defaults at ViT-B (a DiT of ViT-B width, encoder and decoder of 12 blocks each).",
        "- Dry run: the backbone is overridden to width 32, depth 2, 2 heads (patch 4 at 32 px), the MAE decoder to "
        "32 / 1 / 2 and the MoCo v3 heads to 64 / 32 / 64; fp32 on the CPU (autocast is CUDA-only); no peak FLOP/s."
        if ctx["dry_run"] else
        "- ldae is measured at 224 px (196 tokens) although its recipe trains at 256 px (256 tokens): at 256 px its step "
        "costs about 256/196 = 1.31x this in the token-linear parts and (256/196)^2 = 1.71x in the attention scores.",
        "- Step: synthetic uint8 views `[N, V, 3, S, S]` already on the device (what the folder loader hands "
        "the step: the crops are cut by the loader, the flip, normalisation, masking / noise and the networks run "
        "in the step), zero_grad, forward + backward under `train.engine.autocast` (bf16 on CUDA), the loop's "
        "one host sync per step (finite-loss check), `optimizer.step()` (AdamW from `train.optim.build_optimizer`, "
        f"e.g. {first.get('optimizer', 'AdamW')}), `on_train_step_end` (MoCo v3's momentum update). "
        f"Warm-up + timed steps: {first.get('steps', '')}; no torch.compile (the recipes' default).",
        "- MFU = FLOPs of one step / step time / peak. FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one "
        "forward + backward (2 FLOPs per multiply-add of every mm / addmm / bmm / convolution and of the "
        "scaled-dot-product-attention kernels it knows: flash, efficient and cuDNN; elementwise ops, norms, "
        "softmax and the optimizer are not counted). It counts what runs: MoCo v3's momentum-encoder forward and "
        "no-grad target computations are in, backward through the frozen patch projection is not. The column "
        "'attention matmuls counted' says whether the attention kernels this step dispatched are among those it counts.",
        f"- Peak used for MFU: {ctx['peak_text']}.",
        "- images/s is per GPU; an 8-GPU node runs 8x this at the same per-GPU batch (plus the all-reduce).",
        f"- probe features: `model.probe_features` (eval mode, no_grad) on a batch of {ctx['spec']['probe_batch']} "
        "normalised images: what the feature extraction and the augmented linear probe (90 epochs of encoder passes in "
        "the Table-4 recipes) run. fp32 is how `ssl_bench.eval.features` calls it today (no autocast); bf16 is the "
        "same under bf16 autocast.",
        *[f"- {n}" for n in notes], *errors,
    ])
    return text


def render_data(data: dict[str, Any], ctx: dict[str, Any]) -> str:
    rows = data.get("rows", [])
    if not rows:
        return "no pipeline measured" + ("; " + "; ".join(data.get("notes", [])) if data.get("notes") else "")
    std = {r["task"]: r for r in rows if r["pipeline"].startswith("standard")}
    need = ctx.get("mae_img_s")
    for r in rows:
        s = std.get(r["task"])
        r["vs_std"] = f"{r['img_s'] / s['img_s']:.2f}x" if s and s["img_s"] else ""
        if r["task"].startswith("MAE") and need:
            r["feeds"] = f"{'yes' if r['img_s'] >= need else 'no'} ({r['img_s'] / need:.2f}x)"
            if "cuda" not in r["pipeline"]:
                r["cores"] = round(need / max(r["img_cpu_s"], 1e-9), 1)
    cols = [("task", "task"), ("pipeline", "pipeline"), ("workers", "workers"), ("img_s", "images/s"),
            ("img_cpu_s", "images per CPU-second"), ("vs_std", "vs standard"),
            ("feeds", "feeds MAE ViT-B (delivered / needed)"), ("cores", "cores needed for MAE ViT-B")]
    text = md_table(rows, cols)
    need_text = (f"{need:,.0f} images/s, the MAE training speed measured in section 1 on this device"
                 if need else "unknown (section 1 has no MAE number)")
    text += "\n\n" + "\n".join([
        f"- Data: {data.get('folder', '')}; CPU: {data.get('cpu', '')}; batch {data.get('batch')}, "
        f"{data.get('workers')} DataLoader worker(s) per pipeline (one per spare core, except in the dry run), best of {data.get('repeats')} interleaved passes "
        "after untimed warm-up batches.",
        "- Pipelines (benchmarks/data_speed.py): standard = torchvision `ImageFolder` + the papers' PIL transforms "
        "(MAE: RandomResizedCrop(224, (0.2, 1), bicubic) + flip; MoCo v3: RandomResizedCrop(224, (0.08, 1)) + flip, twice); "
        "ours = `FolderSplit.batches(views=...)` with each decoder (cuda: workers read the bytes, nvJPEG decodes on the GPU, "
        "so its CPU-second figure leaves the GPU's share out).",
        f"- Needed: {need_text}. 'cores needed' = needed / images per CPU-second: the CPU cores one GPU needs "
        "for MAE's one view at that speed (MoCo v3 decodes once and cuts two views, and trains slower).",
        *[f"- {n}" for n in data.get("notes", [])],
    ])
    return text


def render_knn(data: dict[str, Any], ctx: dict[str, Any]) -> str:
    rows = data.get("rows", []) + data.get("cpu_rows", [])
    cols = [("backend", "backend"), ("device", "device"), ("n_train", "N train"), ("n_test", "queries"), ("dim", "dim"),
            ("seconds", "seconds"), ("queries_s", "queries/s"), ("agreement", "agreement with the device's torch predictions"),
            ("differing", "differing predictions")]
    text = md_table(rows, cols)
    ev = data.get("evaluator") or {}
    spec = ctx["spec"]
    text += "\n\n" + "\n".join([
        f"- Features: {spec['knn_train']:,} train / {spec['knn_test']:,} test x {spec['knn_dim']}, {spec['knn_classes']} classes, "
        "a random centre per class plus noise; `ssl_bench.eval.knn.knn_predict` with k in (10, 20, 100, 200) "
        "(one exact search with k = 200, then DINO's weighted vote per k); times include normalisation, search and vote, "
        "after a small warm-up call.",
        f"- CPU rows: the first {min(spec['knn_subset'], spec['knn_test']):,} queries against the full training set; "
        "agreement = the lowest over the four k of the share of predictions equal to the device's.",
        f"- The evaluator as the runner calls it (backend auto) used `{ev.get('backend_used', '?')}` "
        f"({ev.get('seconds', '?')} s); faiss importable: {ev.get('faiss_importable')}, faiss-gpu: {ev.get('faiss_gpu')}"
        + ("" if ev.get("faiss_gpu") else " (faiss-gpu was not carried: see benchmarks/GPU.md)") + ".",
    ])
    return text


def render_ddp(data: dict[str, Any], ctx: dict[str, Any]) -> str:
    cli = data.get("cli") or {}
    step = data.get("step") or {}
    lines = [
        f"- CLI: `{cli.get('command', '')}`",
        f"- exit code: {cli.get('exit_code', '')}, {cli.get('seconds', '')} s; last epoch line: `{cli.get('epoch_line', '')}`",
        "- With one process torchrun sets WORLD_SIZE=1, and `ssl_bench.distributed.init_distributed` then runs a "
        "plain single process (no process group, no DDP wrapper): this run checks the torchrun launch, CUDA training "
        "and the evaluation. The process group and the DDP wrapper are checked by the direct step below.",
        "",
        *(cli.get("leaderboard") or ["(no leaderboard printed)"]),
        "",
    ]
    if step:
        lines += [
            f"- Direct DDP step (torchrun, 1 process, {step.get('status')}): backend {step.get('backend')}, world size "
            f"{step.get('world_size')}, device {step.get('device')}, NCCL {step.get('nccl') or 'n/a'}; MAE vit-tiny on 32 px "
            f"synthetic batches wrapped in DistributedDataParallel, {step.get('steps')} AdamW steps beside an unwrapped "
            f"replica: losses {step.get('losses')}, max |weight difference| {step.get('max_abs_weight_diff_vs_unwrapped')}, "
            f"all_reduce correct: {step.get('all_reduce_ok')}.",
        ]
        if step.get("error"):
            lines.append(f"\n```\n{step['error'].strip()}\n```")
    lines += [f"- {n}" for n in data.get("notes", [])]
    return "\n".join(lines)


def render_fashion(data: dict[str, Any], ctx: dict[str, Any]) -> str:
    if data.get("skipped"):
        return f"skipped: {data['skipped']}"
    rows = data.get("rows", [])
    text = f"- Command per method: `{data.get('command', '')}` (one results store; the pixels and random-init " \
           "baselines run with the first method and are reused; ldae and ddm add their own untrained network)\n\n"
    text += md_table(rows, [("method", "method"), ("exit_code", "exit code"), ("seconds", "seconds"), ("epoch_line", "last epoch line")])
    for r in rows:
        if r.get("error"):
            text += f"\n\n{r['method']}:\n```\n{r['error'].strip()}\n```"
    board = data.get("leaderboard") or []
    text += "\n\nLeaderboard (`ssl-bench leaderboard`):\n\n" + ("\n".join(board) if board else
                                                             f"(none)\n```\n{data.get('leaderboard_error', '')}\n```")
    return text


RENDER = {"throughput": render_throughput, "data": render_data, "knn": render_knn, "ddp": render_ddp, "fashion": render_fashion}


def render(results: dict[str, dict[str, Any]], ctx: dict[str, Any]) -> str:
    titles = DRY_TITLES if ctx["dry_run"] else TITLES
    out = [f"# GPU check{' (dry run)' if ctx['dry_run'] else ''}", ""]
    out += [f"- {k}: {v}" for k, v in ctx["header"].items()]
    budget = ", ".join(f"{p} {results[p].get('seconds', 0)}/{results[p].get('allotted', 0):.0f} s" for p in PARTS
                       if not results[p]["status"].startswith("skipped: not selected"))
    out += [f"- time per part (used / allowed): {budget}; total {ctx['total_s']:.0f} s", ""]
    for part in PARTS:
        data = results[part]
        out += [f"## {titles[part]}", "", _status_line(data), ""]
        if data["status"].startswith("skipped"):
            continue
        if not any(data.get(k) for k in ("rows", "cpu_rows", "cli", "step", "leaderboard", "folder", "skipped")):
            out.append(_error_block(data) or "(nothing recorded)")  # died before it measured anything
            continue
        try:
            out.append(RENDER[part](data, ctx))
        except Exception as exc:  # a rendering bug must not lose the other sections
            out.append(f"(could not render this section: {exc!r}; raw: `{json.dumps(data, default=str)[:1500]}`)")
        out.append(_error_block(data))
    return "\n".join(out).rstrip() + "\n"


# -------------------------------------------------------------------------------------- main


def header(args: argparse.Namespace, device_name: str, peak_text: str) -> dict[str, str]:
    import torch

    from data_speed import cpu_description

    versions = f"torch {torch.__version__}"
    if torch.cuda.is_available():
        versions += f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        try:
            versions += ", NCCL " + nccl_version()
        except Exception:  # a build without NCCL
            pass
    try:
        import torchvision

        versions += f", torchvision {torchvision.__version__}"
    except ImportError:
        pass
    return {
        "date": dt.date.today().isoformat(),
        "device": device_name,
        "CPU": cpu_description(),
        "software": f"Python {platform.python_version()}, {versions}",
        "command": "bash benchmarks/gpu_check.sh " + " ".join(sys.argv[1:]) if os.environ.get("SSL_BENCH_GPU_CHECK_WRAPPER")
        else "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
        "peak for MFU": peak_text,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the same code paths in about a minute")
    p.add_argument("--out", help="folder for the results file (default: benchmarks/results/, a new temp dir with --dry-run)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--budget", type=float, help="seconds for all parts (default 410; dry run 400)")
    p.add_argument("--methods", default=",".join(METHOD_NAMES))
    p.add_argument("--batch", default="", help="per-GPU batch per method, e.g. mae=512,mocov3=256 (default "
                   + ",".join(f"{k}={v}" for k, v in DEFAULT_BATCH.items()) + ")")
    p.add_argument("--steps", type=int, help="timed steps per method (default 10; dry run 2)")
    p.add_argument("--warmup", type=int, help="untimed steps before timing (default 3; dry run 1)")
    p.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s of this device for MFU (else the built-in table)")
    p.add_argument("--images", type=int, help="JPEGs generated for the data part (default 5000; dry run 24)")
    p.add_argument("--data-root", default=".data/fashion-mnist", help="the carried Fashion-MNIST idx files (relative to the repo)")
    p.add_argument("--fashion-epochs", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the working folder (logs, part JSON)")
    p.add_argument("--inject", default="", help=argparse.SUPPRESS)  # tests: PART=raise|hang
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_spec(args: argparse.Namespace, work: Path, device: str, device_name: str) -> dict[str, Any]:
    dry = args.dry_run
    batch = dict(DEFAULT_BATCH if not dry else {m: 4 for m in METHOD_NAMES})
    for item in filter(None, args.batch.split(",")):
        key, _, value = item.partition("=")
        batch[key.strip()] = int(value)
    tiny_backbone = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "backbone.patch_size=None"]
    return {
        "dry_run": dry, "device": device, "device_name": device_name, "work": str(work), "peak_tflops": args.peak_tflops,
        "methods": [m for m in args.methods.split(",") if m],
        # part 1
        "image_size": 32 if dry else 224, "batch": batch, "steps": args.steps or (2 if dry else 10),
        "warmup": args.warmup if args.warmup is not None else (1 if dry else 3), "prepare_images": 16 if dry else 256,
        "probe_batch": 4 if dry else 256, "probe_steps": 1 if dry else 5, "method_reserve_s": 10.0 if dry else 15.0,
        "set_all": tiny_backbone if dry else [],
        "set": {"mae": ["method.decoder.embed_dim=32", "method.decoder.depth=1", "method.decoder.num_heads=2"],
                "mocov3": ["method.proj_hidden=64", "method.proj_dim=32", "method.pred_hidden=64"]} if dry else {},
        # part 2
        "images": args.images or (24 if dry else 5000), "classes": 4 if dry else 1000, "widths": [80, 120] if dry else [400, 600],
        "data_batch": 8 if dry else 64, "repeats": 1 if dry else 2,
        "workers": 1 if dry else None, "min_task_s": 3.0 if dry else 15.0,
        # part 3
        "knn_train": 400 if dry else 100_000, "knn_test": 100 if dry else 10_000, "knn_dim": 32 if dry else 768,
        "knn_classes": 10 if dry else 1000, "knn_subset": 50 if dry else 2000,
        # part 4
        "ddp_set": tiny_backbone[:3] if dry else [],
        # part 5
        "fashion_root": args.data_root, "fashion_epochs": args.fashion_epochs,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    import torch

    if args.dry_run:
        device, device_name = "cpu", f"CPU (dry run, {platform.machine()})"
    elif torch.cuda.is_available():
        device, device_name = "cuda", torch.cuda.get_device_name(0)
    else:
        print("gpu_check: no CUDA device here; use --dry-run for the CPU check", file=sys.stderr)
        return 2
    selected = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(selected) - set(PARTS))
    if unknown:
        print(f"gpu_check: unknown part(s) {unknown}; parts are {', '.join(PARTS)}", file=sys.stderr)
        return 2
    inject = dict(item.split("=", 1) for item in filter(None, args.inject.split(",")))
    peak, peak_text = peak_tflops(device_name, args.peak_tflops) if device == "cuda" else (args.peak_tflops, (
        f"--peak-tflops {args.peak_tflops:g}" if args.peak_tflops else "none on CPU (dry run): MFU left blank"))
    out_dir = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="ssl-bench-gpu-check-dry-")) if args.dry_run else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ssl-bench-gpu-check-"))
    spec = build_spec(args, work, device, device_name)
    allot = {p: ALLOTMENT[p] if p in selected else 0.0 for p in PARTS}
    total = args.budget or (400.0 if args.dry_run else float(sum(ALLOTMENT.values())))
    scale = total / max(sum(allot.values()), 1e-9)
    t_start = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    ctx: dict[str, Any] = {"dry_run": args.dry_run, "spec": spec, "peak_text": peak_text}
    cumulative = 0.0
    for part in PARTS:
        cumulative += allot[part] * scale
        if part not in selected:
            results[part] = {"status": "skipped: not selected (--parts)", "allotted": 0}
            continue
        left = cumulative - (time.monotonic() - t_start)
        if left < MIN_PART_S:
            results[part] = {"status": f"skipped: over budget ({left:.0f} s left of its allotment)", "allotted": max(left, 0)}
            continue
        print(f"== gpu_check: {part} ({left:.0f} s allowed)", flush=True)
        part_spec = {**spec, "task": part, "name": part}
        if part == "data":
            mae = next((r for r in results.get("throughput", {}).get("rows", []) if r.get("method") == "mae" and r.get("img_s")), None)
            ctx["mae_img_s"] = part_spec["mae_img_s"] = mae["img_s"] if mae else None
        if part in inject:
            part_spec["inject"] = inject[part]
        results[part] = spawn(part_spec, work, left)
        results[part]["allotted"] = left
        print(f"== gpu_check: {part}: {results[part]['status']} in {results[part]['seconds']} s", flush=True)
    ctx["total_s"] = time.monotonic() - t_start
    ctx["header"] = header(args, device_name, peak_text)
    text = render(results, ctx)
    name = f"gpu_check-{dt.date.today().isoformat()}-{'cpu-dry-run' if args.dry_run else slug(device_name)}.md"
    path = out_dir / name
    path.write_text(text)
    print(text)
    print(f"gpu_check: wrote {path}")
    if os.environ.get("OUT"):
        dest = Path(os.environ["OUT"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / name)
        (dest / "gpu_check-logs").mkdir(exist_ok=True)
        for f in work.glob("*"):
            if f.suffix in (".log", ".json"):
                shutil.copy(f, dest / "gpu_check-logs" / f.name)
        print(f"gpu_check: copied to {dest}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"gpu_check: working folder kept: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
