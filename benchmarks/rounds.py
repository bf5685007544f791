"""Workloads timed one after another against timed in interleaved rounds (the probes' way:
Context.measure_interleaved), alternating in one process: how far each way's ratios wander between
runs on a host whose memory speed or scheduling drifts (a shared VM's).

--what stream: the five STREAM kernels (fp64); per run the read's median rate and the median-rate
  ratios triad/read, copy/scale, add/triad.
--what threads: the thread sweep's triad and fp32 FMA at 1 and all threads; per run their speedups.
--what peaks: the fp64 and fp32 FMA peaks; per run fp64's best and fp32/fp64 of best and median.
--what matmul: torch's fp32, bf16 and int8 products at the matmul probe's size; per run fp32's best
  and bf16/fp32, int8/fp32 of median rates.
--what hierarchy: the hierarchy sweep's reads (Numba's kernel at every working set); per run the
  DRAM rate and, at half of L1, of L2 and of the last-level cache, each cache level's over it.
--what dot: the fp32 FMA chains, the bf16 and int8 dot-product chains and torch's bf16 and int8
  products; per run each dot peak over the fp32 FMA peak, and each product over its dtype's dot peak
  (best samples, as the profile's peaks are).
Per way: each figure's median and max/min over the runs. Every run's outputs are checked.
Usage: python benchmarks/rounds.py [--what stream] [--runs 8] [--threads N] [--json PATH]
"""

import argparse
import json
import math
import os
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harness.machine import identify_cpu  # noqa: E402
from harness.workload import Context, time_interleaved, time_workload  # noqa: E402
from probes.cpu_peak import peak_workload  # noqa: E402
from probes.cpu_stream import (READ_OFFSET_ELEMS, cache_capacities, fill_random, hierarchy_sizes, read_workload,  # noqa: E402
                                stream_elements, stream_workloads)
from probes.llvm_jit import chain_iterations  # noqa: E402
from probes.torch_matmul import accepted  # noqa: E402

MIN_SAMPLE_S = 0.05  # the probes', outside --quick
REPEATS = {"stream": 10, "threads": 5, "peaks": 10, "matmul": 10, "dot": 10, "hierarchy": 5}  # samples per workload, as each probe takes them


def stream(ctx, n):
    """The stream probe's five kernels, and figures(median rates, best rates) of their medians."""
    workloads = list(stream_workloads(ctx, "fp64", n, ctx.threads))
    at = {w.name: i for i, w in enumerate(workloads)}

    def figures(rate, best):
        copy, scale, add, triad, read = (rate[at[k]] for k in ("copy", "scale", "add", "triad", "read"))
        return {"read_gb_per_s": read / 1e9, "triad_over_read": triad / read, "copy_over_scale": copy / scale,
                "add_over_triad": add / triad}
    return workloads, figures


