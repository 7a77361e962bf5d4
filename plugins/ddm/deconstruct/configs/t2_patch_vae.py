# Table 2, "patch-wise VAE" row: linear encoder V / decoder U on 16x16 patches (scaled: the
# backbone's patch), recon + KL, gamma^2-linear schedule, eps-prediction. d = 16 here (Fig. 6
# trajectory value 64.9 %); the d sweep sets method.tokenizer.latent_ratio = d / 768.
_base_ = ["./t1_r5_gamma2_linear.py"]

method = dict(tokenizer=dict(name="patch-vae"))
