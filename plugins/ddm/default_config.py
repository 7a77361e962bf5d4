# DiT-style DDM defaults: the starting point of the l-DAE deconstruction (Chen et al. 2024, §3, §4.1;
# DiT, Peebles & Xie 2023; Improved DDPM, Nichol & Dhariwal 2021). The same core DenoisingMethod as
# l-DAE; these are the DiT end's settings.
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
        latent_scale=1.0,
    ),
    fit=dict(patches_per_image=16, max_images=10_000),
    # DiT's default diffusion: DDPM linear betas 1e-4 .. 0.02, T = 1000, t ~ U{0..999}.
    noise_schedule=dict(name="linear", T=1000),
    corruption=dict(name="additive-latent-noise"),
    target=dict(name="noise"),  # eps-prediction (DDPM L_simple, l-DAE Eq. 2)
    input_space="latent",  # the diffusion's data is the tokenizer latent laid out as an image
    # Improved-DDPM objective (plugins/ddm/method.py): DiT's learn_sigma (LEARNED_RANGE, DiT output
    # channels doubled) + hybrid loss mse + (T/1000) vb with the mean detached in vb ("mse" == DiT's
    # MSE type at T = 1000). var_type fixed_small | fixed_large drop the variance head; loss_type kl /
    # rescaled_kl train on the VLB. timestep_sampler "loss-second-moment" = IDDPM importance sampling
    # (loss weights 1/(T p_t), state in the checkpoint). enabled "auto": on whenever the config is a
    # DDPM (additive noise, noise target, latent in/out, beta schedule); other configs fall back to the
    # reconstruction pipeline's loss. True makes a non-DDPM config an error; False: plain L_simple.
    diffusion=dict(
        enabled="auto",
        var_type="learned_range",
        loss_type="mse",
        timestep_sampler="uniform",
        sampler_history=10,
        sampler_uniform_prob=0.001,
    ),
    # Test NLL (metric nll_bpd, evaluator "nll"): first num_images test images, t = 0..dense_t-1 plus
    # every stride_t-th step (step-interpolated, error estimates reported), full=True: all T terms.
    # With the default patch-PCA latent it is bits per *latent* dim under a continuous decoder (not
    # comparable with pixel bits/dim); tokenizer.name="pixel" gives the exact 8-bit image bits/dim.
    nll=dict(enabled=True, num_images=64, batch_size=64, dense_t=20, stride_t=50, full=False, seed=0),
    # samples.png in the run dir: DDIM (eta 0) or respaced ancestral DDPM; CFG only if class_cond.
    samples=dict(enabled=True, num=16, steps=50, sampler="ddim", cfg_scale=4.0, eta=0.0, seed=0),
    # Class conditioning (DiT's Table-1 baseline, not a legitimate SSL result) is off, as in l-DAE; with
    # class_cond=True labels are used (uses_labels is recorded) and dropped to the null class with
    # probability class_dropout; the probe then conditions on the null class.
    class_cond=False,
    class_dropout=0.1,
    # DiT's own adaLN (a single Linear(D, 6D) per block): cond_hidden_ratio None.
    dit=dict(encoder_depth=None, decoder_depth=None, cond_hidden_ratio=None, mlp_ratio=4.0),
    image_norm="minus1_1",  # DiT's [-1, 1] pixels
    image_size=None,
    augment=dict(crop_scale=None, flip_p=0.0),  # l-DAE trains its DiT baseline on center crops only
    probe=dict(t=None, input="clean", block=None, noise_seed=0),  # encoder half, avg-pooled, t = 10
    figures=True,
)

# DiT: AdamW, lr 1e-4 at batch 256 (blr 1e-4), no weight decay, betas (0.9, 0.999). DiT keeps the lr
# constant; the harness loop decays it by cosine (no warm-up here). No EMA (DiT uses it for sampling only).
# CPU-sized blr 1e-3 = 10x DiT's 1e-4 (benchmarks keep 1e-4), as l-DAE's; digits, vit-nano, 10 epochs:
# k-NN 51.7%, linear 86.1%.
train = dict(
    blr=1e-3,
    betas=(0.9, 0.999),
    weight_decay=0.0,
    epochs=10,
    warmup_epochs=0,
    batch_size=128,
)
