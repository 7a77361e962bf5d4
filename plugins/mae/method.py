"""MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"): mask 75% of patches,
encode the visible ones, decode all, regress the normalised pixels of the removed patches.

The network of facebookresearch/mae ``models_mae.py`` (``MaskedAutoencoderViT``) over the core
reconstruction pipeline (``ssl_bench.methods.reconstruction``). The pipeline does what
``MaskedAutoencoderViT.forward`` does besides the network: ``patchify`` is the tokenizer (identity
patches), ``random_masking`` the corruption and ``forward_loss`` the target and loss, each a part
named in ``default_config.py`` and handed in built, so ``--set method.corruption.name=
additive-latent-noise`` (a classical DAE under MAE's encoder/decoder) or ``method.tokenizer.name=
patch-pca`` (MAE on PCA tokens) just work. What is MAE's own is here, under the official names:
``forward_encoder`` (an unmodified timm ViT on the visible tokens), ``forward_decoder`` (the MAE
decoder) and ``initialize_weights``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ssl_bench.components.base import Corrupted
from ssl_bench.components.posembed import sincos_2d
from ssl_bench.errors import ConfigError
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
    """``MaskedAutoencoderViT``'s decoder: ``decoder_embed`` (here ``embed``), ``mask_token``, the fixed
    sin-cos ``decoder_pos_embed`` (``pos_embed``), ``decoder_blocks`` (``blocks``), ``decoder_norm``
    (``norm``) and ``decoder_pred`` (``pred``, to the target's width P instead of p*p*3)."""

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
        """``forward_decoder``: latent [N, 1+L_keep, D_enc], ids_restore [N, L] -> [N, L, out_dim]"""
        x = self.embed(latent)  # [N, 1+L_keep, W]
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)  # append mask tokens
        tokens = torch.cat([x[:, 1:], mask_tokens], dim=1)  # [N, L, W] in shuffled order, no cls token
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # unshuffle
        x = torch.cat([x[:, :1], tokens], dim=1) + self.pos_embed  # [N, 1+L, W] cls back, add pos embed
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:]  # predictor projection, remove cls token -> [N, L, out_dim]


def mae_init_(module: nn.Module) -> None:
    """``MaskedAutoencoderViT._init_weights`` over every submodule: xavier-uniform Linears (as the
    official JAX ViT), zero biases, LayerNorms (1, 0)."""
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
    """``MaskedAutoencoderViT``: the encoder is the configured timm ViT (``self.backbone``), the
    decoder ``MAEDecoder``, the parts (patch tokenizer, random masking, norm-pix target) come built."""

    default_config = Path(__file__).parent / "default_config.py"

    def build_network(self) -> None:
        """``MaskedAutoencoderViT.__init__``: MAE encoder specifics, MAE decoder specifics, then
        ``initialize_weights``."""
        # -- MAE encoder specifics: the backbone, or the same ViT on the latent laid out as an image --
        if self.input_space == "latent":
            if self.make_backbone is None:
                raise ConfigError(
                    "mae with method.input_space='latent' needs a backbone on the latent geometry: build it with "
                    "ssl_bench.run.assemble.build_method, which hands the method a backbone factory"
                )
            size, patch, chans = self.network_input_geometry()
            self.backbone = self.make_backbone(image_size=size, patch_size=patch, in_chans=chans)
        # -- MAE decoder specifics ------------------------------------------------------------------
        width, depth, heads = decoder_size(self.cfg.method, self.backbone.name, self.backbone.embed_dim)
        self.decoder = MAEDecoder(self.backbone.embed_dim, width, depth, heads, self.backbone.num_patches, self.output_dim)
        self.probe_pool = self.cfg.method.get("probe_pool", "cls")
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """``MaskedAutoencoderViT.initialize_weights``: the sin-cos position embeddings are fixed buffers
        already; Linears and LayerNorms (``_init_weights``), the patch projection like a Linear
        (xavier-uniform on its flattened weight), cls and mask tokens N(0, 0.02) (timm's
        trunc_normal_(std=.02) in effect). Ours applies ``_init_weights`` first, then the rest."""
        mae_init_(self.backbone)
        mae_init_(self.decoder)
        w = self.backbone.vit.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.backbone.vit.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)

    def forward_encoder(self, x: Tensor, ids_keep: Tensor | None) -> Tensor:
        """Embed the patches, add the position, keep ``ids_keep`` (all without masking), append the
        cls token, blocks, norm: [N, C, H, W] -> [N, 1+L_keep, D]. The masking itself (the
        official ``random_masking``) is the corruption part, which chose ``ids_keep``."""
        return self.backbone.encode(x, ids_keep=ids_keep)

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """[N, 1+L_keep, D] -> [N, L, P]"""
        return self.decoder(latent, ids_restore)

    def predict(self, net_input: Tensor, corrupted: Corrupted, labels: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """Encode the visible tokens, decode every position -> [N, L, P] (``forward`` without the loss)."""
        latent = self.forward_encoder(net_input, corrupted.ids_keep)  # [N, 1+L_keep, D]
        ids_restore = corrupted.ids_restore
        if ids_restore is None:  # nothing removed (e.g. additive noise): tokens are in order
            n = net_input.shape[0]
            ids_restore = torch.arange(self.backbone.num_patches, device=net_input.device).expand(n, -1)
        return self.forward_decoder(latent, ids_restore)  # [N, L, P]

    def features(self, net_input: Tensor) -> Tensor:
        return self.backbone.features(net_input, pool=self.probe_pool)

    def probe_protocol(self) -> dict[str, Any]:
        return {
            **super().probe_protocol(),
            "feature": f"encoder {self.probe_pool} token after final norm",
            "input": f"clean, no augmentation ({self.input_space} space)",
        }
