"""The one reconstruction pipeline every masked / denoising autoencoder in ssl-bench runs.

    augment -> tokenizer.encode -> corruption -> network input -> network -> prediction
            -> target -> weighted loss

l-DAE's argument (Chen et al. 2024, §4, Fig. 1) is that a diffusion model and a classical denoising
autoencoder are this same pipeline with different parts; MAE (He et al. 2022) is it with masking.
So the parts are chosen by name (``method.tokenizer``, ``method.noise_schedule``, ``method.corruption``,
``method.target``, each ``dict(name=..., **options)``, see ``parts.py``), built from the registry by
the run's builder (``ssl_bench.run.assemble.build_parts``) and handed to the method, and a method
plugin only adds its *network* (MAE's ViT encoder + decoder, a DiT) and what only it has.
Masking vs additive latent noise with everything else held equal is then one ``--set``.

Pipeline keys (``method.*``), shared by every reconstruction method:

================  ===========================================================================
key               meaning
================  ===========================================================================
tokenizer         image <-> latent tokens [N, L, d] (``patch`` = identity, ``patch-pca``, ...)
noise_schedule    gamma_t / sigma_t tables for noise corruptions (None when unused)
corruption        ``random-masking`` (removes tokens) or ``additive-latent-noise`` (noise in the latent)
target            what the network regresses; it fixes the output space (latent d or pixel patch)
input_space       ``image``: the network reads tokenizer.decode(corrupted latent) (l-DAE's inverse
                  PCA; MAE's image for the identity tokenizer); ``latent``: the latent laid out as
                  an image (a DDM)
augment           ``crop_scale`` (None: resize only), ``ratio``, ``flip_p``: training augmentation
image_norm        ``dataset`` (mean/std, MAE) or ``minus1_1`` (DiT's [-1, 1])
image_size        resize every image (the pixel tokenizer of l-DAE Fig. 5); None = the dataset's
================  ===========================================================================

Incompatible parts are refused when the method is built, before anything trains, with a message
that names both parts and why (a target that regresses the added noise under a masking corruption;
an image-space target on a tokenizer whose token grid is not the network's; ...).

Loss: ``targets.reconstruction_loss``; with a corruption that removes tokens and a target with
``masked_only`` (the default), only removed tokens count (MAE).

Centring. A target in raw pixel values (``Target.raw_pixels``: the inverse-tokenizer image, the
original image, un-normalised pixels) is predicted as the tokenizer's mean patch mu plus the network
output, a fixed offset; the network regresses x0 - mu. A latent target is centred already (the PCA
latent is z = V(x - mu), whose mean is 0), and the chain of l-DAE's Table 3 moves from latent to
pixel outputs: without the offset its image-output rows would regress a far-from-zero constant
through a zero-initialised head while the latent rows do not, and the chain would compare centring
rather than the paper's changes. The loss is unchanged by the choice (Eq. 4 measures x0 - pred,
with pred including mu); at initialisation every row predicts the mean patch.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.components.base import BackboneFactory, Corrupted, Method, Parts, StepOutput
from ssl_bench.components.patches import patchify, unpatchify
from ssl_bench.components.targets import reconstruction_loss
from ssl_bench.data.augment import normalize, random_horizontal_flip, random_resized_crop, to_float01
from ssl_bench.data.crops import CropSpec
from ssl_bench.distributed import is_main_rank
from ssl_bench.errors import ConfigError
from ssl_bench.methods.parts import used_options
from ssl_bench.progress import progress

log = logging.getLogger("ssl_bench")

IMAGE_NORMS = ("dataset", "minus1_1")
INPUT_SPACES = ("image", "latent")


def _kind_label(kind: str, spec: dict[str, Any] | None) -> str:
    return f"{kind} '{spec['name']}'" if spec else f"no {kind}"


@dataclass(frozen=True)
class PixelGeometry:
    """The method's pixels and tokens: what its parts are built for (``as_context`` is the keywords
    a part constructor receives, see ``ssl_bench.components.base``)."""

    image_size: int  # method.image_size, or the dataset's (every image is resized to it)
    grid: int  # tokens per side of the network's patch grid (the backbone's)
    patch_size: int  # the network's pixel patch at image_size: image_size // grid (16 at 224/256 px)
    channels: int

    @classmethod
    def of(cls, cfg: Any, info: Any, grid: int, backbone_name: str) -> PixelGeometry:
        """For ``cfg`` on a dataset (``info``) with a backbone of ``grid`` x ``grid`` tokens."""
        image_size = int(cfg.method.get("image_size") or info.image_size)
        if image_size % grid:
            raise ConfigError(
                f"method.image_size {image_size} is not divisible by the {grid}x{grid} token grid of "
                f"{backbone_name}; pick a multiple of {grid}"
            )
        return cls(image_size, grid, image_size // grid, int(info.channels))

    def as_context(self) -> dict[str, int]:
        return {"image_size": self.image_size, "patch_size": self.patch_size, "channels": self.channels}


class ReconstructionMethod(Method):
    """A method built from tokenizer, corruption, noise schedule and target parts plus a network.

    The parts arrive built (``parts``, from ``ssl_bench.run.assemble.build_parts``); so does, for a
    network that reads another geometry than the dataset's, a factory of the configured backbone
    (``make_backbone``). Subclasses implement ``build_network`` (create the modules, called once the
    parts are in place), ``predict`` (network input + corruption record -> prediction [N, L, P]) and
    ``features`` (clean network input -> [N, D] probe features), and set ``default_config``.
    """

    #: the image normalisation when the config does not say (MAE's dataset mean/std)
    default_image_norm: ClassVar[str] = "dataset"

    def __init__(self, cfg: Any, backbone: Any, info: Any, parts: Parts, make_backbone: BackboneFactory | None = None):
        super().__init__(cfg, backbone, info)
        m = cfg.method
        self.run_dir: Path | None = None  # set by the runner; artefacts (PCA bases, figures) go there
        geometry = PixelGeometry.of(cfg, info, backbone.image_size // backbone.patch_size, backbone.name)
        self.image_size = geometry.image_size
        self.grid = geometry.grid  # token grid the user asked for
        self.patch_size = geometry.patch_size  # the network's pixel patch (16 at 224/256 px)
        self.channels = geometry.channels
        self.image_norm = m.get("image_norm") or self.default_image_norm
        if self.image_norm not in IMAGE_NORMS:
            raise ConfigError(f"method.image_norm must be one of {IMAGE_NORMS}, got {self.image_norm!r}")
        self.input_space = m.get("input_space") or "image"
        if self.input_space not in INPUT_SPACES:
            raise ConfigError(f"method.input_space must be one of {INPUT_SPACES}, got {self.input_space!r}")
        aug = m.get("augment") or {}
        self.crop_scale = tuple(aug["crop_scale"]) if aug.get("crop_scale") else None
        self.crop_ratio = tuple(aug.get("ratio") or (3 / 4, 4 / 3))
        self.flip_p = float(aug.get("flip_p") or 0.0)
        self.crop_interpolation = aug.get("interpolation") or "bicubic"  # MAE's; DiT's centre crop also resizes bicubic

        # -- the parts, as the builder made them (assigned in build order: the state dict's order) ----
        self.specs = dict(parts.specs)
        self.noise_schedule = parts.noise_schedule
        self.tokenizer = parts.tokenizer
        self.corruption = parts.corruption
        self.target = parts.target
        self.make_backbone = make_backbone  # for build_network only: a built model holds no registry
        self.latent_patch = int(getattr(self.tokenizer, "latent_patch", 1))
        self.latent_channels = int(getattr(self.tokenizer, "latent_channels", self.tokenizer.latent_dim))
        self.output_dim = self._check_composition()
        self.build_network()
        self.make_backbone = None  # so the model deep-copies and pickles (DDP replicas, EMA copies)

    # ------------------------------------------------------------------------------------------
    # composition
    # ------------------------------------------------------------------------------------------

    def tokens_per_image(self) -> int:
        """Tokens the tokenizer makes of one method-size image."""
        p = int(self.tokenizer.patch_size)
        if self.image_size % p:
            raise ConfigError(
                f"tokenizer '{self.specs['tokenizer']['name']}' cuts {p}-px tokens, which do not tile the "
                f"{self.image_size}-px image; pick a tokenizer patch that divides it"
            )
        return (self.image_size // p) ** 2

    def _check_composition(self) -> int:
        """Refuse parts that cannot work together (naming both and why); return the output width P."""
        tok, cor, tgt = (_kind_label(k, self.specs[k]) for k in ("tokenizer", "corruption", "target"))
        produces = frozenset(getattr(self.corruption, "produces", frozenset()))
        missing = frozenset(getattr(self.target, "requires", frozenset())) - produces
        if missing:
            raise ConfigError(
                f"{tgt} needs the corruption to record {', '.join(sorted(missing))}, but {cor} records "
                f"{', '.join(sorted(produces)) or 'nothing'}: pair it with a corruption that does (e.g. "
                "additive-latent-noise), or pick a target that does not need it (clean-latent, original-image, norm-pix)"
            )
        reason = self.target.incompatibility(self.tokenizer)
        if reason:
            raise ConfigError(f"{tgt} cannot work with {tok}: {reason}")
        space = getattr(self.target, "output_space", "latent")
        if space not in ("latent", "image"):
            raise ConfigError(f"{tgt} has output_space {space!r}; targets predict 'latent' or 'image'")
        n_tok, n_img = self.tokens_per_image(), self.grid**2
        n_net = n_tok if self.input_space == "latent" else n_img
        if "mask" in produces and n_tok != n_net:
            raise ConfigError(
                f"{cor} removes tokens of {tok} ({n_tok} per image), but the network reads {n_net} image patches: "
                "masking needs the tokenizer's token grid to be the network's (a patch-wise tokenizer, or "
                "method.input_space='latent')"
            )
        n_out = n_tok if space == "latent" else n_img
        if n_out != n_net:
            raise ConfigError(
                f"{tgt} predicts {n_out} {space} tokens per image with {tok}, but the network sees {n_net} tokens "
                f"({self.input_space} input): use input_space == the target's space, or a tokenizer whose token grid "
                "is the network's patch grid"
            )
        return int(self.tokenizer.latent_dim) if space == "latent" else self.patch_size**2 * self.channels

    def describe_parts(self) -> dict[str, Any]:
        """The parts and the options that reached them (stored with every metric)."""
        parts = {"tokenizer": self.tokenizer, "noise_schedule": self.noise_schedule, "corruption": self.corruption, "target": self.target}
        return {key: (None if part is None else used_options(self.specs[key], part)) for key, part in parts.items()}

    # ------------------------------------------------------------------------------------------
    # the network (subclasses)
    # ------------------------------------------------------------------------------------------

    @abstractmethod
    def build_network(self) -> None:
        """Create the network modules. The parts, ``self.output_dim`` (P) and the input geometry
        (``self.input_space``, ``self.network_input_geometry()``) are known."""

    @abstractmethod
    def predict(self, net_input: Tensor, corrupted: Corrupted, labels: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """Network input [N, C', H', W'] (+ what the corruption did) -> prediction [N, L, P]."""

    @abstractmethod
    def features(self, net_input: Tensor) -> Tensor:
        """A clean network input [N, C', H', W'] -> probe features [N, D]."""

    def prediction_offset(self) -> Tensor | None:
        """[P] added to every token's prediction: the tokenizer's mean patch for raw-pixel targets on
        a patch-wise tokenizer of the network's patch (see the module docstring), else None."""
        if not (getattr(self.target, "raw_pixels", False) and self.target.output_space == "image"):
            return None
        mean = getattr(self.tokenizer, "mean", None)
        if not isinstance(mean, Tensor) or mean.numel() != self.output_dim:
            return None
        return mean

    def predict_offset(self, net_input: Tensor, corrupted: Corrupted, labels: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """``predict`` plus the fixed ``prediction_offset``: what the loss compares with the target."""
        pred = self.predict(net_input, corrupted, labels, generator)  # [N, L, P]
        offset = self.prediction_offset()
        return pred if offset is None else pred + offset.to(pred.dtype)

    def network_input_geometry(self) -> tuple[int, int, int]:
        """(image size, patch size, channels) of what the network reads."""
        if self.input_space == "image":
            return self.image_size, self.patch_size, self.channels
        side = (self.image_size // int(self.tokenizer.patch_size)) * self.latent_patch
        return side, self.latent_patch, self.latent_channels

    # ------------------------------------------------------------------------------------------
    # images
    # ------------------------------------------------------------------------------------------

    def normalize01(self, x: Tensor) -> Tensor:
        """[0, 1] images -> the method's pixel space ([-1, 1] as DiT, or dataset mean/std as MAE)."""
        if self.image_norm == "minus1_1":
            return x * 2.0 - 1.0
        return normalize(x, self.info.mean, self.info.std)

    def to_display(self, x: Tensor) -> Tensor:
        """Method pixel space -> [0, 1] (figures, samples)."""
        if self.image_norm == "minus1_1":
            return ((x + 1.0) / 2.0).clamp(0, 1)
        mean = torch.as_tensor(self.info.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.info.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def resize(self, x: Tensor) -> Tensor:
        """[0, 1] images -> ``image_size`` (antialiased), unchanged when already that size."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return x

    def augment(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        """uint8 [N, C, H, W] -> augmented images in the method's pixel space [N, C, S, S].

        Random resized crop (``augment.crop_scale``; MAE's (0.2, 1)) or a plain resize, then a
        horizontal flip with ``augment.flip_p``. A 5-D batch [N, V, C, S, S] holds views a folder
        loader already cropped from the full image (each paper's RandomResizedCrop): view 0 is used
        and only the flip is done here.
        """
        if images.ndim == 5:
            x = self.resize(to_float01(images[:, 0]))
        else:
            x = to_float01(images)
            if self.crop_scale is not None:
                x = random_resized_crop(x, self.image_size, self.crop_scale, self.crop_ratio, generator)
            else:
                x = self.resize(x)
        if self.flip_p > 0:
            x = random_horizontal_flip(x, self.flip_p, generator)
        return self.normalize01(x)

    def train_views(self) -> list[CropSpec]:
        """One view: the random resized crop of ``augment`` (MAE: scale (0.2, 1), bicubic) cut from
        the full image by a folder loader, or without ``crop_scale`` the largest centre square (the
        DiT / l-DAE centre crop, l-DAE §5 "Data augmentation")."""
        if self.crop_scale is None:
            return [CropSpec.center(self.image_size)]
        return [CropSpec(self.image_size, self.crop_scale, self.crop_ratio, self.crop_interpolation)]

    def preprocess_eval(self, images: Tensor) -> Tensor:
        """uint8 [N, C, H, W] -> method pixel space, no augmentation."""
        return self.normalize01(self.resize(to_float01(images)))

    def from_harness(self, images: Tensor) -> Tensor:
        """Harness-normalised (dataset mean/std) images -> the method's pixel space."""
        if self.image_norm == "dataset" and images.shape[-1] == self.image_size:
            return images
        mean = torch.as_tensor(self.info.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.info.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return self.normalize01(self.resize((images * std + mean).clamp(0, 1)))

    def latent_image(self, z: Tensor) -> Tensor:
        """Tokens [N, L, d] -> the latent laid out as an image for a patch-embedding network."""
        return unpatchify(z, self.latent_patch, self.latent_channels)

    def tokens_from_latent_image(self, x: Tensor) -> Tensor:
        """Inverse of ``latent_image``: [N, c, h, w] -> [N, L, d]."""
        return patchify(x, self.latent_patch)

    def network_input(self, z: Tensor) -> Tensor:
        """(Corrupted) latent tokens [N, L, d] -> what the network reads: the inverse-tokenizer image
        [N, C, H, W] (input_space 'image') or the latent image (input_space 'latent')."""
        if self.input_space == "image":
            return self.tokenizer.decode(z)
        return self.latent_image(z)

    def probe_input(self, x: Tensor) -> Tensor:
        """Clean network input for the probe from method-space images: the clean image itself
        (residual included, as l-DAE's and MAE's probes), or its latent image."""
        if self.input_space == "image":
            return x
        return self.latent_image(self.tokenizer.encode(x))

    # ------------------------------------------------------------------------------------------
    # Method API
    # ------------------------------------------------------------------------------------------

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        x = self.augment(images, generator)  # [N, C, S, S]
        # tokenizer, corruption and target in float32 even under bf16 autocast: the PCA projection and
        # the noise scale are exact quantities, not network activations
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            z0 = self.tokenizer.encode(x)  # [N, L, d]
            corrupted = self.corruption(z0, generator)
            net_input = self.network_input(corrupted.z_t if corrupted.z_t is not None else z0)
            target, weight = self.target(x, z0, corrupted)  # [N, L, P], broadcastable or None
        pred = self.predict_offset(net_input, corrupted, labels, generator)  # [N, L, P]
        with torch.autocast(device_type=x.device.type, enabled=False):
            mask = corrupted.mask if self.target.masked_only else None
            loss = reconstruction_loss(self.target.to_loss_space(pred.float()), target, weight, mask)
        return StepOutput(loss, {"loss": loss.detach()})

    @torch.no_grad()
    def probe_features(self, images: Tensor) -> Tensor:
        return self.features(self.probe_input(self.from_harness(images)))

    @torch.no_grad()
    def prepare(self, train_split: Any, generator: torch.Generator) -> None:
        """Fit the tokenizer (PCA bases, patch AE / VAE, conv VAE) once before training, on the
        method's own pixels (no augmentation), and write it into the run dir."""
        tok = self.tokenizer
        if not getattr(tok, "needs_fit", False) or bool(getattr(tok, "fitted", torch.tensor(False))):
            return
        device = next(self.parameters()).device
        batches = self.prep_batches(train_split, generator, device)
        fit_cfg = dict(self.cfg.method.get("fit") or {})
        if hasattr(tok, "fit_patches"):
            patches = self._sample_patches(batches, generator, int(fit_cfg.get("patches_per_image") or 16))
            tok.fit_patches(patches, generator)
            log.info("fitted %s on %d patches", type(tok).__name__, patches.shape[0])
        else:
            images = self._collect_images(batches, int(fit_cfg.get("max_images") or 10_000))
            tok.fit(images, generator)
            log.info("fitted %s on %d images", type(tok).__name__, images.shape[0])
        if self.run_dir is not None and is_main_rank():  # prepare runs on every rank; one writer
            self.save_tokenizer(Path(self.run_dir))

    def prep_batches(self, split: Any, generator: torch.Generator | None, device: torch.device, shuffle: bool = True, batch_size: int = 256):
        """Method-space float images, batch by batch, from a split."""
        for images, _ in split.batches(batch_size, shuffle=shuffle, generator=generator, drop_last=False, device=device):
            yield self.preprocess_eval(images)

    def _sample_patches(self, batches: Any, generator: torch.Generator, per_image: int) -> Tensor:
        """A few random patches from many images until the tokenizer's ``num_samples`` are collected."""
        num = int(getattr(self.tokenizer, "num_samples", 100_000))
        out, total = [], 0
        bar = progress(desc=f"sampling patches for {type(self.tokenizer).__name__}", total=num, unit="patch")
        for x in batches:
            p = patchify(x, self.tokenizer.patch_size)  # [B, L, D]
            k = min(per_image, p.shape[1])
            gen_device = generator.device if generator is not None else p.device
            order = torch.rand(p.shape[:2], generator=generator, device=gen_device).argsort(dim=1)[:, :k].to(p.device)  # [B, k]
            out.append(torch.gather(p, 1, order.unsqueeze(-1).expand(-1, -1, p.shape[-1])).reshape(-1, p.shape[-1]))
            total += out[-1].shape[0]
            bar.update(min(out[-1].shape[0], num - bar.n))
            if total >= num:
                break
        bar.close()
        return torch.cat(out)[:num]

    @staticmethod
    def _collect_images(batches: Any, cap: int) -> Tensor:
        out, total = [], 0
        for x in batches:
            out.append(x)
            total += x.shape[0]
            if total >= cap:
                break
        return torch.cat(out)[:cap]

    def save_tokenizer(self, run_dir: Path) -> Path:
        """Write the fitted tokenizer beside the checkpoint (it is also inside the checkpoint)."""
        tok = self.tokenizer
        if hasattr(tok, "eigenvalues") and hasattr(tok, "basis"):
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

    def probe_protocol(self) -> dict[str, Any]:
        return {"parts": self.describe_parts(), "input_space": self.input_space, "image_norm": self.image_norm}
