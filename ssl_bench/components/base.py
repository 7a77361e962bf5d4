"""Component interfaces. A reconstruction method is tokenizer -> corruption -> network -> target
(``ssl_bench/methods/reconstruction.py`` owns that pipeline). Every part is built by name from the
registry by the run's builder (``ssl_bench.run.assemble``) and handed to the method as ``Parts``, so
a third-party part is as usable as a built-in one and model code never looks anything up.

These are typed base classes rather than Protocols so that a plugin author gets a clear error when a
required method is missing, and so that components can hold buffers (PCA bases) as `nn.Module`s.

Constructors. The builder calls each part's registered factory with the user's options from the
method config (``method.<part> = dict(name=..., **options)``) plus, *only if the constructor names
them*, these keywords (``ssl_bench.hookspecs.PART_CONTEXT``):

=============  ===========================================================================
kind           keywords the pipeline passes when the constructor takes them
=============  ===========================================================================
tokenizer      ``image_size``, ``patch_size`` (the network's pixel patch), ``channels``
noise-schedule (none: options only, e.g. ``T``)
corruption     ``schedule`` (the built ``NoiseSchedule``, or None when none is configured)
target         ``schedule``, ``tokenizer``, ``image_size``, ``patch_size``, ``channels``
=============  ===========================================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor, nn


@dataclass
class Corrupted:
    """What a corruption did to a batch of latent tokens z0 [N, L, d].

    Masking fills `ids_keep`, `ids_restore` and `mask`; additive noise fills `z_t`, `t`, `sigma`, `noise`.
    """

    z_t: Tensor | None = None  # [N, L, d] corrupted latent (noise methods)
    t: Tensor | None = None  # [N] int64 timestep index
    sigma: Tensor | None = None  # [N] noise std actually used
    gamma: Tensor | None = None  # [N] input scaling actually used
    noise: Tensor | None = None  # [N, L, d] the eps that was added
    ids_keep: Tensor | None = None  # [N, L_keep] indices of visible tokens (masking)
    ids_restore: Tensor | None = None  # [N, L] argsort of the shuffle, undoes it
    mask: Tensor | None = None  # [N, L] 1 = removed, 0 = visible


class Tokenizer(nn.Module, ABC):
    """Maps images [N, C, H, W] to per-patch latents [N, L, d] and back.

    ``patch_size`` is the pixel side of one token; ``latent_patch`` / ``latent_channels`` say how the
    tokens are laid out as a "latent image" for a network that patch-embeds its input
    (``[N, latent_channels, h * latent_patch, w * latent_patch]``): 1 / d for patch-wise tokenizers,
    2 / c for a conv VAE tokenised in 2x2 latent patches (as DiT-L/2). ``latent_channels`` defaults
    to ``latent_dim`` when a tokenizer does not set it.
    """

    latent_dim: int
    patch_size: int
    latent_patch: int = 1
    needs_fit: ClassVar[bool] = False

    def fit(self, images: Tensor, generator: torch.Generator | None = None) -> None:
        """Fit from normalised training images (PCA bases, patch AE). No-op for fixed tokenizers."""

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, L, d]"""

    @abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """[N, L, d] -> [N, C, H, W]"""


class Corruption(nn.Module, ABC):
    """Corrupts latent tokens; randomness comes only from the given generator (reproducible runs).

    ``produces`` names what a corruption records in ``Corrupted`` (``"mask"`` for token removal,
    ``"t"`` / ``"noise"`` for additive noise); targets declare what they need, and the pipeline refuses
    a combination that cannot work before anything trains. ``needs_schedule``: the corruption takes
    the method's ``noise_schedule`` (its ``schedule`` constructor keyword must then not be None).
    """

    produces: ClassVar[frozenset[str]] = frozenset()
    needs_schedule: ClassVar[bool] = False

    @abstractmethod
    def forward(self, z0: Tensor, generator: torch.Generator | None = None) -> Corrupted:
        """z0 [N, L, d] -> Corrupted"""


class Target(nn.Module, ABC):
    """Builds the regression target and per-element weights for the loss.

    ``output_space``: what the network must predict per token: ``"latent"`` (d values, the tokenizer's
    latent) or ``"image"`` (the p x p x C pixels of the token's patch). ``requires``: what the
    corruption must record (e.g. ``{"noise"}``). ``masked_only``: with a corruption that removes
    tokens, the loss counts only the removed tokens (MAE); with additive noise every token is
    corrupted, so every token counts. ``raw_pixels``: the target is in raw (un-normalised) pixel
    values, so the pipeline parametrises the prediction as the tokenizer's mean patch plus the
    network output (a fixed offset; see ``ReconstructionMethod``).
    """

    output_space: ClassVar[str] = "latent"
    requires: ClassVar[frozenset[str]] = frozenset()
    masked_only: bool = True
    raw_pixels: bool = False

    @abstractmethod
    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor | None]:
        """Returns (target [N, L, P], weight broadcastable to [N, L, P], or None for 1)."""

    def to_loss_space(self, pred: Tensor) -> Tensor:
        """Map the prediction into the space the target lives in (identity unless rotated)."""
        return pred

    def incompatibility(self, tokenizer: Tokenizer) -> str | None:
        """Why this target cannot work with ``tokenizer`` (None if it can)."""
        return None


