"""Per-epoch training metrics: averaging ``StepOutput.logs`` and writing them out.

Why a separate accumulator: a method's logs (loss, mse, vb, momentum, ...) arrive every micro-batch,
mostly as 0-d device tensors. Reading them on the host each step would add a GPU sync per step, so
tensor values are summed on their device and only read once per epoch; plain floats are summed on
the host. Micro-batches of one optimiser step are averaged (each adds value / accum_iter, as the
loss does), then the epoch's optimiser steps are averaged, then the ranks (one all-reduce per epoch).

Where the numbers go (rank 0 only): the epoch line of ``train.log`` (:class:`RunLogHandler`), one
JSON object per epoch in ``RUN_DIR/metrics.jsonl`` and, when the ``tensorboard`` package is
importable, scalars under ``RUN_DIR/tb/``. A resumed run first drops the jsonl lines of epochs its
checkpoint does not contain (training that was thrown away and is about to be redone), so the file
always ends up with one line per epoch, exactly as an uninterrupted run writes it.

Both files are logs, read back only to be continued: a damaged line in ``metrics.jsonl`` (binary
garbage, a line cut short by a crash) is dropped with one warning when a resume rewrites the file,
never an error. A full disk while writing either file is one :class:`~ssl_bench.files.DiskWriteError`
line (the CLI's ``ssl-bench: error: ...``), never a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssl_bench.distributed import DistContext
from ssl_bench.files import atomic_write_text, write_error

log = logging.getLogger("ssl_bench.train")

METRICS_NAME = "metrics.jsonl"
TB_DIR = "tb"
#: keys the loop writes itself; a method log with one of these names (other than "loss", which is
#: the same quantity) is written as "method.<key>" so it can never overwrite them
RESERVED = ("epoch", "step", "lr", "time_s", "img_s")


class EpochLogs:
    """Running sums of one epoch's method logs on one rank."""

    def __init__(self) -> None:
        self.device_sums: dict[str, Tensor] = {}  # summed on the device the value came from
        self.host_sums: dict[str, float] = {}  # python floats
        self.counts: dict[str, float] = {}  # optimiser steps the key was seen in (1/accum per micro-batch)

    def add(self, logs: dict[str, Any], accum: int) -> None:
        """Add one micro-batch's logs, weighted 1/accum so a step's micro-batches average."""
        for key, value in logs.items():
            if isinstance(value, Tensor):
                if value.numel() != 1:
                    raise ValueError(f"StepOutput.logs[{key!r}] has shape {tuple(value.shape)}; log 0-d tensors or floats")
                v = value.detach().reshape(()).float() / accum
                prev = self.device_sums.get(key)
                self.device_sums[key] = v if prev is None else prev + v
            else:
                self.host_sums[key] = self.host_sums.get(key, 0.0) + float(value) / accum
            self.counts[key] = self.counts.get(key, 0.0) + 1.0 / accum

    def means(self, ctx: DistContext, device: torch.device) -> dict[str, float]:
        """Epoch means, averaged over ranks: one host sync (and one all-reduce under DDP).

        Every rank must call this. Under DDP the ranks first agree on the union of keys (one small
        all_gather_object per epoch), so a key one rank did not log cannot hang the collective.
        """
        keys = sorted(set(self.device_sums) | set(self.host_sums))
        if ctx.distributed:
            gathered: list[list[str] | None] = [None] * ctx.world_size
            torch.distributed.all_gather_object(gathered, keys)
            keys = sorted({k for ks in gathered for k in (ks or [])})
        if not keys:
            return {}
        sums = torch.zeros(len(keys), dtype=torch.float64, device=device)
        counts = torch.zeros(len(keys), dtype=torch.float64, device=device)
        for i, key in enumerate(keys):
            if key in self.device_sums:
                sums[i] += self.device_sums[key].to(device=device, dtype=torch.float64)
            sums[i] += self.host_sums.get(key, 0.0)
            counts[i] = self.counts.get(key, 0.0)
        if ctx.distributed:
            both = torch.stack([sums, counts])
            torch.distributed.all_reduce(both)
            sums, counts = both[0], both[1]
        values = (sums / counts.clamp_min(1e-12)).tolist()
        return {k: v for k, v in zip(keys, values)}

    def state_dict(self) -> dict[str, Any]:
        """What a mid-epoch checkpoint carries so the resumed epoch averages the same numbers."""
        return {
            "device_sums": {k: v.detach().cpu() for k, v in self.device_sums.items()},
            "host_sums": dict(self.host_sums),
            "counts": dict(self.counts),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.device_sums = {k: v.to(device) for k, v in state.get("device_sums", {}).items()}
        self.host_sums = {k: float(v) for k, v in state.get("host_sums", {}).items()}
        self.counts = {k: float(v) for k, v in state.get("counts", {}).items()}


def epoch_record(epoch: int, step: int, lr: float, time_s: float, img_s: float, loss: float, logs: dict[str, float]) -> dict[str, Any]:
    """One metrics.jsonl object: the loop's keys first, then the method's (``loss`` is the loop's)."""
    record: dict[str, Any] = {"epoch": epoch, "step": step, "lr": lr, "time_s": time_s, "img_s": img_s, "loss": loss}
    for key, value in logs.items():
        if key == "loss":
            continue
        record[f"method.{key}" if key in RESERVED else key] = value
    return record


def format_logs(logs: dict[str, float]) -> str:
    """The method's averaged logs for the one-line epoch summary (``loss`` is already on it)."""
    return "".join(f" {k} {v:.4g}" for k, v in logs.items() if k != "loss")


def _json_value(v: Any) -> Any:
    """NaN/inf are not JSON: write them as null so every line stays parseable."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


class MetricsWriter:
    """Rank 0's writer of metrics.jsonl and (when importable) TensorBoard scalars."""

    def __init__(self, run_dir: Path, resume_epoch: int | None, resume_step: int) -> None:
        """``resume_epoch``: epochs the resumed checkpoint contains (None: a fresh run, which starts
        a fresh file). Lines for later epochs are dropped; TensorBoard hides events after
        ``resume_step`` (the checkpoint's global step, which is also the step of the last kept
        epoch's scalars when it was written at an epoch's end), for the same reason."""
        self.path = Path(run_dir) / METRICS_NAME
        if resume_epoch is None:
            self.path.unlink(missing_ok=True)
        elif self.path.is_file():
            self._truncate(resume_epoch)
        self.tb = _summary_writer(Path(run_dir) / TB_DIR, resume_step + 1 if resume_epoch is not None else None)

    def _truncate(self, keep_epochs: int) -> None:
        """Rewrite the file with the lines of the first ``keep_epochs`` epochs; lines that are not
        epoch records (binary garbage, a line cut short by a crash mid-write) go, with one warning."""
        kept, damaged = [], 0
        for raw in self.path.read_bytes().splitlines():
            try:
                line = raw.decode("utf-8")
                rec = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                damaged += 1
                continue
            if not (isinstance(rec, dict) and isinstance(rec.get("epoch"), int)):
                damaged += 1
            elif rec["epoch"] <= keep_epochs:
                kept.append(line)
        if damaged:
            log.warning(
                "%s: dropped %d damaged line(s) (not JSON epoch records: garbage, or cut short by a crash); "
                "rewriting it with the %d epoch line(s) the checkpoint covers", self.path, damaged, len(kept),
            )
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
        except OSError as exc:  # a line cut short here is dropped by the resume (see _truncate)
            raise write_error(self.path, exc, "its earlier lines and the last checkpoint are kept") from None
        if self.tb is not None:
            for key, value in record.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"train/{key}", value, global_step=record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _summary_writer(log_dir: Path, purge_step: int | None) -> Any:
    """A TensorBoard SummaryWriter, or None when the optional ``tensorboard`` package is missing
    (then the scalars are simply not written: metrics.jsonl has the same numbers)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class RunLogHandler(logging.FileHandler):
    """The run's ``train.log``: a FileHandler whose failed write (a full disk, a read-only remount)
    raises one :class:`~ssl_bench.files.DiskWriteError` line from the logging call.

    logging's default is to print ``--- Logging error ---`` with a traceback on stderr for every
    record that cannot be written, and go on without the log. After the first failure this handler
    writes nothing more (so the cleanup that follows, which logs too, does not fail again).
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self.failed = True
        raise write_error(Path(self.baseFilename), exc, "the lines before it are kept") from None

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # flushing what the failed write left in the buffer: already reported
            if not self.failed:
                raise
