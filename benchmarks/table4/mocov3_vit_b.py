# MoCo v3, ViT-B/16, ImageNet-1k: the official recipe (Chen, Xie, He 2021, §5; facebookresearch/moco-v3
# CONFIG.md, main_moco.py, moco/builder.py).
# Paper linear probe (its own protocol): 76.7 %.
#   torchrun --nproc_per_node 8 -m ssl_bench.cli run mocov3 --config benchmarks/table4/mocov3_vit_b.py \
#       --data-root /path/to/imagenet
dataset = dict(name="imagenet-1k", data_root=None, image_size=224, num_workers=10)  # --data-root sets data_root
backbone = dict(name="vit-b", patch_size=16)

method = dict(
    temperature=0.2,
    momentum=0.99,  # m0, cosine to 1 (--moco-m-cos)
    momentum_cos=True,
    proj_hidden=4096,  # projector 768 -> 4096 -> 4096 -> 256
    proj_dim=256,
    pred_hidden=4096,  # predictor 256 -> 4096 -> 256
    stop_grad_conv1=True,  # frozen random patch projection
    crop_scale=(0.08, 1.0),  # crop_min 0.08 (the ViT configs keep torchvision's default)
    sync_bn="auto",  # SyncBatchNorm on NCCL
    init="mocov3",
    probe_pool="cls",
)

train = dict(
    epochs=300,
    warmup_epochs=40,
    batch_size=4096,  # global, split over the torchrun processes
    blr=1.5e-4,  # lr = 1.5e-4 * 4096 / 256 = 2.4e-3
    min_lr=0.0,  # half-cycle cosine to 0
    weight_decay=0.1,  # on all parameters
    betas=(0.9, 0.999),
    amp="auto",  # bf16 autocast on CUDA (the official code uses fp16 AMP)
)

# The shared Table-4 probe (MAE's): BN(affine=False) + Linear, LARS, blr 0.1 -> lr 6.4, batch 16384,
# 90 epochs, 10 warm-up. MoCo v3's own probe (SGD lr 12, batch 1024, no BN, 90 ep) produced the 76.7.
eval = dict(linear=dict(protocol="augmented", optimizer="lars", blr=0.1, batch_size=16384, epochs=90, warmup_epochs=10))
