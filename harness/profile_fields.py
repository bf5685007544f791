"""The types of a profile's fields, checked on load wherever the reports, `show` and `compare` read them.

A profile names its fields with their units (`median_bytes_per_s`, `time_s`, `working_set_bytes`),
so most fields' types follow from their names: a field whose name ends in `_s`, `_bytes`, `_hz`
or `_ratio`, or begins `fraction_of_`, holds a number or null (lists such as `samples_s` are
named one by one). The few names
that mean different things in different places (`model`: a CPU's name in `machine.cpu`, the model's
prediction in a decode record; `batch`: a batch size in a record, a finding in `model_validation`)
are checked by the place that holds them. Unknown fields are left alone: a newer harness may add
fields, and an older profile may lack optional ones.

`check_mapping` raises `FieldError` naming the first field that does not fit; profile.py turns it
into the one error that names the file. A timed record's best and median figures are checked against
its raw samples here, with its type; the relations between records (a balance, a decode point's
model error, a hierarchy level, the model's verdict) are profile_relations'.
"""

import math

from harness import stats


class FieldError(ValueError):
    """`where` (dotted path) must be `what`."""


def is_finite_number(v):
    """An int or float, finite, and not a YAML boolean."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(v):
    return v is None or is_finite_number(v)


def is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def is_table(v):
    """A non-empty mapping of names to numbers (per-dtype rates, per-setting times), or null."""
    return v is None or (isinstance(v, dict) and bool(v) and all(_number(x) for x in v.values()))


KINDS = {
    "number": (_number, "a number or null"),
    "amount": (lambda v: v is None or (is_finite_number(v) and v >= 0), "a number, 0 or more, or null"),
    "share": (lambda v: v is None or (is_finite_number(v) and 0 <= v <= 1), "a share from 0 to 1, or null"),
    "numbers": (lambda v: isinstance(v, list) and all(_number(x) for x in v), "a list of numbers"),
    "range": (lambda v: isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v),
              "[low, high], each a number or null (no bound)"),
    "count": (is_count, "a whole number, at least 1"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "note": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "switch": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "texts": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "mapping": (lambda v: isinstance(v, dict), "a mapping"),
    "table": (is_table, "a mapping of names to numbers, or null"),
    "records": (lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of mappings"),
    "unread": (lambda v: True, "anything: no reader reads it"),
}
AMOUNT_SUFFIXES = ("_s", "_bytes", "_bits", "_hz", "_per_call", "_per_sm", "_w")  # times, sizes, rates: never below 0
NUMBER_SUFFIXES = ("_ratio", "_fraction", "_error", "_c")
NUMBER_PREFIXES = ("fraction_of_", "model_error", "time_ratio")
NAMED = {
    # a short_of_roofs point's loops alone over its time (above 1 where they outlast it); prefetch distances in rows
    **dict.fromkeys(("in_core_fraction_of_time", "prefetch_rows_ahead", "prefetch_l2_rows_ahead"), "amount"),
    **dict.fromkeys(("intensity", "flops", "softmax_flops", "bytes", "tolerance", "holds_within", "measured_over_model",
                     "elements", "points", "seed", "min", "median", "max", "samples", "efficiency_cores",
                     "ecc_mode", "mig_mode"), "number"),
    **dict.fromkeys(("samples_s", "reads_before_samples_bytes_per_s", "compute_capability"), "numbers"),
    **dict.fromkeys(("working_set_bytes_range", "bytes_per_sm_range"), "range"),
    # no reader reads these: perf's raw counts by event name (which the names above must not type), ncu's
    # refused metrics, and reads_before_samples' earlier form (profiles of 2026-11-25)
    **dict.fromkeys(("events", "metrics_rejected", "adjacent_reads_bytes_per_s"), "unread"),
    **dict.fromkeys(("threads", "seq_len", "heads", "kv_heads", "head_dim", "batch", "accumulators_per_thread",
                     "read_streams"), "count"),
    **dict.fromkeys(("impl", "dtype", "source", "regime", "level", "via", "roof", "point", "reference",
                     "probe_hash", "finding", "chosen_by", "bytes_counted", "kernel", "read_kernel", "backend", "instruction",
                     "balance_basis", "name", "vendor", "arch", "hypervisor", "id", "type"), "text"),
    **dict.fromkeys(("reason", "gpus_reason", "error", "cpu_spec", "governor", "energy_performance_preference"), "note"),
    "turbo": "switch",
    **dict.fromkeys(("steal_fraction", "other_load_fraction"), "share"),  # of the CPUs' time while measuring
    **dict.fromkeys(("validated", "model_holds", "quick", "against_adjacent_read", "stage_rows_in_l1", "l2_cold",
                     "available"), "flag"),
    **dict.fromkeys(("warnings", "simd", "matrix_units", "clocks_event_reasons", "interleaved_with"), "texts"),
    **dict.fromkeys(("counters", "model", "achieved", "kernel_config", "in_core", "frequency", "cgroup",
                     "memory_settings", "clock_settings", "gpu", "sm_limits"), "mapping"),
    **dict.fromkeys(("median_s_per_setting", "calls_per_setting"), "table"),
    **dict.fromkeys(("caches", "short_of_roofs", "decode_unsupported", "peak_flops_unsupported",
                     "tensor_flops_unsupported", "dot_flops_unsupported"), "records"),
}


def kind_of(key):
    """The kind a field's name gives it, or None for a name this module does not type."""
    if not isinstance(key, str):
        return None
    if key in NAMED:
        return NAMED[key]
    if key.endswith(AMOUNT_SUFFIXES):
        return "amount"
    if key.endswith(NUMBER_SUFFIXES) or key.startswith(NUMBER_PREFIXES):
        return "number"
    return None


