"""l-DAE figures written into the run dir (matplotlib, Agg backend: no display needed).

* ``fig4_pca_bases.png``: the tokenizer's bases as p x p pixel filters, descending eigenvalue; the
  first d are the latent (paper Fig. 4).
* ``fig7_noise_latent_vs_pixel.png``: the same noise level sigma added in the latent (then inverse
  tokenizer) versus directly on the pixels (paper Fig. 7 uses sigma = sqrt(1/3)).
* ``fig8_denoising.png``: noisy network input / prediction / clean image at several t (paper Fig. 8).

``DenoisingMethod.extra_evaluations`` calls ``write_figures`` after training; it can also be
called by hand on a loaded model: ``write_figures(method, method.preprocess_eval(uint8_images), dir)``.
Fig. 8 needs a noise corruption (a masking-trained DiT has nothing to denoise) and Fig. 4 a fitted
patch-wise tokenizer; the figures that do not apply are skipped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _show(ax: Any, img: Tensor, title: str | None = None) -> None:
    """img [C, H, W] in [0, 1]."""
    arr = img.detach().float().cpu().clamp(0, 1)
    if arr.shape[0] == 1:
        ax.imshow(arr[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(arr[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def plot_pca_bases(tokenizer: Any, path: Path, max_filters: int = 64) -> Path | None:
    """Fig. 4: basis rows reshaped (p, p, C), each scaled symmetrically to [0, 1]."""
    if not getattr(tokenizer, "needs_fit", False) or not hasattr(tokenizer, "full_basis") or not hasattr(tokenizer, "patch_dim"):
        return None
    plt = _plt()
    basis = tokenizer.full_basis().detach().float().cpu()  # [D, D]
    p, c, d = tokenizer.patch_size, tokenizer.channels, tokenizer.latent_dim
    n = min(basis.shape[0], max(max_filters, d))  # every latent filter, at least max_filters
    cols = min(16, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.9 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        f = basis[i].reshape(p, p, c).permute(2, 0, 1)  # [C, p, p]
        f = 0.5 + 0.5 * f / f.abs().max().clamp_min(1e-12)
        _show(ax, f, f"{i}" + ("" if i < d else "*"))
    fig.suptitle(f"{type(tokenizer).__name__} bases (first {d} = latent; * = residual)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_noise_latent_vs_pixel(method: Any, images: Tensor, path: Path, sigma: float = math.sqrt(1 / 3), n: int = 4) -> Path:
    """Fig. 7: clean | tokenizer reconstruction | latent noise sigma | pixel noise sigma."""
    plt = _plt()
    x = images[:n]
    gen = torch.Generator(device=x.device).manual_seed(0)
    z0 = method.tokenizer.encode(x)
    recon = method.tokenizer.decode(z0)
    eps_z = torch.randn(z0.shape, generator=gen, device=x.device).to(z0)
    latent_noisy = method.tokenizer.decode(z0 + sigma * eps_z)
    eps_x = torch.randn(x.shape, generator=gen, device=x.device).to(x)
    pixel_noisy = x + sigma * eps_x
    cols = [("clean", x), ("tokenizer recon", recon), (f"latent noise s={sigma:.3f}", latent_noisy), (f"pixel noise s={sigma:.3f}", pixel_noisy)]
    fig, axes = plt.subplots(x.shape[0], len(cols), figsize=(len(cols) * 1.6, x.shape[0] * 1.6), squeeze=False)
    for r in range(x.shape[0]):
        for cidx, (name, batch) in enumerate(cols):
            _show(axes[r, cidx], method.to_display(batch[r : r + 1])[0], name if r == 0 else None)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_denoising(method: Any, images: Tensor, path: Path, n: int = 4, fractions: tuple[float, ...] = (0.1, 0.4, 0.7, 1.0)) -> Path:
    """Fig. 8: for each t (fractions of T) and image: noisy input | prediction | clean."""
    plt = _plt()
    x = images[:n]
    T = method.noise_schedule.T
    ts = sorted({min(T - 1, max(0, int(round(f * T)) - (1 if f >= 1 else 0))) for f in fractions})
    fig, axes = plt.subplots(len(ts), 3 * x.shape[0], figsize=(3 * x.shape[0] * 1.1, len(ts) * 1.3), squeeze=False)
    for r, t in enumerate(ts):
        gen = torch.Generator(device=x.device).manual_seed(r)
        noisy, pred = method.denoise(x, t, gen)
        sig = float(method.noise_schedule.sigma(t))
        for i in range(x.shape[0]):
            _show(axes[r, 3 * i], method.to_display(noisy[i : i + 1])[0], f"t={t} s={sig:.2f}" if i == 0 else "noisy")
            _show(axes[r, 3 * i + 1], method.to_display(pred[i : i + 1])[0], "pred")
            _show(axes[r, 3 * i + 2], method.to_display(x[i : i + 1])[0], "clean")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def write_figures(method: Any, images: Tensor, run_dir: str | Path) -> list[Path]:
    """All figures for a trained ``DenoisingMethod``; ``images`` are method-space float [B, C, H, W]."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = next(method.backbone.parameters()).device
    images = images.to(device)
    out: list[Path] = []
    p = plot_pca_bases(method.tokenizer, run_dir / "fig4_pca_bases.png")
    if p is not None:
        out.append(p)
    out.append(plot_noise_latent_vs_pixel(method, images, run_dir / "fig7_noise_latent_vs_pixel.png"))
    if hasattr(method.corruption, "noise_at") and method.noise_schedule is not None:
        out.append(plot_denoising(method, images, run_dir / "fig8_denoising.png"))
    return out
