# MAE, ViT-L/16, ImageNet-1k, 1600 epochs (He et al. 2022; facebookresearch/mae PRETRAIN.md,
# main_pretrain.py). Paper linear probe: 75.8 %.
# Same recipe as ViT-B (the decoder is 512/8/16 for both); FINETUNE.md notes 50 probe epochs suffice
# for L, we keep 90 for one protocol across the table.
#   torchrun --nproc_per_node 8 -m ssl_bench.cli run mae --config benchmarks/table4/mae_vit_l.py \
#       --data-root /path/to/imagenet
_base_ = ["./mae_vit_b.py"]

backbone = dict(name="vit-l", patch_size=16)
