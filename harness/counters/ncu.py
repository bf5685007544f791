"""GPU counters through Nsight Compute: re-run one probe under `ncu`, restricted by an NVTX range
to the timed kernels, and parse its raw CSV page (log lines mixed in, a units row under the header).

FLOPs = add + mul + 2 x fma instructions per thread, per precision (ncu's sass_thread_inst_executed
counts; a half2 instruction is two half operations, so half counts are doubled); DRAM bytes =
dram__bytes_read.sum + dram__bytes_write.sum. A metric ncu rejects on this GPU (the tensor-pipe
names differ between architectures) is dropped, named in `metrics_rejected`, and the rest counted.
"""

import csv
import io
import shutil
import subprocess
import sys
import time

from harness import machine
from harness.counters import block

SUMMED = (  # counts per kernel launch, summed into a call's bytes, FLOPs and time
    "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum", "gpu__time_duration.sum",
    "sm__sass_thread_inst_executed_op_dadd_pred_on.sum", "sm__sass_thread_inst_executed_op_dmul_pred_on.sum",
    "sm__sass_thread_inst_executed_op_dfma_pred_on.sum", "sm__sass_thread_inst_executed_op_fadd_pred_on.sum",
    "sm__sass_thread_inst_executed_op_fmul_pred_on.sum", "sm__sass_thread_inst_executed_op_ffma_pred_on.sum",
    "sm__sass_thread_inst_executed_op_hadd_pred_on.sum", "sm__sass_thread_inst_executed_op_hmul_pred_on.sum",
    "sm__sass_thread_inst_executed_op_hfma_pred_on.sum",
)
TENSOR_PIPE = "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"  # a share, not a count
METRICS = SUMMED + (TENSOR_PIPE,)
# every name above is one ncu lists for gh100 and ga100: tests/fixtures/ncu-metrics-gh100-ga100.txt
# ncu prints a metric's unit as an SI prefix on a base unit ("Mbyte", "usecond", "Kinst"): with
# --print-units base (our command) in the base unit, but a page captured without it is scaled
# (newer ncu versions abbreviate some: "ns", "us", "B")
BASE_UNITS = ("byte", "second", "inst", "cycle", "sector", "request", "warp", "thread", "block", "s", "B")
UNIT_PREFIXES = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "m": 1e-3, "u": 1e-6, "\u00b5": 1e-6, "n": 1e-9}
FLOP_WEIGHTS = {"dadd": 1, "dmul": 1, "dfma": 2, "fadd": 1, "fmul": 1, "ffma": 2, "hadd": 2, "hmul": 2, "hfma": 4}
FLOPS_SOURCE = ("executed FP add, mul and fma instructions per thread (sass_thread_inst_executed), FMA counting 2, "
                "half instructions as half2 (x2); tensor-core work not counted")
BYTES_SOURCE = "DRAM read + write (dram__bytes_read.sum + dram__bytes_write.sum)"
# the NVTX push/pop range around each timed GPU workload is NVTX_PREFIX + its name; no "/" in it:
# ncu's --nvtx-include reads "/" as the separator of nested push/pop ranges
NVTX_PREFIX = "harness-"
LAUNCH_COUNT = 24  # kernels profiled per range (each is replayed once per metric pass): a few calls' worth


def unavailable_reason():
    if not shutil.which("ncu"):
        return "Nsight Compute (ncu) is not on the PATH"
    return None


def command(probe, device, nvtx_range, extra_args=(), python=sys.executable, metrics=METRICS):
    """The ncu command line that re-runs `harness probe` and counts only `nvtx_range`'s kernels."""
    return ["ncu", "--csv", "--page", "raw", "--print-units", "base", "--clock-control", "none", "--target-processes", "all",
            "--nvtx", "--nvtx-include", f"{NVTX_PREFIX}{nvtx_range}/", "--launch-count", str(LAUNCH_COUNT),
            "--metrics", ",".join(metrics),
            python, "-m", "harness", "probe", probe, "--device", device, *extra_args]


