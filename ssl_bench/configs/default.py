# Harness defaults shared by every method. A method's default config overrides these; a user's
# --config file, CLI flags and --set key=value override both (in that order).
seed = 0
out = "runs"
# The leaderboard row label of this configuration (`--name`). None: the method name, plus the settings
# that differ from the method's defaults (ssl_bench/run/variant.py).
name = None
sweep = None  # set by `ssl-bench sweep` to its sweep id, so the runs of a sweep are recognisable

dataset = dict(
    name="digits",  # offline default: ships with scikit-learn
    data_root=None,
    limit_train=None,  # int: deterministic subsample for quick runs
    limit_test=None,
    # float in (0, 1): hold back this fraction of the TRAINING split (after limit_train), stratified,
    # as a validation split that training and the probes never see; the test split is unchanged.
    val_fraction=None,
    val_seed=0,  # the validation split's own seed, independent of `seed`: every run holds back the same images
)

backbone = dict(
    name="vit-tiny",
    patch_size=None,  # None: the dataset's default (8x8 -> 2, 28x28 -> 4, 224 -> 16)
    embed_dim=None,  # overrides of the named size (tests, presets)
    depth=None,
    num_heads=None,
)

train = dict(
    epochs=10,
    batch_size=128,  # global batch per optimiser step (all processes, all accumulation steps)
    accum_iter=1,  # gradient accumulation: each step is accum_iter micro-batches of batch_size / accum_iter
    blr=1.5e-4,  # lr = blr * global_batch / 256
    min_lr=0.0,
    warmup_epochs=1,
    optimizer="adamw",  # adamw | sgd | lars (timm.optim.Lars: no decay/adaptation for biases and norms, as MAE)
    weight_decay=0.05,
    betas=(0.9, 0.95),
    momentum=0.9,  # sgd and lars only (betas are adamw's)
    grad_clip=None,
    device="auto",  # auto: cuda if available, else cpu
    amp="auto",  # auto: bf16 autocast on CUDA only (it is ~10x slower on CPU)
    compile=False,
    num_workers=0,
    checkpoint_every=1,  # epochs
)

eval = dict(
    evaluators=["knn", "linear"],
    batch_size=256,
    knn=dict(ks=(10, 20, 100, 200), temperature=0.07, backend="auto"),
    # MAE's probe head (BatchNorm without affine + Linear), 90 epochs, warm-up 10. Optimiser: SGD
    # (momentum 0.9, blr 0.1) because LARS with trust 0.001 barely moves the head in the few hundred
    # iterations a small dataset gives (digits pixels, 3 seeds: benchmarks/results/
    # probe_optimizer_digits-2026-12-05-cpu.md). The Table-4
    # recipes in benchmarks/table4/ set optimizer="lars" as MAE does at ImageNet scale.
    # protocol: "cached" trains the head on the cached centre-crop features (cheap; small data);
    # "augmented" is MAE's own probe data: the frozen encoder's features of RandomResizedCrop
    # (crop_scale (0.08, 1)) + flip (flip_p 0.5) views, encoded every epoch, tested on the cached
    # centre crop (ssl_bench/eval/augmented_probe.py). The Table-4 recipes use "augmented".
    linear=dict(epochs=90, warmup_epochs=10, blr=0.1, batch_size=256, optimizer="sgd", protocol="cached"),
    baselines=["pixels", "random-init"],
    # which split the evaluators score: "test", or "val" (needs dataset.val_fraction; metrics are then
    # stored as val_knn_top1, val_linear_top1, ... and no test number exists for the run)
    split="test",
)
