"""DiT-style denoising diffusion model (the starting point l-DAE deconstructs), as a method plugin,
with its subcommands `ssl-bench deconstruct` (the paper's chain) and `ssl-bench sample`."""

from ssl_bench.hookspecs import hookimpl


@hookimpl
def ssl_bench_methods():
    from ssl_bench_plugins.ddm.method import DDM

    return {"ddm": DDM}


@hookimpl
def ssl_bench_commands():
    from ssl_bench_plugins.ddm.commands import DeconstructCommand, SampleCommand

    return {"deconstruct": DeconstructCommand, "sample": SampleCommand}
