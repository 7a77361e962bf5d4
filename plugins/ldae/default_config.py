# l-DAE defaults (Chen et al. 2024, §4.3 Eq. 4 and App. A; choices where the paper is silent are noted).
# Every part is built by name from the registry: any registered tokenizer / noise schedule /
# corruption / target (third-party ones included) can replace these with --set method.<part>.name=...
method = dict(
    name="ldae",
    # Patch-wise PCA (§4.2): d = latent_dim, or None -> round(D * latent_ratio) with D = p*p*C, at
    # least min_latent_dim and at most D - 1: d = 32 at 16x16x3 (the paper's), 8 at 8x8x3, 2 at 4x4x3
    # (CIFAR) and 2x2x1 (digits). Other tokenizers: patch-ae / patch-vae (steps, lr, batch_size,
    # kl_weight), conv-vae (latent_channels, width, num_down, ...), patch / pixel (identity).
    tokenizer=dict(
        name="patch-pca",
        latent_dim=None,
        latent_ratio=32 / 768,
        min_latent_dim=2,
        num_samples=100_000,  # PCA patches, sampled at random from the training split
        center=True,  # mean-centred PCA (the paper does not say; the mean cancels in the loss)
        latent_scale=1.0,  # 1.0: VV^T = I, no rescaling (as stated); "auto": unit average latent variance
    ),
    fit=dict(patches_per_image=16, max_images=10_000),
    # gamma = 1, sigma_t = sqrt(2) * t / T, T = 1000 (sigma_10 = 0.0141) (§4.3 "remove input scaling").
    noise_schedule=dict(name="sigma-linear", T=1000),
    corruption=dict(name="additive-latent-noise"),  # z_t = z0 + sigma_t eps in the PCA latent
    # The original image, error in the full PCA basis: weight 1 on the d latent directions, 0.1 on the
    # D - d others, lambda_t = 1/(1+sigma_t^2) (Eq. 4).
    target=dict(name="original-image", residual_weight=0.1),
    input_space="image",  # the noisy image = inverse PCA of the noisy latent (§4.3)
    class_cond=False,
    class_dropout=0.1,
    # DiT blocks of the backbone's width / heads. encoder_depth None -> backbone depth; decoder_depth
    # None -> same as the encoder. cond_hidden_ratio: l-DAE's per-block t-MLP D -> D/4 -> 6D (App. A;
    # None: DiT's single Linear(D, 6D)).
    dit=dict(encoder_depth=None, decoder_depth=None, cond_hidden_ratio=0.25, mlp_ratio=4.0),
    image_norm="minus1_1",  # DiT's [-1, 1] pixels (the paper does not say; DiT's choice); "dataset" = mean/std
    image_size=None,  # resize (the pixel tokenizer of Fig. 5: 64 px with a 4 px patch); None = dataset's
    augment=dict(crop_scale=None, flip_p=0.0),  # l-DAE: center crop only (§5); random crop: crop_scale=(0.2, 1.0)
    # Probe: encoder output (first half), average-pooled, at fixed t = 10 with clean input (App. A).
    probe=dict(t=None, input="clean", block=None, noise_seed=0),  # t None: 10 (constant-sigma: its t_fixed)
    figures=True,  # PCA filters, latent-vs-pixel noise, denoising examples into the run dir
)

# l-DAE App. A: no weight decay, blr 1e-4 (x batch / 256), warm-up 100 of 400 epochs then cosine.
# The optimiser is not named: AdamW with betas (0.9, 0.999) (DiT's), no EMA. Epochs / batch are CPU-sized here.
train = dict(
    # CPU-sized: 10x the paper's 1e-4 (benchmarks/table4 keeps 1e-4). Digits, vit-nano, 10 epochs:
    # blr 1e-4 -> k-NN 25.3% / linear 41.9%; 1e-3 -> 31.1% / 75.8%.
    blr=1e-3,
    betas=(0.9, 0.999),
    weight_decay=0.0,
    epochs=10,
    warmup_epochs=2,
    batch_size=128,
)