def require(mapping, where, keys, filled=True):
    """Each of `keys` is present in `mapping`, and not null where `filled` (types are checked by
    `check_mapping`)."""
    for key in keys:
        if key not in mapping or (filled and mapping[key] is None):
            raise FieldError(f"{where} has no {key}")


def check_value(value, where, kind):
    ok, what = KINDS[kind]
    if not ok(value):
        shown = repr(value)
        raise FieldError(f"{where} must be {what}, got {shown if len(shown) <= 40 else shown[:37] + '...'}")


def check_mapping(mapping, where, overrides=None):
    """Every field of `mapping` whose name has a kind (`overrides` first), and every mapping below it
    (also inside lists) by the same rules."""
    check_value(mapping, where, "mapping")
    overrides = overrides or {}
    for key, value in mapping.items():
        at = f"{where}.{key}"
        kind = overrides.get(key, kind_of(key))
        if kind:
            check_value(value, at, kind)
        if kind in ("table", "unread"):
            continue
        if isinstance(value, dict):
            check_mapping(value, at, overrides)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    check_mapping(item, f"{at}[{i}]", overrides)


def check_timing_record(rec, where, rate_key, work_key):
    """A timed measurement: raw samples, the work a call does, threads, and the median beside a best rate."""
    check_value(rec, where, "mapping")
    samples = rec.get("samples_s")
    if not (isinstance(samples, list) and samples and all(is_finite_number(s) for s in samples)):
        raise FieldError(f"{where}.samples_s must be a list of seconds, at least one (the figures are drawn from them)")
    require(rec, where, (work_key, "threads", "validated"))  # a record without its check's verdict is no measurement
    if rec.get("validated"):  # a checked output's rate is what every reader draws
        require(rec, where, (rate_key,))
    else:  # a failed one says what was wrong, and has no rate for a reader to draw (the balance would)
        require(rec, where, ("error",))
        drawn = [key for key in (rate_key, f"median_{rate_key}") if rec.get(key) is not None]
        if drawn:
            raise FieldError(f"{where}.{drawn[0]} must be null: the record's output check failed (validated: false)")
    if rec.get(rate_key) is not None:
        require(rec, where, (f"median_{rate_key}",))
    check_mapping(rec, where)
    check_rates_from_samples(rec, where, rate_key, work_key)
    if rec.get("counters"):
        require(rec["counters"], f"{where}.counters", ("source",))


