"""The ledger of runs: where a run's record lives and how its life is written down, once.

* :func:`open_store` opens the results store and marks the runs whose process is gone as
  ``interrupted`` (clearing the partial files a killed write left in their run directories). Every
  command that records goes through it: ``run``, ``eval``, ``deconstruct``.
* :class:`StoreOnUse` checks an existing store before anything is created, and creates a new
  one only when something is recorded, so a refused command leaves no results file behind.
* :func:`run_record` is the one builder of a run's row.
* :func:`claim_run_dir` gives a run a directory nobody else has (``mkdir`` is atomic, so concurrent
  runs of the same method and seed each get their own).
* :func:`recording` is the one context that marks a run ``failed`` or ``interrupted`` when what it
  wraps raises, the same way for trained runs and baselines: a finished run is never downgraded,
  and a store that cannot be written (a full disk) is a logged warning, never a second error that
  hides the first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ssl_bench.config import config_to_json
from ssl_bench.errors import RunInterrupted, SSLBenchError, TrainingInterrupted
from ssl_bench.files import remove_partial_writes
from ssl_bench.provenance import git_commit, run_versions
from ssl_bench.results import ResultsStore, RunRecord, utc_now

log = logging.getLogger("ssl_bench")


def open_store(path: str | Path) -> ResultsStore:
    """The writable store at ``path``, with the runs of dead processes marked ``interrupted``."""
    store = ResultsStore(path)
    stale = store.mark_stale_runs()
    if stale:
        log.info("marked run(s) %s as interrupted: their process is gone", ", ".join(map(str, stale)))
        for run_id in stale:
            run_dir = store.get_run(run_id).run_dir
            for tmp in remove_partial_writes(Path(run_dir)) if run_dir else []:
                log.info("removed %s, a write its killed process left unfinished", tmp)
    return store


class StoreOnUse:
    """The results store through :func:`open_store`: at once when the file exists (so a damaged,
    foreign or zero-byte file is refused before the command creates anything), else on first use
    (so a command refused before it records anything leaves no new results file behind)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._store: ResultsStore | None = None
        if self.path.exists() or self.path.is_symlink():
            self._store = open_store(self.path)

    @property
    def opened(self) -> ResultsStore:
        if self._store is None:
            self._store = open_store(self.path)
        return self._store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.opened, name)


def run_record(
    cfg: Any, method: str, run_dir: Path, device: Any, *, epochs: int, is_baseline: bool = False, uses_labels: bool = False,
    variant: dict[str, Any] | None = None,
) -> RunRecord:
    """The row of a new run (``running``, owned by this process). The run directory is recorded as
    an absolute path, so the run is found again from any working directory. ``variant``: its row
    identity (``ssl_bench.run.variant``)."""
    return RunRecord(
        method=method, backbone=cfg.backbone.name, dataset=cfg.dataset.name, run_dir=str(Path(run_dir).resolve()),
        config_json=config_to_json(cfg), seed=cfg.seed, git_commit=git_commit(), versions_json=run_versions(),
        variant_json=variant,
        epochs=epochs, batch_size=None if is_baseline else cfg.train.batch_size, device=str(device),
        uses_labels=uses_labels, is_baseline=is_baseline,
    )


def run_dir_base(cfg: Any) -> Path:
    """``OUT/<dataset>/<backbone>``: where the runs of this config's data and backbone live."""
    return Path(cfg.out) / cfg.dataset.name / cfg.backbone.name


def claim_run_dir(cfg: Any, name: str) -> Path:
    """A new ``OUT/<dataset>/<backbone>/<name>-s<seed>[-N]`` directory, created here: the first name
    that no other run (in this process or another) has taken. Earlier runs are never reused."""
    base = run_dir_base(cfg)
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-s{cfg.seed}"
    for i in range(100_000):
        path = base / (stem if i == 0 else f"{stem}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise SSLBenchError(f"{base} already holds 100,000 runs named {stem}-N; use another --out")


def find_run(store: Any, run_dir: Path) -> int | None:
    """The store's run for ``run_dir``, however the path was spelt when it was recorded: absolute (as
    runs are recorded now), or relative to the working directory of the command that recorded it
    (older stores), and also after the run folders were moved or copied together with their store
    (the recorded path then ends like this one: at least ``<dataset>/<backbone>/<run>``)."""
    run_dir = Path(run_dir)
    absolute = run_dir.resolve()
    candidates = [str(absolute), str(run_dir)]
    with contextlib.suppress(ValueError):  # another drive (Windows)
        candidates.append(os.path.relpath(absolute))
    for candidate in dict.fromkeys(candidates):
        run_id = store.find_run(candidate)
        if run_id is not None:
            return run_id
    best: tuple[int, int] | None = None
    for rec in store.runs_frame().to_dict("records"):
        if not rec["run_dir"]:
            continue
        shared = _shared_tail(Path(str(rec["run_dir"])).parts, absolute.parts)
        if shared >= 3 and (best is None or (shared, int(rec["id"])) > best):
            best = (shared, int(rec["id"]))
    return None if best is None else best[1]


def _shared_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """How many trailing path components ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def stop_status(exc: BaseException) -> str:
    """The status a run ends with when ``exc`` stops it."""
    return "interrupted" if isinstance(exc, (KeyboardInterrupt, TrainingInterrupted, RunInterrupted)) else "failed"


@contextlib.contextmanager
def recording(store: Any, run_id: int | None, *, finished_before: bool = False) -> Iterator[None]:
    """Mark ``run_id`` failed / interrupted if the block raises (then re-raise). Nothing happens
    for ``run_id`` None (another rank) or a run that was finished before (its result stands)."""
    try:
        yield
    except BaseException as exc:
        if run_id is not None and not finished_before:
            status = stop_status(exc)
            try:
                store.update_run(run_id, status=status, finished_at=utc_now())
            except SSLBenchError as store_exc:  # the store itself is the problem (disk full, read-only)
                log.warning("could not mark run %s as %s: %s", run_id, status, store_exc)
        raise


def record_scores(store: Any, run_id: int, recorded: dict[str, Any], *, finished_before: bool, **fields: Any) -> None:
    """Store a run's evaluation: a finished run's metrics are replaced (all evaluators in one
    transaction, nothing else about the run changes); any other run is finished with them."""
    if finished_before:
        store.replace_all_metrics(run_id, recorded)
    else:
        store.finish_run(run_id, recorded, **fields)
