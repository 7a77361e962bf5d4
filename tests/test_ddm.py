"""DiT DDM as an Improved DDPM: learned variance, hybrid loss, importance sampling, test NLL, samples.

Checked against facebookresearch/DiT ``models.py`` (learn_sigma doubles the output channels) and
openai/improved-diffusion ``improved_diffusion/gaussian_diffusion.py`` (``p_mean_variance``,
``training_losses``) and ``improved_diffusion/resample.py`` (``LossSecondMomentResampler``), on the
real method (tiny DiT on digits, CPU).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from ssl_bench.diffusion import LossSecondMomentSampler
from ssl_bench.distributed import DistContext
from ssl_bench.registry import get_registry
from ssl_bench.results.leaderboard import build_leaderboard
from ssl_bench.results.store import ResultsStore
from ssl_bench.run import build_method, load_dataset, run_method

CPU = DistContext(0, 1, 0, torch.device("cpu"))


def _ddm(tiny_cfg, *extra, limit_train: int = 128):
    cfg = tiny_cfg("ddm", f"dataset.limit_train={limit_train}", *extra)
    ds = load_dataset(cfg, get_registry())
    torch.manual_seed(0)
    m = build_method(cfg, get_registry(), ds.info)
    m.prepare(ds.train, torch.Generator().manual_seed(0))
    return m, ds, cfg


def _x0(m, ds, n=8):
    images, labels = next(iter(ds.train.batches(n)))
    return m.latent_image(m.tokenizer.encode(m.preprocess_eval(images))), labels  # [n, C, h, w]


# -- learned variance ------------------------------------------------------------------------------


def test_learned_variance_doubles_output_channels(tiny_cfg):
    m, ds, _ = _ddm(tiny_cfg)
    d = m.tokenizer.latent_dim  # patch PCA on 2x2x1 digit patches: d = 2
    assert m.use_diffusion and m.diffusion.model_var_type == "learned_range" and m.diffusion.loss_type == "mse"
    assert m.backbone.out_dim == 2 * d and m.backbone.final_layer.linear.out_features == 2 * d
    x0, _ = _x0(m, ds)
    assert x0.shape == (8, d, 4, 4)  # latent tokens [B, 16, d] laid out as [B, d, 4, 4]
    out = m.model_fn()(x0, torch.full((8,), 10))
    assert out.shape == (8, 2 * d, 4, 4)
    assert torch.equal(out, torch.zeros_like(out))  # DiT's zero-init kept on the doubled head
    # v = 0 at init -> geometric mean of beta~_t and beta_t (IDDPM p_mean_variance, learned range)
    t = torch.full((8,), 10)
    p = m.diffusion.p_mean_variance(m.model_fn(), x0, t)
    ref = 0.5 * (math.log(m.diffusion.betas[10]) + m.diffusion.posterior_log_variance_clipped[10])
    torch.testing.assert_close(p.log_variance, torch.full_like(p.log_variance, ref))


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large"])
def test_fixed_variance_keeps_single_head(tiny_cfg, var_type):
    m, ds, _ = _ddm(tiny_cfg, f"method.diffusion.var_type='{var_type}'")
    assert m.backbone.out_dim == m.tokenizer.latent_dim and m.diffusion.model_var_type == var_type
    out = m.training_step(*next(iter(ds.train.batches(16))), torch.Generator().manual_seed(0))
    assert float(out.logs["vb"]) == 0.0 and torch.allclose(out.loss, out.logs["mse"])


def test_non_ddpm_rows_fall_back_and_forcing_them_is_an_error(tiny_cfg):
    x0_row = ("method.target.name='clean-latent'",)
    m, ds, _ = _ddm(tiny_cfg, *x0_row)
    assert not m.use_diffusion and m.backbone.out_dim == m.tokenizer.latent_dim
    assert m.extra_evaluations(ds, torch.device("cpu")) == []
    with pytest.raises(ValueError, match="needs a DDPM config"):
        _ddm(tiny_cfg, *x0_row, "method.diffusion.enabled=True")


# -- hybrid loss -----------------------------------------------------------------------------------


def test_hybrid_loss_on_the_real_model_vb_trains_only_the_variance(tiny_cfg):
    m, ds, _ = _ddm(tiny_cfg)
    with torch.no_grad():  # leave zero-init so that both heads have a non-trivial output
        for p in m.backbone.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x0, _ = _x0(m, ds)
    C = x0.shape[1]
    t = torch.tensor([0, 1, 5, 50, 200, 500, 900, 999])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    outputs = []
    fn = m.model_fn()

    def spy(x, tt, **kw):
        out = fn(x, tt, **kw)
        out.retain_grad()
        outputs.append(out)
        return out

    terms = m.diffusion.training_losses(spy, x0, t, noise)
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])  # T = 1000: mse + (T/1000) vb
    assert (terms["vb"] > 0).all()
    terms["vb"].sum().backward(retain_graph=True)
    g = outputs[0].grad  # [8, 2C, 4, 4]
    assert torch.equal(g[:, :C], torch.zeros_like(g[:, :C]))  # mean detached inside vb
    assert g[:, C:].abs().sum() > 0  # ... vb reaches the variance channels
    outputs[0].grad = None
    terms["mse"].sum().backward()
    g = outputs[0].grad
    assert torch.equal(g[:, C:], torch.zeros_like(g[:, C:])) and g[:, :C].abs().sum() > 0  # L_simple: mean only
    # the method's own step is exactly that loss averaged (uniform sampler: weights 1)
    images, labels = next(iter(ds.train.batches(16)))
    out = m.training_step(images, labels, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.loss.detach(), out.logs["mse"] + out.logs["vb"])


def test_rescaled_mse_multiplies_vb_by_T_over_1000(tiny_cfg):
    m, ds, _ = _ddm(tiny_cfg, "method.noise_schedule.T=4000", "method.diffusion.loss_type='rescaled_mse'")
    x0, _ = _x0(m, ds)
    t = torch.tensor([0, 3, 100, 3999] * 2)
    terms = m.diffusion.training_losses(m.model_fn(), x0, t, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms["loss"], terms["mse"] + 4.0 * terms["vb"])


# -- importance sampling ---------------------------------------------------------------------------


def test_loss_second_moment_sampler_weights_history_and_state(tiny_cfg, monkeypatch):
    m, ds, cfg = _ddm(tiny_cfg, "method.diffusion.timestep_sampler='loss-second-moment'")
    s = m.timestep_sampler
    assert isinstance(s, LossSecondMomentSampler) and s.history_per_term == 10 and s.uniform_prob == 0.001
    T = m.diffusion.num_timesteps
    # a warmed-up, strongly non-uniform history: L_t ~ 1 / (t + 1)
    hist = np.repeat((1.0 / (np.arange(T) + 1.0))[:, None], 10, axis=1)
    s.load_state_dict({"history": hist, "counts": np.full(T, 10)})
    assert s.warmed_up()
    seen = {}
    real = m.diffusion.training_losses

    def spy(model_fn, x0, t, noise=None, model_kwargs=None, generator=None):
        terms = real(model_fn, x0, t, noise, model_kwargs, generator)
        seen.update(t=t.clone(), loss=terms["loss"].detach().clone())
        return terms

    monkeypatch.setattr(m.diffusion, "training_losses", spy)
    images, labels = next(iter(ds.train.batches(32)))
    out = m.training_step(images, labels, torch.Generator().manual_seed(0))
    t, per_sample = seen["t"], seen["loss"]
    # importance weights 1/(T p_t) applied to the per-sample losses, p_t from the history before the step
    p_before = np.sqrt(np.mean(hist**2, axis=-1))
    p_before = p_before / p_before.sum() * (1 - 0.001) + 0.001 / T
    expected = (per_sample * torch.from_numpy(1.0 / (T * p_before[t.numpy()])).float()).mean()
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-5, atol=1e-7)
    assert (t < 50).float().mean() > 0.5  # sampling follows the (small-t heavy) distribution
    # history updated FIFO with the raw per-sample losses (last entry of each drawn t)
    for ti in t.unique().tolist():
        last = per_sample[t == ti][-1].item()
        assert s._history[ti, -1] == pytest.approx(last, rel=1e-6)
    # state travels with the model's state_dict (checkpoint) and loads with weights_only=True
    state = m.state_dict()
    assert "_extra_state" in state and state["_extra_state"]["timestep_sampler"] == "loss-second-moment"
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    fresh = build_method(cfg, get_registry(), ds.info)
    assert not fresh.timestep_sampler.warmed_up()
    fresh.load_state_dict(loaded)
    np.testing.assert_array_equal(fresh.timestep_sampler._history, s._history)
    np.testing.assert_array_equal(fresh.timestep_sampler.weights(), s.weights())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(m.sample_timesteps(64, g1, torch.device("cpu"))[0], fresh.sample_timesteps(64, g2, torch.device("cpu"))[0])


def test_cold_sampler_is_uniform_and_records_every_loss(tiny_cfg):
    m, ds, _ = _ddm(tiny_cfg, "method.diffusion.timestep_sampler='loss-second-moment'")
    images, labels = next(iter(ds.train.batches(32)))
    m.training_step(images, labels, torch.Generator().manual_seed(0))
    assert m.timestep_sampler._counts.sum() == 32  # one history entry per sample
    _, w = m.sample_timesteps(8, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.equal(w, torch.ones(8))  # not warmed up: uniform, weights exactly 1


# -- NLL and samples -------------------------------------------------------------------------------


def _train(m, ds, steps: int, lr: float = 2e-3) -> None:
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    done = 0
    while done < steps:
        for images, labels in ds.train.batches(64, shuffle=True, generator=g, drop_last=True):
            out = m(images, labels, g)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    m.eval()


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["pixel", "patch-pca"])
def test_training_lowers_test_nll_bits_per_dim(tiny_cfg, tokenizer):
    """A tiny DDM (DiT width 32, 2+2 blocks) on 512 digits for 300 steps beats its own initialisation.
    pixel: exact 8-bit bits/dim; patch-pca (default): bits per latent dim, continuous decoder."""
    m, ds, _ = _ddm(tiny_cfg, f"method.tokenizer.name='{tokenizer}'", "method.nll.num_images=32", limit_train=512)
    m.eval()
    before = m.evaluate_nll(ds.test, torch.device("cpu"))
    _train(m, ds, steps=300)
    after = m.evaluate_nll(ds.test, torch.device("cpu"))
    space = "pixel" if tokenizer == "pixel" else "latent"
    assert before.protocol["space"] == after.protocol["space"] == space
    assert after.protocol["num_images"] == 32 and after.protocol["timesteps"].startswith("39 of 1000")
    for res in (before, after):
        assert all(math.isfinite(v) for v in res.metrics.values())
    drop = before.metrics["nll_bpd"] - after.metrics["nll_bpd"]
    assert drop > 3 * (before.metrics["nll_bpd_stderr"] + after.metrics["nll_bpd_stderr"]), (before.metrics, after.metrics)


def test_full_vlb_and_subset_agree_on_decoder_and_prior(tiny_cfg):
    m, ds, _ = _ddm(tiny_cfg, "method.tokenizer.name='pixel'", "method.nll.num_images=4", "method.nll.batch_size=4")
    m.eval()
    sub = m.evaluate_nll(ds.test, torch.device("cpu"))
    m.nll_cfg["full"] = True
    full = m.evaluate_nll(ds.test, torch.device("cpu"))
    assert full.protocol["timesteps"] == "all" and full.metrics["nll_bpd_interp_err"] == 0.0
    assert full.metrics["nll_prior_bpd"] == pytest.approx(sub.metrics["nll_prior_bpd"])
    assert full.metrics["nll_decoder_bpd"] == pytest.approx(sub.metrics["nll_decoder_bpd"])  # same first noise draw
    assert abs(full.metrics["nll_bpd"] - sub.metrics["nll_bpd"]) < 5 * sub.metrics["nll_bpd_interp_err"] + 0.5


@pytest.mark.parametrize("extra,sampler", [((), "ddim"), (("method.class_cond=True",), "ddpm")])
def test_samples_png_written(tiny_cfg, tmp_path, extra, sampler):
    from PIL import Image

    m, ds, _ = _ddm(tiny_cfg, *extra)
    images = m.sample_images(num=6, steps=10, sampler=sampler, cfg_scale=2.0, seed=3)
    assert images.shape == (6, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    again = m.sample_images(num=6, steps=10, sampler=sampler, cfg_scale=2.0, seed=3)
    assert torch.equal(images, again)  # seeded
    path = m.write_samples(tmp_path / "grid.png", num=6, steps=10, sampler=sampler)
    with Image.open(path) as im:
        assert im.size[0] > 48 * 3 and im.mode == "RGB"


def test_run_writes_nll_and_samples_then_cli_sample_and_leaderboard(tiny_cfg, tmp_path):
    from ssl_bench.cli import main

    store = ResultsStore(tmp_path / "results.db")
    cfg = tiny_cfg("ddm", "train.epochs=1", "method.nll.num_images=16", "method.samples.steps=5", "method.figures=False")
    out = run_method("ddm", cfg, store, CPU)
    assert (out.run_dir / "samples.png").stat().st_size > 100
    assert math.isfinite(out.metrics["nll_bpd"]) and "nll_bpd_stderr" in out.metrics
    table = build_leaderboard(store, dataset="digits", backbone="vit-nano")
    row = table[table["method"] == "ddm"].iloc[0]
    assert "NLL (bits/dim)" in table.columns and row["NLL (bits/dim)"] == pytest.approx(out.metrics["nll_bpd"], abs=1e-4)

    png = tmp_path / "cli.png"
    rc = main(["sample", str(out.run_dir), "--steps", "4", "--num", "4", "--sampler", "ddpm", "--output", str(png), "--device", "cpu"])
    assert rc == 0 and png.stat().st_size > 100
    rc = main(["sample", str(out.run_dir), "--steps", "4", "--num", "4", "--device", "cpu"])  # default: RUN_DIR/samples.png
    assert rc == 0


def test_cli_sample_rejects_non_run_dir(tmp_path, capsys):
    from ssl_bench.cli import main

    assert main(["sample", str(tmp_path)]) == 2
    assert "not an ssl-bench run directory" in capsys.readouterr().err


def test_resume_with_importance_sampler_matches_uninterrupted(tiny_cfg, tmp_path, monkeypatch):
    """T = 25 and one history entry per t: the sampler warms up in epoch 1 and importance-samples in
    epochs 2-3, so a resumed run only matches if the checkpoint carried the sampler state."""
    from ssl_bench.train.checkpoint import CHECKPOINT_NAME
    from ssl_bench_plugins.ddm.method import DDM

    store = ResultsStore(tmp_path / "results.db")
    extra = ("train.epochs=3", "method.noise_schedule.T=25", "method.diffusion.timestep_sampler='loss-second-moment'",
             "method.diffusion.sampler_history=1", "method.nll.num_images=8", "method.samples.enabled=False", "method.figures=False")
    full = run_method("ddm", tiny_cfg("ddm", *extra), store, CPU)
    ckpt = torch.load(full.run_dir / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["model"]["_extra_state"]["counts"].min() == 1  # warmed up: weights are non-uniform

    real_step, calls = DDM.training_step, {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4 + 2:  # 4 steps per epoch: dies in the middle of epoch 2
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(DDM, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_method("ddm", tiny_cfg("ddm", *extra), store, CPU)
    monkeypatch.setattr(DDM, "training_step", real_step)
    killed = max((p for p in full.run_dir.parent.iterdir() if p != full.run_dir), key=lambda p: p.stat().st_mtime)
    resumed = run_method("ddm", tiny_cfg("ddm", *extra), store, CPU, resume=killed)
    assert resumed.metrics == full.metrics
