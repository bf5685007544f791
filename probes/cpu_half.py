"""fp16 FMA chains on the CPU, in LLVM IR JIT-compiled by llvmlite: Numba has no CPU float16.

Where the cores do fp16 arithmetic natively (x86 AVX512-FP16: vfmadd*ph on 32 halves; Arm's
Advanced SIMD FP16: fmla on 8), `vectors` independent chains of `a = fma(a, x, y)` on
<lanes x half> vectors run `iters` steps, one llvm.fma intrinsic each, compiled for this host's
CPU and features. Without native fp16 LLVM would widen every step to fp32 and back: a rate of
conversions, not of fp16 FMAs, so the probe does not run there (native_fp16_reason).

llvmlite is Numba's own code generator (a dependency of numba, not an extra one); Numba's
parallel loop calls the compiled function through ctypes, one call per thread.
"""

import ctypes
import functools

from harness.cpu_peaks import NATIVE_FP16_FLAGS, native_fp16
from probes.llvm_jit import chains_ir as llvm_chains_ir
from probes.llvm_jit import compile_ir, parallel_rows

SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)  # (acc, [x, y], iters)


def native_fp16_reason(cpu):
    """None where the CPU flags name native fp16 vector FMAs, else why the fp16 peak is not measured."""
    if native_fp16(set(cpu.get("simd", []))):
        return None
    return (f"no native fp16 vector arithmetic among the CPU's flags ({' or '.join(NATIVE_FP16_FLAGS)}): "
            "fp16 FMAs would be widened to fp32 and back, a rate of conversions, not of fp16 arithmetic")


def fp16_left_out():
    """`harness list`'s phrase for this machine's CPU where it cannot run the fp16 chains, else None."""
    from harness.machine import identify_cpu

    reason = native_fp16_reason(identify_cpu())
    return f"fp16 left out: {reason}" if reason else None


def chains_ir(vectors, lanes):
    """LLVM IR of `void chains(ptr acc, ptr xy, i64 iters)`: `vectors` <lanes x half> accumulators
    loaded from acc, each stepped `iters` times as fma(a, x, y) in registers, stored back."""
    vec = f"<{lanes} x half>"
    fma = f"@llvm.fma.v{lanes}f16"
    preamble = ["  %x1 = load half, ptr %xy", "  %yp = getelementptr half, ptr %xy, i64 1", "  %y1 = load half, ptr %yp"]
    for name in ("x", "y"):
        preamble += [f"  %{name}i = insertelement {vec} poison, half %{name}1, i64 0",
                     f"  %{name} = shufflevector {vec} %{name}i, {vec} poison, <{lanes} x i32> zeroinitializer"]
    return llvm_chains_ir(vec, vectors, preamble, f"call {vec} {fma}({vec} {{a}}, {vec} %x, {vec} %y)",
                          f"declare {vec} {fma}({vec}, {vec}, {vec})", align=2)


@functools.lru_cache(maxsize=None)
def compile_chains(vectors, lanes):
    """(the compiled chains as a ctypes function, its assembly) for this host's CPU and features;
    the execution engine that owns the code is kept alive with them."""
    return compile_ir(chains_ir(vectors, lanes), "chains", SIGNATURE)


@functools.lru_cache(maxsize=None)
def parallel_chains(vectors, lanes):
    """A Numba kernel that runs the chains on each row of a uint16 [threads, vectors * lanes] array
    (fp16 bits: Numba cannot hold float16) in its own thread, `iters` steps from xy's [x, y]."""
    return parallel_rows(compile_chains(vectors, lanes)[0])
