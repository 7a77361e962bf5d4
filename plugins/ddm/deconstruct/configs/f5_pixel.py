# Fig. 5: the naive pixel tokenizer (identity on patches, d = D) in the Table-2 DDM setting
# (gamma^2-linear, eps-prediction, latent in/out). The image is resized so that the token grid stays
# the backbone's: paper 256/128/64/32 px with patch 16/8/4/2 (d = 768/192/48/12); the sweep sets
# method.image_size (generated per dataset by chain.py, see README.md).
_base_ = ["./t2_patch_pca.py"]

method = dict(tokenizer=dict(name="pixel"))
