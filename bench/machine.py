"""What the benches print about the machine they ran on: the CPU and its load."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_line() -> str:
    """The CPU's model name and its bf16 features (what the encoders' "auto" selection looks at)."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name} ({', '.join(bf16) if bf16 else 'no avx512_bf16, no AMX'}), {os.cpu_count()} CPUs"


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"
