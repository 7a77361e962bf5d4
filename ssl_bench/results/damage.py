"""What the readers do with a damaged value: skip the row, or show the value as damaged, and say so
in one warning line per value, never fail the whole file.

One bad byte in one row's ``config_json`` must not make every table unusable: the row is left out
with a line naming the run (id, run dir), the column, why, and the fix. A metric whose stored value
cannot be shown (text, inf, an accuracy outside [0, 1]) stays in, as None with its reason, so tables
show "damaged" instead of a number or an empty "not computed" cell.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from .records import damaged_message, json_problem, metric_value_problem, run_row_problem, type_problem

log = logging.getLogger("ssl_bench.results")


class DamageReport:
    """The damaged values readers of one store met: one warning line (``log.warning``) per run and
    column, naming every damaged metric of it, all kept in ``seen`` (``(run id, column) -> line``) so
    a command can sum them up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[tuple[Any, str], str] = {}
        self._pending: dict[tuple[Any, str], dict[str, Any]] = {}

    def report(self, run_id: Any, run_dir: Any, column: str, why: str, where: str = "", outcome: str = "") -> str:
        """Warn now (once per run and column) about a damaged value; the one-line message."""
        key = (run_id, column)
        if key not in self.seen:
            self.seen[key] = damaged_message(self.path, run_id, run_dir, column, why, where, outcome)
            log.warning("%s", self.seen[key])
        return self.seen[key]

    def note(self, run_id: Any, run_dir: Any, column: str, why: str, what: str, outcome: str) -> None:
        """Remember one damaged metric row; :meth:`flush` warns once per run and column, naming them all."""
        entry = self._pending.setdefault((run_id, column), {"run_dir": run_dir, "why": why, "what": [], "outcome": outcome})
        entry["what"].append(what)

    def flush(self) -> None:
        """Warn about every noted run and column (a run's 8 metrics with one damaged record: one line)."""
        for (run_id, column), e in self._pending.items():
            what = e["what"]
            where = (f" ({what[0]})" if len(what) == 1 else
                     f" ({len(what)} metrics: {'; '.join(what[:3])}{'; ...' if len(what) > 3 else ''})")
            self.report(run_id, e["run_dir"], column, e["why"], where, e["outcome"])
        self._pending.clear()

    def run_is_sound(self, row: Mapping[str, Any]) -> bool:
        """False (and a warning) when a ``runs`` row has a damaged column: readers skip that run."""
        problem = run_row_problem(row)
        if problem:
            self.report(row.get("id"), row.get("run_dir"), *problem,
                        outcome="that run is skipped (left out of every table)")
        return problem is None

    def metric_is_sound(self, rec: dict[str, Any]) -> bool:
        """Check one metric row joined with its run (``metrics_frame``'s columns), in place; warnings
        wait for :meth:`flush`.

        False: skip it (no readable evaluator or name). A damaged ``value`` or ``protocol_json`` keeps
        the row with both set to None and ``rec["damaged"]`` saying why.
        """
        rid, run_dir = rec["run_id"], rec["run_dir"]
        for col in ("evaluator", "name"):
            why = type_problem(col, rec[col])
            if why:
                self.note(rid, run_dir, f"metrics.{col}", why, f"metric row {rec['metric_id']}",
                          outcome="that metric is skipped")
                return False
        what = f"evaluator {rec['evaluator']!r}, metric {rec['name']!r}"
        for col, why in (("metrics.protocol_json", json_problem(rec["protocol_json"])),
                         ("metrics.value", metric_value_problem(rec["name"], rec["value"]))):
            if why:
                self.note(rid, run_dir, col, why, what, outcome="shown as damaged, not as a number")
                rec.update(value=None, protocol_json=None, damaged=f"{col}: {why}")
                return True
        return True
