"""k-NN classification time for N train features: faiss vs torch vs scikit-learn (same predictions).

    python benchmarks/knn_speed.py [--n 10000 50000] [--m 10000] [--dim 384] [--save]
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from common import save_result  # noqa: E402

from ssl_bench.eval.knn import faiss_available, knn_predict  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="*", default=[10000, 50000])
    p.add_argument("--m", type=int, default=10000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--save", action="store_true")
    args = p.parse_args()
    dev = torch.device(args.device)
    backends = (["faiss"] if faiss_available() else []) + ["torch"] + (["sklearn"] if dev.type == "cpu" else [])
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in args.n:
        train = torch.randn(n, args.dim, generator=g).to(dev)
        labels = torch.randint(0, args.classes, (n,), generator=g).to(dev)
        test = torch.randn(args.m, args.dim, generator=g).to(dev)
        preds = {}
        for backend in backends:
            t0 = time.perf_counter()
            preds[backend] = knn_predict(train, labels, test, args.classes, backend=backend)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
            agree = min(float((preds[backend][k].cpu() == preds[backends[0]][k].cpu()).float().mean()) for k in preds[backend])
            rows.append({"N train": n, "M test": args.m, "dim": args.dim, "backend": backend,
                         "seconds": round(elapsed, 3), "agreement with first backend": round(agree, 5)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    if args.save:
        path = save_result("knn_speed", table, dev, "python " + " ".join(sys.argv))
        print(f"saved {path}")


if __name__ == "__main__":
    main()
