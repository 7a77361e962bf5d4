# MAE, ViT-L/16, ImageNet-1k, 1600 epochs (METHODS.md §2.8). Paper linear probe: 75.8 %.
# Same recipe as ViT-B (the decoder is 512/8/16 for both); FINETUNE.md notes 50 probe epochs suffice
# for L, we keep 90 for one protocol across the table.
#   torchrun --nproc_per_node 8 -m ssl_bench.cli run mae --config benchmarks/table4/mae_vit_l.py \
#       --data-root /path/to/imagenet
_base_ = ["./mae_vit_b.py"]

backbone = dict(name="vit-l", patch_size=16)
