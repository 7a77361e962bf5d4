"""The features cache (RUN_DIR/features.pt) on a disk that cannot take it: one line, nothing lost."""

from __future__ import annotations

import builtins
import os
from typing import Any

import pytest
import torch

import ssl_bench.files as files
from ssl_bench.data.datasets import load_digits
from ssl_bench.eval.features import FEATURES_NAME, cached_features, pixel_features
from ssl_bench.files import DiskWriteError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits(None, limit_train=40, limit_test=20)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_one_line_and_keeps_the_previous_cache(digits, tmp_path, monkeypatch) -> None:
    """Not a mock of torch.save: torch's zip writer really writes into a device that is always full
    (ENOSPC on every write). Given a path instead of a Python file, torch reports this as an opaque
    ``inline_container.cc`` RuntimeError."""
    old = cached_features(tmp_path, pixel_features, digits, 16, CPU, {"p": 1})  # a cache of another protocol
    before = (tmp_path / FEATURES_NAME).read_bytes()
    monkeypatch.setattr(files, "open", lambda _path, mode: builtins.open("/dev/full", mode), raising=False)
    with pytest.raises(DiskWriteError) as err:
        cached_features(tmp_path, pixel_features, digits, 16, CPU, {"p": 2})
    line = str(err.value)
    assert line == (f"could not write {tmp_path / FEATURES_NAME}: no space left on device: free space or use --out "
                    f"elsewhere (the previous {FEATURES_NAME} is kept)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [FEATURES_NAME]  # no features.pt.tmp left behind
    assert (tmp_path / FEATURES_NAME).read_bytes() == before
    monkeypatch.undo()
    again = cached_features(tmp_path, pixel_features, digits, 16, CPU, {"p": 1})  # the old cache still serves
    assert torch.equal(again["train"], old["train"]) and again["protocol"] == {"p": 1}
