import json
import os
import subprocess
import sys

import pytest

import harness  # noqa: F401  (first: it sets Numba's and OpenBLAS's environment before either loads)
from harness.stats import sample_figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def hf_config(name):
    """The keys a preset needs, as the published config.json of meta-llama/Meta-Llama-3-8B and
    Qwen/Qwen3-0.6B give them (tests/fixtures/hf-config-*.json); the Qwen one also names a window
    with use_sliding_window false, as Qwen2.5's configs do: named, unused."""
    with open(os.path.join(FIXTURES, f"hf-config-{name}.json"), encoding="utf-8") as f:
        return json.load(f)


class FakeClock:
    """A perf_counter_ns stand-in: time moves only when work 'runs' (and 1 ns per reading)."""

    def __init__(self):
        self.now = 0

    def __call__(self):
        self.now += 1
        return self.now

    def advance_s(self, seconds):
        self.now += int(round(seconds * 1e9))


@pytest.fixture
def fake_clock():
    return FakeClock()


@pytest.fixture
def cpu():
    """This machine's CPU description with small caches, as probes receive it."""
    return {
        "id": "test-cpu-2c", "model": "Test CPU", "vendor": "AuthenticAMD", "family": 0x1A,
        "model_number": 2, "cores": 2, "threads": 2, "usable_cpus": 2, "sockets": 1,
        "simd": ["avx", "avx2", "avx512f", "fma"],
        "frequency": {"nominal_hz": 2.5e9, "current_hz": 2.5e9, "source": "test"},
        "caches": [
            {"level": 1, "type": "Data", "size_bytes": 32768, "shared_by_cpus": 1, "instances": 2},
            {"level": 2, "type": "Unified", "size_bytes": 1 << 20, "shared_by_cpus": 1, "instances": 2},
            {"level": 3, "type": "Unified", "size_bytes": 32 << 20, "shared_by_cpus": 2, "instances": 1},
        ],
        "memory_bytes": 24 << 30, "memory_available_bytes": 20 << 30, "hypervisor": "KVM",
    }


def run_cli(*args, env_extra=None, cwd=None):
    """Run `python -m harness ARGS` in a subprocess with tiny sizes; returns CompletedProcess."""
    env = dict(os.environ, HARNESS_TINY="1", PYTHONPATH=ROOT, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=600)


# mappings whose keys are data (package names, dtypes, kernels, settings), not schema fields
DATA_KEYED = {"packages", "median_s_per_setting", "calls_per_setting", "dtype_ratios", "flops_per_s", "balance",
              "hierarchy_levels", "bandwidth", "bandwidth_fp32", "peak_flops", "tensor_flops", "thread_sweep",
              "devices", "source", "ops_per_cycle_per_core", "flops_per_cycle_per_core", "per_dtype"}


def undocumented_fields(doc):
    """The field names in a profile that docs/profile.md does not name."""
    with open(os.path.join(ROOT, "docs", "profile.md"), encoding="utf-8") as f:
        text = f.read()
    missing = set()

    def walk(node, parent):
        if isinstance(node, dict):
            for key, value in node.items():
                if parent not in DATA_KEYED and isinstance(key, str) and key not in text:
                    missing.add(key)
                walk(value, key)
        elif isinstance(node, list):
            for item in node:
                walk(item, parent)

    walk(doc, None)
    return missing


def timed(unit, work_per_call, samples_s):
    """A timed record's figures as a probe writes them: `unit`_per_call (bytes or flops), the raw
    samples, and the times and rates they give (the loader refuses a rate its samples do not give)."""
    return {f"{unit}_per_call": work_per_call, "samples_s": list(samples_s),
            **sample_figures(list(samples_s), work_per_call, unit)}


def faster(rec, factor):
    """A copy of timed record `rec` whose samples are `factor` times shorter, its times and rates
    following, and with them its share of its theoretical peak and the clock it implies (a measurement
    `factor` times faster)."""
    out = dict(rec, samples_s=[s / factor for s in rec["samples_s"]])
    for unit in ("bytes", "flops"):
        if f"{unit}_per_call" in rec:
            out.update(sample_figures(out["samples_s"], rec[f"{unit}_per_call"], unit))
    for key in ("fraction_of_theoretical", "implied_clock_hz"):
        if rec.get(key) is not None:
            out[key] = rec[key] * factor
    return out
