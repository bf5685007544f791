"""Plain-text summaries of profile sections for the terminal (no probe runs here)."""

import math
import re

from harness.gpus import memory_name
from harness.profile import labelled_records


def balance_text(flop_per_byte):
    """A balance with two significant figures or more: 0.0086, 0.55, 5.5, 14.7, 295 (a slow fallback
    matmul against L1 is no 0.0)."""
    if flop_per_byte < 1:
        return f"{flop_per_byte:.2g}"
    return f"{flop_per_byte:.1f}" if round(flop_per_byte, 1) < 100 else f"{flop_per_byte:.0f}"  # 99.97: '100', not '100.0'


def ghz(hz):
    """A clock in hertz as '3.86 GHz'."""
    return f"{hz / 1e9:.2f} GHz"


CLOCK_SETTINGS = (  # machine.cpu.clock_settings (key, label, text): named and shown one way by report, compare and fleet
    ("governor", "governor", str),
    ("energy_performance_preference", "energy/performance preference", str),
    ("turbo", "turbo", lambda on: "on" if on else "off"),
    ("scaling_max_hz", "OS clock cap", ghz),
)


def si(value, unit):
    """12.3e9, 'B/s' -> '12.3 GB/s'; None -> 'n/a'."""
    if value is None:
        return "n/a"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        # from where the prefix below would print 1000.0 (no prefix: '.3g' prints 1e+03 from 999.5)
        if abs(value) >= factor * (0.99995 if factor > 1e3 else 0.9995):
            return f"{value / factor:.1f} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def natural_key(name):
    """Sort key that reads runs of digits as numbers: hierarchy.16384 before hierarchy.131072,
    S4096 before S16384, node2 before node10 (plain string order puts each pair the other way)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def working_set_band(entry):
    """The working sets a hierarchy level's bandwidth was taken from, in words ('' where unknown)."""
    if entry.get("bytes_per_sm_range"):
        lo, hi = entry["bytes_per_sm_range"]
        return f"{si(lo, 'B')} to {si(hi, 'B')} per SM"
    lo, hi = entry.get("working_set_bytes_range") or [None, None]
    if hi is None:
        return f"from {si(lo, 'B')}" if lo else ""
    return f"{si(lo, 'B')} to {si(hi, 'B')}" if lo else f"up to {si(hi, 'B')}"


def crossover_phrase(batch):
    """How the FFN's weight read meets the balance: from the first whole batch at or past the
    crossover `batch` (at 11.2, batch 11 is still memory-bound; past float's range, at none)."""
    if not math.isfinite(batch):
        return "stays memory-bound at every batch"
    first = math.ceil(batch - 1e-9)
    return "is compute-bound at every batch" if first <= 1 else f"turns compute-bound at batch >= {first}"


def operation(dtype):
    """What a compute rate in `dtype` counts: integer products count operations (OP), not FLOPs."""
    return "OP" if dtype == "int8" else "FLOP"


def rate_unit(dtype):
    """'OP/s' for int8, 'FLOP/s' for the others."""
    return f"{operation(dtype)}/s"


def record_line(label, rec):
    """One line: label, best and median rate, size, threads, validation and warning count."""
    if "bytes_per_s" in rec:
        best, median, unit = rec["bytes_per_s"], rec["median_bytes_per_s"], "B/s"
    else:
        best, median, unit = rec.get("flops_per_s"), rec.get("median_flops_per_s"), rate_unit(rec.get("dtype"))
    status = "ok" if rec.get("validated") else f"WRONG OUTPUT: {rec.get('error')}"
    warn = f"  [{len(rec['warnings'])} warning(s)]" if rec.get("warnings") else ""
    ws = f"  ws {si(rec['working_set_bytes'], 'B')}" if rec.get("working_set_bytes") else ""
    kernel = (rec.get("kernel_config") or {}).get("read_kernel")  # a read whose kernel was chosen by timing
    return (f"{label:<28} best {si(best, unit):>14}  median {si(median, unit):>14}{ws}"
            f"  {rec['threads']} thr  {status}{warn}" + (f"  read kernel {kernel}" if kernel else ""))


