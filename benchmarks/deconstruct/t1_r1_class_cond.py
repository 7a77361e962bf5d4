# Table 1, row 1: "DiT baseline" (class-conditional DDM), paper 57.5 % (not a legitimate SSL result).
# Root of the deconstruction chain: the DiT DDM defaults of plugins/ddm (linear betas, T = 1000,
# eps-prediction, latent in / latent out) plus what this row needs.
#
# Substitution: the paper's tokenizer is the LDM "VQGAN" (KL-f8), trained with a perceptual loss
# on a *supervised* VGG and an adversarial loss; neither is available label-free, so we start from
# the retrained conv VAE (recon + KL only) that Table 1 reaches in row 4. d = 16 per token (4 latent
# channels x 2x2 latent patch) at 256 px; on smaller images d scales as a fraction of the token
# dimension (latent_ratio = 16/768, see README.md). Class conditioning uses the labels: the run is
# recorded with uses_labels = True.
_base_ = ["../../plugins/ddm/default_config.py"]

method = dict(
    tokenizer=dict(name="conv-vae", latent_ratio=16 / 768),
    class_cond=True,
    # App. A applies to every row: per-block two-layer t-MLP with hidden D/4 (as plugins/ldae).
    dit=dict(cond_hidden_ratio=0.25),
)

# One pre-training recipe for the whole chain (App. A: warm-up then cosine, no weight decay), the
# CPU-sized one of plugins/ldae, so the final row is exactly `ssl-bench run ldae`.
train = dict(warmup_epochs=2)
