"""SIGINT/SIGTERM during train(): a checkpoint at the next optimiser-step boundary, then
TrainingInterrupted; resuming it ends bit-identical to the uninterrupted run (also under DDP)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from ssl_bench.components.base import StepOutput
from ssl_bench.data.base import TensorSplit
from ssl_bench.errors import CheckpointError, TrainingInterrupted
from ssl_bench.train import checkpoint
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ssl_bench.train.loop import train
from ssl_bench.train.resume import load_for_resume
from tests.test_train_loop import CPU, MeanFeatureLoss, make_run


class NoisyLoss(MeanFeatureLoss):
    """Draws from the step generator every call (so a resume that lost the generator's state
    diverges) and sends itself the signals listed in ``fire`` ({call index: [signals]})."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.fire: dict[int, list[int]] = {}

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        for sig in self.fire.get(self.calls, []):
            signal.raise_signal(sig)
        self.calls += 1
        x = images.float() / 255.0
        noise = torch.randn(x.shape, generator=generator, device=x.device)
        feats = self.backbone.features(x + 0.3 * noise, pool="avg")
        return StepOutput(feats.pow(2).mean(), {"noise": noise.abs().mean()})


EPOCHS = "train.epochs=3"  # 3 epochs of 3 optimiser steps (48 images, batch 16)


def _untimed(run_dir: Path) -> list[dict]:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time_s", "img_s")} for r in recs]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.fixture
def handlers():
    """The SIGINT/SIGTERM handlers before the test; train() must put them back."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield before
    after = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, h in before.items():
        signal.signal(s, h)
    assert after == before, "train() did not restore the previous signal handlers"


@pytest.fixture
def uninterrupted(tmp_path_factory):
    """(method, result, run_dir) of the reference run, per accumulation setting."""
    cache: dict[int, tuple] = {}

    def get(accum: int) -> tuple:
        if accum not in cache:
            tmp = tmp_path_factory.mktemp(f"full{accum}")
            method, split, cfg, run_dir = make_run(tmp, NoisyLoss, EPOCHS, f"train.accum_iter={accum}")
            cache[accum] = (method, train(method, split, cfg, run_dir, CPU), run_dir)
        return cache[accum]

    return get


@pytest.mark.parametrize(("accum", "sig"), [(1, signal.SIGINT), (2, signal.SIGINT), (1, signal.SIGTERM)])
def test_signal_mid_epoch_then_resume_is_bit_identical(tmp_path, handlers, uninterrupted, accum: int, sig: int) -> None:
    full, full_result, full_dir = uninterrupted(accum)
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS, f"train.accum_iter={accum}")
    method.fire = {4 * accum: [sig]}  # during optimiser step 5 = the 2nd step of epoch 2
    with pytest.raises(TrainingInterrupted) as info:
        train(method, split, cfg, run_dir, CPU)
    exc = info.value
    assert (exc.epoch, exc.epoch_step, exc.step, exc.signal_name) == (1, 2, 5, signal.Signals(sig).name)
    assert exc.path == str(run_dir / CHECKPOINT_NAME)
    msg = str(exc)
    assert "\n" not in msg and f"Resume with: ssl-bench run toy --resume {run_dir}" in msg
    assert "epoch 2, after step 2 of 3" in msg
    again = pickle.loads(pickle.dumps(exc))
    assert (again.path, again.epoch, again.epoch_step, again.step, str(again)) == (exc.path, 1, 2, 5, msg)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    assert (state["epoch"], state["epoch_step"], state["step"], len(state["rank_states"])) == (1, 2, 5, 1)
    assert signal.getsignal(signal.SIGINT) == handlers[signal.SIGINT]  # restored on the way out

    resumed, _, _, _ = make_run(tmp_path, NoisyLoss, EPOCHS, f"train.accum_iter={accum}")
    result = train(resumed, split, cfg, run_dir, CPU, resume_state=load_for_resume(resumed, run_dir))
    assert _same_weights(resumed, full)
    assert result.final_loss == full_result.final_loss and result.steps == full_result.steps == 9
    assert _untimed(run_dir) == _untimed(full_dir)


def test_resume_uses_the_callers_weights_and_a_given_resume_command(tmp_path, handlers, uninterrupted, caplog) -> None:
    """train() restores the optimiser, counters and mid-epoch state only: the weights are the
    caller's (loaded once, before train), so a resume_state without them continues as well. The
    interrupted message carries the caller's resume command and is raised, not logged (the CLI
    prints it once)."""
    full, _, full_dir = uninterrupted(1)
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    method.fire = {4: [signal.SIGINT]}
    command = f"ssl-bench run toy --out '{tmp_path} x' --resume '{run_dir}'"
    with caplog.at_level(logging.INFO, logger="ssl_bench"), pytest.raises(TrainingInterrupted) as info:
        train(method, split, cfg, run_dir, CPU, resume_command=command)
    assert str(info.value).endswith(f"Resume with: {command}")
    assert not [r for r in caplog.records if "training stopped by" in r.getMessage()]
    resumed, _, _, _ = make_run(tmp_path, NoisyLoss, EPOCHS)
    state = load_for_resume(resumed, run_dir)
    del state["model"]  # nothing left for train() to load the weights from
    train(resumed, split, cfg, run_dir, CPU, resume_state=state)
    assert _same_weights(resumed, full) and _untimed(run_dir) == _untimed(full_dir)


def test_a_resume_of_another_model_fails_before_anything_is_written(tmp_path, handlers) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, "train.epochs=1")
    train(method, split, cfg, run_dir, CPU)
    before = (run_dir / CHECKPOINT_NAME).read_bytes()
    wider, _, _, _ = make_run(tmp_path, NoisyLoss, "train.epochs=1", "backbone.embed_dim=64")
    with pytest.raises(CheckpointError, match="does not match this model/config"):
        load_for_resume(wider, run_dir)
    assert (run_dir / CHECKPOINT_NAME).read_bytes() == before


class CustomBatches(TensorSplit):
    """A split with its own batches() that hands ``skip`` on to the split it wraps."""

    def batches(self, *args, **kwargs):
        yield from super().batches(*args, **kwargs)


class CountingLoads(TensorSplit):
    """Records how many batches each epoch asks to load."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.loaded: list[int] = []

    def _load_views(self, index_batches, device, views, generator):
        self.loaded.append(len(index_batches))
        return super()._load_views(index_batches, device, views, generator)


