"""Every registered method x a tiny backbone trains end to end on CPU; reproducibility and resume."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.distributed import DistContext
from ssl_bench.errors import CheckpointError, NonFiniteLossError
from ssl_bench.registry import get_registry
from ssl_bench.results.leaderboard import build_leaderboard
from ssl_bench.results.store import ResultsStore
from ssl_bench.run import load_dataset, run_baseline, run_method
from ssl_bench.train.checkpoint import CHECKPOINT_NAME

CPU = DistContext(0, 1, 0, torch.device("cpu"))
METHOD_NAMES = get_registry().names("method")


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "results.db")


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_trains_and_lands_on_leaderboard(method, tiny_cfg, store):
    cfg = tiny_cfg(method)
    out = run_method(method, cfg, store, CPU)
    assert (out.run_dir / CHECKPOINT_NAME).is_file()
    assert (out.run_dir / "config.py").is_file() and (out.run_dir / "features.pt").is_file()
    assert 0.0 <= out.metrics["knn_top1"] <= 1.0 and 0.0 <= out.metrics["linear_top1"] <= 1.0
    dataset = load_dataset(cfg, get_registry())
    for name in ("pixels", "random-init"):
        run_baseline(name, cfg, store, dataset, CPU.device)
    table = build_leaderboard(store, dataset="digits", backbone="vit-nano")
    assert list(table["method"])[:2] == ["pixels", "random-init"]
    assert method in set(table["method"])


def test_same_seed_same_metrics(tiny_cfg, store):
    a = run_method("mae", tiny_cfg("mae"), store, CPU)
    b = run_method("mae", tiny_cfg("mae"), store, CPU)
    assert a.run_dir != b.run_dir  # an earlier run is never overwritten
    assert a.metrics == b.metrics
    c = run_method("mae", tiny_cfg("mae", "seed=1"), store, CPU)
    assert c.metrics != a.metrics


def test_killed_mid_epoch_then_resumed_matches_uninterrupted(tiny_cfg, store, monkeypatch):
    full = run_method("mae", tiny_cfg("mae", "train.epochs=3"), store, CPU)

    from ssl_bench_plugins.mae.method import MAE

    real_step = MAE.training_step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4 + 2:  # 4 steps per epoch: dies in the middle of epoch 2
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(MAE, "training_step", dying_step)
    cfg = tiny_cfg("mae", "train.epochs=3")
    with pytest.raises(KeyboardInterrupt):
        run_method("mae", cfg, store, CPU)
    monkeypatch.setattr(MAE, "training_step", real_step)
    killed_dir = max((p for p in full.run_dir.parent.iterdir()), key=lambda p: p.stat().st_mtime)
    assert torch.load(killed_dir / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
    resumed = run_method("mae", tiny_cfg("mae", "train.epochs=3"), store, CPU, resume=killed_dir)
    assert resumed.run_dir == killed_dir
    assert resumed.metrics == full.metrics


def test_corrupt_checkpoint_is_a_clear_error_and_is_not_overwritten(tiny_cfg, store):
    out = run_method("mae", tiny_cfg("mae", "train.epochs=1"), store, CPU)
    ckpt = out.run_dir / CHECKPOINT_NAME
    ckpt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or unreadable.*left untouched"):
        run_method("mae", tiny_cfg("mae", "train.epochs=2"), store, CPU, resume=out.run_dir)
    assert ckpt.read_bytes() == b"this is not a checkpoint"


def test_resume_without_checkpoint_says_so(tiny_cfg, store, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        run_method("mae", tiny_cfg("mae"), store, CPU, resume=tmp_path / "nowhere")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg, store, monkeypatch):
    from ssl_bench.components.base import StepOutput
    from ssl_bench_plugins.mae.method import MAE

    real_step = MAE.training_step
    calls = {"n": 0}

    def nan_step(self, *args, **kwargs):
        calls["n"] += 1
        out = real_step(self, *args, **kwargs)
        if calls["n"] > 4:  # epoch 2
            return StepOutput(out.loss * math.nan, out.logs)
        return out

    monkeypatch.setattr(MAE, "training_step", nan_step)
    cfg = tiny_cfg("mae")
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        run_method("mae", cfg, store, CPU)
    ckpts = list((store.path.parent / "runs").rglob(CHECKPOINT_NAME))
    assert len(ckpts) == 1 and torch.load(ckpts[0], weights_only=True)["epoch"] == 1
    runs = store.runs_frame()
    assert runs.iloc[-1]["status"] == "failed"


def test_own_random_init_reuses_the_runs_fitted_tokenizer(tiny_cfg, tmp_path, monkeypatch):
    """`random-init:ldae` is ldae's own network untrained with the run's tokenizer: loaded from the
    trained run's checkpoint it equals a fresh fit (deterministic for the seed), without refitting."""
    cfg = tiny_cfg("ldae", "train.epochs=1")
    dataset = load_dataset(cfg, get_registry())
    trained = run_method("ldae", cfg, ResultsStore(tmp_path / "a.db"), CPU, dataset=dataset)
    fitted = run_baseline("random-init", cfg, ResultsStore(tmp_path / "b.db"), dataset, CPU.device, method="ldae")
    from ssl_bench_plugins.ldae.method import LDAE

    def no_refit(self, *args, **kwargs):
        raise AssertionError("the tokenizer was fitted again")

    monkeypatch.setattr(LDAE, "prepare", no_refit)
    loaded = run_baseline("random-init", cfg, ResultsStore(tmp_path / "c.db"), dataset, CPU.device, method="ldae",
                          tokenizer_from=trained.run_dir)
    assert loaded.method == fitted.method == "random-init:ldae"
    assert loaded.metrics == fitted.metrics, (loaded.metrics, fitted.metrics)


