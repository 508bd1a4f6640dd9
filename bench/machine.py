"""The one-line machine description every benchmark prints first (results are per machine)."""

from __future__ import annotations

import os
import platform

import torch


def machine(**versions: str) -> str:
    """``machine: cpu=...; cores=...; python=...; torch=...; <versions>; os=...; load average=...``"""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    extra = "".join(f"; {name}={value}" for name, value in versions.items())
    return (f"machine: cpu={cpu}; cores={os.cpu_count()}; python={platform.python_version()}; "
            f"torch={torch.__version__}{extra}; os={platform.system()} {platform.release()}; "
            f"load average at start={os.getloadavg()[0]:.2f}")
