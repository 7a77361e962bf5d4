# Table 3, row 2: "+ predict clean data" (x0-prediction, Eq. 3) with lambda_t = gamma_t^2 (the noise
# schedule's x0 weighting on a variance-preserving schedule), paper 62.4 %. Only the target changes
# (the previous row already dropped the learned variance and the VLB).
_base_ = ["./t3_r1b_no_learned_variance.py"]

method = dict(target=dict(name="clean-latent"))
