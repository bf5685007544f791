"""Does the analytic model hold here? Predictions, achieved fractions and the verdict, derived
from a profile's decode records and its measured roofs (no probe runs here)."""

import statistics

from harness import model
from harness.summary import rate_unit, record_name, si

MODEL_HOLDS_WITHIN = 0.25  # |measured / predicted - 1| for the best implementation (against the read
# bandwidth measured beside the point where there is one: the profile's may be minutes and 2x away)
LARGE_CACHE_FACTOR = 4  # points whose cache is at least 4x the last-level cache
FASTER_THAN_READ = 1.1  # a point from memory this much faster than a read bandwidth gets a warning
# an FMA peak that gains less than this share of what its cores add: threads shared cores (a
# many-core server's all-core AVX-512 clock sits well below one core's turbo: a half could flag it)
SCALING_FLOOR = 1 / 3
# one workload timed twice in a profile (a peak or STREAM record and the thread sweep's point at the
# same threads): medians further apart than this mean the machine changed between them
REPEAT_AGREEMENT = 1.25
# a sweep point beyond the last-level cache whose speed needs more than this x that cache's bytes
# cached was served by a larger cache than the machine reports
CACHE_EXCESS = 1.2
# a point from DRAM that reaches less than this share of its binding roof (the model's predicted time
# over its own) is below both roofs: something the roofline leaves out sets its time
ROOF_ATTAINED = 0.75


def roofs(section):
    """(DRAM read bytes/s, fp32 peak FLOP/s) of a devices.<name> section, or (None, None).

    The CPU kernels compute in fp32 whatever the cache dtype (16-bit and int8 values are widened
    in registers), so fp32 is the compute roof for every decode dtype."""
    bw = ((section.get("bandwidth") or {}).get("read") or {}).get("bytes_per_s")
    peak = ((section.get("peak_flops") or {}).get("fp32") or {}).get("flops_per_s")
    return bw, peak


def matmul_rate(tensor, dtype):
    """The validated matmul FLOP/s of `dtype` in a tensor_flops section, or None."""
    rec = tensor.get(dtype)
    return rec["flops_per_s"] if isinstance(rec, dict) and rec.get("validated") and rec.get("flops_per_s") else None


def compute_roof(section, dtypes, kind="torch"):
    """(FLOP/s, what it is) of the fastest measured way to compute on data of `dtypes`: a validated
    `kind` matmul of one of them, an FMA peak of one of them (a GPU's half2 fp16 chains), or the fp32
    FMA peak (the data widened to fp32, as the CPU decode kernels do): torch's fp16 matmul on a CPU
    without fp16 arithmetic is a slow fallback, not a roof. (None, why) without an fp32 peak or matmul."""
    _, fma = roofs(section)
    tensor = section.get("tensor_flops") or {}
    chains = section.get("peak_flops") or {}
    rate, how = max([(matmul_rate(tensor, d) or 0, f"{kind} {d} matmul peak") for d in dtypes]
                    + [((chains.get(d) or {}).get("flops_per_s") or 0, f"{d} FMA peak") for d in dtypes if d != "fp32"]
                    + [(fma or 0, "fp32 FMA peak")])
    return (rate, how) if rate else (None, "no measured fp32 peak or matmul")


def balance(section):
    """FLOP (int8: OP) per byte of the memory: each measured FMA peak (by its dtype), each CPU
    dot-product peak (dot_<dtype>) and each validated matmul (matmul_<dtype>: a CPU's AMX, a GPU's
    tensor cores) over the measured read bandwidth (the fp64 sum)."""
    read, _ = roofs(section)
    out = {dtype: rec["flops_per_s"] / read if rec.get("flops_per_s") and read else None
           for dtype, rec in (section.get("peak_flops") or {}).items()}
    out.update({f"dot_{dtype}": rec["flops_per_s"] / read if rec.get("flops_per_s") and read else None
                for dtype, rec in (section.get("dot_flops") or {}).items()})
    tensor = section.get("tensor_flops") or {}
    out.update({f"matmul_{dtype}": rate / read if read else None
                for dtype in tensor if (rate := matmul_rate(tensor, dtype))})
    return out


