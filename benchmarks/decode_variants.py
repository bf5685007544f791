"""The cupy-fused decode kernel's variants side by side on a lent GPU (needs CuPy and an NVIDIA GPU).

Variants: rows per lane in flight (decode.cu's UNROLL, a build option) x blocks per SM that
decode_chunking aims the split at. Each is built, checked against the float64 reference on the
GPU issue's shape (H=32, H_kv=8, d_h=128, B=8, S=32768, fp16) and timed in interleaved rounds
beside the harness's HBM read; the table gives each variant's median fraction of that read, its
registers and blocks per SM as the driver loaded it. Usage:
  python benchmarks/decode_variants.py [--unroll 2,4,8] [--blocks-per-sm 8,16,32,64] [--rounds 3] [--repeats 10]
  [--seq-len 32768] [--json PATH]
"""

import argparse
import itertools
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from gpu_setup import gpu0  # noqa: E402
from harness.model import DecodeShape  # noqa: E402
from harness.workload import time_workload  # noqa: E402
from probes import gpu_decode  # noqa: E402


def ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--unroll", type=ints, default=[2, 4, 8], help="rows per lane in flight, each 1, 2, 4 or 8")
    p.add_argument("--blocks-per-sm", type=ints, default=[8, 16, 32, 64], help="split-K blocks per SM to aim for")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10, help="timed samples per variant per round")
    p.add_argument("--seq-len", type=int, default=32768)
    p.add_argument("--json", default=os.path.join(os.path.dirname(HERE), "build", "decode-variants.json"))
    args = p.parse_args()
    gpu, _, clock, stream = gpu0()
    import pynvml

    pynvml.nvmlShutdown()
    read = stream["read"]
    shape = DecodeShape(seq_len=args.seq_len, heads=32, kv_heads=8, head_dim=128, dtype="fp16", batch=8)
    data = gpu_decode.decode_data(gpu, shape, seed=1)  # one cache and one reference for every variant
    variants = {(unroll, per_sm): gpu_decode.decode_workload(gpu, "cupy-fused", shape, seed=1, data=data,
                                                             tuning={"unroll": unroll, "blocks_per_sm": per_sm})
                for unroll, per_sm in itertools.product(args.unroll, args.blocks_per_sm)}
    rounds = []
    for r in range(args.rounds):
        row = {"read_median_bytes_per_s": time_workload(read, args.repeats, 0.05, clock)["median_bytes_per_s"]}
        for (unroll, per_sm), w in variants.items():
            rec = time_workload(w, args.repeats, 0.05, clock)
            if not rec["validated"]:
                sys.exit(f"UNROLL={unroll} blocks/SM={per_sm}: output check failed: {rec.get('error')}")
            row[f"{unroll}/{per_sm}"] = w.bytes_per_call / rec["median_time_s"] / row["read_median_bytes_per_s"]
        rounds.append(row)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    print(f"\n{gpu['name']}, H=32 H_kv=8 d_h=128 B=8 S={args.seq_len} fp16: cupy-fused / HBM read, "
          f"medians of {args.rounds} rounds")
    print(f"{'UNROLL':>6} {'aim/SM':>6} {'chunks':>6} {'chunk':>6} {'regs':>5} {'local B':>7} {'blocks/SM':>10} {'of read':>8}")
    table = []
    for (unroll, per_sm), w in variants.items():
        info = w.info
        fraction = statistics.median(row[f"{unroll}/{per_sm}"] for row in rounds)
        table.append({"unroll": unroll, "blocks_per_sm_aim": per_sm, "fraction_of_read": fraction,
                      **{k: info.get(k) for k in ("chunks", "chunk_len", "registers", "local_bytes_per_thread",
                                                  "blocks_per_sm", "blocks_per_sm_limit")}})
        print(f"{unroll:>6} {per_sm:>6} {info['chunks']:>6} {info['chunk_len']:>6} {str(info.get('registers')):>5} "
              f"{str(info.get('local_bytes_per_thread')):>7} {str(info.get('blocks_per_sm')):>10} {fraction:>8.3f}")
    best = max(table, key=lambda t: t["fraction_of_read"])
    print(f"best: UNROLL={best['unroll']}, {best['blocks_per_sm_aim']} blocks per SM aimed at: "
          f"{best['fraction_of_read']:.3f} of the read")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"gpu": gpu["name"], "uuid": gpu.get("uuid"), "seq_len": args.seq_len, "rounds": rounds,
                   "variants": table, "best": best}, f, indent=2)
    print(f"raw rounds written to {args.json}")


if __name__ == "__main__":
    main()
