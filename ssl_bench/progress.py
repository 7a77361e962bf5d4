"""Progress bars wherever a person waits, and nowhere else.

One policy for every bar outside the training loop (feature extraction, probes, k-NN, baselines,
tokenizer fitting), all of them tqdm:

* shown on a terminal, silent when stderr is not a TTY (logs, CI, pytest): tqdm's ``disable=None``.
  A bar redrawn into a log file is hundreds of carriage-return lines that bury the results;
* ``leave=False``: a finished bar is erased, so what stays on the screen is the logged result;
* only on the main rank: N ranks drawing N bars on one terminal interleave into noise, and every
  rank does the same amount of work, so rank 0's bar is everyone's.

The training loop's epoch bar (``ssl_bench/train/engine.py``) follows the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

from ssl_bench.distributed import is_main_rank

T = TypeVar("T")


def progress(
    iterable: Iterable[T] | None = None, *, desc: str, total: float | None = None, unit: str = "it",
    main: bool | None = None, **kwargs: Any,
) -> tqdm:
    """A tqdm bar under the policy above; ``main=None`` asks torch.distributed whether this is rank 0.

    Iterate over it like ``iterable``, or call ``update(n)`` / ``close()`` on a manual bar
    (``iterable=None`` with a ``total``).
    """
    if main is None:
        main = is_main_rank()
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=None if main else True, **kwargs)
