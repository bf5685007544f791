"""Regression verdicts between two profiles (never runs a probe).

Each comparable metric is a set of raw samples in each profile, turned into rates (bytes/s,
FLOP/s) or kept as times. The statistical test is a bootstrap 95% confidence interval of the
ratio of medians (new / base; for a model error, whose ratio near zero means little, their
difference in percentage points): it needs no distributional assumption, works on the same median
the profile reports, and yields an effect size that sits directly beside the practical threshold (a
Mann-Whitney p-value says whether the samples differ, not by how much). A verdict needs both:
  regressed / improved: the interval excludes no change and the change is at least the threshold
  unchanged:            the change is under the threshold
  noisy:                the change is at least the threshold but the interval includes no change
  wrong output:         the new run's output check failed (a regression: compare exits 1)
  not comparable:       missing on one side, the base run's output check failed, or the probe's
                        source or parameters changed
"""

import fnmatch

import numpy as np

from harness.errors import HarnessError, read_yaml, refuse_unknown_keys
from harness.profile import CPU_CLOCK, GPU_CLOCK, by_device, run_conditions
from harness.profile_fields import is_finite_number
from harness.summary import CLOCK_SETTINGS, ghz, natural_key, rate_unit, si, switch_text

DEFAULT_THRESHOLD = 0.05
CONFIG_KEYS = {"threshold_pct", "metrics"}
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
MEMORY_TOLERANCE = 0.01  # of the memory size: less is the same memory
IDENTITY_FIELDS = [  # (label, path into the profile); compared and listed when they differ
    ("machine id", ("machine", "id")), ("hostname", ("machine", "hostname")),
    ("CPU model", ("machine", "cpu", "model")), ("CPU family", ("machine", "cpu", "family")),
    ("CPU model number", ("machine", "cpu", "model_number")), ("SIMD", ("machine", "cpu", "simd")),
    ("cores", ("machine", "cpu", "cores")),
    ("hypervisor", ("machine", "cpu", "hypervisor")), ("memory bytes", ("machine", "cpu", "memory_bytes")),
    ("cgroup CPU quota", ("machine", "cpu", "cgroup", "cpu_quota")),
    ("cgroup memory limit", ("machine", "cpu", "cgroup", "memory_limit_bytes")),
    ("transparent huge pages", ("machine", "cpu", "memory_settings", "transparent_hugepages")),
    ("NUMA nodes", ("machine", "cpu", "memory_settings", "numa_nodes")),
    ("NUMA balancing", ("machine", "cpu", "memory_settings", "numa_balancing")),
    *((f"cpufreq {label}", ("machine", "cpu", "clock_settings", key)) for key, label, _ in CLOCK_SETTINGS),
    ("kernel", ("software", "kernel")), ("python", ("software", "python")),
    ("numba threading layer", ("software", "numba", "layer")),
    ("OpenMP affinity", ("software", "numba", "openmp_affinity")), ("threads used", ("devices", "cpu", "threads")),
    ("quick run", ("devices", "cpu", "quick")),  # --quick sweeps fewer points: the others are in one profile only
    ("GPU driver", ("devices", "gpu0", "gpu", "driver_version")),
]
# each GPU's own (label after the device's name, key of its devices.gpuN.gpu): what it is and the
# settings that cap what it can measure (a lower power limit or max clock, ECC on or off, MIG)
GPU_IDENTITY_FIELDS = [("", "name"), ("UUID", "uuid"), ("power limit W", "power_limit_w"),
                       ("max SM clock Hz", "max_sm_clock_hz"), ("max memory clock Hz", "max_memory_clock_hz"),
                       ("ECC mode", "ecc_mode"), ("MIG mode", "mig_mode")]


CLOCK_SETTING_TEXT = {f"cpufreq {label}": text for _, label, text in CLOCK_SETTINGS}
PROBE_CHANGED = "the probe's source or parameters changed (probe hash)"  # a not-comparable row's reason


def _get(doc, path):
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def metric_failures(doc):
    """{metric name: error} of every record in a profile whose output check failed, named as
    metric_samples names them."""
    out = {}
    for device, sec in by_device(doc):
        prefix = "" if device == "cpu" else f"{device}."
        out.update({prefix + name: error for name, error in section_failures(sec).items()})
    return out


