"""Thread sweep on the CPU: triad bandwidth and fp32 peak at 1..N threads."""

from probes.cpu_peak import iterations, peak_workload
from probes.cpu_stream import stream_elements, stream_workloads

SWEEP_REPEATS = 5  # samples per point: the sweep shows how rates scale with threads, not a headline figure


def thread_counts(max_threads):
    """1, 2, 4, ... up to max_threads, always including max_threads."""
    counts, t = [], 1
    while t < max_threads:
        counts.append(t)
        t *= 2
    return counts + [max_threads]


def run_thread_sweep(ctx):
    """devices.cpu.thread_sweep: {triad: [...], peak_fp32: [...]} one record per thread count."""
    n, _ = stream_elements(ctx, "fp64")
    sweep = {"triad": [], "peak_fp32": []}
    for threads in thread_counts(ctx.threads):
        ctx.progress(f"thread sweep: triad and fp32 peak at {threads} of {ctx.threads} threads")
        triad = next(w for w in stream_workloads(ctx, "fp64", n, threads) if w.name == "triad")
        sweep["triad"].append(ctx.measure(triad, repeats=SWEEP_REPEATS))
        peak = peak_workload(ctx.cpu, "fp32", threads, iterations(ctx))
        sweep["peak_fp32"].append(ctx.measure(peak, repeats=SWEEP_REPEATS))
    return {"thread_sweep": sweep}
