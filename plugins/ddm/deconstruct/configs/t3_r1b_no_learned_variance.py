# Between Table 3 rows 1 and 2 (not a row of the paper): drop DiT's learned variance and the VLB term,
# keep eps-prediction. The paper's "+ predict clean data" row also leaves the DDPM objective (its Eq. 3
# has no variance term), i.e. it changes two things at once; this row separates them, so that the next
# row changes only the target. With the DDPM objective off, the loss is plain L_simple (eps MSE,
# lambda_t = 1).
_base_ = ["./t2_patch_pca.py"]

method = dict(diffusion=dict(enabled=False))