def metric_samples(doc):
    """{metric name: (samples, higher_is_better, unit, probe_hash)} from every device section of a
    profile: the CPU's under their own names, a GPU's prefixed with its device ("gpu0.")."""
    out = {}
    for device, sec in by_device(doc):
        prefix = "" if device == "cpu" else f"{device}."
        out.update({prefix + name: value for name, value in section_metrics(sec).items()})
    return out


def metric_label(name):
    """A metric's name as the report shows it: a hierarchy point's working set also in bytes' units
    ('hierarchy.16384 (16.4 kB)'); the name itself is what config patterns match."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] == "hierarchy" and parts[-1].isdigit():
        return f"{name} ({si(int(parts[-1]), 'B')})"
    return name


def metric_device(name):
    """The device a metric name of metric_samples belongs to ("gpu0.bandwidth.read": gpu0; unprefixed: cpu)."""
    head = name.split(".", 1)[0]
    return head if head.startswith("gpu") and head[3:].isdigit() else "cpu"


# a device section's peak rates, each group with the prefix of its keys in the section's `balance`
# (validation.balance): an FMA peak by its dtype, a dot product as dot_<dtype>, a matmul as matmul_<dtype>
FLOP_GROUPS = {"peak_flops": "", "dot_flops": "dot_", "tensor_flops": "matmul_"}


def named_records(sec):
    """(metric name, record, work key, unit) for every measurement record of a device section,
    validated or not; a decode record's name is its shape's ('decode.numba-fused.fp32.B1...S16384'), and
    its in-core task's that name's with '.in_core' (its loops' rate with the rows in L2: a change to the
    kernel shows there without the memory's drift)."""
    for group in ("bandwidth", "bandwidth_fp32"):
        for kernel, rec in (sec.get(group) or {}).items():
            yield f"{group}.{kernel}", rec, "bytes_per_call", "B/s"
    for group in FLOP_GROUPS:
        for dtype, rec in (sec.get(group) or {}).items():
            if isinstance(rec, dict):  # tensor_flops is {reason} where torch is missing
                yield f"{group}.{dtype}", rec, "flops_per_call", rate_unit(dtype)
    for rec in sec.get("hierarchy") or []:
        yield f"hierarchy.{rec['working_set_bytes']}", rec, "bytes_per_call", "B/s"
    for kernel, recs in (sec.get("thread_sweep") or {}).items():
        for rec in recs:
            work = "bytes_per_call" if "bytes_per_call" in rec else "flops_per_call"
            yield f"thread_sweep.{kernel}.{rec['threads']}", rec, work, "B/s" if work == "bytes_per_call" else "FLOP/s"
    for rec in sec.get("decode_attention") or []:
        name = (f"decode.{rec['impl']}.{rec['dtype']}.B{rec['batch']}.H{rec['heads']}.KV{rec['kv_heads']}"
                f".D{rec['head_dim']}.S{rec['seq_len']}")
        yield name, rec, None, "s"
        if (rec.get("in_core") or {}).get("samples_s") is not None:  # else {reason}
            yield f"{name}.in_core", rec["in_core"], "bytes_per_call", "B/s"


def section_failures(sec):
    """{metric name: error} of a device section's records whose output check failed (a decode
    record under its .time metric): a run that computes a wrong answer has no rate to compare."""
    return {name + (".time" if work is None else ""): rec.get("error") or "output check failed"
            for name, rec, work, _ in named_records(sec) if rec.get("validated") is False}


def section_metrics(sec):
    """The metrics of one device section (see metric_samples)."""
    out = {}

    def rates(rec, work_key):
        work = rec.get(work_key)
        return [work / s for s in rec.get("samples_s") or [] if s > 0] if work else []

    # the model predicts a DRAM (HBM) time only where no cache can hold the KV cache: elsewhere its error
    # says how much a cache served, and a point that got faster would read as a regression
    large_cache_bytes = (sec.get("model_validation") or {}).get("large_cache_bytes")
    for name, rec, work, unit in named_records(sec):
        if not rec.get("validated"):
            continue
        if work is not None:
            out[name] = (rates(rec, work), True, unit, rec.get("probe_hash"))
            continue
        samples = list(rec.get("samples_s") or [])
        out[f"{name}.time"] = (samples, False, "s", rec.get("probe_hash"))
        pred = (rec.get("model") or {}).get("predicted_time_s")
        if pred and large_cache_bytes and rec["model"].get("cache_bytes", 0) >= large_cache_bytes:
            out[f"{name}.abs_model_error"] = ([abs(s / pred - 1) for s in samples], False, "", rec.get("probe_hash"))
        reads = rec.get("reads_before_samples_bytes_per_s")
        if reads and len(reads) == len(samples) and all(reads):
            # each sample's bytes/s over the read measured right before it: the host's memory
            # drifting between runs moves both, so this moves only with the kernel's efficiency
            out[f"{name}.fraction_of_adjacent_read"] = (
                [rec["model"]["bytes"] / t / r for t, r in zip(samples, reads)], True, "", rec.get("probe_hash"))
    read = out.get("bandwidth.read")
    peaks = {FLOP_GROUPS[k.split(".")[0]] + k.split(".")[1]: v for k, v in out.items() if k.split(".")[0] in FLOP_GROUPS}
    if read and read[0]:
        for key, (samples, _, unit, digest) in peaks.items():
            # each peak sample over the median read: the read's own spread shows in bandwidth.read
            out[f"balance.{key}"] = ([s / float(np.median(read[0])) for s in samples], None,
                                     unit.replace("/s", "/B"), f"{digest}+{read[3]}")
    return out


def by_difference(name):
    """Whether a metric's change is the difference of medians, not their ratio: a model error near
    zero has no useful ratio (0.02 to 0.04 is +100%), so it moves in percentage points."""
    return name.endswith(".abs_model_error")


def bootstrap_change(base, new, rng, difference=False, resamples=BOOTSTRAP_RESAMPLES):
    """(change, low, high): the medians' ratio new/base - 1 (or, with `difference`, new - base) and
    its percentile bootstrap interval."""
    b, n = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    bi = rng.integers(0, len(b), size=(resamples, len(b)))
    ni = rng.integers(0, len(n), size=(resamples, len(n)))
    nm, bm = np.median(n[ni], axis=1), np.median(b[bi], axis=1)
    if difference:
        point, changes = float(np.median(n) - np.median(b)), nm - bm
    else:
        point, changes = float(np.median(n) / np.median(b)) - 1, nm / bm - 1
    alpha = (1 - CONFIDENCE) / 2
    return point, float(np.quantile(changes, alpha)), float(np.quantile(changes, 1 - alpha))


def verdict(change, low, high, higher_is_better, threshold):
    """regressed / improved / unchanged / noisy for one metric's change and its interval, 0 being
    no change (see the module docstring)."""
    if abs(change) < threshold:
        return "unchanged"
    if low <= 0 <= high:
        return "noisy"
    if higher_is_better is None:  # a ratio with no better direction (balance): a change, not a regression
        return "changed"
    better = change > 0 if higher_is_better else change < 0
    return "improved" if better else "regressed"


def change_text(row, key="change"):
    """A row's change (key 'change') or one end of its interval ('ci', index): '+4.2%' as a ratio,
    '+2.7 pts' as a difference of model errors."""
    value = row[key] if isinstance(key, str) else row["ci"][key]
    return f"{value * 100:+.1f} pts" if row.get("change_kind") == "difference" else f"{value:+.1%}"


def load_config(path):
    """{'threshold_pct': 5, 'metrics': {glob: pct}} from YAML; clear error if malformed."""
    cfg = read_yaml(path, "compare config") or {}
    if not isinstance(cfg, dict) or not isinstance(cfg.get("metrics", {}), dict):
        raise HarnessError(f"compare config {path} is malformed: expected threshold_pct and a metrics mapping "
                           "of glob pattern to percent")
    refuse_unknown_keys(cfg, CONFIG_KEYS, f"compare config {path}")
    for pattern in cfg.get("metrics", {}):
        if not isinstance(pattern, str):
            raise HarnessError(f"compare config {path}: metrics pattern {pattern!r} must be a string, a glob pattern of "
                               "metric names (quote a name YAML reads as a number or null)")
    for key, value in [("threshold_pct", cfg.get("threshold_pct", 5))] + list(cfg.get("metrics", {}).items()):
        if not is_finite_number(value) or value < 0:
            raise HarnessError(f"compare config {path}: {key} must be a non-negative percentage, got {value!r}")
    return cfg


def threshold_for(name, default, overrides):
    """The first override pattern (in the config's order) that matches `name`, else the default."""
    for pattern, pct in overrides.items():
        if fnmatch.fnmatch(name, pattern):
            return pct / 100
    return default


def _differ(label, a, b):
    """Whether two values of an identity field differ: the memory size only beyond
    MEMORY_TOLERANCE (MemTotal moves by a few hundred KiB between boots of the same VM)."""
    if label == "memory bytes" and isinstance(a, int) and isinstance(b, int) and max(a, b) > 0:
        return abs(a - b) > MEMORY_TOLERANCE * max(a, b)
    return a != b


def identity_differences(base, new):
    """[(label, base value, new value)] for identity fields and package versions that differ."""
    gpus = sorted({d for doc in (base, new) for d, _ in by_device(doc) if d != "cpu"}, key=natural_key)
    fields = IDENTITY_FIELDS + [(f"{d} {label}".strip(), ("devices", d, "gpu", key))
                                for d in gpus for label, key in GPU_IDENTITY_FIELDS]
    diffs = [(label, _get(base, path), _get(new, path)) for label, path in fields
             if _differ(label, _get(base, path), _get(new, path))]
    bp, np_ = _get(base, ("software", "packages")) or {}, _get(new, ("software", "packages")) or {}
    diffs += [(f"package {k}", bp.get(k), np_.get(k)) for k in sorted(set(bp) | set(np_)) if bp.get(k) != np_.get(k)]
    return diffs


def condition_rows(base, new, threshold):
    """[(device, condition, base value, new value)] of the conditions either run recorded, and the
    devices whose clock moved by at least the threshold between the runs."""
    cb, cn = run_conditions(base), run_conditions(new)
    rows = [(d, k, (cb.get(d) or {}).get(k), (cn.get(d) or {}).get(k))
            for d in sorted(set(cb) | set(cn), key=natural_key)
            for k in {**(cb.get(d) or {}), **(cn.get(d) or {})}]
    moved = [(d, n / b - 1) for d, k, b, n in rows if k in (CPU_CLOCK, GPU_CLOCK) and b and n
             and abs(n / b - 1) >= threshold]
    return rows, moved


def compare(base, new, threshold=DEFAULT_THRESHOLD, overrides=None, seed=0):
    """Every metric's baseline, new value, change, spread and verdict, plus identity differences,
    run conditions and each run's own warnings."""
    overrides = overrides or {}
    rng = np.random.default_rng(seed)
    mb, mn = metric_samples(base), metric_samples(new)
    fb, fn = metric_failures(base), metric_failures(new)
    rows = []
    for name in sorted(set(mb) | set(mn) | set(fn), key=natural_key):
        row = {"metric": name}
        if name in fn:  # the new run computed a wrong answer: worse than any slowdown
            row.update(verdict="wrong output", reason=f"the new run's output check failed: {fn[name]}")
            if name in mb:
                row.update(unit=mb[name][2], base=float(np.median(mb[name][0])) if mb[name][0] else None)
            rows.append(row)
            continue
        if name in fb and name in mn:
            row.update(verdict="not comparable", reason=f"the base run's output check failed: {fb[name]}")
            rows.append(row)
            continue
        if name in mb and name not in mn and name.rsplit(".", 1)[0] + ".time" in fn:
            continue  # a wrong decode point's other figures: its .time row says why they are missing
        if name not in mb or name not in mn:
            row.update(verdict="not comparable", reason="only in the " + ("new" if name in mn else "base") + " profile")
            rows.append(row)
            continue
        (bs, better, unit, bh), (ns, _, _, nh) = mb[name], mn[name]
        row.update(unit=unit, base=float(np.median(bs)) if bs else None, new=float(np.median(ns)) if ns else None,
                   base_iqr=_iqr(bs), new_iqr=_iqr(ns), higher_is_better=better)
        if bh != nh:
            row.update(verdict="not comparable", reason=PROBE_CHANGED)
        elif len(bs) < 2 or len(ns) < 2 or not row["base"]:
            row.update(verdict="not comparable", reason="fewer than two samples")
        else:
            t = threshold_for(name, threshold, overrides)
            kind = "difference" if by_difference(name) else "ratio"
            change, low, high = bootstrap_change(bs, ns, rng, difference=kind == "difference")
            row.update(change=change, ci=[low, high], change_kind=kind, threshold=t,
                       verdict=verdict(change, low, high, better, t))
        rows.append(row)
    names = [r["metric"] for r in rows]
    conditions, clock_moved = condition_rows(base, new, threshold)
    devices = {side: [name for name, _ in by_device(doc)] for side, doc in (("base", base), ("new", new))}
    return {"same_machine": _get(base, ("machine", "id")) == _get(new, ("machine", "id")),
            # a device profiled in one run only (`--device cpu` beside `--device all`)
            "devices_only_in": {"base": [d for d in devices["base"] if d not in devices["new"]],
                                "new": [d for d in devices["new"] if d not in devices["base"]]},
            "differences": identity_differences(base, new), "rows": rows,
            # a misspelt glob sets no threshold: said, not ignored
            "unmatched_patterns": [p for p in overrides if not any(fnmatch.fnmatch(n, p) for n in names)],
            "run_warnings": {"base": run_warnings(base), "new": run_warnings(new)},
            "conditions": conditions, "clock_moved": clock_moved,
            "base_created": base.get("created_utc"), "new_created": new.get("created_utc")}


def run_warnings(doc):
    """[(device, warning)]: each device section's warnings about its run as a whole (the machine's
    throughput or memory speed changed between records, threads shared cores), which make the
    verdicts on the figures they name suspect."""
    return [(device, w) for device, sec in by_device(doc)
            for w in (sec.get("warnings") or [])]


def _iqr(samples):
    if len(samples) < 2:
        return None
    q1, q3 = np.quantile(samples, [0.25, 0.75])
    return float(q3 - q1)


def value_text(value, unit):
    """A metric's value in its unit: '24.2 GB/s', '6.224 ms', '12.3 FLOP/B' (a balance), '0.812' (a
    ratio); None: 'n/a'."""
    if value is None:
        return "n/a"
    if unit in ("B/s", "FLOP/s", "OP/s"):
        return si(value, unit)
    if unit == "s":
        return f"{value * 1e3:.3f} ms"
    return f"{value:.3g}" + (f" {unit}" if unit else "")


def identity_text(label, value):
    """An identity field's value for the report: clocks in GHz, memory in GB (labels ending 'Hz',
    'bytes'), NVML modes (ECC, MIG) as on/off, switches as yes/no, settings as NAME=value, lists
    joined, nothing recorded as 'n/a'."""
    if label.endswith(" mode"):
        return switch_text(value)
    if value is None:
        return "n/a"
    if label in CLOCK_SETTING_TEXT:
        return CLOCK_SETTING_TEXT[label](value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if is_finite_number(value) and label.endswith(" Hz"):
        return ghz(value)
    if is_finite_number(value) and label.endswith(" bytes"):
        return si(value, "B")
    return value


def difference_cells(result):
    """(label, base text, new text) of each identity difference; a field of a GPU that one run did not
    profile is 'n/a' on that side (not 'not supported', an NVML mode's None)."""
    only = result.get("devices_only_in") or {}
    missing = {"base": set(only.get("new", [])), "new": set(only.get("base", []))}

    def text(label, value, side):
        return "n/a" if label.split(" ", 1)[0] in missing[side] else identity_text(label, value)
    return [(label, text(label, b, "base"), text(label, n, "new")) for label, b, n in result["differences"]]


def condition_text(condition, value):
    """A run condition's value for the report: a clock in GHz, a share of CPU time in percent."""
    if value is None:
        return "n/a"
    return ghz(value) if condition in (CPU_CLOCK, GPU_CLOCK) else f"{value:.1%}"


def conditions_markdown(result):
    """The run-conditions table, and a sentence per device whose clock moved past the threshold."""
    rows = result.get("conditions") or []
    if not rows:
        return []
    out = ["## Run conditions", "", "| device | condition | base | new |", "|---|---|---|---|"]
    out += [f"| {d} | {k} | {condition_text(k, b)} | {condition_text(k, n)} |" for d, k, b, n in rows]
    out += ["", "CPU steal and other load are medians over each profile's measurements.", ""] if any(
        k not in (CPU_CLOCK, GPU_CLOCK) for _, k, _, _ in rows) else [""]
    for d, change in result.get("clock_moved") or []:
        out += [f"**The {d}'s clock differs by {change:+.0%} between the runs**: rates bound by its compute move with "
                "it, and on a VM a host busy enough to move the clock moves memory figures too; verdicts on them then "
                "say how the machine ran, not what the code does.", ""]
    return out


def markdown(result, base_path, new_path):
    """The regression report."""
    rows = result["rows"]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in
              ("wrong output", "regressed", "improved", "unchanged", "noisy", "changed", "not comparable")}
    out = ["# Regression report", "", f"- base: `{base_path}` ({result['base_created']})",
           f"- new: `{new_path}` ({result['new_created']})",
           "- verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n), ""]
    if not result["same_machine"]:
        out += ["**These are two different machines**: the comparison is across hardware, not across time.", ""]
    if result["differences"]:
        out += ["## What differs between the runs", "", "| field | base | new |", "|---|---|---|"]
        out += [f"| {label} | {b} | {n} |" for label, b, n in difference_cells(result)]
        out.append("")
    else:
        out += ["Machine identity, software versions and thread count are the same in both runs.", ""]
    out += conditions_markdown(result)
    warned = result.get("run_warnings") or {}
    if any(warned.values()):
        out += ["## Warnings about the runs", "",
                "Each profile's own warnings about its run as a whole: verdicts on the figures they name are suspect.", ""]
        out += [f"- {side} ({device}): {w}" for side in ("base", "new") for device, w in warned.get(side, [])]
        out.append("")
    order = {"wrong output": -1, "regressed": 0, "noisy": 1, "improved": 2, "changed": 3, "unchanged": 4, "not comparable": 5}
    out += ["## Metrics", "", "| verdict | metric | base (median) | new (median) | change | 95% CI of change | "
            "IQR base / new | threshold |", "|---|---|---|---|---|---|---|---|"]
    one_sided = {side: [r["metric"] for r in rows if r.get("reason") == f"only in the {side} profile"]
                 for side in ("base", "new")}
    for r in sorted(rows, key=lambda r: (order[r["verdict"]], natural_key(r["metric"]))):
        if r.get("reason", "").startswith("only in the"):
            continue  # listed below the table, one line per side
        if "change" in r:
            out.append(f"| {r['verdict']} | {metric_label(r['metric'])} | {value_text(r['base'], r['unit'])} | "
                       f"{value_text(r['new'], r['unit'])} | "
                       f"{change_text(r)} | [{change_text(r, 0)}, {change_text(r, 1)}] | "
                       f"{value_text(r['base_iqr'], r['unit'])} / {value_text(r['new_iqr'], r['unit'])} | "
                       f"{r['threshold'] * 100:.0f}{' pts' if r['change_kind'] == 'difference' else '%'} |")
        else:
            out.append(f"| {r['verdict']} | {metric_label(r['metric'])} | {value_text(r.get('base'), r.get('unit'))} | "
                       f"{value_text(r.get('new'), r.get('unit'))} | | | | {r.get('reason', '')} |")
    for side, names in one_sided.items():
        other = "new" if side == "base" else "base"
        whole = {d: sum(metric_device(n) == d for n in names) for d in result.get("devices_only_in", {}).get(side, [])}
        parts = [f"every metric of device `{d}` ({count}: the {other} profile has no {d})" for d, count in whole.items() if count]
        parts += [f"`{n}`" for n in names if metric_device(n) not in whole]
        if names:
            out += ["", f"Not comparable, only in the {side} profile ({len(names)}): " + ", ".join(parts)]
    if result.get("unmatched_patterns"):
        out += ["", "Threshold patterns of the config that match no metric (no threshold set by them): "
                + ", ".join(f"`{p}`" for p in result["unmatched_patterns"])]
    out += ["", "Verdicts need both a bootstrap 95% interval of the median ratio that excludes no change and a change "
            "at least the threshold; time metrics regress upward, rates downward.", ""]
    return "\n".join(out)


def as_json(result, base_path, new_path):
    """The comparison as plain JSON data for CI: the profiles' paths, whether it regressed (what
    the exit status says), and every row, with the identity differences and run warnings as
    named fields rather than tuples."""
    return {"base": base_path, "new": new_path, "regressed": has_regression(result),
            **{k: v for k, v in result.items() if k not in ("differences", "run_warnings", "conditions", "clock_moved")},
            "differences": [{"field": label, "base": b, "new": n} for label, b, n in result["differences"]],
            "conditions": [{"device": d, "condition": k, "base": b, "new": n} for d, k, b, n in result["conditions"]],
            "clock_moved": [{"device": d, "change": c} for d, c in result["clock_moved"]],
            "run_warnings": [{"side": side, "device": device, "warning": w}
                             for side, pairs in result["run_warnings"].items() for device, w in pairs]}


def has_regression(result):
    """A metric regressed, or a kernel's output turned wrong (compare then exits 1)."""
    return any(r["verdict"] in ("regressed", "wrong output") for r in result["rows"])
