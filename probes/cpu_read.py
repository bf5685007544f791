"""Read kernels of a chosen vector width and number of sums in flight, in LLVM IR JIT-compiled by
llvmlite, and the choice, by timing on this machine, of the one that reads DRAM fastest.

How fast a sum streams from DRAM depends on how its loop issues the loads, not only on the memory.
On the model 167 Xeon VM (2 GiB, two threads, medians of five interleaved calls in one process):
Numba's k_read, which LLVM compiles to four sums of 512-bit vectors once the harness lifts its
256-bit preference (harness/__init__.py: the FMA peak needs the full width), read 31.4 GB/s; one sum
of 256-bit vectors 35.7, four 30.7, eight 33.0; one sum of 128-bit vectors 35.0; k_read compiled for
256-bit vectors (four sums, in a process without the harness's setting) 36.0 against 31.3 compiled
for 512 (four processes each, alternated). Where the two threads' chunks start made no difference.
In L2 the wide loads are the faster (k_read: 345-363 GB/s at 512 bits, 284-320 at 256), so only the
DRAM-sized reads are tuned: the stream `read`, the hierarchy's DRAM points and the decode probe's
read beside each point. Numba compiles for one vector width per process, so these kernels hold
theirs in their IR; llvmlite is Numba's own code generator, no extra dependency.
"""

import copy
import ctypes
import functools

import numpy as np

from harness.timing import TUNING_ROUNDS, fastest_setting
from probes.llvm_jit import compile_ir

ACCUMULATORS = (1, 2, 4, 8)  # independent vector sums in flight: one, or as LLVM interleaves a reduction
NUMBA = "numba"  # the setting that runs cpu_stream.k_read, vectorised as Numba compiles it
_TUNED = {}  # (dtype, threads) -> the kernel_config record chosen in this process


def vector_widths(cpu):
    """The vector widths (bits) the CPU's SIMD flags say it loads, widest first."""
    simd = set(cpu.get("simd") or [])
    widths = [512] if "avx512f" in simd else []
    widths += [256] if simd & {"avx", "avx2"} else []
    if simd & {"sse4_2", "avx", "asimd"}:
        widths.append(128)
    return widths


def settings(cpu):
    """The read kernels tune_dram_read times: Numba's, then one per vector width and count of sums."""
    return [NUMBA] + [setting_name(bits, acc) for bits in vector_widths(cpu) for acc in ACCUMULATORS]


def setting_name(bits, accumulators):
    """'256-bit x1': `accumulators` sums of `bits`-bit vectors in flight."""
    return f"{bits}-bit x{accumulators}"


def parse_setting(name):
    """(bits, accumulators) of a setting_name."""
    bits, acc = name.split("-bit x")
    return int(bits), int(acc)


def sum_ir(scalar, lanes, accumulators):
    """LLVM IR of `scalar @vsum(ptr %p, i64 %n)`: the sum of p[0:n] in `accumulators` <lanes x scalar>
    vectors (one load each per step), added together, reduced across lanes, then the tail one by one."""
    vec, step = f"<{lanes} x {scalar}>", lanes * accumulators
    acc = range(accumulators)
    lines = [f"define {scalar} @vsum(ptr %p, i64 %n) {{", "entry:", f"  %nv = udiv i64 %n, {step}",
             "  %any = icmp ugt i64 %nv, 0", "  br i1 %any, label %loop, label %reduce", "loop:",
             "  %i = phi i64 [0, %entry], [%inext, %loop]"]
    lines += [f"  %a{j} = phi {vec} [zeroinitializer, %entry], [%s{j}, %loop]" for j in acc]
    lines.append(f"  %base = mul i64 %i, {step}")
    for j in acc:
        lines += [f"  %o{j} = add i64 %base, {j * lanes}", f"  %q{j} = getelementptr {scalar}, ptr %p, i64 %o{j}",
                  f"  %v{j} = load {vec}, ptr %q{j}, align 4", f"  %s{j} = fadd {vec} %a{j}, %v{j}"]
    lines += ["  %inext = add i64 %i, 1", "  %more = icmp ult i64 %inext, %nv",
              "  br i1 %more, label %loop, label %reduce", "reduce:"]
    lines += [f"  %r{j} = phi {vec} [zeroinitializer, %entry], [%s{j}, %loop]" for j in acc]
    total = "%r0"
    for j in acc[1:]:
        lines.append(f"  %t{j} = fadd {vec} {total}, %r{j}")
        total = f"%t{j}"
    lines += [f"  %h = call reassoc {scalar} @llvm.vector.reduce.fadd.v{lanes}{tag(scalar)}({scalar} 0.0, {vec} {total})",
              f"  %done = mul i64 %nv, {step}", "  %left = icmp ult i64 %done, %n",
              "  br i1 %left, label %tail, label %exit", "tail:",
              "  %k = phi i64 [%done, %reduce], [%knext, %tail]",
              f"  %x = phi {scalar} [%h, %reduce], [%xnext, %tail]",
              f"  %qk = getelementptr {scalar}, ptr %p, i64 %k", f"  %e = load {scalar}, ptr %qk, align 4",
              f"  %xnext = fadd {scalar} %x, %e", "  %knext = add i64 %k, 1", "  %again = icmp ult i64 %knext, %n",
              "  br i1 %again, label %tail, label %exit", "exit:",
              f"  %res = phi {scalar} [%h, %reduce], [%xnext, %tail]", f"  ret {scalar} %res", "}",
              f"declare {scalar} @llvm.vector.reduce.fadd.v{lanes}{tag(scalar)}({scalar}, {vec})"]
    return "\n".join(lines)