@pytest.mark.parametrize("split_cls", [CustomBatches, CountingLoads])
def test_mid_epoch_resume_with_other_splits(tmp_path, handlers, uninterrupted, split_cls) -> None:
    full, _, full_dir = uninterrupted(2)
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS, "train.accum_iter=2")
    split = split_cls(split.images, split.labels)
    method.fire = {8: [signal.SIGINT]}  # optimiser step 5 of 9 (2 micro-batches each)
    with pytest.raises(TrainingInterrupted):
        train(method, split, cfg, run_dir, CPU)
    resumed, _, _, _ = make_run(tmp_path, NoisyLoss, EPOCHS, "train.accum_iter=2")
    train(resumed, split, cfg, run_dir, CPU, resume_state=load_for_resume(resumed, run_dir))
    assert _same_weights(resumed, full) and _untimed(run_dir) == _untimed(full_dir)
    if split_cls is CountingLoads:  # 6 micro-batches an epoch; the resumed epoch 2 skips 2 steps x 2
        assert split.loaded == [6, 6, 2, 6]


def test_without_the_generator_state_the_resume_would_differ(tmp_path, handlers, uninterrupted) -> None:
    """The bit-identical check above can fail: a mid-epoch resume that restarts the epoch's step
    generator from its seed does not reproduce the run."""
    full, _, _ = uninterrupted(1)
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    method.fire = {4: [signal.SIGINT]}
    with pytest.raises(TrainingInterrupted):
        train(method, split, cfg, run_dir, CPU)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    from ssl_bench.train.loop import make_generator

    state["rank_states"][0]["step_gen"] = make_generator(torch.device("cpu"), cfg.seed, 1, stream=2).get_state()
    save_checkpoint(run_dir / CHECKPOINT_NAME, state)
    resumed, _, _, _ = make_run(tmp_path, NoisyLoss, EPOCHS)
    train(resumed, split, cfg, run_dir, CPU, resume_state=load_for_resume(resumed, run_dir))
    assert not _same_weights(resumed, full)


