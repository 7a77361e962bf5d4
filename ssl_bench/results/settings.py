"""The settings that decide what a run's numbers mean, read back from its stored records.

Two runs may be shown side by side only when they were trained and scored the same way: on the same
images (the data settings of the run's config) and by the same probes (the built-in evaluators'
protocol records). A model trained and scored on 1,000 images, or probed for 90 epochs, is never put
next to baselines scored on 200 images, or probed for 3.
"""

from __future__ import annotations

import json
from typing import Any

#: Dataset options that cannot change which images a run trains and is scored on: where the files
#: are, how many loader processes read them, whether a missing copy may be downloaded (the dataset
#: keys a resume may change, plus ``download``, which a resume never needs). Every other dataset
#: option (``limit_train``, ``image_size``, a plugin dataset's own options) tells data apart.
DATA_KEYS_NOT_CHANGING_IMAGES: frozenset[str] = frozenset({"name", "data_root", "num_workers", "download"})
#: Options that take a subset of the dataset: a run with one set is not on the paper's data.
SUBSET_KEYS: tuple[str, ...] = ("limit_train", "limit_test")
#: Built-in evaluator -> the protocol-record keys that are settings changing its headline number
#: (the rest of a record are facts: sizes, device, derived step counts, references). The linear
#: probe's ``lr`` counts only when it was given (``lr_rule == "given"``), else it follows from
#: ``blr`` and the batch; k-NN's ``ks`` only add columns, the k=20 one is checked on its own.
EVAL_SETTING_KEYS: dict[str, tuple[str, ...]] = {
    "linear": (
        "protocol", "optimizer", "epochs", "warmup_epochs", "batch_size_requested", "blr", "min_lr",
        "weight_decay", "momentum", "trust_coefficient", "betas", "bn_eps", "init_std", "drop_last",
        "crop_scale", "flip_p",
    ),
    "knn": ("temperature", "normalisation"),
}

#: Sorted ``(key, JSON value)`` pairs: hashable, comparable, and equal exactly when the settings are.
Settings = tuple[tuple[str, str], ...]


def data_settings(config: Any) -> Settings:
    """A run's dataset options that decide its images, as sorted ``(key, JSON value)`` pairs.

    ``config`` is the run's stored config (dict or JSON text). Two runs whose numbers may be set side
    by side have equal settings; see :data:`DATA_KEYS_NOT_CHANGING_IMAGES`.
    """
    if isinstance(config, str):
        config = json.loads(config or "{}")
    dataset = (config or {}).get("dataset") or {}
    if not isinstance(dataset, dict):
        return ()
    return tuple(
        sorted((k, json.dumps(v, sort_keys=True)) for k, v in dataset.items() if k not in DATA_KEYS_NOT_CHANGING_IMAGES)
    )


def eval_settings(protocols: dict[str, dict[str, Any]], evaluators: dict[str, str]) -> Settings:
    """The built-in probes' settings a run was scored with, as sorted ``("linear.epochs", JSON)`` pairs.

    ``protocols`` / ``evaluators``: metric name -> protocol record / evaluator name. Read from the
    metrics' own records, not the run's config, because ``ssl-bench eval`` may re-score a run with
    other probe settings.
    """
    pairs: dict[str, str] = {}
    for metric, evaluator in evaluators.items():
        keys = EVAL_SETTING_KEYS.get(evaluator)
        record = protocols.get(metric) or {}
        if keys is None or not isinstance(record, dict):
            continue
        for key in keys:
            if key in record:
                pairs[f"{evaluator}.{key}"] = json.dumps(record[key], sort_keys=True)
        if evaluator == "linear" and record.get("lr_rule") == "given" and "lr" in record:
            pairs["linear.lr"] = json.dumps(record["lr"])
    return tuple(sorted(pairs.items()))


def merge_partial_settings(variants: set[Settings]) -> dict[Settings, Settings]:
    """Each settings tuple -> the one it is shown under.

    A run scored by fewer evaluators (no linear probe, say) records fewer settings; it belongs with the
    runs whose settings agree on every key it has, not in a group of its own. Larger settings come
    first, so a partial one joins the first (sorted) complete one it agrees with.
    """
    out: dict[Settings, Settings] = {}
    groups: list[Settings] = []
    for variant in sorted(variants, key=lambda v: (-len(v), v)):
        items = set(variant)
        home = next((g for g in groups if items <= set(g)), None)
        if home is None:
            groups.append(variant)
            home = variant
        out[variant] = home
    return out


def subset_of(settings: Settings) -> dict[str, Any]:
    """The subset options (``limit_train`` / ``limit_test``) set to something other than None."""
    values = {k: json.loads(v) for k, v in settings}
    return {k: values[k] for k in SUBSET_KEYS if values.get(k) is not None}


def setting_text(value_json: str | None) -> str:
    """A stored setting as ``--set`` would take it (None when the run did not set it)."""
    if value_json is None:
        return "None"
    value = json.loads(value_json)
    return "None" if value is None else str(value)
