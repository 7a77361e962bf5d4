"""Each built-in method's recipe, stated here as literals from its source, against the default config
the harness resolves (``ssl-bench run METHOD``) and the method it builds; and, where they differ
(the paper-scale schedule), the Table-4 recipes in benchmarks/table4/.

The numbers are never imported from the code under test: changing MAE's default mask ratio from
0.75 to 0.6 (or any value below) fails here. Sources:

* MAE: He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"; facebookresearch/mae
  ``main_pretrain.py`` (``--mask_ratio 0.75``, RandomResizedCrop(scale=(0.2, 1.0), interpolation=3)
  + RandomHorizontalFlip, AdamW betas (0.9, 0.95)), ``PRETRAIN.md`` (``--norm_pix_loss``,
  ``--blr 1.5e-4 --weight_decay 0.05``, ``--warmup_epochs 40``, effective batch 4096),
  ``models_mae.py`` (``mae_vit_base_patch16_dec512d8b`` / ``..._large_...``: decoder 512 wide,
  8 blocks, 16 heads).
* l-DAE: Chen, Liu, Xie, He 2024, "Deconstructing Denoising Diffusion Models for Self-Supervised
  Learning" (arXiv 2401.14404 v1): patch-wise PCA with d = 32 of D = 768 (16x16x3; Table 2, §4.2),
  gamma_t = 1 and sigma_t linear from 0 to sqrt(2) over T = 1000 steps (§4.3; sigma_t = sqrt(2) t / T
  is our discretisation, docs/methods.md), the original image as target with weight 0.1 on the
  residual PCA directions (Eq. 4), no weight decay and lr 1e-4 x batch / 256 at batch 2048 with 100
  warm-up epochs (App. A), the probe at t = 10 on the clean input (App. A).
* DiT DDM: Peebles & Xie 2023; facebookresearch/DiT ``diffusion/__init__.py::create_diffusion``
  (``noise_schedule="linear"``, ``diffusion_steps=1000``, ``learn_sigma=True``),
  ``diffusion/gaussian_diffusion.py::get_named_beta_schedule`` (linear betas 1e-4 .. 0.02 scaled by
  1000 / T), ``train.py`` (AdamW lr 1e-4 at global batch 256, weight_decay 0).
* MoCo v3: Chen, Xie, He 2021; facebookresearch/moco-v3 ``CONFIG.md`` ViT-B (``--optimizer=adamw
  --lr=1.5e-4 --weight-decay=.1 --epochs=300 --warmup-epochs=40 --stop-grad-conv1 --moco-m-cos
  --moco-t=.2``), ``main_moco.py`` (``--moco-m 0.99``, ``--crop-min 0.08``, ``--moco-dim 256``,
  ``--moco-mlp-dim 4096``, lr x batch / 256, AdamW with torch's default betas (0.9, 0.999)),
  ``moco/builder.py`` (ViT projector ``_build_mlp(3, D, 4096, 256)``, predictor
  ``_build_mlp(2, 256, 4096, 256)``).

Where the CPU-sized defaults differ from the paper (the base lr is 10x the paper's, a documented
decision in each plugin's default_config.py), the default is stated as that decision and the paper's
value is checked in the Table-4 recipe.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ssl_bench.data.base import DatasetInfo
from ssl_bench.run.assemble import build_method, build_tokenizer, method_config

TABLE4 = Path(__file__).resolve().parents[1] / "benchmarks" / "table4"
DIGITS = DatasetInfo("digits", 10, 1, 8, (0.3,), (0.3,), default_patch_size=2)
IMAGENET_256 = DatasetInfo("imagenet-1k", 1000, 3, 256, (0.5,) * 3, (0.25,) * 3, default_patch_size=16)
TINY = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2"]


def _built(method: str, registry, info: DatasetInfo = DIGITS, *extra: str):
    cfg = method_config(method, registry, cli={"backbone.name": "vit-nano"}, set_items=[*TINY, *extra])
    return cfg, build_method(cfg, registry, info)


def _recipe(name: str, registry):
    method = name.rpartition("_vit_")[0]
    return method_config(method, registry, user_config=TABLE4 / f"{name}.py")


# -- MAE ------------------------------------------------------------------------------------------


def test_mae_default_recipe(registry):
    cfg = method_config("mae", registry)
    m = cfg.method
    assert m.tokenizer.to_dict() == {"name": "patch"}  # patchify: identity on p x p x C patches
    assert m.corruption.to_dict() == {"name": "random-masking", "mask_ratio": 0.75}  # main_pretrain.py --mask_ratio 0.75
    assert m.target.to_dict() == {"name": "norm-pix", "norm_pix": True}  # PRETRAIN.md --norm_pix_loss
    assert m.noise_schedule is None and m.input_space == "image"
    assert tuple(m.augment.crop_scale) == (0.2, 1.0) and m.augment.flip_p == 0.5  # RandomResizedCrop(scale=(0.2, 1.0)) + flip
    assert m.probe_pool == "cls"
    assert tuple(cfg.train.betas) == (0.9, 0.95) and cfg.train.weight_decay == 0.05 and cfg.train.optimizer == "adamw"
    assert cfg.train.blr == 1.5e-3  # decision: 10x the paper's 1.5e-4 for CPU-sized runs (default_config.py)


def test_mae_builds_what_the_recipe_says(registry):
    from ssl_bench_plugins.mae.method import decoder_size

    cfg, model = _built("mae", registry)
    assert model.corruption.mask_ratio == 0.75
    assert model.target.norm_pix is True and model.target.eps == 1e-6  # forward_loss: (var + 1.e-6) ** .5
    assert model.crop_scale == (0.2, 1.0) and model.flip_p == 0.5 and model.crop_interpolation == "bicubic"  # interpolation=3
    for backbone, width in (("vit-b", 768), ("vit-l", 1024)):  # mae_vit_{base,large}_patch16_dec512d8b
        assert decoder_size(cfg.method, backbone, width) == (512, 8, 16)


def test_mae_table4_recipe_is_the_paper_scale(registry):
    cfg = _recipe("mae_vit_b", registry)
    assert (cfg.train.blr, cfg.train.batch_size, cfg.train.warmup_epochs, cfg.train.epochs) == (1.5e-4, 4096, 40, 1600)
    assert tuple(cfg.train.betas) == (0.9, 0.95) and cfg.train.weight_decay == 0.05
    assert cfg.method.corruption.mask_ratio == 0.75 and cfg.method.target.norm_pix is True
    assert (cfg.method.decoder.embed_dim, cfg.method.decoder.depth, cfg.method.decoder.num_heads) == (512, 8, 16)
    assert (cfg.dataset.image_size, cfg.backbone.patch_size) == (224, 16)
    assert _recipe("mae_vit_l", registry).train.to_dict() == cfg.train.to_dict()  # one recipe for B and L


# -- l-DAE ----------------------------------------------------------------------------------------


def test_ldae_default_recipe(registry):
    cfg = method_config("ldae", registry)
    m = cfg.method
    assert m.tokenizer.name == "patch-pca" and m.tokenizer.latent_ratio == 32 / 768  # d = 32 of D = 768
    assert m.noise_schedule.to_dict() == {"name": "sigma-linear", "T": 1000}
    assert m.corruption.to_dict() == {"name": "additive-latent-noise"}  # noise added in the PCA latent
    assert m.target.to_dict() == {"name": "original-image", "residual_weight": 0.1}  # Eq. 4
    assert m.input_space == "image"  # the network reads the inverse-PCA image of the noisy latent (§4.3)
    assert m.augment.crop_scale is None  # centre crops (§5); Table 4 adds random crops
    assert m.probe.t is None and m.probe.input == "clean"  # t None: the schedule's 10 (below)
    assert cfg.train.weight_decay == 0.0  # App. A: no weight decay
    assert cfg.train.blr == 1e-3  # decision: 10x the paper's 1e-4 for CPU-sized runs (default_config.py)


def test_ldae_builds_what_the_paper_says(registry):
    _, model = _built("ldae", registry)
    sched = model.noise_schedule
    assert sched.T == 1000
    assert (sched.gammas == 1.0).all()  # gamma_t = 1: "remove input scaling"
    assert sched.sigmas[10] == pytest.approx(math.sqrt(2) * 10 / 1000, rel=1e-12)
    assert sched.sigmas[-1] == pytest.approx(math.sqrt(2) * 999 / 1000, rel=1e-12)
    assert model.target.residual_weight == 0.1
    assert model.probe_t == 10 and model.probe_input_kind == "clean"  # App. A: t = 10, clean input
    tok = build_tokenizer(method_config("ldae", registry), registry, IMAGENET_256)
    assert (tok.patch_size, tok.latent_dim) == (16, 32)  # d = 32 of 16 x 16 x 3 = 768


def test_ldae_table4_recipe_is_the_paper_scale(registry):
    cfg = _recipe("ldae_vit_b", registry)
    assert (cfg.train.blr, cfg.train.batch_size, cfg.train.warmup_epochs, cfg.train.epochs) == (1e-4, 2048, 100, 1600)
    assert cfg.train.weight_decay == 0.0
    assert (cfg.dataset.image_size, cfg.backbone.patch_size) == (256, 16)
    assert cfg.method.target.residual_weight == 0.1 and cfg.method.noise_schedule.name == "sigma-linear"


# -- DiT DDM --------------------------------------------------------------------------------------


def test_ddm_default_recipe(registry):
    cfg = method_config("ddm", registry)
    m = cfg.method
    assert m.noise_schedule.to_dict() == {"name": "linear", "T": 1000}  # create_diffusion: "linear", 1000 steps
    assert m.target.to_dict() == {"name": "noise"} and m.input_space == "latent"  # eps prediction in the latent
    assert m.diffusion.var_type == "learned_range" and m.diffusion.loss_type == "mse"  # learn_sigma=True, LossType.MSE
    assert m.class_cond is False  # l-DAE drops DiT's class conditioning
    assert tuple(cfg.train.betas) == (0.9, 0.999) and cfg.train.weight_decay == 0.0  # train.py: AdamW, weight_decay=0
    assert cfg.train.blr == 1e-3  # decision: 10x DiT's 1e-4 at batch 256, for CPU-sized runs


def test_ddm_builds_dits_diffusion(registry):
    _, model = _built("ddm", registry)
    betas = model.noise_schedule.betas()
    assert len(betas) == 1000
    assert betas[0] == pytest.approx(1e-4, rel=1e-12) and betas[-1] == pytest.approx(0.02, rel=1e-12)
    assert betas[1] - betas[0] == pytest.approx((0.02 - 1e-4) / 999, rel=1e-9)  # linear
    assert model.diffusion.learn_sigma and model.out_channels == 2 * model.latent_channels  # DiT: out = 2 x in


# -- MoCo v3 --------------------------------------------------------------------------------------


def test_mocov3_default_recipe(registry):
    cfg = method_config("mocov3", registry)
    m = cfg.method
    assert m.temperature == 0.2  # --moco-t=.2 (ViT)
    assert m.momentum == 0.99 and m.momentum_cos is True  # --moco-m 0.99, --moco-m-cos
    assert tuple(m.crop_scale) == (0.08, 1.0)  # --crop-min 0.08
    assert m.stop_grad_conv1 is True  # --stop-grad-conv1
    assert cfg.train.optimizer == "adamw" and tuple(cfg.train.betas) == (0.9, 0.999) and cfg.train.weight_decay == 0.1
    assert cfg.train.blr == 1.5e-3  # decision: 10x the paper's 1.5e-4 for CPU-sized runs (default_config.py)


def test_mocov3_builds_what_the_recipe_says(registry):
    from ssl_bench.components.momentum import momentum_at
    from ssl_bench_plugins.mocov3.method import head_sizes

    cfg, model = _built("mocov3", registry)
    assert model.temperature == 0.2 and model.m0 == 0.99 and model.momentum_cos
    assert model.crop_scale == (0.08, 1.0)
    # adjust_moco_momentum: 1 - 0.5 (1 + cos(pi e / E)) (1 - m0): 0.99 at the start, 1 at the end
    assert momentum_at(0, 300, 0.99) == pytest.approx(0.99) and momentum_at(300, 300, 0.99) == pytest.approx(1.0)
    assert momentum_at(150, 300, 0.99) == pytest.approx(0.995)
    # ViT-B: projector 768 -> 4096 -> 4096 -> 256, predictor 256 -> 4096 -> 256 (--moco-mlp-dim, --moco-dim)
    assert head_sizes(cfg.method, "vit-b", 768) == (4096, 256, 4096)
    assert head_sizes(cfg.method, "vit-l", 1024) == (4096, 256, 4096)


def test_mocov3_table4_recipe_is_the_paper_scale(registry):
    cfg = _recipe("mocov3_vit_b", registry)
    assert (cfg.train.blr, cfg.train.batch_size, cfg.train.warmup_epochs, cfg.train.epochs) == (1.5e-4, 4096, 40, 300)
    assert cfg.train.weight_decay == 0.1 and tuple(cfg.train.betas) == (0.9, 0.999)
    assert (cfg.method.proj_hidden, cfg.method.proj_dim, cfg.method.pred_hidden) == (4096, 256, 4096)
    assert cfg.method.temperature == 0.2 and tuple(cfg.method.crop_scale) == (0.08, 1.0)
    assert (cfg.dataset.image_size, cfg.backbone.patch_size) == (224, 16)

