"""Method scaffolding shared by the plugins: the reconstruction pipeline (``reconstruction``), its
DiT-based denoising form (``denoising``), and building parts by name from the registry (``parts``)."""
