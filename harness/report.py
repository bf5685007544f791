"""Reports from stored profiles: the data behind the tables and figures, and the markdown.

`report_data` turns a profile into plain data (tables and figure series); `write_report` renders
it with harness/plots.py. A report never runs a probe; every number comes from the profile.
"""

import os
import re

from harness import model, plots
from harness.gpus import memory_name
from harness.machine import ASSUMED_LLC_BYTES, last_level_cache_bytes
from harness.profile import CPU_CLOCK, atomic_write_text, by_device, labelled_records, run_conditions
from harness.specs import match_spec, spec_flag
from harness.summary import (CLOCK_SETTINGS, balance_text, crossover_phrase, decode_shape, ghz, rate_unit, record_name,
                             record_warnings, seed_weights_change, short_of_roofs_phrase, si, switch_text,
                             unmeasured_phrases, working_set_band)
from harness.validation import LARGE_CACHE_FACTOR, compute_roof, headline_dtype, headline_fraction, matmul_rate, roofs, swept_shape

LEVELS = ("L1", "L2", "L3", "DRAM", "HBM", "GDDR")
FLOAT_MATMULS = ("bf16", "fp16", "tf32", "fp32")  # tensor_flops in FLOP/s (int8's are OP/s)
SATURATION_SHARE = 0.9  # of the best triad rate of the sweep: the threads that reach it saturate the memory
SWEPT_KERNELS = {"triad": "triad (fp64)", "peak_fp32": "fp32 FMA peak"}  # thread_sweep's kernels, as labelled
CLOCK_SHIFT = 0.05  # of the nominal clock: an fp32 FMA peak that implies a clock this far from it re-rates the matmul units
FIGURES = (("roofline", plots.roofline), ("decode", plots.decode_vs_seq_len), ("hierarchy", plots.hierarchy),
           ("threads", plots.thread_scaling))  # report_data's series and how each is drawn
HOLDS = {True: "yes", False: "no", None: "undecided (the memory's speed changed while the point ran: profile again)"}


def conditions_text(doc):
    """How the CPU ran while it was measured, as compare's run conditions give it ('' where none is
    recorded): the clock its fp32 FMA peak implies, the median steal and other load."""
    got = run_conditions(doc).get("cpu") or {}
    parts = [f"cores at {ghz(got[CPU_CLOCK])} (implied by the fp32 FMA peak)"] if CPU_CLOCK in got else []
    shares = [f"{name} {value:.1%}" for name, value in got.items() if name != CPU_CLOCK]
    if shares:
        parts.append(", ".join(shares) + " (medians over the measurements)")
    return "; ".join(parts)


def pct(x):
    return "n/a" if x is None else f"{x:.0%}"


def num(x, fmt="{:.2f}"):
    return "n/a" if x is None else fmt.format(x)


def large_decode_points(sec, llc):
    """Validated decode records whose cache is at least LARGE_CACHE_FACTOR x the LLC."""
    return [r for r in sec.get("decode_attention") or []
            if r.get("validated") and r["model"]["cache_bytes"] >= LARGE_CACHE_FACTOR * llc]


def theoretical_peak(rec, theory, dtype):
    """The theoretical FLOP/s of the cores a peak record's threads had (the machine's, in profiles
    made before records carried their own)."""
    return rec.get("theoretical_flops_per_s") or (theory.get("flops_per_s") or {}).get(dtype)


def hierarchy_series(who, sec):
    """The read sweep as a figure: each validated point's best and median rate against its working
    set, and each level's bandwidth over the band of working sets it was taken from (None without
    a sweep). A GPU's L1 points (a slice per SM read through L1) are a kernel of their own."""
    points = [{"working_set_bytes": r["working_set_bytes"], "bytes_per_s": r["bytes_per_s"],
               "median_bytes_per_s": r.get("median_bytes_per_s"), "level": r.get("level"),
               "kernel": "read through L1 (a slice per SM)" if "bytes_per_sm" in r else "read"}
              for r in sec.get("hierarchy") or [] if r.get("validated") and r.get("bytes_per_s")]
    if not points:
        return None
    levels = []
    for name, entry in (sec.get("hierarchy_levels") or {}).items():
        at_level = [p["working_set_bytes"] for p in points if p["level"] == name]
        if not (entry.get("bytes_per_s") and at_level):
            continue
        lo, hi = entry.get("working_set_bytes_range") or [None, None]
        levels.append({"level": name, "bytes_per_s": entry["bytes_per_s"],
                       "lo": max(lo or 0, min(at_level)), "hi": min(hi or float("inf"), max(at_level))})
    return {"title": f"{who}: read bandwidth against working set", "points": points, "levels": levels}


def thread_series(who, sec):
    """The thread sweep as plain data: per kernel (triad, fp32 FMA peak) each thread count's best and
    median rate, validated points only (None without a sweep)."""
    kernels = []
    for kernel, recs in (sec.get("thread_sweep") or {}).items():
        good = sorted((r for r in recs if r.get("validated")), key=lambda r: r["threads"])
        unit = "B/s" if kernel == "triad" else "FLOP/s"
        best_key, median_key = ("bytes_per_s", "median_bytes_per_s") if unit == "B/s" else ("flops_per_s", "median_flops_per_s")
        if good:
            kernels.append({"kernel": kernel, "label": SWEPT_KERNELS.get(kernel, kernel), "unit": unit,
                            "threads": [r["threads"] for r in good],
                            "best": [r[best_key] for r in good], "median": [r.get(median_key) for r in good]})
    return {"title": f"{who}: scaling with threads", "kernels": kernels} if kernels else None


def saturation_threads(kernel, share=SATURATION_SHARE):
    """The fewest threads whose best rate reaches `share` of the sweep's best (a thread_series kernel)."""
    top = max(kernel["best"])
    return next(t for t, rate in zip(kernel["threads"], kernel["best"]) if rate >= share * top)


def threads_markdown(series, image):
    """The thread sweep's table (each rate against one thread's) and where the memory saturates."""
    out = ["## Scaling with threads", ""]
    if not series:
        return out + ["No thread sweep in this profile.", ""]
    out += [f"![Scaling with threads]({image})", ""]
    by_kernel = {k["kernel"]: k for k in series["kernels"]}
    counts = sorted({t for k in series["kernels"] for t in k["threads"]})
    header, columns = ["threads"], []
    for k in series["kernels"]:
        one = k["best"][0] if k["threads"][0] == 1 else None
        header += [f"{k['label']}, best", "x one thread"]
        columns.append({t: (si(rate, k["unit"]), num(rate / one) + "x" if one else "n/a")
                        for t, rate in zip(k["threads"], k["best"])})
    out += [table(header, [[t] + [cell for col in columns for cell in col.get(t, ("n/a", "n/a"))] for t in counts]), ""]
    triad = by_kernel.get("triad")
    if triad and len(triad["threads"]) > 1:
        most, enough = triad["threads"][-1], saturation_threads(triad)
        out += [f"The triad reaches {SATURATION_SHARE:.0%} of its best rate at {enough} of {most} threads: "
                + ("the memory saturates there, and more threads add compute, not bandwidth (a memory-bound kernel "
                   "such as decode attention gains little from them)." if enough < most else
                   f"fewer threads fall short of it, so the memory is not saturated before all {most} run."), ""]
    return out


