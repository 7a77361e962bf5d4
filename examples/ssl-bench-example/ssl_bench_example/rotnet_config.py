# RotNet defaults (CPU-sized): loaded by ssl_bench_example.rotnet.RotNet.default_config.
method = dict(name="rotnet", probe_pool="cls", flip_p=0.5)
train = dict(blr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), epochs=10, warmup_epochs=1)
