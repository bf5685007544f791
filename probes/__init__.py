"""Probe registry: every probe, the devices it runs on, and whether it can run here."""

from dataclasses import dataclass, field
from typing import Callable


MEMORY_DTYPES = ("fp64", "fp32")
DECODE_OPTIONS = ("impl", "dtype", "seq_len", "heads", "kv_heads", "head_dim", "batch")


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    runners: dict  # device kind ("cpu", "gpu") -> "module:function" taking a Context, returning a section
    description: str
    dtypes: tuple = MEMORY_DTYPES  # valid --dtype values
    options: tuple = ("dtype",)  # valid probe options
    cpu_buffers: str = ""  # "module:function": {pool buffer: bytes} its CPU run will ask for (cpu_stream.POOL)
    elsewhere: dict = field(default_factory=dict)  # device kind it has no runner for -> why, or what runs there
    torch_impls: tuple = ()  # on the CPU, what of it torch runs: ("all",) or the impls left out without torch
    left_out: str = ""  # "module:function" giving {dtype: why} of the dtypes this CPU cannot run it for

    @property
    def devices(self):
        return tuple(self.runners)


PROBES = {
    "stream": ProbeSpec("stream", {"cpu": "probes.cpu_stream:run_stream", "gpu": "probes.gpu_stream:run_stream"},
                        "STREAM copy/scale/add/triad and read-only sum, fp64 and fp32, arrays 4x the last-level "
                        "cache and at least 256 MiB (4x the L2 on GPU)", cpu_buffers="probes.cpu_stream:stream_buffers"),
    "hierarchy": ProbeSpec("hierarchy", {"cpu": "probes.cpu_stream:run_hierarchy",
                                         "gpu": "probes.gpu_stream:run_hierarchy"},
                           "read bandwidth swept over working sets from L1 to DRAM (L1, L2 and HBM or GDDR on GPU)",
                           cpu_buffers="probes.cpu_stream:hierarchy_buffers"),
    "peak": ProbeSpec("peak", {"cpu": "probes.cpu_peak:run_peak", "gpu": "probes.gpu_peak:run_peak"},
                      "FMA-chain peak FLOP/s, fp64, fp32 and fp16 (where the CPU has native fp16 FMAs: AVX512-FP16, "
                      "Arm FP16; half2 on GPU, with tensor-core matmul), chains checked exactly",
                      dtypes=("fp64", "fp32", "fp16"), left_out="probes.cpu_peak:peak_left_out"),
    "dot": ProbeSpec("dot", {"cpu": "probes.cpu_dot:run_dot"},
                     "bf16 and int8 dot-product peaks (AVX512-BF16 vdpbf16ps, AVX512-VNNI or AVX-VNNI vpdpbusd, Arm sdot), "
                     "chains checked exactly", dtypes=("bf16", "int8"), left_out="probes.cpu_dot:dot_left_out",
                     elsewhere={"gpu": "a GPU's bf16 and int8 rates are its tensor-core matmuls "
                                       "(harness probe peak --device gpu0)"}),
    "matmul": ProbeSpec("matmul", {"cpu": "probes.cpu_matmul:run_matmul"},
                        "matmul peaks through torch (oneDNN: AVX-512 BF16, VNNI, AMX), fp32, bf16, fp16 and int8, "
                        "checked against float64 (a GPU's tensor-core matmuls are in its peak probe)", dtypes=(),
                        options=(), torch_impls=("all",),
                        elsewhere={"gpu": "a GPU's tensor-core matmuls are timed by its peak probe "
                                          "(harness probe peak --device gpu0)"}),
    "threads": ProbeSpec("threads", {"cpu": "probes.cpu_threads:run_thread_sweep"},
                         "thread sweep 1..N of triad bandwidth and fp32 peak", options=(),
                         cpu_buffers="probes.cpu_stream:stream_buffers",
                         elsewhere={"gpu": "it sweeps CPU threads; a GPU's probes size their own launches"}),
    "decode": ProbeSpec("decode", {"cpu": "probes.cpu_decode:run_decode", "gpu": "probes.gpu_decode:run_decode"},
                        "decode attention (numba-fused or cupy-fused, torch-sdpa, torch-naive) against a KV cache, "
                        "checked against float64", dtypes=("fp32", "bf16", "fp16", "int8"), options=DECODE_OPTIONS,
                        cpu_buffers="probes.cpu_decode:decode_buffers", torch_impls=("torch-sdpa", "torch-naive")),
}


def cpu_unavailable_reason():
    """None if the CPU probes can run here, else why not."""
    try:
        import numba  # noqa: F401
    except ImportError as e:
        return f"numba is not importable ({e}); run `make setup`"
    return None


def torch_unavailable_reason():
    """None if torch imports here, else why not."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return f"torch is not importable ({e})"
    return None


def torch_left_out(spec):
    """On the CPU, what of `spec` torch's absence leaves out here: (all of it?, phrase), or (False,
    None). The probe itself still runs and records the reason (a profile without torch is whole)."""
    why = torch_unavailable_reason() if spec.torch_impls else None
    if not why:
        return False, None
    return (True, why) if spec.torch_impls == ("all",) else (False, f"{', '.join(spec.torch_impls)} left out: {why}")


def cpu_left_out(spec):
    """On the CPU, what of `spec` cannot run here: (all of it?, phrase or None), from torch's absence
    (torch_left_out) and the probe's own limits (its `left_out`: fp16 chains without native fp16,
    dot products without their instructions), the dtypes that share a reason named together."""
    nothing, phrase = torch_left_out(spec)
    own = _load(spec.left_out)() if spec.left_out and not nothing else {}
    by_reason = {}
    for dtype, why in own.items():
        by_reason.setdefault(why, []).append(dtype)
    phrases = [phrase] + [f"{' and '.join(dtypes)} left out: {why}" for why, dtypes in by_reason.items()]
    return nothing or bool(own) and set(own) >= set(spec.dtypes), "; ".join(p for p in phrases if p) or None


def unavailable_reason(spec, device):
    """None if `spec` can run on `device` ("cpu" or "gpu") here, else the reason."""
    if device not in spec.devices:
        return (f"probe {spec.name} does not run on {device}: "
                + spec.elsewhere.get(device, f"it has no {device} implementation (devices: {', '.join(spec.devices)})"))
    if device == "gpu":
        from probes.gpu_common import cupy_unavailable_reason

        return cupy_unavailable_reason()
    return cpu_unavailable_reason()


def _load(target):
    """The function a "module:function" string names, imported now (backends must not load on
    `import harness`)."""
    import importlib

    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def load_runner(spec, device="cpu") -> Callable:
    """The probe's runner for a device, its module imported lazily."""
    return _load(spec.runners[device])


def reserve_cpu_buffers(ctx, names):
    """Size the buffers the CPU probes share for the largest requests these probes will make in
    this run (probes/cpu_stream.reserve_pool: each then pages in once); {buffer: bytes} reserved,
    nothing where the CPU probes cannot run."""
    if cpu_unavailable_reason():
        return {}
    needs = {}
    for spec in filter(None, (PROBES.get(name) for name in names)):
        for buffer, nbytes in (_load(spec.cpu_buffers)(ctx) if spec.cpu_buffers else {}).items():
            needs[buffer] = max(needs.get(buffer, 0), nbytes)
    _load("probes.cpu_stream:reserve_pool")(needs)
    return needs
