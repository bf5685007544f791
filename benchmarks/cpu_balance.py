"""Side-by-side benchmark of the harness's CPU probes against compiled references.

Interleaved rounds on this machine (so drifting noise hits both sides alike), medians of per-round
ratios reported:
  triad:  harness (Numba) triad  vs  C/OpenMP triad (gcc -O3 -march=native -fopenmp), same arrays size
  read:   harness read (the decode roof)  vs  a C/OpenMP vectorised sum of an array of that size
  fp32:   harness FMA peak       vs  the better of a C FMA-intrinsics loop and torch fp32 matmul 4096^2
  fp16:   harness fp16 FMA peak  vs  the same C loop in AVX512-FP16 intrinsics (where the CPU has them)
Usage: python benchmarks/cpu_balance.py [--rounds 5] [--threads N] [--json PATH]
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harness.machine import identify_cpu  # noqa: E402
from harness.workload import Context, time_workload  # noqa: E402
from probes.cpu_peak import peak_workload, unsupported_reason  # noqa: E402
from probes.cpu_stream import stream_elements, stream_workloads  # noqa: E402
from summary import finish  # noqa: E402

BUILD = os.path.join(os.path.dirname(HERE), "build")
TARGETS = {"triad_ratio": (">=", 0.9, "harness triad / C OpenMP triad"),
           "read_ratio": (">=", 0.9, "harness read / C OpenMP sum"),
           "fp32_ratio": (">=", 0.9, "harness fp32 peak / best(C FMA intrinsics, torch matmul)")}
FP16_TARGET = {"fp16_ratio": (">=", 0.9, "harness fp16 peak / C AVX512-FP16 intrinsics")}


def compile_c(name, variant="", out_dir=BUILD):
    """gcc -O3 -march=native build of benchmarks/c/<name>.c into out_dir; `variant` (FP16) is a -D
    define and a suffix."""
    os.makedirs(out_dir, exist_ok=True)
    exe = os.path.join(out_dir, f"{name}_{variant.lower()}" if variant else name)
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", *([f"-D{variant}"] if variant else []),
                    os.path.join(HERE, "c", f"{name}.c"), "-o", exe, "-lm"], check=True)
    return exe


def run_c(exe, args, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="spread")
    out = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout)


def torch_matmul_flops(threads, n=4096, reps=5):
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    c = a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    ref = (a[:4].double() @ b.double())
    assert torch.allclose(c[:4].double(), ref, rtol=1e-3), "torch matmul output wrong"
    return 2 * n**3 / best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=os.path.join(BUILD, "bench-cpu.json"))
    args = p.parse_args()
    cpu = identify_cpu()
    threads = args.threads or cpu["usable_cpus"]
    ctx = Context(cpu=cpu, threads=threads)
    n, _ = stream_elements(ctx, "fp64")
    triad_c, read_c, fma_c = compile_c("triad"), compile_c("read"), compile_c("fma")
    stream = {w.name: w for w in stream_workloads(ctx, "fp64", n, threads)}
    no_fp16 = unsupported_reason(cpu, "fp16")
    if no_fp16:
        print(f"fp16 left out: {no_fp16}")
    targets = TARGETS if no_fp16 else {**TARGETS, **FP16_TARGET}
    fma16_c = None if no_fp16 else compile_c("fma", "FP16")

    rows = []
    for r in range(args.rounds):
        row = {
            "c_triad_bytes_per_s": run_c(triad_c, [n, 10], threads),
            "harness_triad_bytes_per_s": time_workload(stream["triad"], 10, 0.05)["bytes_per_s"],
            "c_read_bytes_per_s": run_c(read_c, [n, 10], threads),
            "harness_read_bytes_per_s": time_workload(stream["read"], 10, 0.05)["bytes_per_s"],
            "c_fma_fp32_flops_per_s": run_c(fma_c, [2_000_000, 5], threads),
            "torch_matmul_fp32_flops_per_s": torch_matmul_flops(threads),
            "harness_peak_fp32_flops_per_s": time_workload(peak_workload(cpu, "fp32", threads, 20_000), 10, 0.05)["flops_per_s"],
        }
        row["triad_ratio"] = row["harness_triad_bytes_per_s"] / row["c_triad_bytes_per_s"]
        row["read_ratio"] = row["harness_read_bytes_per_s"] / row["c_read_bytes_per_s"]
        row["fp32_ratio"] = row["harness_peak_fp32_flops_per_s"] / max(
            row["c_fma_fp32_flops_per_s"], row["torch_matmul_fp32_flops_per_s"])
        fp16 = ""
        if fma16_c:
            row["c_fma_fp16_flops_per_s"] = run_c(fma16_c, [2_000_000, 5], threads)
            row["harness_peak_fp16_flops_per_s"] = time_workload(peak_workload(cpu, "fp16", threads, 20_000), 10,
                                                                 0.05)["flops_per_s"]
            row["fp16_ratio"] = row["harness_peak_fp16_flops_per_s"] / row["c_fma_fp16_flops_per_s"]
            fp16 = (f" | fp16 C-FMA {row['c_fma_fp16_flops_per_s'] / 1e9:6.1f}, harness "
                    f"{row['harness_peak_fp16_flops_per_s'] / 1e9:6.1f} GFLOP/s (x{row['fp16_ratio']:.3f})")
        rows.append(row)
        print(f"round {r + 1}: triad C {row['c_triad_bytes_per_s'] / 1e9:6.1f} GB/s, harness "
              f"{row['harness_triad_bytes_per_s'] / 1e9:6.1f} GB/s (x{row['triad_ratio']:.3f}) | read C "
              f"{row['c_read_bytes_per_s'] / 1e9:6.1f}, harness {row['harness_read_bytes_per_s'] / 1e9:6.1f} GB/s "
              f"(x{row['read_ratio']:.3f}) | fp32 C-FMA "
              f"{row['c_fma_fp32_flops_per_s'] / 1e9:6.1f}, torch matmul {row['torch_matmul_fp32_flops_per_s'] / 1e9:6.1f}, "
              f"harness {row['harness_peak_fp32_flops_per_s'] / 1e9:6.1f} GFLOP/s (x{row['fp32_ratio']:.3f}){fp16}", flush=True)

    finish(rows, targets, f"{cpu['model']}, {threads} threads, {n * 8 / 2**20:.0f} MiB per triad array", args.json,
           {"cpu": cpu["model"], "threads": threads})


if __name__ == "__main__":
    main()
