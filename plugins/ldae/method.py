"""One denoising method for the whole l-DAE deconstruction (Chen et al. 2024, METHODS.md §1).

``DenoisingMethod`` is tokenizer -> additive latent noise -> DiT (t-conditioned, adaLN-Zero) ->
target, each piece chosen by config, so every row of Tables 1-3 is a config of this one class:

==========================  ==================================================================
config key (method.*)       what it switches (paper step)
==========================  ==================================================================
tokenizer.name              patch-pca | patch-ae | patch-vae | conv-vae | pixel (Tab. 2, Fig. 5)
schedule.name               linear | cosine | gamma2-linear | sigma-linear | constant-sigma
prediction                  eps | x0                              (Tab. 3 "predict clean data")
input_space                 latent | image  ("operate on image input with inverse PCA")
output_space                latent | image  ("operate on image output with inverse PCA")
target                      noise | clean-latent | inverse-tokenizer-image | original-image
class_cond                  DiT class conditioning with label dropout (Tab. 1 row 1)
==========================  ==================================================================

The final l-DAE (``plugins/ldae/default_config.py``) is patch PCA, sigma-linear noise, image in,
original image out with 1 / 0.1 weights in the PCA basis and lambda_t = 1/(1+sigma^2). The DiT DDM
(``plugins/ddm``) is the same class with eps-prediction, linear betas, latent in/out.

Backbone: ``--backbone vit-*`` names the *encoder* size. The method builds DiT blocks of that width
and head count (timm Attention/Mlp); the encoder is ``backbone.depth`` blocks (the probed part) and
the decoder as many again ("the decoder is always of the same size as the encoder", §5), unless
``dit.encoder_depth`` / ``dit.decoder_depth`` say otherwise (paper default DiT-L = vit-l width with
12 + 12 blocks: ``--backbone vit-l --set method.dit.encoder_depth=12``). The plain timm ViT the
runner built is discarded (the random-init baseline still uses it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.components.base import Method, StepOutput
from ssl_bench.components.dit import DiTBackbone
from ssl_bench.components.latent_targets import (
    BUILTIN_LATENT_TARGETS,
    CleanLatentTarget,
    InverseTokenizerImageTarget,
    NoiseTarget,
    OriginalImageTarget,
    weighted_mean_sq,
)
from ssl_bench.components.noise import AdditiveLatentNoise, NoisyLatent, randn_like_from
from ssl_bench.components.patches import patchify, unpatchify
from ssl_bench.components.schedules import build_schedule
from ssl_bench.components.tokenizers import (
    ConvVAETokenizer,
    PatchAETokenizer,
    PatchPCATokenizer,
    PatchVAETokenizer,
    PixelTokenizer,
    default_latent_dim,
)
from ssl_bench.data.augment import random_horizontal_flip, random_resized_crop, to_float01
from ssl_bench.train.distributed import is_main_rank

log = logging.getLogger("ssl_bench")

TOKENIZER_ALIASES = {"pca": "patch-pca", "ae": "patch-ae", "vae": "patch-vae"}
TARGETS = tuple(BUILTIN_LATENT_TARGETS)


def _opts(d: Any, drop: tuple[str, ...] = ("name",)) -> dict[str, Any]:
    """Config sub-dict -> kwargs, without `drop` keys and None values (None = component default)."""
    return {k: v for k, v in dict(d or {}).items() if k not in drop and v is not None}


class DenoisingMethod(Method):
    default_config = Path(__file__).parent / "default_config.py"

    def __init__(self, cfg: Any, backbone: Any, info: Any):
        super().__init__(cfg, backbone, info)
        m = cfg.method
        self.run_dir: Path | None = None  # set by the runner
        self.image_size = int(m.get("image_size") or info.image_size)
        grid = backbone.image_size // backbone.patch_size  # token grid the user asked for
        if self.image_size % grid:
            raise ValueError(f"method.image_size {self.image_size} is not divisible by the {grid}x{grid} token grid of {backbone.name}")
        self.patch_size = self.image_size // grid  # pixel patch p (16 at 256 px)
        self.channels = info.channels
        self.image_norm = m.get("image_norm", "minus1_1")
        if self.image_norm not in ("minus1_1", "dataset"):
            raise ValueError(f"method.image_norm must be 'minus1_1' or 'dataset', got {self.image_norm!r}")

        # -- tokenizer --------------------------------------------------------------------------
        self.tokenizer = self.build_tokenizer(m.tokenizer)
        self.tok_patch = int(getattr(self.tokenizer, "latent_patch", 1))
        self.tok_channels = int(getattr(self.tokenizer, "latent_channels", self.tokenizer.latent_dim))

        # -- noise, prediction, spaces, target ---------------------------------------------------
        self.schedule = build_schedule(m.schedule.name, **_opts(m.schedule))
        self.prediction, self.input_space, self.output_space = m.prediction, m.input_space, m.output_space
        for key, val, allowed in (("prediction", self.prediction, ("eps", "x0")), ("input_space", self.input_space, ("latent", "image")), ("output_space", self.output_space, ("latent", "image"))):
            if val not in allowed:
                raise ValueError(f"method.{key} must be one of {allowed}, got {val!r}")
        self.target_kind = m.get("target") or self._auto_target()
        self._check_target()
        self.corruption = AdditiveLatentNoise(self.schedule, project_to_image=self.input_space == "image", tokenizer=self.tokenizer)
        self.target = self.build_target(m)

        # -- DiT ---------------------------------------------------------------------------------
        dcfg = m.get("dit") or {}
        enc_depth = int(dcfg.get("encoder_depth") or backbone.depth)
        dec_depth = dcfg.get("decoder_depth")
        dec_depth = enc_depth if dec_depth is None else int(dec_depth)
        if self.input_space == "image":
            in_size, in_patch, in_chans = self.image_size, self.patch_size, self.channels
        else:
            lat_size = self._latent_grid() * self.tok_patch
            in_size, in_patch, in_chans = lat_size, self.tok_patch, self.tok_channels
        out_dim = self.tokenizer.latent_dim if self.output_space == "latent" else self.patch_size**2 * self.channels
        self.class_cond = bool(m.get("class_cond", False))
        self.uses_labels = self.class_cond  # instance attribute: the runner records it per run
        self.backbone = DiTBackbone(
            image_size=in_size,
            patch_size=in_patch,
            in_chans=in_chans,
            out_dim=out_dim,
            embed_dim=backbone.embed_dim,
            encoder_depth=enc_depth,
            decoder_depth=dec_depth,
            num_heads=backbone.num_heads,
            mlp_ratio=float(dcfg.get("mlp_ratio") or 4.0),
            cond_hidden_ratio=dcfg.get("cond_hidden_ratio", 0.25),
            num_classes=info.num_classes if self.class_cond else 0,
            class_dropout_prob=float(m.get("class_dropout", 0.1)),
            name=f"dit[{backbone.name}]",
        )
        n_out = self._target_tokens()
        if self.backbone.num_patches != n_out:
            raise ValueError(
                f"DiT sees {self.backbone.num_patches} input tokens but the {self.output_space}-space target has {n_out}; "
                "use input_space == output_space or a tokenizer whose token grid matches the image patch grid"
            )

        # -- augmentation, probe, figures --------------------------------------------------------
        aug = m.get("augment") or {}
        self.crop_scale = tuple(aug["crop_scale"]) if aug.get("crop_scale") else None
        self.flip_p = float(aug.get("flip_p") or 0.0)
        probe = m.get("probe") or {}
        # probe t: 10 of 1000 (App. A); a single-noise-level schedule is probed at its one t
        probe_t = probe.get("t")
        self.probe_t = int(probe_t if probe_t is not None else getattr(self.schedule, "t_fixed", 10))
        self.probe_input = probe.get("input", "clean")
        if self.probe_input not in ("clean", "noisy"):
            raise ValueError(f"method.probe.input must be 'clean' or 'noisy', got {self.probe_input!r}")
        self.probe_block = probe.get("block")
        self.probe_noise_seed = int(probe.get("noise_seed", 0))
        self.fit_cfg = dict(m.get("fit") or {})
        self.want_figures = bool(m.get("figures", True))
        self._figure_images: Tensor | None = None

    # ------------------------------------------------------------------------------------------
    # construction helpers
    # ------------------------------------------------------------------------------------------

    def build_tokenizer(self, tcfg: Any):
        name = TOKENIZER_ALIASES.get(tcfg.name, tcfg.name)
        p, c = self.patch_size, self.channels
        D = p * p * c
        opts = _opts(tcfg, drop=("name", "latent_dim", "latent_ratio", "min_latent_dim", "latent_channels"))
        d = tcfg.get("latent_dim") or default_latent_dim(D, float(tcfg.get("latent_ratio") or 32 / 768), int(tcfg.get("min_latent_dim") or 2))
        if name == "patch-pca":
            return PatchPCATokenizer(p, c, d, **{k: v for k, v in opts.items() if k in ("num_samples", "center", "latent_scale")})
        if name in ("patch-ae", "patch-vae"):
            keys = ("num_samples", "center", "steps", "lr", "batch_size") + (("kl_weight",) if name == "patch-vae" else ())
            cls = PatchVAETokenizer if name == "patch-vae" else PatchAETokenizer
            return cls(p, c, d, **{k: v for k, v in opts.items() if k in keys})
        if name == "pixel":
            return PixelTokenizer(p, c)
        if name == "conv-vae":
            lc = tcfg.get("latent_channels") or max(1, d // 4)
            keys = ("width", "num_down", "kl_weight", "steps", "lr", "batch_size")
            return ConvVAETokenizer(self.image_size, c, int(lc), **{k: v for k, v in opts.items() if k in keys})
        from ssl_bench.registry import get_registry  # a third-party tokenizer: factory(patch_size, channels, latent_dim, **opts)

        return get_registry().get("tokenizer", name)(patch_size=p, channels=c, latent_dim=d, **opts)

    def _latent_grid(self) -> int:
        """Side of the token grid of the tokenizer on one image."""
        side = self.image_size // getattr(self.tokenizer, "patch_size", self.patch_size)
        return side

    def _target_tokens(self) -> int:
        if self.output_space == "image":
            return (self.image_size // self.patch_size) ** 2
        return self._latent_grid() ** 2

    def _auto_target(self) -> str:
        if self.prediction == "eps":
            return "noise"
        return "clean-latent" if self.output_space == "latent" else "original-image"

    def _check_target(self) -> None:
        kind = self.target_kind
        if kind not in TARGETS:
            raise ValueError(f"method.target must be one of {TARGETS} (or None for automatic), got {kind!r}")
        need = {"noise": ("eps", "latent"), "clean-latent": ("x0", "latent"), "inverse-tokenizer-image": ("x0", "image"), "original-image": ("x0", "image")}[kind]
        if (self.prediction, self.output_space) != need:
            raise ValueError(
                f"target '{kind}' needs prediction={need[0]!r} and output_space={need[1]!r} "
                f"(got prediction={self.prediction!r}, output_space={self.output_space!r})"
            )

    def build_target(self, m: Any):
        kind = self.target_kind
        if kind == "noise":
            return NoiseTarget(self.schedule)
        if kind == "clean-latent":
            return CleanLatentTarget(self.schedule)
        if kind == "inverse-tokenizer-image":
            return InverseTokenizerImageTarget(self.schedule, self.tokenizer, self.patch_size)
        if getattr(self.tokenizer, "patch_size", None) != self.patch_size:
            raise ValueError("the original-image target needs a patch-wise tokenizer with the image patch size")
        return OriginalImageTarget(self.schedule, self.tokenizer, float(m.get("residual_weight", 0.1)))

    # ------------------------------------------------------------------------------------------
    # image handling
    # ------------------------------------------------------------------------------------------

    def _normalize01(self, x: Tensor) -> Tensor:
        """[0, 1] images -> the method's pixel space ([-1, 1] as DiT, or dataset mean/std)."""
        if self.image_norm == "minus1_1":
            return x * 2.0 - 1.0
        mean = torch.as_tensor(self.info.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.info.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_display(self, x: Tensor) -> Tensor:
        """Method pixel space -> [0, 1] (figures)."""
        if self.image_norm == "minus1_1":
            return ((x + 1.0) / 2.0).clamp(0, 1)
        mean = torch.as_tensor(self.info.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.info.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def _resize(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return x

    def preprocess_eval(self, images: Tensor) -> Tensor:
        """uint8 [N, C, H, W] -> method pixel space, no augmentation (center crop = the image)."""
        return self._normalize01(self._resize(to_float01(images)))

    def preprocess_train(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """l-DAE default: no augmentation (center crop only, §1.3); optional random crop / flip."""
        x = to_float01(images)
        if self.crop_scale is not None:
            x = random_resized_crop(x, self.image_size, self.crop_scale, (3 / 4, 4 / 3), generator)
        else:
            x = self._resize(x)
        if self.flip_p > 0:
            x = random_horizontal_flip(x, self.flip_p, generator)
        return self._normalize01(x)

    def from_harness(self, images: Tensor) -> Tensor:
        """Harness-normalised (dataset mean/std) images -> the method's pixel space."""
        mean = torch.as_tensor(self.info.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.info.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        x01 = images * std + mean
        if self.image_norm == "dataset" and x01.shape[-1] == self.image_size:
            return images
        return self._normalize01(self._resize(x01.clamp(0, 1)))

    def latent_image(self, z: Tensor) -> Tensor:
        """Tokens [N, L, d] -> the latent laid out as an image for the DiT's patch embedding."""
        return unpatchify(z, self.tok_patch, self.tok_channels)

    def network_input(self, noisy: NoisyLatent) -> Tensor:
        if self.input_space == "image":
            return noisy.image  # [N, C, H, W] = tokenizer.decode(z_t)
        return self.latent_image(noisy.z_t)

    # ------------------------------------------------------------------------------------------
    # Method API
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self, train_split: Any, generator: torch.Generator) -> None:
        """Fit the tokenizer (PCA bases / patch AE / conv VAE) once, before training; keep a few
        images for the figures; write the tokenizer state into the run dir."""
        device = next(self.backbone.parameters()).device
        batches = self._prep_batches(train_split, generator, device)
        if getattr(self.tokenizer, "needs_fit", False) and not bool(getattr(self.tokenizer, "fitted", torch.tensor(False))):
            if hasattr(self.tokenizer, "fit_patches"):
                patches = self._sample_patches(batches, generator)
                self.tokenizer.fit_patches(patches, generator)
                log.info("fitted %s on %d patches", type(self.tokenizer).__name__, patches.shape[0])
            else:
                images = self._collect_images(batches)
                self.tokenizer.fit(images, generator)
                log.info("fitted %s on %d images", type(self.tokenizer).__name__, images.shape[0])
        self._pick_figure_images(train_split)
        run_dir = self.find_run_dir()
        if run_dir is not None and is_main_rank():  # prepare runs on every rank; one writer
            self.save_tokenizer(run_dir)

    def _pick_figure_images(self, train_split: Any) -> None:
        """The first 8 training images, fixed, for the Fig. 7/8 PNGs written when training ends."""
        if self._figure_images is None:
            device = next(self.backbone.parameters()).device
            first = next(iter(self._prep_batches(train_split, None, device, shuffle=False, batch_size=8)))
            self._figure_images = first.detach()

    @torch.no_grad()
    def on_resume(self, train_split: Any) -> None:
        self._pick_figure_images(train_split)  # a resumed run still ends with its figures

    def _prep_batches(self, split: Any, generator: torch.Generator | None, device: torch.device, shuffle: bool = True, batch_size: int = 256):
        """Method-space float images, batch by batch, from a split."""
        for images, _ in split.batches(batch_size, shuffle=shuffle, generator=generator, drop_last=False, device=device):
            yield self.preprocess_eval(images)

    def _sample_patches(self, batches, generator: torch.Generator) -> Tensor:
        """A few random patches from many images until ``num_samples`` are collected."""
        num = int(getattr(self.tokenizer, "num_samples", 100_000))
        per_image = int(self.fit_cfg.get("patches_per_image") or 16)
        out, total = [], 0
        for x in batches:
            p = patchify(x, self.tokenizer.patch_size)  # [B, L, D]
            k = min(per_image, p.shape[1])
            gen_device = generator.device if generator is not None else p.device
            order = torch.rand(p.shape[:2], generator=generator, device=gen_device).argsort(dim=1)[:, :k].to(p.device)  # [B, k]
            out.append(torch.gather(p, 1, order.unsqueeze(-1).expand(-1, -1, p.shape[-1])).reshape(-1, p.shape[-1]))
            total += out[-1].shape[0]
            if total >= num:
                break
        return torch.cat(out)[:num]

    def _collect_images(self, batches) -> Tensor:
        cap = int(self.fit_cfg.get("max_images") or 10_000)
        out, total = [], 0
        for x in batches:
            out.append(x)
            total += x.shape[0]
            if total >= cap:
                break
        return torch.cat(out)[:cap]

    def find_run_dir(self) -> Path | None:
        """The run dir the runner set (None when the method is used outside a run)."""
        return None if self.run_dir is None else Path(self.run_dir)

    def save_tokenizer(self, run_dir: Path) -> Path:
        """Write the fitted tokenizer beside the checkpoint (it is also inside the checkpoint)."""
        tok = self.tokenizer
        if isinstance(tok, PatchPCATokenizer):
            path = Path(run_dir) / "pca_basis.pt"
            torch.save({
                "mean": tok.mean.cpu(), "basis": tok.basis.cpu(), "eigenvalues": tok.eigenvalues.cpu(),
                "latent_dim": tok.latent_dim, "patch_size": tok.patch_size, "channels": tok.channels,
                "scale": float(tok.scale), "center": tok.center, "image_norm": self.image_norm,
                "layout": "patchify nhwpqc (channel fastest)",
            }, path)
        else:
            path = Path(run_dir) / "tokenizer.pt"
            torch.save({"class": type(tok).__name__, "state_dict": {k: v.cpu() for k, v in tok.state_dict().items()}}, path)
        return path

    def predict(self, noisy: NoisyLatent, labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Network output [N, L, out] for a noised batch."""
        y = labels if self.class_cond else None
        return self.backbone(self.network_input(noisy), noisy.t, y, generator)

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        x = self.preprocess_train(images, generator)  # [N, C, H, W]
        # tokenizer, noise and target in float32 even under bf16 autocast: the PCA projection and the
        # noise scale are exact quantities, not network activations
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            z0 = self.tokenizer.encode(x)  # [N, L, d]
            noisy = self.corruption(z0, generator)
            target, weight = self.target(x, z0, noisy)  # [N, L, P], [N, 1, 1 or P]
        pred = self.predict(noisy, labels, generator)  # [N, L, P]
        with torch.autocast(device_type=x.device.type, enabled=False):
            loss = weighted_mean_sq(self.target.to_loss_space(pred.float()), target, weight)
        return StepOutput(loss, {"loss": loss.detach()})

    def probe_input_for(self, x: Tensor) -> Tensor:
        """Clean (default) or noisy-at-t network input for the probe, from method-space images."""
        if self.input_space == "image" and self.probe_input == "clean":
            return x  # the clean image itself (residual included), as the paper's probe
        z0 = self.tokenizer.encode(x)
        if self.probe_input == "clean":
            return self.latent_image(z0)
        gen = torch.Generator(device=x.device).manual_seed(self.probe_noise_seed)
        t = torch.full((x.shape[0],), self.probe_t, dtype=torch.long, device=x.device)
        noisy = self.corruption.noise_at(z0, t, randn_like_from(z0, gen))
        return self.network_input(noisy)

    @torch.no_grad()
    def probe_features(self, images: Tensor) -> Tensor:
        x = self.from_harness(images)
        return self.backbone.features(self.probe_input_for(x), pool="avg", t=self.probe_t, block=self.probe_block)

    def probe_protocol(self) -> dict[str, Any]:
        block = self.probe_block if self.probe_block is not None else self.backbone.encoder_depth
        return {
            "feature": f"DiT encoder output after block {block} of {self.backbone.depth}, average-pooled, no norm",
            "t": self.probe_t,
            "input": f"{self.probe_input} ({self.input_space} space)",
            "tokenizer": type(self.tokenizer).__name__,
            "latent_dim": self.tokenizer.latent_dim,
            "image_norm": self.image_norm,
            "labels": "null class" if self.class_cond else "none",
        }

    def extra_evaluations(self, dataset: Any, device: torch.device) -> list[tuple[str, Any]]:
        """After training (main rank only, outside the timed loop): the Fig. 4/7/8 PNGs. No metrics."""
        run_dir = self.find_run_dir()
        if not self.want_figures or run_dir is None or self._figure_images is None:
            return []
        try:
            from ssl_bench_plugins.ldae.figures import write_figures

            paths = write_figures(self, self._figure_images.to(device), run_dir)
            log.info("figures: %s", ", ".join(p.name for p in paths))
        except Exception as exc:  # figures are a by-product: never fail a finished training run
            log.warning("could not write l-DAE figures: %r", exc)
        return []

    # ------------------------------------------------------------------------------------------
    # denoising helpers (figures, analysis)
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def denoise(self, x: Tensor, t: int | Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Method-space images -> (noisy network input shown as an image, predicted clean image)."""
        z0 = self.tokenizer.encode(x)
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0]) if torch.as_tensor(t).ndim == 0 else t.to(x.device)
        noisy = self.corruption.noise_at(z0, t.long(), randn_like_from(z0, generator))
        pred = self.backbone(self.network_input(noisy), noisy.t, None)
        if self.output_space == "image":
            x_hat = unpatchify(pred, self.patch_size, self.channels)
        elif self.prediction == "x0":
            x_hat = self.tokenizer.decode(pred)
        else:
            g = noisy.gamma.view(-1, 1, 1).clamp_min(1e-3)
            x_hat = self.tokenizer.decode((noisy.z_t - noisy.sigma.view(-1, 1, 1) * pred) / g)
        shown = noisy.image if noisy.image is not None else self.tokenizer.decode(noisy.z_t)
        return shown, x_hat


class LDAE(DenoisingMethod):
    """l-DAE: the final configuration of ``DenoisingMethod`` (see default_config.py)."""

    default_config = Path(__file__).parent / "default_config.py"


__all__ = ["DenoisingMethod", "LDAE"]
