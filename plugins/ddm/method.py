"""DiT DDM (Peebles & Xie 2023) as the start of the l-DAE deconstruction: the very same
``DenoisingMethod`` as l-DAE with a different default config (eps-prediction, DDPM linear betas,
T = 1000, latent in / out). See plugins/ddm/default_config.py for the choices."""

from __future__ import annotations

from pathlib import Path

from ssl_bench_plugins.ldae.method import DenoisingMethod


class DDM(DenoisingMethod):
    default_config = Path(__file__).parent / "default_config.py"
