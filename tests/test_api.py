"""The Python API documented in the README."""

import harness


def test_run_probe_and_load_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_TINY", "1")
    section = harness.run_probe("peak", threads=1, dtype="fp64")
    assert set(section["peak_flops"]) == {"fp64"}
    assert section["peak_flops"]["fp64"]["validated"]


def test_api_errors_are_harness_errors():
    import pytest

    with pytest.raises(harness.HarnessError, match="valid probes"):
        harness.run_probe("nosuch")
    with pytest.raises(harness.HarnessError, match="does not exist"):
        harness.load_profile("/nonexistent.yaml")


def test_importing_the_harness_stops_openblas_spinning():
    """OpenBLAS threads left spinning after a reference check slow the next timed kernel."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    code = "import harness, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "4"
    env["OPENBLAS_THREAD_TIMEOUT"] = "10"  # a user's own setting is kept
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "10"
