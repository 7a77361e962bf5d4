# DiT-style DDM defaults: the starting point of the l-DAE deconstruction (METHODS.md sections 1.3, 4).
# One DenoisingMethod class serves both plugins, so this file starts from the l-DAE defaults and sets
# only what differs at the DiT end (plus the diffusion / nll / samples blocks only the DDM uses).
_base_ = ["../ldae/default_config.py"]

method = dict(
    name="ddm",
    # DiT runs on the LDM KL-f8 VAE latent. That VAE is trained with a *supervised* perceptual loss
    # (l-DAE Table 1 drops it) and is not available offline, so the default tokenizer is the patch PCA (inherited)
    # (Table 2's best, the first row of Table 3). tokenizer.name="conv-vae" gives the conv-VAE rows
    # (stride 8 at 256 px, 2x2 latent patches per token as DiT-L/2; fewer downsamplings on small images).
    # DiT's default diffusion: DDPM linear betas 1e-4 .. 0.02, T = 1000, t ~ U{0..999}.
    schedule=dict(name="linear", T=1000),
    # Improved-DDPM objective (plugins/ddm/method.py): DiT's learn_sigma (LEARNED_RANGE, DiT output
    # channels doubled) + hybrid loss mse + (T/1000) vb with the mean detached in vb ("mse" == DiT's
    # MSE type at T = 1000). var_type fixed_small | fixed_large drop the variance head; loss_type kl /
    # rescaled_kl train on the VLB. timestep_sampler "loss-second-moment" = IDDPM importance sampling
    # (loss weights 1/(T p_t), state in the checkpoint). enabled "auto": on whenever the config is a
    # DDPM (eps, noise target, latent in/out, beta schedule); the deconstruction rows beyond that fall
    # back to the DenoisingMethod loss. True makes a non-DDPM config an error.
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
    prediction="eps",
    input_space="latent",
    output_space="latent",
    target="noise",
    # Class conditioning (DiT's Table-1 baseline, not a legitimate SSL result) is off, as in l-DAE; with
    # class_cond=True labels are used (uses_labels is recorded) and dropped to the null class with
    # probability class_dropout; the probe then conditions on the null class.
    dit=dict(cond_hidden_ratio=None),  # DiT's own adaLN (a single Linear(D, 6D) per block)
    augment=dict(crop_scale=None, flip_p=0.0),  # l-DAE trains its DiT baseline on center crops only
)

# DiT: AdamW, lr 1e-4 at batch 256 (blr 1e-4), no weight decay, betas (0.9, 0.999). DiT keeps the lr
# constant; the harness loop decays it by cosine (no warm-up here). No EMA (DiT uses it for sampling only).
# CPU-sized blr 1e-3 = 10x DiT's 1e-4 (benchmarks keep 1e-4), as l-DAE's; digits, vit-nano, 10 epochs:
# k-NN 51.7%, linear 86.1%. Only the warm-up differs from the l-DAE defaults.
train = dict(warmup_epochs=0)