def rejected_metrics(text, metrics):
    """Our metrics that ncu's ==ERROR== lines name (a metric this GPU or ncu version lacks)."""
    errors = [line for line in text.splitlines() if line.startswith("==ERROR==")]
    return [m for m in metrics if any(m.split(".")[0] in line for line in errors)]


def permission_error(text):
    return "ERR_NVGPUCTRPERM" in text


# ncu's failures that every later run on this machine meets too: no driver, counters refused to this
# user, and the profiler library not loading (seen under gVisor: «Failed to initialize the profiler:
# LibraryNotLoaded», the application run unprofiled)
RECURRING = ("ERR_NVGPUCTRPERM", "failed to connect to the CUDA driver", "Failed to initialize the profiler")


def recurs(reason):
    """True where a counters block's reason is a failure every ncu run here would meet (RECURRING)."""
    return any(r in (reason or "") for r in RECURRING)


def error_line(text):
    """The ==ERROR== line of ncu's output that says most: one of RECURRING's, else its last; None without one."""
    errors = [line.strip() for line in text.splitlines() if line.startswith("==ERROR==")]
    return next((e for e in errors if recurs(e)), errors[-1] if errors else None)


def unit_scale(unit):
    """The factor from `unit` to its base unit (1e6 for "Mbyte"; 1 for "%" and no unit), or None
    for a unit this parser does not know."""
    if unit in ("", "%"):
        return 1
    for base in BASE_UNITS:
        if unit.endswith(base) and unit[: -len(base)] in UNIT_PREFIXES:
            return UNIT_PREFIXES[unit[: -len(base)]]
    return None


def parse_ncu_csv(text):
    """[{column: value}] per profiled kernel from ncu's CSV; values converted to SI base units.

    The raw page (`--page raw`, our command) has a row per kernel, a column per metric and a units
    row under the header; the details page (ncu's default) has a row per metric ("Metric Name",
    "Metric Unit", "Metric Value"), a kernel's rows sharing its ID: both are read. Lines before the
    header (==PROF== logs, the program's own output) are skipped and numbers with thousands
    separators are accepted. A value that is no number in a unit this parser knows ("n/a", "1.5
    Xbyte") stays text, so it is never taken at the wrong scale (derive names it)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(l for l in lines[start:] if l.startswith('"')))))
    header = rows[0]
    if "Metric Name" in header and "Metric Value" in header:
        return _details_page(header, rows[1:])
    if len(rows) < 2:  # cut off after its header: no units row, no kernel
        return []
    units, kernels = rows[1], []
    for row in rows[2:]:
        if len(row) == len(header):
            kernels.append({name: _value(raw, unit) for name, unit, raw in zip(header, units, row)})
    return kernels


def _details_page(header, rows):
    """Kernels of the details page: its identity columns (those before the section or metric
    name), then each of its metric rows as metric: value."""
    identity = header[:header.index("Section Name" if "Section Name" in header else "Metric Name")]
    kernels = {}
    for row in rows:
        r = dict(zip(header, row))
        if "Metric Value" not in r:
            continue  # a cut-off row
        rec = kernels.setdefault(r.get("ID"), {k: r.get(k) for k in identity})
        rec[r["Metric Name"]] = _value(r["Metric Value"], r.get("Metric Unit", ""))
    return list(kernels.values())


def _value(raw, unit):
    """One of ncu's values in its base unit, or the text where it is no number in a known unit."""
    try:
        value = float(raw.replace(",", ""))
    except ValueError:
        return raw
    scale = unit_scale(unit)
    return value * scale if scale is not None else f"{raw} {unit}"