def flag_bandwidth(section, theoretical_bytes_per_s, memory):
    """Fraction of the theoretical bandwidth on each STREAM record; above it, a warning."""
    bw = theoretical_bytes_per_s
    for rec in (section.get("bandwidth") or {}).values():
        if bw and rec.get("bytes_per_s"):
            rec["fraction_of_theoretical"] = rec["bytes_per_s"] / bw
            if rec["bytes_per_s"] > bw:
                rec["warnings"].append(f"exceeds the theoretical {memory} bandwidth {bw / 1e9:.1f} GB/s")


def flag_disagreeing_repeats(section):
    """A warning where a workload timed twice in one profile gave medians more than
    REPEAT_AGREEMENT apart: peak_flops.fp32 and bandwidth.triad are the same workloads (the same
    probe hash) as the thread sweep's points at the profile's threads. The machine's throughput
    changed between them (on the 2-vCPU Zen 5 VM: two threads' fp32 FMA peak at 230 GFLOP/s, one
    core's worth, then 447 in the sweep a minute later), so the roofs taken from them are suspect."""
    sweep = {r["probe_hash"]: (kernel, r) for kernel, recs in (section.get("thread_sweep") or {}).items()
             for r in recs if r.get("probe_hash")}
    for group, key, unit in (("peak_flops", "median_flops_per_s", "FLOP/s"), ("bandwidth", "median_bytes_per_s", "B/s")):
        for name, rec in (section.get(group) or {}).items():
            kernel, twin = sweep.get(rec.get("probe_hash"), (None, {}))
            a, b = rec.get(key), twin.get(key)
            if a and b and max(a, b) / min(a, b) > REPEAT_AGREEMENT:
                section.setdefault("warnings", []).append(
                    f"{group}.{name} (median {si(a, unit)}) and the thread sweep's {kernel} at {twin['threads']} threads "
                    f"(median {si(b, unit)}), the same workload, differ {max(a, b) / min(a, b):.2f}x: the machine's "
                    "throughput changed between them (a shared host co-scheduling the vCPUs, or its memory "
                    "bandwidth drifting), so the roofs taken from them are suspect: run again")


def flag_disagreeing_memory_reads(section, memory):
    """A warning where the hierarchy sweep's memory level and bandwidth.read, one read kernel over
    working sets beyond the caches (the last sweep point is the read's own size), differ more than
    REPEAT_AGREEMENT: the hierarchy's memory level would then disagree with the roof the model, the
    drills and the roofline take from the read. On the shared Zen 4 VM the sweep's DRAM level read
    59.6 GB/s and bandwidth.read 34.7 GB/s a few seconds apart, each with no spread to show it."""
    level = ((section.get("hierarchy_levels") or {}).get(memory) or {}).get("bytes_per_s")
    read = ((section.get("bandwidth") or {}).get("read") or {}).get("bytes_per_s")
    if level and read and max(level, read) / min(level, read) > REPEAT_AGREEMENT:
        section.setdefault("warnings", []).append(
            f"the hierarchy sweep's {memory} level ({si(level, 'B/s')}) and bandwidth.read ({si(read, 'B/s')}), "
            f"the same reads beyond the caches, differ {max(level, read) / min(level, read):.2f}x: the memory's speed "
            f"changed between them (a shared host), so the hierarchy's {memory} level and the roof the model and "
            "the roofline take from bandwidth.read disagree: run again")


def flag_disagreeing_dtype_reads(section):
    """A warning where a STREAM kernel's fp64 and fp32 runs, the same bytes through the same memory
    timed a few seconds apart, have medians more than REPEAT_AGREEMENT apart: the memory's speed
    changed between them. On the 2-vCPU Zen 4 VM one profile's fp64 read gave 33.5 GB/s and its fp32
    read 62.9 GB/s, the fp32 read's spread its only other sign."""
    fp64, fp32 = section.get("bandwidth") or {}, section.get("bandwidth_fp32") or {}
    pairs = [(kernel, fp64[kernel].get("median_bytes_per_s"), fp32[kernel].get("median_bytes_per_s"))
             for kernel in fp64 if kernel in fp32]
    apart = [(kernel, a, b) for kernel, a, b in pairs if a and b and max(a, b) / min(a, b) > REPEAT_AGREEMENT]
    if apart:
        listed = ", ".join(f"{kernel} {si(a, 'B/s')} fp64 and {si(b, 'B/s')} fp32 ({max(a, b) / min(a, b):.2f}x)"
                           for kernel, a, b in apart)
        section.setdefault("warnings", []).append(
            f"STREAM medians that move the same bytes in fp64 and fp32 differ more than {REPEAT_AGREEMENT:g}x: "
            f"{listed}: the memory's speed changed between them (a shared host), so the roofs taken from them "
            "are suspect: run again")


