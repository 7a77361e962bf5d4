"""Composition is real for every part kind: every registered (tokenizer x corruption x target) either
trains two steps under both built-in networks (MAE's ViT encoder/decoder and l-DAE's DiT), or is
refused when the method is built with a ConfigError that names both parts and why (never a shape
error mid-step)."""

from __future__ import annotations

import inspect
import itertools
import math

import pytest
import torch

from ssl_bench.errors import ConfigError
from ssl_bench.registry import get_registry
from ssl_bench.run import build_method, load_dataset, method_config

REG = get_registry()
TOKENIZERS, CORRUPTIONS, TARGETS = REG.names("tokenizer"), REG.names("corruption"), REG.names("target")
TINY = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=64", "dataset.limit_test=32"]

# The built-in pairs that cannot work, and the words the refusal must contain (independent of the code's
# own decision, so a wrongly refused or wrongly accepted combination fails the test).
EXPECTED_REFUSALS = {
    ("random-masking", "noise"): "needs the corruption to record noise",  # nothing was added to regress
    ("conv-vae", "original-image"): "needs a patch-wise tokenizer with a full basis",  # no PCA-like basis
}
# (the refusal names the two parts involved; a masking x noise refusal names corruption and target)
_UNUSED = {
}


def _expected_refusal(tokenizer: str, corruption: str, target: str) -> str | None:
    return EXPECTED_REFUSALS.get((corruption, target)) or EXPECTED_REFUSALS.get((tokenizer, target))


def _fast_tokenizer_options(name: str) -> list[str]:
    """Few fitting steps for the gradient-fitted tokenizers (only options they take)."""
    params = inspect.signature(REG.get("tokenizer", name)).parameters
    return [f"method.tokenizer.{k}={v}" for k, v in (("steps", 3), ("width", 8), ("num_samples", 2000)) if k in params]


@pytest.fixture(scope="module")
def digits():
    cfg = method_config("ldae", REG, cli={"backbone.name": "vit-nano"}, set_items=TINY)
    return load_dataset(cfg, REG)


@pytest.mark.parametrize("network", ["mae", "ldae"])
@pytest.mark.parametrize("tokenizer,corruption,target", list(itertools.product(TOKENIZERS, CORRUPTIONS, TARGETS)))
def test_every_combination_trains_or_is_refused_clearly(network, tokenizer, corruption, target, digits):
    extra = [
        f"method.tokenizer.name={tokenizer}", f"method.corruption.name={corruption}", f"method.target.name={target}",
        *_fast_tokenizer_options(tokenizer),
    ]
    if network == "mae":  # MAE has no noise schedule by default; a noise corruption needs one
        extra.append("method.noise_schedule=sigma-linear")
    cfg = method_config(network, REG, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, *extra])
    builtin = all(REG.entry(kind, name).package == "ssl-bench" for kind, name in
                  (("tokenizer", tokenizer), ("corruption", corruption), ("target", target)))
    expected = _expected_refusal(tokenizer, corruption, target)
    torch.manual_seed(0)
    try:
        model = build_method(cfg, REG, digits.info)
    except ConfigError as exc:
        msg = str(exc)
        named = [n for n in (tokenizer, corruption, target) if f"'{n}'" in msg]
        assert len(named) >= 2, f"the refusal must name both parts: {msg}"
        if builtin:
            assert expected is not None, f"{tokenizer} x {corruption} x {target} was refused: {msg}"
            assert expected in msg, msg
        return
    if builtin:
        assert expected is None, f"{tokenizer} x {corruption} x {target} should have been refused ({expected})"
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


def test_the_issue_compositions_are_what_they_claim(digits):
    """Masking in the PCA latent under l-DAE's DiT, additive latent noise under MAE's encoder/decoder,
    MAE on patch-PCA tokens: each builds the parts it names."""
    from ssl_bench.components.masking import RandomMasking
    from ssl_bench.components.noise import AdditiveLatentNoise
    from ssl_bench.components.tokenizers import PatchPCATokenizer

    def build(method, *extra):
        cfg = method_config(method, REG, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, *extra])
        return build_method(cfg, REG, digits.info)

    masked_ldae = build("ldae", "method.corruption.name=random-masking")
    assert isinstance(masked_ldae.corruption, RandomMasking) and masked_ldae.backbone.mask_token is not None
    assert masked_ldae.probe_t == 0  # a masking-trained DiT is conditioned on t = 0 throughout
    noisy_mae = build("mae", "method.corruption=additive-latent-noise", "method.noise_schedule=sigma-linear")
    assert isinstance(noisy_mae.corruption, AdditiveLatentNoise) and noisy_mae.noise_schedule.name == "sigma-linear"
    pca_mae = build("mae", "method.tokenizer.name=patch-pca")
    assert isinstance(pca_mae.tokenizer, PatchPCATokenizer) and pca_mae.tokenizer.latent_dim == 2


def test_option_of_a_replaced_default_part_is_dropped_but_a_typo_is_an_error(digits):
    cfg = method_config("ldae", REG, cli={"backbone.name": "vit-nano"},
                        set_items=[*TINY, "method.tokenizer.name=patch-ae", "method.tokenizer.steps=3"])
    model = build_method(cfg, REG, digits.info)  # latent_scale (PCA's, from the default) is dropped
    assert model.tokenizer.steps == 3
    cfg = method_config("ldae", REG, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, "method.tokenizer.stpes=3"])
    with pytest.raises(ConfigError, match=r"method.tokenizer: tokenizer 'patch-pca' takes no option stpes \(it takes: .*num_samples"):
        build_method(cfg, REG, digits.info)


def test_missing_noise_schedule_is_a_clear_error(digits):
    cfg = method_config("mae", REG, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, "method.corruption.name=additive-latent-noise"])
    with pytest.raises(ConfigError, match="corruption 'additive-latent-noise' adds noise but method.noise_schedule is not set"):
        build_method(cfg, REG, digits.info)


def test_a_new_method_as_config_alone_trains(digits):
    """CONTRIBUTING's example: MAE in the PCA latent, written as a config file only."""
    from pathlib import Path

    from ssl_bench.components.latent_targets import CleanLatentTarget

    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / "mae_pca_latent.py"
    cfg = method_config("mae", REG, user_config=path, cli={"backbone.name": "vit-nano"}, set_items=TINY)
    model = build_method(cfg, REG, digits.info)
    assert isinstance(model.target, CleanLatentTarget) and model.backbone.patch_size == 1  # the ViT reads the latent
    model.prepare(digits.train, torch.Generator().manual_seed(0))
    images, labels = next(iter(digits.train.batches(16)))
    out = model(images, labels, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and model.backbone.vit.blocks[0].attn.qkv.weight.grad is not None
