"""The read kernels of explicit vector width (probes/cpu_read.py): their sums against float64, their
assembly, the choice among them by timing (a fake clock), and where the probes use them."""

import platform
import re

import numpy as np
import pytest

from harness import summary
from harness.workload import Context, time_workload
from probes import cpu_read, cpu_stream

X86 = platform.machine() in ("x86_64", "AMD64")


@pytest.fixture
def tiny_ctx(cpu):
    return Context(cpu=cpu, threads=2, tiny=True)


def test_settings_follow_the_cpus_vector_widths(cpu):
    assert cpu_read.vector_widths(cpu) == [512, 256, 128]  # the fixture's flags: avx, avx2, avx512f
    assert cpu_read.vector_widths({"simd": ["sse4_2", "avx", "avx2"]}) == [256, 128]
    assert cpu_read.vector_widths({"simd": ["asimd"]}) == [128]
    names = cpu_read.settings({"simd": ["sse4_2", "avx2"]})
    assert names == ["numba", "256-bit x1", "256-bit x2", "256-bit x4", "256-bit x8",
                     "128-bit x1", "128-bit x2", "128-bit x4", "128-bit x8"]
    assert cpu_read.parse_setting("256-bit x4") == (256, 4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("setting", ["512-bit x4", "256-bit x1", "128-bit x8"])
@pytest.mark.parametrize("n", [0, 3, 64, 1000, 4099])  # none, all tail, one step, steps and a tail
def test_vector_sum_matches_float64(dtype, setting, n):
    vsum, _ = cpu_read.compile_sum(np.dtype(dtype), *cpu_read.parse_setting(setting))
    x = np.random.default_rng(n).uniform(0.5, 1.5, n + 5).astype(dtype)[1:]  # not 64-byte aligned
    x[n:] = np.nan  # past the end: never read
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert vsum(x.ctypes.data, n) == pytest.approx(float(np.sum(x[:n], dtype=np.float64)), rel=rtol, abs=0)


@pytest.mark.skipif(not X86, reason="the register names checked are x86's")
@pytest.mark.parametrize("bits, register, wider", [(512, "zmm", None), (256, "ymm", "zmm"), (128, "xmm", "[yz]mm")])
def test_vector_sum_loads_at_its_width(bits, register, wider):
    _, asm = cpu_read.compile_sum(np.dtype(np.float64), bits, 4)
    loop = asm[asm.index("vsum:"):]
    adds = re.findall(rf"vaddpd\s+-?\d*\(%\w+[^)]*\), %{register}", loop)
    assert len(adds) == 4  # four sums in flight, each adding a vector loaded from memory
    assert wider is None or not re.search(rf"%{wider}", loop)


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
@pytest.mark.parametrize("reps", [1, 2, 3])
def test_read_kernel_matches_k_reads_reference(dtype, reps):
    t = cpu_stream.DTYPES[dtype]
    threads, per = 2, 997
    a = cpu_stream.aligned_empty(threads * per + cpu_stream.READ_OFFSET_ELEMS * threads, t)
    cpu_stream.fill_random(a, 3)
    ref = cpu_stream.read_reference(a, threads, per, reps)
    for setting in ("256-bit x1", "512-bit x8"):
        out = np.full(threads, np.nan)
        cpu_read.read_kernel(a.dtype, setting, 256, cpu_stream.READ_OFFSET_ELEMS)(a, out, per, reps)  # blocks of 256
        assert cpu_stream.check_close(out, ref, cpu_stream.RTOL[dtype], setting) is None


class FakeClock:
    """A nanosecond clock that each run(setting) advances by that setting's seconds."""

    def __init__(self, seconds):
        self.now, self.seconds, self.calls = 0, seconds, []

    def __call__(self):
        return self.now

    def run(self, setting):
        self.calls.append(setting)
        self.now += int(self.seconds[setting] * 1e9)


def test_fastest_times_settings_interleaved_and_drops_the_slow_ones():
    clock = FakeClock({"numba": 0.040, "256-bit x1": 0.030, "256-bit x4": 0.031, "128-bit x1": 0.050})
    record = cpu_read.fastest(list(clock.seconds), clock.run, clock, "from DRAM")
    assert record["read_kernel"] == "256-bit x1"
    assert record["median_s_per_setting"]["numba"] == pytest.approx(0.040)
    # a warm-up call each, two rounds of all, then three of those within 10% of the fastest
    assert record["calls_per_setting"] == {"numba": 2, "256-bit x1": 5, "256-bit x4": 5, "128-bit x1": 2}
    assert clock.calls[4:8] == list(clock.seconds)  # interleaved: one call of each in turn
    assert "fastest median of 5 interleaved calls from DRAM" in record["chosen_by"]


def test_dram_tuning_happens_once_per_dtype_and_thread_count(monkeypatch, cpu):
    monkeypatch.setattr(cpu_read, "_TUNED", {})
    clock = FakeClock({name: 0.01 + 0.001 * i for i, name in enumerate(cpu_read.settings(cpu))})
    said = []
    first = cpu_read.tune_dram_read(cpu, np.float64, 2, clock.run, clock, said.append)
    calls = len(clock.calls)
    again = cpu_read.tune_dram_read(cpu, np.float64, 2, clock.run, clock, said.append)
    assert again == first and len(clock.calls) == calls and first["read_kernel"] == "numba"
    assert said == ["read float64: timing 13 read kernels from DRAM, to keep the fastest"]  # once, when it times
    cpu_read.tune_dram_read(cpu, np.float32, 2, clock.run, clock)
    assert len(clock.calls) > calls


def test_stream_read_records_the_kernel_it_chose(tiny_ctx, monkeypatch):
    monkeypatch.setattr(cpu_read, "_TUNED", {})
    read = next(w for w in cpu_stream.stream_workloads(tiny_ctx, "fp64", 1001, 2) if w.name == "read")
    rec = time_workload(read, repeats=2, min_sample_s=1e-4)
    assert rec["validated"], rec.get("error")
    config = rec["kernel_config"]
    assert config["read_kernel"] in cpu_read.settings(tiny_ctx.cpu)
    assert set(config["median_s_per_setting"]) == set(cpu_read.settings(tiny_ctx.cpu))
    read.poison()
    assert read.check() is not None  # the poisoned output fails until the kernel runs again
    line = summary.record_line("bandwidth.read", rec)
    assert line.endswith(f"  read kernel {config['read_kernel']}")  # what harness probe stream prints


def test_hierarchy_points_beyond_l2_take_the_faster_read_kernel(tiny_ctx, monkeypatch):
    monkeypatch.setattr(cpu_read, "_TUNED", {})
    monkeypatch.setattr(cpu_stream, "cache_capacities", lambda cpu, threads: [("L1", 16 << 10), ("L2", 64 << 10)])
    points = cpu_stream.run_hierarchy(tiny_ctx)["hierarchy"]
    assert all(p["validated"] for p in points)
    beyond = [p for p in points if p["level"] not in ("L1", "L2")]
    assert beyond and all(p["level"] == "DRAM" for p in beyond)
    for p in beyond:  # k_read against the kernel tuned on the sweep's largest set
        assert p["kernel_config"]["read_kernel"] in p["kernel_config"]["median_s_per_setting"]
        assert len(p["kernel_config"]["median_s_per_setting"]) in (1, 2)
        assert "numba" in p["kernel_config"]["median_s_per_setting"]
    assert not any("kernel_config" in p for p in points if p["level"] in ("L1", "L2"))
