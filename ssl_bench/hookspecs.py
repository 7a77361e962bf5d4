"""pluggy hook specifications: one hook per component kind, plus one for CLI subcommands.

A plugin module (found through the ``ssl_bench`` entry-point group) implements any of these hooks
with ``@hookimpl`` and returns ``{name: factory}`` (or ``{name: command}`` for
``ssl_bench_commands``). The registry calls every implementation on its own, so it knows which
package provided which name and can report clashes precisely.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Protocol, runtime_checkable

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


@runtime_checkable
class Command(Protocol):
    """What `ssl_bench_commands` returns per name: one `ssl-bench NAME ...` subcommand.

    Three members, so a plugin needs no base class from us:
    ``help`` (one line for `ssl-bench --help`), ``add_arguments(parser)`` (declare the options on
    the subcommand's own argparse parser) and ``run(args) -> int`` (the exit code; ``None`` counts
    as 0). An optional ``description`` string is shown by `ssl-bench NAME --help` instead of
    ``help``. The hook may return a class instead of an instance: it is instantiated once, with no
    arguments, when the registry is built.
    """

    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int | None: ...


class CommandSpecs:
    """Subcommands of the `ssl-bench` CLI, so a plugin can ship its own workflow (e.g. a chain of runs)."""

    @hookspec
    def ssl_bench_commands(self) -> dict[str, Command]:
        """Extra subcommands: ``{name: command}`` with ``command`` a `Command` (instance or class).

        `ssl-bench NAME ...` parses the options `add_arguments` declared and calls ``run(args)``.
        A name that is a built-in subcommand (run, list, eval, leaderboard, sample, ...) or that
        another package also registers is disabled with a warning, like any component name clash.
        ``SSLBenchError`` raised by ``run`` is printed as the usual one-line error; any other
        exception is reported as a failure of the providing package.
        """


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

#: The parts of a reconstruction method: method config key -> registry kind, in build order (the
#: tokenizer's and target's constructors may draw random initial weights: this order is part of a
#: seed's contract). Each is named in the config as ``method.<key> = dict(name=..., **options)``.
PART_KINDS: dict[str, str] = {
    "noise_schedule": "noise-schedule",
    "tokenizer": "tokenizer",
    "corruption": "corruption",
    "target": "target",
}

#: registry kind -> the keywords the pipeline passes a part's factory (only those its signature
#: names), besides the user's options: the geometry and the parts built before it. A user cannot set
#: them (``ssl_bench.components.base`` documents what each one is).
PART_CONTEXT: dict[str, tuple[str, ...]] = {
    "noise-schedule": (),
    "tokenizer": ("image_size", "patch_size", "channels"),
    "corruption": ("schedule",),
    "target": ("schedule", "tokenizer", "image_size", "patch_size", "channels"),
}

# Commands are not components (nothing builds them from a config), so they get their own kind and table.
COMMAND_KIND = "command"
COMMAND_HOOK = "ssl_bench_commands"
#: The CLI's own subcommands: a plugin command of one of these names is disabled (a name clash with
#: the built-in). ``ssl_bench.cli`` builds exactly these; a test keeps the two lists equal.
BUILTIN_COMMAND_NAMES: tuple[str, ...] = ("run", "list", "eval", "leaderboard", "compare", "sweep")

# Every hook a plugin may implement: a module function starting with `ssl_bench_` that is not one
# of these is reported as a misspelt hook (it would silently never be called).
HOOK_NAMES: frozenset[str] = frozenset([*KIND_HOOKS.values(), COMMAND_HOOK])
