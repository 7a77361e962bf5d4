"""Helpers shared by the benchmark scripts: device description and result files."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def save_result(name: str, text: str, device: torch.device, command: str) -> Path:
    """Write `text` to benchmarks/results/<name>-<date>-<device>.md with date, device and command."""
    RESULTS.mkdir(exist_ok=True)
    today = dt.date.today().isoformat()
    path = RESULTS / f"{name}-{today}-{device.type}.md"
    header = f"# {name}\n\n- date: {today}\n- device: {device_description(device)}\n- torch: {torch.__version__}\n- command: `{command}`\n\n"
    path.write_text(header + text + "\n")
    return path
