"""The non-finite-loss error names only a checkpoint that exists and never advises resuming with a
changed learning rate."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from ssl_bench.components.base import StepOutput
from ssl_bench.errors import NonFiniteLossError
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_bench.train.loop import train
from ssl_bench.train.resume import load_for_resume
from tests.test_train_loop import CPU, MeanFeatureLoss, make_run


class NanAt(MeanFeatureLoss):
    """The loss becomes NaN from training_step call ``nan_from`` on."""

    nan_from = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        out = super().training_step(images, labels, generator)
        self.calls += 1
        return StepOutput(out.loss * math.nan if self.calls > self.nan_from else out.loss)


def _error(tmp_path, nan_from: int, *extra: str) -> tuple[str, object]:
    method, split, cfg, run_dir = make_run(tmp_path, NanAt, "train.epochs=3", *extra)
    method.nan_from = nan_from
    with pytest.raises(NonFiniteLossError) as info:
        train(method, split, cfg, run_dir, CPU)
    msg = str(info.value)
    assert "\n" not in msg
    assert "lower train.blr (now 0.00015) or with train.grad_clip set" in msg
    assert "then resume" not in msg  # resuming with a changed lr is not advice we give
    return msg, run_dir


def test_nan_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path) -> None:
    msg, run_dir = _error(tmp_path, nan_from=1)
    assert msg.startswith("loss became nan at epoch 1, step 1; stopping.")
    assert "No checkpoint has been written yet" in msg and "--resume" not in msg and "checkpoint.pt" not in msg
    assert not (run_dir / CHECKPOINT_NAME).exists()


def test_nan_later_names_the_existing_checkpoint_and_the_unchanged_resume(tmp_path) -> None:
    msg, run_dir = _error(tmp_path, nan_from=4)  # epoch 2, step 2
    path = run_dir / CHECKPOINT_NAME
    assert f"The last good checkpoint is kept: {path} (end of epoch 1)" in msg
    assert f"resume that checkpoint unchanged (`ssl-bench run toy --resume {run_dir}`) only if the NaN was a fluke" in msg
    assert load_checkpoint(path)["epoch"] == 1


def test_with_sparse_checkpoints_the_message_names_the_one_on_disk(tmp_path) -> None:
    msg, _ = _error(tmp_path, 4, "train.checkpoint_every=2")  # epoch 2: epoch 1 was not checkpointed
    assert "No checkpoint has been written yet" in msg and "--resume" not in msg
    msg, _ = _error(tmp_path, 7, "train.checkpoint_every=2")  # epoch 3
    assert "(end of epoch 2)" in msg


def test_after_a_resume_the_message_names_the_resumed_checkpoint(tmp_path) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, NanAt, "train.epochs=3")
    method.nan_from = 10**9
    cfg.train.epochs = 1
    train(method, split, cfg, run_dir, CPU)
    cfg.train.epochs = 3
    again, _, _, _ = make_run(tmp_path, NanAt, "train.epochs=3")
    again.nan_from = 0
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint is kept: .*checkpoint\.pt \(end of epoch 1\)"):
        train(again, split, cfg, run_dir, CPU, resume_state=load_for_resume(again, run_dir))


def test_the_message_prints_the_callers_resume_command(tmp_path) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, NanAt, "train.epochs=3")
    method.nan_from = 4  # epoch 2: epoch 1's checkpoint exists
    command = f"ssl-bench run toy --out {tmp_path}/runs --results {tmp_path}/results.db --resume {run_dir}"
    with pytest.raises(NonFiniteLossError) as info:
        train(method, split, cfg, run_dir, CPU, resume_command=command)
    assert f"resume that checkpoint unchanged (`{command}`) only if the NaN was a fluke" in str(info.value)
