"""Results persistence (SQLite store) and leaderboard generation.

Runs and metrics go into one SQLite file shared by all processes; tables such as
the leaderboard are always regenerated from it rather than edited by hand.
"""

from .leaderboard import (
    BASELINE_METHODS,
    HEADLINE_METRICS,
    PAPER_EPOCHS,
    PAPER_TABLE4,
    RENDER_FORMATS,
    build_leaderboard,
    build_table4,
    render,
)
from .store import RUN_FIELDS, SCHEMA_VERSION, ResultsStore, ResultsStoreError, RunRecord

__all__ = [
    "BASELINE_METHODS",
    "HEADLINE_METRICS",
    "PAPER_EPOCHS",
    "PAPER_TABLE4",
    "RENDER_FORMATS",
    "RUN_FIELDS",
    "SCHEMA_VERSION",
    "ResultsStore",
    "ResultsStoreError",
    "RunRecord",
    "build_leaderboard",
    "build_table4",
    "render",
]
