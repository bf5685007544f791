"""CPU dot-product peaks: the bf16 and int8 instructions LLM kernels multiply with, in LLVM IR
JIT-compiled by llvmlite (Numba has neither type).

Each thread steps `vectors` independent accumulator vectors `iters` times, one instruction a step:
VDPBF16PS (AVX512-BF16) adds to each fp32 lane the dot product of two bf16 pairs, 4 FLOPs; VPDPBUSD
(AVX512-VNNI, or AVX-VNNI's 256-bit form) adds to each int32 lane the dot product of four u8 x s8
pairs, 8 OPs, as Arm's SDOT (the dot-product extension, asimddp) does of four s8 x s8 pairs. These
are the rates a bf16 or int8 matmul without matrix units (AMX) can reach, and which the fp32 FMA
chains of probes/cpu_peak.py cannot show. Arm's BFDOT is not timed: its sums round to odd (the Arm
ARM's BFDotAdd), where the exact check below holds bf16's lanes by rounding to nearest even.

Checked exactly: int8's sums are integers, so the timed run's accumulators must equal their start
plus the steps counted times the step's sum (modulo 2^32, as the instruction wraps). bf16's steps
add 2^-10 (one pair's product; the other's is 0) to lanes that start on multiples of 2^-10, exact
up to 2^14, where the sum is a tie that rounding to nearest even (the instruction's only mode) keeps
at 2^14: the timed run's lanes must be their start plus the steps, or 2^14 once they reach it. There
a step more or less changes nothing, so a fresh run of three steps (llvm_jit.checked_chains) shows each is taken once.
"""

import ctypes
import functools

import numpy as np

from harness.errors import first_line
from harness.workload import Workload, time_workload
from probes.llvm_jit import chains_ir as llvm_chains_ir
from probes.llvm_jit import chain_iterations, checked_chains, compile_ir, parallel_rows, stepped

DTYPES = ("bf16", "int8")
OPS_PER_LANE = {"bf16": 4, "int8": 8}  # a fp32 lane: 2 bf16 products and their sums; an int32 lane: 4 of int8
# per dtype, widest first: the CPU flag that gives its dot-product instruction, the vector width it then has, the instruction
UNITS = {"bf16": (("avx512_bf16", 512, "vdpbf16ps"),),
         "int8": (("avx512_vnni", 512, "vpdpbusd"), ("avx_vnni", 256, "vpdpbusd"), ("asimddp", 128, "sdot"))}
INTRINSICS = {"vdpbf16ps": "@llvm.x86.avx512bf16.dpbf16ps.{bits}", "vpdpbusd": "@llvm.x86.avx512.vpdpbusd.{bits}",
              "sdot": "@llvm.aarch64.neon.sdot.v4i32.v16i8"}
VECTORS = {512: 16, 256: 12, 128: 24}  # accumulator vectors a thread: enough chains for every pipe (128: Arm's 32 registers)
SIGNATURE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)  # (acc, [x, y], iters)
BF16_STEP = 2.0 ** -10  # the product of x's and y's first halves, 2^-5 each (exact in bf16 and fp32)
BF16_CEILING = 2.0 ** 14  # where a lane's next step is a tie, rounded back to it
INT8_X, INT8_Y = (1, 2, 3, 4), (5, -6, 7, -8)  # u8 (or s8: sdot) and s8: each step adds their dot product, -18
ONE_THREAD_SAMPLES = 3  # the one-thread reference's: its best sample is the rate the peak must scale from


def vector_bits(cpu, dtype):
    """The vector width the CPU's flags give `dtype`'s instruction, or None where they give none."""
    flags = set(cpu.get("simd", []))
    return next((bits for flag, bits, _ in UNITS[dtype] if flag in flags), None)


def instruction(dtype, bits):
    """The instruction `dtype`'s chains step with at `bits` (UNITS: one per width)."""
    return next(name for _, width, name in UNITS[dtype] if width == bits)


