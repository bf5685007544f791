"""What the GPU benchmarks start with: GPU 0 identified (NVML and the CUDA runtime), a CUDA-event
clock, and the harness's fp32 STREAM workloads sized as its GPU probe sizes them."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.gpu_run import identify  # noqa: E402
from probes import gpu_stream  # noqa: E402
from probes.gpu_common import cupy_unavailable_reason, event_clock, stream_vectors  # noqa: E402


def gpu0():
    """(identity, NVML handle, clock, {kernel name: fp32 STREAM workload}) of GPU 0, NVML left
    initialised for telemetry (the caller shuts it down); exits with the reason where no GPU can run."""
    reason = cupy_unavailable_reason()
    if reason:
        sys.exit(f"no GPU benchmark here: {reason}")
    import cupy as cp
    import pynvml

    pynvml.nvmlInit()
    gpu, handle = identify(0)
    clock = event_clock()
    free, _ = cp.cuda.runtime.memGetInfo()
    stream = {w.name: w for w in gpu_stream.stream_workloads(gpu, "fp32", stream_vectors(gpu["l2_bytes"], free))}
    return gpu, handle, clock, stream