def cached_bytes_needed(point_bps, working_set_bytes, memory_bps, cache_bps):
    """Bytes of a working set a cache must have held for one read of it to run at point_bps: time per
    byte is h / cache_bps + (1 - h) / memory_bps for a share h of it cached."""
    if point_bps <= memory_bps:
        return 0.0
    if point_bps >= cache_bps:
        return float(working_set_bytes)
    return working_set_bytes * (1 / memory_bps - 1 / point_bps) / (1 / memory_bps - 1 / cache_bps)


def flag_cache_beyond_reported(section, llc_bytes, memory):
    """A warning where a hierarchy sweep point beyond the reported last-level cache read so fast,
    between the memory level's bandwidth and that cache's, that more than CACHE_EXCESS x the cache's
    bytes must have been cached (a cache of C bytes holds at most C of any working set, however it
    replaces lines): a larger cache served it. On the 2-vCPU Zen 4 VM (32 MiB L3 reported), some
    profiles read 64 MiB at 107 GB/s beside an L3 of 194 and a DRAM level of 60 GB/s (41 MiB cached),
    others 64 MiB at 43-55 GB/s beside 34-36 (up to 27 MiB): as if the host placed the two vCPUs on
    separate L3s (each reaching its own) or on one, which the guest's topology does not show."""
    levels = section.get("hierarchy_levels") or {}
    memory_bps = (levels.get(memory) or {}).get("bytes_per_s")
    caches = [v["bytes_per_s"] for k, v in levels.items() if k != memory and (v or {}).get("bytes_per_s")]
    if not (memory_bps and caches and llc_bytes):
        return
    cache_bps = caches[-1]  # the last cache level before memory
    beyond = [(cached_bytes_needed(p["bytes_per_s"], p["working_set_bytes"], memory_bps, cache_bps), p)
              for p in section.get("hierarchy") or [] if p.get("bytes_per_s") and p.get("working_set_bytes", 0) > llc_bytes]
    cached, far = max(beyond, key=lambda x: x[0], default=(0, None))
    if cached <= CACHE_EXCESS * llc_bytes:
        return
    section.setdefault("warnings", []).append(
        f"the hierarchy sweep read {far['working_set_bytes'] / 2**20:.0f} MiB at {si(far['bytes_per_s'], 'B/s')}, "
        f"between its {memory} level ({si(memory_bps, 'B/s')}) and its last cache level ({si(cache_bps, 'B/s')}): "
        f"at least {cached / 2**20:.0f} MiB of it was cached, where this machine reports a "
        f"{llc_bytes / 2**20:.0f} MiB last-level cache: a larger cache served it (under a hypervisor, the host's "
        "caches the guest does not see: vCPUs on separate L3s of the host each reach their own), so the working "
        f"sets sized from the reported cache (the STREAM kernels', the decode points counted as from {memory}) may "
        "be partly served by it")


