"""What every GPU probe shares: CuPy availability (and why not), CUDA sources, a synchronising
CUDA-event clock for the timing core, and launch geometry (pure functions, testable anywhere)."""

import math
import os

CUDA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda")
CUDA_SOURCES = ("stream", "fma", "decode")
THREADS = 256


def cupy_unavailable_reason():
    """None if CuPy can run kernels here, else why not (no CuPy, no driver, no device)."""
    try:
        import cupy
    except ImportError as e:
        return f"CuPy is not installed ({e}); install the extra: pip install -e '.[gpu]'"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: cudaErrorInsufficientDriver / NoDevice
        return f"CUDA runtime cannot see a GPU ({e})"
    return None if count else "the CUDA runtime reports no GPU"


def cuda_source(name):
    with open(os.path.join(CUDA_DIR, f"{name}.cu"), encoding="utf-8") as f:
        return f.read()


def load_module(name):
    """The compiled CuPy module of probes/cuda/<name>.cu (NVRTC; cached by CuPy)."""
    import cupy

    return cupy.RawModule(code=cuda_source(name), options=("--std=c++17",))


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
    """`run` inside an NVTX range "harness/<name>", the range ncu restricts counting to."""
    from cupy.cuda import nvtx as cupy_nvtx

    def ranged(loops):
        cupy_nvtx.RangePush(f"harness/{name}")
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


def decode_chunking(batch, kv_heads, seq_len, group, sm_count, shared_bytes=48 * 1024):
    """(chunks, chunk_len) for the split-K decode: at least two blocks per SM, scores fitting in
    shared memory (group x chunk_len floats)."""
    max_len = shared_bytes // (4 * group)
    chunks = max(math.ceil(2 * sm_count / (batch * kv_heads)), math.ceil(seq_len / max_len), 1)
    chunk_len = math.ceil(seq_len / chunks)
    return math.ceil(seq_len / chunk_len), chunk_len
