"""l-DAE plugin (Chen et al. 2024, "Deconstructing Denoising Diffusion Models for SSL")."""

from ssl_bench.hookspecs import hookimpl


@hookimpl
def ssl_bench_methods():
    from ssl_bench_plugins.ldae.method import LDAE

    return {"ldae": LDAE}
