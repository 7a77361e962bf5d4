# Masking vs additive latent noise, MAE network (ViT encoder + MAE decoder): identical to
# mae_masking.py except the corruption: additive noise, sigma linear 0 -> sqrt 2, in the identity
# tokenizer's latent (the normalised pixels), i.e. a classical denoising autoencoder with MAE's
# encoder and decoder; the loss counts every token (all are corrupted).
method = dict(
    noise_schedule=dict(name="sigma-linear", T=1000),
    corruption=dict(name="additive-latent-noise"),
)