def roofline_series(who, sec, llc, memory="DRAM", clock="nominal clock"):
    """Slopes per memory level, ceilings per dtype (measured and theoretical), ridges, decode points.
    The memory's slope is bandwidth.read, the roof the ridges, the model and the drills divide by (its
    sweep level, a few seconds away, can differ: validation warns past REPEAT_AGREEMENT), so each
    ridge sits where the slope meets its ceiling; the caches' slopes are their sweep levels."""
    levels = sec.get("hierarchy_levels") or {}
    bw, _ = roofs(sec)
    slopes = [{"level": lv, "label": f"{lv} read (measured)", "bytes_per_s": levels[lv]["bytes_per_s"], "measured": True}
              for lv in LEVELS if (levels.get(lv) or {}).get("bytes_per_s") and not (bw and lv == memory)]
    if bw:
        slopes.append({"level": memory, "label": f"{memory} read (measured, bandwidth.read)", "bytes_per_s": bw,
                       "measured": True})
    theory = sec.get("theoretical") or {}
    if theory.get("bytes_per_s"):
        slopes.append({"level": memory, "label": f"{memory} (theoretical)", "bytes_per_s": theory["bytes_per_s"], "measured": False})
    ceilings = []
    for dtype, rec in (sec.get("peak_flops") or {}).items():
        if rec.get("flops_per_s"):
            ceilings.append({"dtype": dtype, "roof": "FMA", "label": f"{dtype} FMA peak (measured)",
                             "flops_per_s": rec["flops_per_s"], "measured": True})
        t = theoretical_peak(rec, theory, dtype)
        if t:
            ceilings.append({"dtype": dtype, "roof": "FMA", "label": f"{dtype} peak (theoretical, {clock})",
                             "flops_per_s": t, "measured": False})
    fma = max([c["flops_per_s"] for c in ceilings if c["measured"]], default=0)
    for dtype, rec in (sec.get("dot_flops") or {}).items():  # a CPU's bf16 and int8 dot-product instructions
        if rec.get("validated") and (rec.get("flops_per_s") or 0) > fma:
            ceilings.append({"dtype": dtype, "roof": "dot product", "label": f"{dtype} dot product (measured)",
                             "flops_per_s": rec["flops_per_s"], "measured": True})
    for dtype, rec in (sec.get("tensor_flops") or {}).items():  # matmuls that raise the roof (bf16, int8)
        if isinstance(rec, dict) and rec.get("validated") and (rec.get("flops_per_s") or 0) > fma:
            ceilings.append({"dtype": dtype, "roof": "matmul", "label": f"{dtype} matmul (measured)",
                             "flops_per_s": rec["flops_per_s"], "measured": True})
            if rec.get("theoretical_flops_per_s"):  # a CPU's matrix units (AMX) at the nominal clock
                ceilings.append({"dtype": dtype, "roof": "matmul", "label": f"{dtype} matmul (theoretical, {clock})",
                                 "flops_per_s": rec["theoretical_flops_per_s"], "measured": False})
    # each ridge named by its roof: a GPU's fp16 has two, the half2 FMA chains' and the tensor cores'
    ridges = [{"dtype": c["dtype"], "name": f"{c['dtype']} {c['roof']}", "intensity": c["flops_per_s"] / bw,
               "flops_per_s": c["flops_per_s"]}
              for c in ceilings if c["measured"]] if bw else []
    points = []
    for r in large_decode_points(sec, llc):
        points.append({"impl": r["impl"], "dtype": r["dtype"], "intensity": r["model"]["intensity"],
                       "flops_per_s": r["achieved"]["flops_per_s"], "source": "analytic", "seq_len": r["seq_len"],
                       "kv_heads": r["kv_heads"], "heads": r["heads"], "batch": r["batch"]})
        counted = r.get("counters") or {}
        if counted.get("intensity") and counted.get("flops"):
            points.append({"impl": r["impl"], "dtype": r["dtype"], "intensity": counted["intensity"],
                           "flops_per_s": counted["flops"] / r["time_s"], "source": "counters", "seq_len": r["seq_len"],
                           "kv_heads": r["kv_heads"], "heads": r["heads"], "batch": r["batch"]})
    # one point per (impl, dtype): the longest cache of the swept shape
    best = {}
    shape = swept_shape(points)
    for p in points:
        if (p["batch"], p["heads"], p["kv_heads"]) == shape:
            key = (p["impl"], p["dtype"], p["source"])
            if key not in best or p["seq_len"] > best[key]["seq_len"]:
                best[key] = p
    hi = max([r["intensity"] for r in ridges] + [1.0]) * 30
    dots = ", dotted measured dot product" if any(c["roof"] == "dot product" for c in ceilings) else ""
    return {"title": f"{who}: roofline (solid measured FMA, dash-dot measured matmul{dots}, dashed theoretical)",
            "slopes": slopes, "ceilings": ceilings, "ridges": ridges, "points": list(best.values()),
            "intensity_range": [0.1, hi]}


def decode_series(who, sec, llc, memory="DRAM", cache="last-level cache"):
    """Per (impl, dtype), for the shape the sweep varied seq_len over (the most common batch and
    heads: batch 1, H_kv = H on the CPU): time, prediction and fraction of bandwidth by seq_len;
    llc_seq_len, where that shape's fp32 cache fills `cache` (a GPU's L2)."""
    valid = [r for r in sec.get("decode_attention") or [] if r.get("validated")]
    batch, heads, kv_heads = swept_shape(valid)
    groups = {}
    for r in valid:
        if (r["batch"], r["heads"], r["kv_heads"]) == (batch, heads, kv_heads):
            groups.setdefault((r["impl"], r["dtype"]), []).append(r)
    series = []
    for (impl, dtype), recs in sorted(groups.items()):
        recs.sort(key=lambda r: r["seq_len"])
        series.append({"impl": impl, "dtype": dtype, "seq_len": [r["seq_len"] for r in recs],
                       "time_s": [r["time_s"] for r in recs],
                       "predicted_time_s": [r["model"].get("predicted_time_s") for r in recs],
                       "fraction_of_bandwidth": [(r.get("achieved") or {}).get("fraction_of_bandwidth") for r in recs]})
    models = {}  # the prediction depends on the dtype, not the impl: one dotted line per dtype
    for s in series:
        if any(p is not None for p in s["predicted_time_s"]) and len(s["seq_len"]) > len(models.get(s["dtype"], {}).get("seq_len", [])):
            models[s["dtype"]] = {"dtype": s["dtype"], "seq_len": s["seq_len"], "predicted_time_s": s["predicted_time_s"]}
    swept = next((r for r in valid if (r["batch"], r["heads"], r["kv_heads"]) == (batch, heads, kv_heads)), None)
    llc_seq = llc / (2 * batch * kv_heads * swept["head_dim"] * 4) if swept and llc else None  # K and V, fp32
    shape = f"batch {batch}, H_kv = H" if kv_heads == heads else f"batch {batch}, H = {heads}, H_kv = {kv_heads}"
    return {"title": f"{who}: decode attention, {shape}", "series": series,
            "models": list(models.values()), "llc_seq_len": llc_seq, "memory": memory, "cache": cache}


def drills(sec, gpu=False):
    """The seed page's drill problems answered with a device's measured roofs: its read bandwidth,
    and as peak the CPU's fp32 FMA chains (the page's i5-8250U figure) or a GPU's fp16 tensor-core
    matmul (the page's H100 figure, 990 TFLOP/s), its half2 fp16 FMA chains where no matmul was measured;
    the Llama steps, as `harness model` predicts them, and the GQA groups (compute_bound_groups) each
    against their own dtype's roof."""
    bw, peak = roofs(sec)
    if not (bw and peak):
        return None
    kind = "tensor-core" if gpu else "torch"
    roof16, what16 = compute_roof(sec, model.MATMUL_DTYPES["fp16"], kind)
    roof8, _ = compute_roof(sec, model.MATMUL_DTYPES["int8"], kind)
    peak, what = (roof16, what16) if gpu else (peak, "fp32 FMA peak")
    llama2 = model.load_preset("llama-2-7b")
    llama3 = model.load_preset("llama-3-8b")
    step16 = model.decode_step(llama2, "fp16", 1, 4096, bw, roof16)
    step8 = model.decode_step(llama2, "int8", 1, 4096, bw, roof8)
    gqa = model.decode_step(llama3, "fp16", 1, 4096, bw, roof16)
    return {
        "balance": model.machine_balance(peak, bw),
        "attainable_fp32_decode": model.attainable_flops_per_s(0.5, peak, bw),
        "attainable_fp16_decode": model.attainable_flops_per_s(1.0, peak, bw),
        "fraction_fp32_decode": model.fraction_of_peak(0.5, peak, bw),
        "fraction_fp16_decode": model.fraction_of_peak(1.0, peak, bw),
        "llama2_fp16": step16, "llama2_int8": step8, "llama3_fp16": gqa,
        "bandwidth": bw, "peak": peak, "peak_what": what, "fp16_roof_what": what16,
        "compute_bound_group": compute_bound_groups(sec, bw, kind),
    }


