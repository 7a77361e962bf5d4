"""Composition is real for every part kind: every (tokenizer x corruption x target) of the built-ins
and of the example third-party plugin (a block-masking corruption and a Sobel-edge target,
registered from examples/ssl-bench-example without installing it) either trains two steps under
both built-in networks (MAE's ViT encoder/decoder and l-DAE's DiT), or is refused when the method
is built with a ConfigError that names both parts and why (never a shape error mid-step).

Which combinations are refused is stated here, from what each part records and needs (not read
from the code's own decision), so a wrongly refused and a wrongly accepted combination both fail.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from ssl_bench.config import config_to_json
from ssl_bench.errors import ConfigError
from ssl_bench.registry import build_registry
from ssl_bench.data.base import DatasetInfo
from ssl_bench.run.assemble import build_backbone, build_method, build_parts, method_config, resolve_part_specs
from ssl_bench.run import load_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ssl-bench-example"
TINY = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=64", "dataset.limit_test=32"]

BUILTIN_TOKENIZERS = ("conv-vae", "patch", "patch-ae", "patch-pca", "patch-vae", "pixel")
BUILTIN_CORRUPTIONS = ("additive-latent-noise", "random-masking")
BUILTIN_TARGETS = ("clean-latent", "inverse-tokenizer-image", "noise", "norm-pix", "original-image")
EXAMPLE_CORRUPTIONS = ("block-masking",)  # BEiT's blockwise masking: records a mask, like random-masking
EXAMPLE_TARGETS = ("sobel-edges",)  # per-patch edge magnitudes: output space 'image', needs nothing recorded

#: corruptions that remove tokens (record a mask, add no noise)
MASKING = {"random-masking", "block-masking"}


def expected_refusal(tokenizer: str, corruption: str, target: str) -> tuple[str, str, str] | None:
    """(first part, second part, words of the reason) for a combination that cannot work, else None."""
    if corruption in MASKING and target == "noise":  # nothing was added, so there is no noise to regress
        return corruption, target, "needs the corruption to record noise"
    if tokenizer == "conv-vae" and target == "original-image":  # Eq. 4 weights the full PCA-like basis
        return tokenizer, target, "needs a patch-wise tokenizer with a full basis"
    return None


@pytest.fixture(scope="module")
def reg():
    """The installed registry plus the example plugin's parts (from its source, unless installed)."""
    registry = build_registry()
    if "block-masking" not in registry.names("corruption"):
        with pytest.MonkeyPatch.context() as mp:
            mp.syspath_prepend(str(EXAMPLE))
            registry = build_registry(extra_modules=[("ssl-bench-example", importlib.import_module("ssl_bench_example"))])
    return registry


@pytest.fixture(scope="module")
def digits(reg):
    cfg = method_config("ldae", reg, cli={"backbone.name": "vit-nano"}, set_items=TINY)
    return load_dataset(cfg, reg)


def test_the_tables_above_cover_every_registered_part(reg):
    """A new built-in part must be added here, with what it composes with."""
    assert tuple(n for n in reg.names("tokenizer") if reg.entry("tokenizer", n).package == "ssl-bench") == BUILTIN_TOKENIZERS
    assert tuple(n for n in reg.names("corruption") if reg.entry("corruption", n).package == "ssl-bench") == BUILTIN_CORRUPTIONS
    assert tuple(n for n in reg.names("target") if reg.entry("target", n).package == "ssl-bench") == BUILTIN_TARGETS
    assert set(EXAMPLE_CORRUPTIONS) <= set(reg.names("corruption")) and set(EXAMPLE_TARGETS) <= set(reg.names("target"))


def _fast_tokenizer_options(reg, name: str) -> list[str]:
    """Few fitting steps for the gradient-fitted tokenizers (only options they take)."""
    params = inspect.signature(reg.get("tokenizer", name)).parameters
    return [f"method.tokenizer.{k}={v}" for k, v in (("steps", 3), ("width", 8), ("num_samples", 2000)) if k in params]


