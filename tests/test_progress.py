"""Progress bars: drawn on a terminal wherever a person waits, silent in logs / CI / pytest (stderr not
a TTY) and on every rank but the main one."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from ssl_bench.components.tokenizers import fit_with_adam
from ssl_bench.data.datasets import load_digits
from ssl_bench.eval.features import cached_features, extract_features, pixel_features
from ssl_bench.eval.knn import knn_predict
from ssl_bench.eval.linear_probe import LinearProbeEvaluator
from ssl_bench.methods.reconstruction import ReconstructionMethod
from ssl_bench.progress import progress

CPU = torch.device("cpu")


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _on_terminal(monkeypatch: pytest.MonkeyPatch) -> _Terminal:
    """Point sys.stderr at a terminal. Called in the test body: pytest re-installs its own capture
    stream between fixture setup and the test call, which would undo a fixture's patch."""
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    return tty


@pytest.fixture(scope="module")
def digits() -> Any:
    ds = load_digits(None, limit_train=200, limit_test=50)
    return ds


def test_policy_terminal_only_and_main_rank_only(monkeypatch: pytest.MonkeyPatch) -> None:
    tty_stderr = _on_terminal(monkeypatch)
    assert list(progress(range(3), desc="shown")) == [0, 1, 2]
    assert "shown" in tty_stderr.getvalue()
    assert list(progress(range(3), desc="other rank", main=False)) == [0, 1, 2]
    assert "other rank" not in tty_stderr.getvalue()


def test_small_extraction_writes_nothing_to_a_non_tty_stderr(digits: Any, capsys: pytest.CaptureFixture[str]) -> None:
    feats, labels = extract_features(pixel_features, digits.train, digits.info, 16, CPU)
    assert feats.shape == (200, 64) and labels.shape == (200,)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""


def test_extraction_shows_a_bar_per_split_on_a_terminal(digits: Any, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    tty_stderr = _on_terminal(monkeypatch)
    cached_features(tmp_path, pixel_features, digits, 16, CPU, {"p": 1}, label="pixels")
    text = tty_stderr.getvalue()
    assert "pixels features: train" in text and "pixels features: test" in text


def test_probe_knn_and_tokenizer_fitting_show_bars_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    tty_stderr = _on_terminal(monkeypatch)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 8, generator=g), torch.randint(0, 3, (60,), generator=g)
    LinearProbeEvaluator(epochs=2, warmup_epochs=1, optimizer="sgd")(x, y, x, y, 3)
    knn_predict(x, y, x, 3, ks=(5,), backend="torch")
    net = torch.nn.Linear(4, 4)
    fit_with_adam(net, torch.randn(32, 4, generator=g), lambda b: net(b).pow(2).mean(), steps=3, batch_size=8, lr=1e-3, generator=g)
    # ReconstructionMethod.prepare's patch sampling, on a stand-in for the method
    fake = SimpleNamespace(tokenizer=SimpleNamespace(patch_size=2, num_samples=40, __class__=type("PatchPCATokenizer", (), {})))
    images = (torch.rand(4, 1, 8, 8, generator=g) for _ in range(3))
    patches = ReconstructionMethod._sample_patches(fake, images, g, per_image=4)
    assert patches.shape == (40, 4)
    text = tty_stderr.getvalue()
    for desc in ("linear probe", "k-NN search", "fitting Linear", "sampling patches"):
        assert desc in text, desc


def test_the_same_work_is_silent_under_capture(capsys: pytest.CaptureFixture[str]) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 8, generator=g), torch.randint(0, 3, (60,), generator=g)
    LinearProbeEvaluator(epochs=2, warmup_epochs=1, optimizer="sgd")(x, y, x, y, 3)
    knn_predict(x, y, x, 3, ks=(5,), backend="torch")
    assert capsys.readouterr().err == ""
