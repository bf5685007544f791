"""What every GPU probe shares: CuPy availability (and why not), CUDA sources, a synchronising
CUDA-event clock for the timing core, and launch geometry (pure functions, testable anywhere)."""

import functools
import math
import os

from harness.counters.ncu import NVTX_PREFIX

CUDA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda")
CUDA_SOURCES = ("stream", "fma", "decode")
THREADS = 256
# decode.cu's split-K kernel is a template over the cache element type, head dim and GQA group
DECODE_TYPES = {"fp32": "float", "fp16": "__half", "bf16": "__nv_bfloat16", "int8": "signed char"}
DECODE_HEAD_DIMS = (64, 128, 256)
DECODE_GROUPS = (1, 2, 4, 8)
DECODE_THREADS = 256
DECODE_STATIC_SHARED_BYTES = 4 * (DECODE_THREADS // 32) * max(DECODE_GROUPS)  # decode.cu's scratch[WARPS * 8] floats
# a block gets 48 KB of shared memory, static and dynamic together, unless the kernel opts in to more
DECODE_DYNAMIC_SHARED_LIMIT = 48 * 1024 - DECODE_STATIC_SHARED_BYTES
NVRTC_OPTIONS = ("--std=c++17",)  # CuPy compiles RawModules with NVRTC; tests compile with the same


def cupy_unavailable_reason():
    """None if CuPy can run kernels here, else why not (no CuPy, no driver, no device)."""
    try:
        import cupy
    except ImportError as e:
        return f"CuPy is not installed ({e}); install the extra: pip install -e '.[gpu]'"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: cudaErrorInsufficientDriver / NoDevice
        import ctypes.util

        driver = "" if ctypes.util.find_library("cuda") else "no NVIDIA driver here (no libcuda): "
        return f"{driver}CUDA runtime cannot see a GPU ({e})"
    return None if count else "the CUDA runtime reports no GPU"


def cuda_path(name):
    """probes/cuda/<name>.cu (GPU probe modules list theirs in KERNEL_FILES, which probe_hash covers)."""
    return os.path.join(CUDA_DIR, f"{name}.cu")


def cuda_source(name):
    with open(cuda_path(name), encoding="utf-8") as f:
        return f.read()


def load_module(name, templates=(), defines=None):
    """The compiled CuPy module of probes/cuda/<name>.cu (NVRTC; cached by CuPy), with the
    template kernels named in `templates` instantiated (get them by the same names) and the
    source's build options in `defines` ({"UNROLL": 8} is -DUNROLL=8)."""
    import cupy

    options = NVRTC_OPTIONS + tuple(f"-D{k}={v}" for k, v in sorted((defines or {}).items()))
    return cupy.RawModule(code=cuda_source(name), options=options, name_expressions=list(templates) or None)


def decode_kernel_name(dtype, head_dim, group):
    """The instantiation of decode.cu's decode_partial for one cache dtype, head dim and group."""
    return f"decode_partial<{DECODE_TYPES[dtype]}, {head_dim}, {group}>"


def event_clock():
    """A perf_counter_ns-like clock that synchronises the device: nanoseconds since its creation
    measured with CUDA events, so the timing core times kernels, not launches."""
    import cupy

    start = cupy.cuda.Event()
    start.record()

    def clock():
        e = cupy.cuda.Event()
        e.record()
        e.synchronize()
        return int(cupy.cuda.get_elapsed_time(start, e) * 1e6)

    return clock


def nvtx(name, run):
    """`run` inside the NVTX range NVTX_PREFIX + name, the range ncu restricts counting to."""
    from cupy.cuda import nvtx as cupy_nvtx

    if not getattr(cupy_nvtx, "available", True):
        return run  # a CuPy built without NVTX: the probe runs; ncu then finds no kernel in the range

    @functools.wraps(run)  # keeps the probe's module: probe_hash hashes the probe, not this wrapper
    def ranged(loops):
        cupy_nvtx.RangePush(NVTX_PREFIX + name)
        try:
            run(loops)
        finally:
            cupy_nvtx.RangePop()

    return ranged


def grid_blocks(n_items, sm_count, threads=THREADS, blocks_per_sm=8):
    """Blocks for a grid-stride loop: enough to fill every SM several times, no more than the work."""
    return max(1, min(math.ceil(n_items / threads), sm_count * blocks_per_sm))


def stream_vectors(l2_bytes, free_bytes, vector_bytes=16, arrays=3, factor=4):
    """16-byte vectors per array: factor x the L2 per array, within half the free memory."""
    want = factor * l2_bytes
    fits = int(0.5 * free_bytes / arrays)
    return max(1, min(want, fits) // vector_bytes)


def decode_chunking(batch, kv_heads, seq_len, group, sm_count, shared_bytes=DECODE_DYNAMIC_SHARED_LIMIT,
                    blocks_per_sm=32, min_len=256):
    """(chunks, chunk_len) for the split-K decode: about `blocks_per_sm` blocks per SM (several
    waves, so the last one leaves few SMs idle), chunks no shorter than min_len tokens (each chunk
    writes a partial output the merge reads back), scores within shared memory (group x chunk_len
    floats)."""
    max_len = shared_bytes // (4 * group)
    wanted = math.ceil(seq_len * batch * kv_heads / (blocks_per_sm * sm_count))
    chunk_len = max(1, min(max_len, seq_len, max(min_len, wanted)))
    chunks = math.ceil(seq_len / chunk_len)
    return chunks, math.ceil(seq_len / chunks)


def decode_shared_bytes(group, chunk_len, head_dim):
    """Dynamic shared memory of one decode block: its scores, later reused for half its warps' sums."""
    return 4 * group * max(chunk_len, DECODE_THREADS // 32 // 2 * head_dim)


def resident_blocks(registers, shared_bytes, threads, sm_limits):
    """(blocks of `threads` threads one SM holds at once, the limit that sets it) for a kernel of
    `registers` per thread and `shared_bytes` (static + dynamic) per block, under the CUDA
    runtime's per-SM limits: registers are given to warps in units of 256, and every block
    reserves 1 KB of shared memory beside its own (compute capability 8.0 and later)."""
    warps = -(-threads // 32)
    per_warp = -(-registers * 32 // 256) * 256
    limits = {"registers": sm_limits["registers"] // (per_warp * warps),
              "shared memory": sm_limits["shared_bytes"] // (shared_bytes + 1024),
              "threads": sm_limits["threads"] // (warps * 32), "blocks per SM": sm_limits["blocks"]}
    limit = min(limits, key=limits.get)
    return limits[limit], limit
