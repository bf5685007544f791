"""harness: measure a machine's memory and compute balance and check the decode model against it.

Python API (see README): ``load_profile(path)`` reads a stored profile, ``run_probe(name, ...)``
runs one probe and returns its measurements as plain data.
"""

import os
import sys

# OpenBLAS (numpy's BLAS, used by the float64 reference checks) keeps its worker threads spinning
# for about 0.1 s after each call; on a small machine they steal the cores from the next timed
# kernel (measured on the 2-core dev VM: a numba decode kernel 1.3-1.9x slower right after a
# reference gemv, medians of 3 calls in 4 pairs). A timeout of 2**4 cycles puts them to sleep at
# once. Read when numpy loads OpenBLAS, so it is set before anything in the harness imports numpy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def _full_vector_width():
    """Let Numba's LLVM use 512-bit vectors on every AVX-512 CPU.

    LLVM tunes several Intel targets (Skylake-SP to Sapphire Rapids, and the Xeon VM here, which it
    takes for a Rocket Lake) to prefer 256-bit vectors, so Numba emitted ymm FMAs there and the
    peak probe measured half the machine (fp32 233 vs 474 GFLOP/s on the 2-core Xeon VM, best of
    5 calls each). Read when Numba starts: set before anything in the harness imports it, and left
    alone if the user chose Numba's CPU name or features."""
    if "numba" in sys.modules or os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        return
    try:
        from llvmlite import binding
        features = binding.get_host_cpu_features()
    except (ImportError, RuntimeError):
        return
    if features.get("avx512f"):
        os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"


_full_vector_width()

from harness.errors import HarnessError  # noqa: E402
from harness.profile import load_profile  # noqa: E402


def run_probe(name, device="cpu", threads=None, quick=False, **options):
    """Run one probe on this machine and return its section of a profile (plain data).

    Options are the probe's CLI options with underscores: dtype="fp32", or for decode
    impl="numba-fused", seq_len=16384, heads=32, kv_heads=8, head_dim=128, batch=1."""
    from harness.run import run_single_probe

    return run_single_probe(name, device=device, threads=threads, quick=quick, options=options)


__all__ = ["HarnessError", "load_profile", "run_probe"]