def flag_disagreeing_precisions(section, theory):
    """A warning where an FMA peak (fp64, fp16 where native), timed in the same rounds on the same
    threads as fp32's, is further than REPEAT_AGREEMENT from the ratio their SIMD lanes give (fp64
    half fp32's lanes per vector, fp16 twice), in median or in best sample: one of them ran on fewer
    cores. On the 2-vCPU Zen 4 VM a profile's fp64 peak read 58.6 GFLOP/s beside fp32's 230.6, below
    the theory and with no spread to show it; in a --quick one both medians were at one core's rate
    (58.6 and 117.1) and fp64's every sample, its best 58.7 beside fp32's 219.5, so nothing else
    flagged fp64's headline rate."""
    per_cycle = theory.get("flops_per_cycle_per_core") or {}
    peaks = section.get("peak_flops") or {}
    if not per_cycle.get("fp32"):
        return
    for dtype in ("fp64", "fp16"):
        if not per_cycle.get(dtype):
            continue
        expected = per_cycle["fp32"] / per_cycle[dtype]
        for key, which in (("median_flops_per_s", "median"), ("flops_per_s", "best")):
            fp32, rate = ((peaks.get(d) or {}).get(key) for d in ("fp32", dtype))
            if not (fp32 and rate):
                continue
            measured = fp32 / rate
            if max(measured / expected, expected / measured) > REPEAT_AGREEMENT:
                section.setdefault("warnings", []).append(
                    f"the fp32 FMA peak ({which} {si(fp32, 'FLOP/s')}) is {measured:.2f}x the {dtype} one "
                    f"({which} {si(rate, 'FLOP/s')}) where their SIMD lanes give {expected:g}x: one of them ran on "
                    "fewer cores (a shared host co-scheduling the vCPUs), so the roofs taken from them are suspect: "
                    "run again")
                break


