"""RotNet as an ssl-bench plugin: predict which of 4 rotations was applied to each image."""

from ssl_bench.hookspecs import hookimpl


@hookimpl
def ssl_bench_methods():
    from ssl_bench_rotnet.method import RotNet

    return {"rotnet": RotNet}