def test_signal_in_the_last_step_of_an_epoch_stops_at_the_epoch_boundary(tmp_path, handlers, uninterrupted) -> None:
    full, _, full_dir = uninterrupted(1)
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    method.fire = {2: [signal.SIGINT]}  # the 3rd (last) step of epoch 1
    with pytest.raises(TrainingInterrupted, match="at end of epoch 1 \\(global step 3\\)") as info:
        train(method, split, cfg, run_dir, CPU)
    assert (info.value.epoch, info.value.epoch_step) == (1, 0)
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch_step"] == 0
    assert [r["epoch"] for r in _untimed(run_dir)] == [1]  # the finished epoch is logged
    resumed, _, _, _ = make_run(tmp_path, NoisyLoss, EPOCHS)
    train(resumed, split, cfg, run_dir, CPU, resume_state=load_for_resume(resumed, run_dir))
    assert _same_weights(resumed, full) and _untimed(run_dir) == _untimed(full_dir)


def test_signal_in_the_very_last_step_still_stops_before_evaluation(tmp_path, handlers) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    method.fire = {8: [signal.SIGINT]}
    with pytest.raises(TrainingInterrupted) as info:
        train(method, split, cfg, run_dir, CPU)
    assert (info.value.epoch, info.value.epoch_step, info.value.step) == (3, 0, 9)
    resumed, _, _, _ = make_run(tmp_path, NoisyLoss, EPOCHS)
    assert train(resumed, split, cfg, run_dir, CPU, resume_state=load_for_resume(resumed, run_dir)).steps == 9  # nothing left to train


def test_a_second_signal_stops_at_once_and_keeps_the_previous_checkpoint(tmp_path, handlers) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    method.fire = {4: [signal.SIGINT, signal.SIGINT]}
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        train(method, split, cfg, run_dir, CPU)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    assert (state["epoch"], state["epoch_step"]) == (1, 0)


def test_a_repeated_sigterm_does_not_cut_the_checkpoint_short(tmp_path, handlers) -> None:
    """Slurm and torchrun's agent may both deliver SIGTERM to a worker: that is still one request."""
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    method.fire = {4: [signal.SIGTERM, signal.SIGTERM]}
    with pytest.raises(TrainingInterrupted) as info:
        train(method, split, cfg, run_dir, CPU)
    assert (info.value.epoch, info.value.epoch_step, info.value.signal_name) == (1, 2, "SIGTERM")
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch_step"] == 2


def test_ctrl_c_after_a_sigterm_stops_at_once(tmp_path, handlers) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    method.fire = {4: [signal.SIGTERM, signal.SIGINT]}
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        train(method, split, cfg, run_dir, CPU)
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch_step"] == 0


def test_a_second_signal_while_saving_does_not_corrupt_the_checkpoint(tmp_path, handlers, monkeypatch) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    method.fire = {4: [signal.SIGINT]}
    real_save = torch.save
    saves = {"n": 0}

    def save_then_ctrl_c(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:  # the mid-epoch checkpoint (the 1st save is epoch 1's)
            f.write(b"the first bytes of a checkpoint")
            signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C again
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train(method, split, cfg, run_dir, CPU)
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint")) == [CHECKPOINT_NAME]
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch"] == 1  # the previous one, intact


def test_keyboard_interrupt_raised_by_code_propagates_and_writes_nothing(tmp_path, handlers) -> None:
    """Only the signal path checkpoints mid-epoch; an exception from user code is not a request
    to stop cleanly (it may come from anywhere inside the step)."""
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    real = NoisyLoss.training_step

    def dying(self, *args, **kwargs):
        if self.calls == 4:
            raise KeyboardInterrupt("simulated")
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NoisyLoss, "training_step", dying)
        with pytest.raises(KeyboardInterrupt, match="simulated"):
            train(method, split, cfg, run_dir, CPU)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    assert (state["epoch"], state["epoch_step"]) == (1, 0)


