# DiT-style DDM defaults: the starting point of the l-DAE deconstruction (METHODS.md sections 1.3, 4).
# Same keys as plugins/ldae/default_config.py (one DenoisingMethod class); only the values differ.
method = dict(
    name="ddm",
    # DiT runs on the LDM KL-f8 VAE latent. That VAE is trained with a *supervised* perceptual loss
    # (l-DAE Table 1 drops it) and is not available offline, so the default tokenizer is the patch PCA
    # (Table 2's best, the first row of Table 3). tokenizer.name="conv-vae" gives the conv-VAE rows
    # (stride 8 at 256 px, 2x2 latent patches per token as DiT-L/2; fewer downsamplings on small images).
    tokenizer=dict(
        name="patch-pca",
        latent_dim=None,
        latent_ratio=32 / 768,
        min_latent_dim=2,
        num_samples=100_000,
        center=True,
        latent_scale=1.0,  # same latent as l-DAE so the deconstruction changes one thing at a time
        latent_channels=None,
        steps=None,
        lr=None,
        batch_size=None,
        kl_weight=None,
        width=None,
        num_down=None,
    ),
    fit=dict(patches_per_image=16, max_images=10_000),
    # DiT's default diffusion: DDPM linear betas 1e-4 .. 0.02, T = 1000, t ~ U{0..999}. learn_sigma and
    # the VLB term are dropped (METHODS 1.3 recommendation: they only matter for FID / sampling).
    schedule=dict(name="linear", T=1000),
    prediction="eps",
    input_space="latent",
    output_space="latent",
    target="noise",
    residual_weight=0.1,
    # Class conditioning (DiT's Table-1 baseline, not a legitimate SSL result) is off; with
    # class_cond=True labels are used (uses_labels is recorded) and dropped to the null class with
    # probability class_dropout; the probe then conditions on the null class.
    class_cond=False,
    class_dropout=0.1,
    dit=dict(encoder_depth=None, decoder_depth=None, cond_hidden_ratio=None, mlp_ratio=4.0),  # DiT's own adaLN
    image_norm="minus1_1",  # DiT: images in [-1, 1]
    image_size=None,
    augment=dict(crop_scale=None, flip_p=0.0),  # l-DAE trains its DiT baseline on center crops only
    probe=dict(t=10, input="clean", block=None, noise_seed=0),
    figures=True,
)

# DiT: AdamW, lr 1e-4 at batch 256 (blr 1e-4), no weight decay, betas (0.9, 0.999). DiT keeps the lr
# constant; the harness loop decays it by cosine (no warm-up here). No EMA (DiT uses it for sampling only).
train = dict(
    blr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.0,
    epochs=10,
    warmup_epochs=0,
    batch_size=128,
)