def compute_bound_groups(sec, bw, kind):
    """{cache dtype: (the GQA group from which decode attention on it turns compute-bound, the roof
    that sets it)}: against the fastest measured way to compute on that dtype's data (compute_roof),
    not one peak for all: an fp32 cache has no fp16 tensor cores to run on."""
    groups = {}
    for dtype in ("fp32", "fp16", "int8"):
        rate, how = compute_roof(sec, model.MATMUL_DTYPES[dtype], kind)
        groups[dtype] = (model.compute_bound_group(model.machine_balance(rate, bw), dtype), how)
    return groups


def peak_rows(sec, spec):
    """Measured vs theoretical (and datasheet) figures, with fractions and flags."""
    theory = sec.get("theoretical") or {}
    rows = []
    for kernel, rec in (sec.get("bandwidth") or {}).items():
        t = theory.get("bytes_per_s")
        s = (spec or {}).get("bandwidth_bytes_per_s", {}).get("value")
        rows.append({"metric": f"bandwidth {kernel} (fp64)", "best": si(rec.get("bytes_per_s"), "B/s"),
                     "median": si(rec.get("median_bytes_per_s"), "B/s"), "theoretical": si(t, "B/s") if t else "n/a",
                     "fraction": pct(rec["bytes_per_s"] / t) if t and rec.get("bytes_per_s") else "n/a",
                     "flag": spec_flag(rec.get("bytes_per_s"), s) or ("; ".join(w for w in rec.get("warnings", []) if "exceeds" in w)) or ""})
    for dtype, rec in (sec.get("peak_flops") or {}).items():
        t = theoretical_peak(rec, theory, dtype)
        s = ((spec or {}).get("flops_per_s") or {}).get(dtype, {}).get("value")
        flag = spec_flag(rec.get("flops_per_s"), s) or ""
        if t and rec.get("flops_per_s") and rec["flops_per_s"] > t:
            flag = "above the theoretical peak" + (f" at the nominal clock: implies {ghz(rec['implied_clock_hz'])}"
                                                   if rec.get("implied_clock_hz") else "")
        elif not t and rec.get("implied_clock_hz"):
            flag = f"no clock reported: the measurement implies {ghz(rec['implied_clock_hz'])}"
        rows.append({"metric": f"peak {dtype} FMA", "best": si(rec.get("flops_per_s"), "FLOP/s"),
                     "median": si(rec.get("median_flops_per_s"), "FLOP/s"), "theoretical": si(t, "FLOP/s") if t else "n/a",
                     "fraction": pct(rec.get("fraction_of_theoretical")), "flag": flag})
    fma = instructions_per_s((sec.get("peak_flops") or {}).get("fp32") or {})
    for dtype, rec in (sec.get("dot_flops") or {}).items():  # no table gives these instructions' rates
        unit, dot = rate_unit(dtype), instructions_per_s(rec)
        flag = f"{dot / fma:.2f}x the fp32 FMA chains' instructions a second" if dot and fma else ""
        rows.append({"metric": f"peak {dtype} dot product ({rec.get('instruction')})", "best": si(rec.get("flops_per_s"), unit),
                     "median": si(rec.get("median_flops_per_s"), unit), "theoretical": "n/a", "fraction": "n/a",
                     "flag": flag if rec.get("validated") else f"WRONG: {rec.get('error')}"})
    return rows


def instructions_per_s(rec):
    """Vector instructions a second of a chain peak with 32-bit lanes (fp32 FMA, bf16 and int8 dot
    products): its calls a second x accumulators x threads x steps a call / lanes a vector; None
    where the record lacks any of them."""
    keys = ("flops_per_s", "flops_per_call", "accumulators_per_thread", "threads", "iterations_per_call", "simd_bits")
    if not (rec.get("validated") and all(rec.get(k) for k in keys)):
        return None
    calls = rec["flops_per_s"] / rec["flops_per_call"]
    return calls * rec["accumulators_per_thread"] * rec["threads"] * rec["iterations_per_call"] / (rec["simd_bits"] / 32)


def cgroup_limits(limits):
    """The container's CPU quota and memory limit, as the profile recorded them."""
    if limits is None:
        return "not recorded"
    parts = ([f"CPU quota {limits['cpu_quota']:g} CPUs"] if limits.get("cpu_quota") is not None else []) + (
        [f"memory {si(limits['memory_limit_bytes'], 'B')}"] if limits.get("memory_limit_bytes") else [])
    return ", ".join(parts) or "none"


def memory_settings(settings):
    """Transparent huge pages, NUMA nodes and NUMA balancing, as the profile recorded them."""
    if settings is None:
        return "not recorded"
    balancing = {0: "off", 1: "on"}.get(settings.get("numa_balancing"), settings.get("numa_balancing"))
    return (f"transparent huge pages {settings.get('transparent_hugepages') or 'unknown'}, "
            f"{settings.get('numa_nodes') or 'unknown'} NUMA node(s), NUMA balancing {balancing or 'unknown'}")


def clock_settings(settings):
    """cpufreq's governor, energy/performance preference, turbo and clock cap, as the profile recorded
    them; 'not visible' where it recorded none (no cpufreq, as under most hypervisors)."""
    if settings is None:
        return "not recorded"
    if all(v is None for v in settings.values()):
        return "not visible (no cpufreq; under a hypervisor the host sets the clock)"
    return ", ".join(f"{label} {'unknown' if settings.get(key) is None else text(settings[key])}"
                     for key, label, text in CLOCK_SETTINGS)


def collect_warnings(sec):
    """A device section's failed probes, its own warnings, then every timed record's warnings
    (the thread sweep's included), named as the terminal names them."""
    return ([f"probe {name} failed, its measurements are missing: {message}"
             for name, message in (sec.get("probe_errors") or {}).items()]
            + list(sec.get("warnings") or []) + record_warnings(sec))


def report_data(doc, specs=()):
    """Everything a report shows, as plain data (what tests check instead of pixels)."""
    cpu_info = doc["machine"].get("cpu") or {}
    cpu = (doc.get("devices") or {}).get("cpu") or {}
    llc = last_level_cache_bytes(cpu_info)
    linked = doc["machine"].get("cpu_spec")  # the profile names its spec file where one matched
    spec = next((s for s in specs if s["file"] == linked), None) or match_spec(
        cpu_info.get("model"), [s for s in specs if s["kind"] == "cpu"])
    return {
        "id": doc["machine"]["id"], "doc": doc, "cpu_info": cpu_info, "cpu": cpu, "spec": spec,
        "roofline": roofline_series(doc["machine"]["id"], cpu, llc) if cpu.get("peak_flops") else None,
        "decode": decode_series(doc["machine"]["id"], cpu, llc) if cpu.get("decode_attention") else None,
        "hierarchy": hierarchy_series(doc["machine"]["id"], cpu),
        "threads": thread_series(doc["machine"]["id"], cpu),
        "peaks": peak_rows(cpu, spec) + tensor_rows(cpu, spec, "matmul (torch)"), "drills": drills(cpu),
        "balance": balance_table(cpu, "DRAM"), "warnings": collect_warnings(cpu),
        "gpus": [gpu_data(doc, name, sec, specs) for name, sec in by_device(doc)
                 if name.startswith("gpu")],
    }


