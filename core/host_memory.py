"""How much system memory is free right now, read from the OS without extra packages.

Used to refuse a clip size whose frames could never fit before any model is loaded or any
step is sampled. ``None`` when the OS does not say (the check is then skipped).
"""
from __future__ import annotations

import os


def available_ram_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), else free physical pages (other Unix)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def gib(n_bytes: float) -> str:
    """Bytes for people: GB with one decimal, MB below a gigabyte."""
    if abs(n_bytes) < 1024 ** 3:
        return f"{n_bytes / 1024 ** 2:.0f} MB"
    return f"{n_bytes / 1024 ** 3:.1f} GB"


def allocator_peak_bytes(fn) -> int:
    """Peak bytes PyTorch's CPU allocator held above the start while ``fn`` ran (from the
    profiler's memory events). What the memory plan's estimates are checked against."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    now = peak = 0
    for _, change in events:
        now += change
        peak = max(peak, now)
    return peak
