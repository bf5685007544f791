"""Side-by-side benchmark of decode attention on the CPU (the decode issue's targets).

Interleaved rounds, one shape (H=32, d_h=128, B=1; S by default the shortest power of two >= 16384
whose fp32 cache is >= 4x the last-level cache: 16384 on the Zen 5 VM, 65536 on the Xeon VM with
480 MiB of L3), medians of per-round ratios.
Each round: read, fused fp32, read (the fraction uses the mean of the two reads), then torch SDPA,
torch naive, fused fp32 again, int8, bf16, fp16 and GQA; time ratios use the mean of the two fp32 runs.
torch is imported before Numba's threads start (harness.run.torch_first: after them, SDPA
ran 8-15x slower here, which is what an earlier version of this benchmark measured).
  numba-fused fp32 bandwidth / the harness's own DRAM read bandwidth      (target >= 0.8)
  torch-sdpa fp32 time / numba-fused fp32 time                           (target >= 2)
  numba-fused int8 time / fp32 time                                      (target <= 0.4)
  numba-fused bf16 time / fp32 time                                      (target <= 0.6)
  numba-fused fp16 time / fp32 time                                      (target <= 0.6)
  numba-fused fp32 group-1 time / group-4 time (H_kv 32 -> 8)            (target >= 2.5)
  torch-naive fp32 time / numba-fused fp32 time                          (no target: the best torch)
Usage: python benchmarks/cpu_decode.py [--rounds 5] [--seq-len S] [--threads N] [--json PATH]
"""

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harness.machine import identify_cpu, last_level_cache_bytes  # noqa: E402
from harness.model import DecodeShape, cache_bytes  # noqa: E402
from harness.run import torch_first  # noqa: E402
from harness.validation import LARGE_CACHE_FACTOR  # noqa: E402
from harness.workload import Context, time_workload  # noqa: E402
from probes.cpu_decode import decode_workload  # noqa: E402
from probes.cpu_stream import stream_elements, stream_workloads  # noqa: E402
from summary import finish  # noqa: E402