def derive(kernels, model_bytes=None):
    """A counters block per call of the workload: one call may launch several kernels (decode: the
    split-K partials and the merge), so each kernel name's counts are averaged over
    its launches and the names are summed."""
    if not kernels:
        return block("ncu", "ncu profiled no kernel in the NVTX range (without NVTX in CuPy, "
                            "cupy.cuda.nvtx.available is False, the probe pushes no range)")
    unreadable = sorted({f"{m} = {k[m]!r}" for k in kernels for m in SUMMED if isinstance(k.get(m), str)})
    if unreadable:
        return block("ncu", f"ncu printed {unreadable[0]}, not a number in a unit this parser knows, so nothing "
                            "is derived from the page")
    by_name = {}
    for k in kernels:
        by_name.setdefault(k.get("Kernel Name", ""), []).append(k)
    missing = []

    def per_call(what, weights, partial=False):
        """Sum of weight x metric per call. A metric ncu rejected or left out is unknown, never 0:
        the figure is None, or with `partial` the sum of the metrics there are (None if none is),
        and either way the absent ones are named in `missing`."""
        absent = sorted({m for k in kernels for m in weights if m not in k})
        if absent:
            missing.append(f"{what} {'without' if partial and len(absent) < len(weights) else 'not counted:'} "
                           f"ncu gave no {', '.join(absent)}")
            if not partial or len(absent) == len(weights):
                return None
        present = {m: w for m, w in weights.items() if m not in absent}
        return sum(sum(sum(w * k[m] for m, w in present.items()) for k in ks) / len(ks) for ks in by_name.values())

    dram = per_call("dram_bytes", {"dram__bytes_read.sum": 1, "dram__bytes_write.sum": 1})
    flops = per_call("flops", {f"sm__sass_thread_inst_executed_op_{op}_pred_on.sum": w for op, w in FLOP_WEIGHTS.items()},
                     partial=True)  # a precision ncu cannot count here must not lose the others
    l2 = per_call("l2_bytes", {"lts__t_bytes.sum": 1})
    kernel_time = per_call("kernel_time_s", {"gpu__time_duration.sum": 1})
    timed = [k for k in kernels if isinstance(k.get(TENSOR_PIPE), float) and k.get("gpu__time_duration.sum")]
    tensor = ({"tensor_pipe_active_pct": sum(k[TENSOR_PIPE] * k["gpu__time_duration.sum"] for k in timed)
               / sum(k["gpu__time_duration.sum"] for k in timed)} if timed else {})  # over the kernels' time
    return block("ncu", "; ".join(missing) or None, dram_bytes=dram, flops=flops or None,
                 model_bytes=model_bytes, dram_bytes_source=BYTES_SOURCE, flops_source=FLOPS_SOURCE, l2_bytes=l2,
                 kernel_time_s=kernel_time, launches=len(kernels), kernels_per_call=len(by_name), **tensor)


def count(probe, device, nvtx_range, extra_args=(), model_bytes=None, timeout_s=600):
    """Run the probe under ncu and return the counters block (or the reason there is none), in
    `timeout_s` for every run together (a rejected metric costs a second run). ncu runs in the C
    locale: the parser reads "," as a thousands separator, never as a decimal mark."""
    reason = unavailable_reason()
    if reason:
        return block("unavailable", reason)
    metrics, dropped = list(METRICS), []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            proc = subprocess.run(command(probe, device, nvtx_range, extra_args, metrics=metrics), capture_output=True,
                                  text=True, timeout=max(0.0, deadline - time.monotonic()),
                                  env=machine.c_locale_env())
        except subprocess.TimeoutExpired:
            return block("unavailable", f"ncu ran past {timeout_s:.0f} s re-running {probe} {nvtx_range}: stopped")
        output = proc.stdout + proc.stderr
        if permission_error(output):
            return block("unavailable", "ERR_NVGPUCTRPERM: this user may not read GPU performance counters "
                                        "(NVreg_RestrictProfilingToAdminUsers=1); run as root or change the driver option")
        rejected = rejected_metrics(output, metrics) if proc.returncode != 0 else []
        if not rejected or len(rejected) == len(metrics):
            break
        dropped += rejected  # once more without them: one unknown metric must not lose the others
        metrics = [m for m in metrics if m not in rejected]
    error = error_line(output)
    if proc.returncode != 0:
        last = output.strip().splitlines()[-1] if output.strip() else ""
        return block("unavailable", f"ncu failed (exit {proc.returncode}): {error or last}")
    kernels = parse_ncu_csv(proc.stdout)
    if not kernels and error:  # the application ran, unprofiled
        return block("unavailable", f"ncu counted nothing: {error}")
    result = derive(kernels, model_bytes)
    if dropped:
        result["metrics_rejected"] = dropped
    return result