def cores_of(threads, cpu):
    """The cores `threads` threads can run on: at most the usable CPUs' share of the cores."""
    return min(threads, cpu["cores"] * cpu["usable_cpus"] // cpu["threads"])


def scales_too_little(speedup, cores):
    """True where a rate `speedup` x one thread's on `cores` cores (2 or more) gained less than
    SCALING_FLOOR of what the cores add: the threads shared cores."""
    return cores >= 2 and speedup - 1 < SCALING_FLOOR * (cores - 1)


# the peaks held to one thread's rate, and what running on fewer cores than its threads can mean for each
PARALLEL_PEAKS = {"tensor_flops": "torch's kernel for it does not use them, or the host put the vCPUs on one core: "
                                  "a second run tells which",
                  "dot_flops": "the host put the vCPUs on one core: run again"}


def flag_parallel_scaling(section, cpu):
    """A warning on each matmul or dot-product peak whose rate gained less than SCALING_FLOOR of what
    its cores add over one thread's on the same work (one_thread_flops_per_s, timed by the probe): on
    the 2-vCPU Zen 4 VM three of ten profiles had int8 matmul at 451-453 GOP/s, one thread's rate
    (426-438 there; two threads 715-890), and one had both dot peaks at half their rate (234 GFLOP/s
    and 468 GOP/s where 465 and 935 are usual) beside full FMA peaks, with no spread or other load
    to show it."""
    for key, why in PARALLEL_PEAKS.items():
        for dtype, rec in (section.get(key) or {}).items():
            one = rec.get("one_thread_flops_per_s") if isinstance(rec, dict) else None
            cores = cores_of(rec["threads"], cpu) if one else 1
            if one and rec.get("flops_per_s") and scales_too_little(rec["flops_per_s"] / one, cores):
                rec["warnings"].append(
                    f"{rec['flops_per_s'] / one:.2f}x the rate of one thread ({si(one, rate_unit(dtype))}) where "
                    f"{cores} cores should give about {cores}x: it ran on fewer cores ({why})")


def flag_thread_scaling(section, cpu):
    """A warning where the thread sweep's fp32 FMA peak, which scales with cores, gained less than
    a third of what the cores its threads had should give: the threads shared cores (an OpenMP
    affinity setting that bound them to one place, a CPU quota), and every parallel figure is low."""
    rates = {r["threads"]: r.get("median_flops_per_s") for r in (section.get("thread_sweep") or {}).get("peak_fp32", [])}
    top = max(rates, default=1)
    cores = cores_of(top, cpu)
    if cores < 2 or not rates.get(1) or not rates[top]:
        return
    speedup = rates[top] / rates[1]
    if scales_too_little(speedup, cores):
        section.setdefault("warnings", []).append(
            f"the fp32 FMA peak at {top} threads is {speedup:.2f}x one thread's where {cores} cores should give "
            f"about {cores}x: the threads shared cores (an OpenMP affinity setting, software.numba.openmp_affinity, "
            "or a CPU quota), so every parallel figure here is too low")


def swept_shape(records):
    """(batch, heads, kv_heads) that most decode records share: the shape the sweep varied seq_len
    and dtype over (ties go to batch 1 with H_kv = H)."""
    shapes = [(r["batch"], r["heads"], r["kv_heads"]) for r in records]
    return max(set(shapes), key=lambda x: (shapes.count(x), x[0] == 1 and x[1] == x[2])) if shapes else (1, 0, 0)


def derive_point(rec, bw, peak):
    """Add model.predicted_time_s, achieved rates and fractions, and model_error to a record."""
    m = rec["model"]
    time_s = rec["time_s"]
    rec["achieved"] = {"bytes_per_s": m["bytes"] / time_s, "flops_per_s": m["flops"] / time_s}
    if not (bw and peak):  # and nothing left of an earlier derivation (a stored profile's, re-derived)
        for key in ("regime", "predicted_time_adjacent_s"):
            m.pop(key, None)
        rec.pop("model_error_adjacent", None)
        rec["model"]["predicted_time_s"] = None
        rec["model_error"] = None
        rec["achieved"].update(fraction_of_bandwidth=None, fraction_of_peak_flops=None)
        return rec
    m["predicted_time_s"] = model.predicted_time_s(m["flops"], m["bytes"], peak, bw)
    m["regime"] = model.regime(m["flops"], m["bytes"], peak, bw)
    rec["achieved"]["fraction_of_bandwidth"] = rec["achieved"]["bytes_per_s"] / bw
    rec["achieved"]["fraction_of_peak_flops"] = rec["achieved"]["flops_per_s"] / peak
    rec["model_error"] = time_s / m["predicted_time_s"] - 1
    adjacent = rec.get("adjacent_read_bytes_per_s")
    if adjacent:  # the same prediction with the read bandwidth measured beside this point
        fraction = paired_fraction(rec) or rec["achieved"]["bytes_per_s"] / adjacent
        rec["achieved"]["fraction_of_adjacent_read"] = fraction
        # the read bandwidth that fraction implies for the median time: the prediction's bandwidth
        m["predicted_time_adjacent_s"] = model.predicted_time_s(m["flops"], m["bytes"], peak,
                                                                 rec["achieved"]["bytes_per_s"] / fraction)
        rec["model_error_adjacent"] = time_s / m["predicted_time_adjacent_s"] - 1
        if fraction > FASTER_THAN_READ:
            note = (f"moved its bytes {fraction:.2f}x as fast as the read measured beside it: the memory's speed "
                    "changed while it ran, so its model error is unreliable")
            if note not in rec.setdefault("warnings", []):
                rec["warnings"].append(note)
    return rec


def derive_in_core(rec):
    """Where a point from DRAM carries its kernel's in-core rate (probes/cpu_decode.py in_core_workload)
    and a read measured beside it: rec.in_core's core_time_s (the point's bytes at that rate, taken on
    the point's threads; a record taken on one thread is scaled to them), memory_time_s (the bytes at
    the read beside it) and the two bounds of their overlap, no_overlap_time_s (their sum: the loops
    wait for memory and memory for the loops) and full_overlap_time_s (the longer of the two). The
    rate is the task's best sample: the loops' own cost, which a busy host only lengthens (on the Xeon
    VM one profile's int8 task took 119-125 us in its first three samples and 58-71 in the other four)."""
    core = rec.get("in_core") or {}
    rate = core.get("bytes_per_s")
    fraction = (rec.get("achieved") or {}).get("fraction_of_adjacent_read")
    if not (core.get("validated") and rate and fraction):
        return
    core["core_time_s"] = rec["model"]["bytes"] / (rate * rec["threads"] / core.get("threads", 1))
    core["memory_time_s"] = rec["time_s"] * fraction  # the bytes at the read bandwidth beside the point
    core["no_overlap_time_s"] = core["core_time_s"] + core["memory_time_s"]
    core["full_overlap_time_s"] = max(core["core_time_s"], core["memory_time_s"])


def flag_faster_than_profiled_read(rec, bw, llc_bytes, memory):
    """A warning (once) where a point whose cache is LARGE_CACHE_FACTOR x the last-level cache moved its
    bytes FASTER_THAN_READ x as fast as the profile's read bandwidth: no cache serves it, so the memory
    ran faster than when the read was profiled (on the shared Zen 4 VM: fp16 at 1.32x the profile's
    35 GB/s with 59 GB/s read beside it), or its byte count is wrong. Where the read beside it agrees
    (itself above FASTER_THAN_READ), derive_point's warning says so already."""
    fraction = (rec.get("achieved") or {}).get("fraction_of_bandwidth")
    if not (rec.get("validated") and fraction and fraction > FASTER_THAN_READ
            and rec["model"]["cache_bytes"] >= LARGE_CACHE_FACTOR * llc_bytes):
        return
    adjacent = rec.get("adjacent_read_bytes_per_s")
    beside = rec["achieved"].get("fraction_of_adjacent_read")
    if beside and beside > FASTER_THAN_READ:
        return
    note = (f"moved its bytes {fraction:.2f}x as fast as the profile's {memory} read ({si(bw, 'B/s')}) from a cache "
            f"{rec['model']['cache_bytes'] / llc_bytes:.0f}x the last-level cache, which no cache serves: ")
    if adjacent and beside:
        note += (f"the read beside it ran at {si(adjacent, 'B/s')}, so the memory was faster while it ran; take its "
                 f"fraction and model error against that read ({beside:.2f}, {rec['model_error_adjacent']:+.0%}), "
                 "not the profile's")
    else:
        note += "the memory ran faster than when its read was profiled, or the point's byte count is wrong"
    if note not in rec.setdefault("warnings", []):
        rec["warnings"].append(note)


def paired_fraction(rec):
    """Median over samples of (the sample's bytes/s / the read measured right before it), or None
    where the record has no read per sample (a profile from before they were paired)."""
    reads, samples = rec.get("reads_before_samples_bytes_per_s"), rec.get("samples_s") or []
    if not reads or len(reads) != len(samples) or not all(reads):
        return None
    return float(statistics.median(rec["model"]["bytes"] / s / r for s, r in zip(samples, reads)))


def _best(records, **match):
    """The fastest validated record matching every given field, or None."""
    found = [r for r in records if r.get("validated") and all(r.get(k) == v for k, v in match.items())]
    return min(found, key=lambda r: r["time_s"]) if found else None


def ratio_check(num, den, what):
    """The measured time ratio of two points against the model's byte ratio, and at equal read bandwidth
    where both were paired with a read; {available: False, reason} where either point is missing."""
    if not (num and den):
        return {"available": False, "reason": f"the sweep has no {what} pair"}
    measured = num["time_s"] / den["time_s"]
    predicted = num["model"]["bytes"] / den["model"]["bytes"]
    out = {"measured_time_ratio": measured, "model_bytes_ratio": predicted,
           "measured_over_model": measured / predicted, "impl": num["impl"],
           "seq_len": num["seq_len"], "batch": num["batch"]}
    fractions = [(r.get("achieved") or {}).get("fraction_of_adjacent_read") for r in (num, den)]
    if all(fractions):  # each time scaled to one read bandwidth: the memory's drift between the points taken out
        out["time_ratio_at_equal_read"] = predicted * fractions[1] / fractions[0]
    return out


def short_of_roofs(large):
    """The validated points among `large` below ROOF_ATTAINED of their binding roof (against the read
    measured beside them where there is one), least attained first: name, share of the roof,
    which roof, and share of the compute peak."""
    found = []
    for r in large:
        error = r.get("model_error_adjacent") if r.get("model_error_adjacent") is not None else r.get("model_error")
        if r.get("validated") and error is not None and 1 / (1 + error) < ROOF_ATTAINED:
            core = (r.get("in_core") or {}).get("core_time_s")
            found.append({"point": record_name("decode", None, r), "fraction_of_roof": 1 / (1 + error),
                          "roof": r["model"].get("regime"), "fraction_of_peak_flops": r["achieved"]["fraction_of_peak_flops"],
                          "against_adjacent_read": r.get("model_error_adjacent") is not None,
                          **({"in_core_fraction_of_time": core / r["time_s"]} if core else {})})
    return sorted(found, key=lambda f: f["fraction_of_roof"])


def headline_dtype(per_dtype):
    """The cache dtype whose best point decides whether the model holds: fp32 where the sweep
    reached memory in it (both sweeps take it there), else the first of bf16, fp16, int8 that did
    (where the fp32 point's output check failed, or its cache stayed in the last-level cache)."""
    return next((d for d in ("fp32", "bf16", "fp16", "int8") if d in per_dtype), None)


def headline_fraction(per_dtype):
    """(fraction, of what) of the headline dtype's best point, the figure the model's verdict is of:
    of the read timed beside it where paired (the memory's drift taken out), else of the profile's
    read; (None, None) where there is no headline point."""
    entry = per_dtype.get(headline_dtype(per_dtype)) or {}
    if entry.get("fraction_of_adjacent_read") is not None:
        return entry["fraction_of_adjacent_read"], "the read beside it"
    if entry.get("fraction_of_bandwidth") is not None:
        return entry["fraction_of_bandwidth"], "the profile's read"
    return None, None


def model_validation(records, llc_bytes, bw, fused_impl="numba-fused", memory="DRAM"):
    """devices.<name>.model_validation: per-dtype error, dtype/GQA/batch effects, a finding, at the
    shape the sweep varied (batch 1, H_kv = H on the CPU; the GPU sweep's batch and GQA group)."""
    large = [r for r in records if r.get("validated") and r["model"]["cache_bytes"] >= LARGE_CACHE_FACTOR * llc_bytes]
    if not bw:
        return {"finding": "the profile has no read bandwidth to validate the model against"}
    if not large:
        return {"finding": f"no validated decode point has a cache of at least {LARGE_CACHE_FACTOR}x the "
                           f"last-level cache ({si(LARGE_CACHE_FACTOR * llc_bytes, 'B')}): the model's DRAM bytes "
                           "would be served partly by the cache"}
    if all(r["model_error"] is None for r in large):  # derive_point had no compute roof
        return {"finding": "the profile has no fp32 FMA peak (peak_flops.fp32: not measured, or its output check "
                           "failed) to predict the decode points' time with"}
    shape = swept_shape(large)
    mha = [r for r in large if (r["batch"], r["heads"], r["kv_heads"]) == shape]
    per_dtype = {}
    for dtype in ("fp32", "bf16", "fp16", "int8"):
        lengths = [r["seq_len"] for r in mha if r["dtype"] == dtype]
        best = _best(mha, dtype=dtype, seq_len=max(lengths)) if lengths else None  # fastest impl at the longest cache
        if best:
            per_dtype[dtype] = {"impl": best["impl"], "seq_len": best["seq_len"], "model_error": best["model_error"],
                                "fraction_of_bandwidth": best["achieved"]["fraction_of_bandwidth"],
                                "model_error_adjacent": best.get("model_error_adjacent"),
                                "fraction_of_adjacent_read": best["achieved"].get("fraction_of_adjacent_read"),
                                "regime": best["model"].get("regime")}
    fused_lengths = [r["seq_len"] for r in mha if r["dtype"] == "fp32" and r["impl"] == fused_impl]
    fp32 = _best(mha, dtype="fp32", impl=fused_impl, seq_len=max(fused_lengths)) if fused_lengths else None
    dtype_ratios = {}
    if fp32:
        for dtype in ("bf16", "fp16", "int8"):
            other = _best(mha, dtype=dtype, impl=fused_impl, seq_len=fp32["seq_len"])
            dtype_ratios[f"{dtype}_vs_fp32"] = ratio_check(other, fp32, f"{dtype}/fp32")

    def fused(batch, group, like=None):
        """The fused impl's fastest record of one batch and GQA group: fp32 at its longest cache, or
        the dtype and seq_len of `like`."""
        found = [r for r in large if r["impl"] == fused_impl and r["batch"] == batch and r["heads"] == shape[1]
                 and r["heads"] == group * r["kv_heads"]]
        if like:
            return _best(found, dtype=like["dtype"], seq_len=like["seq_len"])
        dtype = "fp32" if any(r["dtype"] == "fp32" for r in found) else min((r["dtype"] for r in found), default=None)
        lengths = [r["seq_len"] for r in found if r["dtype"] == dtype]
        return _best(found, dtype=dtype, seq_len=max(lengths)) if lengths else None

    group1 = fused(shape[0], 1)
    gqa = ratio_check(fused(shape[0], 4, group1) if group1 else None, group1, "GQA group 4 / group 1")
    gqa_widened = {"available": False, "reason": "the sweep has no 16-bit or int8 GQA group 4 / group 1 pair"}
    for dtype in ("bf16", "fp16", "int8"):  # a widened cache's kernel shares each row among the group's heads
        by_group = {g: [r for r in large if r["impl"] == fused_impl and r["dtype"] == dtype and r["batch"] == shape[0]
                        and r["heads"] == shape[1] == g * r["kv_heads"]] for g in (1, 4)}
        if by_group[1] and by_group[4]:  # each at its longest cache (the CPU sweep's: the same bytes)
            four, one = (_best(found, seq_len=max(r["seq_len"] for r in found)) for found in (by_group[4], by_group[1]))
            gqa_widened = dict(ratio_check(four, one, f"{dtype} GQA group 4 / group 1"), dtype=dtype)
            break
    batched = [r for r in large if r["impl"] == fused_impl and r["batch"] > 1 and r["kv_heads"] == r["heads"]]
    batch = ratio_check(batched[0] if batched else None, fused(1, 1), "batch > 1 / batch 1")
    holds, finding = model_finding(per_dtype, dtype_ratios, shape, memory)
    return {"model_holds": holds, "holds_within": MODEL_HOLDS_WITHIN, "per_dtype": per_dtype,
            "dtype_ratios": dtype_ratios, "gqa": gqa, "gqa_widened": gqa_widened, "batch": batch, "finding": finding,
            "short_of_roofs": short_of_roofs(large),
            "large_cache_bytes": LARGE_CACHE_FACTOR * llc_bytes}


def headline_verdict(headline, holds_within=MODEL_HOLDS_WITHIN):
    """(holds: True, False or None where undecided, the model error it is judged by, whether that error
    is against the read beside the point, whether the point outran that read) of a per_dtype entry."""
    adjacent = headline.get("model_error_adjacent") is not None
    error = headline["model_error_adjacent"] if adjacent else headline["model_error"]
    sped_up = adjacent and (headline.get("fraction_of_adjacent_read") or 0) > FASTER_THAN_READ
    return (None if sped_up else abs(error) <= holds_within), error, adjacent, sped_up  # sped up: the read beside it no longer describes the memory


def model_finding(per_dtype, dtype_ratios, shape, memory):
    """(model holds: True, False or None where undecided, the one-line finding) from the headline
    dtype's best point (against the read beside it where paired) and the dtype ratios."""
    dtype = headline_dtype(per_dtype)
    headline = per_dtype.get(dtype)
    if not headline:
        return False, f"no point of the swept shape (batch {shape[0]}, H {shape[1]}, H_kv {shape[2]}) to validate"
    holds, error, adjacent, sped_up = headline_verdict(headline)
    finding = f"{headline['regime'] or 'regime unknown'}: {headline['impl']} {dtype} at "
    if adjacent:
        finding += (f"{headline['fraction_of_adjacent_read']:.2f} of the {memory} read bandwidth measured beside it "
                    f"({headline['fraction_of_bandwidth']:.2f} of the profile's); model error {error:+.0%} "
                    f"({headline['model_error']:+.0%} against the profile's bandwidth)")
    else:
        finding += f"{headline['fraction_of_bandwidth']:.2f} of {memory} read bandwidth; model error {error:+.0%}"
    ratios = [f"{k.split('_')[0]} {v['measured_time_ratio']:.2f}x fp32's time ("
              + (f"{v['time_ratio_at_equal_read']:.2f}x at equal read bandwidth; " if v.get("time_ratio_at_equal_read") else "")
              + f"model {v['model_bytes_ratio']:.2f})"
              for k, v in dtype_ratios.items() if v.get("measured_time_ratio")]
    if ratios:
        finding += "; " + ", ".join(ratios)
    if sped_up:
        finding += "; undecided: the memory's speed changed while that point ran"
    return holds, finding


def validate_section(section, llc_bytes, fused_impl="numba-fused", memory="DRAM"):
    """Derive every decode record of a device section and its model_validation, in place."""
    records = section.get("decode_attention")
    if not records:
        return section
    bw, peak = roofs(section)
    for rec in records:
        derive_point(rec, bw, peak)
        derive_in_core(rec)
        flag_faster_than_profiled_read(rec, bw, llc_bytes, memory)
    section["model_validation"] = model_validation(records, llc_bytes, bw, fused_impl, memory)
    return section
