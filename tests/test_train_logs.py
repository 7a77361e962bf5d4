"""Per-epoch metrics: StepOutput.logs averaged over the epoch (micro-batches as the loss), written
to the train.log line, RUN_DIR/metrics.jsonl and (when tensorboard is installed) RUN_DIR/tb/."""

from __future__ import annotations

import errno
import json
import logging
import sys
import time

import pytest
import torch
from torch import Tensor

from ssl_bench.components.base import StepOutput
from ssl_bench.files import DiskWriteError
from ssl_bench.train import epoch_log
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_bench.train.epoch_log import EpochLogs, MetricsWriter, RunLogHandler
from ssl_bench.train.loop import train
from ssl_bench.train.resume import load_for_resume
from tests.test_train_loop import CPU, MeanFeatureLoss, make_run


class CountingLogs(MeanFeatureLoss):
    """Logs the index of each training_step call, as a device tensor (``calls``), as a float
    (``calls_f``) and under a name the loop reserves (``lr``), so every average is known exactly."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        out = super().training_step(images, labels, generator)
        i = self.calls
        self.calls += 1
        return StepOutput(out.loss, {"loss": out.loss.detach(), "calls": torch.tensor(float(i)), "calls_f": float(i), "lr": 7.0})


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("accum", [1, 2])
def test_logs_are_epoch_means_in_jsonl_and_train_log(tmp_path, caplog, accum: int) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, CountingLogs, "train.epochs=2", f"train.accum_iter={accum}")
    with caplog.at_level(logging.INFO, logger="ssl_bench.train"):
        result = train(method, split, cfg, run_dir, CPU)
    recs = _records(run_dir)
    assert [r["epoch"] for r in recs] == [1, 2] and [r["step"] for r in recs] == [3, 6]
    calls_per_epoch = 3 * accum  # 3 optimiser steps of `accum` micro-batches
    for e, rec in enumerate(recs):
        expected = e * calls_per_epoch + (calls_per_epoch - 1) / 2  # mean of this epoch's call indices
        assert rec["calls"] == pytest.approx(expected) and rec["calls_f"] == pytest.approx(expected)
        assert set(rec) == {"epoch", "step", "lr", "time_s", "img_s", "loss", "calls", "calls_f", "method.lr"}
        assert rec["method.lr"] == 7.0 and rec["lr"] != 7.0  # a method log never overwrites the loop's keys
        assert rec["time_s"] > 0 and rec["img_s"] > 0
    assert recs[-1]["loss"] == pytest.approx(result.final_loss, rel=1e-6)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2 and f"calls {recs[1]['calls']:.4g}" in lines[1] and "img/s" in lines[1]


def test_micro_batches_of_a_step_average_as_the_loss_does() -> None:
    logs = EpochLogs()
    for step_values in ([1.0, 3.0], [5.0, 7.0]):  # two steps of two micro-batches
        for v in step_values:
            logs.add({"t": torch.tensor(v), "f": v}, accum=2)
    assert logs.means(CPU, torch.device("cpu")) == {"f": 4.0, "t": 4.0}


def test_a_key_missing_from_some_steps_is_averaged_over_the_steps_that_have_it() -> None:
    logs = EpochLogs()
    logs.add({"a": 1.0, "b": torch.tensor(10.0)}, accum=1)
    logs.add({"a": 3.0}, accum=1)
    assert logs.means(CPU, torch.device("cpu")) == {"a": 2.0, "b": 10.0}


def test_a_non_scalar_log_is_refused() -> None:
    with pytest.raises(ValueError, match=r"logs\['v'\] has shape \(2,\); log 0-d tensors or floats"):
        EpochLogs().add({"v": torch.zeros(2)}, accum=1)


def test_without_tensorboard_nothing_is_written_and_training_works(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    method, split, cfg, run_dir = make_run(tmp_path, CountingLogs)
    train(method, split, cfg, run_dir, CPU)
    assert not (run_dir / "tb").exists()
    assert len(_records(run_dir)) == 2


def test_with_tensorboard_scalars_are_written(tmp_path) -> None:
    # tensorboard is in the [dev] extra: missing, this test fails rather than skips, so CI runs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    method, split, cfg, run_dir = make_run(tmp_path, CountingLogs)
    train(method, split, cfg, run_dir, CPU)
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    assert {"train/loss", "train/calls", "train/lr"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/calls")] == [3, 6]


def test_nan_in_a_log_is_written_as_null(tmp_path) -> None:
    writer = MetricsWriter(tmp_path, None, 0)
    writer.write({"epoch": 1, "step": 3, "loss": float("nan")})
    writer.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"epoch": 1, "step": 3, "loss": None}


def _killed_in_epoch_4_then_resumed(tmp_path, resume_in_a_later_second: bool = False):
    """(full_dir, run_dir): checkpoint_every=2, killed in epoch 4 (the file has epochs 1-3, the
    checkpoint 2), then resumed; and the uninterrupted run for comparison.

    ``resume_in_a_later_second``: wait for the next whole second before the resume, as any real
    resume (a new process, seconds later) does. TensorBoard reads a folder's event files in name
    order, ``events.out.tfevents.<whole seconds>.<host>.<pid>.<writer count>``; within one second and
    one process the writer count decides, as text ("10" < "9")."""
    full_method, split, cfg, full_dir = make_run(tmp_path, CountingLogs, "train.epochs=4", "train.checkpoint_every=2")
    train(full_method, split, cfg, full_dir, CPU)

    method, split, cfg, run_dir = make_run(tmp_path, CountingLogs, "train.epochs=4", "train.checkpoint_every=2")
    real_step = CountingLogs.training_step

    def dying(self, *args, **kwargs):
        if self.calls == 3 * 3 + 1:  # the second step of epoch 4
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CountingLogs, "training_step", dying)
        with pytest.raises(KeyboardInterrupt):
            train(method, split, cfg, run_dir, CPU)
    assert [r["epoch"] for r in _records(run_dir)] == [1, 2, 3]
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 4, "st')  # a line cut short by the kill

    if resume_in_a_later_second:
        time.sleep(1.01 - time.time() % 1)
    resumed, _, _, _ = make_run(tmp_path, CountingLogs, "train.epochs=4", "train.checkpoint_every=2")
    resumed.calls = 2 * 3  # the call counter is not model state: start it where epoch 3 starts
    train(resumed, split, cfg, run_dir, CPU, resume_state=load_for_resume(resumed, run_dir))
    return full_dir, run_dir


def test_resume_drops_epochs_the_checkpoint_does_not_have(tmp_path) -> None:
    """The file ends with one line per epoch, as the uninterrupted run's (epoch 3, trained twice,
    is there once: its second run)."""
    full_dir, run_dir = _killed_in_epoch_4_then_resumed(tmp_path)

    def untimed(recs: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("time_s", "img_s")} for r in recs]

    assert untimed(_records(run_dir)) == untimed(_records(full_dir))
    assert [r["epoch"] for r in _records(run_dir)] == [1, 2, 3, 4]


def test_resume_hides_the_redone_epochs_in_tensorboard(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = _killed_in_epoch_4_then_resumed(tmp_path, resume_in_a_later_second=True)
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/calls")] == [3, 6, 9, 12]


# ------------------------------------------------------------------ damaged logs, full disks


def test_binary_garbage_in_metrics_jsonl_is_dropped_with_one_warning(tmp_path, caplog) -> None:
    """metrics.jsonl is a log: garbage in it must not stop a resume (it raised UnicodeDecodeError)."""
    good = ['{"epoch": 1, "step": 3, "loss": 0.5}', '{"epoch": 2, "step": 6, "loss": 0.25}']
    later = '{"epoch": 3, "step": 9, "loss": 0.125}'  # after the checkpoint: dropped without a word
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(
        good[0].encode() + b"\n\xff\xfe\x00garbage\x80\n" + good[1].encode() + b"\n[1, 2]\n" + later.encode() + b"\n{\"epoch\": 4, \"st"
    )
    with caplog.at_level(logging.WARNING, logger="ssl_bench.train"):
        MetricsWriter(tmp_path, 2, 6).close()
    assert path.read_text(encoding="utf-8") == good[0] + "\n" + good[1] + "\n"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped 3 damaged line(s)" in warnings[0] and str(path) in warnings[0]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_resume_with_garbage_in_metrics_jsonl_trains_on(tmp_path) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, CountingLogs, "train.epochs=1")
    train(method, split, cfg, run_dir, CPU)
    with (run_dir / "metrics.jsonl").open("ab") as f:
        f.write(b"\x89PNG\r\n\x1a\n\x00\xff\n")
    cfg.train.epochs = 2
    resumed, _, _, _ = make_run(tmp_path, CountingLogs, "train.epochs=2")
    train(resumed, split, cfg, run_dir, CPU, resume_state=load_for_resume(resumed, run_dir))
    assert [r["epoch"] for r in _records(run_dir)] == [1, 2]


class _FullDisk:
    """A file whose every write fails as on a full disk."""

    def write(self, data: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_disk_full_writing_metrics_jsonl_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, MeanFeatureLoss, "train.epochs=3")
    real_open = open
    calls = {"n": 0}

    def open_full_after_one(path, mode="r", **kwargs):
        calls["n"] += 1
        return real_open(path, mode, **kwargs) if calls["n"] == 1 else _FullDisk()

    monkeypatch.setattr(epoch_log, "open", open_full_after_one, raising=False)
    with pytest.raises(DiskWriteError) as info:
        train(method, split, cfg, run_dir, CPU)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"could not write {run_dir / 'metrics.jsonl'}: no space left on device: free space or use --out elsewhere")
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch"] == 1  # epoch 2's line failed before its checkpoint
    assert [r["epoch"] for r in _records(run_dir)] == [1]


def test_disk_full_writing_train_log_is_one_line_not_a_logging_traceback(tmp_path, capsys) -> None:
    logger = logging.getLogger("ssl_bench.test_run_log")
    logger.propagate = False
    handler = RunLogHandler(tmp_path / "train.log")
    logger.addHandler(handler)
    try:
        logger.warning("epoch 1/2 loss 0.5")
        handler.setStream(_FullDisk())  # the disk fills up
        with pytest.raises(DiskWriteError, match=r"train\.log: no space left on device: free space or use --out elsewhere"):
            logger.warning("epoch 2/2 loss 0.25")
        logger.warning("cleanup after the failure")  # not written, and no second error
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert "Logging error" not in capsys.readouterr().err
    assert (tmp_path / "train.log").read_text() == "epoch 1/2 loss 0.5\n"
