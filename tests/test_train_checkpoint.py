"""Checkpoint writes that fail (disk full, read-only or unwritable directory, a second Ctrl-C
mid-save) remove the temp file, keep the previous checkpoint and say so in one line."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from ssl_bench.errors import CheckpointError, CheckpointWriteError, SSLBenchError
from ssl_bench.train import checkpoint
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ssl_bench.train.loop import train
from tests.test_train_loop import CPU, MeanFeatureLoss, make_run


def _failing_save(err: BaseException, after: int = 0):
    """A torch.save that writes part of the file, then fails; the first ``after`` calls succeed."""
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= after:
            return real(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")
        raise err

    return save


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on device: free space or use --out elsewhere"),
        (errno.EROFS, "read-only file system: use --out on a writable disk"),
        (errno.EACCES, "permission denied: make the directory writable or use --out elsewhere"),
        (errno.EIO, "Input/output error: check the disk or use --out elsewhere"),
    ],
)
def test_write_error_keeps_the_previous_checkpoint(tmp_path, monkeypatch, code: int, words: str) -> None:
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    monkeypatch.setattr(checkpoint.torch, "save", _failing_save(OSError(code, os.strerror(code))))
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    msg = str(info.value)
    assert isinstance(info.value, SSLBenchError) and "\n" not in msg
    assert msg.startswith(f"could not write checkpoint {path}: {words}") and "previous checkpoint there is kept" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # the temp file is gone
    assert load_checkpoint(path)["epoch"] == 1


def test_write_error_without_an_earlier_checkpoint_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint.torch, "save", _failing_save(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(CheckpointWriteError, match="no earlier checkpoint existed there"):
        save_checkpoint(tmp_path / CHECKPOINT_NAME, {"model": {}, "epoch": 1})
    assert list(tmp_path.iterdir()) == []


def test_interrupt_mid_save_removes_the_temp_file_and_propagates(tmp_path, monkeypatch) -> None:
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"model": {}, "epoch": 1})
    monkeypatch.setattr(checkpoint.torch, "save", _failing_save(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {}, "epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    assert load_checkpoint(path)["epoch"] == 1


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_really_full_device_is_reported_as_disk_full(tmp_path, monkeypatch) -> None:
    """Not a mock of torch.save: its zip writer really writes into a device that is always full.
    (Given a path instead of a Python file, torch reports an opaque RuntimeError here.)"""
    import builtins

    from ssl_bench import files  # the checkpoint is written through files.atomic_torch_save

    monkeypatch.setattr(files, "open", lambda _path, mode: builtins.open("/dev/full", mode), raising=False)
    with pytest.raises(CheckpointWriteError, match="no space left on device: free space or use --out elsewhere"):
        save_checkpoint(tmp_path / CHECKPOINT_NAME, {"model": {"w": torch.zeros(100_000)}, "epoch": 1})


def test_real_read_only_directory(tmp_path, as_unprivileged) -> None:
    """A chmod'ed read-only run folder. As root (CI) the save runs without root's permission
    override (tests/conftest.py: run_as_unprivileged)."""
    tmp_path.chmod(0o500)

    def check() -> None:
        with pytest.raises(CheckpointWriteError, match="permission denied"):
            save_checkpoint(tmp_path / CHECKPOINT_NAME, {"model": {}, "epoch": 1})

    try:
        as_unprivileged(check)
    finally:
        tmp_path.chmod(0o700)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_training_keeps_the_last_epoch_checkpoint(tmp_path, monkeypatch) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, MeanFeatureLoss, "train.epochs=3")
    monkeypatch.setattr(checkpoint.torch, "save", _failing_save(OSError(errno.ENOSPC, "No space left on device"), after=1))
    with pytest.raises(CheckpointWriteError, match=r"checkpoint\.pt: no space left on device"):
        train(method, split, cfg, run_dir, CPU)
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch"] == 1
    assert not (run_dir / (CHECKPOINT_NAME + ".tmp")).exists()


def test_unreadable_checkpoint_is_still_a_checkpoint_error(tmp_path) -> None:
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path / CHECKPOINT_NAME)
