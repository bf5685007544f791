"""GPU memory probe with CuPy: STREAM copy/scale/add/triad and a read-only sum, fp64 and fp32,
16-byte vector accesses, arrays at least 4x the L2; outputs checked on the device after timing."""

import numpy as np

from harness.gpus import memory_name
from harness.workload import Workload
from probes.cpu_stream import COUNTING, DTYPES, RTOL, SCALAR, STREAM_WEIGHTS
from probes.gpu_common import THREADS, cuda_path, grid_blocks, load_module, nvtx, stream_vectors

LANES = {"fp32": 4, "fp64": 2}  # elements per 16-byte vector
KERNEL_FILES = (cuda_path("stream"),)


def device_check(out, ref, rtol, what):
    """None if out matches the float64 reference on the device, else the first mismatch."""
    import cupy as cp

    bad = ~(cp.abs(out.astype(cp.float64) - ref) <= rtol * cp.abs(ref))
    if not bool(bad.any()):
        return None
    i = int(cp.argmax(bad))
    return f"{what}: element {i} is {float(out[i])!r}, expected {float(ref[i])!r}"


def stream_workloads(gpu, dtype, n_vectors):
    """The five kernels on three device arrays, in STREAM's order."""
    import cupy as cp

    mod = load_module("stream")
    t = cp.float32 if dtype == "fp32" else cp.float64
    n = n_vectors * LANES[dtype]
    rng = cp.random.default_rng(1)
    a, b, c = (rng.random(n, dtype=cp.float64).astype(t) + t(0.5) for _ in range(3))
    blocks = grid_blocks(n_vectors, gpu["sm_count"])
    partial = cp.empty(blocks, cp.float64)
    f64 = lambda x: x.astype(cp.float64)  # noqa: E731
    rtol = RTOL[dtype]

    def launch(name, *args):
        kernel = mod.get_function(f"{name}_{dtype}")

        def run(loops):
            for _ in range(loops):
                kernel((blocks,), (THREADS,), args)

        return run

    s = np.float64(SCALAR)
    n_arg = np.int64(n_vectors)
    specs = {
        "copy": (launch("copy", a, c, n_arg), c, lambda: device_check(c, f64(a), rtol, "copy c")),
        "scale": (launch("scale", b, c, s, n_arg), b, lambda: device_check(b, SCALAR * f64(c), rtol, "scale b")),
        "add": (launch("add", a, b, c, n_arg), c, lambda: device_check(c, f64(a) + f64(b), rtol, "add c")),
        "triad": (launch("triad", a, b, c, s, n_arg), a,
                  lambda: device_check(a, f64(b) + SCALAR * f64(c), rtol, "triad a")),
        "read": (launch("read", a, partial, n_arg), partial,
                 lambda: None if abs(float(partial.sum()) / float(f64(a).sum()) - 1) <= 1e-9
                 else f"read sum {float(partial.sum())!r} != {float(f64(a).sum())!r}"),
    }
    itemsize = np.dtype(t).itemsize
    for name, (run, out, check) in specs.items():
        yield Workload(name=name, run=nvtx(name, run), check=check, poison=lambda out=out: out.fill(np.nan), threads=THREADS * blocks,
                       dtype=dtype, device="gpu", bytes_per_call=STREAM_WEIGHTS[name] * n * itemsize,
                       working_set_bytes=STREAM_WEIGHTS[name] * n * itemsize,
                       info={"elements": int(n), "blocks": int(blocks), "bytes_counted": COUNTING})


def run_stream(ctx):
    """devices.gpuN.bandwidth (fp64) and bandwidth_fp32, the kernels timed in interleaved rounds
    (BabelStream's loop: Context.measure_interleaved)."""
    import cupy as cp

    free, _ = cp.cuda.runtime.memGetInfo()
    section = {}
    for dtype in ctx.of_dtypes(DTYPES):
        n_vec = 1 << 16 if ctx.tiny else stream_vectors(ctx.gpu["l2_bytes"], free)
        key = "bandwidth" if dtype == "fp64" else f"bandwidth_{dtype}"
        section[key] = {}
        short = not ctx.tiny and n_vec * 16 < 4 * ctx.gpu["l2_bytes"]
        workloads = list(stream_workloads(ctx.gpu, dtype, n_vec))
        ctx.progress(f"gpu{ctx.gpu['index']} stream {dtype}: {', '.join(w.name for w in workloads)} in interleaved rounds")
        for w, rec in zip(workloads, ctx.measure_interleaved(workloads)):
            section[key][w.name] = rec
            if short:  # free memory could not hold three arrays of 4x the L2
                rec["warnings"].append(f"arrays of {n_vec * 16 >> 20} MiB, under 4x the L2 ({ctx.gpu['l2_bytes'] >> 20} MiB): "
                                       f"only {free >> 20} MiB was free, so the L2 serves part of each pass")
    return section


