"""MoCo v3 (Chen, Xie, He 2021) for ViTs: two augmented views, a base encoder (backbone + projector)
followed by a predictor gives queries, a momentum copy of backbone + projector gives keys, and a
symmetrised InfoNCE (temperature 0.2, scaled by 2T) pulls each query to the other view's key.

Paper: Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers",
§3 (Alg. 1), §4 (the frozen random patch projection) and §5 (implementation details); official
code: facebookresearch/moco-v3 ``moco/builder.py``, ``main_moco.py``, ``vits.py``. Differences from
the official code are listed in ``MoCoV3``'s docstring.

The reusable joint-embedding parts come from the core: MLP heads (``ssl_bench.components.heads``),
the InfoNCE loss (``ssl_bench.components.losses``), the momentum schedule and encoder
(``ssl_bench.components.momentum``) and the two views (``ssl_bench.data.augment.TwoViewAugment``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_bench.components.backbones import ViTBackbone
from ssl_bench.components.base import Method, StepOutput
from ssl_bench.components.heads import build_mlp
from ssl_bench.components.losses import symmetric_info_nce
from ssl_bench.components.momentum import MomentumEncoder, momentum_at
from ssl_bench.data.crops import CropSpec
from ssl_bench.data.augment import TwoViewAugment

log = logging.getLogger("ssl_bench.mocov3")


# ----------------------------------------------------------------------------- pure helpers


def head_sizes(cfg: Any, backbone_name: str, embed_dim: int) -> tuple[int, int, int]:
    """(proj_hidden, proj_dim, pred_hidden): explicit config > per-backbone table > a rule.

    The rule for backbones missing from the table: the paper's 4096/256/4096 from ViT-S (384) up,
    a CPU-sized 512/128/512 below.
    """
    table = cfg.head_sizes.get(backbone_name) if cfg.get("head_sizes") else None
    if table is None:
        table = (4096, 256, 4096) if embed_dim >= 384 else (512, 128, 512)
    return (
        cfg.get("proj_hidden") or table[0],
        cfg.get("proj_dim") or table[1],
        cfg.get("pred_hidden") or table[2],
    )


def mocov3_vit_init_(backbone: ViTBackbone) -> None:
    """The official ``VisionTransformerMoCo`` initialisation (facebookresearch/moco-v3 ``vits.py``),
    on the timm ViT.

    qkv: uniform(+-sqrt(6 / (D_out/3 + D_in))), i.e. xavier for Q, K, V as three separate matrices;
    other Linears xavier-uniform; all Linear biases 0; cls token N(0, 1e-6); patch projection
    uniform(+-sqrt(6 / (C p^2 + D))) (xavier for the conv viewed as a Linear), bias 0.
    LayerNorms keep timm's (1, 0). The position embedding stays the harness's fixed sin-cos.
    """
    vit = backbone.vit
    for name, module in vit.named_modules():
        if isinstance(module, nn.Linear):
            if "qkv" in name:
                val = math.sqrt(6.0 / float(module.weight.shape[0] // 3 + module.weight.shape[1]))
                nn.init.uniform_(module.weight, -val, val)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    nn.init.normal_(vit.cls_token, std=1e-6)
    proj = vit.patch_embed.proj
    fan_in = proj.weight.shape[1] * proj.weight.shape[2] * proj.weight.shape[3]  # C * p * p
    val = math.sqrt(6.0 / float(fan_in + backbone.embed_dim))
    nn.init.uniform_(proj.weight, -val, val)
    if proj.bias is not None:
        nn.init.zeros_(proj.bias)


def use_sync_bn(option: bool | str) -> bool:
    """Whether to convert BatchNorms to SyncBatchNorm.

    ``"auto"``: yes when a process group with more than one process is initialised and its backend
    is not gloo. PyTorch's SyncBatchNorm only runs on accelerators, so CPU/gloo runs keep per-process
    BatchNorm (statistics over the local batch only; logged as a warning). ``True`` / ``False`` force it.
    """
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if not distributed:
        return False
    if option == "auto":
        if dist.get_backend() == "gloo":
            if dist.get_rank() == 0:
                log.warning("mocov3: gloo backend (CPU): no SyncBatchNorm there, the heads use per-process BatchNorm")
            return False
        return True
    return bool(option)


# ---------------------------------------------------------------------------------- method


class MoCoV3(Method):
    """MoCo v3 with a ViT backbone.

    Modules: ``backbone`` + ``projector`` (3-layer MLP on the cls token after the final norm) +
    ``predictor`` (2-layer MLP) form the trained path; ``momentum_backbone`` + ``momentum_projector``
    are a deep copy with ``requires_grad=False`` (so the optimiser never sees them and DDP neither
    reduces nor waits for their gradients).

    Momentum timing (as the official ``main_moco.py`` + ``builder.forward``): iteration i of epoch e
    first updates the momentum encoder with m(e + i / iters), then computes the keys. Here the value
    is stored in ``self.momentum``: m0 at construction, and after every optimiser step the loop's
    ``on_train_step_end(e + (i + 1) / iters, E)`` sets m(e + (i + 1) / iters), which the *next*
    ``training_step`` applies (just before its keys are computed). So step i uses exactly the
    official m(e + i / iters). The value is saved in the state dict (extra state) so a resumed run
    continues the schedule exactly.

    Differences from the official code, all deliberate:

    * Both views go through the backbone as one concatenated batch (a ViT has no cross-sample
      operation, so this computes what two separate passes would, in one larger matmul); the
      BatchNorm heads still see each view as its own batch, as in the official code.
    * Frozen parameters (patch projection with ``stop_grad_conv1``, the fixed position embedding)
      are excluded from the momentum update: they are identical copies, and m*a + (1-m)*a is a in
      exact arithmetic but can drift by an ulp per step in float32.
    * SyncBatchNorm is used only where PyTorch supports it (see :func:`use_sync_bn`). The conversion
      is done at construction, which the runner does after joining the process group.
    * The loss runs in float32 even under bf16 autocast (see ``ssl_bench.components.losses``).
    """

    default_config = Path(__file__).parent / "default_config.py"
    batch_coupled_loss = True  # in-batch negatives and BatchNorm heads: accumulation != a large batch

    def __init__(self, cfg: Any, backbone: ViTBackbone, info: Any):
        super().__init__(cfg, backbone, info)
        mcfg = cfg.method
        self.temperature = float(mcfg.temperature)
        self.m0 = float(mcfg.momentum)
        self.momentum_cos = bool(mcfg.get("momentum_cos", True))
        self.momentum = self.m0  # used by the next training_step (see class docstring)
        self.probe_pool = mcfg.get("probe_pool", "cls")

        if mcfg.get("init", "mocov3") == "mocov3":
            mocov3_vit_init_(backbone)
        self.stop_grad_conv1 = bool(mcfg.get("stop_grad_conv1", True))
        if self.stop_grad_conv1:  # a fixed random patch projection: the paper's stability trick
            backbone.vit.patch_embed.proj.weight.requires_grad_(False)
            if backbone.vit.patch_embed.proj.bias is not None:
                backbone.vit.patch_embed.proj.bias.requires_grad_(False)

        proj_hidden, proj_dim, pred_hidden = head_sizes(mcfg, backbone.name, backbone.embed_dim)
        self.projector = build_mlp(3, backbone.embed_dim, proj_hidden, proj_dim, last_bn=True)
        self.predictor = build_mlp(2, proj_dim, pred_hidden, proj_dim, last_bn=True)
        self.sync_bn = use_sync_bn(mcfg.get("sync_bn", "auto"))
        if self.sync_bn:
            self.projector = nn.SyncBatchNorm.convert_sync_batchnorm(self.projector)
            self.predictor = nn.SyncBatchNorm.convert_sync_batchnorm(self.predictor)

        # momentum encoder: a frozen copy of backbone + projector (same weights at the start, never
        # trained by the optimiser), registered under this module's names so checkpoints keep them;
        # built after the patch projection is frozen, so only trainable parameters are EMA-updated
        self._momentum_encoder = MomentumEncoder(self.backbone, self.projector)
        self.momentum_backbone, self.momentum_projector = self._momentum_encoder.modules

        self.crop_scale = tuple(mcfg.crop_scale)
        self.two_views = TwoViewAugment.byol(info.image_size, scale=self.crop_scale)
        self.view1, self.view2 = self.two_views.view1, self.two_views.view2

    # -- parameters ---------------------------------------------------------------------------

    def _base_params(self) -> list[nn.Parameter]:
        return self._momentum_encoder.base_parameters()

    def _momentum_params(self) -> list[nn.Parameter]:
        return self._momentum_encoder.momentum_parameters()

    @torch.no_grad()
    def update_momentum_encoder(self, m: float) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q over backbone + projector (trainable params only)."""
        self._momentum_encoder.update_(m)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """One group: MoCo v3 applies weight decay to every parameter (no bias/norm exclusion).

        Frozen parameters (momentum encoder, fixed patch projection, position embedding) are left
        out, so the optimiser never touches them.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": weight_decay}]

    # -- momentum schedule --------------------------------------------------------------------

    def on_train_step_end(self, epoch_progress: float, total_epochs: int) -> None:
        """Set the momentum that the next training step applies (m at the fractional epoch reached)."""
        self.momentum = momentum_at(epoch_progress, total_epochs, self.m0) if self.momentum_cos else self.m0

    def get_extra_state(self) -> dict[str, float]:
        return {"momentum": float(self.momentum)}

    def set_extra_state(self, state: dict[str, float]) -> None:
        self.momentum = float(state["momentum"])

    # -- training -----------------------------------------------------------------------------

    def _embed(self, backbone: ViTBackbone, projector: nn.Module, x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Two views stacked in ``x [2N, C, H, W]`` -> projections ``([N, P], [N, P])``.

        The projector (BatchNorm) is applied per view so its batch statistics are per view.
        """
        h = backbone.encode(x)[:, 0]  # [2N, D] cls token after the final norm
        return projector(h[:n]), projector(h[n:])  # [N, P] each

    def train_views(self) -> list[CropSpec]:
        """Two views, each a RandomResizedCrop of the full image (scale (crop_min, 1), torchvision's
        bilinear default; facebookresearch/moco-v3 main_moco.py), cut by a folder loader."""
        return [CropSpec(self.info.image_size, self.crop_scale, interpolation="bilinear")] * 2

    def augmentation_only(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """The two asymmetric views of a uint8 batch (``[N, C, H, W]``, or ``[N, 2, C, S, S]``
        already cropped by the loader), stacked [2N, C, S, S]: view 1 always blurred, view 2 rarely
        blurred but solarized. Timed on its own by benchmarks/throughput.py: augmentation is MoCo
        v3's main non-network cost."""
        return self.two_views(images, self.info.mean, self.info.std, generator)

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        x = self.augmentation_only(images, generator)  # [2N, C, H, W]
        n = x.shape[0] // 2

        z1, z2 = self._embed(self.backbone, self.projector, x, n)
        q1, q2 = self.predictor(z1), self.predictor(z2)  # [N, P]

        with torch.no_grad():
            self.update_momentum_encoder(self.momentum)  # before the keys, as the official forward
            k1, k2 = self._embed(self.momentum_backbone, self.momentum_projector, x, n)  # [N, P]

        loss = symmetric_info_nce(q1, q2, k1, k2, self.temperature)
        return StepOutput(loss, {"loss": loss.detach(), "momentum": self.momentum})

    # -- probing ------------------------------------------------------------------------------

    @torch.no_grad()
    def probe_features(self, images: Tensor) -> Tensor:
        """The base encoder's backbone (not the momentum one, as the official linear probe)."""
        return self.backbone.features(images, pool=self.probe_pool)

    def probe_protocol(self) -> dict[str, Any]:
        feature = "cls token" if self.probe_pool == "cls" else "mean of patch tokens"
        return {"feature": f"base encoder {feature} after final norm", "input": "clean, no augmentation"}
