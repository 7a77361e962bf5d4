"""MoCo v3 plugin: momentum schedule and update as wired into the method, frozen patch projection,
view augmentations, and the distributed (gathered-key) loss against the single-process loss on the
same global batch. The core parts it is built from (InfoNCE, MLP heads, momentum schedule/update,
two-view augmentation) are unit-tested in tests/test_joint_embedding.py."""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_bench.components.losses import symmetric_info_nce
from ssl_bench.components.momentum import momentum_at
from ssl_bench.data import augment as A
from ssl_bench.data.base import DatasetInfo
from ssl_bench.registry import build_registry
from ssl_bench.run.assemble import build_method, method_config
from ssl_bench.train.loop import build_optimizer
from ssl_bench_plugins.mocov3.method import MoCoV3

REPO = Path(__file__).resolve().parents[1]
TINY = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "train.batch_size=16"]


@functools.lru_cache(maxsize=1)
def _registry():
    """The registry, with this plugin added explicitly when its entry point is not installed yet."""
    reg = build_registry()
    if "mocov3" not in reg.names("method"):
        reg = build_registry(extra_modules=[("ssl-bench", importlib.import_module("ssl_bench_plugins.mocov3"))])
    return reg


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; with two threads on a busy 2-core machine the OpenMP
    barriers made each tiny step ~100x slower (4 s instead of 0.04 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _info(channels: int = 1) -> DatasetInfo:
    return DatasetInfo("random", 10, channels, 8, (0.5,) * channels, (0.25,) * channels, default_patch_size=2)


def _tiny_method(*extra: str, channels: int = 1) -> MoCoV3:
    reg = _registry()
    cfg = method_config("mocov3", reg, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, *extra])
    return build_method(cfg, reg, _info(channels))


def _images(n: int = 16, c: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


# ------------------------------------------------------------------------ (1) momentum schedule


def test_method_momentum_follows_loop_hook():
    """Step i of epoch e uses m(e + i / iters): m0 first, then what on_train_step_end set."""
    m = _tiny_method()
    assert m.momentum == pytest.approx(0.99)
    m.on_train_step_end(0.5, 2)
    assert m.momentum == pytest.approx(momentum_at(0.5, 2, 0.99))
    state = m.state_dict()  # the schedule position survives a checkpoint
    fresh = _tiny_method()
    fresh.load_state_dict(state)
    assert fresh.momentum == pytest.approx(m.momentum)
    const = _tiny_method("method.momentum_cos=False")
    const.on_train_step_end(1.0, 2)
    assert const.momentum == pytest.approx(0.99)


# -------------------------------------------------------------------------- (2) momentum update


def test_method_update_and_ordering():
    """The update applies self.momentum to trainable params, before the keys are computed."""
    model = _tiny_method()
    model.train()
    with torch.no_grad():  # make the two encoders differ
        for p in model.momentum_projector.parameters():
            p.add_(1.0)
    base = [p.detach().clone() for p in model._base_params()]
    old = [p.detach().clone() for p in model._momentum_params()]
    model.update_momentum_encoder(0.75)
    for q, k_old, k, p in zip(base, old, model._momentum_params(), model._base_params()):
        expect = 0.75 * k_old + 0.25 * q if p.requires_grad else k_old  # frozen copies stay equal
        assert torch.allclose(k, expect, rtol=0, atol=1e-6)
    # with m = 0 the training step first copies the base encoder, so k is computed by it
    model.momentum = 0.0
    model(_images(), torch.zeros(16, dtype=torch.long), torch.Generator().manual_seed(0))
    for q, k in zip(model._base_params(), model._momentum_params()):
        assert torch.equal(q, k)
    # momentum encoder: no gradient, not in the optimiser
    assert not any(p.requires_grad for p in model._momentum_params())
    opt_ids = {id(p) for g in model.param_groups(0.1) for p in g["params"]}
    assert not opt_ids & {id(p) for p in model._momentum_params()}


# ------------------------------------------------------------- (3) frozen patch projection, wd


def test_frozen_patch_projection_and_all_params_decayed():
    model = _tiny_method()
    proj = model.backbone.vit.patch_embed.proj
    assert not proj.weight.requires_grad and not proj.bias.requires_grad
    groups = model.param_groups(0.1)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(groups[0]["params"]) == len(trainable)
    assert any(p.ndim == 1 for p in groups[0]["params"])  # biases / norms are decayed too

    cfg = model.cfg
    opt, _ = build_optimizer(model, cfg.train, 16)
    w0, b0 = proj.weight.detach().clone(), proj.bias.detach().clone()
    others0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    mom0 = [p.detach().clone() for p in model._momentum_params()]
    g = torch.Generator().manual_seed(0)
    model.train()
    for step in range(3):
        out = model(_images(seed=step), torch.zeros(16, dtype=torch.long), g)
        assert torch.isfinite(out.loss)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        assert proj.weight.grad is None
        opt.step()
        model.on_train_step_end((step + 1) / 3, 1)
    assert torch.equal(proj.weight, w0) and torch.equal(proj.bias, b0)
    assert torch.equal(model.momentum_backbone.vit.patch_embed.proj.weight, w0)
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, others0[n])]
    assert len(moved) == len(others0)  # every trainable parameter moved
    assert any(not torch.equal(a, b) for a, b in zip(mom0, model._momentum_params()))


