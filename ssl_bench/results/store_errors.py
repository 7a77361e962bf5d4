"""The results store's errors: each is one line the CLI prints as ``ssl-bench: error: ...``."""

from __future__ import annotations

from ..errors import SSLBenchError

#: The fix for a file that is not (or no longer) a usable results store.
OTHER_FILE_FIX = "Fix: delete or move that file, or pass another --results file"


class ResultsStoreError(SSLBenchError, RuntimeError):
    """The results file cannot be used (corrupt, foreign, too new, read-only, on a full disk) or a
    request would break its invariants; the CLI prints it as one message because the fix is about
    the file or the call, not the code."""


class FinishedRunError(ResultsStoreError):
    """A write would change a finished run; finished results are immutable so a crashed or resumed
    process can never downgrade a recorded result."""


class ReadOnlyStoreError(ResultsStoreError):
    """A write was attempted through a store opened read-only."""


class RunStillRunningError(ResultsStoreError, TimeoutError):
    """``ResultsStore.wait_for_run`` gave up: the run's owner is alive and has not finished it."""