def unsupported_reason(cpu, dtype):
    """None where this CPU has `dtype`'s dot-product instruction, else why its peak is not measured."""
    if vector_bits(cpu, dtype):
        return None
    names = " or ".join(dict.fromkeys(name for _, _, name in UNITS[dtype]))
    flags = " or ".join(flag for flag, _, _ in UNITS[dtype])
    arm = "asimd" in set(cpu.get("simd", [])) and dtype == "bf16"
    return f"no {names} among the CPU's flags ({flags})" + (
        "; Arm's BFDOT is not timed: its sums round to odd, where the exact check holds the lanes by rounding to "
        "nearest even" if arm else "")


def dot_left_out():
    """{dtype: why} of the dtypes this machine's CPU cannot run the dot probe for (`harness list`)."""
    from harness.machine import identify_cpu

    cpu = identify_cpu()
    return {d: why for d in DTYPES if (why := unsupported_reason(cpu, d))}


def vector_types(dtype, bits):
    """(accumulator vector type, operand vector type, intrinsic) of LLVM IR for `dtype` at `bits`."""
    lanes, name = bits // 32, instruction(dtype, bits)
    fn = INTRINSICS[name].format(bits=bits)
    if dtype == "bf16":
        return f"<{lanes} x float>", f"<{2 * lanes} x bfloat>", fn
    return f"<{lanes} x i32>", f"<{4 * lanes} x i8>" if name == "sdot" else f"<{lanes} x i32>", fn


def chains_ir(dtype, vectors, bits):
    """LLVM IR of `void chains(ptr acc, ptr xy, i64 iters)`: `vectors` accumulator vectors loaded from
    acc, each stepped `iters` times by the dot-product instruction of the operand vectors x and y
    (xy holds x, then y), in registers, and stored back."""
    acc, src, fn = vector_types(dtype, bits)
    preamble = [f"  %x = load {src}, ptr %xy, align 4", f"  %yp = getelementptr {src}, ptr %xy, i64 1",
                f"  %y = load {src}, ptr %yp, align 4"]
    return llvm_chains_ir(acc, vectors, preamble, f"call {acc} {fn}({acc} {{a}}, {src} %x, {src} %y)",
                          f"declare {acc} {fn}({acc}, {src}, {src})", align=4)


@functools.lru_cache(maxsize=None)
def parallel_chains(dtype, vectors, bits):
    """A Numba kernel(acc rows, xy bytes, iters) running the compiled chains on each row in its own thread."""
    chains, _ = compile_ir(chains_ir(dtype, vectors, bits), "chains", SIGNATURE)
    return parallel_rows(chains)


