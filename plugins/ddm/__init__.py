"""DiT-style denoising diffusion model (the starting point l-DAE deconstructs), as a method plugin."""

from ssl_bench.hookspecs import hookimpl


@hookimpl
def ssl_bench_methods():
    from ssl_bench_plugins.ddm.method import DDM

    return {"ddm": DDM}
