"""Everything a run needs, built and checked once before anything is written.

The dataset is loaded once per command and checked once per config (at least 2 classes, every test
class seen in training, enough training images for k-NN); the evaluators are built once per config
(a bad option fails before training, not after it); the method comes from its resolved parts
(``ssl_bench.run.assemble``) and a checkpoint's weights are loaded into it once, strictly, so a
mismatch fails before anything is written.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from ssl_bench.data.validation import DEFAULT_VAL_SEED, with_validation
from ssl_bench.errors import ConfigError
from ssl_bench.methods.parts import keyword_options
from ssl_bench.run.assemble import build_method
from ssl_bench.train.resume import load_weights


@dataclass(frozen=True)
class BuiltEvaluator:
    """A configured evaluator and the package that provides it (named when it misbehaves)."""

    name: str
    evaluator: Any
    package: str

    @property
    def needs_images(self) -> bool:
        """It trains on augmented images through the model (the augmented linear probe), not on cached features."""
        return bool(getattr(self.evaluator, "needs_images", False))


def build_evaluators(cfg: Any, registry: Any) -> list[BuiltEvaluator]:
    """The configured evaluators (``cfg.eval.evaluators``), constructed with their options."""
    out = []
    for name in cfg.eval.evaluators:
        entry = registry.entry("evaluator", name)
        options = dict(cfg.eval.get(name) or {})
        if "seed" in inspect.signature(entry.obj).parameters:
            options["seed"] = cfg.seed
        try:
            out.append(BuiltEvaluator(name, entry.obj(**options), entry.package))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"eval.{name}: {exc}") from None
    return out


#: Dataset keys the run path applies itself (the validation split), never handed to a loader.
SPLIT_KEYS = ("val_fraction", "val_seed")


def load_dataset(cfg: Any, registry: Any) -> Any:
    """The configured dataset; an option its loader does not take is one line naming it.

    With ``dataset.val_fraction`` a stratified validation split (seeded by ``dataset.val_seed``) is
    moved out of the training split here, once for every command, so nothing downstream trains on it.
    """
    dcfg = cfg.dataset
    loader = registry.get("dataset", dcfg.name)
    options = {k: v for k, v in dcfg.items() if k not in ("name", "data_root", *SPLIT_KEYS) and v is not None}
    names, takes_any = keyword_options(loader)
    bad = [] if takes_any else sorted(set(options) - names)
    if bad:
        takes = sorted(names - {"data_root"})
        raise ConfigError(
            f"dataset {dcfg.name!r} does not take option(s) {', '.join(bad)} (it takes: {', '.join(takes)}); "
            "they probably come from a config written for another dataset. Drop them with --set "
            + " ".join(f"dataset.{k}=None" for k in bad)
        )
    dataset = loader(dcfg.get("data_root"), **options)
    fraction = dcfg.get("val_fraction")
    if fraction is None:
        return dataset
    seed = dcfg.get("val_seed")
    return with_validation(dataset, fraction, DEFAULT_VAL_SEED if seed is None else seed)


def validate_dataset(dataset: Any, cfg: Any) -> None:
    """Refuse data that cannot give a meaningful number (one line naming the problem and the fix)."""
    name = cfg.dataset.name
    train_y, test_y = dataset.train.labels, dataset.test.labels
    if dataset.info.num_classes < 2 or len(set(train_y.tolist())) < 2:
        raise ConfigError(
            f"dataset {name!r} has {len(set(train_y.tolist()))} class(es) in its training split: a probe on one class "
            "scores 100% and means nothing. Use a dataset (or --set dataset.limit_train) with at least 2 classes"
        )
    if len(test_y) == 0:
        raise ConfigError(f"dataset {name!r} has an empty test split; nothing can be scored. Check the val/ or test data")
    split = cfg.eval.get("split", "test")
    if split == "val" and getattr(dataset, "val", None) is None:
        raise ConfigError(f"eval.split='val' but dataset {name!r} has no validation split; set dataset.val_fraction (e.g. 0.1)")
    missing = sorted(set(test_y.tolist()) - set(train_y.tolist()))
    if missing:
        raise ConfigError(
            f"dataset {name!r}: test class(es) {missing[:10]} never occur in the training split, so no probe can predict "
            "them; use the full training split or a larger dataset.limit_train"
        )
    if "knn" in cfg.eval.evaluators:
        ks = tuple((cfg.eval.get("knn") or {}).get("ks") or (20,))
        if len(train_y) < max(ks):
            raise ConfigError(
                f"k-NN with k up to {max(ks)} needs at least {max(ks)} training images, dataset {name!r} has {len(train_y)}; "
                f"lower eval.knn.ks (e.g. --set \"eval.knn.ks=(10,20)\") or use more data"
            )


def build_model(cfg: Any, registry: Any, info: Any, state: dict[str, Any] | None = None, where: Any = None) -> Any:
    """The method for ``cfg`` on a dataset with ``info``; with a checkpoint ``state`` its weights are
    loaded here, once (training then restores only the optimiser and its position)."""
    model = build_method(cfg, registry, info)
    if state is not None:
        load_weights(model, state, where)
    return model


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes) of ``model``.

    The features cache is keyed by it: features extracted from other weights (an earlier
    checkpoint of the same run, a resume that trained on) are never scored as this model's."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
