# Table 3, row 6: "+ predict original image" = l-DAE (Eq. 4): target the original image, loss in the
# full PCA basis with weight 1 on the d latent directions and 0.1 on the rest. Paper 64.5 %.
# Resolved, every key of the l-DAE plugin's default config has its ldae value (`ssl-bench run ldae`;
# tests/test_deconstruct.py checks it and that both train identically).
_base_ = ["./t3_r5_image_output.py"]

method = dict(target=dict(name="original-image", residual_weight=0.1))
