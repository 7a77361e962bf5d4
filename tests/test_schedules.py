"""Noise schedules to float64 precision: IDDPM's (openai/improved-diffusion
``improved_diffusion/gaussian_diffusion.py``: ``get_named_beta_schedule``, ``betas_for_alpha_bar``;
reference values computed in float64 from it) and l-DAE's (Chen et al. 2024, §4.1, §4.3, Eqs. 3-4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssl_bench.components.schedules import (
    BUILTIN_SCHEDULES,
    ConstantSigmaSchedule,
    CosineSchedule,
    Gamma2LinearSchedule,
    LinearBetaSchedule,
    NoiseSchedule,
    SigmaLinearSchedule,
    build_schedule,
    cosine_alpha_bar,
)

close = np.testing.assert_allclose
RTOL10 = 1e-9  # reference values quoted to 10 significant digits
RTOL7 = 1e-6  # reference values quoted to ~7 significant digits


# ---- IDDPM cosine (IDDPM §3.2, gaussian_diffusion.py::betas_for_alpha_bar) ------------------


def test_cosine_T1000_betas():
    s = CosineSchedule(1000)
    b = s.betas()
    assert b.dtype == np.float64
    close(b[0], 4.1284224822e-05, rtol=RTOL10)
    close(b[1], 4.6141752737e-05, rtol=RTOL10)
    close(b[998], 0.7499994, rtol=RTOL7)
    assert b[999] == 0.999
    assert list(np.flatnonzero(b >= 0.999)) == [999]  # the only clipped value


def test_cosine_T1000_alphas_cumprod():
    abar = CosineSchedule(1000).alphas_cumprod
    close(abar[0], 0.9999587158, rtol=RTOL10)
    close(abar[499], 0.4938435904, rtol=RTOL10)
    close(abar[998], 2.428767e-06, rtol=RTOL7)
    close(abar[999], 2.428767e-09, rtol=RTOL7)
    close(abar[999], abar[998] * 0.001, rtol=1e-12)


def test_cosine_T4000():
    s = CosineSchedule(4000)
    close(s.betas()[0], 9.8658188137e-06, rtol=RTOL10)
    assert s.betas()[3999] == 0.999
    close(s.alphas_cumprod[1999], 0.4938435904, rtol=RTOL10)


def test_cosine_alpha_bar_is_normalised_by_f0():
    close(cosine_alpha_bar(0.0), 0.9998445910, rtol=RTOL10)
    T = 1000
    abar = CosineSchedule(T).alphas_cumprod
    i = np.arange(T - 1)  # every unclipped step
    close(abar[:-1], cosine_alpha_bar((i + 1) / T) / cosine_alpha_bar(0.0), rtol=1e-12)
    assert not np.allclose(abar[:-1], cosine_alpha_bar((i + 1) / T), rtol=1e-6)


# ---- linear beta (get_named_beta_schedule("linear"), DiT's default) ------------------------


def test_linear_T1000():
    s = LinearBetaSchedule(1000)
    b, abar = s.betas(), s.alphas_cumprod
    close(b[0], 1e-4, rtol=1e-15)
    close(b[999], 0.02, rtol=1e-15)
    close(abar[0], 0.9999, rtol=1e-15)
    close(abar[499], 0.0785872429, rtol=RTOL10)
    close(abar[999], 4.0358297654e-05, rtol=RTOL10)
    close(math.sqrt(abar[999]), 6.352818e-03, rtol=RTOL7)
    # DiT's default schedule, the l-DAE baseline's (Fig. 3): further values, quoted to 6 digits
    close(abar[10], 0.997807, rtol=1e-6)
    close(abar[80], 0.929897, rtol=1e-6)
    close(s.gamma(torch.tensor([999]), torch.float64).numpy(), [6.352818e-03], rtol=RTOL7)


def test_linear_T4000_scaling():
    b = LinearBetaSchedule(4000).betas()
    close([b[0], b[-1]], [2.5e-5, 5e-3], rtol=1e-14)


# ---- l-DAE schedules -------------------------------------------------------------------------


def test_gamma2_linear_default_matches_paper_range():
    s = Gamma2LinearSchedule(1000)  # gamma^2 = 1 - (t+1)/T: "1 > gamma^2 >= 0"
    g2 = s.gammas**2
    close(g2[0], 0.999, rtol=1e-14)
    assert g2[-1] == 0.0 and np.all(g2 < 1.0)
    close(np.diff(g2), -1e-3, rtol=1e-9)  # linear decay
    close(s.gammas**2 + s.sigmas**2, 1.0, rtol=1e-14)
    assert s.variance_preserving


def test_gamma2_linear_offset0():
    s = Gamma2LinearSchedule(1000, offset=0)
    g2 = s.gammas**2
    assert g2[0] == 1.0
    close(g2[-1], 1e-3, rtol=1e-12)


def test_gamma2_linear_betas_roundtrip():
    s = Gamma2LinearSchedule(1000)
    b = s.betas()
    assert b[-1] == 0.999 and np.all(b[:-1] < 0.999)
    close(np.cumprod(1 - b)[:-1], s.alphas_cumprod[:-1], rtol=1e-10)


def test_sigma_linear_range():
    s = SigmaLinearSchedule(1000)
    assert np.all(s.gammas == 1.0)
    assert s.sigmas[0] == 0.0
    close(s.sigmas[-1], math.sqrt(2) * 999 / 1000, rtol=1e-14)
    assert np.all(s.sigmas < math.sqrt(2))
    close(s.sigmas[10], 0.0141, rtol=3e-3)  # the probe's t = 10 (l-DAE App. A)
    assert not s.variance_preserving
    s_end = SigmaLinearSchedule(1000, endpoint=True)
    close(s_end.sigmas[-1], math.sqrt(2), rtol=1e-15)
    close(SigmaLinearSchedule(100, sigma_max=1.0).sigmas[50], 0.5, rtol=1e-15)


def test_constant_sigma():
    s = ConstantSigmaSchedule(1000)
    close(s.sigmas, math.sqrt(1 / 3), rtol=1e-15)
    close(s.sigmas[0], 0.57735, rtol=1e-5)
    assert np.all(s.gammas == 1.0)
    assert s.t_fixed == 408  # the sigma-linear step with the same sigma
    close(SigmaLinearSchedule(1000).sigmas[s.t_fixed], math.sqrt(1 / 3), rtol=2e-3)
    t = s.sample_t(16, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and torch.all(t == 408)
    assert torch.all(ConstantSigmaSchedule(1000, sigma=0.3, t_fixed=5).sample_t(4) == 5)
    assert s.describe()["t_sampling"] == "fixed t = 408"


# ---- loss weights ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine", "gamma2-linear"])
def test_loss_weight_vp_x0_is_gamma2(name):
    s = build_schedule(name, T=1000)
    t = torch.arange(1000)
    close(s.loss_weight(t, "x0", torch.float64).numpy(), s.gammas**2, rtol=1e-13)
    assert torch.all(s.loss_weight(t, "eps") == 1.0)


@pytest.mark.parametrize("name", ["sigma-linear", "constant-sigma"])
def test_loss_weight_gamma1_x0_is_inverse_one_plus_sigma2(name):
    s = build_schedule(name, T=1000)
    t = torch.arange(1000)
    w = s.loss_weight(t, "x0", torch.float64).numpy()
    close(w, 1.0 / (1.0 + s.sigmas**2), rtol=1e-14)
    assert torch.all(s.loss_weight(t, "eps") == 1.0)


def test_loss_weight_values():
    s = SigmaLinearSchedule(1000)
    w = s.loss_weight(torch.tensor([0, 500, 999]), "x0", torch.float64).numpy()
    close(w, [1.0, 1 / (1 + 0.5), 1 / (1 + 2 * 0.999**2)], rtol=1e-14)
    assert w.min() > 1 / 3  # gamma'^2 of the equivalent VP process lies in [1/3, 1]
    close(ConstantSigmaSchedule().loss_weight(torch.tensor([7]), "x0", torch.float64).numpy(), [0.75], rtol=1e-15)
    uniform = SigmaLinearSchedule(1000, x0_weighting="uniform")
    assert torch.all(uniform.loss_weight(torch.arange(1000), "x0") == 1.0)
    with pytest.raises(ValueError):
        s.loss_weight(torch.tensor([0]), "v")


# ---- interface -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN_SCHEDULES))
def test_every_builtin_schedule_interface(name):
    s = build_schedule(name)
    assert isinstance(s, NoiseSchedule) and s.name == name and s.T == 1000
    assert s.gammas.dtype == np.float64 and s.sigmas.dtype == np.float64
    t = s.sample_t(64, torch.Generator().manual_seed(1))
    assert t.shape == (64,) and t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) < 1000
    g, sg = s.gamma(t), s.sigma(t)
    assert g.dtype == torch.float32 and g.shape == (64,)
    # index in float64 first, cast afterwards
    assert torch.equal(sg, torch.from_numpy(s.sigmas[t.numpy()]).float())
    z0, eps = torch.randn(64, 5, 3, dtype=torch.float64), torch.randn(64, 5, 3, dtype=torch.float64)
    zt = s.add_noise(z0, t, eps)
    expect = s.gammas[t.numpy()][:, None, None] * z0.numpy() + s.sigmas[t.numpy()][:, None, None] * eps.numpy()
    close(zt.numpy(), expect, rtol=1e-14)
    record = s.describe()
    assert record["name"] == name and record["T"] == 1000
    import json

    json.dumps(record)  # serialisable for the results store


def test_sample_t_is_uniform_and_reproducible():
    s = SigmaLinearSchedule(10)
    a = s.sample_t(20000, torch.Generator().manual_seed(3))
    b = s.sample_t(20000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    counts = torch.bincount(a, minlength=10).double() / 20000
    assert torch.all((counts - 0.1).abs() < 0.015)


def test_unknown_schedule_and_bad_tables():
    with pytest.raises(ValueError, match="built-ins"):
        build_schedule("nope")
    with pytest.raises(ValueError):
        NoiseSchedule(np.ones(3), np.ones(4))
    with pytest.raises(ValueError):
        NoiseSchedule(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="betas"):
        LinearBetaSchedule(10)  # scaled beta_end = 2
