"""The harness's own components, registered through the `ssl_bench` entry point like any plugin."""

from __future__ import annotations

from ssl_bench.hookspecs import hookimpl


@hookimpl
def ssl_bench_tokenizers():
    from ssl_bench.components.tokenizers import BUILTIN_TOKENIZERS

    return dict(BUILTIN_TOKENIZERS)


@hookimpl
def ssl_bench_corruptions():
    from ssl_bench.components.masking import RandomMasking
    from ssl_bench.components.noise import AdditiveLatentNoise

    return {"random-masking": RandomMasking, "additive-latent-noise": AdditiveLatentNoise}


@hookimpl
def ssl_bench_noise_schedules():
    from ssl_bench.components.schedules import BUILTIN_SCHEDULES

    return dict(BUILTIN_SCHEDULES)


@hookimpl
def ssl_bench_targets():
    from ssl_bench.components.latent_targets import BUILTIN_LATENT_TARGETS
    from ssl_bench.components.targets import NormalizedPixelTarget

    return {"norm-pix": NormalizedPixelTarget, **BUILTIN_LATENT_TARGETS}


@hookimpl
def ssl_bench_backbones():
    from ssl_bench.components.backbones import VIT_SIZES, make_vit_factory

    return {name: make_vit_factory(name) for name in VIT_SIZES}


@hookimpl
def ssl_bench_datasets():
    from ssl_bench.data.datasets import BUILTIN_DATASETS

    return dict(BUILTIN_DATASETS)


@hookimpl
def ssl_bench_evaluators():
    from ssl_bench.eval.knn import KNNEvaluator
    from ssl_bench.eval.linear_probe import LinearProbeEvaluator

    return {"knn": KNNEvaluator, "linear": LinearProbeEvaluator}
