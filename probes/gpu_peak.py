"""GPU peak FLOP/s: FMA chains in CUDA for fp64, fp32 and fp16 (half2), checked against the
closed form, and tensor-core matmul through torch for fp16, bf16, tf32 and int8."""

import numpy as np

from harness.workload import Workload
from probes.gpu_common import cuda_path, load_module, nvtx
from probes.torch_matmul import accepted, operands, poison, product_error, via

ACC = 8  # chains per thread, as in probes/cuda/fma.cu
# x = 1/2, y = 1/4: every step is exact in fp16, fp32 and fp64 alike, so the chains reach the fixed
# point 1/2 exactly (x close to 1 stalls in fp16, where the step falls under half an ulp)
X, Y = 0.5, 0.25
RTOL = {"fp64": 1e-12, "fp32": 1e-6, "fp16": 1e-3}
# The timed chains end at that fixed point, where a step more or less changes nothing: the check also
# launches one block for COUNT_STEPS steps, each of which halves the chains' distance to 1/2
COUNT_STEPS = 3
KERNEL_FILES = (cuda_path("fma"),)


def closed_form_sum(iters, x=X, y=Y):
    """Sum over one thread's chains after `iters` steps of a = a*x + y from a0 = 0.5 + k/16."""
    fixed = y / (1 - x)
    return sum(fixed + (0.5 + 0.0625 * k - fixed) * x ** iters for k in range(ACC))


def fma_workload(gpu, dtype, iters):
    import cupy as cp

    kernel = load_module("fma").get_function(f"fma_{dtype}")
    blocks, threads = gpu["sm_count"] * 16, 256
    out = cp.empty(blocks * threads, cp.float64 if dtype == "fp64" else cp.float32)
    per_instruction = 2 if dtype == "fp16" else 1  # half2: one instruction, two FMAs
    expected = closed_form_sum(iters) * per_instruction
    x = np.float64(X) if dtype == "fp64" else np.float32(X)
    y = np.float64(Y) if dtype == "fp64" else np.float32(Y)

    def run(loops):
        for _ in range(loops):
            kernel((blocks,), (threads,), (out, x, y, np.int32(iters)))

    def error(values, want, what):
        err = float(cp.abs(values.astype(cp.float64) - want).max()) / want
        return None if err <= RTOL[dtype] else f"fma {dtype}: relative error {err:.3g} against the closed form{what}"

    def check():
        fresh = cp.empty(threads, out.dtype)
        fresh.fill(np.nan)
        kernel((1,), (threads,), (fresh, x, y, np.int32(COUNT_STEPS)))
        return error(out, expected, "") or error(fresh, closed_form_sum(COUNT_STEPS) * per_instruction,
                                                  f" after {COUNT_STEPS} steps of one block (a step skipped or repeated)")

    return Workload(name=f"fma_{dtype}", run=nvtx(f"fma_{dtype}", run), check=check, poison=lambda: out.fill(np.nan),
                    threads=blocks * threads, dtype=dtype, device="gpu",
                    flops_per_call=2 * ACC * per_instruction * iters * blocks * threads,
                    info={"blocks": blocks, "threads_per_block": threads, "iterations_per_call": iters})


def matmul_workload(dtype, n):
    """torch's product on tensor cores: n x n x n, checked on a few rows against float64."""
    import torch

    a, b, op, out = operands(dtype, n, "cuda")

    def run(loops):
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        try:
            for _ in range(loops):
                op()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev

    return Workload(name=f"matmul_{dtype}", run=run, check=lambda: product_error(dtype, a, b, out),
                    poison=lambda: poison(out), threads=1,
                    dtype=dtype, device="gpu", flops_per_call=2 * n ** 3, info={"n": n, "via": via(dtype)})


def run_peak(ctx):
    """devices.gpuN.peak_flops (FMA) and tensor_flops (matmul), each set's dtypes timed in interleaved
    rounds, as on the CPU: a clock that sags under the load slows each alike."""
    dtypes = ("fp64", "fp32", "fp16")
    ctx.progress(f"gpu{ctx.gpu['index']} peak {', '.join(dtypes)} FMA in interleaved rounds")
    fmas = ctx.measure_interleaved([fma_workload(ctx.gpu, dtype, 64 if ctx.tiny else 4096) for dtype in dtypes])
    out = {"peak_flops": dict(zip(dtypes, fmas)), "tensor_flops": {}}
    try:
        import torch  # noqa: F401
    except ImportError as e:
        out["tensor_flops"] = {"reason": f"torch is not installed ({e})"}
        return out
    workloads, refused = accepted([matmul_workload(dtype, 256 if ctx.tiny else 8192)
                                   for dtype in ("fp16", "bf16", "tf32", "int8")])  # torch._int_mm has its limits
    if refused:
        out["tensor_flops_unsupported"] = refused
    if workloads:
        ctx.progress(f"gpu{ctx.gpu['index']} tensor-core matmul {', '.join(w.dtype for w in workloads)} in interleaved rounds")
        out["tensor_flops"] = {w.dtype: rec for w, rec in zip(workloads, ctx.measure_interleaved(workloads))}
    return out
