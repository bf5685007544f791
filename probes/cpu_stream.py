"""CPU memory probes with Numba: STREAM kernels, a read-only sum, and the cache-hierarchy sweep.

Bytes are counted as STREAM counts them (each array read or written once per call);
write-allocate traffic of the written array is not counted.
"""

import math

import numpy as np
from numba import njit, prange, uint64

from harness.machine import last_level_cache_bytes
from harness.stats import level_entry
from harness.workload import Workload, set_cpu_threads
from probes import cpu_read

DTYPES = {"fp64": np.float64, "fp32": np.float32}
ALIGN_BYTES = 64
READ_OFFSET_ELEMS = 16  # alternate reps start one cache line (or two) later, so no rep can be hoisted
CHECK_CHUNK = 1 << 22
READ_BLOCK = 1 << 16
SCALAR = 0.4  # BabelStream's: a round of copy, scale, add, triad leaves `a` at 0.96x, so interleaved rounds stay finite
# STREAM's rule is arrays >= 4x the last-level cache. On the Zen 5 KVM guest (32 MiB of L3 visible)
# reads at 128 MiB still ran ~20% faster than at 256 MiB-1 GiB (caches of the host that the guest
# does not see), so DRAM probes also use at least DRAM_MIN_BYTES.
DRAM_FACTOR = 4
DRAM_MIN_BYTES = 256 << 20
RTOL = {"fp64": 1e-12, "fp32": 1e-5}
STREAM_WEIGHTS = {"copy": 2, "scale": 2, "add": 3, "triad": 3, "read": 1}  # arrays touched per element
HIERARCHY_TUNING_ROUNDS = 3  # interleaved calls of each read kernel at a working set beyond L2
HIERARCHY_REPEATS = 5  # samples per working set: the sweep has ~35, and neighbouring points corroborate each other
COUNTING = "STREAM: each array counted once per call; write-allocate traffic not counted"


def aligned_empty(n, dtype):
    """An uninitialised array of n elements whose data starts on a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n * itemsize + ALIGN_BYTES, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN_BYTES
    return raw[start:start + n * itemsize].view(dtype)


_POOL = {}  # name -> a raw 64-byte-aligned buffer, kept for the whole process
POOL_SLACK_BYTES = 1 << 20  # so a slightly longer request (read offsets) reuses a buffer
# The pool's buffers: the STREAM kernels use all three; the hierarchy and the decode probe's reads
# beside its points the first; the decode sweep's K and V the second and third.
POOL = ("pool a", "pool b", "pool c")


def pooled_arrays(n, dtype, names):
    """One 64-byte-aligned array of n elements (contents undefined) per name, on buffers this
    process keeps: the stream, thread-sweep, hierarchy and decode probes reuse them, because paging
    in fresh memory is slow on a VM (3 x 1.9 GiB took 8.8 s on the Xeon VM, refilling them 0.3 s).
    A name's array is valid until the next request for that name; callers fill it before use."""
    need = n * np.dtype(dtype).itemsize
    reserve_pool({name: need for name in names})
    return [_POOL[name][:need].view(dtype) for name in names]


def reserve_pool(bytes_by_name):
    """Grow each named buffer to at least its bytes, untouched (pages arrive at first write).
    Reserving a run's largest requests up front pages each buffer in once: a buffer that grows
    is replaced by fresh memory, which costs 1.5-2.5 s per GiB on the Xeon VM (refilled: 0.1 s)."""
    for name, need in bytes_by_name.items():
        if name not in _POOL or _POOL[name].nbytes < need:
            _POOL.pop(name, None)  # freed before its replacement is allocated
            _POOL[name] = aligned_empty(need + POOL_SLACK_BYTES, np.uint8)