def gpu_data(doc, name, sec, specs=()):
    """The same figures for one devices.gpuN section (its L2 plays the last-level cache's part),
    beside the datasheet spec its name matches."""
    info = sec.get("gpu") or {}
    l2 = info.get("l2_bytes") or 0
    spec = match_spec(info.get("name"), [s for s in specs if s["kind"] == "gpu"])
    who = f"{doc['machine']['id']} {name}"
    memory = memory_name(info)
    roofline = roofline_series(who, sec, l2, memory, "SM clock during the run") if sec.get("peak_flops") else None
    decode = decode_series(who, sec, l2, memory, "L2") if sec.get("decode_attention") else None
    return {"name": name, "sec": sec, "info": info, "spec": spec, "memory": memory, "roofline": roofline,
            "decode": decode, "hierarchy": hierarchy_series(who, sec),
            "peaks": peak_rows(sec, spec) + tensor_rows(sec, spec), "drills": drills(sec, gpu=True),
            "balance": balance_table(sec, memory), "warnings": collect_warnings(sec)}


def balance_table(sec, memory):
    """The balance per compute roof and memory level, or None: each measured FMA peak and validated
    matmul over each cache level's read bandwidth (the hierarchy sweep) and the memory's
    (bandwidth.read: the column that is the profile's `balance`). Data in a level meets that level's
    roof below its figure: decode attention's 0.5 to 2 FLOP/byte against a cache that fits in L2 is
    still bound by L2's bandwidth wherever L2's column is above them."""
    bw, _ = roofs(sec)
    levels = sec.get("hierarchy_levels") or {}
    columns = [(lv, levels[lv]["bytes_per_s"]) for lv in LEVELS
               if lv != memory and (levels.get(lv) or {}).get("bytes_per_s")] + ([(f"{memory} (read)", bw)] if bw else [])
    tensor = sec.get("tensor_flops") or {}
    computes = [(f"{d} {what}", rec["flops_per_s"], d) for key, what in (("peak_flops", "FMA"), ("dot_flops", "dot product"))
                for d, rec in (sec.get(key) or {}).items() if rec.get("flops_per_s")] + [  # a wrong answer has none
        (f"{d} matmul", rate, d) for d in tensor if (rate := matmul_rate(tensor, d))]
    if not (columns and computes):
        return None
    return {"levels": [name for name, _ in columns],
            "rows": [{"compute": what, "rate": rate, "unit": rate_unit(dtype),
                      "per_level": [rate / level_bw for _, level_bw in columns]} for what, rate, dtype in computes]}


def fma_clock_shift(sec):
    """(the clock the fp32 FMA peak implies over the nominal one, that clock in Hz) where the two
    differ by CLOCK_SHIFT or more, else (None, None): the ratio is the peak's fraction of its
    theoretical rate at the nominal clock. A CPU's matmul fraction at the nominal clock misleads by
    this factor when the host runs the cores faster."""
    rec = (sec.get("peak_flops") or {}).get("fp32") or {}
    shift = rec.get("fraction_of_theoretical")
    if shift and rec.get("implied_clock_hz") and abs(shift - 1) >= CLOCK_SHIFT:
        return shift, rec["implied_clock_hz"]
    return None, None


def tensor_rows(sec, spec, what="tensor-core matmul"):
    """Matmul peaks (a GPU's tensor cores, a CPU's through torch) against the datasheet's dense rate
    (NVML gives no tensor figures), or a CPU's against its units' rate at the nominal clock."""
    rows = []
    shift, clock_hz = fma_clock_shift(sec)
    for dtype, rec in (sec.get("tensor_flops") or {}).items():
        if not isinstance(rec, dict):
            continue
        sheet = (((spec or {}).get("flops_per_s") or {}).get(f"{dtype}_tensor") or {}).get("value")
        theory = None if sheet else rec.get("theoretical_flops_per_s")
        measured, unit = rec.get("flops_per_s"), rate_unit(dtype)
        flag = spec_flag(measured, sheet) or ""
        if theory and measured and measured > theory:
            implied = rec.get("implied_clock_hz")
            flag = "above the theoretical peak at the nominal clock" + (f": implies at least {ghz(implied)}" if implied else "")
        if theory and measured and shift and rec.get("validated"):
            at_clock = f"{pct(measured / (theory * shift))} of the units' rate at the {ghz(clock_hz)} the fp32 FMA peak implies"
            flag = f"{flag}; {at_clock}" if flag else at_clock
        dot = (sec.get("dot_flops") or {}).get(dtype) or {}
        if measured and rec.get("validated") and dot.get("flops_per_s"):  # a CPU's: the instruction it multiplies with
            of_dot = f"{pct(measured / dot['flops_per_s'])} of the {dtype} dot-product peak ({dot.get('instruction')})"
            flag = f"{flag}; {of_dot}" if flag else of_dot
        theoretical = (f"{si(sheet, unit)} (datasheet, dense)" if sheet
                       else f"{si(theory, unit)} (nominal clock)" if theory else "n/a")
        rows.append({"metric": f"{what} {dtype}", "best": si(measured, unit),
                     "median": si(rec.get("median_flops_per_s"), unit), "theoretical": theoretical,
                     "fraction": pct(measured / (sheet or theory)) if (sheet or theory) and measured else "n/a",
                     "flag": flag if rec.get("validated") else f"WRONG: {rec.get('error')}"})
    return rows


def matmul_theory_lines(sec):
    """How each theoretical matmul figure of a CPU was derived (its matrix units), where the
    profile has them."""
    matmul = (sec.get("theoretical") or {}).get("matmul") or {}
    how = "; ".join(f"{dtype}: {text}" for dtype, text in (matmul.get("source") or {}).items())
    return [f"Theoretical matmul figures, at the nominal clock: {how}; rates from {matmul.get('table_source')}.", ""] if how else []


def matmul_notes(sec, gpu):
    """Lines saying why peaks are missing: FMA chains of a dtype the cores have no native arithmetic
    for (a CPU's fp16), dot products of an instruction the CPU lacks, no torch, or products torch
    refused here."""
    out = []
    for key, what in (("peak_flops_unsupported", "FMA peaks"), ("dot_flops_unsupported", "Dot-product peaks")):
        left_out = [f"{u['dtype']} ({u['reason']})" for u in sec.get(key) or []]
        out += [f"{what} not measured: {'; '.join(left_out)}.", ""] if left_out else []
    peaks, products = ("Tensor-core peaks", "Tensor-core matmuls") if gpu else ("Matmul peaks", "Matmuls")
    out += [f"{peaks} not measured: {sec['tensor_flops']['reason']}.", ""] if (sec.get("tensor_flops") or {}).get("reason") else []
    refused = [f"{u['dtype']} ({u['reason']})" for u in sec.get("tensor_flops_unsupported") or []]
    return out + ([f"{products} torch refused here: {'; '.join(refused)}.", ""] if refused else [])


def ratio(a, b):
    return num(a / b, "{:.3f}") if a and b else "n/a"


def counter_rows(device, sec):
    """Every record of a section with counted bytes or FLOPs, counted beside declared (the model's)."""
    rows = []
    for key, name, rec in labelled_records(sec):
        c = rec.get("counters") or {}
        if not (c.get("dram_bytes") or c.get("flops")):
            continue
        declared_b, declared_f = rec.get("bytes_per_call"), rec.get("flops_per_call")
        rows.append([device, record_name(key, name, rec), c["source"],
                     si(c.get("dram_bytes"), "B"), si(declared_b, "B"), ratio(c.get("dram_bytes"), declared_b),
                     si(c.get("flops"), "FLOP"), si(declared_f, "FLOP"), ratio(c.get("flops"), declared_f),
                     num(c.get("intensity")), ratio(declared_f, declared_b),
                     c.get("dram_bytes_source") or "", c.get("flops_source") or ""])
    return rows


