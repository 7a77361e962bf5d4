"""Atomic writes (``ssl_bench.files``): a killed or failed write never leaves a half file under the
real name, and a full disk is one line naming the file, whatever the writer (torch's zip writer
hides the OSError behind its own RuntimeError)."""

from __future__ import annotations

import builtins
import errno
from pathlib import Path

import pytest
import torch

import ssl_bench.files as files
from ssl_bench.files import DiskWriteError, atomic_torch_save, atomic_write_text, remove_partial_writes


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file the module opens for writing is /dev/full: each write fails with ENOSPC."""
    real_open = builtins.open

    def to_dev_full(path: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        return real_open("/dev/full", mode, *args, **kwargs) if "w" in mode else real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", to_dev_full, raising=False)


def _save_as_torch_does_on_a_nearly_full_disk(obj: object, f: object) -> None:
    """torch's zip writer on a disk that fills mid-file (seen on a small tmpfs): the file's write
    raises ENOSPC and torch reports only its own ``RuntimeError: [enforce fail at
    inline_container.cc:672] . unexpected pos ...``."""
    try:
        f.write(b"x" * 100_000)
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 482816 vs 482704") from None


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
@pytest.mark.parametrize("write,hidden", [
    (lambda p: atomic_torch_save(p, {"w": torch.zeros(100_000)}), False),
    (lambda p: atomic_torch_save(p, {"w": torch.zeros(100_000)}), True),
    (lambda p: atomic_write_text(p, "x" * 100_000), False),
], ids=["torch.save", "torch.save-hides-the-errno", "text"])
def test_a_full_disk_is_one_line_and_the_previous_file_stays(tmp_path, monkeypatch, write, hidden):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"the previous one")
    _full_disk(monkeypatch)
    if hidden:
        monkeypatch.setattr(torch, "save", _save_as_torch_does_on_a_nearly_full_disk)
    with pytest.raises(DiskWriteError) as info:
        write(path)
    message = str(info.value)
    assert message == f"could not write {path}: no space left on device: free space or use --out elsewhere (the previous checkpoint.pt is kept)"
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"the previous one" and not (tmp_path / "checkpoint.pt.tmp").exists()


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "features.pt"
    atomic_torch_save(path, {"a": torch.arange(3)})
    atomic_torch_save(path, {"a": torch.arange(5)})
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.pt"]


def test_the_leftovers_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    for name in ("checkpoint.pt.tmp", "features.pt.tmp", "checkpoint.pt", "metrics.json"):
        (tmp_path / name).write_text(name)
    removed = remove_partial_writes(tmp_path)
    assert [p.name for p in removed] == ["checkpoint.pt.tmp", "features.pt.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.json"]
    assert remove_partial_writes(tmp_path / "missing") == []
