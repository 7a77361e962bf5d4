# Masking vs additive latent noise, MAE network (ViT encoder + MAE decoder): identity patch tokenizer,
# normalised-pixel target. This file: MAE's random masking (75%). Its twin mae_noise.py differs only
# in method.corruption. The noise schedule is set (unused here) so the two files differ in the
# corruption only.
method = dict(
    noise_schedule=dict(name="sigma-linear", T=1000),
    corruption=dict(name="random-masking", mask_ratio=0.75),
)
