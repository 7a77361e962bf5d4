# Table 3, row 2: "+ predict clean data" (x0-prediction, Eq. 3) with lambda_t = gamma_t^2 (the
# schedule's x0 weighting on a VP schedule), paper 62.4 %.
_base_ = ["./t2_patch_pca.py"]

method = dict(prediction="x0", target="clean-latent")
