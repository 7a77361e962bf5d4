"""SimSiam: two views of an image, one encoder, a predictor, and a stop-gradient; no negatives, no
momentum encoder.

Chen & He 2021, "Exploring Simple Siamese Representation Learning" (CVPR), Alg. 1 and Eq. 1-4;
official code facebookresearch/simsiam ``simsiam/builder.py`` (the model) and ``main_simsiam.py``
(augmentation, ``--fix-pred-lr``). Built only from the core's joint-embedding parts, to show what a
plugin needs: :class:`~ssl_bench.data.augment.TwoViewAugment` (the two views),
:func:`~ssl_bench.components.heads.build_mlp` (projector and predictor) and
:func:`~ssl_bench.components.losses.symmetric_negative_cosine` (the loss with its stop-gradient).

Differences from the official recipe, all because of the harness or the backbone:

* a ViT encoder (the paper uses ResNets): the projector reads the cls token after the final norm,
  and probing uses the same feature;
* the harness's optimiser (AdamW by default, warm-up + cosine) instead of SGD with momentum 0.9,
  lr 0.05 x batch / 256 and weight decay 1e-4; the CPU-sized defaults are in ``simsiam_config.py``;
* small heads for small backbones (``head_sizes``), the paper's 2048 / 2048 / 512 from ViT-S up;
* BatchNorm statistics are per process under DDP (the official code uses SyncBatchNorm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.components.base import Backbone, Method, StepOutput
from ssl_bench.components.heads import build_mlp
from ssl_bench.components.losses import symmetric_negative_cosine
from ssl_bench.data.augment import TwoViewAugment, ViewAugment


def head_sizes(mcfg: Any, backbone: Backbone) -> tuple[int, int, int]:
    """(proj_hidden, dim, pred_hidden): explicit config > per-backbone table > a rule.

    The rule for backbones missing from the table: the paper's 2048 / 2048 / 512 (a 4x predictor
    bottleneck, SimSiam §3 "Baseline settings") from ViT-S (384) up, a CPU-sized 512 / 512 / 128
    below, keeping the bottleneck.
    """
    table = (mcfg.get("head_sizes") or {}).get(getattr(backbone, "name", ""))
    if table is None:
        table = (2048, 2048, 512) if backbone.embed_dim >= 384 else (512, 512, 128)
    return mcfg.get("proj_hidden") or table[0], mcfg.get("dim") or table[1], mcfg.get("pred_hidden") or table[2]


class SimSiam(Method):
    """SimSiam on a ViT: ``f`` = backbone + 3-layer projector, ``h`` = 2-layer bottleneck predictor.

    ``L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2`` with ``D`` the negative cosine, ``z = f(x)``,
    ``p = h(z)``. The stop-gradient ``sg`` is what prevents collapse (paper §4.1); the logged
    ``z_std`` (std over the batch of the L2-normalised ``z``, averaged over channels) is the paper's
    collapse monitor (Fig. 2): about ``1 / sqrt(dim)`` when healthy, 0 when collapsed.
    """

    default_config = Path(__file__).parent / "simsiam_config.py"
    batch_coupled_loss = True  # BatchNorm heads: statistics over each (micro-)batch

    def __init__(self, cfg: Any, backbone: Backbone, info: Any) -> None:
        super().__init__(cfg, backbone, info)
        mcfg = cfg.method
        self.pool = mcfg.get("probe_pool", "cls")
        self.fix_pred_lr = bool(mcfg.get("fix_pred_lr", True))
        proj_hidden, dim, pred_hidden = head_sizes(mcfg, backbone)
        # projector: BN on every layer, output BN without affine (simsiam/builder.py `encoder.fc`)
        self.projector = build_mlp(3, backbone.embed_dim, proj_hidden, dim, last_bn=True)
        # predictor: bottleneck, BN on the hidden layer only, plain Linear out (builder.py `predictor`)
        self.predictor = build_mlp(2, dim, pred_hidden, dim, last_bn=False, last_bias=True)
        # symmetric views, MoCo v2's augmentation (main_simsiam.py): jitter (0.4, 0.4, 0.4, 0.1)
        # p 0.8, grayscale 0.2, blur p 0.5, flip; no solarisation
        view = ViewAugment(info.image_size, scale=tuple(mcfg.crop_scale), saturation=0.4, blur_p=0.5)
        self.two_views = TwoViewAugment(view, view)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Weight decay on every parameter, as the official SGD; the predictor in its own group
        with ``"fixed_lr": True`` when ``method.fix_pred_lr`` (``--fix-pred-lr``; paper §4.2).

        ``fixed_lr`` asks the training loop to keep the group at the base lr
        (``train.blr`` x batch / 256) with no warm-up and no decay; a harness whose loop does not
        support the key yet schedules the predictor like the rest.
        """
        predictor = [p for p in self.predictor.parameters() if p.requires_grad]
        predictor_ids = {id(p) for p in predictor}
        encoder = [p for p in self.parameters() if p.requires_grad and id(p) not in predictor_ids]
        return [
            {"params": encoder, "weight_decay": weight_decay},
            {"params": predictor, "weight_decay": weight_decay, "fixed_lr": self.fix_pred_lr},
        ]

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        x = self.two_views(images, self.info.mean, self.info.std, generator)  # [2N, C, H, W]
        n = x.shape[0] // 2
        h = self.backbone.features(x, pool=self.pool)  # [2N, D] both views in one pass
        z1, z2 = self.projector(h[:n]), self.projector(h[n:])  # [N, dim] each; BN statistics per view
        p1, p2 = self.predictor(z1), self.predictor(z2)  # [N, dim]
        loss = symmetric_negative_cosine(p1, p2, z1, z2)  # z detached inside: the stop-gradient
        z_std = F.normalize(z1.detach().float(), dim=1).std(dim=0).mean()  # collapse monitor
        return StepOutput(loss, {"loss": loss.detach(), "z_std": z_std})

    @torch.no_grad()
    def probe_features(self, images: Tensor) -> Tensor:
        """The encoder's pooled feature (before the projector), as the official linear probe."""
        return self.backbone.features(images, pool=self.pool)

    def probe_protocol(self) -> dict[str, Any]:
        feature = "cls token" if self.pool == "cls" else "mean of patch tokens"
        return {"feature": f"encoder {feature} after final norm", "input": "clean, no augmentation"}