@pytest.mark.parametrize("network", ["mae", "ldae"])
@pytest.mark.parametrize(
    "tokenizer,corruption,target",
    list(itertools.product(BUILTIN_TOKENIZERS, BUILTIN_CORRUPTIONS + EXAMPLE_CORRUPTIONS, BUILTIN_TARGETS + EXAMPLE_TARGETS)),
)
def test_every_combination_trains_or_is_refused_clearly(network, tokenizer, corruption, target, reg, digits):
    extra = [
        f"method.tokenizer.name={tokenizer}", f"method.corruption.name={corruption}", f"method.target.name={target}",
        *_fast_tokenizer_options(reg, tokenizer),
    ]
    if network == "mae":  # MAE has no noise schedule by default; a noise corruption needs one
        extra.append("method.noise_schedule=sigma-linear")
    cfg = method_config(network, reg, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, *extra])
    expected = expected_refusal(tokenizer, corruption, target)
    torch.manual_seed(0)
    if expected is not None:
        first, second, reason = expected
        with pytest.raises(ConfigError) as refused:
            build_method(cfg, reg, digits.info)
        msg = str(refused.value)
        assert f"'{first}'" in msg and f"'{second}'" in msg, f"the refusal must name both parts: {msg}"
        assert reason in msg, msg
        return
    model = build_method(cfg, reg, digits.info)  # must be accepted: a ConfigError here fails the test
    assert (model.specs["tokenizer"]["name"], model.specs["corruption"]["name"], model.specs["target"]["name"]) == (tokenizer, corruption, target)
    model.prepare(digits.train, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images, labels = next(iter(digits.train.batches(16)))
    for step in range(2):
        out = model(images, labels, torch.Generator().manual_seed(step))
        assert math.isfinite(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    feats = model.probe_features(torch.randn(3, 1, 8, 8))
    assert feats.shape == (3, 32) and torch.isfinite(feats).all()


def test_the_issue_compositions_are_what_they_claim(reg, digits):
    """Masking in the PCA latent under l-DAE's DiT, additive latent noise under MAE's encoder/decoder,
    MAE on patch-PCA tokens: each builds the parts it names."""
    from ssl_bench.components.masking import RandomMasking
    from ssl_bench.components.noise import AdditiveLatentNoise
    from ssl_bench.components.tokenizers import PatchPCATokenizer

    def build(method, *extra):
        cfg = method_config(method, reg, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, *extra])
        return build_method(cfg, reg, digits.info)

    masked_ldae = build("ldae", "method.corruption.name=random-masking")
    assert isinstance(masked_ldae.corruption, RandomMasking) and masked_ldae.backbone.mask_token is not None
    assert masked_ldae.probe_t == 0  # a masking-trained DiT is conditioned on t = 0 throughout
    noisy_mae = build("mae", "method.corruption=additive-latent-noise", "method.noise_schedule=sigma-linear")
    assert isinstance(noisy_mae.corruption, AdditiveLatentNoise) and noisy_mae.noise_schedule.name == "sigma-linear"
    pca_mae = build("mae", "method.tokenizer.name=patch-pca")
    assert isinstance(pca_mae.tokenizer, PatchPCATokenizer) and pca_mae.tokenizer.latent_dim == 2


def test_option_of_a_replaced_default_part_is_dropped_from_the_config_but_a_typo_is_an_error(reg, digits, caplog):
    """l-DAE's default tokenizer is the patch PCA; its options that the patch AE does not take are
    dropped when the config is resolved (logged), so config.json never carries them."""
    with caplog.at_level(logging.INFO, logger="ssl_bench"):
        cfg = method_config("ldae", reg, cli={"backbone.name": "vit-nano"},
                            set_items=[*TINY, "method.tokenizer.name=patch-ae", "method.tokenizer.steps=3"])
    assert "latent_scale" not in cfg.method.tokenizer and cfg.method.tokenizer.center is True  # the AE takes center
    assert cfg.method.tokenizer.name == "patch-ae" and cfg.method.tokenizer.steps == 3
    assert "method.tokenizer: latent_scale of the default tokenizer 'patch-pca' do not apply to 'patch-ae'; ignored" in caplog.text
    assert "latent_scale" not in json.loads(config_to_json(cfg))["method"]["tokenizer"]
    model = build_method(cfg, reg, digits.info)
    assert model.tokenizer.steps == 3
    # the same option set by the user (not the default's value) is not inherited: an error naming it
    with pytest.raises(ConfigError, match=r"tokenizer 'patch-ae' takes no option latent_scale \(it takes: .*steps"):
        method_config("ldae", reg, set_items=["method.tokenizer.name=patch-ae", "method.tokenizer.latent_scale=2.0"])
    with pytest.raises(ConfigError, match=r"method.tokenizer: tokenizer 'patch-pca' takes no option stpes \(it takes: .*num_samples"):
        method_config("ldae", reg, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, "method.tokenizer.stpes=3"])


