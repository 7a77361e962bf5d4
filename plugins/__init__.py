"""First-party method plugins, installed as ``ssl_bench_plugins`` and registered by entry points."""
