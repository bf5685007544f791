"""CPU matmul peaks through torch (oneDNN/MKL): fp32, bf16, fp16 and int8, the rates the CPU's
matrix units give LLM layers (AVX-512 BF16 and VNNI, AMX where the CPU has it), which the fp32 FMA
chains of probes/cpu_peak.py cannot show. Each product is checked on a few rows against float64.

On the 2-vCPU Zen 5 VM (`harness probe matmul`, best samples): fp32 177 GFLOP/s (the FMA chains
reach 450), bf16 770, int8 1.3 TOP/s, fp16 2.3 (torch has no fast fp16 path there): a dtype whose
trial product projects past SLOW_CALL_S at the full size is timed at the trial size, and says so.
"""

from harness.errors import first_line
from harness.timing import timed_s
from harness.workload import Workload
from probes.torch_matmul import accepted, operands, poison, product_error, via

DTYPES = ("fp32", "bf16", "fp16", "int8")
SIZE, TRIAL_SIZE, TINY_SIZE = 2048, 256, 64
SLOW_CALL_S = 1.0  # a full-size product slower than this is timed at TRIAL_SIZE
TRIAL_CALLS = 5  # trial products timed: the fastest decides
ONE_THREAD_CALLS = 2  # products timed on one thread, after an untimed one: the reference a parallel rate is held to


def matmul_workload(dtype, n, threads):
    """torch's n x n x n product on `threads` threads, 2 n^3 operations a call."""
    import torch

    a, b, op, out = operands(dtype, n)
    torch.set_num_threads(threads)  # here, not in the timed calls

    def run(loops):
        for _ in range(loops):
            op()

    return Workload(name=f"matmul_{dtype}", run=run, check=lambda: product_error(dtype, a, b, out),
                    poison=lambda: poison(out), threads=threads, dtype=dtype,
                    device="cpu", flops_per_call=2 * n ** 3, info={"n": n, "via": via(dtype)})


def fastest_call_s(op, calls, clock):
    """Seconds of the fastest of `calls` calls of op(), after one untimed call (the first sets
    oneDNN up)."""
    op()
    return min(timed_s(lambda loops: op(), 1, clock) for _ in range(calls))


def size_for(dtype, threads, clock):
    """SIZE, or TRIAL_SIZE where the fastest of TRIAL_CALLS trial products says a full-size one would
    take over SLOW_CALL_S (one call is not enough: on the Zen 4 VM a single trial call of bf16, after
    the warm-up, projected past 1 s, and bf16 was timed at n=256 as having no fast path, at 357
    GFLOP/s against the 409-422 it reaches at n=2048)."""
    import torch

    torch.set_num_threads(threads)
    op = operands(dtype, TRIAL_SIZE)[2]
    seconds = fastest_call_s(op, TRIAL_CALLS, clock)
    return TRIAL_SIZE if seconds * (SIZE / TRIAL_SIZE) ** 3 > SLOW_CALL_S else SIZE


def one_thread_flops(dtype, n, threads, clock):
    """Operations per second of the fastest of ONE_THREAD_CALLS n-wide products on one thread
    (torch's threads set back to `threads` after): the rate a parallel product is held to
    (validation.flag_parallel_scaling)."""
    import torch

    op = operands(dtype, n)[2]
    torch.set_num_threads(1)
    try:
        seconds = fastest_call_s(op, ONE_THREAD_CALLS, clock)
    finally:
        torch.set_num_threads(threads)
    return 2 * n ** 3 / seconds


def run_matmul(ctx):
    """devices.cpu.tensor_flops.<dtype> (the matmul peaks, as a GPU's are named: the dtypes timed in
    interleaved rounds, as the FMA peaks are, so a host spell slows each alike) and the dtypes torch
    refused, with its reason."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return {"tensor_flops": {"reason": f"torch is not installed ({e})"}}
    sizes, refused = {}, []
    for dtype in DTYPES:
        if not ctx.tiny:
            ctx.progress(f"matmul {dtype} (torch): trial products to choose its size, {ctx.threads} threads")
        try:
            sizes[dtype] = TINY_SIZE if ctx.tiny else size_for(dtype, ctx.threads, ctx.clock)
        except RuntimeError as e:  # this torch build has no such product on this CPU
            refused.append({"dtype": dtype, "reason": first_line(e)})
    workloads, refused_now = accepted([matmul_workload(dtype, n, ctx.threads) for dtype, n in sizes.items()])
    refused = sorted(refused + refused_now, key=lambda r: DTYPES.index(r["dtype"]))
    out = {}
    if workloads:
        ctx.progress(f"matmul {', '.join(w.dtype for w in workloads)} (torch) in interleaved rounds, {ctx.threads} threads")
        out = {w.dtype: rec for w, rec in zip(workloads, ctx.measure_interleaved(workloads))}
    for dtype, rec in out.items():
        n = sizes[dtype]
        if n == TRIAL_SIZE:
            rec["warnings"].append(f"timed at n={n}: a {SIZE}-wide product would take over {SLOW_CALL_S:g} s "
                                   "(torch has no fast path for it on this CPU)")
        if ctx.threads > 1 and rec.get("flops_per_s"):
            rec["one_thread_flops_per_s"] = one_thread_flops(dtype, n, ctx.threads, ctx.clock)
    return {"tensor_flops": out, **({"tensor_flops_unsupported": refused} if refused else {})}
