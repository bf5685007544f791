"""NVIDIA GPUs through NVML: which there are (or why none can be seen), what each is, its
theoretical peaks, and a background telemetry sampler for clocks, power and throttle reasons."""

import os
import statistics
import threading
import time

from harness.errors import HarnessError

# FMA results per clock per SM by compute capability: NVIDIA CUDA C++ Programming Guide,
# "Arithmetic Instructions" throughput table (32-bit and 64-bit floating-point multiply-add, and
# 16-bit half2 multiply-add counted per half). One FMA is 2 FLOP.
FMA_PER_CLOCK_PER_SM = {
    (7, 0): {"fp64": 32, "fp32": 64, "fp16": 128},
    (7, 5): {"fp64": 2, "fp32": 64, "fp16": 128},
    (8, 0): {"fp64": 32, "fp32": 64, "fp16": 256},
    (8, 6): {"fp64": 2, "fp32": 128, "fp16": 128},
    (8, 7): {"fp64": 2, "fp32": 128, "fp16": 128},
    (8, 9): {"fp64": 2, "fp32": 128, "fp16": 128},
    (9, 0): {"fp64": 64, "fp32": 128, "fp16": 256},
    (10, 0): {"fp64": 64, "fp32": 128, "fp16": 256},  # B200/GB200 (B300's sm_103 cut FP64: not listed)
    (12, 0): {"fp64": 2, "fp32": 128, "fp16": 128},  # RTX 50 / RTX PRO Blackwell: the 8.9 SM's rates
}
FMA_SOURCE = "NVIDIA CUDA C++ Programming Guide, Arithmetic Instructions: results per clock cycle per multiprocessor"
BANDWIDTH_FORMULA = ("2 x max memory clock x bus width / 8: NVML reports the memory clock at half the data rate for "
                     "HBM2e/HBM3/HBM3e and GDDR6/GDDR6X alike (DDR signalling); ECC overheads not subtracted")
# NVML reports no memory type, but its bus width tells them apart: an HBM stack's interface alone is
# 1024 bits (A100 and H100 5120, H200 6144), a GDDR bus at most 512 (L4 192, L40S and RTX 4090 384)
HBM_MIN_BUS_BITS = 1024
THROTTLE_NAMES = {  # NVML clocks-event reasons (nvml.h's nvmlClocksEventReason*/nvmlClocksThrottleReason* bits)
    0x1: "gpu idle", 0x2: "applications clocks setting", 0x4: "sw power cap", 0x8: "hw slowdown",
    0x10: "sync boost", 0x20: "sw thermal slowdown", 0x40: "hw thermal slowdown", 0x80: "hw power brake slowdown",
    0x100: "display clock setting", 0x200: "board limit", 0x400: "reliability",
}
BENIGN = 0x1 | 0x2 | 0x10 | 0x100  # idle and clock settings someone chose are not throttling


def _text(x):
    return x.decode() if isinstance(x, bytes) else x


def _nvml():
    import pynvml

    return pynvml


def detect_gpus(visible=None):
    """([{'index', 'nvml_index', 'name', 'uuid'}], reason): the GPUs NVML lists, as the CUDA runtime
    numbers them under CUDA_VISIBLE_DEVICES (`visible`, default the environment's). The reason is
    None when GPUs are there."""
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        nvml = _nvml()
    except ImportError:
        return [], "nvidia-ml-py (pynvml) is not installed"
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        return [], f"NVML cannot start ({e}): no NVIDIA driver here"
    try:
        listed = []
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            listed.append({"index": i, "name": _text(nvml.nvmlDeviceGetName(h)), "uuid": _text(nvml.nvmlDeviceGetUUID(h))})
    finally:
        nvml.nvmlShutdown()
    if not listed:
        return [], "NVML found no GPU"
    found = visible_to_cuda(listed, visible)
    return found, None if found else (f"CUDA_VISIBLE_DEVICES={visible!r} leaves none of the {len(listed)} GPUs NVML "
                                      "lists visible to CUDA (whole GPUs are profiled, not MIG instances)")


