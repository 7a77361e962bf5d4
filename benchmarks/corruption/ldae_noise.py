# Masking vs additive latent noise, DiT network (l-DAE's): patch-PCA tokenizer, the original-image
# target (Eq. 4 weights), the noisy image by inverse PCA as input. This file: additive latent noise,
# sigma linear 0 -> sqrt 2 (l-DAE's corruption). Its twin ldae_masking.py differs only in
# method.corruption. Run: ssl-bench run ldae --config benchmarks/corruption/ldae_noise.py
method = dict(
    noise_schedule=dict(name="sigma-linear", T=1000),
    corruption=dict(name="additive-latent-noise"),
)
