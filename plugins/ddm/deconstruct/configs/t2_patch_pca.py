# Table 2, "patch-wise PCA" row: orthonormal PCA bases from eigendecomposition (no gradient
# training), d = 32 (paper 65.1 %, the best of Table 2). This is also Table 3's first row.
_base_ = ["./t2_patch_ae.py"]

method = dict(tokenizer=dict(name="patch-pca", latent_ratio=32 / 768))
