"""DiT DDM (Peebles & Xie 2023) as the start of the l-DAE deconstruction, trained as a real Improved
DDPM (Nichol & Dhariwal 2021): eps prediction, DDPM linear betas, T = 1000, learned-range variance
(the DiT's output channels doubled) and the hybrid loss L_simple + (T/1000) L_vb, where the VLB term
sees a detached mean and so only trains the variance (Nichol & Dhariwal 2021, §3.1 Eq. 16, §3.3;
openai/improved-diffusion gaussian_diffusion.py ``training_losses``, resample.py; DiT's models.py
``learn_sigma``).

Data layout. The diffusion's "image" is the tokenizer latent laid out as an image, channels in dim 1:
``x0 = latent_image(tokenizer.encode(x))``, i.e. latent tokens [B, L, d] -> [B, d, h, w] for the
patch-wise tokenizers (patch PCA by default; h = w = sqrt(L)) and the conv-VAE feature map
[B, c, h', w'] (tokens = 2x2 latent patches, DiT-L/2). The DiT returns per-token [B, L, p*p*2C]; it is
unpatchified with 2C channels, so channels 0..C-1 are eps and C..2C-1 the variance value v, exactly
DiT's layout.

Everything else (the parts, tokenizer fitting, preprocessing, the probe at t = 10, figures) is the
core ``DenoisingMethod``. Configs that leave the DDPM family (x0 targets, image space, sigma schedules,
masking, ...) cannot be written as a ``GaussianDiffusion``; with ``method.diffusion.enabled = "auto"``
(default) they fall back to the reconstruction pipeline's objective, unchanged, and get no NLL.

Evaluation (``extra_evaluations``): test NLL in bits/dim (metric ``nll_bpd``, evaluator ``nll``; see
plugins/ddm/likelihood.py for what the number means with a latent vs the pixel tokenizer) and a sample
grid ``samples.png`` (DDIM 50 steps by default, classifier-free guidance when class-conditional).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_bench.components.base import StepOutput
from ssl_bench.components.dit import FinalLayer
from ssl_bench.components.latent_targets import NoiseTarget
from ssl_bench.components.noise import AdditiveLatentNoise
from ssl_bench.components.patches import unpatchify
from ssl_bench.diffusion import (
    GaussianDiffusion,
    LossSecondMomentSampler,
    UniformSampler,
    build_sampler,
    cfg_model_fn,
    ddim_sample_loop,
    ddpm_sample_loop,
)
from ssl_bench.diffusion.gaussian import randn_like
from ssl_bench.errors import ConfigError
from ssl_bench.eval.base import EvalResult
from ssl_bench.methods.denoising import DenoisingMethod
from ssl_bench_plugins.ddm.likelihood import evaluate_nll, nll_space, nll_timesteps
from ssl_bench_plugins.ddm.samples import respaced_for_sampling, save_png

log = logging.getLogger("ssl_bench")

class DDM(DenoisingMethod):
    default_config = Path(__file__).parent / "default_config.py"

    def build_network(self) -> None:
        super().build_network()
        m = self.cfg.method
        dcfg = dict(m.get("diffusion") or {})
        self.nll_cfg = dict(m.get("nll") or {})
        self.samples_cfg = dict(m.get("samples") or {})
        self.use_diffusion = self._diffusion_applies(dcfg.get("enabled", "auto"))
        self.diffusion: GaussianDiffusion | None = None
        self.timestep_sampler = None
        self.sampler_name = "uniform"
        self.out_channels = self.latent_channels  # C of the diffusion's image [B, C, h, w], x2 with learned sigma
        if not self.use_diffusion:
            log.info("ddm: config is outside the DDPM family (%s); using the DenoisingMethod objective, no NLL", self._why_not)
            return
        var_type = dcfg.get("var_type") or "learned_range"
        loss_type = dcfg.get("loss_type") or "mse"
        # same float64 betas as the schedule the probe / figures use, so both views agree exactly
        try:
            self.diffusion = GaussianDiffusion(self.noise_schedule.betas(), "eps", var_type, loss_type)
        except ValueError as exc:  # GaussianDiffusion validates; name the config keys
            raise ConfigError(f"method.diffusion (var_type / loss_type): {exc}") from None
        if self.diffusion.learn_sigma:
            # learn_sigma: out_channels = 2 * in_channels (facebookresearch/DiT models.py::DiT); DiT init
            # zeroes the new head too, so a fresh model still outputs exactly 0 (eps = 0, v = 0:
            # geometric-mean variance)
            self.out_channels = 2 * self.latent_channels
            head = FinalLayer(self.backbone.embed_dim, 2 * self.backbone.out_dim)
            for lin in (head.adaLN_modulation[-1], head.linear):
                torch.nn.init.zeros_(lin.weight)
                torch.nn.init.zeros_(lin.bias)
            self.backbone.final_layer = head
            self.backbone.out_dim = 2 * self.backbone.out_dim
        self.sampler_name = dcfg.get("timestep_sampler") or "uniform"
        opts = {}
        if self.sampler_name == "loss-second-moment":
            opts = {"history_per_term": int(dcfg.get("sampler_history", 10)), "uniform_prob": float(dcfg.get("sampler_uniform_prob", 0.001))}
        self.timestep_sampler = build_sampler(self.sampler_name, self.diffusion.num_timesteps, **opts)

    # ------------------------------------------------------------------------------------------
    # which objective
    # ------------------------------------------------------------------------------------------

    def _diffusion_applies(self, enabled: Any) -> bool:
        """IDDPM objective iff asked for and the config *is* a DDPM: additive latent noise, eps
        prediction of it (the noise target), latent in and out, a beta schedule. ``enabled=True``
        makes a mismatch an error."""
        reasons = []
        if not isinstance(self.corruption, AdditiveLatentNoise):
            reasons.append(f"corruption {self.specs['corruption']['name']}")
        if not isinstance(self.target, NoiseTarget):
            reasons.append(f"target {self.specs['target']['name']}")
        if self.input_space != "latent" or self.target.output_space != "latent":
            reasons.append(f"input/output space {self.input_space}/{self.target.output_space}")
        if self.noise_schedule is None or not hasattr(self.noise_schedule, "betas"):
            reasons.append(f"noise schedule {getattr(self.noise_schedule, 'name', None)} has no betas")
        self._why_not = "; ".join(reasons)
        if enabled in (False, "false", "off", 0):
            self._why_not = "method.diffusion.enabled=False"
            return False
        if reasons and enabled is True:
            raise ConfigError(f"method.diffusion.enabled=True needs a DDPM config (eps, noise target, latent in/out, beta schedule): {self._why_not}")
        return not reasons

    # ------------------------------------------------------------------------------------------
    # the network as a diffusion model_fn
    # ------------------------------------------------------------------------------------------

    def model_fn(self, generator: torch.Generator | None = None):
        """(x_t [B, C, h, w], t [B], y [B] or None) -> [B, C or 2C, h, w] float32 for GaussianDiffusion.

        Under bf16 autocast the DiT runs in bf16; its output is cast to float32 so that the diffusion
        maths (posterior, KL, decoder likelihood) are float32 as in IDDPM.
        """

        def fn(x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
            out = self.backbone(x_t, t, y if self.class_cond else None, generator)  # [B, L, p*p*C']
            return unpatchify(out.float(), self.latent_patch, self.out_channels)

        return fn

    def sample_timesteps(self, n: int, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        """(t [n] int64, importance weights [n] = 1 / (T p_t)) on ``device``.

        Uniform: drawn on the step generator's own device (no host sync; weights 1). Loss-second-moment
        draws on the CPU from a generator seeded off the step generator, so it stays reproducible and
        a resumed run draws the same t as an uninterrupted one.
        """
        T = self.diffusion.num_timesteps
        if isinstance(self.timestep_sampler, UniformSampler):
            gen_device = generator.device if generator is not None else device
            t = torch.randint(0, T, (n,), generator=generator, device=gen_device).to(device)
            return t, torch.ones(n, device=device)
        cpu_gen = generator
        if generator is None or generator.device.type != "cpu":
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator is not None else "cpu"))
            cpu_gen = torch.Generator().manual_seed(seed)
        t, w = self.timestep_sampler.sample(n, cpu_gen)
        return t.to(device), w.to(device)

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        if not self.use_diffusion:
            return super().training_step(images, labels, generator)
        x = self.augment(images, generator)  # [B, C_img, H, W]
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            x0 = self.latent_image(self.tokenizer.encode(x))  # [B, C, h, w] float32
        t, weights = self.sample_timesteps(x0.shape[0], generator, x0.device)  # [B], [B]
        noise = randn_like(x0, generator)
        kwargs = {"y": labels} if self.class_cond else {}
        terms = self.diffusion.training_losses(self.model_fn(generator), x0, t, noise, kwargs)  # each [B]
        loss = (terms["loss"] * weights).mean()  # importance-weighted: unbiased for the uniform-t loss
        if isinstance(self.timestep_sampler, LossSecondMomentSampler):
            # IDDPM updates with the raw (unweighted) per-sample losses, all-gathered across ranks
            self.timestep_sampler.update_with_local_losses(t, terms["loss"].detach())
        logs = {"loss": loss.detach(), "mse": terms["mse"].detach().mean(), "vb": terms["vb"].detach().mean()}
        return StepOutput(loss, logs)

    # sampler state travels with the model's state_dict (hence with every checkpoint): resume is exact
    def get_extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"timestep_sampler": self.sampler_name}
        if self.timestep_sampler is not None:
            for k, v in self.timestep_sampler.state_dict().items():
                state[k] = torch.from_numpy(np.asarray(v))  # tensors: loadable with weights_only=True
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        name = state.get("timestep_sampler", "uniform") if isinstance(state, dict) else "uniform"
        if name != self.sampler_name:
            raise ValueError(f"checkpoint was trained with timestep sampler {name!r}, config says {self.sampler_name!r}")
        if self.timestep_sampler is not None:
            arrays = {k: v.cpu().numpy() for k, v in state.items() if isinstance(v, Tensor)}
            if arrays:
                self.timestep_sampler.load_state_dict(arrays)

    # ------------------------------------------------------------------------------------------
    # figures / analysis
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def denoise(self, x: Tensor, t: int | Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Method-space images -> (noisy latent decoded, predicted x0 decoded), via the diffusion."""
        if not self.use_diffusion:
            return super().denoise(x, t, generator)
        x0 = self.latent_image(self.tokenizer.encode(x))
        t = torch.as_tensor(t, device=x.device)
        t = (t.expand(x.shape[0]) if t.ndim == 0 else t).long()
        x_t = self.diffusion.q_sample(x0, t, generator=generator)
        p = self.diffusion.p_mean_variance(self.model_fn(), x_t, t)
        decode = lambda v: self.tokenizer.decode(self.tokens_from_latent_image(v))  # noqa: E731
        return decode(x_t), decode(p.pred_xstart)

    # ------------------------------------------------------------------------------------------
    # evaluation: NLL and samples
    # ------------------------------------------------------------------------------------------

    def _null_or_labels(self, labels: Tensor) -> Tensor | None:
        """Unconditional likelihood / samples use the null class; labels only if there is none."""
        if not self.class_cond:
            return None
        return None if self.backbone.y_embedder.has_null else labels

    @torch.no_grad()
    def evaluate_nll(self, split: Any, device: torch.device) -> EvalResult:
        """Test NLL in bits/dim on the first ``nll.num_images`` test images (fixed order)."""
        c = self.nll_cfg
        num, bs = int(c.get("num_images", 64)), int(c.get("batch_size", 64))
        space = nll_space(self)
        batches: list[tuple[Tensor, Tensor | None]] = []
        seen = 0
        for images, labels in split.batches(bs, shuffle=False, device=device):
            images, labels = images[: num - seen], labels[: num - seen]
            x = self.preprocess_eval(images)  # [B, C_img, H, W]
            if space == "pixel":  # back on the 8-bit grid after any resize (no-op at native size)
                x = torch.round((x + 1.0) * 127.5) / 127.5 - 1.0
            batches.append((self.latent_image(self.tokenizer.encode(x)), self._null_or_labels(labels)))
            seen += images.shape[0]
            if seen >= num:
                break
        steps = nll_timesteps(self.diffusion.num_timesteps, int(c.get("dense_t", 20)), int(c.get("stride_t", 50)), bool(c.get("full", False)))
        conditional = self.class_cond and not self.backbone.y_embedder.has_null
        protocol = {
            "data": f"first {seen} test images, {self.diffusion_image_desc()}",
            "tokenizer": type(self.tokenizer).__name__,
            "latent_dim": self.tokenizer.latent_dim,
            "model": "p(x | y) (class-conditional, no null class)" if conditional else ("p(x) via the null class" if self.class_cond else "p(x)"),
            "diffusion": self.diffusion.describe(),
        }
        return evaluate_nll(self.diffusion, self.model_fn(), batches, space, steps, int(c.get("seed", 0)), protocol)

    def diffusion_image_desc(self) -> str:
        size, _, channels = self.network_input_geometry()
        return f"diffusion data [B, {channels}, {size}, {size}] = tokenizer latent laid out as an image"

    @torch.no_grad()
    def sample_images(
        self,
        num: int = 16,
        steps: int = 50,
        sampler: str = "ddim",
        cfg_scale: float = 4.0,
        eta: float = 0.0,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``num`` samples decoded to [0, 1] images [num, C_img, H, W].

        DDIM (eta 0, deterministic) or ancestral DDPM with the learned variance, on ``steps`` respaced
        steps. Class-conditional models sample labels 0, 1, 2, ... with classifier-free guidance
        ``cfg_scale`` on the eps channels (v from the conditional half); 1 = no guidance.
        """
        if not self.use_diffusion:
            raise ValueError("this DDM config is outside the DDPM family (method.diffusion); it cannot sample")
        device = torch.device(device) if device is not None else next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            diff = respaced_for_sampling(self.diffusion, steps, sampler)
            size, _, channels = self.network_input_geometry()
            shape = (int(num), channels, size, size)
            gen = torch.Generator(device=device).manual_seed(int(seed))
            fn = self.model_fn()
            kwargs: dict[str, Any] = {}
            if self.class_cond:
                labels = torch.arange(int(num), device=device) % self.info.num_classes
                kwargs = {"y": labels}
                if cfg_scale != 1.0 and self.backbone.y_embedder.has_null:
                    fn = cfg_model_fn(fn, float(cfg_scale), self.backbone.y_embedder.null_id)
            clip = nll_space(self) == "pixel"  # data in [-1, 1]: clip x0 as IDDPM; latents are unbounded
            if sampler == "ddim":
                x0 = ddim_sample_loop(diff, fn, shape, eta=eta, clip_denoised=clip, model_kwargs=kwargs, generator=gen, device=device)
            else:
                x0 = ddpm_sample_loop(diff, fn, shape, clip_denoised=clip, model_kwargs=kwargs, generator=gen, device=device)
            images = self.tokenizer.decode(self.tokens_from_latent_image(x0))  # method pixel space
            return self.to_display(images)
        finally:
            self.train(was_training)

    def write_samples(self, path: str | Path | None = None, **kwargs: Any) -> Path:
        """Sample (see ``sample_images``; defaults from ``method.samples``) and write a PNG grid."""
        c = {k: v for k, v in self.samples_cfg.items() if k != "enabled" and v is not None}
        c.update({k: v for k, v in kwargs.items() if v is not None})
        if path is None:
            run_dir = None if self.run_dir is None else Path(self.run_dir)
            if run_dir is None:
                raise ValueError("no run directory known: pass a path for the sample grid")
            path = Path(run_dir) / "samples.png"
        images = self.sample_images(**c)
        return save_png(images, path)

    @torch.no_grad()
    def extra_evaluations(self, dataset: Any, device: torch.device) -> list[tuple[str, Any]]:
        """NLL (bits/dim) on a few test images, and the sample grid in the run dir (not a metric),
        after the l-DAE figures."""
        out = super().extra_evaluations(dataset, device)
        if not self.use_diffusion:
            return out
        if self.nll_cfg.get("enabled", True):
            res = self.evaluate_nll(dataset.test, device)
            err = res.metrics["nll_bpd_stderr"]
            log.info("ddm: test NLL %.4f%s bits/dim (%s space, %s)", res.metrics["nll_bpd"], "" if err is None else f" +- {err:.4f}",
                     res.protocol["space"], res.protocol["timesteps"])
            out.append(("nll", res))
        run_dir = None if self.run_dir is None else Path(self.run_dir)
        if self.samples_cfg.get("enabled", True) and run_dir is not None:
            try:
                path = self.write_samples(run_dir / "samples.png", device=device)
                log.info("ddm: samples -> %s", path)
            except Exception as exc:  # a by-product: never fail a finished run over a picture
                log.warning("could not write DDM samples: %r", exc)
        return out

    def probe_protocol(self) -> dict[str, Any]:
        proto = super().probe_protocol()
        if self.use_diffusion:
            proto["objective"] = f"IDDPM {self.diffusion.loss_type} ({self.diffusion.model_var_type} variance), t ~ {self.sampler_name}"
        return proto


__all__ = ["DDM"]