# ---------------------------------------------------------------------- (4) view augmentations


def _pipeline(view: A.ViewAugment) -> list[tuple[str, object]]:
    """ViewAugment's ops in order, with the view's own parameters."""
    return [
        ("crop", lambda x, g: A.random_resized_crop(x, view.size, view.scale, view.ratio, g)),
        ("flip", lambda x, g: A.random_horizontal_flip(x, view.flip_p, g)),
        ("jitter", lambda x, g: A.color_jitter(x, view.brightness, view.contrast, view.saturation, view.hue, view.jitter_p, g)),
        ("gray", lambda x, g: A.random_grayscale(x, view.grayscale_p, g)),
        ("blur", lambda x, g: A.gaussian_blur(x, view.blur_sigma, view.blur_p, g, sigma_scale=view.sigma_scale)),
        ("solarize", lambda x, g: A.solarize(x, 0.5, view.solarize_p, g)),
    ]


@pytest.mark.parametrize("channels", [1, 3])
def test_view_pipeline_keeps_shape_dtype_range(channels):
    model = _tiny_method("method.crop_scale=(0.3,1.0)", channels=channels)
    v1, v2 = model.view1, model.view2
    assert (v1.blur_p, v1.solarize_p, v2.blur_p, v2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert v1.scale == v2.scale == (0.3, 1.0)
    x0 = _images(32, channels, 16)
    for view in (v1, v2):
        x = A.to_float01(x0)
        g = torch.Generator().manual_seed(0)
        for name, op in _pipeline(view):
            x = op(x, g)
            assert x.shape == (32, channels, 8, 8), name  # the crop resizes 16 -> view.size = 8
            assert x.dtype == torch.float32, name
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and torch.isfinite(x).all(), name
        # the composed view is the same pipeline followed by normalisation
        out = view(x0, model.info.mean, model.info.std, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == torch.float32
        assert torch.allclose(out, A.normalize(x, model.info.mean, model.info.std), atol=1e-6)
        assert torch.equal(out, view(x0, model.info.mean, model.info.std, torch.Generator().manual_seed(0)))


# ------------------------------------------------------------------------------ (5) two ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fixed_qk(n: int = 8, c: int = 16) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(123)
    return tuple(torch.randn(n, c, generator=g) for _ in range(4))  # q1, q2, k1, k2 global batch


def _ddp_worker(out_dir: str) -> None:
    """Run by each of two processes (env RANK/WORLD_SIZE/MASTER_*): gathered-key loss on N/2 local
    samples, then two DDP training steps of a tiny MoCoV3 through the harness's training loop."""
    import torch.distributed as dist

    from ssl_bench.data.base import TensorSplit
    from ssl_bench.train.distributed import init_distributed
    from ssl_bench.train.loop import train

    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    rank, world = ctx.rank, ctx.world_size
    q1, q2, k1, k2 = _fixed_qk()
    n = q1.shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    q1l, q2l = q1[sl].clone().requires_grad_(True), q2[sl].clone().requires_grad_(True)
    loss = symmetric_info_nce(q1l, q2l, k1[sl], k2[sl], 0.2)  # keys gathered inside
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= world
    grads = torch.cat([q1l.grad, q2l.grad], dim=0) / world  # what DDP's gradient averaging gives
    grads_all = [torch.empty_like(grads) for _ in range(world)]
    dist.all_gather(grads_all, grads)

    # a tiny MoCoV3 trained for 2 steps by the real loop, wrapped in DDP (no unused-parameter error)
    model = _tiny_method()
    cfg = model.cfg
    cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.batch_size = 1, 0, 16
    split = TensorSplit(_images(32), torch.zeros(32, dtype=torch.long))
    result = train(model, split, cfg, Path(out_dir), ctx)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    flats = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(flats, flat)
    same = all(torch.equal(flats[0], f) for f in flats)
    if rank == 0:
        (Path(out_dir) / "result.json").write_text(json.dumps({
            "loss": float(mean_loss), "grads": torch.cat(grads_all).tolist(), "params_equal": same,
            "steps": result.steps, "momentum": model.momentum, "sync_bn": model.sync_bn,
        }))
    dist.barrier()
    dist.destroy_process_group()


def test_two_rank_gathered_loss_matches_single_process(tmp_path):
    port = str(_free_port())
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests.test_mocov3 import _ddp_worker; _ddp_worker({str(tmp_path)!r})"
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(tmp_path),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    res = json.loads((tmp_path / "result.json").read_text())

    q1, q2, k1, k2 = _fixed_qk()
    q1g, q2g = q1.clone().requires_grad_(True), q2.clone().requires_grad_(True)
    ref = symmetric_info_nce(q1g, q2g, k1, k2, 0.2)  # one process, the global batch of 8
    ref.backward()
    assert res["loss"] == pytest.approx(float(ref.detach()), rel=1e-5)
    # rank r's rows [q1 grads; q2 grads] of its 4 samples, stacked in rank order
    n = 4
    ref_grads = torch.cat([torch.cat([q1g.grad[r * n:(r + 1) * n], q2g.grad[r * n:(r + 1) * n]]) for r in range(2)])
    assert torch.allclose(torch.tensor(res["grads"]), ref_grads, atol=1e-6)
    # the DDP-wrapped method trained (2 steps of global batch 16 over 32 images), ranks stayed in sync
    assert res["steps"] == 2 and res["params_equal"] and not res["sync_bn"]
    assert res["momentum"] == pytest.approx(momentum_at(1.0, 1, 0.99))
    assert math.isfinite(res["loss"])


# ------------------------------------------------------------------------------------ resume


def test_killed_then_resumed_matches_uninterrupted(tmp_path, monkeypatch):
    """The momentum schedule position is checkpointed: a run killed in epoch 2 and resumed from
    the epoch-1 checkpoint ends with exactly the weights of an uninterrupted run."""
    from ssl_bench.data.base import TensorSplit
    from ssl_bench.train.distributed import DistContext
    from ssl_bench.train.loop import train

    ctx = DistContext(0, 1, 0, torch.device("cpu"))
    split = TensorSplit(_images(32), torch.zeros(32, dtype=torch.long))
    extra = ("train.epochs=2", "train.warmup_epochs=1")  # 2 steps per epoch

    full = _tiny_method(*extra)
    (tmp_path / "full").mkdir()
    train(full, split, full.cfg, tmp_path / "full", ctx)

    real_step = MoCoV3.training_step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # first step of epoch 2
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(MoCoV3, "training_step", dying_step)
    killed = _tiny_method(*extra)
    (tmp_path / "killed").mkdir()
    with pytest.raises(KeyboardInterrupt):
        train(killed, split, killed.cfg, tmp_path / "killed", ctx)
    monkeypatch.setattr(MoCoV3, "training_step", real_step)

    resumed = _tiny_method(*extra)
    assert resumed.momentum == pytest.approx(0.99)
    train(resumed, split, resumed.cfg, tmp_path / "killed", ctx, resume=True)
    assert resumed.momentum == full.momentum == pytest.approx(1.0)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
