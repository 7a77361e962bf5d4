"""Batched augmentations as tensor ops on the training device.

Why not torchvision transforms: those run per image in Python (PIL or per-tensor),
which dominates the step time for small images and tiny models. Here every op takes
a whole batch ``[B, C, H, W]`` (float32 in [0, 1]) and draws per-sample parameters
in one call from an explicit ``torch.Generator``, so

* a run is reproducible from the generator seed alone;
* the random stream consumed depends only on the batch size (every op draws its
  parameters for all samples, applied or not), never on pixel values;
* the generator should live on the data's device (a CPU generator for CPU data);
  parameters are drawn on the generator's device and then moved to the data.

Every op keeps shape, dtype float32 and range [0, 1], except the crop, which
returns the requested size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL / torchvision


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) numbers drawn from ``generator`` and placed on ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _per_sample(mask: Tensor) -> Tensor:
    return mask.view(-1, 1, 1, 1)  # [B] -> [B, 1, 1, 1] for broadcasting


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a batch [B, C, H, W], got shape {tuple(x.shape)}")


def to_float01(x: Tensor) -> Tensor:
    """uint8 ``[B, C, H, W]`` -> float32 in [0, 1] (float input is only cast)."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel ``(x - mean) / std`` for float ``[B, C, H, W]``."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)  # [1, C, 1, 1]
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] != x.shape[1]:
        raise ValueError(f"mean/std have {m.shape[1]} channels, images have {x.shape[1]}")
    return (x - m) / s


def rgb_to_gray(x: Tensor) -> Tensor:
    """Luma ``[B, 1, H, W]``; 1-channel input is returned as is, other C averaged."""
    c = x.shape[1]
    if c == 1:
        return x
    if c == 3:
        w = torch.as_tensor(_GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    return x.mean(dim=1, keepdim=True)


# ----------------------------------------------------------------------- geometry


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device,
    tries: int = 10,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample ``(top, left, h, w)`` in pixels, sampled like RandomResizedCrop.

    For each sample up to ``tries`` (area, aspect) pairs are drawn at once; the first
    one that fits is used, else a centre crop with the aspect ratio clamped to
    ``ratio``. Returns float tensors ``[B]``.
    """
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    u = _rand((batch, tries, 4), generator, device)  # area, log-ratio, top, left
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.round(torch.sqrt(target_area * aspect))  # [B, tries]
    h = torch.round(torch.sqrt(target_area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid try, [B, 1]
    ok = valid.any(dim=1)  # [B]
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    top = torch.floor(u[..., 2].gather(1, first).squeeze(1) * (height - h + 1))
    left = torch.floor(u[..., 3].gather(1, first).squeeze(1) * (width - w + 1))

    # fallback: centre crop, aspect clamped into [ratio[0], ratio[1]]
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fh, fw = height, round(height * max(ratio))
    else:
        fw, fh = width, height
    ftop, fleft = (height - fh) // 2, (width - fw) // 2

    def pick(a: Tensor, b: float) -> Tensor:
        return torch.where(ok, a, torch.full_like(a, float(b)))

    return pick(top, ftop), pick(left, fleft), pick(h, fh), pick(w, fw)


def crop_resize(x: Tensor, top: Tensor, left: Tensor, h: Tensor, w: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Crop per-sample boxes and resize them to ``size`` in one ``grid_sample`` call.

    Equivalent to ``F.interpolate(x[..., top:top+h, left:left+w], size, "bilinear")``
    per sample (no pixels outside the box are read). No antialiasing: fine for
    upscaling and mild downscaling (the usual case, since images arrive at
    ``image_size``); strong downscaling aliases.
    """
    _check_batch(x)
    x = to_float01(x)
    b, c, height, width = x.shape
    out_h, out_w = (size, size) if isinstance(size, int) else size
    # box in normalised coords (align_corners=False: the image spans [-1, 1] edge to edge)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = w.to(x) / width
    theta[:, 0, 2] = (2 * left.to(x) + w.to(x)) / width - 1
    theta[:, 1, 1] = h.to(x) / height
    theta[:, 1, 2] = (2 * top.to(x) + h.to(x)) / height - 1
    grid = F.affine_grid(theta, [b, c, out_h, out_w], align_corners=False)  # [B, out_h, out_w, 2]
    # clamp samples to the box's outer pixel centres, so nothing outside the box bleeds
    # in: identical to cropping first and then resizing (border replicate at the edges)
    lo = torch.stack([(2 * left + 1) / width - 1, (2 * top + 1) / height - 1], dim=-1).to(x)  # [B, 2]
    hi = torch.stack([(2 * (left + w) - 1) / width - 1, (2 * (top + h) - 1) / height - 1], dim=-1).to(x)
    grid = torch.maximum(torch.minimum(grid, hi.view(b, 1, 1, 2)), lo.view(b, 1, 1, 2))
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)  # [B, C, out_h, out_w]


