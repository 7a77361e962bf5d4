"""Denoising methods on a DiT: the reconstruction pipeline with a t-conditioned DiT as the network.

Shared by l-DAE and the DiT DDM it deconstructs (Chen et al. 2024, §3-4; Peebles & Xie 2023): both are
``DenoisingMethod`` configs, so every row of the paper's Tables 1-3 is a config of this one class
(parts from ``ReconstructionMethod``; here only what a DiT adds):

==========================  ==================================================================
config key (method.*)       what it switches (paper step)
==========================  ==================================================================
tokenizer.name              patch-pca | patch-ae | patch-vae | conv-vae | pixel (Tab. 2, Fig. 5)
noise_schedule.name         linear | cosine | gamma2-linear | sigma-linear | constant-sigma
target.name                 noise (eps) | clean-latent | inverse-tokenizer-image | original-image
input_space                 latent | image  ("operate on image input with inverse PCA")
class_cond                  DiT class conditioning with label dropout (Tab. 1 row 1)
dit.*                       encoder/decoder depth, per-block t-MLP width (App. A), mlp ratio
probe.*                     the probe's t, clean or noisy input, block (App. A "Linear probing")
==========================  ==================================================================

Backbone: ``--backbone vit-*`` names the *encoder* size. The method builds DiT blocks of that width
and head count (timm Attention/Mlp); the encoder is ``backbone.depth`` blocks (the probed part) and
the decoder as many again ("the decoder is always of the same size as the encoder", §5), unless
``dit.encoder_depth`` / ``dit.decoder_depth`` say otherwise (paper default DiT-L = vit-l width with
12 + 12 blocks: ``--backbone vit-l --set method.dit.encoder_depth=12``). The plain timm ViT the
runner built is discarded. A masking corruption gives the DiT a mask token (the encoder half reads
only the visible tokens, MAE-style) and conditions it on t = 0.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor

from ssl_bench.components.base import Corrupted
from ssl_bench.components.dit import DiTBackbone
from ssl_bench.components.noise import randn_like_from
from ssl_bench.components.patches import unpatchify
from ssl_bench.errors import ConfigError
from ssl_bench.methods.reconstruction import ReconstructionMethod

log = logging.getLogger("ssl_bench")

PROBE_INPUTS = ("clean", "noisy")


class DenoisingMethod(ReconstructionMethod):
    """The reconstruction pipeline with a DiT network (t-conditioned, adaLN-Zero)."""

    default_image_norm: ClassVar[str] = "minus1_1"
    own_random_init: ClassVar[bool] = True

    def build_network(self) -> None:
        m, backbone, info = self.cfg.method, self.backbone, self.info
        dcfg = m.get("dit") or {}
        enc_depth = int(dcfg.get("encoder_depth") or backbone.depth)
        dec_depth = dcfg.get("decoder_depth")
        dec_depth = enc_depth if dec_depth is None else int(dec_depth)
        in_size, in_patch, in_chans = self.network_input_geometry()
        self.class_cond = bool(m.get("class_cond", False))
        self.uses_labels = self.class_cond  # instance attribute: the runner records it per run
        self.masked = "mask" in getattr(self.corruption, "produces", frozenset())
        self.backbone = DiTBackbone(
            image_size=in_size,
            patch_size=in_patch,
            in_chans=in_chans,
            out_dim=self.output_dim,
            embed_dim=backbone.embed_dim,
            encoder_depth=enc_depth,
            decoder_depth=dec_depth,
            num_heads=backbone.num_heads,
            mlp_ratio=float(dcfg.get("mlp_ratio") or 4.0),
            cond_hidden_ratio=dcfg.get("cond_hidden_ratio", 0.25),
            num_classes=info.num_classes if self.class_cond else 0,
            class_dropout_prob=float(m.get("class_dropout", 0.1)),
            name=f"dit[{backbone.name}]",
            masked=self.masked,
        )
        probe = m.get("probe") or {}
        # probe t: 10 of 1000 (App. A); a single-noise-level schedule is probed at its one t, a
        # masking-trained DiT (always conditioned on t = 0) at 0
        probe_t = probe.get("t")
        default_t = 0 if self.noise_schedule is None or self.masked else getattr(self.noise_schedule, "t_fixed", 10)
        self.probe_t = int(probe_t if probe_t is not None else default_t)
        self.probe_input_kind = probe.get("input", "clean")
        if self.probe_input_kind not in PROBE_INPUTS:
            raise ConfigError(f"method.probe.input must be one of {PROBE_INPUTS}, got {self.probe_input_kind!r}")
        if self.probe_input_kind == "noisy" and not hasattr(self.corruption, "noise_at"):
            raise ConfigError(f"method.probe.input='noisy' needs a noise corruption; corruption '{self.specs['corruption']['name']}' adds none")
        self.probe_block = probe.get("block")
        self.probe_noise_seed = int(probe.get("noise_seed", 0))
        self.want_figures = bool(m.get("figures", True))
        self._figure_images: Tensor | None = None

    # ------------------------------------------------------------------------------------------
    # network
    # ------------------------------------------------------------------------------------------

    def timesteps(self, corrupted: Corrupted, n: int, device: torch.device) -> Tensor:
        """The DiT's t: the corruption's noise level, or 0 for a corruption without one (masking)."""
        if corrupted.t is not None:
            return corrupted.t
        return torch.zeros(n, dtype=torch.long, device=device)

    def predict(self, net_input: Tensor, corrupted: Corrupted, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Network output [N, L, P] for a corrupted batch."""
        y = labels if self.class_cond else None
        t = self.timesteps(corrupted, net_input.shape[0], net_input.device)
        return self.backbone(net_input, t, y, generator, ids_keep=corrupted.ids_keep)

    def features(self, net_input: Tensor) -> Tensor:
        return self.backbone.features(net_input, pool="avg", t=self.probe_t, block=self.probe_block)

    def probe_input(self, x: Tensor) -> Tensor:
        """Clean (default) or noisy-at-t network input for the probe, from method-space images."""
        if self.probe_input_kind == "clean":
            return super().probe_input(x)
        z0 = self.tokenizer.encode(x)
        gen = torch.Generator(device=x.device).manual_seed(self.probe_noise_seed)
        t = torch.full((x.shape[0],), self.probe_t, dtype=torch.long, device=x.device)
        return self.network_input(self.corruption.noise_at(z0, t, randn_like_from(z0, gen)).z_t)

    def probe_protocol(self) -> dict[str, Any]:
        block = self.probe_block if self.probe_block is not None else self.backbone.encoder_depth
        return {
            **super().probe_protocol(),
            "feature": f"DiT encoder output after block {block} of {self.backbone.depth}, average-pooled, no norm",
            "t": self.probe_t,
            "input": f"{self.probe_input_kind} ({self.input_space} space)",
            "tokenizer": type(self.tokenizer).__name__,
            "latent_dim": self.tokenizer.latent_dim,
            "labels": "null class" if self.class_cond else "none",
        }

    # ------------------------------------------------------------------------------------------
    # figures (Fig. 4/7/8 of the paper) and denoising helpers
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self, train_split: Any, generator: torch.Generator) -> None:
        super().prepare(train_split, generator)
        self._pick_figure_images(train_split)

    @torch.no_grad()
    def on_resume(self, train_split: Any) -> None:
        self._pick_figure_images(train_split)  # a resumed run still ends with its figures

    def _pick_figure_images(self, train_split: Any) -> None:
        """The first 8 training images, fixed, for the Fig. 7/8 PNGs written when training ends."""
        if self._figure_images is None:
            device = next(self.backbone.parameters()).device
            self._figure_images = next(iter(self.prep_batches(train_split, None, device, shuffle=False, batch_size=8))).detach()

    def extra_evaluations(self, dataset: Any, device: torch.device) -> list[tuple[str, Any]]:
        """After training (main rank only, outside the timed loop): the Fig. 4/7/8 PNGs. No metrics."""
        if not self.want_figures or self.run_dir is None or self._figure_images is None:
            return []
        try:
            from ssl_bench.methods.denoising_figures import write_figures

            paths = write_figures(self, self._figure_images.to(device), self.run_dir)
            log.info("figures: %s", ", ".join(p.name for p in paths))
        except Exception as exc:  # figures are a by-product: never fail a finished training run
            log.warning("could not write l-DAE figures: %r", exc)
        return []

    @torch.no_grad()
    def denoise(self, x: Tensor, t: int | Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Method-space images -> (noisy network input shown as an image, predicted clean image)."""
        if not hasattr(self.corruption, "noise_at"):
            raise ValueError(f"corruption '{self.specs['corruption']['name']}' adds no noise: nothing to denoise")
        z0 = self.tokenizer.encode(x)
        t = torch.as_tensor(t, device=x.device)
        t = (t.expand(x.shape[0]) if t.ndim == 0 else t).long()
        noisy = self.corruption.noise_at(z0, t, randn_like_from(z0, generator))
        pred = self.predict_offset(self.network_input(noisy.z_t), noisy, None, None)
        if self.target.output_space == "image":
            x_hat = unpatchify(pred, self.patch_size, self.channels)
        elif getattr(self.target, "prediction", "x0") == "x0":
            x_hat = self.tokenizer.decode(pred)
        else:
            g = noisy.gamma.view(-1, 1, 1).clamp_min(1e-3)
            x_hat = self.tokenizer.decode((noisy.z_t - noisy.sigma.view(-1, 1, 1) * pred) / g)
        return self.tokenizer.decode(noisy.z_t), x_hat
