# A new method written as config alone: MAE in the PCA latent. The built-in mae network (ViT encoder
# on the visible tokens + MAE decoder) with the patch-PCA tokenizer, reading the latent laid out as an
# image (input_space='latent') and regressing the removed tokens' PCA coordinates.
#   ssl-bench run mae --config examples/configs/mae_pca_latent.py
method = dict(
    tokenizer=dict(name="patch-pca", latent_ratio=32 / 768),
    corruption=dict(name="random-masking", mask_ratio=0.75),
    target=dict(name="clean-latent"),  # regress the removed tokens' PCA coordinates
    input_space="latent",  # the ViT reads the latent laid out as an image
)