def section_lines(section):
    """Lines for every record in a devices.<name> section (or a probe's output)."""
    lines = []
    for key, value in section.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) and "samples_s" in v for v in value.values()):
            for name, rec in value.items():
                lines.append(record_line(f"{key}.{name}", rec))
        elif key == "hierarchy":
            for rec in value:
                lines.append(record_line(f"hierarchy {rec['level']}", rec))
        elif key == "hierarchy_levels":
            for level, rec in value.items():
                band = working_set_band(rec)
                lines.append(f"{'level ' + level:<28} {si(rec.get('bytes_per_s'), 'B/s'):>14}" + (
                    f"  ({rec['reason']})" if rec.get("reason") else
                    f"  {level_basis(rec.get('points'))}" + (f", working sets {band}" if band else "")
                    + (f"; best point {si(rec.get('max_bytes_per_s'), 'B/s')}" if rec.get("points") != 1 else "")))
        elif key == "thread_sweep":
            for kernel, recs in value.items():
                for rec in recs:
                    lines.append(record_line(f"thread_sweep.{kernel}.{rec['threads']}", rec))  # compare's name
        elif key == "decode_attention":
            lines.extend(decode_line(rec) for rec in value)
        elif key in ("peak_flops_unsupported", "dot_flops_unsupported", "tensor_flops_unsupported"):
            what = {"peak": "FMA peak", "dot": "dot-product peak"}.get(key.split("_")[0], "matmul")
            lines.extend(f"{what} {u['dtype']} not measured: {u['reason']}" for u in value)
        elif key == "decode_unsupported":
            lines.extend(f"decode not measured: {phrase}" for phrase in unmeasured_phrases(value))
        elif key == "model_validation":
            lines.append(f"model validation: {value['finding']}")
            short = short_of_roofs_phrase(value.get("short_of_roofs"))
            if short:
                lines.append(f"  {short}")
        elif key == "note":
            lines.append(f"note: {value}")
        elif key == "warnings":
            lines.extend(f"WARNING: {w}" for w in value)
        elif key == "balance":
            for name, b in value.items():  # fp32, matmul_int8, ...
                unit = f"{operation(name.split('_')[-1])}/byte"
                lines.append(f"{'balance ' + name:<28} {balance_text(b)} {unit}" if b else f"balance {name}: n/a")
        elif key == "theoretical":
            memory = memory_name(section["gpu"]) if "gpu" in section else "DRAM"  # as its levels name it
            lines.append(f"{'theoretical ' + memory:<28} {si(value['bytes_per_s'], 'B/s')}")
            for dtype, f in value["flops_per_s"].items():
                lines.append(f"{'theoretical ' + dtype:<28} {si(f, rate_unit(dtype))}")
            for dtype, f in ((value.get("matmul") or {}).get("flops_per_s") or {}).items():
                if f:  # a CPU's matrix units (AMX, AVX512-FP16), where it has them
                    lines.append(f"{'theoretical matmul ' + dtype:<28} {si(f, rate_unit(dtype))}")
    return lines + counter_lines(section)


def level_basis(points):
    """What a memory level's bandwidth is: the median of its points' best samples, or the best
    sample of its one point."""
    return "the best sample of its one point" if points == 1 else f"median of {points} points' best samples"


def short_of_roofs_phrase(points):
    """One sentence on the points below both roofs, or None."""
    if not points:
        return None
    return ("below both roofs (the roofline leaves out what sets their time: the kernel's loads, conversions, "
            "reductions or latency): " + "; ".join(
                f"{p['point']} at {p['fraction_of_roof']:.2f} of its {p['roof'].split('-')[0]} roof, "
                f"{p['fraction_of_peak_flops']:.1%} of the compute peak"
                + (f", its loops alone (rows in L2) {p['in_core_fraction_of_time']:.2f} of its time"
                   if p.get("in_core_fraction_of_time") else "") for p in points))


def switch_text(mode):
    """An NVML mode (ECC, MIG) in words: 1 on, 0 off, None where the GPU does not support it."""
    return {1: "on", 0: "off", None: "not supported"}.get(mode, str(mode))