def visible_to_cuda(listed, visible):
    """NVML's GPUs in the order the CUDA runtime numbers them: all of them where `visible` (the
    value of CUDA_VISIBLE_DEVICES) is None, else those it names by index or UUID prefix, in its
    order, up to the first entry that names none (as CUDA reads it). Each keeps its 'nvml_index';
    'index' becomes its CUDA ordinal. Indices are taken in NVML's (PCI bus) order, which is CUDA's
    on a machine of one GPU model; identify() matches each CUDA device to NVML by its PCI bus id."""
    if visible is None:
        return [{**g, "nvml_index": g["index"]} for g in listed]
    chosen = []
    for entry in (e.strip() for e in visible.split(",")):
        named = ([g for g in listed if g["index"] == int(entry)] if entry.isdigit() else
                 [g for g in listed if entry.startswith("GPU-") and g["uuid"].startswith(entry)])
        if len(named) != 1 or named[0] in chosen:
            break
        chosen.append(named[0])
    return [{**g, "index": i, "nvml_index": g["index"]} for i, g in enumerate(chosen)]


def pci_key(bus_id):
    """(domain, bus, device, function) of a PCI bus id, however its fields are padded or cased
    (CUDA prints 0000:19:00.0, NVML 00000000:19:00.0)."""
    domain, bus, rest = bus_id.strip().split(":")
    device, function = rest.split(".")
    return tuple(int(x, 16) for x in (domain, bus, device, function))


def nvml_handle(nvml, pci_bus_id):
    """NVML's handle of the GPU at `pci_bus_id` (as the CUDA runtime gives it): NVML's own lookup,
    else a search of its GPUs' PCI ids."""
    try:
        return nvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id)
    except nvml.NVMLError:
        pass
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        if pci_key(_text(nvml.nvmlDeviceGetPciInfo(h).busId)) == pci_key(pci_bus_id):
            return h
    raise HarnessError(f"NVML lists no GPU at PCI bus id {pci_bus_id}, where the CUDA runtime has one")


def _try(fn, *args, default=None):
    try:
        return fn(*args)
    except Exception:  # NVML raises NVMLError_NotSupported and friends per field; record what answers
        return default


def identify_gpu(nvml, h, index, sm_count=None):
    """Everything the profile records about the GPU of NVML handle `h`, CUDA device `index` (NVML
    initialised by the caller)."""
    cc = _try(nvml.nvmlDeviceGetCudaComputeCapability, h)
    mem = _try(nvml.nvmlDeviceGetMemoryInfo, h)
    ecc = _try(nvml.nvmlDeviceGetEccMode, h)
    mig = _try(nvml.nvmlDeviceGetMigMode, h)
    cuda = _try(nvml.nvmlSystemGetCudaDriverVersion)
    return {
        "index": index, "name": _text(nvml.nvmlDeviceGetName(h)), "uuid": _text(nvml.nvmlDeviceGetUUID(h)),
        "compute_capability": list(cc) if cc else None,
        "sm_count": sm_count,
        "memory_bytes": mem.total if mem else None,
        "memory_bus_width_bits": _try(nvml.nvmlDeviceGetMemoryBusWidth, h),
        "max_sm_clock_hz": _mhz(_try(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_SM)),
        "max_memory_clock_hz": _mhz(_try(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_MEM)),
        "sm_clock_hz": _mhz(_try(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM)),
        "memory_clock_hz": _mhz(_try(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM)),
        "power_limit_w": (_try(nvml.nvmlDeviceGetEnforcedPowerLimit, h) or 0) / 1000 or None,
        "driver_version": _text(_try(nvml.nvmlSystemGetDriverVersion)),
        "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
        "ecc_mode": ecc[0] if ecc else None,
        "mig_mode": mig[0] if mig else None,
    }


