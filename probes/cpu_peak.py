"""CPU peak FLOP/s with Numba: independent FMA chains, vectorised, checked against a closed form.

Each thread holds a block of accumulators, `a = a * x + y`, enough independent vector chains to
cover FMA latency on every FMA pipe (16 vector registers' worth with AVX-512, 12 with AVX2, 24 with
Arm's Advanced SIMD: a Neoverse V1/V2 core needs 16, four pipes of 4-cycle FMLA, of its 32 registers).
Only FMA contraction is allowed (no reassociation), so the chains cannot be folded. fp16 runs the
same chains in LLVM IR (probes/cpu_half.py) where the cores do fp16 arithmetic natively, checked
step for step against an exact emulation.
"""

import functools

import numpy as np
from numba import njit, prange

from harness.errors import first_line
from harness.workload import Workload
from probes import cpu_half

DTYPES = {"fp64": np.float64, "fp32": np.float32, "fp16": np.float16}
# x close to 1 keeps the recurrence contractive, so rounding error stays near eps / (1 - x); fp16's
# chains reach their fixed point, 4, within a few hundred steps, and are checked exactly (fp16_reference)
X = {"fp64": 1.0 - 2.0 ** -20, "fp32": 1.0 - 2.0 ** -12, "fp16": 1.0 - 2.0 ** -6}
Y = {"fp64": 2.0 ** -13, "fp32": 2.0 ** -13, "fp16": 2.0 ** -4}
RTOL = {"fp64": 1e-9, "fp32": 1e-3, "fp16": 0.0}
# The timed runs leave the chains at their fixed point, where a step more or less changes nothing:
# the check also runs COUNT_STEPS steps from fresh values, each step moving them by ~1e-4 (fp16:
# ~1e-2), with a few steps' rounding allowed, so the kernel is shown to do the steps it is counted for
COUNT_STEPS = 3
COUNT_RTOL = {"fp64": 1e-12, "fp32": 1e-6, "fp16": 0.0}


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


def fp16_reference(a0, x, y, steps):
    """fp16 chains stepped exactly: each fma in float64 (a product of two halves is exact there, and
    so is adding y at this probe's magnitudes), rounded once to fp16, for `steps` steps or until no
    value changes (a rounded fma with x > 0 is monotone, so a chain that stops moving stays)."""
    a = np.asarray(a0, dtype=np.float16)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    for _ in range(steps):
        step = (a.astype(np.float64) * x + y).astype(np.float16)
        if np.array_equal(step, a):
            break
        a = step
    return a


def fp16_kernel(cpu, n):
    """The fp16 chains of `n` accumulators as kernel(acc, x, y, iters), like fma_kernel's."""
    lanes = simd_bits(cpu) // 16
    chains = cpu_half.parallel_chains(n // lanes, lanes)

    def kernel(acc, x, y, iters):
        chains(acc.view(np.uint16), np.array([x, y], np.float16).view(np.uint16), iters)

    return kernel


def peak_workload(cpu, dtype, threads, iters_per_call):
    """Workload for the FMA kernel; `flops_per_call` = 2 x accumulators x threads x iterations."""
    t = DTYPES[dtype]
    n = accumulators(cpu, dtype)
    kernel = fp16_kernel(cpu, n) if dtype == "fp16" else fma_kernel(n)
    x, y = t(X[dtype]), t(Y[dtype])
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

    def expected(a0, steps):
        if dtype == "fp16":
            return fp16_reference(a0, x, y, steps).astype(np.float64)
        return closed_form(a0, float(x), float(y), steps)

    def mismatch(values, a0, steps, rtol, what):
        ref, got = expected(a0, steps), values.astype(np.float64)
        bad = ~(np.abs(got - ref) <= rtol * np.abs(ref))
        if bad.any():
            i = tuple(int(k) for k in np.unravel_index(int(np.argmax(bad)), bad.shape))
            return f"fma accumulator {i} is {float(got[i])!r}, expected {float(ref[i])!r} after {steps} steps{what}"
        return None

    def check():
        error = mismatch(acc, state["a0"], state["iters"], RTOL[dtype], "")
        if error:
            return error
        fresh = rng.uniform(0.5, 1.5, size=acc.shape).astype(t)
        a0 = fresh.astype(np.float64)
        kernel(fresh, x, y, COUNT_STEPS)
        return mismatch(fresh, a0, COUNT_STEPS, COUNT_RTOL[dtype], " of a fresh run (a step skipped or repeated)")

    return Workload(name=f"fma_{dtype}", run=run, check=check, poison=poison, threads=threads, dtype=dtype,
                    flops_per_call=2 * n * threads * iters_per_call,
                    info={"accumulators_per_thread": int(n), "simd_bits": simd_bits(cpu),
                          "iterations_per_call": int(iters_per_call)})


def iterations(ctx):
    return 100 if ctx.tiny else 20_000


def workload_or_reason(ctx, dtype):
    """(the dtype's FMA workload, None), or (None, why this CPU leaves it out): fp16 where its cores
    have no native fp16 FMAs or its chains do not compile (llvmlite's JIT builds them, not Numba's:
    a failure there must not lose fp64 and fp32)."""
    if dtype != "fp16":
        return peak_workload(ctx.cpu, dtype, ctx.threads, iterations(ctx)), None
    reason = cpu_half.native_fp16_reason(ctx.cpu)
    if reason:
        return None, reason
    try:
        return peak_workload(ctx.cpu, dtype, ctx.threads, iterations(ctx)), None
    except Exception as e:  # noqa: BLE001
        return None, f"the fp16 chains did not compile here: {type(e).__name__}: {first_line(e)}"


def run_peak(ctx):
    """devices.cpu.peak_flops.<dtype>: best and median FLOP/s of the FMA chains, the dtypes timed in
    interleaved rounds (Context.measure_interleaved: a host spell that runs both vCPUs on one core
    then slows each dtype alike, and rounds outside it keep their best samples); fp16 where the
    cores have it natively, else peak_flops_unsupported says why."""
    workloads, unsupported = {}, []
    for dtype in ctx.of_dtypes(DTYPES):
        workload, reason = workload_or_reason(ctx, dtype)
        if reason:
            unsupported.append({"dtype": dtype, "reason": reason})
        else:
            workloads[dtype] = workload
    out = {}
    if workloads:
        ctx.progress(f"peak {', '.join(workloads)} FMA in interleaved rounds, {ctx.threads} threads")
        out = dict(zip(workloads, ctx.measure_interleaved(list(workloads.values()))))
    return {"peak_flops": out, **({"peak_flops_unsupported": unsupported} if unsupported else {})}
