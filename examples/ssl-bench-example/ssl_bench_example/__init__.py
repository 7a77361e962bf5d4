"""Example third-party ssl-bench plugin: two methods, a corruption and a target from one package.

* ``rotnet`` (method): predict which of 4 rotations was applied (Gidaris, Singh, Komodakis 2018).
* ``simsiam`` (method): a Siamese joint-embedding method with a stop-gradient (Chen & He 2021),
  assembled from the core's joint-embedding parts (two-view augmentation, MLP heads, negative-cosine loss).
* ``block-masking`` (corruption): BEiT's blockwise masking; the built-in ``mae``, ``ldae`` and ``ddm``
  use it with ``--set method.corruption.name=block-masking``.
* ``sobel-edges`` (target): regress each patch's edge magnitude; ``--set method.target.name=sobel-edges``.

The classes are imported inside the hook so that ``ssl-bench list`` stays fast and a broken method
module is reported by the registry instead of breaking the import of this package.
"""

from __future__ import annotations

from typing import Any

from ssl_bench.hookspecs import hookimpl


@hookimpl
def ssl_bench_methods() -> dict[str, Any]:
    from ssl_bench_example.rotnet import RotNet
    from ssl_bench_example.simsiam import SimSiam

    return {"rotnet": RotNet, "simsiam": SimSiam}


@hookimpl
def ssl_bench_corruptions() -> dict[str, Any]:
    from ssl_bench_example.block_masking import BlockMasking

    return {"block-masking": BlockMasking}


@hookimpl
def ssl_bench_targets() -> dict[str, Any]:
    from ssl_bench_example.sobel_target import SobelTarget

    return {"sobel-edges": SobelTarget}