def bf16_bits(values):
    """float32 values as bf16 bits (their upper halves: exact for the powers of two used here)."""
    return (np.asarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def operands(dtype, bits):
    """x then y as bytes for the chains: bf16 pairs (2^-5, 2^-5) and (2^-5, 0), each step +2^-10;
    int8 INT8_X (u8) and INT8_Y (s8) in every lane, each step their dot product."""
    lanes = bits // 32
    if dtype == "int8":
        return np.concatenate([np.tile(np.array(INT8_X, np.uint8), lanes), np.tile(np.array(INT8_Y, np.int8), lanes).view(np.uint8)])
    half = 2.0 ** -5
    return np.concatenate([np.tile(bf16_bits((half, half)), lanes), np.tile(bf16_bits((half, 0.0)), lanes)]).view(np.uint8)


def expected(dtype, a0, steps):
    """The accumulators after `steps` steps from a0, exactly: int8's int32 lanes wrap modulo 2^32;
    bf16's stop at BF16_CEILING."""
    if dtype == "int8":
        step = sum(x * y for x, y in zip(INT8_X, INT8_Y))
        return ((a0.astype(np.int64) + step * steps + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)
    return stepped(a0, BF16_STEP, BF16_CEILING, steps).astype(np.float32)


def dot_workload(cpu, dtype, threads, iters_per_call):
    """Workload of the dot-product chains; `flops_per_call` = OPS_PER_LANE x lanes x vectors x threads x
    iterations (int8's are integer operations: OP/s)."""
    bits = vector_bits(cpu, dtype)
    name, vectors = instruction(dtype, bits), VECTORS[bits]
    lanes = vectors * bits // 32
    kernel = parallel_chains(dtype, vectors, bits)
    xy = operands(dtype, bits)
    rng = np.random.default_rng(12345)
    acc = np.empty((threads, lanes), np.float32 if dtype == "bf16" else np.int32)
    state = {"a0": None, "iters": 0}

    def fresh():  # bf16: multiples of 2^-10 in [0.5, 1.5), where a step of 2^-10 is exact
        if dtype == "int8":
            return rng.integers(-2 ** 31, 2 ** 31, size=acc.shape, dtype=np.int64).astype(np.int32)
        return (rng.integers(512, 1536, size=acc.shape) * BF16_STEP).astype(np.float32)

    def poison():
        acc[:] = fresh()
        state["a0"], state["iters"] = acc.copy(), 0

    def run(loops):
        kernel(acc, xy, iters_per_call * loops)
        state["iters"] += iters_per_call * loops

    def check():
        return checked_chains(acc, state["a0"], state["iters"], fresh, lambda got, n: kernel(got, xy, n),
                              lambda a0, n: expected(dtype, a0, n), name)

    return Workload(name=f"dot_{dtype}", run=run, check=check, poison=poison, threads=threads, dtype=dtype,
                    flops_per_call=OPS_PER_LANE[dtype] * lanes * threads * iters_per_call,
                    info={"instruction": name, "simd_bits": bits, "accumulators_per_thread": lanes,
                          "iterations_per_call": int(iters_per_call)})


def one_thread_flops(ctx, dtype):
    """`dtype`'s chains on one thread, the best of ONE_THREAD_SAMPLES samples (None where its check
    fails): the rate the parallel peak must scale from (validation.flag_parallel_scaling), timed after
    the rounds, as the matmul probe's is."""
    rec = time_workload(dot_workload(ctx.cpu, dtype, 1, chain_iterations(ctx)), ONE_THREAD_SAMPLES,
                        ctx.min_sample_s, ctx.clock)
    return rec["flops_per_s"]


def run_dot(ctx):
    """devices.cpu.dot_flops.<dtype>: best and median FLOP/s (int8: OP/s) of the dot-product chains,
    the dtypes timed in interleaved rounds (as the FMA peaks are); dot_flops_unsupported says why a
    dtype was left out (no such instruction here, or its chains did not compile)."""
    workloads, unsupported = [], []
    for dtype in ctx.of_dtypes(DTYPES) or DTYPES:  # the profile asks for none by name: all
        reason = unsupported_reason(ctx.cpu, dtype)
        if not reason:
            try:
                workloads.append(dot_workload(ctx.cpu, dtype, ctx.threads, chain_iterations(ctx)))
            except Exception as e:  # noqa: BLE001  (llvmlite's JIT: a failure must not lose the other dtype)
                reason = f"the {dtype} chains did not compile here: {type(e).__name__}: {first_line(e)}"
        if reason:
            unsupported.append({"dtype": dtype, "reason": reason})
    out = {}
    if workloads:
        ctx.progress(f"dot-product peaks {', '.join(w.dtype for w in workloads)} in interleaved rounds, {ctx.threads} threads")
        out = {w.dtype: rec for w, rec in zip(workloads, ctx.measure_interleaved(workloads))}
    for dtype, rec in out.items():
        if ctx.threads > 1 and rec.get("flops_per_s") and (one := one_thread_flops(ctx, dtype)):
            rec["one_thread_flops_per_s"] = one
    return {"dot_flops": out, **({"dot_flops_unsupported": unsupported} if unsupported else {})}