#: On top of tests/conftest.py's TINY_SET: the settings under which every built-in method's training
#: shows on a k-NN probe (see test_training_beats_the_methods_own_untrained_network).
LEARNS = ["backbone.embed_dim=64", "backbone.num_heads=4", "dataset.limit_train=1024", "dataset.limit_test=256", "train.epochs=30"]
#: k-NN top-1 (a fraction: 0.05 is 5 points) a short run must gain over its own untrained network.
LEARNING_MARGIN = 0.05


@pytest.mark.slow
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_training_beats_the_methods_own_untrained_network(method, tiny_cfg, store, monkeypatch):
    """A short seeded CPU run learns: its k-NN accuracy beats the same network untrained by 5 points.

    Run: seed 0, vit-nano at width 64 (4 heads, depth 2), 30 epochs on 1024 digits (480 steps of
    64), scored by the DINO k-NN vote (k=20, ``knn_top1``) on 256 test digits.

    Untrained: the method's own network built from the same seed, prepared (a tokenizer fitted, here
    loaded from the run), never given a gradient step, scored the same way: the ``random-init:<method>``
    baseline, which ssl-bench records for methods with ``own_random_init`` (ldae, ddm). MAE and
    MoCo v3 record the plain ``random-init`` ViT (timm's init) instead. Their own initialisation
    probes far better than that here: with the optimiser disabled, k-NN 0.543 (MAE) and 0.512
    (MoCo v3) against 0.309 for ``random-init`` (measured, seed 0), so a run that never trained would
    pass against it. The test therefore switches ``own_random_init`` on for them too.

    Why k-NN and 5 points: measured gains at these settings for seeds 0 / 1 / 2, in k-NN points:
    mae 11.3 / 12.5 / 9.0, mocov3 21.5 / 25.0 / 18.4, ldae 37.5 / 48.4 / 39.5, ddm 31.6 / 11.7 / 9.0.
    MAE's linear-probe gains are 0.4-2.3 points only (a tiny MAE's class token barely moves), so the
    linear probe cannot tell a trained MAE from an untrained one here. The margin is about half the
    smallest gain of those 12 runs. With ``optimizer.step()`` skipped, the gain is exactly 0 for every
    method (checked), so a silent training bug fails this test. About 10-20 s per method on one CPU
    thread.
    """
    cfg = tiny_cfg(method, *LEARNS)
    trained = run_method(method, cfg, store, CPU)
    monkeypatch.setattr(get_registry().get("method", method), "own_random_init", True, raising=False)
    dataset = load_dataset(cfg, get_registry())
    untrained = run_baseline("random-init", cfg, store, dataset, CPU.device, method=method, tokenizer_from=trained.run_dir)
    assert untrained.method == f"random-init:{method}"
    gain = trained.metrics["knn_top1"] - untrained.metrics["knn_top1"]
    assert gain >= LEARNING_MARGIN, (
        f"{method} did not learn: k-NN top-1 {trained.metrics['knn_top1']:.3f} after training, "
        f"{untrained.metrics['knn_top1']:.3f} untrained (gain {gain:+.3f}, needed {LEARNING_MARGIN})"
    )
