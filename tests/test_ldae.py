"""l-DAE / DiT-DDM: loss weights (l-DAE §4.3 Eq. 4), noise, targets, training steps, checkpoint, figures."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.components.base import Corrupted
from ssl_bench.components.latent_targets import (
    CleanLatentTarget,
    InverseTokenizerImageTarget,
    NoiseTarget,
    OriginalImageTarget,
    pca_direction_weights,
)
from ssl_bench.components.targets import reconstruction_loss
from ssl_bench.components.noise import AdditiveLatentNoise
from ssl_bench.components.patches import patchify
from ssl_bench.components.schedules import Gamma2LinearSchedule, LinearBetaSchedule, SigmaLinearSchedule
from ssl_bench.components.tokenizers import PatchPCATokenizer
from ssl_bench.errors import ConfigError
from ssl_bench.registry import get_registry
from ssl_bench.run.assemble import build_method
from ssl_bench.runner import load_dataset


@pytest.fixture(scope="module")
def pca():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.randn(64, 3, 4, 4, generator=g), size=(8, 8), mode="bilinear")
    tok = PatchPCATokenizer(4, 3, 6)
    tok.fit(x + 0.05 * torch.randn(x.shape, generator=g))
    return tok


def test_pca_direction_weights_1_and_0p1():
    w = pca_direction_weights(768, 32)
    assert w.shape == (768,)
    assert torch.all(w[:32] == 1.0) and torch.allclose(w[32:], torch.full((736,), 0.1))
    assert pca_direction_weights(4, 2, residual_weight=0.5).tolist() == [1.0, 1.0, 0.5, 0.5]


def test_original_image_target_weights_and_lambda(pca):
    sched = SigmaLinearSchedule(1000)
    target = OriginalImageTarget(pca, sched, residual_weight=0.1)
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([0, 10, 500])
    cor = Corrupted(t=t)
    coords, weight = target(x, pca.encode(x), cor)
    assert coords.shape == (3, 4, 48) and weight.shape == (3, 1, 48)
    sigma = math.sqrt(2) * t.double() / 1000
    lam = 1 / (1 + sigma**2)  # lambda_t = 1/(1+sigma^2)
    assert abs(lam[2].item() - 2 / 3) < 1e-12
    torch.testing.assert_close(weight[:, 0, 0].double(), lam, rtol=1e-6, atol=0)
    torch.testing.assert_close(weight[:, 0, 6:].double(), 0.1 * lam[:, None].expand(3, 42), rtol=1e-6, atol=0)
    # Eq. 4 exactly: lambda_t * sum_i w_i r_i^2 with r = V_full (x0 - pred), averaged over patches/values
    pred = torch.randn(3, 4, 48)
    loss = reconstruction_loss(target.to_loss_space(pred), coords, weight)
    r = (patchify(x, 4) - pred) @ pca.basis.T  # [3, 4, 48]
    w = pca_direction_weights(48, 6)
    ref = (lam.float().view(3, 1) * (r**2 * w).sum(-1)).mean() / 48
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)


def test_other_targets_and_lambda_rules(pca):
    z0 = torch.randn(2, 4, 6)
    noise = torch.randn(2, 4, 6)
    t = torch.tensor([100, 900])
    eps_t, eps_w = NoiseTarget(LinearBetaSchedule())(None, z0, Corrupted(t=t, noise=noise))
    assert torch.equal(eps_t, noise) and torch.equal(eps_w, torch.ones(2, 1, 1))
    g2 = Gamma2LinearSchedule(1000)  # x0 weight on a VP schedule is gamma_t^2 (Eq. 3)
    z_t, w = CleanLatentTarget(g2)(None, z0, Corrupted(t=t))
    assert torch.equal(z_t, z0)
    torch.testing.assert_close(w.view(-1).double(), torch.tensor([1 - 101 / 1000, 1 - 901 / 1000], dtype=torch.float64))
    x = torch.randn(2, 3, 8, 8)
    inv, _ = InverseTokenizerImageTarget(pca, 4, g2)(x, pca.encode(x), Corrupted(t=t))
    torch.testing.assert_close(inv, pca.project(patchify(x, 4)), atol=1e-5, rtol=1e-5)  # V^T V x0 (+ mu)


def test_additive_latent_noise(pca):
    sched = SigmaLinearSchedule(1000)
    noise = AdditiveLatentNoise(sched)
    z0 = torch.randn(5, 4, 6)
    out = noise(z0, torch.Generator().manual_seed(0))
    sig = sched.sigma(out.t)
    assert torch.all(out.gamma == 1) and torch.allclose(out.sigma, sig)
    torch.testing.assert_close(out.z_t, z0 + sig.view(-1, 1, 1) * out.noise)
    again = noise(z0, torch.Generator().manual_seed(0))
    assert torch.equal(again.z_t, out.z_t)  # reproducible from the generator
    with pytest.raises(ValueError, match="noise schedule"):
        AdditiveLatentNoise(None)


def _method(tiny_cfg, name, *extra):
    cfg = tiny_cfg(name, "dataset.limit_train=128", *extra)
    ds = load_dataset(cfg, get_registry())
    m = build_method(cfg, get_registry(), ds.info)
    m.prepare(ds.train, torch.Generator().manual_seed(0))
    return m, ds


def _train_losses(m, ds, steps=12, lr=2e-3):
    images, labels = next(iter(ds.train.batches(32)))
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        out = m(images, labels, torch.Generator().manual_seed(0))  # same t / noise every step
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize("name,extra", [
    ("ldae", ()),
    ("ddm", ()),
    ("ddm", ("method.class_cond=True",)),
    ("ldae", ("method.tokenizer.name='patch-ae'", "method.tokenizer.steps=30")),
    ("ldae", ("method.input_space='latent'", "method.target='clean-latent'", "method.noise_schedule.name='gamma2-linear'")),
    ("ldae", ("method.target='inverse-tokenizer-image'",)),
    ("ldae", ("method.tokenizer.name='conv-vae'", "method.tokenizer.steps=20", "method.tokenizer.width=8",
              "method.input_space='latent'", "method.target='noise'")),
])
def test_training_step_finite_and_decreasing(tiny_cfg, name, extra):
    torch.manual_seed(0)
    m, ds = _method(tiny_cfg, name, *extra)
    losses = _train_losses(m, ds)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert m.uses_labels == ("method.class_cond=True" in extra)
    feats = m.probe_features(torch.randn(3, 1, 8, 8))
    assert feats.shape == (3, 32) and torch.isfinite(feats).all()


def test_ldae_defaults_and_fresh_prediction_is_zero(tiny_cfg):
    m, ds = _method(tiny_cfg, "ldae")
    assert isinstance(m.tokenizer, PatchPCATokenizer) and m.tokenizer.latent_dim == 2  # 2x2x1 digits patches
    assert m.noise_schedule.name == "sigma-linear" and m.input_space == m.target.output_space == "image"
    assert m.backbone.encoder_depth == 2 and m.backbone.decoder_depth == 2  # tiny backbone depth 2 -> 2 + 2
    images, labels = next(iter(ds.train.batches(8)))
    x = m.augment(images, torch.Generator().manual_seed(0))
    z0 = m.tokenizer.encode(x)
    noisy = m.corruption(z0, torch.Generator().manual_seed(0))
    assert torch.equal(m.predict(m.network_input(noisy.z_t), noisy), torch.zeros(8, 16, 4))  # DiT zero-init inside the method
    # probe: clean image at t = 10 through the encoder half
    m.eval()
    f = m.probe_features(torch.randn(2, 1, 8, 8))
    assert f.shape == (2, 32)
    assert m.probe_protocol()["t"] == 10


def test_config_mismatch_is_a_clear_error(tiny_cfg):
    with pytest.raises(ConfigError, match=r"target 'noise' predicts 4 latent tokens per image with tokenizer 'conv-vae'.*16 tokens \(image input\)"):
        _method(tiny_cfg, "ldae", "method.target='noise'", "method.tokenizer.name='conv-vae'", "method.tokenizer.num_down=1")


def test_checkpoint_round_trip_restores_pca(tiny_cfg):
    m, ds = _method(tiny_cfg, "ldae")
    _train_losses(m, ds, steps=2)
    state = m.state_dict()
    assert "tokenizer.basis" in state and "tokenizer.mean" in state
    cfg = tiny_cfg("ldae", "dataset.limit_train=128")
    fresh = build_method(cfg, get_registry(), ds.info)
    fresh.load_state_dict(state)  # no prepare(): everything comes from the checkpoint
    m.eval(), fresh.eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(m.probe_features(x), fresh.probe_features(x))


def test_figures_and_pca_basis_written(tiny_cfg, tmp_path):
    from ssl_bench.methods.denoising_figures import write_figures

    m, ds = _method(tiny_cfg, "ldae")
    m.eval()
    paths = write_figures(m, m._figure_images, tmp_path)
    assert sorted(p.name for p in paths) == ["fig4_pca_bases.png", "fig7_noise_latent_vs_pixel.png", "fig8_denoising.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    saved = torch.load(m.save_tokenizer(tmp_path), weights_only=True)
    assert torch.equal(saved["basis"], m.tokenizer.basis) and saved["latent_dim"] == 2


def test_resumed_run_still_writes_its_figures(tiny_cfg, tmp_path, monkeypatch):
    from ssl_bench.results.store import ResultsStore
    from ssl_bench.runner import run_method
    from ssl_bench.train.distributed import DistContext
    from ssl_bench_plugins.ldae.method import LDAE

    cpu = DistContext(0, 1, 0, torch.device("cpu"))
    store = ResultsStore(tmp_path / "results.db")
    real_step, calls = LDAE.training_step, {"n": 0}

    def dies_in_epoch_2(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # 4 steps per epoch
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(LDAE, "training_step", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_method("ldae", tiny_cfg("ldae", "train.epochs=2"), store, cpu)
    monkeypatch.setattr(LDAE, "training_step", real_step)
    run_dir = next((tmp_path / "runs" / "digits" / "vit-nano").glob("ldae-s0"))
    assert not list(run_dir.glob("fig*.png"))  # figures come after training
    resumed = run_method("ldae", tiny_cfg("ldae", "train.epochs=2"), store, cpu, resume=run_dir)
    assert resumed.run_dir == run_dir
    assert sorted(p.name for p in run_dir.glob("fig*.png")) == ["fig4_pca_bases.png", "fig7_noise_latent_vs_pixel.png", "fig8_denoising.png"]
