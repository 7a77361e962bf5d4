"""A run's row identity: its method plus every training setting that differs from that method's
defaults, and the short label the leaderboard shows for it.

``ssl-bench run mae`` and ``ssl-bench run mae --set method.corruption.name=additive-latent-noise``
are two configurations, so two rows: ``mae`` and ``mae · corruption=additive-latent-noise``. Runs
of one row share everything but the seed. The settings that are not part of the identity are the
ones the leaderboard keeps apart by themselves (the dataset options and the probes' protocols, see
``ssl_bench.results.settings``), and those that cannot change a number (where the run writes, the
device, loader processes, checkpoint cadence). ``name`` (``--name``) replaces the label, never the
settings: two configurations never share a row because they share a name.
"""

from __future__ import annotations

import json
from typing import Any

from ssl_bench.config import flat_keys
from ssl_bench.run.assemble import method_config
from ssl_bench.run.resume import comparable

#: Config keys (and their sub-keys) that never make a configuration another row.
NOT_IDENTITY: tuple[str, ...] = (
    "seed", "out", "name", "sweep", "dataset", "eval", "deconstruct", "method.name", "backbone.name",
    "train.device", "train.num_workers", "train.checkpoint_every",
)
#: Prefixes dropped from a key in the short label (``method.corruption.name`` -> ``corruption``).
LABEL_PREFIXES: tuple[str, ...] = ("method.", "train.")
#: Identity settings the table shows in a column of their own, so the label leaves them out.
LABEL_OMITS: tuple[str, ...] = ("train.epochs",)
#: The order of a label's settings after the replaced parts, by top-level key.
LABEL_ORDER: tuple[str, ...] = ("method", "train", "backbone")
#: Most settings spelled out in a label; the rest are counted (the full list is in csv / html).
LABEL_ITEMS = 3
#: Between the method and its settings in a label.
LABEL_SEPARATOR = " · "


def _is_identity(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_IDENTITY)


def differing_settings(cfg: Any, default: Any) -> dict[str, Any]:
    """``{flat key: value}`` of ``cfg``'s identity settings whose value is not the default's.

    Values as JSON stores them (tuples are lists). A key the default lacks (an option of a part that
    replaced the default one) counts; a default key the config lacks (an option of the replaced part)
    does not: it is not a setting of this run.
    """
    mine, base = flat_keys(comparable(cfg)), flat_keys(comparable(default))
    return {k: v for k, v in sorted(mine.items()) if _is_identity(k) and (k not in base or base[k] != v)}


def short_key(key: str) -> str:
    """``method.corruption.name`` -> ``corruption``; ``train.blr`` -> ``blr``; others unchanged."""
    for prefix in LABEL_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key[: -len(".name")] if key.endswith(".name") else key


def value_text(value: Any) -> str:
    """A setting's value as ``--set`` takes it: strings bare, numbers short, lists as tuples."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "(" + ",".join(value_text(v) for v in value) + ")"
    return str(value)


def row_label(method: str, settings: dict[str, Any], name: str | None = None) -> str:
    """The label a row is shown under: ``name`` when given, else the method and what differs.

    A part replaced by name (``corruption=additive-latent-noise``) stands for its options, which
    follow from it; options set beside it are spelled out. Replaced parts come first, then method,
    training and backbone settings (what a comparison is usually about first). The epochs have their own column. At most :data:`LABEL_ITEMS` settings are
    written, then ``+N more``.
    """
    if name:
        return str(name).strip()
    settings = {k: v for k, v in settings.items() if k not in LABEL_OMITS}
    if not settings:
        return method
    renamed = [k[: -len(".name")] for k in settings if k.endswith(".name")]
    shown = [k for k in settings if k.endswith(".name") or not any(k.startswith(p + ".") for p in renamed)]
    shown.sort(key=lambda k: (not k.endswith(".name"), LABEL_ORDER.index(k.split(".")[0]) if k.split(".")[0] in LABEL_ORDER else 99, k))
    items = [f"{short_key(k)}={value_text(settings[k])}" for k in shown]
    more = len(items) - LABEL_ITEMS
    text = ", ".join(items[:LABEL_ITEMS]) + (f", +{more} more" if more > 0 else "")
    return f"{method}{LABEL_SEPARATOR}{text}"


def variant_record(label: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What the store keeps in ``runs.variant_json``."""
    return {"label": label, "settings": json.loads(json.dumps(settings, sort_keys=True, default=str))}


def variant_of(cfg: Any, method: str, registry: Any, prefix: str = "") -> dict[str, Any]:
    """The row identity of a run of ``method`` with the resolved ``cfg``: compared with the method's
    defaults resolved the same way (``method_config`` with no user layer). ``prefix`` starts the
    label (``random-init:`` for a method's own untrained network)."""
    settings = differing_settings(cfg, method_config(method, registry))
    return variant_record(prefix + row_label(method, settings, cfg.get("name")), settings)


def baseline_variant(name: str, cfg: Any, own: str | None, registry: Any) -> dict[str, Any]:
    """The row identity of a baseline scored beside ``cfg``'s runs.

    ``pixels`` has none: it is the same for every configuration. The plain ``random-init`` network
    depends only on the backbone options; a method's own untrained network (``random-init:<method>``)
    on the whole configuration, so it sits beside exactly the row it belongs to.
    """
    if name == "pixels":
        return variant_record("pixels", {})
    method = own or str(cfg.method.name)
    full = variant_of(cfg, method, registry)
    if own is not None:
        return variant_record(f"random-init:{full['label']}", full["settings"])
    settings = {k: v for k, v in full["settings"].items() if k.startswith("backbone.")}
    return variant_record(row_label("random-init", settings), settings)
