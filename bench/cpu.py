"""What a benchmark's numbers were measured on: the CPU's name, logical CPUs and integer features.

int8 speed depends on the CPU's integer dot-product instructions more than
on anything else (XNNPACK picks its int8 kernels by them), so every
benchmark names them beside its figures.
"""

from __future__ import annotations

import os
import platform

# /proc/cpuinfo flags that decide int8 and float speed, in the order printed.
# x86: AVX2 and AVX-512 vectors, VNNI int8 dot products (AVX-512 or AVX), AMX tiles;
# Arm: the int8 dot-product (asimddp) and matrix-multiply (i8mm) extensions.
FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "asimddp", "i8mm")


def cpu_flags(cpuinfo: str | None = None) -> set:
    """The CPU's feature flags from /proc/cpuinfo (`flags` on x86, `Features` on Arm); empty where it is missing.

    `cpuinfo`: the file's text (default: read it).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


def describe_cpu() -> str:
    """E.g. `Intel(R) Xeon(R) Processor, 2 logical CPUs; int8 features: avx2 avx512f avx512bw avx512_vnni; no amx_int8`."""
    flags = cpu_flags()
    present = [name for name in FEATURES if name in flags]
    absent = [name for name in ("avx512_vnni", "avx_vnni", "amx_int8") if name not in flags] if platform.machine() in (
        "x86_64", "AMD64") else [name for name in ("asimddp", "i8mm") if name not in flags]
    return (f"{cpu_name()}, {os.cpu_count()} logical CPUs; integer features: {' '.join(present) or 'none found'}"
            + (f"; without {' '.join(absent)}" if absent else ""))
