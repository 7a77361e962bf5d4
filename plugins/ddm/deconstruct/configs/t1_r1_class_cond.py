# Table 1, row 1: "DiT baseline" (class-conditional DDM), paper 57.5 % (not a legitimate SSL result).
# Root of the deconstruction chain: these keys go on top of the DDM plugin's defaults (`ssl-bench run
# ddm`: linear betas, T = 1000, eps-prediction, latent in / latent out, DiT's learned variance and
# hybrid loss, as the paper's DiT baseline, §3). Every row is a run of `ddm`.
#
# Substitution: the paper's tokenizer is the LDM "VQGAN" (KL-f8), trained with a perceptual loss on a
# *supervised* VGG and an adversarial loss; neither is available label-free, so we start from the
# retrained conv VAE (recon + KL only) that Table 1 reaches in row 4. d = 16 per token (4 latent
# channels x 2x2 latent patch) at 256 px; on smaller images d scales as a fraction of the token
# dimension (latent_ratio = 16/768, README.md). Class conditioning uses the labels: the run is
# recorded with uses_labels = True.
method = dict(
    tokenizer=dict(name="conv-vae", latent_ratio=16 / 768),
    class_cond=True,
    # App. A applies to every row: per-block two-layer t-MLP with hidden D/4 (as l-DAE).
    dit=dict(cond_hidden_ratio=0.25),
)

# One pre-training recipe for the whole chain (App. A: warm-up then cosine, no weight decay), the
# CPU-sized one of `ssl-bench run ldae`, so the final row trains exactly as l-DAE does. The base lr
# was chosen by the recorded sweep in README.md ("Learning rate").
train = dict(warmup_epochs=2)