def test_mid_epoch_checkpoint_needs_the_same_process_count_and_epoch_length(tmp_path, handlers) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, NoisyLoss, EPOCHS)
    method.fire = {4: [signal.SIGINT]}
    with pytest.raises(TrainingInterrupted):
        train(method, split, cfg, run_dir, CPU)
    path = run_dir / CHECKPOINT_NAME
    state = load_checkpoint(path)
    two = {**state, "rank_states": state["rank_states"] * 2}
    save_checkpoint(path, two)
    with pytest.raises(CheckpointError, match=r"mid-epoch by 2 process\(es\); resume it with the same number"):
        fresh = make_run(tmp_path, NoisyLoss, EPOCHS)[0]
        train(fresh, split, cfg, run_dir, CPU, resume_state=load_for_resume(fresh, run_dir))
    save_checkpoint(path, state)
    method, _, big_batch, _ = make_run(tmp_path, NoisyLoss, EPOCHS, "train.batch_size=48")
    with pytest.raises(CheckpointError, match="stopped after step 2 of an epoch, but this config has 1 steps per epoch"):
        train(method, split, big_batch, run_dir, CPU, resume_state=load_for_resume(method, run_dir))


# ---------------------------------------------------------------------------------------- DDP


def _ddp_main(out: Path) -> None:
    """Run by each of two torchrun processes (gloo, CPU): the reference run, a run where only
    rank 1 gets SIGINT, and its resume; writes this rank's findings to out/rank<r>.json."""
    from ssl_bench.distributed import init_distributed

    ctx = init_distributed("cpu")
    torch.set_num_threads(1)
    base = out / f"work{ctx.rank}"
    base.mkdir(parents=True, exist_ok=True)
    shared = out / "shared"

    def run(name: str, fire: dict[int, list[int]] | None = None, resume: bool = False):
        method, split, cfg, _ = make_run(base, NoisyLoss, EPOCHS)
        method.fire = fire or {}
        run_dir = shared / name
        run_dir.mkdir(parents=True, exist_ok=True)
        state = load_for_resume(method, run_dir) if resume else None
        return method, train(method, split, cfg, run_dir, ctx, resume_state=state)

    full, full_result = run("full")
    found: dict[str, object] = {}
    try:
        run("cut", fire={2: [signal.SIGINT]} if ctx.rank == 1 else None)  # rank 1 only, in the last step of epoch 1
    except TrainingInterrupted as exc:
        found["interrupted_at"] = [exc.epoch, exc.epoch_step, exc.step]
    try:
        run("cut2", fire={4: [signal.SIGINT]} if ctx.rank == 1 else None)  # mid-epoch 2, rank 1 only
    except TrainingInterrupted as exc:
        found["interrupted_mid"] = [exc.epoch, exc.epoch_step, exc.step]
    resumed, result = run("cut2", resume=True)
    found["identical"] = _same_weights(resumed, full) and result.final_loss == full_result.final_loss
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(found))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_stop_together_and_resume_exactly(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), "-m", "tests.test_train_interrupt", str(tmp_path),
    ]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank stopped at the same step and agrees on the result
    assert ranks[0]["interrupted_at"] == [1, 0, 3]
    assert ranks[0]["interrupted_mid"] == [1, 2, 5]
    assert ranks[0]["identical"] is True
    state = load_checkpoint(tmp_path / "shared" / "cut" / CHECKPOINT_NAME)
    assert state["epoch_step"] == 0


if __name__ == "__main__":
    _ddp_main(Path(sys.argv[1]))