def test_a_part_named_by_a_string_is_resolved_to_a_spec(reg):
    cfg = method_config("mae", reg, set_items=["method.corruption.name=additive-latent-noise", "method.noise_schedule=sigma-linear"])
    assert cfg.method.noise_schedule.to_dict() == {"name": "sigma-linear"}
    # the option of MAE's default corruption (random masking's mask_ratio 0.75) does not apply to the noise
    assert cfg.method.corruption.to_dict() == {"name": "additive-latent-noise"}
    with pytest.raises(ConfigError, match=r"method.target must be a component name or dict\(name=..., \*\*options\), got 3"):
        method_config("mae", reg, set_items=["method.target=3"])


@pytest.mark.parametrize("method,extra", [
    ("mae", []),
    ("ldae", ["method.tokenizer.name=patch-ae", "method.tokenizer.steps=3"]),
    ("ldae", ["method.target.name=noise", "method.input_space=latent"]),
    ("ddm", ["method.tokenizer.name=pixel", "method.noise_schedule=cosine"]),
    ("mae", ["method.corruption=additive-latent-noise", "method.noise_schedule=sigma-linear", "method.target.name=clean-latent"]),
])
def test_a_stored_config_resolves_to_itself(reg, method, extra):
    """What config.json stores (and a resume compares with) is a fixed point of the resolution."""
    cfg = method_config(method, reg, set_items=extra)
    stored = config_to_json(cfg)
    again = resolve_part_specs(Config(json.loads(stored)), reg)
    assert config_to_json(again) == stored


def test_missing_noise_schedule_is_a_clear_error(reg, digits):
    cfg = method_config("mae", reg, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, "method.corruption.name=additive-latent-noise"])
    with pytest.raises(ConfigError, match="corruption 'additive-latent-noise' adds noise but method.noise_schedule is not set"):
        build_method(cfg, reg, digits.info)


