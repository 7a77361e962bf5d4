# l-DAE, ViT-L encoder (24 blocks, 1024 wide; decoder of the same size), ImageNet-1k at 256 px,
# 1600 epochs, random crop. Paper linear probe (Table 4): 75.0 %. Recipe as ldae_vit_b.py.
#   torchrun --nproc_per_node 8 -m ssl_bench.cli run ldae --config benchmarks/table4/ldae_vit_l.py \
#       --data-root /path/to/imagenet
_base_ = ["./ldae_vit_b.py"]

backbone = dict(name="vit-l", patch_size=16)

# Table 4 uses random crops (paper §5); the crop scale is not stated in the paper: MAE's (0.2, 1) and
# flip (our choice, docs/methods.md).
method = dict(augment=dict(crop_scale=(0.2, 1.0), flip_p=0.5))
