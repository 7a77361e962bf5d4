# Table 3, row 6: "+ predict original image" = l-DAE (Eq. 4): target the original image, loss in the
# full PCA basis with weight 1 on the d latent directions and 0.1 on the rest. Paper 64.5 %.
# Resolved, every key of plugins/ldae/default_config.py has its ldae value (`ssl-bench run ldae`);
# the DDM-only keys inherited from the chain's root are not read by the ldae method.
_base_ = ["./t3_r5_image_output.py"]

method = dict(target="original-image", residual_weight=0.1)  # 0.1 is inherited; restated for the reader
