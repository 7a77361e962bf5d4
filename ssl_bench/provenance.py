"""Where a number came from: git commit and package versions, stored with every run."""

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