def decode_shape(rec):
    """A decode point's dtype and shape, one way everywhere: 'fp32 B=1 H=32/8 d_h=128 S=16384'
    (d_h where the record has it: a GPU's unsupported SDPA backend names no shape)."""
    head_dim = f" d_h={rec['head_dim']}" if rec.get("head_dim") else ""
    return (f"{rec['dtype']} B={rec.get('batch')} H={rec.get('heads')}/{rec.get('kv_heads')}{head_dim} "
            f"S={rec.get('seq_len')}")


def record_name(key, name, rec):
    """How counter tables, lines and warnings name a record: a decode point by its shape, a
    kernel by its profile path (a thread sweep's point with its threads), a hierarchy point by its
    working set."""
    if rec.get("impl"):
        return f"decode {rec['impl']} {decode_shape(rec)}"
    if name is None:
        return f"{key} {si(rec.get('working_set_bytes'), 'B')}"
    threads = rec.get("threads")
    return f"{key}.{name}" + (f" at {threads} thread{'s' if threads != 1 else ''}" if key == "thread_sweep" else "")


def record_warnings(section):
    """'NAME: WARNING' for each warning of every timed record of a section, each record named by
    record_name (a decode point by its whole shape, so two points of one length stay apart), and
    of a decode point's in-core task under the point's name."""
    out = []
    for key, name, rec in labelled_records(section):
        label = record_name(key, name, rec)
        out += [f"{label}: {w}" for w in rec.get("warnings") or []]
        out += [f"{label}, its in-core task: {w}" for w in (rec.get("in_core") or {}).get("warnings") or []]
    return out


def warning_lines(section):
    """Each record's warnings, named (the record lines above them only count them)."""
    return [f"warning: {w}" for w in record_warnings(section)]


def counter_lines(section):
    """What hardware counters counted in a section's records (per call, beside the probe's own
    count), and once each, why they counted nothing where they did not; nothing where counting
    was not asked for."""
    lines, reasons = [], {}
    for key, name, rec in labelled_records(section):
        c = rec.get("counters") or {}
        if c.get("dram_bytes") or c.get("flops"):
            lines.append(f"counted {record_name(key, name, rec)} ({c['source']}): {si(c.get('dram_bytes'), 'B')} "
                         f"(declared {si(rec.get('bytes_per_call'), 'B')}), {si(c.get('flops'), 'FLOP')} "
                         f"(declared {si(rec.get('flops_per_call'), 'FLOP')}) a call"
                         + (f"; {c['reason']}" if c.get("reason") else ""))
        elif c.get("reason") and "--counters off" not in c["reason"]:
            reasons.setdefault((c["source"], c["reason"]), rec)
    for (source, reason), rec in reasons.items():
        clock = (rec.get("counters") or {}).get("task_clock_s")
        lines.append(f"counters ({source}): {reason}" + (f" (task-clock counted: {clock * 1e3:.3g} ms a call)" if clock else ""))
    return lines


def profile_lines(doc):
    """A short summary of a whole profile."""
    m = doc["machine"]
    lines = [f"profile of {m['id']} ({m.get('cpu', {}).get('model', '?')}), created {doc['created_utc']}"]
    for name, section in doc["devices"].items():
        lines.append(f"[{name}]")
        lines.extend("  " + line for line in section_lines(section) + warning_lines(section))
    if m.get("gpus_reason"):
        lines.append(f"GPUs: {m['gpus_reason']}")
    return lines


def unmeasured_name(point):
    """A decode point left out (decode_unsupported): its impl, and its shape where it has one (the
    CPU's points beyond memory; a GPU's unsupported SDPA backend names the impl alone)."""
    return point["impl"] + (f" {decode_shape(point)}" if "seq_len" in point else "")


def unmeasured_phrases(points):
    """'NAME, NAME (reason)' per reason of decode points left out, each name once: one reason said
    once (torch missing leaves out every torch point of a sweep)."""
    by_reason = {}
    for u in points:
        by_reason.setdefault(u["reason"], []).append(unmeasured_name(u))
    return [f"{', '.join(dict.fromkeys(names))} ({reason})" for reason, names in sorted(by_reason.items())]


