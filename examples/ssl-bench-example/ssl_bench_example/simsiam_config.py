# SimSiam defaults (Chen & He 2021 §3 "Baseline settings"; facebookresearch/simsiam main_simsiam.py),
# loaded by ssl_bench_example.simsiam.SimSiam.default_config. CPU-sized like the first-party
# plugins' defaults (plugins/mocov3/default_config.py): 10 epochs, small heads on small backbones.
method = dict(
    name="simsiam",
    # MLP heads. Paper scale (ResNet-50): projector D -> 2048 -> 2048 -> 2048, predictor
    # 2048 -> 512 -> 2048 (a bottleneck). None takes the per-backbone table below
    # (proj_hidden, dim, pred_hidden); any value set explicitly wins.
    proj_hidden=None,
    dim=None,
    pred_hidden=None,
    head_sizes={
        "vit-nano": (512, 512, 128),
        "vit-tiny": (512, 512, 128),
        "vit-s": (2048, 2048, 512),
        "vit-b": (2048, 2048, 512),
        "vit-l": (2048, 2048, 512),
    },
    # RandomResizedCrop scale of both views: the paper's (0.2, 1.0), which is also what tiny
    # images need (MoCo v3's default_config.py measures 0.08 vs 0.2-0.3 on 8x8 digits).
    crop_scale=(0.2, 1.0),
    fix_pred_lr=True,  # --fix-pred-lr: the predictor's param group is marked "fixed_lr"
    probe_pool="cls",  # "cls" or "avg" (mean of patch tokens); used for training and probing
)

train = dict(
    # AdamW (the harness's optimiser) with MoCo v3's CPU-sized ViT settings; the paper's SGD recipe
    # is lr 0.05 x batch / 256, momentum 0.9, weight decay 1e-4, no warm-up. Measured on digits
    # (vit-nano, 10 epochs, predictor on the shared schedule, i.e. a loop without fixed_lr):
    # k-NN / linear top-1 42.5 / 76.9 % (random init 35.8 / 69.4 %); blr 5e-3: 44.2 / 76.4 %;
    # weight_decay 0.05 with crop (0.3, 1.0): 33.6 / 45.3 %. A weak learner at this size: an
    # example of the plugin API, not a tuned baseline.
    blr=1.5e-3,
    betas=(0.9, 0.999),
    weight_decay=0.1,  # applied to all parameters (SimSiam.param_groups), as the official SGD
    epochs=10,
    warmup_epochs=1,
    batch_size=128,
)
