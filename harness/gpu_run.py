"""Profile each selected NVIDIA GPU: identity and theory from NVML, probes with CuPy and torch,
telemetry around every probe, balance and the decode verdict (same shapes as devices.cpu)."""

import time

from harness import gpus, validation
from harness.errors import HarnessError
from harness.profile import measurement_records
from harness.run import run_guarded
from harness.workload import Context
from probes import PROBES, load_runner, unavailable_reason

GPU_PROFILE_PROBES = ("stream", "hierarchy", "peak", "decode")
NCU_BUDGET_S = 300  # every ncu re-run of one GPU's profile together
NCU_MIN_RUN_S = 30  # an ncu run given less would time out before the probe started counting


def parse_selection(text, count):
    """'0,2' -> [0, 2]; None -> every GPU; a clear error for anything else."""
    if text is None:
        return list(range(count))
    try:
        chosen = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HarnessError(f"--gpus {text!r} is not a comma-separated list of GPU indices") from None
    bad = [i for i in chosen if not 0 <= i < count]
    if bad or not chosen:
        raise HarnessError(f"--gpus {text!r}: valid indices are 0 to {count - 1}" if count else
                           "--gpus given, but this machine has no GPU")
    twice = sorted({i for i in chosen if chosen.count(i) > 1})
    if twice:
        raise HarnessError(f"--gpus {text!r} names GPU {', '.join(map(str, twice))} more than once: give each index once")
    return chosen


SM_LIMIT_ATTRIBUTES = {"registers": "MaxRegistersPerMultiprocessor", "shared_bytes": "MaxSharedMemoryPerMultiprocessor",
                       "threads": "MaxThreadsPerMultiProcessor", "blocks": "MaxBlocksPerMultiprocessor"}


def device_facts(index):
    """SM count, L2 size, PCI bus id and what one SM holds at once, from the CUDA runtime (NVML
    gives no SM count, L2 size or per-SM limits)."""
    import cupy

    with cupy.cuda.Device(index) as dev:
        attrs = dev.attributes
        return {"sm_count": attrs["MultiProcessorCount"], "l2_bytes": attrs["L2CacheSize"], "pci_bus_id": dev.pci_bus_id,
                "sm_limits": {key: attrs.get(name) for key, name in SM_LIMIT_ATTRIBUTES.items()}}


def identify(index):
    """(identity, NVML handle) of CUDA device `index`: NVML's fields for the GPU at its PCI bus id
    (NVML numbers GPUs by bus, ignoring CUDA_VISIBLE_DEVICES), plus the CUDA runtime's facts.
    NVML initialised by the caller."""
    import pynvml

    facts = device_facts(index)
    handle = gpus.nvml_handle(pynvml, facts["pci_bus_id"])
    info = gpus.identify_gpu(pynvml, handle, index, sm_count=facts["sm_count"])
    info.update(pci_bus_id=facts["pci_bus_id"], l2_bytes=facts["l2_bytes"], sm_limits=facts["sm_limits"])
    return info, handle


def run_one(name, index, cpu, quick, tiny, progress, options=None):
    """`harness probe NAME --device gpuN`: one GPU probe's section."""
    import cupy
    import pynvml

    from probes.gpu_common import event_clock

    pynvml.nvmlInit()
    try:
        info, handle = identify(index)
        with cupy.cuda.Device(index):
            ctx = Context(cpu=cpu, threads=1, quick=quick, tiny=tiny, progress=progress, gpu=info, clock=event_clock(),
                          options=dict(options or {}))
            with gpus.Telemetry(pynvml, handle) as tele:
                section = load_runner(PROBES[name], "gpu")(ctx)
    finally:
        pynvml.nvmlShutdown()
    section["telemetry"] = {name: tele.summary()}
    mark_throttled(section, section["telemetry"][name])
    return section


def mark_throttled(section, summary):
    """Put a probe's throttle warnings (from its telemetry summary) on every record of the section."""
    for rec in measurement_records(section):
        rec.setdefault("warnings", []).extend(w for w in summary["warnings"] if w not in rec["warnings"])


def gpu_section(index, cpu, quick, tiny, progress):
    """devices.gpu<index>."""
    import cupy
    import pynvml

    pynvml.nvmlInit()
    try:
        info, handle = identify(index)
        section = {"gpu": info, "telemetry": {}}
        with cupy.cuda.Device(index):
            from probes.gpu_common import event_clock

            ctx = Context(cpu=cpu, threads=1, quick=quick, tiny=tiny, progress=progress, gpu=info, clock=event_clock())
            for name in GPU_PROFILE_PROBES:
                with gpus.Telemetry(pynvml, handle) as tele:
                    run_guarded(name, lambda name=name: load_runner(PROBES[name], "gpu")(ctx), section, progress)
                section["telemetry"][name] = tele.summary()
                mark_throttled(section, section["telemetry"][name])
        clock = (section["telemetry"].get("peak") or {}).get("sm_clock_hz") or {}
        section["theoretical"] = gpus.theoretical(info, clock_hz=clock.get("median"))
    finally:
        pynvml.nvmlShutdown()
    memory = gpus.memory_name(info)
    flag_against_theory(section, section["theoretical"], memory)
    validation.flag_disagreeing_memory_reads(section, memory)
    validation.flag_disagreeing_dtype_reads(section)
    validation.flag_cache_beyond_reported(section, info["l2_bytes"], memory)
    section["balance"] = validation.balance(section)
    section["balance_basis"] = ("measured peak_flops (FMA) and validated tensor_flops (tensor-core matmul, "
                                f"matmul_<dtype>) / measured bandwidth.read ({memory}, fp64 sum)")
    validation.validate_section(section, info["l2_bytes"], fused_impl="cupy-fused", memory=memory)
    return section


