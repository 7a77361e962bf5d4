"""Crop parameters for views cut from the *full* decoded image.

Why this exists: at ImageNet scale the papers crop each view from the whole image
(MAE: RandomResizedCrop(224, scale=(0.2, 1)), bicubic; MoCo v3: two views with
scale=(0.08, 1), bilinear), not from a pre-shrunk centre square. A loader that
decodes files therefore has to know the crops *before* it decodes (to pick a JPEG
DCT-scaling factor and to cut each view from the full picture); :class:`CropSpec`
says what to cut and :func:`crop_box` draws the box exactly like torchvision.

References:

* He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, App. A.1
  (augmentation: RandomResizedCrop); official code github.com/facebookresearch/mae,
  ``main_pretrain.py`` (``RandomResizedCrop(input_size, scale=(0.2, 1.0), interpolation=3)``)
  and ``main_linprobe.py`` (evaluation: ``Resize(256, interpolation=3)`` + ``CenterCrop(224)``).
* Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers"
  (MoCo v3), ICCV 2021; official code github.com/facebookresearch/moco-v3, ``main_moco.py``
  (two views, each ``RandomResizedCrop(224, scale=(crop_min=0.08, 1.))``, bilinear) and
  ``main_lincls.py`` (``Resize(256)`` + ``CenterCrop(224)``).
* l-DAE (Chen, Liu, Xie, He, "Deconstructing Denoising Diffusion Models for
  Self-Supervised Learning", 2024) trains on DiT's centre-cropped images: DiT official
  code github.com/facebookresearch/DiT, ``train.py``, ``center_crop_arr`` (ADM's centre
  crop: shorter side to the output size, then the centre square). :meth:`CropSpec.center`
  cuts that square from the full image and resizes it with one antialiased bicubic
  resize, where ADM first halves with BOX filters; the two agree up to resampling detail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic")

Box = tuple[int, int, int, int]  # (top, left, height, width) in pixels of the full image


@dataclass(frozen=True)
class CropSpec:
    """One view: a RandomResizedCrop box from the full image, resized to ``size`` x ``size``.

    ``scale`` is the range of the box's area as a fraction of the image area and
    ``ratio`` the range of its aspect ratio (width / height), as in torchvision's
    ``RandomResizedCrop``; the resize is antialiased with ``interpolation``.

    ``CropSpec(size, scale=(1, 1), ratio=(1, 1))`` is the deterministic *centre crop*
    of DiT/ADM that l-DAE uses: no random box of the whole area with aspect 1 fits a
    non-square image, so all ten tries fail and the fallback returns the largest
    centre square, which is then resized to ``size`` (a square image is taken whole).
    """

    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size <= 0:
            raise ValueError(f"CropSpec.size must be a positive int, got {self.size!r}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"CropSpec.scale must be (lo, hi) with 0 < lo <= hi, got {self.scale!r}")
        if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"CropSpec.ratio must be (lo, hi) with 0 < lo <= hi, got {self.ratio!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"CropSpec.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        # normalise sequences to tuples so specs hash and compare by value
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))
        object.__setattr__(self, "ratio", (float(self.ratio[0]), float(self.ratio[1])))

    @classmethod
    def center(cls, size: int, interpolation: str = "bicubic") -> CropSpec:
        """The DiT/ADM centre crop (largest centre square, resized to ``size``)."""
        return cls(size, scale=(1.0, 1.0), ratio=(1.0, 1.0), interpolation=interpolation)


def crop_box(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator,
) -> Box:
    """``(top, left, h, w)`` with the semantics of ``RandomResizedCrop.get_params``.

    Same algorithm and the same draws in the same order from ``generator`` (per
    try: one ``uniform_`` for the area fraction, one for the log aspect ratio, in
    float32; on success ``randint`` for top, then left), so for equal seeds this
    returns the box ``torch.manual_seed(s); RandomResizedCrop.get_params(img, scale,
    ratio)`` returns (torchvision ``transforms/transforms.py``). After ten failed
    tries: a centre crop of the whole image with its aspect ratio clamped into
    ``ratio`` (no further draws).
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))  # float32, as torchvision
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def view_seed(epoch_seed: int, index: int, view: int) -> int:
    """A 63-bit seed for the crop of ``view`` of sample ``index`` in one epoch.

    Hashed with numpy's ``SeedSequence`` (designed to turn related integers into
    independent streams), so neighbouring samples/views/epochs do not get
    correlated generators, and the result depends only on these three numbers:
    the same in any DataLoader worker, for any worker count and any rank.
    """
    state = np.random.SeedSequence([epoch_seed, index, view]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def view_boxes(height: int, width: int, views: Sequence[CropSpec], epoch_seed: int, index: int) -> list[Box]:
    """One box per view for sample ``index``, each from its own seeded generator."""
    boxes = []
    for v, spec in enumerate(views):
        g = torch.Generator().manual_seed(view_seed(epoch_seed, index, v))
        boxes.append(crop_box(height, width, spec.scale, spec.ratio, g))
    return boxes


#: JPEG DCT-domain downscaling factors libjpeg offers through ``PIL.Image.draft``.
DRAFT_FACTORS: tuple[int, ...] = (8, 4, 2)


def draft_factor(boxes: Sequence[Box], sizes: Sequence[int], margin: float = 1.0) -> int:
    """Largest DCT scaling factor (8, 4, 2, else 1) keeping every box >= ``margin`` x its output size.

    Decoding at 1/k resolution is k^2 less IDCT/colour work; it is only allowed
    when each crop box, shrunk by k, still has at least ``margin * size`` pixels on
    both sides, so every view is still *down*-sampled to its output (never upsampled
    from a coarser picture than the full decode would give). ``margin = 1`` is the
    fastest rule; ``margin = 2`` is Pillow's ``reducing_gap`` idea (``Image.thumbnail``):
    the final resize still filters at least 2x, which keeps the result closer to the
    full decode (``tests/test_data_folder.py`` measures both).
    """
    for k in DRAFT_FACTORS:
        if all(h / k >= margin * s and w / k >= margin * s for (_, _, h, w), s in zip(boxes, sizes, strict=True)):
            return k
    return 1


def eval_resize_size(image_size: int, ratio: float) -> int:
    """Shorter side before the evaluation centre crop: ``round(image_size * ratio)``.

    ``ratio = 256 / 224`` is the MAE / MoCo v3 evaluation transform
    (``Resize(256)`` + ``CenterCrop(224)``; MAE ``main_linprobe.py``, MoCo v3
    ``main_lincls.py``); ``ratio = 1`` resizes the shorter side straight to
    ``image_size``.
    """
    if ratio < 1:
        raise ValueError(f"eval resize ratio must be >= 1 (the crop must fit), got {ratio}")
    return int(round(image_size * ratio))


def resized_shape(height: int, width: int, shorter: int) -> tuple[int, int]:
    """``(h, w)`` after resizing the shorter side to ``shorter``, as ``Resize(int)`` does.

    The longer side is truncated (``int(shorter * long / short)``), matching
    torchvision, so a draft-decoded image is resized to exactly the size the full
    decode would have been resized to.
    """
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


def eval_draft_factor(height: int, width: int, shorter: int, margin: float = 1.0) -> int:
    """Largest DCT scaling factor keeping the shorter side >= ``margin * shorter`` (else 1)."""
    for k in DRAFT_FACTORS:
        if min(height, width) / k >= margin * shorter:
            return k
    return 1
