"""Thread sweep on the CPU: triad bandwidth and fp32 peak at 1..N threads."""

from probes.cpu_peak import peak_workload, unsupported_reason
from probes.cpu_stream import stream_elements, stream_workloads
from probes.llvm_jit import chain_iterations

SWEEP_REPEATS = 5  # samples per point: the sweep shows how rates scale with threads, not a headline figure


def thread_counts(max_threads):
    """1, 2, 4, ... up to max_threads, always including max_threads."""
    counts, t = [], 1
    while t < max_threads:
        counts.append(t)
        t *= 2
    return counts + [max_threads]


def run_thread_sweep(ctx):
    """devices.cpu.thread_sweep: {triad: [...], peak_fp32: [...]} one record per thread count, every
    point timed in interleaved rounds (Context.measure_interleaved): a drift of the host's memory or
    of its scheduling then moves each thread count alike, not the speedup the sweep shows."""
    n, _ = stream_elements(ctx, "fp64")
    counts = thread_counts(ctx.threads)
    triads = [next(stream_workloads(ctx, "fp64", n, threads, kernels=("triad",))) for threads in counts]
    peaks = [] if unsupported_reason(ctx.cpu, "fp32") else [peak_workload(ctx.cpu, "fp32", threads, chain_iterations(ctx))
                                                            for threads in counts]  # x86 without FMA: the triad alone
    ctx.progress(f"thread sweep: triad{' and fp32 peak' * bool(peaks)} at {', '.join(map(str, counts))} of "
                 f"{ctx.threads} threads in interleaved rounds")
    recs = ctx.measure_interleaved(triads + peaks, repeats=SWEEP_REPEATS)
    return {"thread_sweep": {"triad": recs[:len(counts)], **({"peak_fp32": recs[len(counts):]} if peaks else {})}}