@njit(parallel=True, cache=True)
def fill_random(a, seed):
    """Pseudo-random values in [0.5, 1.5), written in parallel so pages land by first touch."""
    for i in prange(a.shape[0]):
        x = np.uint64(i) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)
        x ^= x >> np.uint64(29)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(32)
        a[i] = 0.5 + np.float64(x >> np.uint64(40)) / 16777216.0


@njit(parallel=True, cache=True)
def k_copy(a, c):
    """c = a with the plain stores scale, add and triad use. `+ 0.0` (kept without fast-math, as it
    turns -0.0 into +0.0; the data are positive) stops LLVM from making the loop a memcpy call,
    whose non-temporal stores skip the write-allocate read: on the model 207 Xeon VM that copy ran
    at 1.80x scale's rate, as a loop 1.00x."""
    for i in prange(a.shape[0]):
        c[i] = a[i] + 0.0


@njit(parallel=True, cache=True)
def k_scale(b, c, s):
    for i in prange(b.shape[0]):
        b[i] = s * c[i]


@njit(parallel=True, cache=True)
def k_add(a, b, c):
    for i in prange(a.shape[0]):
        c[i] = a[i] + b[i]


@njit(parallel=True, cache=True)
def k_triad(a, b, c, s):
    for i in prange(a.shape[0]):
        a[i] = b[i] + s * c[i]


@njit(fastmath=True, cache=True)
def _chunk_sum(c):
    """Vectorised sum of a contiguous slice in its own dtype (fastmath lets LLVM reassociate)."""
    s = c.dtype.type(0)
    for i in range(c.shape[0]):
        s += c[i]
    return s


@njit(fastmath=True, cache=True)
def _pair_sum(a, lo, n, offset):
    """Two reps of an L1-sized chunk in one loop: a[lo:lo+n] and a[lo+offset:lo+offset+n] summed at
    once, in `a`'s dtype (twice the vector sums in flight, one reduction for both; unsigned indices
    leave out the negative-index check, so LLVM vectorises it). On the model 207 Xeon VM, 2 threads,
    7 interleaved rounds: 1.17-1.24x the rate of summing each chunk's halves at once (4-23 KiB a
    thread), which was itself 1.37-1.56x one stream's: one stream's sums are bound by the adds'
    latency and each rep's reduction, not by L1's loads. Only L1-sized reads use it: beyond L1 the
    second rep's lines would come from L1, brought by the first."""
    s0 = a.dtype.type(0)
    s1 = a.dtype.type(0)
    start, shifted = uint64(lo), uint64(lo + offset)
    for i in range(uint64(0), uint64(n)):
        s0 += a[start + i]
        s1 += a[shifted + i]
    return s0 + s1