L1_SLICES_BYTES = (16 << 10, 32 << 10, 48 << 10, 64 << 10)  # per SM: deep inside any L1 (96 to 256 KiB)
READ_KERNELS = {"L2": "read_reps_fp32", "L1": "read_reps_l1_fp32"}  # L2 only (__ldcg), or through L1
# blocks of 256 threads per SM: through L1, two (16 warps, each thread 2 to 8 vectors a pass, so the
# unrolled loop runs rather than one load and the pass's overhead per thread)
READ_BLOCKS_PER_SM = {"L2": 8, "L1": 2}
# bytes one launch reads. An estimate, not yet measured on a GPU: with about a microsecond between
# back-to-back kernels, 64 MiB would lose about 10% at an H100's L2 rate (~7 TB/s) and a third at
# its L1 rate (~30 TB/s); these sizes take about 80 us a launch there, about 1%. Tests: 8 MiB
LAUNCH_BYTES = {"L2": 512 << 20, "L1": 2 << 30}
L1_FLUSH_REPS = 64  # stream.cu's: passes an fp32 lane sums before it joins the fp64 total


def read_workload(gpu, n_vectors, buf, bytes_per_launch=None, through="L2"):
    """A read over the first n_vectors float4 of `buf`, repeated in-kernel so each launch reads about
    bytes_per_launch (default LAUNCH_BYTES; n_vectors even): through L2 only (read_reps_fp32) or
    through L1 (read_reps_l1_fp32, whose fp32 lane sums are checked to their rounding bound)."""
    import cupy as cp

    kernel = load_module("stream").get_function(READ_KERNELS[through])
    blocks = grid_blocks(n_vectors, gpu["sm_count"], blocks_per_sm=READ_BLOCKS_PER_SM[through])
    partial = cp.empty(blocks, cp.float64)
    a = buf[: n_vectors * 4]
    reps = max(1, (bytes_per_launch or LAUNCH_BYTES[through]) // a.nbytes)
    args = (a, partial, np.int64(n_vectors), np.int32(reps))
    # an fp32 lane adds up to L1_FLUSH_REPS x ceil(n / grid threads) values in [0.5, 1.5) before it
    # is flushed: each add is off by at most half an ulp of a sum below 1.5 x that count
    terms = min(reps, L1_FLUSH_REPS) * -(-n_vectors // (blocks * THREADS))
    rtol = 1e-9 if through == "L2" else max(1e-9, 1.5 * terms * 2.0 ** -23)

    def run(loops):
        for _ in range(loops):
            kernel((blocks,), (THREADS,), args)

    def check():
        want = reps * float(a.astype(cp.float64).sum())  # the swapped passes read the same elements
        got = float(partial.sum())
        return None if abs(got / want - 1) <= rtol else f"read sum {got!r} != {want!r} (rtol {rtol:.1e})"

    return Workload(name="read", run=nvtx("read", run), check=check, poison=lambda: partial.fill(np.nan),
                    threads=THREADS * blocks, dtype="fp32", device="gpu", bytes_per_call=a.nbytes * reps,
                    working_set_bytes=a.nbytes, info={"blocks": int(blocks), "reps_per_call": int(reps),
                                                      "kernel": READ_KERNELS[through]})


def run_hierarchy(ctx):
    """devices.gpuN.hierarchy and hierarchy_levels, the points timed in interleaved rounds (as the
    CPU's): L1 from reads whose slice per SM sits deep in L1
    (16 to 64 KiB per SM, through L1); L2 and device memory (HBM or GDDR) from reads that bypass L1,
    1 MiB to dram_bytes of the L2 (without the bypass every block would re-read its own slice from its
    SM's L1, and the L2 points would measure L1 up to about SMs x 256 KiB)."""
    import cupy as cp

    from harness.stats import level_entry
    from probes.cpu_stream import dram_bytes, summarize_levels

    memory = memory_name(ctx.gpu)
    l2, sms = ctx.gpu["l2_bytes"], ctx.gpu["sm_count"]
    top = (4 << 20) if ctx.tiny else dram_bytes(l2)
    sizes, ws = [], 1 << 20
    while ws <= top:
        sizes.append(ws)
        ws *= 2
    l1_sizes = [sms * per_sm for per_sm in L1_SLICES_BYTES]
    buf = cp.random.default_rng(3).random(max(top, *l1_sizes) // 4, dtype=cp.float32) + cp.float32(0.5)
    launch = (8 << 20) if ctx.tiny else None
    workloads = ([read_workload(ctx.gpu, ws // 16, buf, launch, through="L1") for ws in l1_sizes]
                 + [read_workload(ctx.gpu, ws // 16, buf, launch) for ws in sizes])
    ctx.progress(f"gpu{ctx.gpu['index']} hierarchy read, {len(l1_sizes)} working sets through L1 and "
                 f"{len(sizes)} of {sizes[0] >> 20} to {sizes[-1] >> 20} MiB in interleaved rounds")
    recs = ctx.measure_interleaved(workloads)
    l1_points, points = recs[:len(l1_sizes)], recs[len(l1_sizes):]
    for per_sm, rec in zip(L1_SLICES_BYTES, l1_points):
        rec.update(level="L1", bytes_per_sm=per_sm)
    for ws, rec in zip(sizes, points):
        rec["level"] = "L2" if ws <= l2 else memory
    levels = {"L1": level_entry(l1_points, bytes_per_sm_range=[L1_SLICES_BYTES[0], L1_SLICES_BYTES[-1]]),
              **summarize_levels(points, [("L2", l2)])}
    levels[memory] = levels.pop("DRAM")
    return {"hierarchy": l1_points + points, "hierarchy_levels": levels}