def memory_name(gpu):
    """What a GPU's device memory is called in its levels and reports: HBM, GDDR, or DRAM where NVML
    gave no bus width."""
    bits = gpu.get("memory_bus_width_bits")
    return "DRAM" if not bits else "HBM" if bits >= HBM_MIN_BUS_BITS else "GDDR"


def _mhz(value):
    return value * 1e6 if value else None


def theoretical(gpu, clock_hz=None):
    """DRAM bytes/s and FMA FLOP/s per dtype from NVML's figures, with how each was derived."""
    bw = None
    if gpu.get("max_memory_clock_hz") and gpu.get("memory_bus_width_bits"):
        bw = 2 * gpu["max_memory_clock_hz"] * gpu["memory_bus_width_bits"] / 8
    cc = tuple(gpu.get("compute_capability") or ())
    rates = FMA_PER_CLOCK_PER_SM.get(cc)
    clock = clock_hz or gpu.get("max_sm_clock_hz")
    flops = {d: None for d in ("fp64", "fp32", "fp16")}
    if rates and gpu.get("sm_count") and clock:
        flops = {d: 2 * n * gpu["sm_count"] * clock for d, n in rates.items()}
    per_sm = ", ".join(f"{n} {d}" for d, n in (rates or {}).items())
    capability = ".".join(map(str, cc)) or "unknown"
    why = (f"FLOP/s: 2 x FMAs per clock per SM ({per_sm} for sm_{cc[0]}{cc[1]}) x {gpu.get('sm_count')} SMs x "
           f"{clock / 1e9:.3f} GHz; {FMA_SOURCE}" if rates and gpu.get("sm_count") and clock else
           f"FLOP/s: not derivable (compute capability {capability} not in the table, or SM count unknown)")
    return {"bytes_per_s": bw, "flops_per_s": flops,
            "source": f"{why}. Bytes/s: " + (BANDWIDTH_FORMULA if bw else "not derivable: NVML gave no memory clock or bus width")}


def decode_reasons(mask):
    """Names of the set bits of an NVML clocks-event reasons mask; a bit this table does not know
    (a newer driver's) is named by its value, so it is reported rather than dropped."""
    unknown = mask & ~sum(THROTTLE_NAMES)
    return [name for bit, name in THROTTLE_NAMES.items() if mask & bit] + [
        f"unknown reason 0x{1 << b:x}" for b in range(unknown.bit_length()) if unknown >> b & 1]


class Telemetry:
    """Samples SM/memory clock, power, temperature and throttle reasons in a background thread.

    Use as a context manager around a probe; `summary()` gives medians, ranges and a warning
    when the GPU was throttled (power, thermal or hardware slowdown) while it ran."""

    def __init__(self, nvml, handle, interval_s=0.05, clock=time.monotonic):
        self.nvml, self.handle = nvml, handle
        self.interval_s, self.clock = interval_s, clock
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        n, h = self.nvml, self.handle
        reasons = _try(getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or
                       n.nvmlDeviceGetCurrentClocksThrottleReasons, h, default=0)
        self.samples.append({
            "t": self.clock(), "sm_clock_hz": _mhz(_try(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM)),
            "memory_clock_hz": _mhz(_try(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM)),
            "power_w": (_try(n.nvmlDeviceGetPowerUsage, h) or 0) / 1000 or None,
            "temperature_c": _try(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU),
            "reasons": reasons or 0})

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False

    def summary(self):
        def stats(key):
            xs = [s[key] for s in self.samples if s[key] is not None]
            return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)} if xs else None

        mask = 0
        for s in self.samples:
            mask |= s["reasons"]
        throttled = decode_reasons(mask & ~BENIGN)
        return {"samples": len(self.samples), "sm_clock_hz": stats("sm_clock_hz"),
                "memory_clock_hz": stats("memory_clock_hz"), "power_w": stats("power_w"),
                "temperature_c": stats("temperature_c"), "clocks_event_reasons": decode_reasons(mask),
                "warnings": [f"throttled while measuring: {', '.join(throttled)}"] if throttled else []}
