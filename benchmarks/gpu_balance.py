"""Side-by-side GPU benchmark for the GPU issue's targets (needs an NVIDIA GPU, CuPy and torch).

Interleaved rounds on GPU 0, medians of per-round ratios:
  harness triad (bytes read + written) / torch device-to-device copy       (target >= 0.9)
  harness fp32 FMA / theoretical fp32 at the SM clock NVML reports          (target >= 0.9)
  cupy-fused decode (H=32, H_kv=8, d_h=128, B=8, S=32768, fp16) / harness HBM read  (target >= 0.85)
  best torch SDPA backend time / cupy-fused time                            (target >= 1)
  harness bf16 tensor-core peak (8192^3) / torch.matmul timed on its own    (target >= 0.95)
The harness's tensor-core probe calls torch.matmul too: that ratio checks its sizing and timing
(calibrated loops, CUDA-event clock) against a plain loop of CUDA events around the same product.
Usage: python benchmarks/gpu_balance.py [--rounds 5] [--json PATH]
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from gpu_setup import gpu0  # noqa: E402
from harness import gpus  # noqa: E402
from harness.errors import first_line  # noqa: E402
from harness.machine import identify_cpu  # noqa: E402
from harness.model import DecodeShape  # noqa: E402
from harness.workload import time_workload  # noqa: E402
from probes import gpu_decode, gpu_peak  # noqa: E402
from summary import finish  # noqa: E402

TARGETS = {"triad_over_copy": (">=", 0.9), "fma_over_theoretical": (">=", 0.9),
           "fused_fraction_of_read": (">=", 0.85), "sdpa_over_fused": (">=", 1.0),
           "matmul_over_torch": (">=", 0.95)}
MATMUL_N = 8192


def timed(w, clock):
    """time_workload, stopping the benchmark if the kernel's output is wrong."""
    rec = time_workload(w, 10, 0.05, clock)
    if not rec["validated"]:
        sys.exit(f"{w.name}: output check failed: {rec.get('error')}")
    return rec


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default=os.path.join(os.path.dirname(HERE), "build", "bench-gpu.json"))
    args = p.parse_args()
    gpu, handle, clock, stream = gpu0()
    import pynvml
    import torch

    triad, read = stream["triad"], stream["read"]
    fma = gpu_peak.fma_workload(gpu, "fp32", 4096)
    shape = DecodeShape(seq_len=32768, heads=32, kv_heads=8, head_dim=128, dtype="fp16", batch=8)
    data = gpu_decode.decode_data(gpu, shape, seed=1)  # the same cache (and reference) for every implementation
    fused = gpu_decode.decode_workload(gpu, "cupy-fused", shape, seed=1, data=data)
    sdpa = {}
    for backend in gpu_decode.SDPA_BACKENDS:
        try:
            sdpa[backend] = gpu_decode.decode_workload(gpu, "torch-sdpa", shape, seed=1, backend=backend, data=data)
        except RuntimeError as e:
            print(f"SDPA {backend}: not available for this shape ({first_line(e)})")
    matmul = gpu_peak.matmul_workload("bf16", MATMUL_N)
    n = triad.bytes_per_call // 12
    src, dst = torch.rand(n * 2, device="cuda"), torch.empty(n * 2, device="cuda")
    a, b = (torch.rand(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device="cuda") for _ in range(2))

    def torch_best_s(fn, calls=10):
        """The fastest of `calls` calls of fn, each timed with CUDA events (torch's own reference)."""
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        fn()
        best = float("inf")
        for _ in range(calls):
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return best

    rows = []
    for r in range(args.rounds):
        rec = {"copy_bytes_per_s": 2 * dst.nbytes / torch_best_s(lambda: dst.copy_(src))}  # read + written
        rec["triad_bytes_per_s"] = timed(triad, clock)["bytes_per_s"]
        rec["read_median_bytes_per_s"] = timed(read, clock)["median_bytes_per_s"]  # beside the decode median
        with gpus.Telemetry(pynvml, handle) as tele:
            rec["fma_fp32_flops_per_s"] = timed(fma, clock)["flops_per_s"]
        sm_clock = tele.summary()["sm_clock_hz"]["median"]
        rec["theoretical_fp32_at_clock"] = gpus.theoretical(gpu, clock_hz=sm_clock)["flops_per_s"]["fp32"]
        rec["fused_time_s"] = timed(fused, clock)["median_time_s"]
        rec["sdpa_best_time_s"] = min(timed(w, clock)["median_time_s"] for w in sdpa.values()) if sdpa else None
        rec["matmul_bf16_flops_per_s"] = timed(matmul, clock)["flops_per_s"]
        rec["torch_matmul_bf16_flops_per_s"] = 2 * MATMUL_N ** 3 / torch_best_s(lambda: torch.matmul(a, b))
        rec["triad_over_copy"] = rec["triad_bytes_per_s"] / rec["copy_bytes_per_s"]
        rec["fma_over_theoretical"] = rec["fma_fp32_flops_per_s"] / rec["theoretical_fp32_at_clock"]
        rec["fused_fraction_of_read"] = fused.bytes_per_call / rec["fused_time_s"] / rec["read_median_bytes_per_s"]
        rec["sdpa_over_fused"] = rec["sdpa_best_time_s"] / rec["fused_time_s"] if rec["sdpa_best_time_s"] else None
        rec["matmul_over_torch"] = rec["matmul_bf16_flops_per_s"] / rec["torch_matmul_bf16_flops_per_s"]
        rows.append(rec)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3g}" for k, v in rec.items() if v is not None), flush=True)
    if not sdpa:  # no SDPA backend took the shape: that ratio has nothing to compare
        for rec in rows:
            rec.pop("sdpa_over_fused"), rec.pop("sdpa_best_time_s")
    finish(rows, {k: (op, t, k) for k, (op, t) in TARGETS.items() if k in rows[0]},
           f"{gpu['name']}, H=32 H_kv=8 d_h=128 B=8 S=32768 fp16", args.json,
           {"gpu": gpu["name"], "uuid": gpu.get("uuid"), "cpu": identify_cpu()["model"]})
    pynvml.nvmlShutdown()


if __name__ == "__main__":
    main()
