"""Probe registry: every probe, the devices it runs on, and whether it can run here."""

from dataclasses import dataclass
from typing import Callable


MEMORY_DTYPES = ("fp64", "fp32")
DECODE_OPTIONS = ("impl", "dtype", "seq_len", "heads", "kv_heads", "head_dim", "batch")


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    devices: tuple
    description: str
    runner: str  # "module:function" taking a harness.workload.Context, returning a profile section
    dtypes: tuple = MEMORY_DTYPES  # valid --dtype values
    options: tuple = ("dtype",)  # valid probe options


PROBES = {
    "stream": ProbeSpec("stream", ("cpu",), "STREAM copy/scale/add/triad and read-only sum, fp64 and fp32, "
                        "arrays 8x the last-level cache", "probes.cpu_stream:run_stream"),
    "hierarchy": ProbeSpec("hierarchy", ("cpu",), "read bandwidth swept over working sets from L1 to DRAM",
                           "probes.cpu_stream:run_hierarchy"),
    "peak": ProbeSpec("peak", ("cpu",), "FMA-chain peak FLOP/s, fp64 and fp32, vectorised",
                      "probes.cpu_peak:run_peak"),
    "threads": ProbeSpec("threads", ("cpu",), "thread sweep 1..N of triad bandwidth and fp32 peak",
                         "probes.cpu_threads:run_thread_sweep", options=()),
    "decode": ProbeSpec("decode", ("cpu",), "decode attention (numba-fused, torch-sdpa, torch-naive) against "
                        "a KV cache, checked against float64", "probes.cpu_decode:run_decode",
                        dtypes=("fp32", "bf16", "fp16", "int8"), options=DECODE_OPTIONS),
}


def cpu_unavailable_reason():
    """None if the CPU probes can run here, else why not."""
    try:
        import numba  # noqa: F401
    except ImportError as e:
        return f"numba is not importable ({e}); run `make setup`"
    return None


def unavailable_reason(spec, device):
    """None if `spec` can run on `device` here, else the reason."""
    if device not in spec.devices:
        return f"probe {spec.name} has no {device} implementation yet (devices: {', '.join(spec.devices)})"
    return cpu_unavailable_reason()


def load_runner(spec) -> Callable:
    """Import the probe's module lazily (backends must not load on `import harness`)."""
    import importlib

    module, func = spec.runner.split(":")
    return getattr(importlib.import_module(module), func)