class Backbone(nn.Module, ABC):
    """An encoder on top of an unmodified timm model."""

    embed_dim: int
    patch_size: int
    num_patches: int

    @abstractmethod
    def encode(self, images: Tensor, ids_keep: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """[N, C, H, W] -> tokens [N, prefix + L_keep, D] after the final norm."""

    @abstractmethod
    def features(self, images: Tensor, pool: str = "cls") -> Tensor:
        """[N, C, H, W] -> [N, D] representation for probing."""


@dataclass
class Parts:
    """A reconstruction method's parts, built by the run's builder from the resolved ``method.<part>``
    specs in the order of ``ssl_bench.hookspecs.PART_KINDS`` (noise schedule, tokenizer, corruption,
    target: the order of their random initial weights is part of a seed's contract)."""

    tokenizer: Tokenizer
    corruption: Corruption
    target: Target
    noise_schedule: Any = None  # a NoiseSchedule (ssl_bench.components.schedules), or None when none is configured
    #: the resolved specs they were built from, {config key: dict(name=..., **options) or None}
    specs: dict[str, dict[str, Any] | None] = field(default_factory=dict)


#: ``make_backbone(image_size=, patch_size=, in_chans=)``: the configured backbone (``cfg.backbone``) on
#: another geometry, e.g. MAE's encoder reading the tokenizer latent laid out as an image.
BackboneFactory = Callable[..., Backbone]


@dataclass
class StepOutput:
    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Method(nn.Module, ABC):
    """A self-supervised method. `forward` is the training step so that DDP can wrap the module.

    Subclasses set `default_config` (an mmengine Config file) and implement `training_step` and
    `probe_features`. Images arrive as uint8 [N, C, H, W] on the training device: the method owns
    its augmentation because augmentation is part of each paper's recipe.
    """

    default_config: ClassVar[str | Path]
    uses_labels: ClassVar[bool] = False
    #: True when the loss couples the samples of a batch (contrastive negatives, BatchNorm in the
    #: heads): gradient accumulation then is not equivalent to one large batch, and the loop says so.
    batch_coupled_loss: ClassVar[bool] = False

    def __init__(self, cfg: Any, backbone: Backbone, info: Any):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.info = info

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        return self.training_step(images, labels, generator)

    @abstractmethod
    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        """One optimisation step's loss on a uint8 batch [N, C, H, W]."""

    @abstractmethod
    def probe_features(self, images: Tensor) -> Tensor:
        """Normalised float images [N, C, H, W] -> frozen features [N, D]."""

    def probe_protocol(self) -> dict[str, Any]:
        """How `probe_features` is computed, stored beside every metric."""
        return {}

    #: True when the method's own untrained network (not the plain backbone the runner builds) is the
    #: honest random-init baseline, e.g. a denoising method probed through a t-conditioned DiT.
    own_random_init: ClassVar[bool] = False

    def train_views(self) -> Sequence[Any] | None:
        """The crops a data loader should cut from each *full* training image (``ssl_bench.data.crops.CropSpec``,
        one per view), or None for no crop.

        Folder datasets (ImageNet) decode in worker processes and crop each view from the full
        decoded image, as the papers' RandomResizedCrop does; ``training_step`` then receives
        ``[N, V, C, S, S]`` uint8 views and skips its own crop. In-memory datasets ignore this and
        hand over whole images ``[N, C, H, W]`` (the method crops on the device, batched).
        """
        return None

    def prepare(self, train_split: Any, generator: torch.Generator) -> None:
        """Called once before training (not on resume) with the train split, e.g. to fit PCA bases.

        `train_split.batches(...)` yields uint8 [B, C, H, W]; fitted state must live in buffers so
        the checkpoint carries it.
        """

    def on_resume(self, train_split: Any) -> None:
        """Called instead of :meth:`prepare` when a run resumes: fitted state comes from the
        checkpoint, but a method may still want something from the data (e.g. images to draw)."""

    def extra_evaluations(self, dataset: Any, device: torch.device) -> list[tuple[str, Any]]:
        """Method-specific metrics beyond the shared probes, e.g. a diffusion model's test NLL.

        Returns [(evaluator_name, EvalResult)]; the runner stores them beside k-NN and linear.
        """
        return []

    def on_train_step_end(self, epoch_progress: float, total_epochs: int) -> None:
        """Hook for per-iteration updates that are not gradient steps (momentum encoders)."""

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: no decay for biases and 1-D params (norms), as MAE/timm do."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