def counters_markdown(secs):
    """The hardware-counter table of every device (per call), or why nothing was counted."""
    rows = [row for device, sec in secs for row in counter_rows(device, sec)]
    if rows:
        return [table(["device", "measurement", "counted by", "counted bytes", "declared bytes", "ratio",
                       "counted FLOPs", "declared FLOPs", "ratio", "counted FLOP/B", "model FLOP/B", "bytes from",
                       "FLOPs from"], rows),
                "", "Per call. Declared bytes and FLOPs are the probe's own count (the analytic model's for decode); "
                "a bytes ratio below 1 means a cache served part of the traffic. Counted decode points are the "
                "hollow markers on the rooflines.", ""]
    reasons = {(r.get("counters") or {}).get("reason") for _, sec in secs
               for r in sec.get("decode_attention") or []} - {None}
    return ["No counter measurements in this profile" + (f": {'; '.join(sorted(reasons))}." if reasons else "."), ""]


def cpu_numbers(info):
    """x86's family and model, or an Arm CPU's part number (it has no family)."""
    if info.get("family") is not None:
        return f"family {info['family']}, model {info.get('model_number')}"
    return f"part 0x{info['model_number']:03x}" if isinstance(info.get("model_number"), int) else "no model number"


def core_count(info):
    """The CPU's cores, split into P- and E-cores on a hybrid one ("14 (6 P + 8 E)")."""
    e_cores = info.get("efficiency_cores")
    return f"{info.get('cores')}" + (f" ({info['cores'] - e_cores} P + {e_cores} E)" if e_cores else "")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def attention_sentence(balance):
    """Where decode attention (0.5 to 2 FLOP/byte with one KV head per query head) sits against the
    balance: a ratio, not a fixed 'far left', since an HBM CPU's balance can be near 2."""
    top = model.mha_intensity("int8")
    if balance > top:
        return (f"decode attention (0.5 to {top:g} FLOP/byte with a KV head per query head) sits {balance / top:.1f}x "
                "or more below that ridge, so it is memory-bound here (a GQA group multiplies its intensity: see "
                "the drill problems below).")
    bound = [d for d in ("fp32", "fp16", "int8") if model.mha_intensity(d) >= balance]
    return (f"decode attention (0.5 to {top:g} FLOP/byte with a KV head per query head) reaches that ridge: on "
            f"{' and '.join(bound)} caches it is compute-bound here.")


def markdown(data, source=None):
    """The report's markdown, naming the profile file it was read from; absent sections are said to
    be absent."""
    doc, cpu, info = data["doc"], data["cpu"], data["cpu_info"]
    bw, peak = roofs(cpu)
    read_from = f"`{source}`" if source else "that profile"
    out = [f"# Hardware profile: {data['id']}", "",
           f"Profile created {doc['created_utc']} by `{doc.get('command', 'harness profile')}`; "
           f"every number below is read from {read_from} (raw samples included there).", ""]
    if data["roofline"]:
        out += ["![Roofline](roofline.png)", ""]
    if bw and peak:
        best, what = best_float_rate(cpu)
        # a CPU's matrix units (AMX) or its fp16 FMA chains (AVX512-FP16) beyond its fp32 ones
        how = f"{what} through torch" if what.endswith("matmul") else "fp16 FMA chains" if what == "fp16 FMA" else None
        beyond = f" (its {how}: {si(best, 'FLOP/s')}, a balance of {balance_text(best / bw)})" if how else ""
        out += [f"**In one sentence:** this machine reads DRAM at {si(bw, 'B/s')} and computes "
                f"{si(peak, 'FLOP/s')} in fp32, a balance of {peak / bw:.1f} FLOP/byte{beyond}; "
                f"{attention_sentence(peak / bw)}", ""]
    out += ["## Machine and software", "", table(["", ""], [
        ["CPU", f"{info.get('model')} ({info.get('vendor')}, {cpu_numbers(info)})"],
        ["cores / threads / sockets", f"{core_count(info)} / {info.get('threads')} / {info.get('sockets')}"],
        ["SIMD", ", ".join(info.get("simd", []))],
        ["clock", f"{si((info.get('frequency') or {}).get('nominal_hz'), 'Hz')} nominal ({(info.get('frequency') or {}).get('source')})"],
        ["caches", ", ".join(f"L{c['level']} {c['size_bytes'] // 1024} KiB x{c['instances']}" for c in info.get("caches") or [])
         or f"unknown (none visible in sysfs: sizes that depend on the last-level cache assumed one of "
            f"{ASSUMED_LLC_BYTES >> 20} MiB)"],
        ["memory", si(info.get("memory_bytes"), "B")],
        ["hypervisor", info.get("hypervisor") or "none (bare metal)"],
        ["cgroup limits", cgroup_limits(info.get("cgroup"))],
        ["memory settings", memory_settings(info.get("memory_settings"))],
        ["clock settings", clock_settings(info.get("clock_settings"))],
        ["OS / Python", f"{doc['software'].get('os')} {doc['software'].get('kernel')} / Python {doc['software'].get('python')}"],
        ["packages", ", ".join(f"{k} {v}" for k, v in (doc["software"].get("packages") or {}).items() if v)],
        *([["threads used", cpu["threads"]]] if cpu.get("threads") else []),
        *([["while measuring", measuring]] if (measuring := conditions_text(doc)) else []),
        ["datasheet spec", data["spec"]["name"] if data["spec"] else "none matches this CPU in profiles/specs/"],
    ]), ""]
    if "cpu" in doc["devices"] or not data["gpus"]:
        out += measurements_markdown(cpu, data["peaks"], data["balance"], "##", "hierarchy.png" if data["hierarchy"] else None)
        out += matmul_notes(cpu, gpu=False)
        out += threads_markdown(data["threads"], "threads.png")
        out += decode_markdown(cpu, "decode.png", "##")
        out += unmeasured_markdown(cpu)
        out += drills_markdown(data["drills"])
    else:  # `harness profile --device gpu`: the host's CPU is described above, not measured
        out += ["## CPU", "", "Not measured in this profile (it was made with `--device gpu`): "
                "`harness profile --device all` measures the CPU beside the GPUs.", ""]
    out += ["## GPUs", ""]
    out += [line for g in data["gpus"] for line in gpu_markdown(g)] or [doc["machine"].get("gpus_reason") or "None.", ""]
    out += ["## Hardware counters", ""]
    out += counters_markdown([("cpu", cpu)] + [(g["name"], g["sec"]) for g in data["gpus"]])
    out += ["## Measurement warnings", ""]
    out += [f"- {w}" for w in data["warnings"]] + [f"- {g['name']} {w}" for g in data["gpus"] for w in g["warnings"]] or ["None."]
    out.append("")
    return "\n".join(out)


