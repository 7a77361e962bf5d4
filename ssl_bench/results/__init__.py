"""Results persistence (SQLite store), the queries the rest of ssl-bench reads, and the tables.

Runs and metrics go into one SQLite file shared by all processes; tables such as the leaderboard are
always regenerated from it rather than edited by hand. One module per reason to change:

* :mod:`.sqlite_file` - the file: checks before SQLite touches it, creation, read-only fallbacks,
  transactions, SQLite failures as one line (a full disk told apart from a damaged file);
* :mod:`.schema` - the tables, the schema version, migration;
* :mod:`.records` - the run record, column types, value checks (types, JSON, accuracy range, NaN);
* :mod:`.liveness` - whether a run's owning process is alive;
* :mod:`.store` - :class:`ResultsStore`: writes, the atomic run claim, frames that skip damaged rows;
* :mod:`.queries` - finished runs, metrics per run, latest finished per comparison, datasets present;
* :mod:`.settings` - the data / probe settings that keep runs apart;
* :mod:`.leaderboard`, :mod:`.table4` - the two tables; :mod:`.render` - md / csv / html.
* :mod:`.plot` - the figures (the leaderboard's intervals, the chain beside the paper); imported on
  its own (``from ssl_bench.results.plot import ...``) so that reading the store never loads matplotlib.
"""

from .columns import BUILTIN_EVALUATORS, HEADLINE_METRICS, KNN_COL, LINEAR_COL
from .leaderboard import build_leaderboard
from .liveness import current_host, process_alive
from .queries import (
    LatestRun,
    RunMetrics,
    backbones_in,
    datasets_in,
    finished_runs,
    knn_top1_k20,
    latest_finished,
    metrics_by_run,
    run_metrics,
)
from .records import BASELINE_METHOD_NAMES, RUN_FIELDS, RUN_STATUSES, RunRecord, is_accuracy_metric, utc_now
from .render import RENDER_FORMATS, render
from .schema import SCHEMA_VERSION
from .store import ResultsStore
from .store_errors import FinishedRunError, ReadOnlyStoreError, ResultsStoreError, RunStillRunningError
from .table4 import PAPER_EPOCHS, PAPER_PROBE, PAPER_TABLE4, build_table4

__all__ = [
    "BASELINE_METHOD_NAMES",
    "BUILTIN_EVALUATORS",
    "HEADLINE_METRICS",
    "KNN_COL",
    "LINEAR_COL",
    "PAPER_EPOCHS",
    "PAPER_PROBE",
    "PAPER_TABLE4",
    "RENDER_FORMATS",
    "RUN_FIELDS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "FinishedRunError",
    "LatestRun",
    "ReadOnlyStoreError",
    "ResultsStore",
    "ResultsStoreError",
    "RunMetrics",
    "RunRecord",
    "RunStillRunningError",
    "backbones_in",
    "build_leaderboard",
    "build_table4",
    "current_host",
    "datasets_in",
    "finished_runs",
    "is_accuracy_metric",
    "knn_top1_k20",
    "latest_finished",
    "metrics_by_run",
    "process_alive",
    "render",
    "run_metrics",
    "utc_now",
]