def check_rates_from_samples(rec, where, rate_key, work_key):
    """Every figure of a timed record follows from its raw samples, as the probe wrote it
    (stats.sample_figures): a best or median time or rate that does not was edited or damaged after the
    run, and every reader would draw it."""
    samples = rec["samples_s"]
    if not all(s > 0 for s in samples):
        raise FieldError(f"{where}.samples_s must be seconds above 0, got {min(samples)!r}")
    work = rec[work_key]  # a number, 0 or more: check_mapping and require have seen to it
    figures = stats.sample_figures(samples, work, rate_key[:-len("_per_s")])
    for key, value in figures.items():
        if rec.get(key) is not None and not math.isclose(rec[key], value, rel_tol=1e-9):
            raise FieldError(f"{where}.{key} is {rec[key]:.10g}, but its raw samples give {value:.10g} "
                             f"({work_key} {work!r} over samples_s): a figure must follow from the samples it was "
                             f"measured from (edited after the run?)")


def check_decode_record(rec, where):
    """A decode-attention point: a timed record with its shape and the model's prediction."""
    check_timing_record(rec, where, "bytes_per_s", "bytes_per_call")
    require(rec, where, ("impl", "dtype", "seq_len", "heads", "kv_heads", "head_dim", "batch", "time_s", "model",
                         "achieved"))
    require(rec["model"], f"{where}.model", ("bytes", "cache_bytes", "flops", "intensity"))
    require(rec["model"], f"{where}.model", ("predicted_time_s",), filled=False)  # null: the profile has no roofs
    for key in ("bytes", "flops"):  # what every rate and prediction of the point divides or is divided by
        if not rec["model"][key] > 0:
            raise FieldError(f"{where}.model.{key} is {rec['model'][key]!r}: a decode step's modelled {key} must be "
                             "more than 0")
    require(rec["achieved"], f"{where}.achieved",
            ("bytes_per_s", "flops_per_s", "fraction_of_bandwidth", "fraction_of_peak_flops"), filled=False)
    if not math.isclose(rec["time_s"], median := stats.sample_times(rec["samples_s"])[1],
                                             rel_tol=1e-9):
        raise FieldError(f"{where}.time_s is {rec['time_s']:.10g}, but the median of its samples is {median:.10g}: the "
                         f"measured time the model is checked against must be it (edited after the run?)")
    if rec.get("validated"):
        require(rec, where, ("rel_error", "tolerance"))
    config = rec.get("kernel_config") or {}
    if "stage_rows_in_l1" in config:  # the fused kernel's tuned setting: the report states it in words
        require(config, f"{where}.kernel_config", ("prefetch_rows_ahead",), filled=False)
    if (rec.get("in_core") or {}).get("samples_s") is not None:  # else {reason}: the CPU reports no L2
        check_timing_record(rec["in_core"], f"{where}.in_core", "bytes_per_s", "bytes_per_call")
    if rec.get("registers") is not None:  # a GPU kernel as the driver loaded it
        require(rec, where, ("local_bytes_per_thread",))
    if rec.get("blocks_per_sm"):
        require(rec, where, ("blocks_per_sm_limit",))