def measurements_markdown(sec, peaks, balance, h, hierarchy_png=None):
    """Peaks against theory, balance (balance_table) and the hierarchy of one device section, under
    headings `h` (with the sweep's figure where there is one)."""
    out = [f"{h} Peaks: measured against theoretical", ""]
    if peaks:
        out += [table(["metric", "best", "median", "theoretical", "fraction", "flag"],
                      [[r["metric"], r["best"], r["median"], r["theoretical"], r["fraction"], r["flag"]] for r in peaks]), ""]
        out += [f"Theoretical figures: {(sec.get('theoretical') or {}).get('source', 'n/a')}", ""]
        out += theory_share_lines(sec) + matmul_theory_lines(sec) + rounds_lines(sec) + read_kernel_lines(sec)
    else:
        out += ["No bandwidth or peak measurements in this profile.", ""]
    out += [f"{h} Balance", ""]
    if balance:
        out += [table(["compute", "rate", *balance["levels"]],
                      [[r["compute"], si(r["rate"], r["unit"]), *(balance_text(b) for b in r["per_level"])]
                       for r in balance["rows"]]), "",
                "FLOP (int8: OP) per byte: each compute rate over each level's read bandwidth, the caches' from the "
                "hierarchy sweep below, the memory's from bandwidth.read "
                f"(the profile's `balance`: {sec.get('balance_basis') or 'not stored in this profile'}). A kernel "
                "whose data sits in a level is bound by that level's bandwidth below its figure, by the compute "
                "above it.", ""]
    else:
        out += ["No balance: the profile lacks a bandwidth or a peak measurement.", ""]
    out += [f"{h} Memory hierarchy (read kernel)", ""]
    levels = sec.get("hierarchy_levels") or {}
    if hierarchy_png:
        out += [f"![Read bandwidth against working set]({hierarchy_png})", ""]
    if levels:
        out += [table(["level", "bandwidth (median of points)", "best point", "points", "working sets"],
                      [[lv, si(v.get("bytes_per_s"), "B/s"), si(v.get("max_bytes_per_s"), "B/s"),
                        v.get("points", 0), working_set_band(v) or v.get("reason", "")] for lv, v in levels.items()]), "",
                "Each level's bandwidth is the median over the points well inside it (the working sets in the last "
                "column), so the points at a boundary, partly in two levels, set no level." + two_stream_note(sec), ""]
    elif sec.get("hierarchy"):
        out += [f"No level is summarised from the sweep's {len(sec['hierarchy'])} points: no cache was visible here "
                "to place them in (their levels are `unknown`); where the rate drops is where a cache ends.", ""]
    else:
        out += ["No hierarchy sweep in this profile.", ""]
    return out


def theory_share_lines(sec):
    """Where the compute rows' theoretical figures are a share of the machine's (fewer threads than cores:
    `--threads`, a CPU quota), that share, so the figure the rows show follows from the one the source
    line derives."""
    whole = (sec.get("theoretical") or {}).get("flops_per_s") or {}
    shares = {(rec["theoretical_flops_per_s"] / whole[dtype], rec.get("threads"))
              for dtype, rec in (sec.get("peak_flops") or {}).items()
              if isinstance(rec, dict) and rec.get("theoretical_flops_per_s") and whole.get(dtype)}
    shares = {(share, threads) for share, threads in shares if share < 1 - 1e-9}
    if not shares:
        return []
    share, threads = max(shares)
    return [f"The table's theoretical FLOP/s are {share:.0%} of that figure: the peak of the cores the peak probes' "
            f"{threads} thread{'s' * (threads != 1)} ran on.", ""]


def rounds_lines(sec):
    """How the bandwidth kernels, the hierarchy sweep and the FMA, dot-product and matmul peaks were
    timed, where their records say (interleaved_with)."""
    def rounds(keys):
        names = next((rec["interleaved_with"] for key in keys for rec in (sec.get(key) or {}).values()
                      if isinstance(rec, dict) and rec.get("interleaved_with")), None)
        return names and f"({', '.join(names)})"
    sweep = next((p["interleaved_with"] for p in sec.get("hierarchy") or [] if isinstance(p, dict)
                  and p.get("interleaved_with")), None)
    sets = [f"{what} {names}" for what, names in
            (("bandwidth kernels", rounds(("bandwidth", "bandwidth_fp32"))),
             ("hierarchy sweep's reads", sweep and f"at its {len(sweep)} working sets"),  # not 30 names
             ("FMA peaks", rounds(("peak_flops",))), ("dot-product peaks", rounds(("dot_flops",))),
             ("matmul peaks", rounds(("tensor_flops",)))) if names]
    if not sets:
        return []
    timed = " and the ".join([", the ".join(sets[:-1]), sets[-1]] if len(sets) > 1 else sets)
    return [f"The {timed} were timed in interleaved rounds, one sample of each in turn (BabelStream's "
            "loop), so a drift of the memory's speed or of the host's scheduling slows them alike and their ratios are "
            "the kernels'; steal and other load are over all the rounds.", ""]


def read_kernel_lines(sec):
    """Which read kernel bandwidth.read ran, where it was chosen by timing (kernel_config), and how
    much faster than Numba's own it read DRAM."""
    config = ((sec.get("bandwidth") or {}).get("read") or {}).get("kernel_config") or {}
    medians, chosen = config.get("median_s_per_setting") or {}, config.get("read_kernel")
    if not (chosen and medians.get(chosen)):
        return []
    setting = re.fullmatch(r"(\d+)-bit x(\d+)", chosen)  # cpu_read's setting names: '<bits>-bit x<sums>'
    if chosen == "numba":
        gain = f"Numba's own kernel, the fastest of the {len(medians)} settings timed"
    else:
        gain = f"`{chosen}`"  # a setting this version does not name (another version's profile): as recorded
        if setting:
            bits, sums = setting.groups()
            gain += f" ({'one sum' if sums == '1' else sums + ' sums'} of {bits}-bit vectors in flight)"
        if medians.get("numba"):
            gain += f", {medians['numba'] / medians[chosen]:.2f}x the rate of Numba's own kernel"
    return [f"The read (the balance's bandwidth, the decode roof) ran the read kernel timed fastest from DRAM "
            f"here: {gain} (medians of interleaved calls: `kernel_config`; the harness's docs/methodology.md). "
            "The hierarchy's points beyond L2 take the faster of that one and Numba's.", ""]


def two_stream_note(sec):
    """What the sweep's L1-sized points did differently, where they record it (read_streams)."""
    if not any(p.get("read_streams") == 2 for p in sec.get("hierarchy") or []):
        return ""
    return (" Working sets that fit L1 are summed in two streams (two reps of each thread's chunk in one loop), so "
            "that neither the adds' latency nor each rep's reduction bounds the loads (the harness's "
            "docs/methodology.md).")


def gpu_markdown(g):
    """One devices.gpuN section: identity, the same measurements as the CPU's, telemetry."""
    info, sec, name = g["info"], g["sec"], g["name"]
    bw, peak = roofs(sec)
    out = [f"### {name}: {info.get('name')}", ""]
    if g["roofline"]:
        out += [f"![Roofline of {name}](roofline-{name}.png)", ""]
    if bw and peak:
        best, what = best_float_rate(sec)
        units = "tensor cores" if what.endswith("matmul") else "half2 FMA chains" if what == "fp16 FMA" else None
        tensor = (f" Its {units} compute {si(best, 'FLOP/s')} ({what}), a balance of {balance_text(best / bw)} "
                  "FLOP/byte." if units else "")
        where = attention_sentence(peak / bw)
        out += [f"Reads {g['memory']} at {si(bw, 'B/s')} and computes {si(peak, 'FLOP/s')} in fp32 (FMA), a balance of "
                f"{peak / bw:.1f} FLOP/byte.{tensor} {where[0].upper()}{where[1:]}", ""]
    out += [table(["", ""], [
        ["UUID / PCI bus id", f"{info.get('uuid')} / {info.get('pci_bus_id') or 'n/a'}"],
        ["compute capability / SMs", f"{'.'.join(map(str, info.get('compute_capability') or []))} / {info.get('sm_count')}"],
        ["memory / bus", f"{si(info.get('memory_bytes'), 'B')} / {info.get('memory_bus_width_bits')} bits"],
        ["max clocks (SM / memory)", f"{si(info.get('max_sm_clock_hz'), 'Hz')} / {si(info.get('max_memory_clock_hz'), 'Hz')}"],
        ["L2", si(info.get("l2_bytes"), "B")],
        ["power limit", f"{info.get('power_limit_w')} W"],
        ["driver / CUDA", f"{info.get('driver_version')} / {info.get('cuda_driver_version')}"],
        ["ECC / MIG", f"{switch_text(info.get('ecc_mode'))} / {switch_text(info.get('mig_mode'))}"],
        ["datasheet spec", g["spec"]["name"] if g["spec"] else "none matches this GPU in profiles/specs/"],
    ]), ""]
    out += measurements_markdown(sec, g["peaks"], g["balance"], "####", f"hierarchy-{name}.png" if g["hierarchy"] else None)
    out += matmul_notes(sec, gpu=True)
    out += decode_markdown(sec, f"decode-{name}.png", "####")
    out += fused_kernel_markdown(sec)
    out += unmeasured_markdown(sec)
    out += drills_markdown(g["drills"], "####", name)
    tele = sec.get("telemetry") or {}
    if tele:
        rows = [[probe, si((t.get("sm_clock_hz") or {}).get("median"), "Hz"), num((t.get("power_w") or {}).get("max"), "{:.0f}"),
                 num((t.get("temperature_c") or {}).get("max"), "{:.0f}"), ", ".join(t.get("clocks_event_reasons") or []) or "none"]
                for probe, t in tele.items()]
        out += ["#### Telemetry while measuring", "",
                table(["probe", "SM clock (median)", "max power W", "max temperature C", "clock-event reasons"], rows), ""]
    return out


