"""Per-epoch metrics: StepOutput.logs averaged over the epoch (micro-batches as the loss), written
to the train.log line, RUN_DIR/metrics.jsonl and (when tensorboard is installed) RUN_DIR/tb/."""

from __future__ import annotations

import json
import logging
import sys
import time

import pytest
import torch
from torch import Tensor

from ssl_bench.components.base import StepOutput
from ssl_bench.train.epoch_log import EpochLogs, MetricsWriter
from ssl_bench.train.loop import train
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
    train(resumed, split, cfg, run_dir, CPU, resume=True)
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