def check_model_validation(mv, where):
    """model_validation: the verdict, per-dtype findings and the ratio checks (each a mapping, whose
    `batch` is a batch size, though `model_validation.batch` itself is the batch finding)."""
    entries = {"per_dtype", "dtype_ratios", "batch", "gqa", "gqa_widened"}
    check_mapping({k: v for k, v in mv.items() if k not in entries}, where)
    ratios = [(key, mv[key]) for key in ("batch", "gqa", "gqa_widened") if key in mv]
    for key in ("per_dtype", "dtype_ratios"):
        check_value(mv.get(key, {}), f"{where}.{key}", "mapping")
        for name, entry in (mv.get(key) or {}).items():
            check_mapping(entry, f"{where}.{key}.{name}")
        if key == "dtype_ratios":
            ratios += [(f"{key}.{name}", entry) for name, entry in (mv.get(key) or {}).items()]
    for key, entry in ratios:  # a ratio check that ran, or the reason it could not
        check_mapping(entry, f"{where}.{key}")
        if entry.get("available", True):
            require(entry, f"{where}.{key}", ("measured_time_ratio", "model_bytes_ratio", "measured_over_model"))
    for dtype, entry in (mv.get("per_dtype") or {}).items():
        require(entry, f"{where}.per_dtype.{dtype}", ("impl", "seq_len", "model_error", "regime"))
        require(entry, f"{where}.per_dtype.{dtype}", ("fraction_of_bandwidth",), filled=False)
    require(mv, where, ("finding",))
    if mv.get("per_dtype"):
        require(mv, where, ("holds_within", "model_holds"))
    for i, point in enumerate(mv.get("short_of_roofs") or []):
        require(point, f"{where}.short_of_roofs[{i}]", ("point", "roof", "fraction_of_roof", "fraction_of_peak_flops"))


def check_theoretical(theory, where):
    """theoretical: the peaks read from the hardware and their sources; matmul.source is a mapping
    of dtype to source, where the other `source` fields are text."""
    tables = {"flops_per_s": "table", "flops_per_cycle_per_core": "table", "ops_per_cycle_per_core": "table"}
    check_mapping({k: v for k, v in theory.items() if k != "matmul"}, where, tables)
    require(theory, where, ("flops_per_s",))
    require(theory, where, ("bytes_per_s",), filled=False)
    matmul = theory.get("matmul")
    if matmul is not None:
        check_value(matmul, f"{where}.matmul", "mapping")
        check_mapping({k: v for k, v in matmul.items() if k != "source"}, f"{where}.matmul", tables)
        check_value(matmul.get("source", {}), f"{where}.matmul.source", "mapping")
        for dtype, text in (matmul.get("source") or {}).items():
            check_value(text, f"{where}.matmul.source.{dtype}", "text")


def check_telemetry(telemetry, where):
    """telemetry.<probe>: a summary (min, median, max) per sensor, its sample count and throttle reasons."""
    for probe, entry in telemetry.items():
        check_value(entry, f"{where}.{probe}", "mapping")
        for key, value in entry.items():
            kind = kind_of(key)
            if kind:  # a sensor's name carries its unit (sm_clock_hz, power_w): its summary is a table
                check_value(value, f"{where}.{probe}.{key}", "table" if kind in ("number", "amount") and key != "samples" else kind)


TIMED = (("bandwidth", "bytes_per_s", "bytes_per_call"), ("bandwidth_fp32", "bytes_per_s", "bytes_per_call"),
         ("peak_flops", "flops_per_s", "flops_per_call"), ("tensor_flops", "flops_per_s", "flops_per_call"),
         ("dot_flops", "flops_per_s", "flops_per_call"))
RECORDS = {"bandwidth", "bandwidth_fp32", "peak_flops", "tensor_flops", "dot_flops", "thread_sweep", "hierarchy",
           "decode_attention"}
CHECKED_APART = RECORDS | {"theoretical", "telemetry", "model_validation", "balance", "probe_errors"}