def hierarchy(ctx, n):
    """The hierarchy sweep's reads (Numba's kernel at every working set, hierarchy_sizes: about a
    minute a run on the Zen 4 VM, long enough for a drift to strike mid-sweep), and the median rates of the points
    nearest half of L1, of L2 and of the last-level cache the threads reach, each over the last's
    (the DRAM working set)."""
    capacities = dict(cache_capacities(ctx.cpu, ctx.threads))
    sizes = hierarchy_sizes(ctx, 8, ctx.threads)
    a = np.empty(sizes[-1] // 8 + ctx.threads * READ_OFFSET_ELEMS)
    fill_random(a, 7)
    target = (1 << 20) if ctx.tiny else (256 << 20)
    workloads = [read_workload(a, "fp64", ws, ctx.threads, target, 2 if ws <= capacities["L1"] else 1) for ws in sizes]
    caches = {"l1": capacities["L1"], "l2": capacities["L2"], "llc": list(capacities.values())[-1]}
    at = {k: min(range(len(sizes)), key=lambda i: abs(math.log(sizes[i] / (cap / 2)))) for k, cap in caches.items()}

    def figures(rate, best):
        dram = rate[-1]
        return {"dram_gb_per_s": dram / 1e9, **{f"{k}_over_dram": rate[i] / dram for k, i in at.items()}}
    return workloads, figures


def threads(ctx, n):
    """The thread sweep's triad and fp32 FMA at one thread and at all, and their speedups."""
    counts = (1, ctx.threads)
    workloads = ([next(stream_workloads(ctx, "fp64", n, t, kernels=("triad",))) for t in counts]
                 + [peak_workload(ctx.cpu, "fp32", t, chain_iterations(ctx)) for t in counts])

    def figures(rate, best):
        return {"triad_speedup": rate[1] / rate[0], "fma_speedup": rate[3] / rate[2]}
    return workloads, figures


def peaks(ctx, n):
    """The peak probe's fp64 and fp32 FMA chains, and fp32/fp64 (best and median)."""
    def figures(rate, best):
        return {"fp64_best_gflop_per_s": best[0] / 1e9, "fp32_over_fp64_best": best[1] / best[0],
                "fp32_over_fp64_median": rate[1] / rate[0]}
    return [peak_workload(ctx.cpu, dtype, ctx.threads, chain_iterations(ctx)) for dtype in ("fp64", "fp32")], figures


def products(ctx, dtypes):
    """torch's products of `dtypes` at the matmul probe's size (tiny in tests), each run once; exits
    naming any torch refuses."""
    from probes import cpu_matmul

    size = cpu_matmul.TINY_SIZE if ctx.tiny else cpu_matmul.SIZE
    workloads, refused = accepted([cpu_matmul.matmul_workload(d, size, ctx.threads) for d in dtypes])
    if refused:
        sys.exit(f"torch refused: {refused}")
    return workloads


def matmul(ctx, n):
    """The matmul probe's fp32, bf16 and int8 products, and bf16's and int8's median rate over fp32's."""
    workloads = products(ctx, ("fp32", "bf16", "int8"))

    def figures(rate, best):
        return {"fp32_best_gflop_per_s": best[0] / 1e9, "bf16_over_fp32_median": rate[1] / rate[0],
                "int8_over_fp32_median": rate[2] / rate[0]}
    return workloads, figures


def dot(ctx, n):
    """The fp32 FMA peak, the dot probe's chains and torch's bf16 and int8 products, and the dot peaks'
    and the products' best-sample ratios."""
    from probes import cpu_dot

    missing = [d for d in cpu_dot.DTYPES if cpu_dot.unsupported_reason(ctx.cpu, d)]
    if missing:
        sys.exit(f"this CPU has no dot-product instruction for {', '.join(missing)}")
    workloads = ([peak_workload(ctx.cpu, "fp32", ctx.threads, chain_iterations(ctx))]
                 + [cpu_dot.dot_workload(ctx.cpu, d, ctx.threads, chain_iterations(ctx)) for d in cpu_dot.DTYPES]
                 + products(ctx, cpu_dot.DTYPES))

    def figures(rate, best):
        fma, bf16, int8, mm_bf16, mm_int8 = best
        return {"dot_bf16_over_fma": bf16 / fma, "dot_int8_over_fma": int8 / fma,
                "matmul_bf16_over_dot": mm_bf16 / bf16, "matmul_int8_over_dot": mm_int8 / int8}
    return workloads, figures


SUITES = {"stream": stream, "hierarchy": hierarchy, "threads": threads, "peaks": peaks, "matmul": matmul, "dot": dot}


def one_run(ctx, n, way, what="stream"):
    """{figure: value} of one timing of `what`'s workloads, `way` 'blocked' or 'interleaved'."""
    workloads, figures = SUITES[what](ctx, n)
    recs = ([time_workload(w, REPEATS[what], MIN_SAMPLE_S) for w in workloads] if way == "blocked"
            else time_interleaved(workloads, REPEATS[what], MIN_SAMPLE_S))
    bad = [f"{w.name}: {r['error']}" for w, r in zip(workloads, recs) if not r["validated"]]
    if bad:
        sys.exit(f"output check failed: {bad}")
    return figures([r.get("median_bytes_per_s") or r["median_flops_per_s"] for r in recs],
                   [r.get("bytes_per_s") or r["flops_per_s"] for r in recs])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=sorted(SUITES), default="stream")
    parser.add_argument("--runs", type=int, default=8, help="runs of each way, alternating which goes first")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="where the raw runs go (default build/bench/rounds-<what>.json)")
    args = parser.parse_args()
    path = args.json or f"build/bench/rounds-{args.what}.json"
    ctx = Context(cpu=identify_cpu(), threads=args.threads)
    n, _ = stream_elements(ctx, "fp64")
    rows = {"blocked": [], "interleaved": []}
    for i in range(args.runs):
        for way in (("blocked", "interleaved") if i % 2 == 0 else ("interleaved", "blocked")):
            rows[way].append(one_run(ctx, n, way, args.what))
            print(way, {k: round(v, 3) for k, v in rows[way][-1].items()}, flush=True)
    arrays = "" if args.what in ("matmul", "dot") else f", {n * 8 >> 20} MiB per array"
    print(f"\n{args.what}: {args.runs} runs of each way{arrays}, {args.threads} threads")
    summary = {}
    for way, found in rows.items():
        for key in found[0]:
            values = [r[key] for r in found]
            summary[f"{way} {key}"] = {"median": statistics.median(values), "max_over_min": max(values) / min(values)}
            print(f"  {way:11s} {key:22s} median {statistics.median(values):8.3f}, max/min over runs "
                  f"{max(values) / min(values):.3f}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"what": args.what, "cpu": ctx.cpu["id"], "threads": args.threads, "runs": rows, "summary": summary},
                  f, indent=2)
    print(f"  raw runs written to {path}")


if __name__ == "__main__":
    main()
