"""CPU peak FLOP/s: independent FMA chains in LLVM IR, JIT-compiled by llvmlite (Numba's own code
generator) for this host's CPU and features, checked exactly.

Each thread steps `vectors` accumulator vectors, enough independent chains to cover FMA latency on
every FMA pipe (16 registers' worth with AVX-512, 12 with AVX2, 24 with Arm's Advanced SIMD: a
Neoverse V1/V2 core needs 16, four pipes of 4-cycle FMLA, of its 32 registers), `iters` times as
a = fma(x, y, a). The accumulator is the addend: the form every ISA's vector FMA writes in place
(x86's vfmadd231, Arm's FMLA). In the other form, a = a * x + y, Arm's FMLA must first copy y into
each result's register: LLVM then emits about as many register moves as FMAs, which share the FP
pipes (tests/test_llvm_targets.py compiles every chain for other CPUs and counts the loop's
instructions). Numba cannot write this form: with x and y loop-invariant its compiler would hoist
x * y out of the loop and leave adds; an fma intrinsic stays one instruction, and a CPU without
vector FMAs (x86 before Haswell, or a VM that hides the flag) would call libm's fma for each step,
so it has no FMA peak. fp16 runs where the cores have native fp16 FMAs (AVX512-FP16, Arm's FP16):
elsewhere LLVM would widen every step to fp32 and back, a rate of conversions.

Checked exactly: x * y is 2^STEP_EXPONENT and the accumulators start on its multiples in [0.5, 1.5),
so each step adds it exactly up to the dtype's ceiling, the power of two where the next step is a
tie that rounding to nearest even keeps there (fp16 reaches it in ~2^10 steps, fp32 in ~2^24, fp64
never). The timed run's lanes must be their start plus its steps, or the ceiling; there a step more
or less changes nothing, so a fresh run of three steps (llvm_jit.checked_chains) shows each is taken once.
"""

import ctypes
import functools

import numpy as np

from harness.cpu_peaks import NATIVE_FP16_FLAGS, native_fp16
from harness.errors import first_line
from harness.workload import Workload
from probes.llvm_jit import chains_ir as llvm_chains_ir
from probes.llvm_jit import chain_iterations, checked_chains, compile_ir, parallel_rows, stepped

DTYPES = {"fp64": np.float64, "fp32": np.float32, "fp16": np.float16}
IR_TYPES = {"fp64": ("double", "f64"), "fp32": ("float", "f32"), "fp16": ("half", "f16")}
STEP_EXPONENT = {"fp64": -40, "fp32": -20, "fp16": -10}  # x = y = 2^(exponent / 2), exact in each dtype
X86_ARCHES = ("x86_64", "amd64", "i386", "i686")  # platform.machine() of x86, where FMA3 is a flag (Haswell on)
SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)  # (acc, [x, y], iters)


def simd_bits(cpu):
    flags = set(cpu.get("simd", []))
    return 512 if "avx512f" in flags else (256 if "avx2" in flags or "avx" in flags else 128)


def chain_vectors(cpu):
    """Accumulator vectors per thread: enough chains in flight for every FMA pipe, within the registers."""
    return 16 if simd_bits(cpu) == 512 else 24 if "asimd" in set(cpu.get("simd", [])) else 12


def accumulators(cpu, dtype):
    """Accumulators per thread: vectors in flight x lanes per vector."""
    return chain_vectors(cpu) * simd_bits(cpu) // (8 * np.dtype(DTYPES[dtype]).itemsize)


def unsupported_reason(cpu, dtype):
    """None where this CPU runs `dtype`'s FMA chains natively, else why its peak is not measured."""
    flags = set(cpu.get("simd", []))
    x86 = str(cpu.get("arch", "")).lower() in X86_ARCHES or bool(flags & {"sse4_2", "avx", "avx2"})
    if x86 and "fma" not in flags:  # Arm's Advanced SIMD, POWER's VSX, RISC-V's F all have FMAs
        return ("no FMA among the x86 CPU's flags (fma: Haswell and later; a VM may hide it): each step would call "
                "libm's fma, a rate of calls, not of the FMA units")
    if dtype == "fp16" and not native_fp16(flags):
        return (f"no native fp16 vector arithmetic among the CPU's flags ({' or '.join(NATIVE_FP16_FLAGS)}): "
                "fp16 FMAs would be widened to fp32 and back, a rate of conversions, not of fp16 arithmetic")
    return None


