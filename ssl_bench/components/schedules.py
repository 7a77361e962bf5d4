"""Noise schedules for additive latent noise, ``z_t = gamma_t * z0 + sigma_t * eps``.

Time is discrete, t in {0, ..., T-1}, as in DDPM/IDDPM/DiT ("t = 0 means one step of noise" for the
beta schedules). Every schedule is a pair of float64 tables ``gamma[T]`` and ``sigma[T]``: they are
built once in float64 (so that the numbers of the reference code, openai/improved-diffusion
``improved_diffusion/gaussian_diffusion.py``, are reproducible to the last digit) and only *cast to
the data dtype after indexing*, never before, exactly like IDDPM's ``_extract_into_tensor``.

The l-DAE deconstruction (Chen et al. 2024, §4.1, §4.3) walks through five schedules; all are here:

=================  ==========================================================  =====================
name               tables                                                      paper
=================  ==========================================================  =====================
``linear``         DDPM linear beta, gamma^2 = alphas_cumprod                  DiT default
``cosine``         IDDPM cosine alpha_bar (s = 0.008, betas clipped at 0.999)   IDDPM §3.2
``gamma2-linear``  gamma_t^2 = 1 - (t + offset) / T, sigma^2 = 1 - gamma^2       l-DAE §4.1, Fig. 3
``sigma-linear``   gamma = 1, sigma_t = sigma_max * t / T (sigma_max = sqrt 2)   l-DAE §4.3
``constant-sigma`` gamma = 1, sigma = sqrt(1/3) at every t; t fixed for cond.   l-DAE §4.3
=================  ==========================================================  =====================

Loss weight lambda_t (``NoiseSchedule.loss_weight``), one explicit rule:

* ``prediction="eps"``: lambda_t = 1 (the DDPM/IDDPM L_simple objective).
* ``prediction="x0"``:  lambda_t = gamma_t^2 / (gamma_t^2 + sigma_t^2)  (``x0_weighting="gamma2"``).
  For a variance-preserving schedule (gamma^2 + sigma^2 = 1) this *is* l-DAE's lambda_t = gamma_t^2
  ("more weight to cleaner data", Eq. 3); for the gamma = 1 schedules it *is* l-DAE's
  lambda_t = 1 / (1 + sigma_t^2) (Eq. 4). Both are the gamma'^2 of the equivalent variance-preserving
  process z_t / sqrt(gamma_t^2 + sigma_t^2), which is why one formula covers both papers' choices.
  ``x0_weighting="uniform"`` gives lambda_t = 1 for ablations.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

Prediction = Literal["eps", "x0"]
X0Weighting = Literal["gamma2", "uniform"]

__all__ = [
    "BUILTIN_SCHEDULES",
    "ConstantSigmaSchedule",
    "CosineSchedule",
    "Gamma2LinearSchedule",
    "LinearBetaSchedule",
    "NoiseSchedule",
    "SigmaLinearSchedule",
    "append_dims",
    "betas_from_alphas_cumprod",
    "build_schedule",
    "cosine_alpha_bar",
    "cosine_betas",
    "linear_betas",
]


# ----------------------------------------------------------------------------------------------
# float64 beta tables (shared with ssl_bench.diffusion)
# ----------------------------------------------------------------------------------------------


def linear_betas(
    T: int, beta_start: float = 1e-4, beta_end: float = 0.02, scale_with_T: bool = True
) -> np.ndarray:
    """DDPM's linear betas. With ``scale_with_T`` the endpoints are multiplied by 1000/T (IDDPM), so
    that any T gives roughly the same alpha_bar curve (T = 4000 -> 2.5e-5 ... 5e-3)."""
    scale = 1000.0 / T if scale_with_T else 1.0
    return np.linspace(scale * beta_start, scale * beta_end, T, dtype=np.float64)  # [T]


def cosine_alpha_bar(tau: np.ndarray | float, s: float = 0.008) -> np.ndarray:
    """IDDPM's continuous f(tau) = cos^2(((tau + s) / (1 + s)) * pi / 2), tau in [0, 1].

    Note f(0) = 0.99984459... != 1: the discrete alpha_bar_i is f((i+1)/T) / f(0) (IDDPM
    ``gaussian_diffusion.py::betas_for_alpha_bar``: its betas 1 - f((i+1)/T) / f(i/T) telescope to it).
    """
    tau = np.asarray(tau, dtype=np.float64)
    return np.cos((tau + s) / (1.0 + s) * math.pi / 2.0) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """beta_i = min(1 - f((i+1)/T) / f(i/T), max_beta): clipping stops the singular last step(s)."""
    i = np.arange(T, dtype=np.float64)
    betas = 1.0 - cosine_alpha_bar((i + 1) / T, s) / cosine_alpha_bar(i / T, s)
    return np.minimum(betas, max_beta)  # [T]


def betas_from_alphas_cumprod(alphas_cumprod: np.ndarray, max_beta: float = 0.999) -> np.ndarray:
    """Inverse of cumprod(1 - beta), clipped like the cosine schedule.

    Clipping changes alpha_bar wherever it bites (an alpha_bar of exactly 0 becomes
    (1 - max_beta) * alpha_bar_prev), but keeps every log-variance finite for GaussianDiffusion.
    """
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    return np.minimum(1.0 - abar / abar_prev, max_beta)  # [T]


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """[B] -> [B, 1, ..., 1] with ``ndim`` dims in all, to broadcast per-sample scalars over data."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


