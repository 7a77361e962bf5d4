# MoCo v3, ViT-L/16, ImageNet-1k. Paper linear probe: 77.6 %. The official repo has no ViT-L config:
# the hyper-parameters below are the ViT-B recipe (not given for ViT-L by the official code; our
# choice, docs/methods.md).
#   torchrun --nproc_per_node 8 -m ssl_bench.cli run mocov3 --config benchmarks/table4/mocov3_vit_l.py \
#       --data-root /path/to/imagenet
_base_ = ["./mocov3_vit_b.py"]

backbone = dict(name="vit-l", patch_size=16)  # 1024 wide, 24 blocks, 16 heads; projector 1024 -> 4096 -> 4096 -> 256
