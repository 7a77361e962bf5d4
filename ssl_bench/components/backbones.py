"""ViT backbones: unmodified timm `VisionTransformer`s with fixed 2-D sin-cos position embeddings.

We wrap, never fork: masking is done by gathering token indices before timm's blocks (the pattern
of lightly's MaskedVisionTransformerTIMM), so every method trains the very same module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from ssl_bench.components.base import Backbone
from ssl_bench.components.posembed import sincos_2d


@dataclass(frozen=True)
class ViTSize:
    embed_dim: int
    depth: int
    num_heads: int


# vit-nano is ours (about 1.2M parameters: a CPU-sized ViT); the others are the DeiT/ViT sizes.
VIT_SIZES: dict[str, ViTSize] = {
    "vit-nano": ViTSize(128, 6, 4),
    "vit-tiny": ViTSize(192, 12, 3),
    "vit-s": ViTSize(384, 12, 6),
    "vit-b": ViTSize(768, 12, 12),
    "vit-l": ViTSize(1024, 24, 16),
}


class ViTBackbone(Backbone):
    """timm ViT + cls token, position embedding fixed to 2-D sin-cos (zero row for the cls slot)."""

    def __init__(
        self,
        size: ViTSize,
        image_size: int,
        patch_size: int,
        in_chans: int,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        name: str = "vit",
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image size {image_size} is not divisible by patch size {patch_size}; "
                f"set backbone.patch_size to a divisor of {image_size}"
            )
        if size.embed_dim % size.num_heads:
            raise ValueError(f"embed_dim {size.embed_dim} is not divisible by num_heads {size.num_heads}")
        self.name = name
        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            embed_dim=size.embed_dim,
            depth=size.depth,
            num_heads=size.num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            class_token=True,
            global_pool="token",
            drop_path_rate=drop_path_rate,
        )
        self.embed_dim = size.embed_dim
        self.depth = size.depth
        self.num_heads = size.num_heads
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.image_size = image_size
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        pos = sincos_2d(self.embed_dim, self.grid_size, cls_token=True).unsqueeze(0)  # [1, 1+L, D]
        self.vit.pos_embed.data.copy_(pos)
        self.vit.pos_embed.requires_grad_(False)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "patch_size": self.patch_size,
            "image_size": self.image_size,
            "params": sum(p.numel() for p in self.parameters()),
        }

    def embed(self, images: Tensor) -> Tensor:
        """[N, C, H, W] -> patch tokens with position added [N, L, D] (position before masking, as MAE)."""
        x = self.vit.patch_embed(images)  # [N, L, D]
        return x + self.vit.pos_embed[:, 1:, :]

    def prepend_cls(self, x: Tensor) -> Tensor:
        cls = (self.vit.cls_token + self.vit.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)  # [N, 1, D]
        return torch.cat([cls, x], dim=1)

    def encode(
        self,
        images: Tensor,
        ids_keep: Tensor | None = None,
        cond: Tensor | None = None,
        num_blocks: int | None = None,
    ) -> Tensor:
        """[N, C, H, W] -> [N, 1 + L_keep, D]; `num_blocks` stops early (encoder-depth probes)."""
        if cond is not None:
            raise ValueError(f"{self.name} takes no conditioning; use a DiT-style backbone for t-conditioning")
        x = self.embed(images)
        if ids_keep is not None:
            x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # [N, L_keep, D]
        x = self.prepend_cls(x)
        x = self.vit.norm_pre(x)
        blocks = self.vit.blocks if num_blocks is None else self.vit.blocks[:num_blocks]
        for blk in blocks:
            x = blk(x)
        return self.vit.norm(x)

    def features(self, images: Tensor, pool: str = "cls") -> Tensor:
        x = self.encode(images)  # [N, 1+L, D]
        if pool == "cls":
            return x[:, 0]
        if pool == "avg":
            return x[:, 1:].mean(dim=1)
        raise ValueError(f"unknown pool '{pool}'; use 'cls' or 'avg'")


def make_vit_factory(name: str):
    """Registry factory: `factory(image_size=, patch_size=, in_chans=, **overrides)`.

    Overrides `embed_dim`, `depth`, `num_heads` let tests and presets shrink a named size.
    """

    def factory(image_size: int, patch_size: int, in_chans: int, **overrides: Any) -> ViTBackbone:
        base = VIT_SIZES[name]
        size = ViTSize(
            overrides.pop("embed_dim", None) or base.embed_dim,
            overrides.pop("depth", None) or base.depth,
            overrides.pop("num_heads", None) or base.num_heads,
        )
        return ViTBackbone(size, image_size, patch_size, in_chans, name=name, **overrides)

    factory.__name__ = f"build_{name.replace('-', '_')}"
    factory.__doc__ = f"{name}: {VIT_SIZES[name]}"
    return factory
