# Table 3, row 4: "+ operate on image input with inv. PCA": the network sees the noisy image
# V^T (V x0 + sigma eps) (+ mean) through a plain ViT patchifier; output stays latent. Paper 63.6 %.
_base_ = ["./t3_r3_no_input_scaling.py"]

method = dict(input_space="image")
