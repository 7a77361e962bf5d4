# l-DAE defaults (METHODS.md section 1; decisions on the section-7 open items are documented inline).
# Every deconstruction step of Tables 1-3 is one or more keys below; plugins/ddm is the DiT DDM end.
method = dict(
    name="ldae",
    # Tokenizer. patch-pca | patch-ae | patch-vae | conv-vae | pixel. The patch is the backbone's.
    # d: latent_dim, or None -> round(D * latent_ratio) with D = p*p*C, at least min_latent_dim and at
    # most D - 1: d = 32 at 16x16x3 (the paper's), 8 at 8x8x3, 2 at 4x4x3 (CIFAR) and 2x2x1 (digits).
    tokenizer=dict(
        name="patch-pca",
        latent_dim=None,
        latent_ratio=32 / 768,
        min_latent_dim=2,
        num_samples=100_000,  # PCA patches, sampled at random from the training split
        center=True,  # mean-centred PCA (UNVERIFIED in the paper; the mean cancels in the loss)
        latent_scale=1.0,  # 1.0: VV^T = I, no rescaling (as stated); "auto": unit average latent variance
        latent_channels=None,  # conv-vae only (None: d // 4)
        steps=None,  # patch-ae / patch-vae / conv-vae: Adam steps in fit (None: 300)
        lr=None,
        batch_size=None,
        kl_weight=None,  # patch-vae / conv-vae (None: 1e-3, UNVERIFIED)
        width=None,  # conv-vae channels (None: 64)
        num_down=None,  # conv-vae stride-2 convs (None: up to 3 keeping >= 4x4 tokens)
    ),
    fit=dict(patches_per_image=16, max_images=10_000),
    # Noise: gamma = 1, sigma_t = sqrt(2) * t / T, T = 1000 (sigma_10 = 0.0141). Any built-in schedule
    # name with its keyword arguments works, e.g. schedule=dict(name="gamma2-linear", T=1000).
    schedule=dict(name="sigma-linear", T=1000),
    prediction="x0",  # eps | x0
    input_space="image",  # latent | image (noisy image = inverse PCA of the noisy latent)
    output_space="image",  # latent | image
    target="original-image",  # noise | clean-latent | inverse-tokenizer-image | original-image | None (auto)
    residual_weight=0.1,  # Eq. 4: weight 1 on the d latent directions, 0.1 on the D - d others
    class_cond=False,
    class_dropout=0.1,
    # DiT blocks of the backbone's width / heads. encoder_depth None -> backbone depth; decoder_depth
    # None -> same as the encoder. cond_hidden_ratio: l-DAE's per-block t-MLP D -> D/4 -> 6D (None: DiT's
    # single Linear(D, 6D)).
    dit=dict(encoder_depth=None, decoder_depth=None, cond_hidden_ratio=0.25, mlp_ratio=4.0),
    image_norm="minus1_1",  # DiT's [-1, 1] pixels (METHODS recommendation); "dataset" = mean/std
    image_size=None,  # resize (the pixel tokenizer of Fig. 5: 64 px with a 4 px patch); None = dataset's
    augment=dict(crop_scale=None, flip_p=0.0),  # l-DAE: center crop only; random crop: crop_scale=(0.2, 1.0)
    # Probe: encoder output (first half), average-pooled, at fixed t = 10 with clean input.
    probe=dict(t=None, input="clean", block=None, noise_seed=0),  # t None: 10 (constant-sigma: its t_fixed)
    figures=True,  # PCA filters, latent-vs-pixel noise, denoising examples into the run dir
)

# l-DAE App. A: AdamW, no weight decay, blr 1e-4 (x batch / 256), warm-up 100 of 400 epochs then cosine.
# betas (0.9, 0.999) and no EMA are UNVERIFIED (DiT's). Epochs / batch are CPU-sized here.
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
