"""The peak and dot probes compiled for CPUs this machine is not and run on emulated ones
(benchmarks/cpu_qemu.sh): the chains checked exactly, beyond tests/test_llvm_targets.py's assembly.
Arm's fp16 FMLA and SDOT chains run where that script has set up build/arm64 (root, apt-get, PyPI);
AVX2 without AVX-512 (Haswell's 12 chains of 256-bit FMAs) wherever qemu-user is installed. Neither
is in CI's image: each skips saying so."""

import os
import shutil
import subprocess

import pytest

from conftest import ROOT

BUILD = os.path.join(ROOT, "build", "arm64")
SETUP = "`bash benchmarks/cpu_qemu.sh TARGET` sets it up (root, Debian's packages and PyPI)"
NO_QEMU = None if shutil.which("qemu-x86_64-static") else "qemu-user-static is not installed"
NO_ARM = NO_QEMU or ("no emulated Arm Python under build/arm64" if not os.path.exists(
    os.path.join(BUILD, "root", "usr", "bin", "python3.11")) else "no aarch64 numba under build/arm64/site"
    if not os.path.isdir(os.path.join(BUILD, "site", "numba")) else None)


def emulated(target, *probes):
    """The lines cpu_qemu.sh prints for `probes` on `target`, once it has exited 0."""
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "cpu_qemu.sh"), target, *probes],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.skipif(NO_ARM is not None, reason=f"{NO_ARM}: {SETUP}")
def test_the_arm_fp16_fma_and_sdot_chains_run_and_check_exactly_on_an_emulated_core():
    lines = emulated("neoverse-v2", "peak", "dot")
    assert {"peak: peak_flops.fp16  validated", "peak: peak_flops.fp64  validated", "dot: dot_flops.int8 sdot validated",
            "4 of 4 records validated on an emulated neoverse-v2"} <= set(lines), lines
    assert any(line.startswith("dot: bf16 left out: ") and "BFDOT" in line for line in lines)


@pytest.mark.skipif(NO_QEMU is not None, reason=f"{NO_QEMU}: {SETUP}")
def test_the_avx2_fma_chains_run_and_check_exactly_on_an_emulated_haswell():
    lines = emulated("haswell", "peak")
    assert {"peak: peak_flops.fp64  validated", "peak: peak_flops.fp32  validated",
            "2 of 2 records validated on an emulated haswell"} <= set(lines), lines
    assert any(line.startswith("peak: fp16 left out: no native fp16") for line in lines)
