"""Decode attention on the CPU: torch (SDPA, naive) and our numba-fused kernel, on fresh random
caches, each output checked against a float64 reference. The model's FLOPs and bytes are declared
per call; predictions and verdicts are derived later (harness/validation.py).
"""

import copy
import dataclasses
import functools
import math
import sys
import time

import numpy as np
from numba import njit, prange

from harness import model
from harness.errors import HarnessError
from harness.machine import last_level_cache_bytes
from harness.timing import TUNING_ROUNDS, calibrate_loops, fastest_setting, timed_s
from harness.validation import LARGE_CACHE_FACTOR
from harness.workload import Workload, set_cpu_threads
from probes import torch_unavailable_reason
from probes.cpu_decode_kernel import (STORAGE, _f32_bits, _f32_to_fp16_bits, chunk_length, decode_kernel, kernel_configs,
                                      quantised, task_loops, widen)
from probes.cpu_stream import (READ_OFFSET_ELEMS, POOL, aligned_empty, dram_read_workload, fill_random, pooled_arrays,
                               stream_elements)

IMPLS = ("numba-fused", "torch-sdpa", "torch-naive")
DTYPES = {"numba-fused": ("fp32", "bf16", "fp16", "int8"), "torch-sdpa": ("fp32", "bf16", "fp16"),
          "torch-naive": ("fp32", "bf16", "fp16")}
# relative error against the float64 reference (max over heads of max|out - ref| / max|ref|), up to
# TOLERANCE_SEQ_LEN tokens. For random V the output's magnitude shrinks like 1/sqrt(S) while fp32
# rounding in a sum over S tokens does not, so a correct fp32 computation's relative error grows
# like sqrt(S) (torch-naive fp32 at S=262144: 1.27e-5): past it the fp32 and int8 bounds grow so.
# The 16-bit bounds are set by the cache's own rounding, which shrinks with the output.
TOLERANCE = {"fp32": 1e-5, "bf16": 1e-2, "fp16": 1e-2, "int8": 1e-5}
TOLERANCE_SEQ_LEN = 16384


def tolerance(shape):
    """The relative error a correct implementation stays within for this shape's cache."""
    grows = shape.dtype in ("fp32", "int8")
    return TOLERANCE[shape.dtype] * (max(1.0, math.sqrt(shape.seq_len / TOLERANCE_SEQ_LEN)) if grows else 1.0)
Q_AMPLITUDE = 3.0  # q uniform in [-3, 3): scores of order 1, so the softmax is neither flat nor one-hot


@njit(inline="always")
def uniform_value(seed, index):
    """Uniform in [-1, 1) from a hash of (seed, element index), exact in float32: regenerable."""
    x = np.uint64(index) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(32)
    return np.float32(np.float64(x >> np.uint64(40)) / 8388608.0 - 1.0)


@njit(parallel=True, cache=True)
def fill_uniform(a2, seed, first_row):
    """a2[i, j] = uniform_value(seed, (first_row + i) * columns + j)."""
    d = a2.shape[1]
    for i in prange(a2.shape[0]):
        for j in range(d):
            a2[i, j] = uniform_value(seed, (first_row + i) * d + j)


