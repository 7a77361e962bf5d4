"""Our linear-probe numbers next to the l-DAE paper's Table 4.

Chen, Liu, Xie, He, "Deconstructing Denoising Diffusion Models for Self-Supervised Learning" (2024),
Table 4: ImageNet-1k linear-probe top-1 of MoCo v3, MAE and l-DAE at ViT-B and ViT-L. A ``notes``
column flags where our settings differ from the paper's (data, epochs, backbone, the probe), so a
1-epoch Fashion-MNIST smoke run, or a probe on cached features, is never mistaken for a reproduction.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import pandas as pd

from .columns import DAMAGED_CELLS_ATTR
from .queries import LatestRun, equals_int
from .records import BASELINE_METHOD_NAMES
from .rows import ConfigRow, configuration_rows
from .stats import mean_sd
from .store import ResultsStore

#: l-DAE paper, Table 4: ImageNet-1k linear-probe top-1 (%).
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "mocov3": {"vit-b": 76.7, "vit-l": 77.6},
    "mae": {"vit-b": 68.0, "vit-l": 75.8},
    "ldae": {"vit-b": 66.6, "vit-l": 75.0},
}
#: Pre-training epochs behind the paper numbers (MAE / l-DAE 1600, MoCo v3 300).
PAPER_EPOCHS: dict[str, int] = {"mocov3": 300, "mae": 1600, "ldae": 1600}
PAPER_DATASET = "ImageNet-1k"
#: The paper's linear probe (MAE's): augmented images (RandomResizedCrop + flip), LARS, batch 16384,
#: 90 epochs. Ours trains on cached, un-augmented features unless a run's linear protocol record says
#: ``"protocol": "augmented"``; the notes say so.
PAPER_PROBE: dict[str, Any] = {"protocol": "augmented", "optimizer": "lars", "batch_size": 16384, "epochs": 90}
PAPER_BACKBONES: tuple[str, ...] = ("vit-b", "vit-l")

IMAGENET1K_NAMES: frozenset[str] = frozenset({"imagenet", "imagenet-1k", "imagenet1k", "in1k", "in-1k", "ilsvrc2012"})
BACKBONE_ALIASES: dict[str, str] = {
    "vit-base": "vit-b", "vit-b-16": "vit-b", "vit-b/16": "vit-b",
    "vit-large": "vit-l", "vit-l-16": "vit-l", "vit-l/16": "vit-l",
}


def canon_backbone(name: str | None) -> str:
    b = (name or "").lower().replace("_", "-")
    return BACKBONE_ALIASES.get(b, b)


def canon_method(name: str) -> str:
    """Map spelling variants (moco-v3, l_dae) onto the paper keys; others unchanged."""
    squashed = name.lower().replace("-", "").replace("_", "")
    return squashed if squashed in PAPER_TABLE4 else name


def is_imagenet1k(dataset: str | None) -> bool:
    return (dataset or "").lower().replace("_", "-") in IMAGENET1K_NAMES


def _ep(n: Any) -> str:
    return f"{n} ep" if n is not None else "? ep"


def probe_note(e: LatestRun) -> str | None:
    """How the run's linear probe differs from the paper's (:data:`PAPER_PROBE`), or None.

    Only what the probe's protocol record states is compared, except the data: a record without
    ``"protocol": "augmented"`` is a probe on cached (un-augmented) features, which is what the
    built-in evaluator does.
    """
    proto = e.protocols.get("linear_top1")
    if e.linear() is None or proto is None:
        return None
    ours: list[str] = []
    paper: list[str] = []
    data = proto.get("protocol")
    if data != PAPER_PROBE["protocol"]:
        ours.append("cached features" if data in (None, "cached") else str(data))
        paper.append(str(PAPER_PROBE["protocol"]))
    opt = proto.get("optimizer")
    if opt is not None and str(opt).lower() != PAPER_PROBE["optimizer"]:
        ours.append(str(opt))
        paper.append(PAPER_PROBE["optimizer"].upper())
    batch = proto.get("batch_size")
    if batch is not None and not equals_int(batch, PAPER_PROBE["batch_size"]):
        ours.append(f"batch {batch}")
        paper.append(f"batch {PAPER_PROBE['batch_size']}")
    epochs = proto.get("epochs")
    if epochs is not None and not equals_int(epochs, PAPER_PROBE["epochs"]):
        ours.append(_ep(epochs))
        paper.append(_ep(PAPER_PROBE["epochs"]))
    if not ours:
        return None
    return f"probe: {', '.join(ours)} vs paper {', '.join(paper)}"


def setting_note(method: str, backbone: str, e: LatestRun) -> str | None:
    """How ``e``'s settings (data, schedule, backbone, linear probe) differ from the paper's, or None."""
    if method not in PAPER_TABLE4:
        return "not in paper Table 4"
    notes = []
    paper_ep = PAPER_EPOCHS[method]
    paper_bb = backbone in PAPER_BACKBONES
    subset = e.subset()
    if not (is_imagenet1k(e.dataset) and not subset and e.epochs == paper_ep and paper_bb):
        ours = [] if paper_bb else [f"{e.backbone}"]
        data = e.dataset or "?"
        if subset:
            data += " subset (" + ", ".join(f"{k}={v}" for k, v in subset.items()) + ")"
        ours += [data, _ep(e.epochs)]
        paper = [] if paper_bb else ["ViT-B/ViT-L"]
        paper += [PAPER_DATASET, _ep(paper_ep)]
        notes.append(f"ours: {', '.join(ours)}; paper: {', '.join(paper)}")
    probe = probe_note(e)
    if probe:
        notes.append(probe)
    return "; ".join(notes) or None


def pick(cands: list[LatestRun]) -> LatestRun | None:
    """Prefer an ImageNet-1k run (the paper's setting), then one on the whole dataset (no
    ``limit_train`` / ``limit_test``), then one with a linear probe, then the most recent."""
    if not cands:
        return None
    return max(cands, key=lambda e: (is_imagenet1k(e.dataset), not e.subset(), e.linear() is not None, e.run_id))


def _ordered(first: Iterable[str], present: Iterable[str], key: Callable[[str], Any]) -> list[str]:
    out = list(first)
    out += sorted({p for p in present if p not in out}, key=key)
    return out


def build_table4(store: ResultsStore) -> pd.DataFrame:
    """Our linear top-1 next to the paper's Table 4, one row per method.

    Columns: ``method``, then ``<backbone> ours`` (the mean over the seeds of the chosen
    configuration), ``<backbone> ours sd`` (n >= 2), ``<backbone> n`` and ``<backbone> paper`` for
    vit-b, vit-l and any other backbone present, then ``notes``. md / html show ``mean ± sd``. A note is written whenever our dataset, epochs or backbone
    differ from the paper's. A damaged stored linear top-1 is NaN, listed in
    ``df.attrs["damaged_cells"]``.
    """
    by_key: dict[tuple[str, str], list[LatestRun]] = {}
    row_of: dict[int, ConfigRow] = {}  # run id -> its configuration (the seeds beside it)
    for r in configuration_rows(store):
        for e in r.runs:
            row_of[e.run_id] = r
            by_key.setdefault((canon_method(e.method), canon_backbone(e.backbone)), []).append(e)
    methods = _ordered(PAPER_TABLE4, (m for m, _ in by_key), key=lambda m: (m not in BASELINE_METHOD_NAMES, m))
    backbones = _ordered(PAPER_BACKBONES, (b for _, b in by_key), key=str)

    rows = []
    damaged: list[tuple[int, str]] = []
    for i, method in enumerate(methods):
        row: dict[str, Any] = {"method": method}
        notes: list[tuple[str, str]] = []
        n_runs = 0
        for bb in backbones:
            e = pick(by_key.get((method, bb), []))
            n_runs += e is not None
            seeds = [] if e is None else row_of[e.run_id].values("linear_top1")  # every seed of the picked configuration
            mean, sd = mean_sd(seeds) if seeds else (None, None)
            row[f"{bb} ours"] = None if mean is None else round(100.0 * mean, 1)
            row[f"{bb} ours sd"] = None if sd is None else round(100.0 * sd, 1)
            row[f"{bb} n"] = len(seeds)
            if e is not None and "linear_top1" in e.damaged:
                damaged.append((i, f"{bb} ours"))
            row[f"{bb} paper"] = PAPER_TABLE4.get(method, {}).get(bb)
            note = None if e is None else setting_note(method, bb, e)
            if note:
                notes.append((bb, note))
        # A note shared by every backbone we ran is stated once; otherwise each is prefixed by its
        # backbone so it is clear which number it qualifies.
        if len({n for _, n in notes}) == 1 and len(notes) == n_runs:
            row["notes"] = notes[0][1]
        else:
            row["notes"] = " | ".join(f"{bb}: {n}" for bb, n in notes)
        rows.append(row)
    columns = ["method"] + [f"{bb} {w}" for bb in backbones for w in ("ours", "ours sd", "n", "paper")] + ["notes"]
    df = pd.DataFrame(rows, columns=columns)
    for col in columns[1:-1]:
        df[col] = df[col].astype("Int64" if col.endswith(" n") else "float64")
    df.attrs[DAMAGED_CELLS_ATTR] = damaged
    return df
