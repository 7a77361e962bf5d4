"""MLP heads (projectors, predictors) of joint-embedding methods.

One builder serves MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised
Vision Transformers", §5 "MLP heads"; facebookresearch/moco-v3 ``moco/builder.py``,
``MoCo._build_mlp``) and SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation
Learning", §3 "Baseline settings"; facebookresearch/simsiam ``simsiam/builder.py``), whose heads are the same
pattern: Linear -> BatchNorm -> ReLU repeated, then a last Linear, optionally followed by a
BatchNorm.

Why the hidden Linears are bias-free: a BatchNorm follows each of them, and its mean subtraction
cancels any bias. The last Linear is bias-free too when a BatchNorm follows it (MoCo v3's
projector and ViT predictor, SimSiam's projector, whose official code freezes that bias: "hack:
not use bias as it is followed by BN"); SimSiam's predictor ends in a plain Linear *with* a bias
(``last_bias=True``). The final BatchNorm has no affine parameters: it only standardises the
embedding (a learned scale would be undone by the L2 normalisation of the losses anyway).
"""

from __future__ import annotations

from torch import nn


def build_mlp(
    num_layers: int,
    in_dim: int,
    hidden: int,
    out_dim: int,
    last_bn: bool = True,
    last_bias: bool = False,
) -> nn.Sequential:
    """``num_layers`` Linears with BatchNorm1d(affine) + ReLU between them; a final
    BatchNorm1d(affine=False) iff ``last_bn``.

    Hidden Linears are bias-free (a BatchNorm follows them). The last Linear has a bias iff
    ``last_bias`` (only meaningful without ``last_bn``, since a following BatchNorm would cancel it).

    * MoCo v3 (ViT): projector ``build_mlp(3, D, 4096, 256)``, predictor ``build_mlp(2, 256, 4096, 256)``;
      ResNet predictor ``last_bn=False``.
    * SimSiam: projector ``build_mlp(3, D, 2048, 2048)``, predictor
      ``build_mlp(2, 2048, 512, 2048, last_bn=False, last_bias=True)`` (a 512-wide bottleneck).

    Input / output: ``[N, in_dim] -> [N, out_dim]``.
    """
    if num_layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got num_layers={num_layers}")
    if last_bn and last_bias:
        raise ValueError("last_bias with last_bn: the final BatchNorm would cancel the bias")
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden
        d_out = out_dim if i == num_layers - 1 else hidden
        last = i == num_layers - 1
        layers.append(nn.Linear(d_in, d_out, bias=last and last_bias))
        if not last:
            layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)
