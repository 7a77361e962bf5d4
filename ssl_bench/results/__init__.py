"""Results persistence (SQLite store) and leaderboard generation.

Runs and metrics go into one SQLite file shared by all processes; tables such as
the leaderboard are always regenerated from it rather than edited by hand.
"""

from .leaderboard import (
    BASELINE_METHOD_NAMES,
    BUILTIN_EVALUATORS,
    HEADLINE_METRICS,
    PAPER_EPOCHS,
    PAPER_PROBE,
    PAPER_TABLE4,
    RENDER_FORMATS,
    build_leaderboard,
    build_table4,
    render,
)
from .store import (
    RUN_FIELDS,
    RUN_STATUSES,
    SCHEMA_VERSION,
    FinishedRunError,
    ReadOnlyStoreError,
    ResultsStore,
    ResultsStoreError,
    RunRecord,
    current_host,
    process_alive,
)

__all__ = [
    "BASELINE_METHOD_NAMES",
    "BUILTIN_EVALUATORS",
    "HEADLINE_METRICS",
    "PAPER_EPOCHS",
    "PAPER_PROBE",
    "PAPER_TABLE4",
    "RENDER_FORMATS",
    "RUN_FIELDS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "FinishedRunError",
    "ReadOnlyStoreError",
    "ResultsStore",
    "ResultsStoreError",
    "RunRecord",
    "build_leaderboard",
    "build_table4",
    "current_host",
    "process_alive",
    "render",
]
