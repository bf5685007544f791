"""Stand-ins for a GPU machine's libraries, so the GPU code paths run on a CPU-only machine.

FakeNVML answers like an H100 SXM. fake_cupy() is a NumPy-backed module with the slice of CuPy's
API the probes use; its RawModule emulates each of our CUDA kernels in NumPy (by kernel name, with
the launch geometry checked), so the probes' plumbing (launch arguments, poisoning, checks, records,
sections, profile, report) is exercised here. It proves nothing about the CUDA code itself, which
the test suite only compiles.
"""

import os
import re
import sys
import time
import types

import numpy as np


class FakeNVML:
    """The few NVML calls the harness makes, answering like an H100 SXM; `reasons` sets throttling."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def __init__(self, reasons=0, count=1):
        self.reasons, self.count = reasons, count

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h:08x}-5a5a"

    @staticmethod
    def pci_bus_id(i):
        """GPU i's PCI bus id as the CUDA runtime prints it (NVML's own has an 8-digit domain)."""
        return f"0000:{0x18 + i:02x}:00.0"

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        i = int(bus_id.split(":")[1], 16) - 0x18
        if not 0 <= i < self.count:
            raise self.NVMLError("Not Found")
        return i

    def nvmlDeviceGetPciInfo(self, h):
        return types.SimpleNamespace(busId=f"00000000:{0x18 + h:02X}:00.0")  # NVML's padding and case

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return (9, 0)

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("Mem", (), {"total": 85520809984})()

    def nvmlDeviceGetMemoryBusWidth(self, h):
        return 5120

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1755 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700000

    def nvmlSystemGetDriverVersion(self):
        return "580.82.07"

    def nvmlSystemGetCudaDriverVersion(self):
        return 13000

    def nvmlDeviceGetEccMode(self, h):
        return (1, 1)

    def nvmlDeviceGetMigMode(self, h):
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetPowerUsage(self, h):
        return 350000

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 45

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self.reasons


# --- the kernels of probes/cuda/*.cu, in NumPy -------------------------------------------------

def _stream(name, args):
    op, _ = name.split("_")
    if op == "copy":
        a, c, _n = args
        c[:] = a
    elif op == "scale":
        b, c, s, _n = args
        b[:] = s * c
    elif op == "add":
        a, b, c, _n = args
        c[:] = a + b
    elif op == "triad":
        a, b, c, s, _n = args
        a[:] = b + s * c
    elif op == "read":
        a, partial, _n = args
        partial[:] = 0
        partial[0] = a.astype(np.float64).sum()


def _read_reps(args):
    a, partial, n_vectors, reps = args
    partial[:] = 0
    partial[0] = int(reps) * a[: int(n_vectors) * 4].astype(np.float64).sum()


def _fma(name, grid, block, args):
    out, x, y, iters = args
    dtype = {"fma_fp64": np.float64, "fma_fp32": np.float32, "fma_fp16": np.float16}[name]
    a = (0.5 + 0.0625 * np.arange(8)).astype(dtype)
    for _ in range(int(iters)):
        a = (a * dtype(x) + dtype(y)).astype(dtype)
    total = a.astype(np.float64).sum() * (2 if name == "fma_fp16" else 1)  # half2: two lanes
    assert out.size == grid[0] * block[0]
    out[:] = total


def _widen(stored, scale, ctype):
    if ctype == "float":
        return stored.astype(np.float64)
    if ctype == "__half":
        return stored.view(np.float16).astype(np.float64)
    if ctype == "__nv_bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return stored.astype(np.float64) * scale.astype(np.float64)[:, None]


def _decode_partial(name, grid, block, args, shared_mem):
    ctype, head_dim, group = re.fullmatch(r"decode_partial<(.+), (\d+), (\d+)>", name).groups()
    head_dim, group = int(head_dim), int(group)
    q, k, v, ks, vs, po, pm, pl, heads, kv_heads, seq_len, chunk_len = args
    heads, kv_heads, seq_len, chunk_len = int(heads), int(kv_heads), int(seq_len), int(chunk_len)
    chunks, bkv = grid
    assert block == (256,), block
    assert chunks * chunk_len >= seq_len > (chunks - 1) * chunk_len
    assert shared_mem >= 4 * group * max(chunk_len, head_dim)  # scores, then the block's output
    scaled = ctype == "signed char"
    for bh in range(bkv):
        b, h = divmod(bh, kv_heads)
        for c in range(chunks):
            r0, r1 = bh * seq_len + c * chunk_len, bh * seq_len + min(seq_len, (c + 1) * chunk_len)
            kc = _widen(k[r0:r1], ks[r0:r1] if scaled else None, ctype)
            vc = _widen(v[r0:r1], vs[r0:r1] if scaled else None, ctype)
            for g in range(group):
                s = kc @ q[b * heads + h * group + g].astype(np.float64) / np.sqrt(head_dim)
                slot = (c * bkv + bh) * group + g
                pm[slot] = s.max()
                p = np.exp(s - s.max())
                pl[slot] = p.sum()
                po[slot] = p @ vc


def _decode_merge(grid, args):
    po, pm, pl, out, chunks, bkv, group, heads, kv_heads, _head_dim = args
    for bh in range(int(bkv)):
        b, h = divmod(bh, int(kv_heads))
        for g in range(int(group)):
            slots = [(c * int(bkv) + bh) * int(group) + g for c in range(int(chunks))]
            w = np.exp(pm[slots].astype(np.float64) - pm[slots].max())
            out[b * int(heads) + h * int(group) + g] = (w @ po[slots]) / (w @ pl[slots])


LAUNCHES = []  # (kernel name, argument types) of every fake launch: checked against the PTX signatures


class _Kernel:
    num_regs, local_size_bytes, shared_size_bytes = 80, 0, 256  # the driver's attributes, as CuPy gives them

    def __init__(self, name):
        self.name = name

    def __call__(self, grid, block, args, shared_mem=0):
        n = self.name
        LAUNCHES.append((n, tuple("array" if isinstance(a, np.ndarray) else type(a).__name__ for a in args)))
        if n.startswith("decode_partial<"):
            _decode_partial(n, grid, block, args, shared_mem)
        elif n == "decode_merge":
            _decode_merge(grid, args)
        elif n.startswith("fma_"):
            _fma(n, grid, block, args)
        elif n in ("read_reps_fp32", "read_reps_l1_fp32"):
            _read_reps(args)
        else:
            _stream(n, args)


class _RawModule:
    def __init__(self, code=None, options=(), name_expressions=None):
        self.names = set(name_expressions or ())

    def get_function(self, name):
        assert "<" not in name or name in self.names, f"{name} was not instantiated"
        return _Kernel(name)


class _Event:
    def record(self):
        self.t_ns = time.perf_counter_ns()

    def synchronize(self):
        pass


class _Device:
    attributes = {"MultiProcessorCount": 4, "L2CacheSize": 1 << 20, "MaxRegistersPerMultiprocessor": 65536,
                  "MaxSharedMemoryPerMultiprocessor": 233472, "MaxThreadsPerMultiProcessor": 2048,
                  "MaxBlocksPerMultiprocessor": 32}  # an H100's SM limits

    def __init__(self, index=0):
        self.index = index

    @property
    def pci_bus_id(self):
        """The bus id of the GPU this CUDA ordinal is, under CUDA_VISIBLE_DEVICES (indices only) as CUDA reads it."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return FakeNVML.pci_bus_id(int(visible.split(",")[self.index]) if visible else self.index)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_cupy(emulate=False):
    """A module object to put in sys.modules as 'cupy' (and its .cuda as 'cupy.cuda'). With
    `emulate`, RawModule runs the CUDA sources themselves on the CPU (tests/cuda_emulator.py) and
    device arrays start as NaN bytes inside guard zones."""
    cp = types.ModuleType("cupy")
    for name in ("float16", "float32", "float64", "int8", "uint16", "abs", "argmax", "empty", "empty_like"):
        setattr(cp, name, getattr(np, name))
    cp.asarray = lambda a: np.array(a, copy=True)  # an upload is a copy
    cp.asnumpy = np.asarray
    cp.random = types.SimpleNamespace(default_rng=np.random.default_rng)
    cp.RawModule = _RawModule
    if emulate:
        import cuda_emulator

        cp.RawModule = cuda_emulator.RawModule
        cp.empty = cuda_emulator.device_empty
        cp.empty_like = lambda a: cuda_emulator.device_empty(a.shape, a.dtype)
        cp.asarray = cuda_emulator.device_copy
    cuda = types.ModuleType("cupy.cuda")
    cuda.Event = _Event
    cuda.Device = _Device
    cuda.get_elapsed_time = lambda start, end: (end.t_ns - start.t_ns) / 1e6
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, memGetInfo=lambda: (8 << 30, 80 << 30))
    cuda.nvtx = types.SimpleNamespace(RangePush=lambda name: None, RangePop=lambda: None)
    cp.cuda = cuda
    return cp


def install_fake_gpu(monkeypatch, emulate=False):
    """Make this process look like a one-H100 machine: fake CuPy (`emulate`: the CUDA sources run
    on the CPU) and NVML, tiny sizes, and no CUDA_VISIBLE_DEVICES from the caller's environment."""
    from harness import gpus

    cp = fake_cupy(emulate=emulate)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cp.cuda)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML())
    monkeypatch.setattr(gpus, "_nvml", lambda: sys.modules["pynvml"])
    monkeypatch.setenv("HARNESS_TINY", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


class CpuEvent:
    """torch.cuda.Event on the CPU clock."""

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3