def flag_against_theory(section, theory, memory):
    """Fraction of the theoretical rates (FMA at the SM clock NVML reported during the peak probe);
    a figure above its theoretical rate carries a warning."""
    for dtype, rec in (section.get("peak_flops") or {}).items():
        peak = (theory.get("flops_per_s") or {}).get(dtype)
        if rec.get("flops_per_s") and peak:
            rec["fraction_of_theoretical"] = rec["flops_per_s"] / peak
            if rec["flops_per_s"] > peak:
                rec["warnings"].append(f"exceeds the theoretical {dtype} FMA rate {peak / 1e12:.1f} TFLOP/s "
                                       "at the SM clock NVML reported while it ran")
    validation.flag_bandwidth(section, theory.get("bytes_per_s"), memory)


def ncu_targets(section):
    """[(record, probe, NVTX range, probe arguments)] that ncu re-runs in a GPU section: the fp32
    triad, the fp32 FMA and the longest cupy-fused caches (each run re-runs the probe and replays
    its kernels once per metric pass)."""
    targets = [(section.get("bandwidth_fp32", {}).get("triad"), "stream", "triad", ["--dtype", "fp32"]),
               (section.get("peak_flops", {}).get("fp32"), "peak", "fma_fp32", [])]
    fused = [r for r in section.get("decode_attention", []) if r["impl"] == "cupy-fused"]
    longest = max((r["seq_len"] for r in fused), default=None)
    targets += [(rec, "decode", "cupy-fused", ["--impl", "cupy-fused", "--dtype", rec["dtype"], "--seq-len",
                                               str(rec["seq_len"]), "--heads", str(rec["heads"]), "--kv-heads",
                                               str(rec["kv_heads"]), "--head-dim", str(rec["head_dim"]), "--batch",
                                               str(rec["batch"])])
                for rec in fused if rec["seq_len"] == longest]
    return [t for t in targets if t[0]]


def mark_pending(sections):
    """Say on each record ncu will count that it has not yet (what a profile written before the
    counting shows, if the run ends during it)."""
    from harness.counters import unavailable

    for section in sections.values():
        for rec, *_ in ncu_targets(section):
            rec["counters"] = unavailable("pending: the profile was written before ncu counted this record, "
                                          "and the run ended before it did")


def count_with_ncu(section, index, progress, budget_s=NCU_BUDGET_S, clock=time.monotonic):
    """Re-run the headline GPU workloads under ncu and put the counts in their records, within
    `budget_s` for them all: a run that would start with too little of it left is not started,
    and says so (a stalled ncu must not cost the whole profile)."""
    from harness.counters import ncu, unavailable

    device = f"gpu{index}"
    deadline = clock() + budget_s
    failed = None  # the first run's failure that every later run would meet (ncu.recurs)
    for rec, probe, nvtx_range, args in ncu_targets(section):
        left = deadline - clock()
        if failed:
            rec["counters"] = unavailable(f"not counted: ncu's run of {failed[0]} failed so, as every run here "
                                          f"would: {failed[1]}")
            continue
        if left < NCU_MIN_RUN_S:
            rec["counters"] = unavailable(f"not counted: the {budget_s:.0f} s this profile gives ncu were spent on "
                                          "the workloads before it")
            continue
        progress(f"{device} counting {probe} {nvtx_range} under ncu")
        rec["counters"] = ncu.count(probe, device, nvtx_range, ["--quick", *args], rec.get("bytes_per_call"),
                                    timeout_s=left)
        if rec["counters"].get("source") == "unavailable" and ncu.recurs(rec["counters"].get("reason")):
            failed = (f"{probe} {nvtx_range}", rec["counters"]["reason"])


def gpu_probe_reason():
    """None if every GPU profile probe can run here, else the first reason one cannot."""
    return next(filter(None, (unavailable_reason(PROBES[n], "gpu") for n in GPU_PROFILE_PROBES)), None)


def gpu_sections(found, selection, cpu, quick, tiny, progress):
    """({'gpu0': section, ...}, reason or None): each selected GPU measured; count_gpus adds ncu's counts."""
    reason = gpu_probe_reason()
    if not found or reason:
        return {}, reason or "no GPU found"
    return {f"gpu{i}": gpu_section(i, cpu, quick, tiny, progress) for i in parse_selection(selection, len(found))}, None


def count_gpus(sections, progress):
    """ncu's counts into the headline records of every GPU section ({'gpu0': section, ...})."""
    for section in sections.values():
        count_with_ncu(section, section["gpu"]["index"], progress)