def random_resized_crop(
    x: Tensor,
    size: int | tuple[int, int],
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """RandomResizedCrop for a batch: per-sample box, one batched bilinear resample."""
    _check_batch(x)
    b, _, height, width = x.shape
    top, left, h, w = sample_crop_boxes(b, height, width, scale, ratio, generator, x.device)
    return crop_resize(x, top, left, h, w, size)


def sample_flips(batch: int, p: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Per-sample decisions ``[B]`` (True: mirror), each with probability ``p``."""
    return _rand((batch,), generator, device) < p


def horizontal_flip(x: Tensor, flip: Tensor) -> Tensor:
    """Mirror left-right the samples of ``x`` [B, C, H, W] where ``flip`` [B] is True."""
    return torch.where(_per_sample(flip), x.flip(-1), x)


def random_horizontal_flip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each sample left-right with probability ``p``."""
    _check_batch(x)
    return horizontal_flip(x, sample_flips(x.shape[0], p, generator, x.device))


# ------------------------------------------------------------------------- colour


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    """``factor * a + (1 - factor) * b`` per sample, clamped to [0, 1]."""
    f = _per_sample(factor)
    return (f * a + (1 - f) * b).clamp_(0.0, 1.0)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB ``[B, 3, H, W]`` in [0, 1] -> HSV with all channels in [0, 1]."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    safe_max = torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    s = torch.where(maxc > 0, delta / safe_max, torch.zeros_like(maxc))
    h = torch.where(
        maxc == r,
        (g - b) / safe_delta,
        torch.where(maxc == g, 2.0 + (b - r) / safe_delta, 4.0 + (r - g) / safe_delta),
    )
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv` via ``c(n) = v - v s max(0, min(k, 4 - k, 1))``."""
    h, s, v = x.unbind(dim=1)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(n + h.unsqueeze(1) * 6.0, 6.0)  # [B, 3, H, W]
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v.unsqueeze(1) - v.unsqueeze(1) * s.unsqueeze(1) * ramp


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by per-sample ``shift`` (fraction of a turn, [B]); RGB input only."""
    hsv = rgb_to_hsv(x)
    hue = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp_(0.0, 1.0)


def _factor(u: Tensor, strength: float) -> Tensor:
    """Map uniform ``u`` to a jitter factor in ``[max(0, 1 - s), 1 + s]``."""
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    return lo + (hi - lo) * u


def color_jitter(
    x: Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ColorJitter applied to each sample with probability ``p``.

    Fixed order brightness -> contrast -> saturation -> hue (torchvision shuffles the
    order; that matters little for SSL). Factors are per sample. On 1-channel input
    saturation and hue are no-ops (a grey image has no chroma); brightness and
    contrast still apply.
    """
    _check_batch(x)
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    b, c = x.shape[:2]
    u = _rand((b, 5), generator, x.device)  # apply, brightness, contrast, saturation, hue
    out = x
    if brightness > 0:
        out = (out * _per_sample(_factor(u[:, 1], brightness))).clamp(0.0, 1.0)
    if contrast > 0:
        mean = rgb_to_gray(out).mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
        out = _blend(out, mean, _factor(u[:, 2], contrast))
    if c == 3 and saturation > 0:
        out = _blend(out, rgb_to_gray(out), _factor(u[:, 3], saturation))
    if c == 3 and hue > 0:
        out = adjust_hue(out, (2.0 * u[:, 4] - 1.0) * hue)
    return torch.where(_per_sample(u[:, 0] < p), out, x)


def random_grayscale(x: Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> Tensor:
    """Replace a sample by its luma (repeated over channels) with probability ``p``.

    No-op for 1-channel input (still draws its random numbers, for a stable stream).
    """
    _check_batch(x)
    apply = _rand((x.shape[0],), generator, x.device) < p
    if x.shape[1] == 1:
        return x
    gray = rgb_to_gray(x).expand_as(x)
    return torch.where(_per_sample(apply), gray, x)


def blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian kernel covering ~10% of the image (SimCLR): 224 -> 23, 32 -> 5, 8 -> 3."""
    k = 2 * int(round(0.05 * image_size)) + 1
    return max(3, min(k, 2 * ((image_size - 1) // 2) + 1))


def gaussian_blur(
    x: Tensor,
    sigma: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
    generator: torch.Generator | None = None,
    *,
    sigma_scale: float | None = None,
    kernel_size: int | None = None,
) -> Tensor:
    """Gaussian blur with a per-sample sigma, applied with probability ``p``.

    ``sigma`` is given as in the papers, in pixels of a 224x224 image; it is
    multiplied by ``sigma_scale`` (default ``min(H, W) / 224``) so a 32x32 image is
    blurred as much *relative to its content* as an ImageNet one. Pass
    ``sigma_scale=1.0`` for raw pixel sigmas. The kernel size defaults to
    :func:`blur_kernel_size` (~10% of the image); borders are reflected.
    """
    _check_batch(x)
    b, c, height, width = x.shape
    u = _rand((b, 2), generator, x.device)  # apply, sigma
    scale = min(height, width) / 224.0 if sigma_scale is None else sigma_scale
    sig = ((sigma[0] + (sigma[1] - sigma[0]) * u[:, 1]) * scale).clamp_min(1e-3)  # [B]
    k = kernel_size if kernel_size is not None else blur_kernel_size(min(height, width))
    if k % 2 == 0 or k < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {k}")
    r = k // 2
    d = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)  # [k]
    kern = torch.exp(-(d.view(1, -1) ** 2) / (2.0 * sig.view(-1, 1).to(x.dtype) ** 2))  # [B, k]
    kern = (kern / kern.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, k]
    y = x.reshape(1, b * c, height, width)
    if r > 0:
        y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), kern.view(b * c, 1, 1, k), groups=b * c)
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), kern.view(b * c, 1, k, 1), groups=b * c)
    y = y.view(b, c, height, width).clamp(0.0, 1.0)
    return torch.where(_per_sample(u[:, 0] < p), y, x)


def solarize(
    x: Tensor, threshold: float = 0.5, p: float = 0.2, generator: torch.Generator | None = None
) -> Tensor:
    """Invert pixels ``>= threshold`` (``1 - x``) in a sample with probability ``p``."""
    _check_batch(x)
    apply = _rand((x.shape[0],), generator, x.device) < p
    out = torch.where(x >= threshold, 1.0 - x, x)
    return torch.where(_per_sample(apply), out, x)


# ------------------------------------------------------------------- compositions


@dataclass
class CropFlipAugment:
    """Random resized crop + horizontal flip + normalisation (MAE / linear-probe style).

    Input: uint8 (or float [0, 1]) ``[B, C, H, W]``, cropped here; or uint8 ``[B, 1, C, size, size]``,
    a view a data loader already cut (e.g. from the full image in its workers): then only the flip
    and the normalisation are applied, and the crop's random numbers are not drawn.

    Sharded (``world_size > 1``): ``x`` holds rows ``rank, rank + W, ...`` of a global batch of
    ``B * W`` images (the sharding of ``ImageSplit.batches``). The parameters are drawn for the whole
    global batch, from a generator that is identical on every rank, and each rank applies its rows:
    the views do not depend on the number of processes.
    """

    size: int
    scale: tuple[float, float] = (0.2, 1.0)
    flip_p: float = 0.5
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(
        self, x: Tensor, mean: Sequence[float], std: Sequence[float], generator: torch.Generator | None,
        rank: int = 0, world_size: int = 1,
    ) -> Tensor:
        rows = slice(rank, None, world_size)
        global_batch = x.shape[0] * world_size
        if x.dim() == 5:  # [B, 1, C, size, size]: cut by the loader
            if x.shape[1] != 1:
                raise ValueError(f"expected one pre-cropped view [B, 1, C, S, S], got {tuple(x.shape)}")
            out = to_float01(x[:, 0])  # [B, C, size, size]
        else:
            _check_batch(x)
            height, width = x.shape[-2:]
            top, left, h, w = sample_crop_boxes(global_batch, height, width, self.scale, self.ratio, generator, x.device)
            out = crop_resize(to_float01(x), top[rows], left[rows], h[rows], w[rows], self.size)  # [B, C, size, size]
        out = horizontal_flip(out, sample_flips(global_batch, self.flip_p, generator, out.device)[rows])
        return normalize(out, mean, std)  # [B, C, size, size]


@dataclass
class ViewAugment:
    """One SimCLR/BYOL/MoCo v3 view: crop, flip, jitter, grayscale, blur, solarize, normalise.

    The defaults are MoCo v3's / BYOL's first view; see :func:`byol_view_pair` for the
    asymmetric pair (view 1 always blurred, view 2 rarely blurred but solarized).
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    sigma_scale: float | None = None
    solarize_p: float = 0.0

    def __call__(
        self, x: Tensor, mean: Sequence[float], std: Sequence[float], generator: torch.Generator | None
    ) -> Tensor:
        """uint8 (or float [0, 1]) ``[B, C, H, W]`` -> normalised view ``[B, C, size, size]``."""
        out = random_resized_crop(to_float01(x), self.size, self.scale, self.ratio, generator)
        return self.after_crop(out, mean, std, generator)

    def after_crop(
        self, x: Tensor, mean: Sequence[float], std: Sequence[float], generator: torch.Generator | None
    ) -> Tensor:
        """Everything but the crop: flip, jitter, grayscale, blur, solarize, normalise.

        For views already cropped (by :meth:`__call__`, or by a data loader that crops in its
        worker processes): ``x`` is uint8 or float [0, 1] ``[B, C, size, size]``.
        """
        _check_batch(x)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"a cropped view must be {self.size}x{self.size}, got {tuple(x.shape[-2:])}")
        out = random_horizontal_flip(to_float01(x), self.flip_p, generator)
        out = color_jitter(
            out, self.brightness, self.contrast, self.saturation, self.hue, self.jitter_p, generator
        )
        out = random_grayscale(out, self.grayscale_p, generator)
        out = gaussian_blur(out, self.blur_sigma, self.blur_p, generator, sigma_scale=self.sigma_scale)
        out = solarize(out, 0.5, self.solarize_p, generator)
        return normalize(out, mean, std)  # [B, C, size, size]


def byol_view_pair(size: int, scale: tuple[float, float] = (0.08, 1.0)) -> tuple[ViewAugment, ViewAugment]:
    """BYOL / MoCo v3 asymmetric views: blur 1.0 / 0.1, solarize 0.0 / 0.2.

    BYOL (Grill et al. 2020) appendix B, Table 6; MoCo v3 uses the same pair
    (facebookresearch/moco-v3 ``main_moco.py``, ``augmentation1`` / ``augmentation2``).
    """
    return (
        ViewAugment(size, scale=scale, blur_p=1.0, solarize_p=0.0),
        ViewAugment(size, scale=scale, blur_p=0.1, solarize_p=0.2),
    )


@dataclass
class TwoViewAugment:
    """Two augmented views of every image, stacked ``[2N, C, size, size]`` (view 1 rows first).

    Why one object: joint-embedding methods (MoCo v3, SimSiam, BYOL) all need the same two-view
    batch; both views are drawn from one generator, view 1 first, so a run is reproducible from
    its seed. Stacking lets a ViT encode both views in one pass (no cross-sample operation in a
    ViT); BatchNorm heads should still see each view as its own batch (split at ``N``).

    Input:

    * uint8 (or float [0, 1]) ``[N, C, H, W]``: each view crops the image itself;
    * uint8 ``[N, 2, C, size, size]``: two views already cropped by the data loader (e.g. in its
      worker processes); each view then skips its random-resized crop and does the rest
      (:meth:`ViewAugment.after_crop`). The crop's random numbers are then not drawn.

    ``TwoViewAugment.byol(size, scale)`` is MoCo v3's / BYOL's asymmetric pair; a symmetric pair
    is ``TwoViewAugment(view, view)``.
    """

    view1: ViewAugment
    view2: ViewAugment

    @classmethod
    def byol(cls, size: int, scale: tuple[float, float] = (0.08, 1.0)) -> TwoViewAugment:
        """The BYOL / MoCo v3 asymmetric pair (:func:`byol_view_pair`)."""
        return cls(*byol_view_pair(size, scale=scale))

    def __call__(
        self, images: Tensor, mean: Sequence[float], std: Sequence[float], generator: torch.Generator | None
    ) -> Tensor:
        if images.dim() == 5:  # [N, 2, C, S, S] views cropped by the loader
            if images.shape[1] != 2:
                raise ValueError(f"expected two pre-cropped views [N, 2, C, S, S], got {tuple(images.shape)}")
            x1 = self.view1.after_crop(images[:, 0], mean, std, generator)  # [N, C, S, S]
            x2 = self.view2.after_crop(images[:, 1], mean, std, generator)  # [N, C, S, S]
        else:
            x1 = self.view1(images, mean, std, generator)  # [N, C, size, size]
            x2 = self.view2(images, mean, std, generator)  # [N, C, size, size]
        return torch.cat([x1, x2], dim=0)  # [2N, C, size, size]


def eval_transform(
    x: Tensor, mean: Sequence[float], std: Sequence[float], size: int | None = None
) -> Tensor:
    """No augmentation: to [0, 1], optionally resize (antialiased) to ``size``, normalise."""
    out = to_float01(x)
    if size is not None and tuple(out.shape[-2:]) != (size, size):
        out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out = out.clamp_(0.0, 1.0)
    return normalize(out, mean, std)
