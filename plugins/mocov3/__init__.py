"""MoCo v3 plugin: registered through the `ssl_bench` entry-point group like any third-party package."""

from ssl_bench.hookspecs import hookimpl


@hookimpl
def ssl_bench_methods():
    from ssl_bench_plugins.mocov3.method import MoCoV3

    return {"mocov3": MoCoV3}
