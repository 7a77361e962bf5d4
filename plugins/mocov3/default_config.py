# MoCo v3 defaults (Chen, Xie, He 2021 §5; facebookresearch/moco-v3 main_moco.py, CONFIG.md). Paper
# values are kept where they do not depend on the hardware; epochs/batch are CPU-sized here and set
# to the paper's in benchmarks/table4/.
method = dict(
    name="mocov3",
    temperature=0.2,  # ViT value (ResNet: 1.0); the loss is CE(q k^T / T) * 2T
    momentum=0.99,  # m0; with momentum_cos the momentum follows a half cosine from m0 to 1
    momentum_cos=True,  # --moco-m-cos, used by every official config
    # MLP heads. Paper scale: projector D -> 4096 -> 4096 -> 256, predictor 256 -> 4096 -> 256.
    # None takes the per-backbone table below (proj_hidden, proj_dim, pred_hidden); any value set
    # explicitly wins. Small backbones get small heads: a 4096-wide BN-MLP on a 128-d ViT on CPU
    # would dominate both parameters and step time.
    proj_hidden=None,
    proj_dim=None,
    pred_hidden=None,
    head_sizes={
        "vit-nano": (512, 128, 512),
        "vit-tiny": (512, 128, 512),
        "vit-s": (4096, 256, 4096),
        "vit-b": (4096, 256, 4096),
        "vit-l": (4096, 256, 4096),
    },
    stop_grad_conv1=True,  # frozen random patch projection (the paper's stability trick)
    # RandomResizedCrop scale of both views. (0.08, 1.0) is MoCo v3's ViT value at 224 px. On tiny
    # images 8% of the area is a couple of pixels upsampled (on 8x8 digits about 2x2 px: no digit
    # left), so raise the minimum there: (0.2, 1.0)-(0.3, 1.0) for 8x8 digits / 28x28 MNIST-likes,
    # probably (0.2, 1.0) for 32x32 CIFAR (not measured). Measured on digits (vit-nano, 20 epochs,
    # blr 1.5e-3, k-NN top-1): scale 0.08 -> 73.9 %, 0.2 -> 81.1 %, 0.3 -> 81.7 %.
    # Example: --set "method.crop_scale=(0.3,1.0)"
    crop_scale=(0.08, 1.0),
    sync_bn="auto",  # SyncBatchNorm under DDP where PyTorch supports it (not gloo/CPU); True/False force
    init="mocov3",  # "mocov3": the official ViT init (xavier per Q/K/V, cls std 1e-6); "timm": keep timm's
    probe_pool="cls",  # "cls" (MoCo v3's linear probe) or "avg" (mean of patch tokens)
)

train = dict(
    # x batch / 256 (2.4e-3 at batch 4096). The paper's value is slow for short CPU runs: on digits
    # (vit-nano, 20 epochs = 220 steps, crop (0.3, 1)) blr 1.5e-4 gives k-NN 65.8 %, 1.5e-3 81.7 %.
    # CPU-sized default 10x the paper's (benchmarks/table4 keeps 1.5e-4).
    blr=1.5e-3,
    betas=(0.9, 0.999),  # AdamW torch defaults, as main_moco.py
    weight_decay=0.1,  # applied to all parameters (MoCoV3.param_groups)
    epochs=10,
    warmup_epochs=1,
    batch_size=128,
)