@functools.lru_cache(maxsize=None)
def fill_kernel(kind):
    """fill(store, scales, seed) for one cache dtype: row i of `store` = the original row
    (uniform_value over the row's elements) in the cache dtype: fp32 as is, bf16 rounded to
    nearest even, fp16 by the hardware's conversion (nearest even), int8 as round(x / scale) with
    scale = max|row| / 127 in `scales[i]`."""

    @njit(parallel=True, cache=True)
    def fill(store, scales, seed):
        d = store.shape[1]
        for i in prange(store.shape[0]):
            if kind == "int8":
                m = np.float32(0)
                for j in range(d):
                    m = max(m, abs(uniform_value(seed, i * d + j)))
                scale = max(m, np.float32(1e-30)) / np.float32(127)
                scales[i] = scale
                for j in range(d):
                    store[i, j] = np.int8(min(np.float32(127), max(np.float32(-127), np.rint(uniform_value(seed, i * d + j) / scale))))
            elif kind == "bf16":
                for j in range(d):
                    u = _f32_bits(uniform_value(seed, i * d + j))
                    store[i, j] = np.uint16((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
            elif kind == "fp16":
                for j in range(d):
                    store[i, j] = _f32_to_fp16_bits(uniform_value(seed, i * d + j))
            else:
                for j in range(d):
                    store[i, j] = uniform_value(seed, i * d + j)

    return fill


@njit(inline="always")
def stored_value(a2, scales, row, j):
    """A stored element as float64: widened exactly, or dequantised with its row's scale."""
    x = np.float64(widen(a2[row, j]))
    return x * np.float64(scales[row]) if quantised(a2) else x


# reassociated sums (vectorised dots: 2x faster at long caches) move the float64 result by ~2e-14
@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def reference_kernel(q, k, v, k_scale, v_scale, heads, kv_heads, seq_len, original, k_seed, v_seed, out):
    """float64 softmax(q k^T / sqrt(d)) v for every query row of q (rows [batch, head]), on the
    stored cache (widened or dequantised exactly) or, with `original`, on the values before storage
    rounding (regenerated from the seeds). Cache rows are [batch, kv head, token]; each query row
    reads the K and V of its kv head."""
    d = q.shape[1]
    group = heads // kv_heads
    inv_sqrt_d = 1.0 / np.sqrt(np.float64(d))
    for row in prange(q.shape[0]):
        r0 = ((row // heads) * kv_heads + (row % heads) // group) * seq_len
        scores = np.empty(seq_len)
        for t in range(seq_len):
            r = r0 + t
            s = 0.0
            for j in range(d):
                x = np.float64(uniform_value(k_seed, r * d + j)) if original else stored_value(k, k_scale, r, j)
                s += np.float64(q[row, j]) * x
            scores[t] = s * inv_sqrt_d
        mx = scores.max()
        total = 0.0
        for t in range(seq_len):
            scores[t] = np.exp(scores[t] - mx)
            total += scores[t]
        acc = np.zeros(d)
        for t in range(seq_len):
            r = r0 + t
            w = scores[t]
            for j in range(d):
                acc[j] += w * (np.float64(uniform_value(v_seed, r * d + j)) if original else stored_value(v, v_scale, r, j))
        for j in range(d):
            out[row, j] = acc[j] / total


class DecodeCache:
    """q and a KV cache of one shape filled with fresh random data (seeded), with its reference.
    With `reuse`, K and V live on the second and third of the buffers the process keeps (only one
    such cache at a time): the sweep's points run one after another, and paging in GiBs of fresh
    memory is slow on a VM."""

    def __init__(self, shape, seed, reuse=False):
        s = shape
        self.shape, self.seed = s, seed
        rows = s.batch * s.kv_heads * s.seq_len
        # 64-byte aligned, as the read kernel's arrays and torch's CPU tensors are: a row's vector
        # loads then never straddle two cache lines (measured 1.2-1.5x faster in L2 than 16-byte aligned)
        self.q = aligned_empty(s.batch * s.heads * s.head_dim, np.float32).reshape(s.batch * s.heads, s.head_dim)
        fill_uniform(self.q, seed, 0)
        self.q *= np.float32(Q_AMPLITUDE)
        t = STORAGE[s.dtype]
        k, v = (pooled_arrays(rows * s.head_dim, t, POOL[1:]) if reuse
                else [aligned_empty(rows * s.head_dim, t) for _ in range(2)])
        self.k, self.v = k.reshape(rows, s.head_dim), v.reshape(rows, s.head_dim)
        scaled = s.dtype == "int8"
        self.k_scale = np.empty(rows if scaled else 1, np.float32)
        self.v_scale = np.empty(rows if scaled else 1, np.float32)
        fill = fill_kernel(s.dtype)
        fill(self.k, self.k_scale, self.seeds[0])
        fill(self.v, self.v_scale, self.seeds[1])

    @property
    def seeds(self):
        """The seeds of K's and V's original values."""
        return self.seed + 7919, self.seed + 2 * 7919

    def reference(self):
        """(float64 output on the stored cache, float64 output on the original data), [B*H, D];
        computed once (the cache's data does not change)."""
        if getattr(self, "_reference", None) is None:
            self._reference = self._compute_reference()
        return self._reference

    def _compute_reference(self):
        s = self.shape
        outputs = []
        for original in (False, True):
            out = np.empty((s.batch * s.heads, s.head_dim))
            if original and s.dtype == "fp32":
                out[:] = outputs[0]  # an fp32 cache stores the original values
            else:
                reference_kernel(self.q, self.k, self.v, self.k_scale, self.v_scale, s.heads, s.kv_heads,
                                 s.seq_len, original, *self.seeds, out)
            outputs.append(out)
        return tuple(outputs)


def relative_error(out, ref):
    """Max over heads of max|out - ref| / max|ref| (NaN, as from a poisoned output, is infinite)."""
    out = np.asarray(out, dtype=np.float64).reshape(ref.shape)
    err = np.abs(out - ref).max(axis=1) / np.abs(ref).max(axis=1)
    return float("inf") if not np.all(np.isfinite(err)) else float(err.max())


def cache_footprint_bytes(shape):
    """Bytes the probe allocates for one point: stored K and V, scales, and working buffers."""
    return model.cache_bytes(shape) + 8 * shape.seq_len * shape.head_dim * 4 + (64 << 20)


MEMORY_SHARE = 0.7  # of the available memory one point may take


def memory_refusal(shape, cpu):
    """Why a point's cache and buffers do not fit in the available memory, or None."""
    need = cache_footprint_bytes(shape)
    available = cpu.get("memory_available_bytes") or 0
    if available and need > MEMORY_SHARE * available:
        return (f"seq-len {shape.seq_len} x batch {shape.batch} x kv-heads {shape.kv_heads} needs about "
                f"{need / 2**30:.1f} GiB, more than {MEMORY_SHARE:.0%} of the {available / 2**30:.1f} GiB available")
    return None


def dtype_refusal(impl, dtype):
    """Why `impl` cannot take a `dtype` cache, or None where it can."""
    if dtype not in DTYPES[impl]:
        return f"{impl} does not support {dtype} caches: valid dtypes are {', '.join(DTYPES[impl])}"
    return None


def check_point(impl, shape, cpu, torch_required=True):
    """Clear errors before anything large is allocated (a torch impl without torch too, unless
    `torch_required` is False: `--impl all` then leaves it out, with the reason)."""
    if impl not in IMPLS:
        raise HarnessError(f"unknown decode impl {impl!r}: valid impls are {', '.join(IMPLS)}")
    if refusal := dtype_refusal(impl, shape.dtype):
        raise HarnessError(refusal)
    if shape.window is not None:
        raise HarnessError("the decode probe times the whole cache; give seq-len = the window instead of a window")
    if refusal := memory_refusal(shape, cpu):
        raise HarnessError(refusal)
    if impl.startswith("torch") and torch_required:
        torch_unavailable = torch_reason()
        if torch_unavailable:
            raise HarnessError(f"{impl} cannot run here: {torch_unavailable}")


_TORCH_IMPORTED = {}  # "after_numba_omp": whether Numba's OpenMP threads had started when torch was imported
TORCH_AFTER_NUMBA_OMP = ("torch was imported after Numba's OpenMP threading layer had started, which made its SDPA "
                         "8-15x slower on 2 threads on the Xeon VM: import it first (harness profile and probe do)")


def torch_reason():
    """Import torch: None, or why it cannot be imported. Call it before the process's first Numba
    parallel kernel where torch will run: once Numba's OpenMP layer has started libgomp, torch's
    SDPA on 2 threads took 334 ms instead of 23 ms (H=32, d_h=128, S=16384 fp32, Xeon VM; on 1
    thread 40-45 ms either way; with Numba's workqueue layer 21 ms, but that layer cost Numba's
    short kernels up to 20%)."""
    if "torch" not in sys.modules:
        _TORCH_IMPORTED["after_numba_omp"] = numba_layer() == "omp"
    return torch_unavailable_reason()


def numba_layer():
    """Numba's threading layer, or None before its first parallel kernel has run."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return None


def torch_views(cache):
    """q, K, V as torch tensors [B, H(kv), S|1, D] sharing memory with the numpy cache."""
    import torch

    s = cache.shape
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[s.dtype]

    def as_torch(a):
        if s.dtype == "fp32":
            t = torch.from_numpy(a)
        elif s.dtype == "fp16":
            t = torch.from_numpy(a.view(np.float16))
        else:
            t = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        return t.view(s.batch, s.kv_heads, s.seq_len, s.head_dim)

    q = torch.from_numpy(cache.q).to(dt).view(s.batch, s.heads, 1, s.head_dim)
    return q, as_torch(cache.k), as_torch(cache.v)


def torch_runner(impl, cache, threads):
    """run() for a torch implementation; returns (run, output getter)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    s = cache.shape
    q, k, v = torch_views(cache)
    result = {}
    if impl == "torch-sdpa":
        gqa = {"enable_gqa": True} if s.group > 1 else {}

        def once():
            result["out"] = F.scaled_dot_product_attention(q, k, v, **gqa)
    else:
        qg = q.view(s.batch, s.kv_heads, s.group, s.head_dim)
        scale = 1.0 / math.sqrt(s.head_dim)

        def once():  # softmax in fp32, as the usual eager implementations upcast it
            weights = torch.softmax((qg @ k.transpose(-1, -2)).float() * scale, dim=-1).to(v.dtype)
            result["out"] = weights @ v

    def run(loops):
        with torch.inference_mode():
            for _ in range(loops):
                result["out"] = None  # a fresh output each call: nothing stale can pass the check
                once()

    return run, lambda: result["out"].float().numpy()


# interleaved rounds of every kernel setting; the lowest median time wins. With 3 rounds on a cache
# 1.1x the LLC the Xeon VM once chose prefetch 4 for every longer fp32 cache, 17% slower than none
# at S=32768: caches short of LARGE_CACHE_FACTOR x the LLC are now tuned apart (MEMORY_LEVELS)
TUNING_CACHE_FACTOR = 2  # a longer cache is tuned on its prefix of at least this many last-level caches
MEMORY_LEVELS = ("cache-resident", "just past the last-level cache", "streaming from DRAM")
_TUNED = {}  # (dtype, group, memory level, threads) -> the kernel_config record chosen in this process


def memory_level(shape, llc_bytes):
    """Where a cache lives, for tuning: within the last-level cache, within LARGE_CACHE_FACTOR of it
    (partly cached: a VM's L3 is shared), or beyond (index into MEMORY_LEVELS)."""
    size = model.cache_bytes(shape)
    return 0 if size <= llc_bytes else (1 if size < LARGE_CACHE_FACTOR * llc_bytes else 2)


def tuning_seq_len(shape, llc_bytes):
    """The cache length a point's kernel settings are timed on: its seq_len halved while the cache
    stays >= TUNING_CACHE_FACTOR x the last-level cache (streaming from DRAM either way; the
    longest caches took 3-4 s to tune on the Xeon VM), else its own."""
    s, enough = shape.seq_len, TUNING_CACHE_FACTOR * llc_bytes
    while llc_bytes > 0 and s % 2 == 0 and model.cache_bytes(dataclasses.replace(shape, seq_len=s // 2)) >= enough:
        s //= 2
    return s


def numba_runner(cache, threads, llc_bytes, config=None, clock=time.perf_counter_ns):
    """run() and output getter for numba-fused, and its kernel_config record. The kernel's row
    staging and prefetch distances are tuned on this machine (or given as (stage, ahead, l2_ahead)): the first
    point of each dtype, GQA group and memory level in a process times every setting (on a prefix
    of a long cache: tuning_seq_len) and the following ones reuse its choice."""
    s = cache.shape
    out = np.empty((s.batch * s.heads, s.head_dim), np.float32)

    def runner(stage, ahead, l2_ahead, seq_len=s.seq_len):
        """run(loops) over the first seq_len tokens of every (batch, kv head) cache; only the whole
        cache's output is checked."""
        chunk = chunk_length(s.batch, s.kv_heads, seq_len, threads)
        ks = cache.k[:s.batch * s.kv_heads * seq_len]
        vs = cache.v[:s.batch * s.kv_heads * seq_len]

        def run(loops):
            for _ in range(loops):
                out.fill(np.nan)  # poisoned before every call
                decode_kernel(cache.q, ks, vs, cache.k_scale, cache.v_scale, s.batch, s.heads, s.kv_heads,
                              seq_len, chunk, stage, ahead, l2_ahead, out)
        return run

    level = memory_level(s, llc_bytes)
    key = (s.dtype, s.group, level, threads)
    if config is not None:
        record = {**config_record(config), "chosen_by": "given"}
    elif key in _TUNED:
        record = _TUNED[key]
    else:
        record = _TUNED[key] = tune(runner, s, tuning_seq_len(s, llc_bytes) if level == 2 else s.seq_len, level, clock)
    return runner(*record_config(record)), (lambda: out), copy.deepcopy(record)


def tune(runner, shape, seq_len, level, clock):
    """Time every kernel setting over the first seq_len tokens of this cache in interleaved rounds
    (harness.timing.fastest_setting); the kernel_config record of the fastest (median), with every
    setting's median seconds per call and how many calls it was timed."""
    configs = kernel_configs(shape.dtype)
    runs = {c: runner(*c, seq_len=seq_len) for c in configs}
    best, samples = fastest_setting(configs, lambda c: runs[c](1), clock)
    return {**config_record(best),
            "chosen_by": (f"tuned on this machine: fastest median of {TUNING_ROUNDS} interleaved calls at S={seq_len}, "
                          f"B={shape.batch}, H_kv={shape.kv_heads} ({MEMORY_LEVELS[level]})"),
            "median_s_per_setting": {config_name(c): float(np.median(samples[c])) for c in configs},
            "calls_per_setting": {config_name(c): len(samples[c]) for c in configs}}


def config_record(config):
    """A (stage, ahead, l2_ahead) kernel setting as the kernel_config record's fields."""
    stage, ahead, l2_ahead = config
    return {"stage_rows_in_l1": stage, "prefetch_rows_ahead": ahead, "prefetch_l2_rows_ahead": l2_ahead}


def record_config(record):
    """The (stage, ahead, l2_ahead) setting a kernel_config record names."""
    return record["stage_rows_in_l1"], record["prefetch_rows_ahead"], record["prefetch_l2_rows_ahead"]


def config_name(config):
    """A kernel setting in words: 'direct, prefetch 16, L2 128'."""
    stage, ahead, l2_ahead = config
    return f"{'staged' if stage else 'direct'}, prefetch {ahead}, L2 {l2_ahead}"


def check_output(cache, out, info, what):
    """Compare `out` with the cache's float64 reference (int8 against the dequantised cache, the others
    against the original data), recording rel_error, reference, tolerance and storage_error (what the
    cache dtype itself costs) in `info`; the error, or None."""
    s = cache.shape
    on_stored, on_original = cache.reference()
    err = relative_error(out, on_stored if s.dtype == "int8" else on_original)
    info["rel_error"] = err
    info["reference"] = "float64 on the dequantised cache" if s.dtype == "int8" else "float64 on the original data"
    info["tolerance"] = bound = tolerance(s)
    info["storage_error"] = relative_error(on_stored, on_original)
    return None if err <= bound else f"{what} {s.dtype}: relative error {err:.3g} exceeds {bound:g}"


def decode_workload(impl, shape, cpu, threads, seed, reuse=False):
    """A Workload for one point, its output checked against the float64 reference after timing
    (`reuse`: the cache on the process's kept buffers; one such workload at a time)."""
    check_point(impl, shape, cpu)
    cache = DecodeCache(shape, seed, reuse)
    info = {"impl": impl, "batch": shape.batch, "heads": shape.heads, "kv_heads": shape.kv_heads,
            "head_dim": shape.head_dim, "seq_len": shape.seq_len, "seed": seed}
    if impl == "numba-fused":
        run, output, info["kernel_config"] = numba_runner(cache, threads, last_level_cache_bytes(cpu))
    else:
        run, output = torch_runner(impl, cache, threads)
    return Workload(name=impl, run=run, check=lambda: check_output(cache, output(), info, impl), poison=lambda: None,
                    threads=threads, dtype=shape.dtype, bytes_per_call=model.decode_bytes(shape),
                    flops_per_call=model.attention_flops(shape), working_set_bytes=model.cache_bytes(shape), info=info)


def measure_point(ctx, impl, shape, seed, between=None):
    """One sweep point as a profile record (time_s is the median: decode is a latency probe;
    `between` is called right before each sample)."""
    w = decode_workload(impl, shape, ctx.cpu, ctx.threads, seed, reuse=True)
    rec = ctx.measure(w, between)
    rec.update(w.info)  # filled in by the check
    if impl.startswith("torch") and _TORCH_IMPORTED.get("after_numba_omp"):
        rec["warnings"].append(TORCH_AFTER_NUMBA_OMP)
    rec["time_s"] = rec["median_time_s"]
    rec["model"] = model.record_figures(shape)
    return rec


def sweep(ctx):
    """(impl, shape) points of the profile's decode sweep: seq_len across the cache hierarchy,
    dtypes, GQA group 4, batch 8; --quick keeps the comparisons, --full widens them."""
    if ctx.tiny:
        h, d, lens, big = 4, 32, [16, 67], 67
    else:
        h, d = 32, 128
        llc = last_level_cache_bytes(ctx.cpu)
        # the large points: even the int8 cache (1 byte per element) is >= 4x the last-level cache
        big = max(4096, 1 << math.ceil(math.log2(4 * llc / (2 * h * d))))
        # ... and its fp32 cache within memory: where a large reported LLC meets little memory, the
        # int8 points then fall under 4x the LLC (validation counts only what is from DRAM)
        while big > 4096 and memory_refusal(
                model.DecodeShape(seq_len=big, heads=h, kv_heads=h, head_dim=d, dtype="fp32"), ctx.cpu):
            big //= 2
        lens = [max(64, big // 64), big // 16, big // 4, big]
        if ctx.full:
            lens.append(4 * big)
        elif ctx.quick:
            lens = [big // 16, big]

    def shape(dtype="fp32", seq_len=big, kv_heads=h, batch=1):
        return model.DecodeShape(seq_len=seq_len, heads=h, kv_heads=kv_heads, head_dim=d, dtype=dtype, batch=batch)

    # torch runs up to a quarter of the longest cache (still >= 4x the last-level cache in fp32), all of
    # it with --full; its SDPA read 0.5-2 GB/s on the Xeon VM (1-1.5 s a call at a quarter), so its
    # 16-bit and GQA points stop at a sixteenth there
    torch_len = big if ctx.full else big // 4
    sdpa_len = big if ctx.full else big // 16
    torch_impls = ["torch-sdpa"] + (["torch-naive"] if not ctx.quick else [])  # left out where torch is not
    points = [("numba-fused", shape(seq_len=s)) for s in lens]
    sdpa_lens = [torch_len] if ctx.quick else [s for s in lens if s <= torch_len]
    points += [("torch-sdpa", shape(seq_len=s)) for s in sdpa_lens]
    points += [(impl, shape(seq_len=torch_len)) for impl in torch_impls if impl != "torch-sdpa"]
    # --quick keeps int8 (the quantisation effect) and skips the 16-bit kernels: each costs ~5 s to compile
    points += [("numba-fused", shape(dt)) for dt in (("int8",) if ctx.quick else ("bf16", "fp16", "int8"))]
    if not ctx.quick:  # torch's 16-bit caches: bf16 (fp16 too with --full: its SDPA took 2.5 s a call at S=65536 there)
        points += [(impl, shape(dt, seq_len=sdpa_len if impl == "torch-sdpa" else torch_len))
                   for impl in torch_impls for dt in (("bf16", "fp16") if ctx.full else ("bf16",))]
    groups = (2, 4, 8) if ctx.full else (4,)
    points += [("numba-fused", shape(kv_heads=h // g)) for g in groups]
    points += [(impl, shape(kv_heads=h // 4, seq_len=sdpa_len)) for impl in torch_impls[:1]]
    points += [("numba-fused", shape(seq_len=big // 8, batch=8))]
    # a 16-bit cache at group 4 is the common LLM's decode (Llama 3 8B: H=32, H_kv=8, bf16), and its
    # kernel differs from fp32's (four heads share each widened row): at 4x the tokens, the bytes of
    # the group-1 point, so it is read from DRAM too
    gqa_dtypes = ("bf16", "fp16", "int8") if ctx.full else () if ctx.quick else ("bf16",)
    points += [("numba-fused", shape(dt, kv_heads=h // 4, seq_len=4 * big)) for dt in gqa_dtypes]
    return points


READ_SAMPLE_S = 0.01  # seconds of DRAM reads timed right before each sample of a large decode point
IN_CORE_L2_SHARE = 0.5  # of one L2: the in-core task's K and V rows, leaving room for its scores and output
IN_CORE_REPEATS = 7  # samples of the in-core task (under a second at the profile's sample length)


def l2_bytes(cpu):
    """The share of one L2 cache a thread has to itself (its size over the CPUs that share it), or None
    where none is reported."""
    l2 = next((c for c in cpu.get("caches") or [] if c.get("level") == 2), None)
    return l2["size_bytes"] // max(1, l2.get("shared_by_cpus") or 1) if l2 else None


def in_core_workload(shape, config, cpu, threads, seed):
    """A Workload running the numba-fused kernel's tasks on `threads` threads at once, one each, every
    task over its own KV head's rows sized to half a thread's L2, with the point's kernel setting,
    checked against the float64 reference; None where the CPU reports no L2. Its rate is the kernel's
    own compute ceiling on those threads: what its loops (widening, dot products, softmax, weighted
    sums) do per second with no memory to wait for, every core busy as in the point."""
    l2 = l2_bytes(cpu)
    if not l2:
        return None
    per_token = 2 * (shape.head_dim * np.dtype(STORAGE[shape.dtype]).itemsize + 4 * (shape.dtype == "int8"))
    tokens = max(64, int(l2 * IN_CORE_L2_SHARE) // per_token // 64 * 64)
    tasks = model.DecodeShape(seq_len=tokens, heads=shape.group * threads, kv_heads=threads, head_dim=shape.head_dim,
                              dtype=shape.dtype)
    cache = DecodeCache(tasks, seed)
    po = np.empty((tasks.heads, shape.head_dim), np.float32)
    pm, pl = np.empty(tasks.heads, np.float32), np.empty(tasks.heads, np.float32)
    stage, ahead, l2_ahead = record_config(config)
    info = {"seq_len": tokens, "heads": tasks.heads, "kv_heads": threads, "seed": seed,
            "how": f"{threads} task(s) at once, one a thread, each of {tokens} tokens (a KV head's K and V rows, "
                   f"{tokens * per_token} bytes, in a thread's {l2} bytes of L2), "
                   f"{config_name((stage, ahead, l2_ahead))}"}

    return Workload(name="numba-fused in-core", dtype=shape.dtype, threads=threads, info=info,
                    check=lambda: check_output(cache, po / pl[:, None], info, "in-core tasks"),
                    poison=lambda: po.fill(np.nan), working_set_bytes=model.cache_bytes(tasks),
                    bytes_per_call=model.decode_bytes(tasks), flops_per_call=model.attention_flops(tasks),
                    run=lambda loops: task_loops(cache.q, shape.group, cache.k, cache.v, cache.k_scale, cache.v_scale,
                                                 threads, stage, ahead, l2_ahead, loops, po, pm, pl))


def measure_in_core(ctx, rec, shape, seed):
    """rec["in_core"]: the in-core tasks' timing record (in_core_workload) at the point's threads, or the
    reason there is none."""
    w = in_core_workload(shape, rec["kernel_config"], ctx.cpu, ctx.threads, seed)
    if w is None:
        rec["in_core"] = {"reason": "the CPU reports no L2 cache to size the in-core task by"}
        return
    rec["in_core"] = ctx.measure(w, repeats=IN_CORE_REPEATS)


def adjacent_reader(ctx):
    """A function that times one sample of the DRAM read kernel now (bytes/s; None if its output is
    wrong), built on first use.

    On a shared machine DRAM bandwidth drifts by 2x within seconds, so every sample of a large decode
    point is paired with a read sample taken right before it, besides the profile's figure."""
    state = {}

    def read_now():
        if "w" not in state:
            n, _ = stream_elements(ctx, "fp64")
            (a,) = pooled_arrays(n + ctx.threads * READ_OFFSET_ELEMS, np.float64, POOL[:1])
            fill_random(a, 11)
            state["w"] = w = dram_read_workload(ctx, a, "fp64", n * 8, ctx.threads)
            set_cpu_threads(w.threads)
            w.run(1)  # compiled and paged in outside the readings
            state["loops"] = calibrate_loops(w.run, READ_SAMPLE_S, 1 << 10, ctx.clock)
        w, loops = state["w"], state["loops"]
        set_cpu_threads(w.threads)
        w.poison()
        elapsed_s = timed_s(w.run, loops, ctx.clock)
        return None if w.check() else w.bytes_per_call * loops / elapsed_s

    return read_now


def array_bytes(shape):
    """Bytes of the K (or V) array of a shape's cache, as stored."""
    return shape.batch * shape.kv_heads * shape.seq_len * shape.head_dim * np.dtype(STORAGE[shape.dtype]).itemsize


def planned_points(ctx):
    """(points, left out): the points the probe options ask for (one beyond memory is an error:
    check_point), or the sweep's within memory and, with the reason, those beyond it (--full's
    longest fp32 cache needs 36 GiB on the 24 GiB AMX Xeon VM, whose 300 MiB L3 sets the lengths:
    it failed the whole decode probe, the four points before it lost). Torch's points are left out,
    with the reason, where torch cannot be imported."""
    candidates = points_from_options(ctx) if ctx.options else sweep(ctx)
    torch_why = torch_reason() if any(impl.startswith("torch") for impl, _ in candidates) else None
    points, left_out = [], []
    for impl, shape in candidates:
        why = (dtype_refusal(impl, shape.dtype) or (torch_why if impl.startswith("torch") else None)
               or (None if ctx.options else memory_refusal(shape, ctx.cpu)))
        if why:
            left_out.append({"impl": impl, "dtype": shape.dtype, "batch": shape.batch, "heads": shape.heads,
                             "kv_heads": shape.kv_heads, "seq_len": shape.seq_len, "reason": why})
        else:
            points.append((impl, shape))
    return points, left_out


def decode_buffers(ctx):
    """{pool buffer: bytes} the decode run will ask for: the read beside its points (the first),
    and the largest point's K and V (the second and third)."""
    points, _ = planned_points(ctx)
    n, _ = stream_elements(ctx, "fp64")
    kv = max(array_bytes(shape) for _, shape in points)
    return {POOL[0]: (n + ctx.threads * READ_OFFSET_ELEMS) * 8, POOL[1]: kv, POOL[2]: kv}


def run_decode(ctx):
    """devices.cpu.decode_attention: the sweep (or, with probe options, one shape), as records, and
    decode_unsupported: the points left out (beyond memory, or torch's without torch), with the reason."""
    points, left_out = planned_points(ctx)
    large = LARGE_CACHE_FACTOR * last_level_cache_bytes(ctx.cpu)
    read_now = adjacent_reader(ctx)
    records = []
    for i, (impl, shape) in enumerate(points):
        ctx.progress(f"decode {impl} {shape.dtype} B={shape.batch} H={shape.heads}/{shape.kv_heads} "
                     f"d_h={shape.head_dim} S={shape.seq_len} ({i + 1}/{len(points)})")
        reads = []
        paired = model.cache_bytes(shape) >= large
        rec = measure_point(ctx, impl, shape, seed=1000 + i, between=(lambda: reads.append(read_now())) if paired else None)
        if paired:  # the read bandwidth right before each sample: what that sample competed with
            rec["reads_before_samples_bytes_per_s"] = reads
            rec["adjacent_read_bytes_per_s"] = float(np.median(reads)) if all(reads) else None
            if not all(reads):
                rec["warnings"].append("a DRAM read sample beside this point summed wrong: no adjacent read bandwidth")
            if impl == "numba-fused" and rec.get("validated"):  # what its loops cost with no memory to wait for
                measure_in_core(ctx, rec, shape, seed=2000 + i)
        records.append(rec)
    return {"decode_attention": records, **({"decode_unsupported": left_out} if left_out else {})}


DEFAULT_POINT = {"impl": "numba-fused", "dtype": "fp32", "seq_len": 16384, "heads": 32, "kv_heads": None,
                 "head_dim": 128, "batch": 1}


def points_from_options(ctx):
    """The points `harness probe decode --impl ... --dtype ...` asks for (impl 'all': every impl, those
    that do not take the dtype too, for planned_points to leave out with the reason)."""
    opts = {**DEFAULT_POINT, **{k: v for k, v in ctx.options.items() if v is not None}}
    unknown = set(opts) - set(DEFAULT_POINT)
    if unknown:
        raise HarnessError(f"unknown decode options {sorted(unknown)}: valid are {', '.join(DEFAULT_POINT)}")
    shape = model.DecodeShape(seq_len=opts["seq_len"], heads=opts["heads"], kv_heads=opts["kv_heads"] or opts["heads"],
                              head_dim=opts["head_dim"], dtype=opts["dtype"], batch=opts["batch"])
    every = opts["impl"] == "all"
    impls = list(IMPLS) if every else [opts["impl"]]
    for impl in impls:
        if not (every and dtype_refusal(impl, shape.dtype)):
            check_point(impl, shape, ctx.cpu, torch_required=not every)
    return [(impl, shape) for impl in impls]
