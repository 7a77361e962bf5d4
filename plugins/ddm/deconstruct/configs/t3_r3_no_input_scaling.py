# Table 3, row 3: "+ remove input scaling": gamma_t = 1, sigma_t linear 0 -> sqrt(2) (T = 1000),
# lambda_t = 1 / (1 + sigma_t^2) (the same x0 weighting rule on this schedule), paper 63.6 %.
_base_ = ["./t3_r2_predict_clean.py"]

method = dict(noise_schedule=dict(name="sigma-linear"))