def check_section(sec, where):
    """One devices.<name> section (cpu, gpu0, ...): its records, findings and peaks."""
    check_value(sec, where, "mapping")
    for key in ("bandwidth", "bandwidth_fp32", "peak_flops", "tensor_flops", "dot_flops", "hierarchy_levels", "thread_sweep",
                "theoretical", "balance", "model_validation", "telemetry", "probe_errors"):
        check_value(sec.get(key, {}), f"{where}.{key}", "mapping")
    for key in ("hierarchy", "decode_attention"):
        check_value(sec.get(key, []), f"{where}.{key}", "records")
    for key, rate, work in TIMED:
        for name, rec in (sec.get(key) or {}).items():
            if key == "tensor_flops" and name == "reason":  # no torch: {reason: ...}
                check_value(rec, f"{where}.{key}.{name}", "text")
            else:
                check_timing_record(rec, f"{where}.{key}.{name}", rate, work)
    for kernel, recs in (sec.get("thread_sweep") or {}).items():
        check_value(recs, f"{where}.thread_sweep.{kernel}", "records")
        for i, rec in enumerate(recs):
            rate, work = ("bytes_per_s", "bytes_per_call") if "bytes_per_call" in rec else ("flops_per_s", "flops_per_call")
            check_timing_record(rec, f"{where}.thread_sweep.{kernel}[{i}]", rate, work)
    for level, entry in (sec.get("hierarchy_levels") or {}).items():
        check_value(entry, f"{where}.hierarchy_levels.{level}", "mapping")
    for i, point in enumerate(sec.get("hierarchy") or []):
        check_timing_record(point, f"{where}.hierarchy[{i}]", "bytes_per_s", "bytes_per_call")
        require(point, f"{where}.hierarchy[{i}]", ("level", "working_set_bytes"))
    for i, rec in enumerate(sec.get("decode_attention") or []):
        check_decode_record(rec, f"{where}.decode_attention[{i}]")
    for key, fields in (("decode_unsupported", ("impl", "dtype", "reason")), ("peak_flops_unsupported", ("dtype", "reason")),
                        ("tensor_flops_unsupported", ("dtype", "reason")), ("dot_flops_unsupported", ("dtype", "reason"))):
        check_value(sec.get(key, []), f"{where}.{key}", "records")
        for i, point in enumerate(sec.get(key) or []):
            require(point, f"{where}.{key}[{i}]", fields)
    check_mapping({k: v for k, v in sec.items() if k not in CHECKED_APART}, where)
    for key, value in (sec.get("balance") or {}).items():
        check_value(value, f"{where}.balance.{key}", "number")
    for name, message in (sec.get("probe_errors") or {}).items():
        check_value(message, f"{where}.probe_errors.{name}", "text")
    if "theoretical" in sec:
        check_theoretical(sec["theoretical"], f"{where}.theoretical")
    check_telemetry(sec.get("telemetry") or {}, f"{where}.telemetry")
    if "model_validation" in sec:
        check_model_validation(sec["model_validation"], f"{where}.model_validation")


def check_software(software, where="software"):
    """software: versions as text (null: not installed), `packages` a mapping of them."""
    check_value(software.get("packages", {}), f"{where}.packages", "mapping")
    for name, version in (software.get("packages") or {}).items():
        if version is not None:
            check_value(version, f"{where}.packages.{name}", "text")


def check_machine(machine, where="machine"):
    """machine: its id and notes, machine.cpu (where `model` is the CPU's name) and machine.gpus."""
    check_mapping({k: v for k, v in machine.items() if k not in ("cpu", "gpus")}, where)
    if "cpu" in machine:
        check_mapping(machine["cpu"], f"{where}.cpu", {"model": "text", "cores": "count", "sockets": "count", "level": "count",
                                                        "instances": "count", "shared_by_cpus": "count",
                                                        "cpu_quota": "number", "numa_balancing": "number",
                                                        "numa_nodes": "number"})
        for i, cache in enumerate(machine["cpu"].get("caches") or []):
            require(cache, f"{where}.cpu.caches[{i}]", ("level", "size_bytes", "instances"))
    check_value(machine.get("gpus", []), f"{where}.gpus", "records")
    for i, gpu in enumerate(machine.get("gpus") or []):
        check_mapping(gpu, f"{where}.gpus[{i}]")
