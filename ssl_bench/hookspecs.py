"""pluggy hook specifications: one hook per component kind.

A plugin module (found through the ``ssl_bench`` entry-point group) implements any of these hooks
with ``@hookimpl`` and returns ``{name: factory}``. The registry calls every implementation on its
own, so it knows which package provided which name and can report clashes precisely.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "ssl_bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Factories = dict[str, Callable[..., Any]]


class ComponentSpecs:
    """Each hook returns a mapping from public component name to its class or factory."""

    @hookspec
    def ssl_bench_methods(self) -> Factories:
        """Training methods (`Method` subclasses)."""

    @hookspec
    def ssl_bench_tokenizers(self) -> Factories:
        """Image <-> latent token maps (`Tokenizer` subclasses)."""

    @hookspec
    def ssl_bench_corruptions(self) -> Factories:
        """Input corruptions: masking, additive latent noise (`Corruption` subclasses)."""

    @hookspec
    def ssl_bench_noise_schedules(self) -> Factories:
        """Noise schedules gamma_t / sigma_t (`NoiseSchedule` subclasses)."""

    @hookspec
    def ssl_bench_targets(self) -> Factories:
        """Regression targets with per-element weights (`Target` subclasses)."""

    @hookspec
    def ssl_bench_backbones(self) -> Factories:
        """Encoders built on timm (factories returning a `Backbone`)."""

    @hookspec
    def ssl_bench_datasets(self) -> Factories:
        """Dataset loaders returning an `ImageDataset`."""

    @hookspec
    def ssl_bench_evaluators(self) -> Factories:
        """Frozen-feature evaluators (k-NN, linear probe, ...)."""


# kind (as shown to users) -> hook name
KIND_HOOKS: dict[str, str] = {
    "method": "ssl_bench_methods",
    "tokenizer": "ssl_bench_tokenizers",
    "corruption": "ssl_bench_corruptions",
    "noise-schedule": "ssl_bench_noise_schedules",
    "target": "ssl_bench_targets",
    "backbone": "ssl_bench_backbones",
    "dataset": "ssl_bench_datasets",
    "evaluator": "ssl_bench_evaluators",
}