@njit(parallel=True, fastmath=True, cache=True)
def k_read(a, out, per_thread, reps, streams=1):
    """out[t] = sum over reps of thread t's chunk; odd reps read it shifted by READ_OFFSET_ELEMS.

    Summing slices (not indexing `a` inside the prange body) is what lets LLVM vectorise the loop;
    blocks of READ_BLOCK elements are summed in their dtype and accumulated in fp64. With `streams`
    2 (L1-sized chunks, under READ_BLOCK) each pair of reps is summed in one loop: _pair_sum.
    """
    for t in prange(out.shape[0]):
        total = 0.0
        first = 0
        if streams == 2:
            for _ in range(reps // 2):
                total += _pair_sum(a, t * per_thread, per_thread, READ_OFFSET_ELEMS)
            first = reps - reps % 2
        for r in range(first, reps):
            lo = t * per_thread + (r & 1) * READ_OFFSET_ELEMS
            hi = lo + per_thread
            for b in range(lo, hi, READ_BLOCK):
                total += _chunk_sum(a[b:min(b + READ_BLOCK, hi)])
        out[t] = total


def exact_sum(x):
    """float64 sum of x: float64 sums of CHECK_CHUNK-element blocks (pairwise within numpy's
    buffers: relative error ~1e-13 at most for these positive values), added exactly (math.fsum)."""
    return math.fsum(float(np.sum(x[i:i + CHECK_CHUNK], dtype=np.float64)) for i in range(0, x.shape[0], CHECK_CHUNK))


def read_reference(a, threads, per_thread, reps):
    """float64 per-thread totals that k_read must return."""
    out = np.empty(threads)
    for t in range(threads):
        lo = t * per_thread
        s0 = exact_sum(a[lo:lo + per_thread])
        s1 = exact_sum(a[lo + READ_OFFSET_ELEMS:lo + READ_OFFSET_ELEMS + per_thread]) if reps > 1 else 0.0
        out[t] = (reps + 1) // 2 * s0 + reps // 2 * s1
    return out


def check_close(got, ref, rtol, what):
    """None if got matches ref (float64) to rtol everywhere, else a message about the first miss."""
    got64 = np.asarray(got, dtype=np.float64)
    bad = ~(np.abs(got64 - ref) <= rtol * np.abs(ref))  # NaN poison counts as bad
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return f"{what}: element {i} is {float(got64[i])!r}, expected {float(ref[i])!r} (rtol {rtol:g})"


REFERENCES = ("copy", "scale", "add", "triad")  # first_mismatch's `kind`: the index of the kernel's name


@njit(parallel=True, cache=True)
def first_mismatch(out, x, y, s, kind, rtol):
    """Index of the first element of `out` farther than rtol (relative) from its float64 reference,
    or out.shape[0] if none: kind 0 copy (x), 1 scale (s*x), 2 add (x+y), 3 triad (x + s*y).
    NaN (the poison) never matches. In parallel, without array-sized temporaries."""
    n = out.shape[0]
    first = n
    for blk in prange((n + CHECK_CHUNK - 1) // CHECK_CHUNK):
        for i in range(blk * CHECK_CHUNK, min(n, (blk + 1) * CHECK_CHUNK)):
            xi = np.float64(x[i])
            if kind == 0:
                ref = xi
            elif kind == 1:
                ref = s * xi
            elif kind == 2:
                ref = xi + np.float64(y[i])
            else:
                ref = xi + s * np.float64(y[i])
            if not abs(np.float64(out[i]) - ref) <= rtol * abs(ref):
                first = min(first, i)
                break
    return first


def check_elementwise(out, x, y, s, name, rtol, what):
    """None if a STREAM kernel's output matches its float64 reference (`name` in REFERENCES), else
    a message about the first element that does not."""
    kind = REFERENCES.index(name)
    i = first_mismatch(out, x, y, float(s), kind, rtol)
    if i == out.shape[0]:
        return None
    xi, yi = float(x[i]), float(y[i])
    ref = (xi, float(s) * xi, xi + yi, xi + float(s) * yi)[kind]
    return f"{what}: element {i} is {float(out[i])!r}, expected {ref!r} (rtol {rtol:g})"


def dram_bytes(llc_bytes):
    """The working set that measures DRAM: DRAM_FACTOR x the last-level cache, at least DRAM_MIN_BYTES."""
    return max(DRAM_FACTOR * llc_bytes, DRAM_MIN_BYTES)


def stream_elements(ctx, dtype):
    """Elements per array: dram_bytes of the last-level cache, within half the free memory."""
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    if ctx.tiny:
        return 1 << 15, []
    want = dram_bytes(last_level_cache_bytes(ctx.cpu))
    available = ctx.cpu.get("memory_available_bytes") or 4 * want
    fits = int(0.5 * available / 3)
    if want > fits:
        return fits // itemsize, [f"arrays are {fits} bytes, under {DRAM_FACTOR}x the last-level cache: not enough free memory"]
    return want // itemsize, []


def stream_buffers(ctx):
    """{pool buffer: bytes} the STREAM kernels (and the thread sweep's triad) will ask for."""
    need = max(stream_elements(ctx, d)[0] * np.dtype(DTYPES[d]).itemsize for d in ctx.of_dtypes(DTYPES))
    return {name: need for name in POOL}


def stream_workloads(ctx, dtype, n, threads, kernels=tuple(STREAM_WEIGHTS)):
    """The kernels named (all five by default) over three arrays, in STREAM's order so each reads
    valid inputs, run once each or in interleaved rounds (the read sums `a`, which triad writes: its
    reference is taken when it is checked); the read's kernel is tuned only where it is asked for."""
    t = DTYPES[dtype]
    a, b, c = pooled_arrays(n, t, POOL)
    for seed, x in enumerate((a, b, c)):
        fill_random(x, seed + 1)
    s = t(SCALAR)
    rtol = RTOL[dtype]
    per = n // threads

    def loop(fn, *args):
        def run(loops):
            for _ in range(loops):
                fn(*args)
        return run

    def poison(x):
        return lambda: x.fill(np.nan)

    read = dram_read_workload(ctx, a, dtype, per * threads * a.itemsize, threads) if "read" in kernels else None
    specs = {
        "copy": (loop(k_copy, a, c), poison(c), lambda: check_elementwise(c, a, a, s, "copy", rtol, "copy c")),
        "scale": (loop(k_scale, b, c, s), poison(b), lambda: check_elementwise(b, c, c, s, "scale", rtol, "scale b")),
        "add": (loop(k_add, a, b, c), poison(c), lambda: check_elementwise(c, a, b, s, "add", rtol, "add c")),
        "triad": (loop(k_triad, a, b, c, s), poison(a), lambda: check_elementwise(a, b, c, s, "triad", rtol, "triad a")),
        **({"read": (read.run, read.poison, read.check)} if read else {}),
    }
    itemsize = a.itemsize
    for name, (run, poison_fn, check) in ((k, specs[k]) for k in kernels):
        weight = STREAM_WEIGHTS[name]
        counted = per * threads if name == "read" else n
        tuned = {"kernel_config": read.info["kernel_config"]} if name == "read" else {}
        yield Workload(name=name, run=run, check=check, poison=poison_fn, threads=threads, dtype=dtype,
                       bytes_per_call=weight * counted * itemsize, working_set_bytes=weight * n * itemsize,
                       info={"elements": int(n), "bytes_counted": COUNTING, **tuned})


def run_stream(ctx):
    """devices.cpu.bandwidth (fp64) and bandwidth_fp32: best and median per kernel, the five kernels
    timed in interleaved rounds (Context.measure_interleaved), so a drift of the memory's speed
    slows each alike instead of whichever ran while it lasted."""
    section = {}
    for dtype in ctx.of_dtypes(DTYPES):
        key = "bandwidth" if dtype == "fp64" else f"bandwidth_{dtype}"
        n, warnings = stream_elements(ctx, dtype)
        workloads = list(stream_workloads(ctx, dtype, n, ctx.threads))
        ctx.progress(f"stream {dtype}: {', '.join(w.name for w in workloads)} in interleaved rounds, "
                     f"{n * np.dtype(DTYPES[dtype]).itemsize / 2**20:.0f} MiB per array")
        section[key] = {}
        for w, rec in zip(workloads, ctx.measure_interleaved(workloads)):
            rec["warnings"] = warnings + rec["warnings"]
            section[key][w.name] = rec
    return section


def cache_capacities(cpu, threads):
    """[(level name, bytes reachable by `threads` threads)] from L1 upward."""
    out = []
    for c in cpu.get("caches") or []:
        reachable = min(c["instances"], math.ceil(threads / max(1, c["shared_by_cpus"])))
        out.append((f"L{c['level']}", c["size_bytes"] * reachable))
    return out


def level_of(working_set, capacities):
    """The smallest memory level that holds `working_set` bytes; 'unknown' where no cache is known
    (sysfs shows none: run.flag_unknown_caches), where a point may lie in any of them."""
    if not capacities:
        return "unknown"
    for name, cap in capacities:
        if working_set <= cap:
            return name
    return "DRAM"


def hierarchy_sizes(ctx, itemsize, threads):
    """Working sets from 8 KiB per thread to the DRAM working set (dram_bytes), geometric steps,
    the last at the DRAM working set itself."""
    grain = threads * 64 * itemsize
    lo = 8192 * threads
    hi = (1 << 20) if ctx.tiny else dram_bytes(last_level_cache_bytes(ctx.cpu))
    step = 2.0 if (ctx.quick or ctx.tiny) else math.sqrt(2.0)
    sizes, w = [], float(lo)
    while w <= hi * 1.0001:
        sizes.append(max(grain, int(w) // grain * grain))
        w *= step
    return sorted(set(sizes + [max(grain, hi // grain * grain)]))


def read_workload(a, dtype, working_set, threads, bytes_per_call_target, streams=1, setting=cpu_read.NUMBA):
    """The read kernel `setting` names (k_read, or a cpu_read kernel: one stream) over the first
    `working_set` bytes of `a`, repeated in-kernel to amortise the launch, each thread's chunk summed
    in `streams` (1 or 2) streams."""
    itemsize = a.itemsize
    per = working_set // itemsize // threads
    reps = max(1, bytes_per_call_target // (per * threads * itemsize))
    out = np.empty(threads)
    reference = []  # the kernel never writes `a`: its float64 sums (~2 s for 256 MiB) are taken once, at the
    # first check (in the stream probe's rounds, after the last triad wrote `a`)

    if setting == cpu_read.NUMBA:
        def run(loops):
            for _ in range(loops):
                k_read(a, out, per, reps, streams)
    else:
        kernel = cpu_read.read_kernel(a.dtype, setting, READ_BLOCK, READ_OFFSET_ELEMS)

        def run(loops):
            for _ in range(loops):
                kernel(a, out, per, reps)

    def check():
        if not reference:
            reference.append(read_reference(a, threads, per, reps))
        return check_close(out, reference[0], RTOL[dtype], "read sum")

    return Workload(
        name="read", run=run, poison=lambda: out.fill(np.nan), threads=threads, dtype=dtype, check=check,
        bytes_per_call=per * threads * itemsize * reps, working_set_bytes=per * threads * itemsize,
        info={"reps_per_call": int(reps), "read_streams": streams})


def dram_read_workload(ctx, a, dtype, working_set, threads):
    """read_workload over a DRAM-sized working set of `a` (one pass a call) with the read kernel that
    reads DRAM fastest here (cpu_read.tune_dram_read), whose record is its info's kernel_config."""
    set_cpu_threads(threads)
    config = cpu_read.tune_dram_read(ctx.cpu, a.dtype, threads, one_call(a, dtype, working_set, threads, working_set),
                                     ctx.clock, ctx.progress)
    w = read_workload(a, dtype, working_set, threads, working_set, setting=config["read_kernel"])
    w.info["kernel_config"] = config
    return w


def one_call(a, dtype, working_set, threads, bytes_per_call_target):
    """f(setting): one call of read_workload's kernel at that setting."""
    return lambda setting: read_workload(a, dtype, working_set, threads, bytes_per_call_target,
                                         setting=setting).run(1)


def beyond_l2_read_workload(ctx, a, dtype, working_set, target, dram_setting):
    """read_workload over a working set beyond L2 with the faster of k_read and the kernel tuned for
    DRAM (cpu_read), in HIERARCHY_TUNING_ROUNDS interleaved calls: which is faster changes across
    a large L3 (model 167 Xeon VM: the same at 16-64 MiB, the DRAM kernel's 256-bit loads 1.2x at 256 MiB)."""
    names = list(dict.fromkeys([cpu_read.NUMBA, dram_setting]))
    config = cpu_read.fastest(names, one_call(a, dtype, working_set, ctx.threads, target), ctx.clock,
                              "at this working set", rounds=HIERARCHY_TUNING_ROUNDS)
    w = read_workload(a, dtype, working_set, ctx.threads, target, setting=config["read_kernel"])
    w.info["kernel_config"] = config
    return w


def summarize_levels(points, capacities):
    """Bandwidth per level from the points well inside it: L1 under half its size, L(k) between
    twice L(k-1) and half L(k), DRAM within 1% of dram_bytes or above (sweep sizes are rounded to whole
    vectors per thread). `bytes_per_s` is the median
    of those points' best samples (one lucky point cannot set a level); `max_bytes_per_s` the best."""
    levels = {}
    bounds = [(name, 2 * prev_cap, cap / 2) for (name, cap), prev_cap in
              zip(capacities, [0] + [c for _, c in capacities[:-1]])]
    if capacities:
        bounds.append(("DRAM", 0.99 * dram_bytes(capacities[-1][1]), math.inf))
    for name, lo, hi in bounds:
        levels[name] = level_entry([p for p in points if lo <= p["working_set_bytes"] <= hi],
                                   working_set_bytes_range=[lo, None if math.isinf(hi) else hi])
    return levels


def hierarchy_buffers(ctx):
    """{pool buffer: bytes} the hierarchy sweep will ask for."""
    itemsize = np.dtype(DTYPES[ctx.of_dtypes(DTYPES)[0]]).itemsize
    return {POOL[0]: hierarchy_sizes(ctx, itemsize, ctx.threads)[-1] + ctx.threads * READ_OFFSET_ELEMS * itemsize}


def run_hierarchy(ctx):
    """devices.cpu.hierarchy (one point per working set) and hierarchy_levels (best per level),
    for the first of ctx.dtypes it has (fp64 by default); the points timed in interleaved rounds
    (Context.measure_interleaved), so a drift of the host's memory speed mid-sweep slows every
    level alike instead of bending the sweep where it struck."""
    dtype = ctx.of_dtypes(DTYPES)[0]
    t = DTYPES[dtype]
    itemsize = np.dtype(t).itemsize
    sizes = hierarchy_sizes(ctx, itemsize, ctx.threads)
    (a,) = pooled_arrays(sizes[-1] // itemsize + ctx.threads * READ_OFFSET_ELEMS, t, POOL[:1])
    fill_random(a, 7)
    capacities = cache_capacities(ctx.cpu, ctx.threads)
    target = (1 << 20) if ctx.tiny else (256 << 20)
    workloads = []
    dram = None  # the read kernel tuned for DRAM, once a point lies beyond L2
    l1_bytes = dict(capacities).get("L1", 0)
    for i, ws in enumerate(sizes):
        streams = 2 if ws <= l1_bytes else 1  # see _pair_sum
        if level_of(ws, capacities) in ("L1", "L2"):
            workloads.append(read_workload(a, dtype, ws, ctx.threads, target, streams))
            continue
        ctx.progress(f"hierarchy {dtype} read kernel for working set {ws / 1024:.0f} KiB ({i + 1}/{len(sizes)})")
        if dram is None:  # tuned on the sweep's largest set: it is DRAM-sized
            dram = dram_read_workload(ctx, a, dtype, sizes[-1], ctx.threads).info["kernel_config"]["read_kernel"]
        workloads.append(beyond_l2_read_workload(ctx, a, dtype, ws, target, dram))
    ctx.progress(f"hierarchy {dtype} read, {len(sizes)} working sets of {sizes[0] / 1024:.0f} KiB to "
                 f"{sizes[-1] / 2**20:.0f} MiB in interleaved rounds")
    points = ctx.measure_interleaved(workloads, repeats=HIERARCHY_REPEATS)
    for rec in points:
        rec["level"] = level_of(rec["working_set_bytes"], capacities)
    return {"hierarchy": points, "hierarchy_levels": summarize_levels(points, capacities)}
