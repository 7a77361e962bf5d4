# Table 3, row 5: "+ operate on image output with inv. PCA": the network predicts pixels; the target
# is the inverse-PCA image V^T V x0 (+ mean). Paper 63.9 %. Like every pixel-space target, the
# prediction is the PCA mean patch plus the network output (a fixed offset), so this row regresses a
# centred quantity exactly as the latent rows before it do (README.md, "Centring").
_base_ = ["./t3_r4_image_input.py"]

method = dict(target=dict(name="inverse-tokenizer-image"))
