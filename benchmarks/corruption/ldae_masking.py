# Masking vs additive latent noise, DiT network (l-DAE's): identical to ldae_noise.py except the
# corruption: MAE's random masking of 75% of the PCA tokens (the DiT encoder half reads only the
# visible tokens; the loss counts the removed ones). The noise schedule is kept (unused by masking)
# so that the two files differ in method.corruption only.
method = dict(
    noise_schedule=dict(name="sigma-linear", T=1000),
    corruption=dict(name="random-masking", mask_ratio=0.75),
)
