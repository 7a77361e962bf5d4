# l-DAE defaults (Chen et al. 2024, §4.3 Eq. 4 and App. A; choices where the paper is silent are noted).
# The denoising base (ssl_bench/configs/denoising.py, shared with ddm: patch-wise PCA tokenizer,
# additive latent noise, DiT blocks, [-1, 1] pixels, centre crops, the t = 10 probe, no weight decay)
# plus the deconstruction's final changes below. Every part is built by name from the registry: any
# registered tokenizer / noise schedule / corruption / target (third-party ones included) can replace
# these with --set method.<part>.name=...
_base_ = "../../ssl_bench/configs/denoising.py"

method = dict(
    name="ldae",
    # gamma = 1, sigma_t = sqrt(2) * t / T, T = 1000 (the base's) (sigma_10 = 0.0141) (§4.3 "remove input scaling").
    noise_schedule=dict(name="sigma-linear"),
    # The original image, error in the full PCA basis: weight 1 on the d latent directions, 0.1 on the
    # D - d others, lambda_t = 1/(1+sigma_t^2) (Eq. 4).
    target=dict(name="original-image", residual_weight=0.1),
    input_space="image",  # the noisy image = inverse PCA of the noisy latent (§4.3)
    # l-DAE's per-block t-MLP D -> D/4 -> 6D (App. A; None: DiT's single Linear(D, 6D)).
    dit=dict(cond_hidden_ratio=0.25),
)

# l-DAE App. A: warm-up 100 of 400 epochs then cosine; CPU-sized here (benchmarks/table4 has the paper's).
train = dict(warmup_epochs=2)
