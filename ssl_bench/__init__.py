"""ssl-bench: one harness, every SSL method a plugin, every method scored by the same evaluators."""

__version__ = "0.1.0"
