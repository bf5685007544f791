"""CPU peak FLOP/s with Numba: independent FMA chains, vectorised, checked against a closed form.

Each thread holds a block of accumulators, `a = a * x + y`, enough independent vector chains to
cover FMA latency on every FMA pipe (16 vector registers' worth with AVX-512, 12 with AVX2, 24 with
Arm's Advanced SIMD: a Neoverse V1/V2 core needs 16, four pipes of 4-cycle FMLA, of its 32 registers).
Only FMA contraction is allowed (no reassociation), so the chains cannot be folded.
"""

import functools

import numpy as np
from numba import njit, prange

from harness.workload import Workload

DTYPES = {"fp64": np.float64, "fp32": np.float32}
# x close to 1 keeps the recurrence contractive, so rounding error stays near eps / (1 - x)
X = {"fp64": 1.0 - 2.0 ** -20, "fp32": 1.0 - 2.0 ** -12}
Y = 2.0 ** -13
RTOL = {"fp64": 1e-9, "fp32": 1e-3}


def simd_bits(cpu):
    flags = set(cpu.get("simd", []))
    return 512 if "avx512f" in flags else (256 if "avx2" in flags or "avx" in flags else 128)


def accumulators(cpu, dtype):
    """Accumulators per thread: vectors in flight x lanes per vector."""
    bits = simd_bits(cpu)
    vectors = 16 if bits == 512 else 24 if "asimd" in set(cpu.get("simd", [])) else 12
    return vectors * bits // (8 * np.dtype(DTYPES[dtype]).itemsize)


@functools.lru_cache(maxsize=None)
def fma_kernel(block):
    """A kernel whose accumulator block size is a compile-time constant (so it lives in registers)."""

    @njit(parallel=True, fastmath={"contract"})
    def kernel(acc, x, y, iters):
        for t in prange(acc.shape[0]):
            a = acc[t].copy()
            for _ in range(iters):
                for j in range(block):
                    a[j] = a[j] * x + y
            acc[t, :] = a

    return kernel


def closed_form(a0, x, y, iters):
    """float64 value of `iters` steps of a = a*x + y from a0."""
    fixed = y / (1.0 - x)
    return fixed + (a0 - fixed) * x ** iters


def peak_workload(cpu, dtype, threads, iters_per_call):
    """Workload for the FMA kernel; `flops_per_call` = 2 x accumulators x threads x iterations."""
    t = DTYPES[dtype]
    n = accumulators(cpu, dtype)
    kernel = fma_kernel(n)
    x, y = t(X[dtype]), t(Y)
    rng = np.random.default_rng(12345)
    acc = np.empty((threads, n), dtype=t)
    state = {"a0": None, "iters": 0}

    def poison():
        acc[:] = rng.uniform(0.5, 1.5, size=acc.shape).astype(t)
        state["a0"] = acc.astype(np.float64)
        state["iters"] = 0

    def run(loops):
        kernel(acc, x, y, iters_per_call * loops)
        state["iters"] += iters_per_call * loops

    def check():
        ref = closed_form(state["a0"], float(x), float(y), state["iters"])
        got = acc.astype(np.float64)
        bad = ~(np.abs(got - ref) <= RTOL[dtype] * np.abs(ref))
        if bad.any():
            i = np.unravel_index(int(np.argmax(bad)), bad.shape)
            return f"fma accumulator {i} is {got[i]!r}, expected {ref[i]!r} after {state['iters']} steps"
        return None

    return Workload(name=f"fma_{dtype}", run=run, check=check, poison=poison, threads=threads, dtype=dtype,
                    flops_per_call=2 * n * threads * iters_per_call,
                    info={"accumulators_per_thread": int(n), "simd_bits": simd_bits(cpu),
                          "iterations_per_call": int(iters_per_call)})


def iterations(ctx):
    return 100 if ctx.tiny else 20_000


def run_peak(ctx):
    """devices.cpu.peak_flops.<dtype>: best and median FLOP/s of the FMA chains."""
    out = {}
    for dtype in ctx.dtypes:
        ctx.progress(f"peak {dtype} FMA, {ctx.threads} threads")
        out[dtype] = ctx.measure(peak_workload(ctx.cpu, dtype, ctx.threads, iterations(ctx)))
    return {"peak_flops": out}