def peak_left_out():
    """{dtype: why} of the dtypes this machine's CPU cannot run the FMA chains of (`harness list`)."""
    from harness.machine import identify_cpu

    cpu = identify_cpu()
    return {d: why for d in DTYPES if (why := unsupported_reason(cpu, d))}


def ceiling(dtype):
    """The power of two where `dtype`'s chains stop: its step is half an ulp there."""
    return 2.0 ** (np.finfo(DTYPES[dtype]).nmant + 1 + STEP_EXPONENT[dtype])


def chains_ir(dtype, vectors, lanes):
    """LLVM IR of `void chains(ptr acc, ptr xy, i64 iters)`: `vectors` <lanes x dtype> accumulators
    loaded from acc, each stepped `iters` times as fma(x, y, a) in registers (x and y: the two
    scalars at xy, in every lane), stored back."""
    scalar, tag = IR_TYPES[dtype]
    vec, fma = f"<{lanes} x {scalar}>", f"@llvm.fma.v{lanes}{tag}"
    preamble = [f"  %x1 = load {scalar}, ptr %xy", f"  %yp = getelementptr {scalar}, ptr %xy, i64 1",
                f"  %y1 = load {scalar}, ptr %yp"]
    for name in ("x", "y"):
        preamble += [f"  %{name}i = insertelement {vec} poison, {scalar} %{name}1, i64 0",
                     f"  %{name} = shufflevector {vec} %{name}i, {vec} poison, <{lanes} x i32> zeroinitializer"]
    return llvm_chains_ir(vec, vectors, preamble, f"call {vec} {fma}({vec} %x, {vec} %y, {vec} {{a}})",
                          f"declare {vec} {fma}({vec}, {vec}, {vec})", align=np.dtype(DTYPES[dtype]).itemsize)


@functools.lru_cache(maxsize=None)
def parallel_chains(dtype, vectors, lanes):
    """A Numba kernel(acc rows as bytes, xy bytes, iters) running the compiled chains on each row in its own thread."""
    chains, _ = compile_ir(chains_ir(dtype, vectors, lanes), "chains", SIGNATURE)
    return parallel_rows(chains)


def peak_workload(cpu, dtype, threads, iters_per_call):
    """Workload for the FMA chains; `flops_per_call` = 2 x accumulators x threads x iterations."""
    t = DTYPES[dtype]
    vectors, n = chain_vectors(cpu), accumulators(cpu, dtype)
    kernel = parallel_chains(dtype, vectors, n // vectors)
    exponent = STEP_EXPONENT[dtype]
    step, top = 2.0 ** exponent, ceiling(dtype)
    xy = np.full(2, 2.0 ** (exponent / 2), t).view(np.uint8)
    rng = np.random.default_rng(12345)
    acc = np.empty((threads, n), dtype=t)
    state = {"a0": None, "iters": 0}

    def fresh():  # multiples of the step in [0.5, 1.5)
        return (rng.integers(2 ** (-exponent - 1), 3 * 2 ** (-exponent - 1), size=acc.shape) * step).astype(t)

    def poison():
        acc[:] = fresh()
        state["a0"], state["iters"] = acc.copy(), 0

    def run(loops):
        kernel(acc.view(np.uint8), xy, iters_per_call * loops)
        state["iters"] += iters_per_call * loops

    def check():
        return checked_chains(acc, state["a0"], state["iters"], fresh, lambda got, n: kernel(got.view(np.uint8), xy, n),
                              lambda a0, n: stepped(a0, step, top, n).astype(t), "fma")

    return Workload(name=f"fma_{dtype}", run=run, check=check, poison=poison, threads=threads, dtype=dtype,
                    flops_per_call=2 * n * threads * iters_per_call,
                    info={"accumulators_per_thread": int(n), "simd_bits": simd_bits(cpu),
                          "iterations_per_call": int(iters_per_call)})


def workload_or_reason(ctx, dtype):
    """(the dtype's FMA workload, None), or (None, why this CPU leaves it out): an x86 CPU without
    FMA or, for fp16, no native fp16 FMAs, or chains that do not compile (llvmlite's JIT: a failure of one
    dtype's must not lose the others)."""
    reason = unsupported_reason(ctx.cpu, dtype)
    if reason:
        return None, reason
    try:
        return peak_workload(ctx.cpu, dtype, ctx.threads, chain_iterations(ctx)), None
    except Exception as e:  # noqa: BLE001
        return None, f"the {dtype} chains did not compile here: {type(e).__name__}: {first_line(e)}"


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
