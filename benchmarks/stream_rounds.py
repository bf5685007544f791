"""The STREAM kernels timed one after another against timed in interleaved rounds (the stream
probe's way: Context.measure_interleaved), alternating in one process: how far each way's kernel
ratios wander between runs on a memory whose speed drifts (a shared VM host's).

Per run: the fp64 read's median rate and the median-rate ratios triad/read, copy/scale, add/triad;
per way: their median and max/min over the runs. Every run's outputs are checked.
Usage: python benchmarks/stream_rounds.py [--runs 8] [--threads N] [--json PATH]
"""

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harness.machine import identify_cpu  # noqa: E402
from harness.workload import Context, time_interleaved, time_workload  # noqa: E402
from probes.cpu_stream import stream_elements, stream_workloads  # noqa: E402

RATIOS = {"triad_over_read": ("triad", "read"), "copy_over_scale": ("copy", "scale"), "add_over_triad": ("add", "triad")}
REPEATS, MIN_SAMPLE_S = 10, 0.05  # the stream probe's, outside --quick


def one_run(ctx, n, way):
    """{read_gb_per_s, ratio: value} of one timing of the five kernels, `way` 'blocked' or 'interleaved'."""
    workloads = list(stream_workloads(ctx, "fp64", n, ctx.threads))
    recs = ([time_workload(w, REPEATS, MIN_SAMPLE_S) for w in workloads] if way == "blocked"
            else time_interleaved(workloads, REPEATS, MIN_SAMPLE_S))
    bad = [f"{w.name}: {r['error']}" for w, r in zip(workloads, recs) if not r["validated"]]
    if bad:
        sys.exit(f"output check failed: {bad}")
    rate = {w.name: r["median_bytes_per_s"] for w, r in zip(workloads, recs)}
    return {"read_gb_per_s": rate["read"] / 1e9, **{k: rate[a] / rate[b] for k, (a, b) in RATIOS.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs of each way, alternating which goes first")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default="build/bench/stream_rounds.json")
    args = parser.parse_args()
    ctx = Context(cpu=identify_cpu(), threads=args.threads)
    n, _ = stream_elements(ctx, "fp64")
    rows = {"blocked": [], "interleaved": []}
    for i in range(args.runs):
        for way in (("blocked", "interleaved") if i % 2 == 0 else ("interleaved", "blocked")):
            rows[way].append(one_run(ctx, n, way))
            print(way, {k: round(v, 3) for k, v in rows[way][-1].items()}, flush=True)
    print(f"\n{args.runs} runs of each way, {n * 8 >> 20} MiB per array, {args.threads} threads")
    summary = {}
    for way, found in rows.items():
        for key in ("read_gb_per_s", *RATIOS):
            values = [r[key] for r in found]
            summary[f"{way} {key}"] = {"median": statistics.median(values), "max_over_min": max(values) / min(values)}
            print(f"  {way:11s} {key:15s} median {statistics.median(values):7.3f}, max/min over runs "
                  f"{max(values) / min(values):.3f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"cpu": ctx.cpu["id"], "threads": args.threads, "runs": rows, "summary": summary}, f, indent=2)
    print(f"  raw runs written to {args.json}")


if __name__ == "__main__":
    main()