TARGETS = {"fused_fp32_fraction_of_read": (">=", 0.8), "sdpa_over_fused_time": (">=", 2.0),
           "int8_over_fp32_time": ("<=", 0.4), "bf16_over_fp32_time": ("<=", 0.6), "fp16_over_fp32_time": ("<=", 0.6),
           "group1_over_group4_time": (">=", 2.5)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=os.path.join(os.path.dirname(HERE), "build", "bench-decode.json"))
    args = p.parse_args()
    unavailable = torch_first()  # before any Numba parallel kernel
    if unavailable:
        sys.exit(f"this benchmark compares with torch: {unavailable}")
    cpu = identify_cpu()
    if args.seq_len is None:  # from DRAM: the fp32 cache >= 4x the LLC
        args.seq_len = 16384
        while cache_bytes(DecodeShape(seq_len=args.seq_len, heads=32, kv_heads=32, head_dim=128, dtype="fp32")) \
                < LARGE_CACHE_FACTOR * last_level_cache_bytes(cpu):
            args.seq_len *= 2
    threads = args.threads or cpu["usable_cpus"]
    ctx = Context(cpu=cpu, threads=threads)
    n, _ = stream_elements(ctx, "fp64")
    read = next(w for w in stream_workloads(ctx, "fp64", n, threads) if w.name == "read")

    def shape(dtype="fp32", kv_heads=32):
        return DecodeShape(seq_len=args.seq_len, heads=32, kv_heads=kv_heads, head_dim=128, dtype=dtype)

    cases = {"fused_fp32": ("numba-fused", shape()), "sdpa_fp32": ("torch-sdpa", shape()), "naive_fp32": ("torch-naive", shape()),
             "fused_int8": ("numba-fused", shape("int8")), "fused_bf16": ("numba-fused", shape("bf16")),
             "fused_fp16": ("numba-fused", shape("fp16")),
             "fused_fp32_gqa4": ("numba-fused", shape(kv_heads=8))}
    workloads = {k: decode_workload(impl, s, cpu, threads, seed=i) for i, (k, (impl, s)) in enumerate(cases.items())}

    rows = []
    for r in range(args.rounds):
        rec = {}
        # the bandwidth drifts within seconds here: bracket fp32 by reads, and time each
        # comparison right next to fp32
        reads = [time_workload(read, 7, 0.05)["median_bytes_per_s"]]
        order = ["fused_fp32", "sdpa_fp32", "naive_fp32", "fused_fp32_again", "fused_int8", "fused_bf16", "fused_fp16",
                 "fused_fp32_gqa4"]
        for key in order:
            t = time_workload(workloads[key.replace("_again", "")], 7, 0.05)
            assert t["validated"], t.get("error")
            if key == "fused_fp32":
                reads.append(time_workload(read, 7, 0.05)["median_bytes_per_s"])
            rec[f"{key}_time_s"] = t["median_time_s"]
            rec[f"{key}_bytes_per_s"] = t["median_bytes_per_s"]
        rec["read_bytes_per_s"] = statistics.mean(reads)
        rec["fused_fp32_time_s"] = statistics.mean([rec["fused_fp32_time_s"], rec.pop("fused_fp32_again_time_s")])
        rec.pop("fused_fp32_again_bytes_per_s")
        rec["fused_fp32_fraction_of_read"] = rec["fused_fp32_bytes_per_s"] / rec["read_bytes_per_s"]  # first fp32 run, between the reads
        rec["sdpa_over_fused_time"] = rec["sdpa_fp32_time_s"] / rec["fused_fp32_time_s"]
        rec["naive_over_fused_time"] = rec["naive_fp32_time_s"] / rec["fused_fp32_time_s"]
        rec["int8_over_fp32_time"] = rec["fused_int8_time_s"] / rec["fused_fp32_time_s"]
        rec["bf16_over_fp32_time"] = rec["fused_bf16_time_s"] / rec["fused_fp32_time_s"]
        rec["fp16_over_fp32_time"] = rec["fused_fp16_time_s"] / rec["fused_fp32_time_s"]
        rec["group1_over_group4_time"] = rec["fused_fp32_time_s"] / rec["fused_fp32_gqa4_time_s"]
        rows.append(rec)
        print(f"round {r + 1}: read {rec['read_bytes_per_s'] / 1e9:.1f} GB/s, fused fp32 "
              f"{rec['fused_fp32_time_s'] * 1e3:.2f} ms ({rec['fused_fp32_fraction_of_read']:.2f} of read), "
              f"sdpa {rec['sdpa_fp32_time_s'] * 1e3:.2f} ms, naive {rec['naive_fp32_time_s'] * 1e3:.2f} ms, int8 {rec['fused_int8_time_s'] * 1e3:.2f} ms, "
              f"bf16 {rec['fused_bf16_time_s'] * 1e3:.2f} ms, fp16 {rec['fused_fp16_time_s'] * 1e3:.2f} ms, gqa4 {rec['fused_fp32_gqa4_time_s'] * 1e3:.2f} ms", flush=True)
    finish(rows, {k: (op, t, k) for k, (op, t) in TARGETS.items()},
           f"{cpu['model']}, {threads} threads, H=32 d_h=128 B=1 S={args.seq_len}", args.json,
           {"cpu": cpu["model"], "threads": threads, "seq_len": args.seq_len})
    print(f"  naive_over_fused_time: {statistics.median(r['naive_over_fused_time'] for r in rows):.3f} (no target)")
    # this VM's DRAM bandwidth swings ~2x between minutes: show the fraction and the SDPA ratio in
    # the faster and the slower half of the rounds
    cut = statistics.median(r["read_bytes_per_s"] for r in rows)
    for label, half in (("faster", [r for r in rows if r["read_bytes_per_s"] >= cut]),
                        ("slower", [r for r in rows if r["read_bytes_per_s"] < cut])):
        if half:
            print(f"  {label} memory ({len(half)} rounds, read {statistics.median(r['read_bytes_per_s'] for r in half) / 1e9:.0f} GB/s): "
                  + ", ".join(f"{k} {statistics.median(r[k] for r in half):.3f}"
                              for k in ("fused_fp32_fraction_of_read", "sdpa_over_fused_time")))


if __name__ == "__main__":
    main()
