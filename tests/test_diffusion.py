"""Gaussian diffusion core against openai/improved-diffusion ``improved_diffusion/gaussian_diffusion.py``
(reference values computed in float64 from its tables and formulas), plus respacing, samplers and CFG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_bench.components.schedules import LinearBetaSchedule, cosine_betas, linear_betas
from ssl_bench.diffusion import (
    GaussianDiffusion,
    LossSecondMomentSampler,
    UniformSampler,
    cfg_model_fn,
    create_diffusion,
    ddim_sample_loop,
    ddpm_sample_loop,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
    respace,
    respaced_betas,
    space_timesteps,
)
from ssl_bench.diffusion.gaussian import approx_standard_normal_cdf

close = np.testing.assert_allclose
F64 = torch.float64


def _t(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long)


# ---- posterior (GaussianDiffusion.__init__, q_posterior_mean_variance) ----------------------------


def test_posterior_variance_linear():
    d = GaussianDiffusion(linear_betas(1000))
    assert d.posterior_variance[0] == 0.0
    close(d.posterior_variance[1], 5.4531876613e-05, rtol=1e-9)
    close(d.posterior_variance[999], 0.0199999835, rtol=1e-8)
    close(d.posterior_log_variance_clipped[0], -9.816725, rtol=1e-6)
    close(d.posterior_log_variance_clipped[0], math.log(d.posterior_variance[1]), rtol=1e-15)
    close(d.posterior_log_variance_clipped[1:], np.log(d.posterior_variance[1:]), rtol=1e-15)


def test_posterior_variance_cosine():
    d = GaussianDiffusion(cosine_betas(1000))
    close(d.posterior_variance[1], 2.17894961e-05, rtol=1e-8)
    close(d.posterior_log_variance_clipped[0], -10.734083, rtol=1e-6)


def test_posterior_mean_coefficients():
    d = GaussianDiffusion(linear_betas(1000))
    close(d.posterior_mean_coef1[1], 0.5452915, rtol=1e-6)
    # c2 = (1 - abar_0) sqrt(1 - beta_1) / (1 - abar_1) (IDDPM posterior_mean_coef2); checked with
    # 40-digit Decimal arithmetic: 0.45470849899..., i.e. 0.4547085.
    close(d.posterior_mean_coef2[1], 0.4547085, rtol=1e-6)


def test_posterior_matches_bayes_rule():
    """q(x_{t-1}|x_t,x_0) from conjugate Gaussian algebra, independent of the coefficient tables."""
    d = GaussianDiffusion(cosine_betas(100))
    t = np.array([1, 7, 50, 99])
    abar_prev, alpha, beta = d.alphas_cumprod_prev[t], d.alphas[t], d.betas[t]
    precision = 1.0 / (1.0 - abar_prev) + alpha / beta
    var = 1.0 / precision
    x0, xt = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    mean_expect = var[:, None] * (np.sqrt(abar_prev)[:, None] * x0.numpy() / (1 - abar_prev)[:, None] + np.sqrt(alpha)[:, None] * xt.numpy() / beta[:, None])
    mean, variance, _ = d.q_posterior_mean_variance(x0, xt, _t(t))
    close(mean.numpy(), mean_expect, rtol=1e-10)
    close(variance.numpy().ravel(), var, rtol=1e-10)


# ---- forward process, extraction ---------------------------------------------------------------


def test_q_sample_matches_schedule_and_casts_after_indexing():
    sched = LinearBetaSchedule(1000)
    d = GaussianDiffusion(sched.betas())
    t = _t([0, 10, 499, 999])
    x0, eps = torch.randn(4, 2, 3, 3, dtype=F64), torch.randn(4, 2, 3, 3, dtype=F64)
    close(d.q_sample(x0, t, eps).numpy(), sched.add_noise(x0, t, eps).numpy(), rtol=1e-13)
    x32, e32 = x0.float(), eps.float()
    got = d.q_sample(x32, t, e32)
    assert got.dtype == torch.float32
    a = torch.from_numpy(d.sqrt_alphas_cumprod[t.numpy()]).float().view(4, 1, 1, 1)
    b = torch.from_numpy(d.sqrt_one_minus_alphas_cumprod[t.numpy()]).float().view(4, 1, 1, 1)
    assert torch.equal(got, a * x32 + b * e32)


def test_xstart_eps_roundtrip():
    d = GaussianDiffusion(linear_betas(1000))
    t = _t([0, 3, 500, 999])
    x0, eps = torch.randn(4, 3, 4, 4, dtype=F64), torch.randn(4, 3, 4, 4, dtype=F64)
    xt = d.q_sample(x0, t, eps)
    close(d.predict_xstart_from_eps(xt, t, eps).numpy(), x0.numpy(), atol=1e-9)
    close(d.predict_eps_from_xstart(xt, t, x0).numpy(), eps.numpy(), atol=1e-9)


# ---- learned range (IDDPM §3.1 Eq. 15, p_mean_variance), fixed variances --------------------------


def _const_model(out: torch.Tensor):
    return lambda x, t, **kw: out


def test_learned_range_endpoints():
    d = GaussianDiffusion(linear_betas(1000), "eps", "learned_range")
    t = _t([0, 1, 10, 500, 999])
    x = torch.randn(5, 2, 3, dtype=F64)
    eps = torch.randn(5, 2, 3, dtype=F64)
    post_clipped = np.exp(d.posterior_log_variance_clipped[t.numpy()])[:, None, None]
    beta = d.betas[t.numpy()][:, None, None]

    def var_at(v: float) -> np.ndarray:
        out = torch.cat([eps, torch.full_like(eps, v)], dim=1)
        return d.p_mean_variance_from_output(out, x, t).variance.numpy()

    close(var_at(-1.0), np.broadcast_to(post_clipped, x.shape), rtol=1e-12)
    close(var_at(1.0), np.broadcast_to(beta, x.shape), rtol=1e-12)
    close(var_at(0.0), np.broadcast_to(np.sqrt(beta * post_clipped), x.shape), rtol=1e-12)
    # for t >= 1 the lower end is the true posterior variance beta~_t
    close(var_at(-1.0)[1:, 0, 0], d.posterior_variance[t.numpy()[1:]], rtol=1e-12)
    # v is not clamped: v = 3 extrapolates in log space
    close(var_at(3.0), np.broadcast_to(beta**2 / post_clipped, x.shape), rtol=1e-10)


def test_fixed_variances():
    betas = linear_betas(1000)
    t = _t([0, 1, 999])
    x = torch.randn(3, 2, dtype=F64)
    small = GaussianDiffusion(betas, "eps", "fixed_small").p_mean_variance_from_output(x, x, t)
    large = GaussianDiffusion(betas, "eps", "fixed_large").p_mean_variance_from_output(x, x, t)
    post = GaussianDiffusion(betas).posterior_variance
    close(small.variance[:, 0].numpy(), post[[0, 1, 999]], rtol=1e-14)
    close(small.log_variance[:, 0].numpy(), np.log([post[1], post[1], post[999]]), rtol=1e-14)
    close(large.variance[:, 0].numpy(), [post[1], betas[1], betas[999]], rtol=1e-14)


def test_output_channel_check():
    d = GaussianDiffusion(linear_betas(1000), "eps", "learned_range")
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="6 channels"):
        d.p_mean_variance_from_output(torch.randn(2, 3, 4, 4), x, _t([1, 2]))


# ---- KL and discretised likelihood -------------------------------------------------------------


def test_normal_kl():
    g = torch.Generator().manual_seed(0)
    m, lv = torch.randn(1000, generator=g, dtype=F64), torch.randn(1000, generator=g, dtype=F64)
    close(normal_kl(m, lv, m, lv).numpy(), 0.0, atol=1e-15)  # identical Gaussians (up to rounding of -1 + lv - lv)
    close(normal_kl(torch.zeros(1, dtype=F64), 0.0, 1.0, 0.0).numpy(), [0.5], rtol=1e-15)
    s1, s2 = 0.7, 1.9  # KL(N(0,s1^2)||N(0,s2^2)) = log(s2/s1) + s1^2/(2 s2^2) - 1/2
    got = normal_kl(torch.zeros(1, dtype=F64), 2 * math.log(s1), 0.0, 2 * math.log(s2))
    close(got.numpy(), [math.log(s2 / s1) + s1**2 / (2 * s2**2) - 0.5], rtol=1e-13)
    assert torch.all(normal_kl(m, lv, torch.randn(1000, generator=g, dtype=F64), torch.randn(1000, generator=g, dtype=F64)) >= 0)


def test_approx_cdf_is_close_to_normal_cdf():
    x = torch.linspace(-5, 5, 101, dtype=F64)
    exact = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    assert (approx_standard_normal_cdf(x) - exact).abs().max() < 1e-3


@pytest.mark.parametrize("mean,log_scale", [(0.0, math.log(0.1)), (0.93, math.log(0.02)), (-0.4, math.log(1.5)), (0.2, math.log(0.001))])
def test_discretized_likelihood_sums_to_one(mean, log_scale):
    bins = -1.0 + 2.0 * torch.arange(256, dtype=F64) / 255.0  # the 256 8-bit values in [-1, 1]
    logp = discretized_gaussian_log_likelihood(bins, torch.full_like(bins, mean), torch.full_like(bins, log_scale))
    assert logp.shape == (256,)
    close(logp.exp().sum().item(), 1.0, atol=1e-9)


def test_discretized_likelihood_edges_and_clamp():
    x = torch.tensor([-1.0, 1.0, 0.0], dtype=F64)
    means = torch.tensor([-1.0, 1.0, 0.9], dtype=F64)
    logp = discretized_gaussian_log_likelihood(x, means, torch.full_like(x, math.log(1e-4)))
    close(logp[:2].numpy(), 0.0, atol=1e-12)  # all mass in the edge bins
    close(logp[2].item(), math.log(1e-12), rtol=1e-12)  # far bin: clamped at 1e-12


# ---- hybrid loss (IDDPM §3.1 Eq. 16, training_losses) -------------------------------------------


def _hybrid_setup(T: int, loss_type: str, mean_type: str = "eps"):
    d = GaussianDiffusion(cosine_betas(T), mean_type, "learned_range", loss_type)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 4, 4, generator=g, dtype=F64) * 2 - 1
    noise = torch.randn(4, 3, 4, 4, generator=g, dtype=F64)
    t = _t([0, 1, T // 2, T - 1])
    out = (0.3 * torch.randn(4, 6, 4, 4, generator=g, dtype=F64)).requires_grad_(True)
    return d, x0, noise, t, out


@pytest.mark.parametrize("T,loss_type,factor", [(1000, "mse", 1.0), (1000, "rescaled_mse", 1.0), (4000, "rescaled_mse", 4.0), (4000, "mse", 1.0)])
def test_hybrid_loss_composition(T, loss_type, factor):
    d, x0, noise, t, out = _hybrid_setup(T, loss_type)
    terms = d.training_losses(_const_model(out), x0, t, noise=noise)
    assert set(terms) == {"loss", "mse", "vb"} and terms["loss"].shape == (4,)
    close(terms["mse"].detach().numpy(), mean_flat((noise - out[:, :3]) ** 2).detach().numpy(), rtol=1e-14)
    xt = d.q_sample(x0, t, noise)
    vb_expect, _ = d.vb_terms_bpd(out.detach(), x0, xt, t)
    close(terms["vb"].detach().numpy(), vb_expect.numpy(), rtol=1e-14)
    close(terms["loss"].detach().numpy(), (terms["mse"] + factor * terms["vb"]).detach().numpy(), rtol=1e-14)


def test_hybrid_vb_gradient_reaches_variance_only():
    d, x0, noise, t, out = _hybrid_setup(1000, "mse")
    terms = d.training_losses(_const_model(out), x0, t, noise=noise)
    (grad,) = torch.autograd.grad(terms["vb"].sum(), out, retain_graph=True)
    assert torch.all(grad[:, :3] == 0)  # mean detached inside vb
    assert grad[:, 3:].abs().sum() > 0  # v is trained by vb
    # and the total loss trains the mean through mse only
    (grad_loss,) = torch.autograd.grad(terms["loss"].sum(), out)
    (grad_mse,) = torch.autograd.grad(mean_flat((noise - out[:, :3]) ** 2).sum(), out)
    close(grad_loss[:, :3].numpy(), grad_mse[:, :3].numpy(), rtol=1e-14)


@pytest.mark.parametrize("loss_type,factor", [("kl", 1.0), ("rescaled_kl", 1000.0)])
def test_kl_loss_trains_mean_and_variance(loss_type, factor):
    d, x0, noise, t, out = _hybrid_setup(1000, loss_type)
    terms = d.training_losses(_const_model(out), x0, t, noise=noise)
    close(terms["loss"].detach().numpy(), factor * terms["vb"].detach().numpy(), rtol=1e-14)
    (grad,) = torch.autograd.grad(terms["loss"].sum(), out)
    assert grad[:, :3].abs().sum() > 0 and grad[:, 3:].abs().sum() > 0
    assert not terms["mse"].requires_grad


def test_vb_t0_is_decoder_nll_and_t_gt0_is_kl():
    d, x0, noise, t, out = _hybrid_setup(1000, "mse")
    xt = d.q_sample(x0, t, noise)
    vb, p = d.vb_terms_bpd(out.detach(), x0, xt, t)
    nll = -discretized_gaussian_log_likelihood(x0, p.mean, 0.5 * p.log_variance)
    close(vb[0].item(), mean_flat(nll)[0].item() / math.log(2), rtol=1e-14)
    true_mean, _, true_lv = d.q_posterior_mean_variance(x0, xt, t)
    kl = mean_flat(normal_kl(true_mean, true_lv, p.mean, p.log_variance)) / math.log(2)
    close(vb[1:].numpy(), kl[1:].numpy(), rtol=1e-14)


def test_fixed_variance_mse_and_x0_target():
    d = GaussianDiffusion(linear_betas(1000), "x0", "fixed_small", "mse")
    x0, noise = torch.randn(2, 3, 4, dtype=F64), torch.randn(2, 3, 4, dtype=F64)
    out = torch.randn(2, 3, 4, dtype=F64)
    terms = d.training_losses(_const_model(out), x0, _t([5, 50]), noise=noise)
    close(terms["mse"].numpy(), mean_flat((x0 - out) ** 2).numpy(), rtol=1e-14)
    assert torch.all(terms["vb"] == 0) and torch.equal(terms["loss"], terms["mse"])


# ---- likelihood loop ---------------------------------------------------------------------------


def _oracle_eps_model(d: GaussianDiffusion, x0: torch.Tensor, learned: bool = True):
    """Exact eps for a data set of one point x0, with v = -1 (true posterior variance)."""

    def model(x, t, **kw):
        a = torch.from_numpy(d.sqrt_alphas_cumprod[t.numpy()]).reshape(-1, 1, 1, 1)
        b = torch.from_numpy(d.sqrt_one_minus_alphas_cumprod[t.numpy()]).reshape(-1, 1, 1, 1)
        eps = (x - a * x0) / b
        return torch.cat([eps, -torch.ones_like(eps)], 1) if learned else eps

    return model


def test_calc_bpd_loop_full_and_subset():
    T = 20
    d = GaussianDiffusion(cosine_betas(T))
    x0 = (torch.randint(0, 256, (3, 2, 4, 4)).double() / 127.5 - 1.0)
    model = _oracle_eps_model(d, x0)
    full = d.calc_bpd_loop(model, x0, generator=torch.Generator().manual_seed(0))
    assert full["vb"].shape == (3, T) and torch.equal(full["timesteps"], torch.arange(T))
    close(full["total_bpd"].numpy(), (full["prior_bpd"] + full["vb"].sum(1)).numpy(), rtol=1e-14)
    close(full["vb"][:, 1:].numpy(), 0.0, atol=1e-9)  # exact mean and variance: every KL term vanishes
    assert torch.all(full["vb"][:, 0] > 0)
    # a subset equal to every step reproduces the full loop (same noise draws)
    same = d.calc_bpd_loop(model, x0, timesteps=range(T), generator=torch.Generator().manual_seed(0))
    close(same["total_bpd"].numpy(), full["total_bpd"].numpy(), rtol=1e-14)
    sub = d.calc_bpd_loop(model, x0, timesteps=[1, 5, 12])
    assert sub["timesteps"].tolist() == [0, 1, 5, 12]
    assert sub["weights"].tolist() == [1.0, 4.0, 7.0, 8.0] and sub["weights"].sum() == T
    with pytest.raises(ValueError):
        d.calc_bpd_loop(model, x0, timesteps=[0])


def test_prior_bpd_is_tiny_for_cosine():
    d = GaussianDiffusion(cosine_betas(1000))
    x0 = torch.rand(2, 3, 8, 8, dtype=F64) * 2 - 1
    assert torch.all(d.prior_bpd(x0) < 1e-6) and torch.all(d.prior_bpd(x0) >= 0)


# ---- importance sampler (IDDPM §3.3, resample.py::LossSecondMomentResampler) -----------------------


def test_uniform_sampler():
    s = UniformSampler(50)
    t, w = s.sample(1000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() < 50
    assert torch.all(w == 1.0)


def test_loss_second_moment_sampler():
    T, H = 8, 10
    s = LossSecondMomentSampler(T)
    assert s.history_per_term == H and s.uniform_prob == 0.001
    rng = np.random.default_rng(0)
    # fill every t but the last: still uniform
    for _ in range(H):
        s.update_with_all_losses(list(range(T - 1)), list(rng.uniform(0.1, 2.0, T - 1)))
    assert not s.warmed_up()
    assert np.all(s.weights() == 1.0)
    _, w = s.sample(64, torch.Generator().manual_seed(0))
    assert torch.all(w == 1.0)
    # complete the history, plus extra losses that push the oldest ones out (FIFO)
    s.update_with_all_losses([T - 1] * H, list(rng.uniform(0.1, 2.0, H)))
    extra = [0.5, 3.0, 7.0]
    s.update_with_all_losses([2, 2, 2], extra)
    assert s.warmed_up()
    history = s.state_dict()["history"]
    assert history[2, -3:].tolist() == extra
    expect = np.sqrt((history**2).mean(axis=1))
    expect = expect / expect.sum() * (1 - 0.001) + 0.001 / T
    close(s.weights(), expect, rtol=1e-15)
    t, w = s.sample(256, torch.Generator().manual_seed(1))
    p = expect / expect.sum()
    close(w.numpy(), (1.0 / (T * p[t.numpy()])).astype(np.float32), rtol=1e-7)
    # sampling follows p
    t_many, _ = s.sample(200_000, torch.Generator().manual_seed(2))
    freq = np.bincount(t_many.numpy(), minlength=T) / 200_000
    close(freq, p, atol=5e-3)
    # reproducible and restorable
    s2 = LossSecondMomentSampler(T)
    s2.load_state_dict(s.state_dict())
    a, _ = s.sample(32, torch.Generator().manual_seed(5))
    b, _ = s2.sample(32, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_sampler_local_losses_single_process():
    s = LossSecondMomentSampler(3, history_per_term=2)
    s.update_with_local_losses(torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 3.0]))
    assert s.warmed_up()
    w = s.weights() / s.weights().sum()
    close(w, np.array([1, 2, 3]) / 6 * 0.999 + 0.001 / 3, rtol=1e-12)


# ---- respacing ---------------------------------------------------------------------------------


def test_space_timesteps():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(300, [10]) == space_timesteps(300, "10")
    steps = space_timesteps(300, "10,15,20")
    assert len(steps) == 45
    assert min(steps) == 0 and {99, 100, 199, 200, 299} <= steps  # each section's first and last step
    dit = space_timesteps(1000, "250")
    assert len(dit) == 250 and 0 in dit and 999 in dit
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim999")  # no integer stride gives 999 steps
    with pytest.raises(ValueError):
        space_timesteps(10, [11])


def test_respacing_keeps_alphas_cumprod():
    d = GaussianDiffusion(linear_betas(1000))
    keep = sorted(space_timesteps(1000, "250"))
    r = respace(d, keep)
    assert r.num_timesteps == 250 and r.original_num_steps == 1000
    assert r.timestep_map.tolist() == keep
    close(r.alphas_cumprod, d.alphas_cumprod[keep], rtol=1e-12)
    betas, mapping = respaced_betas(d.betas, keep)
    close(betas, r.betas, rtol=0)
    assert mapping.tolist() == keep
    # respacing twice composes the map back to original indices
    rr = respace(r, [0, 100, 249])
    assert rr.timestep_map.tolist() == [keep[0], keep[100], keep[249]]
    close(rr.alphas_cumprod, d.alphas_cumprod[rr.timestep_map], rtol=1e-12)


def test_respaced_model_sees_original_timesteps():
    seen = []

    def model(x, t, **kw):
        seen.append(t.clone())
        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:], dtype=x.dtype)

    r = respace(GaussianDiffusion(linear_betas(1000)), range(0, 1000, 100))
    r.training_losses(model, torch.zeros(2, 1, 2, dtype=F64), _t([0, 9]))
    assert seen[-1].tolist() == [0, 900]
    rescaled = respace(GaussianDiffusion(linear_betas(4000), rescale_timesteps=True), range(0, 4000, 400))
    rescaled.training_losses(model, torch.zeros(2, 1, 2, dtype=F64), _t([1, 9]))
    assert seen[-1].dtype == torch.float32 and seen[-1].tolist() == [100.0, 900.0]


def test_create_diffusion_dit_defaults():
    d = create_diffusion()
    assert (d.num_timesteps, d.model_mean_type, d.model_var_type, d.loss_type) == (1000, "eps", "learned_range", "mse")
    close(d.betas, linear_betas(1000), rtol=0)
    assert create_diffusion(use_kl=True).loss_type == "rescaled_kl"
    assert create_diffusion(rescale_learned_sigmas=True, noise_schedule="cosine", num_timesteps=4000).loss_type == "rescaled_mse"
    s = create_diffusion("250")
    assert s.num_timesteps == 250 and s.original_num_steps == 1000


# ---- sampling ----------------------------------------------------------------------------------


def _oracle_x0_model(x0: torch.Tensor, learned: bool):
    def model(x, t, **kw):
        out = x0.expand_as(x)
        return torch.cat([out, torch.zeros_like(out)], 1) if learned else out

    return model


def test_ddim_eta0_is_deterministic_and_exact_for_oracle():
    d = respace(GaussianDiffusion(linear_betas(1000), "x0", "learned_range"), space_timesteps(1000, "ddim50"))
    x0 = torch.randn(1, 2, 3, 3, dtype=F64).clamp(-1, 1)
    noise = torch.randn(2, 2, 3, 3, dtype=F64)
    model = _oracle_x0_model(x0, learned=True)
    a = ddim_sample_loop(d, model, noise.shape, noise=noise, eta=0.0, generator=torch.Generator().manual_seed(0))
    b = ddim_sample_loop(d, model, noise.shape, noise=noise, eta=0.0, generator=torch.Generator().manual_seed(123))
    assert torch.equal(a, b)
    close(a.numpy(), x0.expand_as(a).numpy(), atol=1e-10)

    def eps_model(x, t, **kw):  # a non-oracle model: still deterministic with eta = 0
        return torch.cat([torch.tanh(x) * 0.5, torch.zeros_like(x)], 1)

    eps_diff = respace(GaussianDiffusion(linear_betas(1000)), space_timesteps(1000, "ddim20"))
    c = ddim_sample_loop(eps_diff, eps_model, noise.shape, noise=noise, generator=torch.Generator().manual_seed(0))
    e = ddim_sample_loop(eps_diff, eps_model, noise.shape, noise=noise, generator=torch.Generator().manual_seed(9))
    assert torch.equal(c, e)
    f = ddim_sample_loop(eps_diff, eps_model, noise.shape, noise=noise, eta=1.0, generator=torch.Generator().manual_seed(9))
    assert not torch.equal(c, f)


def test_ddpm_sampler_oracle_and_reproducible():
    d = respace(GaussianDiffusion(linear_betas(1000), "x0", "fixed_small"), space_timesteps(1000, "25"))
    x0 = torch.randn(1, 2, 4, dtype=F64).clamp(-1, 1)
    model = _oracle_x0_model(x0, learned=False)
    shape = (3, 2, 4)
    a = ddpm_sample_loop(d, model, shape, generator=torch.Generator().manual_seed(0))
    b = ddpm_sample_loop(d, model, shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == shape
    close(a.numpy(), x0.expand(shape).numpy(), atol=1e-5)  # the last step adds no noise


def test_cfg_guides_eps_channels_only():
    C = 4

    def model(x, t, y):
        # conditional output depends on y; the null label (10) gives a different eps and v
        scale = (y.float() + 1).view(-1, 1, 1, 1)
        return torch.cat([x * scale, -x * scale], 1)

    x, t, y = torch.randn(2, C, 3, 3), _t([5, 6]), torch.tensor([1, 2])
    cond = model(x, t, y)
    uncond = model(x, t, torch.full_like(y, 10))
    g1 = cfg_model_fn(model, 1.0, null_label=10)(x, t, y)
    torch.testing.assert_close(g1, cond)
    g4 = cfg_model_fn(model, 4.0, null_label=10)(x, t, y)
    torch.testing.assert_close(g4[:, :C], uncond[:, :C] + 4.0 * (cond[:, :C] - uncond[:, :C]))
    torch.testing.assert_close(g4[:, C:], cond[:, C:])  # v channels untouched
    g3 = cfg_model_fn(model, 4.0, null_label=10, guided_channels=3)(x, t, y)  # DiT's "first 3 channels"
    torch.testing.assert_close(g3[:, 3:], cond[:, 3:])
    torch.testing.assert_close(g3[:, :3], g4[:, :3])


def test_float32_training_step_with_a_network():
    """The usual path: float32 latents, a small conv net, importance-sampled t, backward."""
    torch.manual_seed(0)
    d = create_diffusion(noise_schedule="cosine", num_timesteps=4000, rescale_learned_sigmas=True)
    net = torch.nn.Conv2d(4, 8, 3, padding=1)
    sampler = LossSecondMomentSampler(d.num_timesteps)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 4, 8, 8, generator=g)
    t, weights = sampler.sample(6, g)
    terms = d.training_losses(lambda x, t: net(x), x0, t, generator=g)
    assert all(v.dtype == torch.float32 and v.shape == (6,) for v in terms.values())
    loss = (terms["loss"] * weights).mean()
    loss.backward()
    assert torch.isfinite(loss) and net.weight.grad is not None and torch.isfinite(net.weight.grad).all()
    sampler.update_with_local_losses(t, terms["loss"].detach())
