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
