"""DiT-style t-conditioning on timm building blocks (Peebles & Xie 2023, facebookresearch/DiT
``models.py``; the l-DAE change from Chen et al. 2024, App. A).

What is DiT here and what is timm: every block composes timm's own ``Attention`` and ``Mlp``
(never a fork), and the patch embedding is timm's ``PatchEmbed``. DiT adds only the conditioning
around them: a sinusoidal timestep embedding, an optional class embedding with a null class, and
adaLN-Zero modulation (shift / scale / gate per sub-block, zero-initialised, so a fresh model is the
identity in every block and outputs exactly zero, DiT ``models.py::DiT.initialize_weights``).

The l-DAE change (App. A; the exact shape is not stated in the paper, our choice, docs/methods.md
"Per-block t-MLP"): "each Transformer block accepts an embedding network (a two-layer MLP)
conditioned on the time step t ... hidden dimension 1/4 of its original dimension". Reading chosen
here: the shared ``TimestepEmbedder`` (256 -> D -> D, as DiT) produces c; each block then maps c
through its *own* two-layer MLP ``SiLU -> Linear(D, D/4) -> SiLU -> Linear(D/4, 6D)`` in place of
DiT's single ``SiLU -> Linear(D, 6D)``. "Original dimension" is read as the width D that DiT's
conditioning MLP works at. ``cond_hidden_ratio=None`` gives DiT's block exactly; the last Linear is
zero-initialised in both cases (adaLN-Zero gates kept, DiT's default).

Encoder / decoder: DiT is a plain stack. l-DAE calls the first ``encoder_depth`` blocks the encoder
(the probed representation) and the remaining ``decoder_depth`` blocks the decoder (l-DAE §4.1,
App. A).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Attention, Mlp
from torch import Tensor, nn

from ssl_bench.components.base import Backbone
from ssl_bench.components.posembed import sincos_2d

FREQ_DIM = 256  # DiT's frequency_embedding_size


def timestep_embedding(t: Tensor | int | float, dim: int = FREQ_DIM, max_period: float = 10000.0) -> Tensor:
    """DiT / IDDPM sinusoidal embedding, **cos first**: [N] -> [N, dim] (DiT
    ``models.py::TimestepEmbedder``, IDDPM ``improved_diffusion/nn.py::timestep_embedding``).

    f_k = max_period^(-k / half), k = 0..half-1; emb = [cos(t f), sin(t f)], zero-padded if dim is odd.
    t is the raw step index (DiT does not rescale it), so t=0 gives [1]*half + [0]*half.
    """
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.reshape(1)
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)  # [half]
    args = t.to(torch.float32)[:, None] * freqs[None]  # [N, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [N, 2*half]
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x [N, L, D], shift/scale [N, D] -> x (1 + scale) + shift, broadcast over tokens (DiT
    ``models.py::modulate``)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """t -> 256-d sinusoid -> Linear -> SiLU -> Linear -> [N, D]; both weights N(0, 0.02) (DiT init)."""

    def __init__(self, hidden: int, freq_dim: int = FREQ_DIM):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        nn.init.normal_(self.mlp[0].weight, std=0.02)
        nn.init.normal_(self.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.mlp[0].bias)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))  # [N, D]


class LabelEmbedder(nn.Module):
    """Class embedding with DiT's classifier-free-guidance dropout (DiT ``models.py::LabelEmbedder``).

    The table has num_classes + 1 rows when dropout_prob > 0: row ``num_classes`` is the null class.
    During training each label is replaced by the null id with probability ``dropout_prob``, drawn
    from the step's generator so runs stay reproducible.
    """

    def __init__(self, num_classes: int, hidden: int, dropout_prob: float = 0.1):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.has_null = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + int(self.has_null), hidden)
        nn.init.normal_(self.embedding_table.weight, std=0.02)

    @property
    def null_id(self) -> int:
        return self.num_classes

    def token_drop(self, labels: Tensor, generator: torch.Generator | None = None, force_drop_ids: Tensor | None = None) -> Tensor:
        """[N] int64 -> [N] with dropped entries replaced by the null id."""
        if force_drop_ids is None:
            gen_device = generator.device if generator is not None else labels.device
            drop = torch.rand(labels.shape[0], generator=generator, device=gen_device).to(labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids.to(labels.device) == 1
        return torch.where(drop, torch.full_like(labels, self.null_id), labels)

    def forward(self, labels: Tensor, train: bool, generator: torch.Generator | None = None, force_drop_ids: Tensor | None = None) -> Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, generator, force_drop_ids)
        return self.embedding_table(labels)  # [N, D]


class DiTBlock(nn.Module):
    """adaLN-Zero block around timm's Attention and Mlp (DiT ``models.py::DiTBlock``).

    ``cond_hidden_ratio``: None -> DiT's modulation ``SiLU -> Linear(D, 6D)``; a float r -> the
    l-DAE per-block t-MLP ``SiLU -> Linear(D, rD) -> SiLU -> Linear(rD, 6D)`` (r = 1/4 in the paper).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, cond_hidden_ratio: float | None = 0.25):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"), drop=0.0)
        if cond_hidden_ratio is None:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        else:
            hidden = max(1, int(round(dim * cond_hidden_ratio)))
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, 6 * dim))

    def modulation(self, c: Tensor) -> tuple[Tensor, ...]:
        """c [N, D] -> (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp), each [N, D]."""
        return self.adaLN_modulation(c).chunk(6, dim=1)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(c)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # [N, L, D]
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """LayerNorm (no affine) -> modulate(shift, scale from SiLU -> Linear(D, 2D)) -> Linear(D, out)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # [N, L, out]


class DiTBackbone(Backbone):
    """DiT on timm parts: PatchEmbed + fixed 2-D sin-cos (no cls) + adaLN-Zero blocks + FinalLayer.

    The input is any "image": the (noisy) pixel image with the ViT patch size, or a latent laid out as
    an image ([N, d, h, w] with ``patch_size=1`` for patch-wise tokenizers, [N, c, h', w'] with
    ``patch_size=2`` for a conv VAE, as DiT-L/2). ``out_dim`` is the per-token output width, chosen by
    the method (latent d, or p*p*C pixels); the output is in the token layout of ``patchify``.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        in_chans: int,
        out_dim: int,
        embed_dim: int,
        encoder_depth: int,
        decoder_depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        cond_hidden_ratio: float | None = 0.25,
        num_classes: int = 0,
        class_dropout_prob: float = 0.1,
        freq_dim: int = FREQ_DIM,
        name: str = "dit",
        masked: bool = False,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"DiT input size {image_size} is not divisible by its patch size {patch_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if embed_dim % 4:
            raise ValueError(f"DiT's 2-D sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
        self.name = name
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.image_size = image_size
        self.out_dim = out_dim
        self.encoder_depth = encoder_depth
        self.decoder_depth = decoder_depth
        self.depth = encoder_depth + decoder_depth
        self.num_heads = num_heads
        self.cond_hidden_ratio = cond_hidden_ratio
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.x_embedder = PatchEmbed(image_size, patch_size, in_chans, embed_dim, bias=True)
        self.register_buffer("pos_embed", sincos_2d(embed_dim, self.grid_size).unsqueeze(0), persistent=False)  # [1, L, D]
        self.t_embedder = TimestepEmbedder(embed_dim, freq_dim)
        self.y_embedder = LabelEmbedder(num_classes, embed_dim, class_dropout_prob) if num_classes > 0 else None
        self.blocks = nn.ModuleList(
            DiTBlock(embed_dim, num_heads, mlp_ratio, cond_hidden_ratio) for _ in range(self.depth)
        )
        self.final_layer = FinalLayer(embed_dim, out_dim)
        self.initialize_weights()
        # Masked input (a masking corruption): the encoder half sees only the visible tokens and the
        # decoder half gets a learned mask token (+ its fixed position) at every removed position,
        # as MAE's decoder (He et al. 2022, §3; N(0, 0.02) init as facebookresearch/mae).
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if masked else None
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    def initialize_weights(self) -> None:
        """DiT's init: xavier Linears with zero bias, patch conv as a Linear, t-MLP N(0, .02), then
        zero every adaLN output Linear and the final Linear (identity blocks, zero output)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "embed_dim": self.embed_dim,
            "encoder_depth": self.encoder_depth,
            "decoder_depth": self.decoder_depth,
            "num_heads": self.num_heads,
            "patch_size": self.patch_size,
            "in_chans": self.in_chans,
            "image_size": self.image_size,
            "out_dim": self.out_dim,
            "cond_hidden_ratio": self.cond_hidden_ratio,
            "params": sum(p.numel() for p in self.parameters()),
            "encoder_params": self.encoder_params(),
        }

    def encoder_params(self) -> int:
        """Parameters used up to the probed features (patch embed, t-embedder, encoder blocks)."""
        mods = [self.x_embedder, self.t_embedder, *self.blocks[: self.encoder_depth]]
        return sum(p.numel() for m in mods for p in m.parameters())

    # -- pieces --------------------------------------------------------------------------------

    def _as_t(self, t: Tensor | int | float, n: int, device: torch.device) -> Tensor:
        t = torch.as_tensor(t, device=device)
        return t.expand(n) if t.ndim == 0 else t.to(device)

    def condition(
        self,
        t: Tensor | int,
        n: int,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        force_drop_ids: Tensor | None = None,
    ) -> Tensor:
        """c = t_emb (+ y_emb): [N, D]. Without labels a class-conditional model uses the null class."""
        device = self.pos_embed.device
        c = self.t_embedder(self._as_t(t, n, device))  # [N, D]
        if self.y_embedder is not None:
            if y is None:
                if not self.y_embedder.has_null:
                    raise ValueError("a class-conditional DiT without a null class (dropout 0) needs labels")
                y = torch.full((n,), self.y_embedder.null_id, dtype=torch.long, device=device)
                c = c + self.y_embedder.embedding_table(y)
            else:
                c = c + self.y_embedder(y.to(device), self.training, generator, force_drop_ids)
        return c

    def embed(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, L, D] patch tokens + fixed position."""
        return self.x_embedder(x) + self.pos_embed

    def run_blocks(self, h: Tensor, c: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        for blk in self.blocks[start:stop]:
            h = blk(h, c)
        return h

    def unmask(self, h: Tensor, ids_keep: Tensor) -> Tensor:
        """Visible tokens [N, L_keep, D] -> the full grid [N, L, D]: removed positions get the mask
        token plus their fixed position embedding."""
        if self.mask_token is None:
            raise ValueError(f"{self.name} was built without a mask token; build it with masked=True for a masking corruption")
        n, d = h.shape[0], h.shape[-1]
        full = (self.mask_token + self.pos_embed).to(h.dtype).expand(n, -1, -1)  # [N, L, D] view; scatter copies it
        return full.scatter(1, ids_keep.unsqueeze(-1).expand(-1, -1, d), h)

    # -- public API ----------------------------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        t: Tensor | int,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        force_drop_ids: Tensor | None = None,
        ids_keep: Tensor | None = None,
    ) -> Tensor:
        """x [N, C, H, W], t [N] -> per-token prediction [N, L, out_dim] (token layout of patchify).

        ``ids_keep`` [N, L_keep] (masking): the encoder half runs on those tokens only, the decoder
        half on the full grid with mask tokens filled in.
        """
        c = self.condition(t, x.shape[0], y, generator, force_drop_ids)
        h = self.embed(x)  # [N, L, D]
        if ids_keep is None:
            h = self.run_blocks(h, c)
        else:
            h = torch.gather(h, 1, ids_keep.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [N, L_keep, D]
            h = self.run_blocks(h, c, 0, self.encoder_depth)
            h = self.run_blocks(self.unmask(h, ids_keep), c, self.encoder_depth, None)  # [N, L, D]
        return self.final_layer(h, c)

    def encode(
        self,
        images: Tensor,
        ids_keep: Tensor | None = None,
        cond: Tensor | int | None = None,
        num_blocks: int | None = None,
        y: Tensor | None = None,
    ) -> Tensor:
        """[N, C, H, W] at timestep ``cond`` -> tokens after ``num_blocks`` blocks (default: the
        encoder half) [N, L, D]. No trailing norm: DiT blocks have none and l-DAE App. A names
        none before pooling (our choice, docs/methods.md "Probe")."""
        if ids_keep is not None:
            raise ValueError(f"{self.name} does not take masked (ids_keep) input")
        if cond is None:
            raise ValueError(f"{self.name} is t-conditioned: pass cond=t (e.g. the probe's fixed t)")
        k = self.encoder_depth if num_blocks is None else num_blocks
        if not 0 <= k <= self.depth:
            raise ValueError(f"num_blocks must be in [0, {self.depth}], got {k}")
        c = self.condition(cond, images.shape[0], y)
        return self.run_blocks(self.embed(images), c, 0, k)

    def features(self, images: Tensor, pool: str = "avg", t: Tensor | int = 10, block: int | None = None) -> Tensor:
        """[N, C, H, W] -> [N, D]: encoder output at fixed t, average-pooled (no cls token in DiT)."""
        if pool != "avg":
            raise ValueError(f"DiT has no cls token: pool must be 'avg', got '{pool}'")
        return self.encode(images, cond=t, num_blocks=block).mean(dim=1)