def test_a_new_method_as_config_alone_trains(reg, digits):
    """CONTRIBUTING's example: MAE in the PCA latent, written as a config file only."""
    from ssl_bench.components.latent_targets import CleanLatentTarget

    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / "mae_pca_latent.py"
    cfg = method_config("mae", reg, user_config=path, cli={"backbone.name": "vit-nano"}, set_items=TINY)
    model = build_method(cfg, reg, digits.info)
    assert isinstance(model.target, CleanLatentTarget) and model.backbone.patch_size == 1  # the ViT reads the latent
    model.prepare(digits.train, torch.Generator().manual_seed(0))
    images, labels = next(iter(digits.train.batches(16)))
    out = model(images, labels, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and model.backbone.vit.blocks[0].attn.qkv.weight.grad is not None


def test_build_parts_constructs_in_the_seed_order_with_only_the_context_each_names():
    """noise schedule, tokenizer, corruption, target (the order of their random initial weights is
    part of a seed's contract), each given the user's options plus the pipeline keywords its
    constructor names (ssl_bench.components.base), from whatever registry the builder is handed."""
    calls: list[tuple[str, dict]] = []

    def recorder(kind):
        def make(**kwargs):
            calls.append((kind, kwargs))
            return type(kind, (), {"latent_dim": 4, "needs_schedule": False})()
        return make

    def schedule(T=1000):
        calls.append(("noise-schedule", {"T": T}))
        return "the schedule"

    def tokenizer(patch_size, channels, latent_dim=None):
        calls.append(("tokenizer", {"patch_size": patch_size, "channels": channels, "latent_dim": latent_dim}))
        return "the tokenizer"

    def target(tokenizer, schedule, weight=1.0):
        calls.append(("target", {"tokenizer": tokenizer, "schedule": schedule, "weight": weight}))
        return "the target"

    factories = {"noise-schedule": schedule, "tokenizer": tokenizer, "corruption": recorder("corruption"), "target": target}

    class Registry:
        def get(self, kind, name):
            assert name == f"my-{kind}"
            return factories[kind]

    cfg = Config(dict(
        backbone=dict(name="vit-nano", patch_size=None),
        method=dict(noise_schedule=dict(name="my-noise-schedule", T=50), tokenizer=dict(name="my-tokenizer", latent_dim=3),
                    corruption="my-corruption", target=dict(name="my-target", weight=None), image_size=None),
    ))
    parts = build_parts(cfg, Registry(), DatasetInfo("toy", 2, 3, 8, (0.5,) * 3, (0.2,) * 3, default_patch_size=2))
    assert [k for k, _ in calls] == ["noise-schedule", "tokenizer", "corruption", "target"]
    assert calls[0][1] == {"T": 50}
    assert calls[1][1] == {"patch_size": 2, "channels": 3, "latent_dim": 3}  # no image_size: it does not name it
    assert calls[2][1] == {"schedule": "the schedule"}
    assert calls[3][1] == {"tokenizer": "the tokenizer", "schedule": "the schedule", "weight": 1.0}  # None: the default
    assert (parts.noise_schedule, parts.tokenizer, parts.target) == ("the schedule", "the tokenizer", "the target")
    assert parts.specs["corruption"] == {"name": "my-corruption"}


def test_a_reconstruction_method_is_built_from_parts_it_is_given(reg, digits):
    """Model code looks nothing up: MAE from hand-made parts, and the latent-input MAE asks for its
    backbone factory instead of a registry."""
    from ssl_bench.components.base import Parts
    from ssl_bench.components.masking import RandomMasking
    from ssl_bench.components.targets import NormalizedPixelTarget
    from ssl_bench.components.tokenizers import PatchTokenizer
    from ssl_bench_plugins.mae.method import MAE

    cfg = method_config("mae", reg, cli={"backbone.name": "vit-nano"}, set_items=TINY)
    parts = Parts(tokenizer=PatchTokenizer(patch_size=2, channels=1), corruption=RandomMasking(0.5),
                  target=NormalizedPixelTarget(patch_size=2), specs={"tokenizer": {"name": "patch"}, "noise_schedule": None,
                                                                     "corruption": {"name": "random-masking", "mask_ratio": 0.5},
                                                                     "target": {"name": "norm-pix"}})
    model = MAE(cfg, build_backbone(cfg, reg, digits.info), digits.info, parts=parts)
    assert model.corruption is parts.corruption and model.output_dim == 4  # 2 x 2 x 1 pixels per token
    images, labels = next(iter(digits.train.batches(8)))
    assert math.isfinite(model(images, labels, torch.Generator().manual_seed(0)).loss.item())

    latent = method_config("mae", reg, user_config=Path(__file__).resolve().parents[1] / "examples" / "configs" / "mae_pca_latent.py",
                           cli={"backbone.name": "vit-nano"}, set_items=TINY)
    with pytest.raises(ConfigError, match="input_space='latent' needs a backbone on the latent geometry"):
        MAE(latent, build_backbone(latent, reg, digits.info), digits.info, parts=build_parts(latent, reg, digits.info))
