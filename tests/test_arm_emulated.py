"""The peak and dot probes compiled for Arm and run on an emulated core (benchmarks/arm_qemu.sh):
the fp16 FMLA and SDOT chains checked exactly, beyond tests/test_llvm_targets.py's assembly. Runs
where that script has set up build/arm64 (root, apt-get, PyPI: not in CI), else skips saying so."""

import os
import shutil
import subprocess

import pytest

from conftest import ROOT

BUILD = os.path.join(ROOT, "build", "arm64")
MISSING = ("qemu-aarch64-static is not installed" if not shutil.which("qemu-aarch64-static") else
           "no emulated Arm Python under build/arm64" if not os.path.exists(os.path.join(BUILD, "root", "usr", "bin",
                                                                                          "python3.11")) else
           "no aarch64 numba under build/arm64/site" if not os.path.isdir(os.path.join(BUILD, "site", "numba")) else None)


@pytest.mark.skipif(MISSING is not None, reason=f"{MISSING}: `bash benchmarks/arm_qemu.sh` sets it up (root, "
                                                 "Debian's packages and PyPI)")
def test_the_arm_fp16_fma_and_sdot_chains_run_and_check_exactly_on_an_emulated_core():
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "arm_qemu.sh"), "peak", "dot"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert {"peak: peak_flops.fp16  validated", "peak: peak_flops.fp64  validated", "dot: dot_flops.int8 sdot validated",
            "4 of 4 records validated on emulated Arm"} <= set(lines), proc.stdout
    assert any(line.startswith("dot: bf16 left out: ") and "BFDOT" in line for line in lines)
