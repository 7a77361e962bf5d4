"""MAE plugin: registered through the `ssl_bench` entry-point group like any third-party package."""

from ssl_bench.hookspecs import hookimpl


@hookimpl
def ssl_bench_methods():
    from ssl_bench_plugins.mae.method import MAE

    return {"mae": MAE}
