# Table 1, row 5: "+ replace noise schedule": gamma_t^2 decays linearly from 1 to 0 (sigma_t^2 =
# 1 - gamma_t^2, l-DAE §4.1 and Fig. 3), paper 63.4 %. Also Table 2's conv-VAE d = 16 entry (same run).
_base_ = ["./t1_r4_conv_vae.py"]

method = dict(noise_schedule=dict(name="gamma2-linear"))