# ----------------------------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------------------------


class NoiseSchedule:
    """A noise schedule given by float64 tables gamma[T], sigma[T].

    Subclasses only build the tables; lookup, weighting, t sampling and the protocol record are here.
    The base class can be used directly with custom tables (e.g. from a plugin).
    """

    name: ClassVar[str] = "custom"

    def __init__(self, gammas: np.ndarray, sigmas: np.ndarray, x0_weighting: X0Weighting = "gamma2"):
        gammas = np.asarray(gammas, dtype=np.float64)
        sigmas = np.asarray(sigmas, dtype=np.float64)
        if gammas.ndim != 1 or gammas.shape != sigmas.shape or len(gammas) == 0:
            raise ValueError(f"gamma and sigma tables must be 1-D and equal length, got {gammas.shape}, {sigmas.shape}")
        if not (np.all(np.isfinite(gammas)) and np.all(np.isfinite(sigmas))):
            raise ValueError("gamma and sigma tables must be finite")
        if np.any(gammas < 0) or np.any(sigmas < 0):
            raise ValueError("gamma and sigma must be non-negative")
        if np.any(gammas**2 + sigmas**2 == 0):
            raise ValueError("gamma and sigma cannot both be 0 at the same t")
        if x0_weighting not in ("gamma2", "uniform"):
            raise ValueError(f"x0_weighting must be 'gamma2' or 'uniform', got {x0_weighting!r}")
        self.gammas = gammas  # [T] float64
        self.sigmas = sigmas  # [T] float64
        self.x0_weighting: X0Weighting = x0_weighting
        self._device_tables: dict[tuple[str, torch.device], Tensor] = {}

    # -- tables ------------------------------------------------------------------------------

    @property
    def T(self) -> int:
        return len(self.gammas)

    @property
    def variance_preserving(self) -> bool:
        """gamma^2 + sigma^2 == 1 at every t (to float64 rounding)."""
        return bool(np.allclose(self.gammas**2 + self.sigmas**2, 1.0, rtol=0, atol=1e-12))

    def x0_weights(self) -> np.ndarray:
        """float64 table of lambda_t for clean-data prediction (see module docstring)."""
        if self.x0_weighting == "uniform":
            return np.ones(self.T, dtype=np.float64)
        g2, s2 = self.gammas**2, self.sigmas**2
        return g2 / (g2 + s2)  # [T]; = gamma^2 (VP) or 1/(1+sigma^2) (gamma=1)

    def _lookup(self, key: str, table: np.ndarray, t: Tensor | int, dtype: torch.dtype) -> Tensor:
        """Index the float64 table first, cast after: same order as IDDPM's _extract_into_tensor."""
        t = torch.as_tensor(t, dtype=torch.long)
        cache_key = (key, t.device)
        if cache_key not in self._device_tables:
            self._device_tables[cache_key] = torch.tensor(table, dtype=torch.float64, device=t.device)
        return self._device_tables[cache_key][t].to(dtype)

    def gamma(self, t: Tensor | int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Input scale gamma_t; [B] int64 -> [B] ``dtype`` on t's device."""
        return self._lookup("gamma", self.gammas, t, dtype)

    def sigma(self, t: Tensor | int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Noise std sigma_t; [B] int64 -> [B] ``dtype`` on t's device."""
        return self._lookup("sigma", self.sigmas, t, dtype)

    def loss_weight(self, t: Tensor | int, prediction: Prediction, dtype: torch.dtype = torch.float32) -> Tensor:
        """lambda_t per sample, [B]. ``eps`` -> 1; ``x0`` -> gamma^2 / (gamma^2 + sigma^2) (or 1 if uniform)."""
        if prediction == "eps":
            t = torch.as_tensor(t, dtype=torch.long)
            return torch.ones(t.shape, dtype=dtype, device=t.device)
        if prediction == "x0":
            return self._lookup("x0_weight", self.x0_weights(), t, dtype)
        raise ValueError(f"prediction must be 'eps' or 'x0', got {prediction!r}")

    # -- using the schedule -------------------------------------------------------------------

    def add_noise(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """z_t = gamma_t z0 + sigma_t eps; z0, noise [B, ...], t [B] -> [B, ...] in z0's dtype."""
        g = append_dims(self.gamma(t.to(z0.device), z0.dtype), z0.ndim)  # [B, 1, ...]
        s = append_dims(self.sigma(t.to(z0.device), z0.dtype), z0.ndim)  # [B, 1, ...]
        return g * z0 + s * noise

    def sample_t(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """t ~ Uniform{0..T-1}, [B] int64. Drawn on the generator's device, then moved to ``device``."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, self.T, (batch_size,), generator=generator, device=gen_device)
        return t.to(device) if device is not None else t

    # -- protocol record ----------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """Constructor parameters that define the tables (overridden by subclasses)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable record of the schedule, stored with every run."""
        last = self.T - 1
        return {
            "name": self.name,
            "T": self.T,
            "params": self.params(),
            "variance_preserving": self.variance_preserving,
            "t_sampling": "uniform{0..T-1}",
            "loss_weight": {
                "eps": "1",
                "x0": "gamma^2/(gamma^2+sigma^2)" if self.x0_weighting == "gamma2" else "1",
            },
            "gamma_first_last": [float(self.gammas[0]), float(self.gammas[last])],
            "sigma_first_last": [float(self.sigmas[0]), float(self.sigmas[last])],
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}(T={self.T}{', ' if args else ''}{args})"


class _BetaSchedule(NoiseSchedule):
    """A variance-preserving schedule defined by betas: gamma^2 = alphas_cumprod, sigma^2 = 1 - gamma^2."""

    def __init__(self, betas: np.ndarray, x0_weighting: X0Weighting = "gamma2"):
        self._betas = np.asarray(betas, dtype=np.float64)  # [T]
        if not np.all((self._betas > 0) & (self._betas <= 1)):
            raise ValueError("betas must lie in (0, 1] (a linear schedule scaled by 1000/T needs T >= 20)")
        abar = np.cumprod(1.0 - self._betas)  # [T]
        self.alphas_cumprod = abar
        super().__init__(np.sqrt(abar), np.sqrt(1.0 - abar), x0_weighting)

    def betas(self) -> np.ndarray:
        """The float64 betas, for building a ``GaussianDiffusion`` on the same schedule."""
        return self._betas.copy()


# ----------------------------------------------------------------------------------------------
# built-ins
# ----------------------------------------------------------------------------------------------


class LinearBetaSchedule(_BetaSchedule):
    """DDPM linear beta (DiT's default): beta = linspace(s*1e-4, s*0.02, T), s = 1000/T."""

    name = "linear"

    def __init__(
        self,
        T: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        scale_with_T: bool = True,
        x0_weighting: X0Weighting = "gamma2",
    ):
        self._p = dict(beta_start=beta_start, beta_end=beta_end, scale_with_T=scale_with_T)
        super().__init__(linear_betas(T, beta_start, beta_end, scale_with_T), x0_weighting)

    def params(self) -> dict[str, Any]:
        return dict(self._p)


class CosineSchedule(_BetaSchedule):
    """IDDPM cosine: alpha_bar_i = f((i+1)/T) / f(0) except where beta is clipped (only the last step
    for T = 1000 and 4000)."""

    name = "cosine"

    def __init__(self, T: int = 1000, s: float = 0.008, max_beta: float = 0.999, x0_weighting: X0Weighting = "gamma2"):
        self._p = dict(s=s, max_beta=max_beta)
        super().__init__(cosine_betas(T, s, max_beta), x0_weighting)

    def params(self) -> dict[str, Any]:
        return dict(self._p)


class Gamma2LinearSchedule(NoiseSchedule):
    """l-DAE "replace noise schedule": gamma_t^2 decays linearly, sigma_t^2 = 1 - gamma_t^2.

    Discretisation (not stated in the paper; our choice, docs/methods.md "Noise"):
    gamma_t^2 = 1 - (t + offset) / T.
    Default ``offset = 1`` gives gamma^2 in [0, 1 - 1/T] = [0, 0.999] for T = 1000, which is exactly
    the paper's stated range "1 > gamma_t^2 >= 0" (never clean, pure noise at t = T-1) and matches
    the DDPM convention that t = 0 is already one step of noise. ``offset = 0`` gives the other
    reading, gamma^2 in (1/T, 1] (t = 0 clean, never pure noise).
    """

    name = "gamma2-linear"

    def __init__(self, T: int = 1000, offset: int = 1, x0_weighting: X0Weighting = "gamma2"):
        if offset not in (0, 1):
            raise ValueError(f"offset must be 0 or 1, got {offset}")
        self.offset = offset
        g2 = 1.0 - (np.arange(T, dtype=np.float64) + offset) / T  # [T]
        super().__init__(np.sqrt(g2), np.sqrt(1.0 - g2), x0_weighting)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return self.gammas**2

    def betas(self, max_beta: float = 0.999) -> np.ndarray:
        """Betas for a GaussianDiffusion on this schedule; the last one is clipped to ``max_beta``
        when gamma^2 reaches 0 (offset = 1), so there alpha_bar_{T-1} becomes (1-max_beta)/T."""
        return betas_from_alphas_cumprod(self.gammas**2, max_beta)

    def params(self) -> dict[str, Any]:
        return {"offset": self.offset, "gamma2": f"1 - (t + {self.offset}) / T"}


class SigmaLinearSchedule(NoiseSchedule):
    """l-DAE "remove input scaling": gamma = 1, sigma linear from 0 to sigma_max = sqrt(2).

    Discretisation (not stated in the paper; our choice, docs/methods.md "Noise"):
    sigma_t = sigma_max * t / T, so sigma_0 = 0 (clean), sigma_10 = 0.0141 (the probe's t) and
    sigma_{T-1} = sigma_max (1 - 1/T). ``endpoint=True`` uses t / (T - 1) instead so that the last
    step reaches sigma_max exactly.
    Note z_t / sqrt(1 + sigma^2) is variance preserving with gamma'^2 in [1/3, 1]: never pure noise.
    """

    name = "sigma-linear"

    def __init__(
        self,
        T: int = 1000,
        sigma_max: float = math.sqrt(2.0),
        endpoint: bool = False,
        x0_weighting: X0Weighting = "gamma2",
    ):
        self.sigma_max = float(sigma_max)
        self.endpoint = bool(endpoint)
        denom = (T - 1) if endpoint else T
        sigmas = self.sigma_max * np.arange(T, dtype=np.float64) / max(denom, 1)  # [T]
        super().__init__(np.ones(T, dtype=np.float64), sigmas, x0_weighting)

    def params(self) -> dict[str, Any]:
        return {"sigma_max": self.sigma_max, "endpoint": self.endpoint}


class ConstantSigmaSchedule(NoiseSchedule):
    """l-DAE "single noise level": gamma = 1, sigma = sqrt(1/3) for every t.

    How t is conditioned with one level is not stated in the paper (§4.3); our choice
    (docs/methods.md "Noise"): the tables have T entries (so a t-embedding sized for T works
    unchanged and any t looks up the same sigma), and ``sample_t`` always returns ``t_fixed``, so the
    network is conditioned on one constant t. Its
    default is the sigma-linear step with the same noise level, round(T * sigma / sqrt 2) (= 408 for
    T = 1000), so that the t-embedding means the same noise level as in the multi-level schedule.
    Probing such a model should condition on ``t_fixed`` too.
    """

    name = "constant-sigma"

    def __init__(
        self,
        T: int = 1000,
        sigma: float = math.sqrt(1.0 / 3.0),
        t_fixed: int | None = None,
        x0_weighting: X0Weighting = "gamma2",
    ):
        self.sigma_value = float(sigma)
        if t_fixed is None:
            t_fixed = min(T - 1, int(round(T * self.sigma_value / math.sqrt(2.0))))
        if not 0 <= t_fixed < T:
            raise ValueError(f"t_fixed must be in [0, {T}), got {t_fixed}")
        self.t_fixed = int(t_fixed)
        super().__init__(np.ones(T, dtype=np.float64), np.full(T, self.sigma_value, dtype=np.float64), x0_weighting)

    def sample_t(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Always ``t_fixed`` ([B] int64); consumes no randomness."""
        return torch.full((batch_size,), self.t_fixed, dtype=torch.long, device=device)

    def params(self) -> dict[str, Any]:
        return {"sigma": self.sigma_value, "t_fixed": self.t_fixed}

    def describe(self) -> dict[str, Any]:
        record = super().describe()
        record["t_sampling"] = f"fixed t = {self.t_fixed}"
        return record


BUILTIN_SCHEDULES: dict[str, type[NoiseSchedule]] = {
    cls.name: cls
    for cls in (LinearBetaSchedule, CosineSchedule, Gamma2LinearSchedule, SigmaLinearSchedule, ConstantSigmaSchedule)
}


def build_schedule(name: str, **kwargs: Any) -> NoiseSchedule:
    """Build a built-in schedule by name, e.g. ``build_schedule("sigma-linear", T=1000)``."""
    try:
        cls = BUILTIN_SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown noise schedule {name!r}; built-ins are {sorted(BUILTIN_SCHEDULES)}") from None
    return cls(**kwargs)
