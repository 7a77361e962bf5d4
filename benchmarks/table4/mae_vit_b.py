# MAE, ViT-B/16, ImageNet-1k, 1600 epochs (He et al. 2022; facebookresearch/mae PRETRAIN.md,
# main_pretrain.py, models_mae.py, main_linprobe.py). Paper linear probe: 68.0 %.
#   torchrun --nproc_per_node 8 -m ssl_bench.cli run mae --config benchmarks/table4/mae_vit_b.py \
#       --data-root /path/to/imagenet
dataset = dict(name="imagenet-1k", data_root=None, image_size=224, num_workers=10)  # --data-root sets data_root
backbone = dict(name="vit-b", patch_size=16)

method = dict(
    corruption=dict(name="random-masking", mask_ratio=0.75),
    target=dict(name="norm-pix", norm_pix=True),  # --norm_pix_loss
    decoder=dict(embed_dim=512, depth=8, num_heads=16),
    augment=dict(crop_scale=(0.2, 1.0), flip_p=0.5),  # RandomResizedCrop(224, scale=(0.2, 1)) + flip
    probe_pool="cls",  # MAE's linear probe uses the cls token after the final norm (--cls_token)
)

train = dict(
    epochs=1600,  # Table 4 (PRETRAIN.md's 800 is the shorter schedule)
    warmup_epochs=40,
    batch_size=4096,  # global, split over the torchrun processes
    blr=1.5e-4,  # lr = 1.5e-4 * 4096 / 256 = 2.4e-3
    min_lr=0.0,
    weight_decay=0.05,  # not on biases / 1-D params
    betas=(0.9, 0.95),
    amp="auto",
)

# MAE's linear probe (main_linprobe.py): features of RandomResizedCrop + flip views encoded every epoch
# ("augmented"), BN(affine=False) + Linear, LARS, blr 0.1 -> lr 6.4 at batch 16384, 90 ep, 10 warm-up.
eval = dict(linear=dict(protocol="augmented", optimizer="lars", blr=0.1, batch_size=16384, epochs=90, warmup_epochs=10))
