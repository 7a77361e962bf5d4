"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"): mask 75% of patches,
encode the visible ones, decode all, regress the normalised pixels of the removed patches.

A recipe over the core reconstruction pipeline (``ssl_bench.methods.reconstruction``): the parts
(identity patch tokenizer, random masking, normalised-pixel target) come from ``default_config.py``
by name, so ``--set method.corruption.name=additive-latent-noise`` (a classical DAE under MAE's
encoder/decoder) or ``method.tokenizer.name=patch-pca`` (MAE on PCA tokens) just work. What is MAE's
own is the network: an unmodified timm ViT encoder on the visible tokens and the MAE decoder
(facebookresearch/mae models_mae.py), with MAE's initialisation."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ssl_bench.components.base import Corrupted
from ssl_bench.components.posembed import sincos_2d
from ssl_bench.methods.parts import build_backbone
from ssl_bench.methods.reconstruction import ReconstructionMethod


def decoder_size(cfg: Any, backbone_name: str, embed_dim: int) -> tuple[int, int, int]:
    """(width, depth, heads): explicit config > per-backbone table > a rule for unknown backbones."""
    table = cfg.decoder_sizes.get(backbone_name) if cfg.get("decoder_sizes") else None
    if table is None:
        width = min(512, embed_dim)
        table = (width, 8 if embed_dim >= 768 else 2, max(1, width // 32))
    dec = cfg.get("decoder", {}) or {}
    return (dec.get("embed_dim") or table[0], dec.get("depth") or table[1], dec.get("num_heads") or table[2])


class MAEDecoder(nn.Module):
    """Linear embed -> mask tokens -> unshuffle -> fixed sin-cos pos -> blocks -> norm -> pixels."""

    def __init__(self, enc_dim: int, width: int, depth: int, heads: int, num_patches: int, out_dim: int):
        super().__init__()
        grid = int(round(num_patches**0.5))
        self.embed = nn.Linear(enc_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos_embed", sincos_2d(width, grid, cls_token=True).unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.pred = nn.Linear(width, out_dim)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """latent [N, 1+L_keep, D_enc], ids_restore [N, L] -> [N, L, out_dim]"""
        x = self.embed(latent)  # [N, 1+L_keep, W]
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        tokens = torch.cat([x[:, 1:], mask_tokens], dim=1)  # [N, L, W] in shuffled order
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.pos_embed  # [N, 1+L, W]
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:]  # drop cls -> [N, L, out_dim]


def mae_init_(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform Linears (and the patch conv viewed as a Linear), zero
    biases, unit LayerNorms, cls/mask tokens N(0, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class MAE(ReconstructionMethod):
    default_config = Path(__file__).parent / "default_config.py"

    def build_network(self) -> None:
        if self.input_space == "latent":  # the encoder reads the latent image: same ViT size, latent geometry
            from ssl_bench.registry import get_registry

            size, patch, chans = self.network_input_geometry()
            self.backbone = build_backbone(self.cfg, get_registry(), self.info, image_size=size, patch_size=patch, in_chans=chans)
        backbone = self.backbone
        width, depth, heads = decoder_size(self.cfg.method, backbone.name, backbone.embed_dim)
        self.decoder = MAEDecoder(backbone.embed_dim, width, depth, heads, backbone.num_patches, self.output_dim)
        self.probe_pool = self.cfg.method.get("probe_pool", "cls")
        mae_init_(backbone)
        mae_init_(self.decoder)
        w = backbone.vit.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(backbone.vit.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)

    def predict(self, net_input: Tensor, corrupted: Corrupted, labels: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """Encode the visible tokens (all of them without masking), decode every position -> [N, L, P]."""
        latent = self.backbone.encode(net_input, ids_keep=corrupted.ids_keep)  # [N, 1+L_keep, D]
        ids_restore = corrupted.ids_restore
        if ids_restore is None:  # nothing removed (e.g. additive noise): tokens are in order
            n = net_input.shape[0]
            ids_restore = torch.arange(self.backbone.num_patches, device=net_input.device).expand(n, -1)
        return self.decoder(latent, ids_restore)  # [N, L, P]

    def features(self, net_input: Tensor) -> Tensor:
        return self.backbone.features(net_input, pool=self.probe_pool)

    def probe_protocol(self) -> dict[str, Any]:
        return {
            **super().probe_protocol(),
            "feature": f"encoder {self.probe_pool} token after final norm",
            "input": f"clean, no augmentation ({self.input_space} space)",
        }
