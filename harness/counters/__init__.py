"""Hardware counters: count what one probe run really did, or say clearly why nothing was counted.

Adapters: `perf` (CPU, harness/counters/perf.py) and `ncu` (NVIDIA GPUs, harness/counters/ncu.py).
Every measurement's `counters` block has the same keys whatever the source:
  source      perf | ncu | unavailable
  reason      why a figure is missing (null when everything was counted)
  dram_bytes  counted DRAM bytes per call (or an LLC-miss estimate, labelled in dram_bytes_source)
  flops       counted floating-point operations per call
  intensity   flops / dram_bytes
  bytes_ratio dram_bytes / the model's bytes (below 1 at small caches: the cache served part of it)
"""

MODES = ("auto", "off", "perf", "ncu")


def block(source, reason, dram_bytes=None, flops=None, model_bytes=None, **extra):
    """A counters block, with intensity and bytes_ratio derived where both sides are known."""
    return {
        "source": source, "reason": reason, "dram_bytes": dram_bytes, "flops": flops,
        "intensity": flops / dram_bytes if flops and dram_bytes else None,
        "bytes_ratio": dram_bytes / model_bytes if dram_bytes and model_bytes else None,
        **extra,
    }


def unavailable(reason):
    return block("unavailable", reason)


def check_mode(mode, device="all"):
    """`mode`, refused where it is not a mode or cannot count `device` (cpu, gpu, all or gpuN):
    perf counts CPU probes, ncu GPU probes."""
    from harness.errors import HarnessError

    if mode not in MODES:
        raise HarnessError(f"--counters {mode!r} is invalid: choose {', '.join(MODES)}")
    if mode == "ncu" and device == "cpu":
        raise HarnessError("--counters ncu counts GPU probes; the CPU is counted by perf (--counters perf or auto)")
    if mode == "perf" and device.startswith("gpu"):
        raise HarnessError(f"--counters perf counts CPU probes; {device} is counted by ncu (--counters ncu or auto)")
    return mode
