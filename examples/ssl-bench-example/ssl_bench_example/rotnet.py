"""RotNet: each image is shown in all 4 rotations; a linear head on the cls token classifies them.

Gidaris, Singh, Komodakis 2018, "Unsupervised Representation Learning by Predicting Image
Rotations" (ICLR), §2 (the rotation pretext task; as in the paper's implementation details, all
four rotated copies of an image go into the same batch); official code
gidariss/FeatureLearningRotNet. Here on a ViT with one linear head instead of the paper's NIN/AlexNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.components.base import Method, StepOutput
from ssl_bench.data.augment import eval_transform, random_horizontal_flip


class RotNet(Method):
    """Rotation prediction: a 4-way classifier on the backbone's pooled feature."""

    default_config = Path(__file__).parent / "rotnet_config.py"

    def __init__(self, cfg: Any, backbone: Any, info: Any) -> None:
        super().__init__(cfg, backbone, info)
        self.head = nn.Linear(backbone.embed_dim, 4)
        self.pool = cfg.method.probe_pool
        self.flip_p = cfg.method.flip_p

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        x = eval_transform(images, self.info.mean, self.info.std)  # [N, C, H, W]
        x = random_horizontal_flip(x, self.flip_p, generator)
        views = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])  # [4N, C, H, W]
        targets = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])  # [4N]
        logits = self.head(self.backbone.features(views, pool=self.pool))
        loss = F.cross_entropy(logits, targets)
        return StepOutput(loss, {"loss": loss.detach()})

    @torch.no_grad()
    def probe_features(self, images: Tensor) -> Tensor:
        return self.backbone.features(images, pool=self.pool)

    def probe_protocol(self) -> dict[str, Any]:
        return {"feature": f"encoder {self.pool} token after final norm", "input": "clean"}