def decode_line(rec):
    """One decode point: shape, median time, achieved bandwidth and fractions, model error, its loops'
    time with the rows in L2 where measured, warning count."""
    a = rec.get("achieved") or {}
    frac, adjacent = a.get("fraction_of_bandwidth"), a.get("fraction_of_adjacent_read")
    err = rec.get("model_error")
    loops = (rec.get("in_core") or {}).get("core_time_s")
    status = "ok" if rec.get("validated") else f"WRONG OUTPUT: {rec.get('error')}"
    count = len(rec.get("warnings") or []) + len((rec.get("in_core") or {}).get("warnings") or [])
    warn = f"  [{count} warning(s)]" if count else ""  # its in-core task's too: warning_lines names both
    return (f"decode {rec['impl']:<11} {decode_shape(rec):<34} {rec['time_s'] * 1e3:9.3f} ms  "
            f"{si(a.get('bytes_per_s'), 'B/s'):>11}"
            + (f"  {frac:.2f} of read bw" if frac is not None else "")
            + (f" ({adjacent:.2f} of the read beside it)" if adjacent is not None else "")
            + (f"  model error {err:+.0%}" if err is not None else "")
            + (f"  loops {loops * 1e3:.1f} ms in L2" if loops else "") + f"  {status}{warn}")


def seed_weights_change(step):
    """The seed page's 12*L*d^2 weight bytes against the architecture's count of a model step,
    as a signed fraction ('-14%')."""
    return f"{step['seed_weight_bytes'] / step['weight_bytes'] - 1:+.0%}"


def seed_weights_note(step):
    """How the architecture's weight count differs from the seed page's 12*L*d^2, where it does."""
    if step["weights_counted"] != "architecture":
        return "the seed page's 12*L*d^2: the preset gives no ffn_dim"
    return f"the seed page's 12*L*d^2 counts {si(step['seed_weight_bytes'], 'B')}, {seed_weights_change(step)}"


def model_lines(step):
    """`harness model` as text."""
    return [
        f"{step['model']} {dtypes_phrase(step)}, batch {step['batch']}, seq_len {step['seq_len']} on {step['machine']}",
        f"  roofs: {si(step['bandwidth_bytes_per_s'], 'B/s')} and {si(step['peak_flops_per_s'], 'FLOP/s')}: "
        f"balance {step['balance']:.1f} FLOP/byte",
        f"  weights  {si(step['weight_bytes'], 'B'):>10}  {step['weights_time_s'] * 1e3:10.2f} ms"
        + f"  ({seed_weights_note(step)})",
        f"  KV cache {si(step['cache_bytes'], 'B'):>10}  {step['cache_time_s'] * 1e3:10.2f} ms"
        + (f"  (window {step['window']})" if step['window'] else ""),
        f"  predicted per-token latency {step['predicted_time_s'] * 1e3:.2f} ms, {step['regime']} "
        f"(arithmetic alone: {step['compute_time_s'] * 1e3:.2f} ms): at most {step['tokens_per_s']:.3g} tokens/s "
        f"over the batch of {step['batch']}",
        f"  intensity: attention {step['attention_intensity']:.2f}, weights {step['weight_intensity']:.2f} FLOP/byte; "
        f"the FFN {crossover_phrase(step['crossover_batch'])}",
    ] + beyond_context_lines(step) + beyond_memory_lines(step)


def beyond_memory_lines(step):
    """A note when the weights and the cache together exceed the device's memory (the time is still
    what reading them would take)."""
    if step.get("fits_in_memory") is not False:
        return []
    return [f"  note: weights and KV cache ({si(step['weight_bytes'] + step['cache_bytes'], 'B')}) exceed the device's "
            f"{si(step['memory_bytes'], 'B')} of memory: this batch and length cannot be held on it at once"]


def dtypes_phrase(step):
    """'fp16', or 'int4 weights, fp16 cache' where the two differ."""
    w, c = step["weight_dtype"], step["cache_dtype"]
    return w if w == c else f"{w} weights, {c} cache"


def beyond_context_lines(step):
    """A note when seq_len passes the context the model was trained for (the arithmetic still holds)."""
    context = step.get("context_tokens")
    if context is None or step["seq_len"] <= context:
        return []
    return [f"  note: seq_len {step['seq_len']} is beyond {step['model']}'s {context}-token context: "
            "a cache that long is arithmetic, not a length the model was trained for"]
