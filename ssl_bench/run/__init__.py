"""One run path: build, train, score and record, each written once.

* ``assemble``: the resolved config of a method, and its parts, backbone and method built from it;
* ``build``: the dataset (loaded and checked once), the evaluators (built once), the model (weights
  loaded once);
* ``score``: the one scoring sequence (features -> image evaluators -> feature evaluators -> the
  method's own evaluations), used by new runs, resumes, ``ssl-bench eval`` and the baselines;
* ``ledger``: the results store opened once, the run's row, its directory, and the one context that
  marks a stopped run failed or interrupted;
* ``resume``: which run a resume continues, with which config, and the command that continues it;
* ``runs``: a method's run (new or resumed) and the re-scoring of a trained run;
* ``baselines``: pixels and random-init, claimed atomically and scored like a method;
* ``sweep``: a grid of settings run on a validation split, selected on it, the choice scored on test.
"""

from ssl_bench.run.assemble import build_backbone, build_method, method_config
from ssl_bench.run.baselines import baseline_identity, run_baseline
from ssl_bench.run.build import BuiltEvaluator, build_evaluators, build_model, load_dataset, validate_dataset
from ssl_bench.run.ledger import StoreOnUse, open_store
from ssl_bench.run.resume import RESUME_FREE_KEYS, resume_command, resume_dir
from ssl_bench.run.runs import Checked, RunOutcome, check_run, evaluate_run, load_trained_method, run_method
from ssl_bench.run.sweep import SweepResult, parse_grid, run_sweep, select_setting, sweep_report

__all__ = [
    "RESUME_FREE_KEYS",
    "BuiltEvaluator",
    "Checked",
    "RunOutcome",
    "SweepResult",
    "StoreOnUse",
    "baseline_identity",
    "build_backbone",
    "build_evaluators",
    "build_method",
    "build_model",
    "check_run",
    "evaluate_run",
    "load_dataset",
    "load_trained_method",
    "method_config",
    "open_store",
    "parse_grid",
    "resume_command",
    "resume_dir",
    "run_baseline",
    "run_method",
    "run_sweep",
    "select_setting",
    "sweep_report",
    "validate_dataset",
]