def tag(scalar):
    """LLVM's type suffix of a scalar float type."""
    return {"double": "f64", "float": "f32"}[scalar]


@functools.lru_cache(maxsize=None)
def compile_sum(dtype, bits, accumulators):
    """(vsum as a ctypes function (address, count) -> sum, its assembly) for numpy `dtype` (float64 or
    float32) in `accumulators` sums of `bits`-bit vectors (llvm_jit.compile_ir)."""
    scalar, ctype = {np.dtype(np.float64): ("double", ctypes.c_double),
                     np.dtype(np.float32): ("float", ctypes.c_float)}[np.dtype(dtype)]
    ir = sum_ir(scalar, bits // (8 * np.dtype(dtype).itemsize), accumulators)
    return compile_ir(ir, "vsum", ctypes.CFUNCTYPE(ctype, ctypes.c_void_p, ctypes.c_int64))


@functools.lru_cache(maxsize=None)
def read_kernel(dtype, setting, block, offset):
    """A Numba kernel (a, out, per_thread, reps) with cpu_stream.k_read's work at one stream: out[t] is
    the sum over reps of thread t's chunk, odd reps shifted by `offset` elements, summed in blocks of
    `block` elements in the array's dtype (compile_sum's function at `setting`) and accumulated in float64."""
    from numba import njit, prange

    vsum, _ = compile_sum(np.dtype(dtype), *parse_setting(setting))
    itemsize = np.dtype(dtype).itemsize

    @njit(parallel=True)
    def kernel(a, out, per_thread, reps):
        base = a.ctypes.data
        for t in prange(out.shape[0]):
            total = 0.0
            for r in range(reps):
                lo = t * per_thread + (r & 1) * offset
                hi = lo + per_thread
                for b in range(lo, hi, block):
                    total += vsum(base + b * itemsize, min(block, hi - b))
            out[t] = total

    return kernel


def tune_dram_read(cpu, dtype, threads, run, clock, progress=lambda message: None):
    """The kernel_config record of the read kernel setting that reads DRAM fastest (fastest), chosen
    once per dtype and thread count in a process (said to `progress` when it is): run(setting) is one
    call of it over a DRAM-sized array."""
    key = (np.dtype(dtype).str, threads)
    if key not in _TUNED:
        names = settings(cpu)
        progress(f"read {np.dtype(dtype).name}: timing {len(names)} read kernels from DRAM, to keep the fastest")
        _TUNED[key] = fastest(names, run, clock, "from DRAM")
    return copy.deepcopy(_TUNED[key])


def fastest(names, run, clock, where, rounds=TUNING_ROUNDS):
    """The kernel_config record of the fastest of the settings `names`, run(setting) being one call
    (harness.timing.fastest_setting), with every setting's median seconds per call."""
    best, samples = fastest_setting(names, run, clock, rounds)
    return {"read_kernel": best,
            "chosen_by": f"tuned on this machine: fastest median of {rounds} interleaved calls {where}",
            "median_s_per_setting": {name: float(np.median(s)) for name, s in samples.items()},
            "calls_per_setting": {name: len(s) for name, s in samples.items()}}