def fused_kernel_markdown(sec):
    """One line on each cupy-fused split-K kernel as the driver loaded it (registers, spills, blocks per SM)."""
    kernels = {}
    for r in sec.get("decode_attention") or []:
        if r.get("impl") == "cupy-fused" and r.get("registers") is not None:
            kernels.setdefault((r["dtype"], r["head_dim"], r["heads"] // r["kv_heads"]), r)
    if not kernels:
        return []
    parts = [f"{dtype} d={d} G={g}: {r['registers']} registers, {r['local_bytes_per_thread']} B local per thread"
             + (f", {r['blocks_per_sm']} blocks per SM ({r['blocks_per_sm_limit']})" if r.get("blocks_per_sm") else "")
             for (dtype, d, g), r in sorted(kernels.items())]
    return ["cupy-fused split-K kernels as loaded: " + "; ".join(parts) + ".", ""]


def unmeasured_markdown(sec):
    """The decode points a section left out, with the reason (a GPU's SDPA backends torch refused,
    a CPU's caches beyond memory)."""
    skipped = unmeasured_phrases(sec.get("decode_unsupported") or [])
    return ["Decode points not measured: " + "; ".join(skipped) + ".", ""] if skipped else []


def decode_markdown(sec, image, h):
    """The decode table and the model's verdict of one device section, under headings `h`."""
    recs = sec.get("decode_attention") or []
    if not recs:
        return [f"{h} Decode attention", "", "No decode attention measurements in this profile.", ""]
    rows = []
    for r in recs:
        a = r.get("achieved") or {}
        rows.append([r["impl"], r["dtype"], r["batch"], f"{r['heads']}/{r['kv_heads']}", r.get("head_dim", "n/a"), r["seq_len"],
                     f"{r['time_s'] * 1e3:.3f}", si(a.get("bytes_per_s"), "B/s"), num(a.get("fraction_of_bandwidth")),
                     num(a.get("fraction_of_adjacent_read")), f"{a.get('fraction_of_peak_flops', 0):.2%}" if a.get("fraction_of_peak_flops") is not None else "n/a",
                     f"{r['model_error']:+.0%}" if r.get("model_error") is not None else "n/a",
                     f"{r.get('rel_error', float('nan')):.1e}" if r.get("validated") else f"WRONG: {r.get('error')}"])
    out = [f"{h} Decode attention", "", f"![Decode attention against sequence length]({image})", "",
           table(["impl", "dtype", "B", "H/H_kv", "d_h", "seq_len", "median ms", "achieved", "of read bw", "of adjacent read",
                  "of fp32 peak", "model error", "error vs float64"], rows), ""]
    v = sec.get("model_validation") or {}
    out += [f"{h} Does the model hold here?", "", f"**{v.get('finding', 'no verdict')}**", ""]
    if v.get("per_dtype"):
        out += [f"Model holds (|error| <= {v['holds_within']:.0%} for the best {headline_dtype(v['per_dtype'])} "
                f"implementation): **{HOLDS[v['model_holds']]}**.", "",
                table(["dtype", "best impl", "seq_len", "model error", "of read bw", "model error (adjacent read)",
                       "of adjacent read"],
                      [[d, p["impl"], p["seq_len"], f"{p['model_error']:+.0%}", num(p["fraction_of_bandwidth"]),
                        f"{p['model_error_adjacent']:+.0%}" if p.get("model_error_adjacent") is not None else "n/a",
                        num(p.get("fraction_of_adjacent_read"))]
                       for d, p in v["per_dtype"].items()]), ""]
        widened = v.get("gqa_widened") or {}
        named = list(v.get("dtype_ratios", {}).items()) + [("GQA group 4 vs 1", v.get("gqa") or {})]
        if widened.get("dtype"):
            same = abs(widened["model_bytes_ratio"] - 1) < 0.01
            named.append((f"GQA group 4 vs 1, {widened['dtype']}" + (", same bytes" if same else ""), widened))
        named += [("batch 8 vs batch 1, same bytes", v.get("batch") or {})]
        drift = any(e.get("time_ratio_at_equal_read") for _, e in named)  # points with reads measured beside them
        effects = [[k.replace("_", " "), num(e.get("measured_time_ratio"))]
                   + ([num(e.get("time_ratio_at_equal_read"))] if drift else []) + [num(e.get("model_bytes_ratio"))]
                   for k, e in named]
        out += [table(["effect", "measured time ratio"] + (["at equal read bandwidth"] if drift else [])
                      + ["model byte ratio"], effects), ""]
        if drift:
            out += ["At equal read bandwidth: each time scaled by the DRAM reads paired with its samples, which takes "
                    "out the memory's drift between the two points.", ""]
        short = short_of_roofs_phrase(v.get("short_of_roofs"))
        if short:
            out += [short[0].upper() + short[1:] + ".", ""]
    return out + in_core_markdown(recs, h)


def kernel_setting(config):
    """A kernel_config record in words: how the rows reach the core ('direct, 16 rows ahead into L1, 128
    into L2'); 'n/a' where none is recorded (a profile from before prefetching into L2 names no L2)."""
    if "stage_rows_in_l1" not in config:
        return "n/a"
    ahead, l2 = config["prefetch_rows_ahead"], config.get("prefetch_l2_rows_ahead")
    text = (f"{'staged' if config['stage_rows_in_l1'] else 'direct'}, "
            + (f"{ahead} rows ahead into L1" if ahead else "no prefetch into L1"))
    return text + ("" if l2 is None else f", {l2} into L2" if l2 else ", none into L2")


def in_core_markdown(recs, h):
    """Where the fused kernel's time goes at each point from memory that has its in-core rate: its
    loops' time with the rows in L2 and the memory's at the read beside it, against their sum and
    their maximum (validation.derive_in_core)."""
    rows = [[f"{r['impl']} {decode_shape(r)}", kernel_setting(r.get("kernel_config") or {}), f"{r['time_s'] * 1e3:.1f}"]
            + [f"{r['in_core'][key] * 1e3:.1f}" for key in ("core_time_s", "memory_time_s", "no_overlap_time_s",
                                                             "full_overlap_time_s")]
            + [num(r["time_s"] / r["in_core"]["no_overlap_time_s"])]
            for r in recs if (r.get("in_core") or {}).get("core_time_s")]
    if not rows:
        return []
    return [f"{h} Where the fused kernel's time goes", "",
            table(["point", "setting (tuned)", "median ms", "loops ms (rows in L2)", "memory ms (read beside it)",
                   "sum ms (no overlap)", "max ms (full overlap)", "median / sum"], rows), "",
            "Loops: the kernel's own tasks, one on each of the point's threads at once, each with its K and V rows "
            "in its core's L2 (no memory to wait for), timed and checked against float64, at the point's bytes; "
            "memory: the point's bytes at the DRAM read measured beside it. The step should take between the "
            "longer of the two (max: the other hidden) and both in turn (sum: none hidden, as the ECM model assumes "
            "of Intel cores). Where the loops are the longer, they bound the step from below and only a faster loop "
            "lowers that bound; where the memory is, the median's place between the bounds says how much of the "
            "loops it hid, not what a faster loop would gain (the harness's docs/decode.md: on the AMX Xeon VM, "
            "bf16 at group 4 with most of its arithmetic removed ran only 1.10x faster, before its prefetch into L2).",
            ""]


def drills_markdown(d, h="##", who="this machine"):
    """The drill problems' answers under heading level `h`, for `who` (this machine, or gpuN)."""
    title = f"{h} The seed page's drill problems, for {who}"
    if not d:
        return [title, "", "Not answerable: the profile has no measured read bandwidth and fp32 peak.", ""]
    l2, l8, l3 = d["llama2_fp16"], d["llama2_int8"], d["llama3_fp16"]
    return [title, "",
            f"- Machine balance: {si(d['peak'], 'FLOP/s')} ({d['peak_what']}) / "
            f"{si(d['bandwidth'], 'B/s')} = **{balance_text(d['balance'])} FLOP/byte**.",
            f"- Attainable FLOP/s of decode attention: fp32 cache (I = 0.5) **{si(d['attainable_fp32_decode'], 'FLOP/s')}** "
            f"({d['fraction_fp32_decode']:.1%} of peak); fp16 cache (I = 1) **{si(d['attainable_fp16_decode'], 'FLOP/s')}** "
            f"({d['fraction_fp16_decode']:.1%} of peak).",
            f"- Llama-2-7B, fp16, batch 1, 4096 tokens of context: predicted **{l2['predicted_time_s'] * 1e3:.0f} ms per token** "
            f"({si(l2['weight_bytes'], 'B')} of weights: {l2['weights_time_s'] * 1e3:.0f} ms; {si(l2['cache_bytes'], 'B')} of KV "
            f"cache: {l2['cache_time_s'] * 1e3:.0f} ms), {l2['regime']}. Weights are counted from each model's "
            f"architecture; the page's 12·L·d² gives {si(l2['seed_weight_bytes'], 'B')} "
            f"({seed_weights_change(l2)}), and for Llama-3-8B "
            f"{si(l3['seed_weight_bytes'], 'B')} of {si(l3['weight_bytes'], 'B')} "
            f"({seed_weights_change(l3)}).",
            f"- Quantising weights and cache to int8 halves both: {l8['predicted_time_s'] * 1e3:.0f} ms per token. "
            f"GQA as in Llama-3-8B (8 KV heads) cuts the cache read 4x: {si(l3['cache_bytes'], 'B')}, "
            f"{l3['cache_time_s'] * 1e3:.0f} ms instead of {l2['cache_time_s'] * 1e3:.0f} ms.",
            f"- The FFN's weight read {crossover_phrase(l2['crossover_batch'])} (fp16 weights, against the "
            f"{d['fp16_roof_what']}: the roof `harness model` takes for them).",
            "- GQA shares each KV head among a group of query heads and multiplies attention's intensity by the "
            "group: decode attention turns compute-bound here from a group of "
            + ", ".join(f"{g} with an {dt} cache ({how})" for dt, (g, how) in d["compute_bound_group"].items())
            + ". Llama-3-8B's group is 4, Llama-3-70B's 8.", ""]


def write_report(doc, out_dir, specs=(), source=None):
    """reports/<id>/report.md with its figures (roofline, decode, hierarchy, threads) beside it; returns the paths.
    `source` is the profile file's path, named in the report's header."""
    data = report_data(doc, specs)
    folder = os.path.join(out_dir, data["id"])
    paths = []
    for key, draw in FIGURES:  # key.png for the CPU, key-gpuN.png for each GPU
        for part, suffix in [(data, "")] + [(g, f"-{g['name']}") for g in data["gpus"]]:
            if part.get(key):
                paths.append(os.path.join(folder, f"{key}{suffix}.png"))
                draw(part[key], paths[-1])
    paths.append(os.path.join(folder, "report.md"))
    atomic_write_text(paths[-1], markdown(data, source))
    return paths


def best_float_rate(sec):
    """(FLOP/s, what) of a device's fastest validated floating-point rate, as a datasheet's headline
    is its fastest: a matmul (tensor cores, a CPU's AMX through torch), a GPU's half2 fp16 FMA chains
    (twice its fp32 rate: the fastest where torch is missing) or the fp32 FMA chains."""
    _, fma = roofs(sec)
    half2 = ((sec.get("peak_flops") or {}).get("fp16") or {}).get("flops_per_s")
    rates = [(fma or 0, "fp32"), (half2 or 0, "fp16 FMA")] + [
        (matmul_rate(sec.get("tensor_flops") or {}, d) or 0, f"{d} matmul") for d in FLOAT_MATMULS]
    rate, what = max(rates, key=lambda r: r[0])
    return (rate, what) if rate else (None, None)


def index_rows(docs, specs):
    """reports/README.md rows: measured machines by id (the same order however they were named), then
    datasheet specs."""
    rows = []
    for doc in sorted(docs, key=lambda d: d["machine"]["id"]):
        link = f"[{doc['machine']['id']}]({doc['machine']['id']}/report.md)"
        for name, sec in by_device(doc):
            bw, _ = roofs(sec)
            peak, what = best_float_rate(sec)
            per_dtype = (sec.get("model_validation") or {}).get("per_dtype") or {}
            headline = headline_dtype(per_dtype)
            fraction, of_what = headline_fraction(per_dtype)
            kind = "measured (CPU)" if name == "cpu" else f"measured ({name}: {(sec.get('gpu') or {}).get('name')})"
            rows.append([link, kind, si(bw, "B/s"), f"{si(peak, 'FLOP/s')} {what}" if peak else "n/a",
                         si(((sec.get("peak_flops") or {}).get("fp64") or {}).get("flops_per_s"), "FLOP/s"),
                         f"{balance_text(peak / bw)} ({what})" if bw and peak else "n/a",
                         f"{num(fraction)} ({headline}, of {of_what})" if fraction is not None else "n/a"])
    for spec in specs:
        bw = spec["bandwidth_bytes_per_s"]["value"]
        rates = spec["flops_per_s"]
        best_key = next((k for k in ("bf16_tensor", "fp16_tensor", "fp32") if k in rates), None)
        best = rates[best_key]["value"] if best_key else None
        rows.append([spec["name"], f"datasheet ({spec['file']})", si(bw, "B/s"),
                     f"{si(best, 'FLOP/s')} {best_key} dense" if best else "n/a",
                     si(rates.get("fp64", {}).get("value"), "FLOP/s"),
                     f"{balance_text(best / bw)} ({best_key})" if best else "n/a", "n/a"])
    return rows


def write_index(docs, specs, out_dir):
    """reports/README.md: every profiled machine and every datasheet spec side by side."""
    text = "\n".join([
        "# Reports", "",
        "Every profiled machine (measured) beside every datasheet spec (profiles/specs/, each number with its "
        "source; tensor rates dense, sparse kept apart in the spec files). Balance is peak FLOP/s over "
        "bandwidth: decode attention (0.5 to 2 FLOP/byte) is memory-bound wherever the balance is above that.", "",
        table(["machine", "kind", "bandwidth", "peak", "fp64", "balance (FLOP/byte)", "decode fraction of read bw (cache dtype, which read)"],
              index_rows(docs, specs)), "",
        "Regenerate with `make report` (`harness report`); reports never run probes.", ""])
    path = os.path.join(out_dir, "README.md")
    atomic_write_text(path, text)
    return path
