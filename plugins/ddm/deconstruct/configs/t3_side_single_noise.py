# Table 3 side study: "single noise level" sigma = sqrt(1/3) for every sample (gamma = 1), the t
# condition fixed at the matching sigma-linear step (408 of 1000); the probe uses the same t.
# Paper 61.5 % (vs 64.5 % for the multi-level l-DAE).
_base_ = ["./t3_r6_ldae.py"]

method = dict(noise_schedule=dict(name="constant-sigma", sigma=(1 / 3) ** 0.5))
