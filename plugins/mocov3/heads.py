"""MoCo v3 MLP heads (METHODS.md §3.1, fact 25).

Every Linear is bias-free because a BatchNorm follows it (a bias would be cancelled by the BN's
mean subtraction). The projector ends in an affine-free BatchNorm, which standardises the
embedding before it is L2-normalised; for ViTs the predictor ends in one too (for ResNets it does
not; ``last_bn=False`` gives that variant).
"""

from __future__ import annotations

from torch import nn


def build_mlp(num_layers: int, in_dim: int, hidden: int, out_dim: int, last_bn: bool = True) -> nn.Sequential:
    """``num_layers`` bias-free Linears; BatchNorm1d(affine) + ReLU between them; final
    BatchNorm1d(affine=False) iff ``last_bn``.

    Projector (ViT): ``build_mlp(3, D, 4096, 256)``; predictor: ``build_mlp(2, 256, 4096, 256)``.
    Input / output: ``[N, in_dim] -> [N, out_dim]``.
    """
    if num_layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got num_layers={num_layers}")
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden
        d_out = out_dim if i == num_layers - 1 else hidden
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)
