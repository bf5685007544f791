"""harness: measure a machine's memory and compute balance and check the decode model against it.

Python API (see README): ``load_profile(path)`` reads a stored profile, ``run_probe(name, ...)``
runs one probe and returns its measurements as plain data.
"""

from harness.errors import HarnessError
from harness.profile import load_profile


def run_probe(name, device="cpu", threads=None, quick=False, **options):
    """Run one probe on this machine and return its section of a profile (plain data).

    Options are the probe's CLI options with underscores: dtype="fp32", or for decode
    impl="numba-fused", seq_len=16384, heads=32, kv_heads=8, head_dim=128, batch=1."""
    from harness.run import run_single_probe

    return run_single_probe(name, device=device, threads=threads, quick=quick, options=options)


__all__ = ["HarnessError", "load_profile", "run_probe"]
