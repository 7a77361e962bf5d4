"""The linear probe's optimiser on a small dataset: LARS (MAE's ImageNet choice) vs SGD on the pixels
baseline, through the run path's own scoring (the ``pixels`` baseline of ``ssl-bench run``).

The choice is made on a validation split: 10% of the training images held back (stratified, the same
for every seed and optimiser; ``dataset.val_fraction=0.1``), the probe trained on the rest and
scored on those (``eval.split=val``); no test image is read. Pixels are deterministic features, so
the seed only moves the probe (head init, shuffles): the spread over seeds is the probe's own. Each
(optimiser, seed) gets a fresh results store, so nothing is reused.

    python benchmarks/probe_optimizer.py [--dataset digits] [--seeds 0 1 2] [--save]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, device_description  # noqa: E402

from ssl_bench.registry import get_registry  # noqa: E402
from ssl_bench.results import ResultsStore  # noqa: E402
from ssl_bench.run import method_config, run_baseline  # noqa: E402

OPTIMIZERS = ("lars", "sgd")


def probe_top1(dataset: str, optimizer: str, seed: int, device: torch.device) -> float:
    """Validation linear top-1 (%) of the pixels baseline with ``eval.linear.optimizer=optimizer`` and ``seed``."""
    registry = get_registry()
    with tempfile.TemporaryDirectory() as tmp:
        # any method's config: the pixels baseline reads only the dataset and eval keys
        cfg = method_config("mae", registry, cli={"dataset.name": dataset, "seed": seed, "out": tmp},
                            set_items=[f"eval.linear.optimizer={optimizer}", "eval.evaluators=['linear']",
                                       "dataset.val_fraction=0.1", "eval.split=val"])
        store = ResultsStore(Path(tmp) / "results.db")
        out = run_baseline("pixels", cfg, store, None, device, registry=registry)
        return 100.0 * out.metrics["val_linear_top1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--save", action="store_true", help="write benchmarks/results/probe_optimizer_<dataset>-<date>-cpu.md")
    args = p.parse_args()
    device = torch.device("cpu")
    rows = []
    for opt in OPTIMIZERS:
        accs = [probe_top1(args.dataset, opt, s, device) for s in args.seeds]
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        rows.append({"optimizer": opt, **{f"seed {s}": round(a, 1) for s, a in zip(args.seeds, accs)},
                     "mean ± sd": f"{statistics.mean(accs):.1f} ± {sd:.1f}"})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    if args.save:
        today = dt.date.today().isoformat()
        path = RESULTS / f"probe_optimizer_{args.dataset.replace('-', '_')}-{today}-cpu.md"
        path.write_text(
            f"# Linear-probe optimiser on {args.dataset}: LARS vs SGD (pixels baseline), validation accuracy\n\n"
            f"- date: {today}\n- device: {device_description(device)}\n- torch: {torch.__version__}\n"
            f"- seeds: {' '.join(map(str, args.seeds))} (the probe's seed: head init and shuffles; "
            "pixels are deterministic)\n- split: validation (10% of the training images, stratified, "
            "`dataset.val_fraction=0.1`, `eval.split=val`); no test image is read\n"
            f"- command: `OMP_NUM_THREADS={torch.get_num_threads()} python {' '.join(sys.argv)}`\n\n{table}\n"
        )
        print(f"saved {path}")


if __name__ == "__main__":
    main()
