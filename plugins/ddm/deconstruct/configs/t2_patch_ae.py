# Table 2, "patch-wise AE" row: the patch VAE without the KL term. d = 16 (Fig. 6 value 64.7 %).
_base_ = ["./t2_patch_vae.py"]

method = dict(tokenizer=dict(name="patch-ae"))
