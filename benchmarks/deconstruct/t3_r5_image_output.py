# Table 3, row 5: "+ operate on image output with inv. PCA": the network predicts pixels; the target
# is the inverse-PCA image V^T V x0 (+ mean). Paper 63.9 %.
_base_ = ["./t3_r4_image_input.py"]

method = dict(output_space="image", target="inverse-tokenizer-image")
