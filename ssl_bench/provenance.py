"""Where a number came from: git commit, package versions and torch's thread count, stored with every run."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
from pathlib import Path

PACKAGES = ("ssl-bench", "torch", "torchvision", "timm", "faiss-cpu", "faiss-gpu-cu12", "scikit-learn", "pandas", "numpy")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def torch_num_threads() -> int:
    """``torch.get_num_threads()``: intra-op threads change the order of floating-point sums, so
    metrics are byte-identical only for the same config, seed, machine *and* thread count."""
    import torch  # the ground floor imports torch only when asked

    return int(torch.get_num_threads())


def run_versions() -> dict[str, str | int]:
    """A run's ``versions_json``: :func:`package_versions` plus ``torch_num_threads``."""
    return {**package_versions(), "torch_num_threads": torch_num_threads()}
