"""Counter adapters: parsers against recorded output, availability with each cause simulated,
counters blocks in profiles, and `--counters perf` ending with a stated reason on a PMU-less VM."""

import json
import os
import shutil

import pytest

from conftest import FIXTURES, run_cli
from harness import counters
from harness.counters import ncu, perf

HANDMADE_PERF_HW = """# HAND-MADE FIXTURE (no PMU on the dev VM): shaped like perf stat -x, output on a bare-metal Intel CPU
2000.5,msec,task-clock,2000500000,100.00,1.999,CPUs utilized
8000000000,,cycles,2000500000,100.00,4.000,GHz
9000000000,,instructions,2000500000,100.00,1.12,insn per cycle
0,,fp_arith_inst_retired.scalar_double,2000500000,100.00,,
250000000,,fp_arith_inst_retired.512b_packed_double,2000500000,100.00,,
6000000,,uncore_imc_0/cas_count_read/,2000500000,100.00,,
2000000,,uncore_imc_0/cas_count_write/,2000500000,100.00,,
"""


def read(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def test_perf_parser_on_output_recorded_on_this_vm():
    v = perf.parse_perf_csv(read("perf-kvm-software.csv"))
    assert v["task-clock"] == pytest.approx(119.43) and v["context-switches"] == 89
    assert v["cycles"] is None and v["instructions"] is None and v["LLC-load-misses"] is None


def test_perf_parser_on_hardware_events():
    v = perf.parse_perf_csv(HANDMADE_PERF_HW)
    assert v["fp_arith_inst_retired.512b_packed_double"] == 250e6 and v["uncore_imc_0/cas_count_read/"] == 6e6


@pytest.mark.parametrize("setup,needle", [
    ("no_perf", "perf is not installed"),
    ("no_pmu", "no hardware PMU under the KVM hypervisor"),
    ("paranoid", "perf_event_paranoid is 3"),
])
def test_perf_availability_names_the_cause(tmp_path, monkeypatch, setup, needle):
    pmu_root = tmp_path / "devices"
    (pmu_root / "software").mkdir(parents=True)
    if setup != "no_pmu":
        (pmu_root / "cpu").mkdir()
    paranoid = tmp_path / "paranoid"
    paranoid.write_text("3\n" if setup == "paranoid" else "1\n")
    monkeypatch.setattr(perf.shutil, "which", lambda name: None if setup == "no_perf" else "/usr/bin/perf")
    reason = perf.unavailable_reason({"hypervisor": "KVM"}, root=str(pmu_root), paranoid_path=str(paranoid))
    assert needle in reason


def test_perf_available_on_bare_metal_and_event_plans(tmp_path, monkeypatch):
    root = tmp_path / "devices"
    for d in ("cpu", "uncore_imc_0", "uncore_imc_1"):
        (root / d).mkdir(parents=True)
    paranoid = tmp_path / "p"
    paranoid.write_text("2")
    monkeypatch.setattr(perf.shutil, "which", lambda name: "/usr/bin/perf")
    assert perf.unavailable_reason({}, root=str(root), paranoid_path=str(paranoid)) is None
    flop, dram, label = perf.event_plan({"vendor": "GenuineIntel"}, root=str(root))
    assert flop["fp_arith_inst_retired.512b_packed_single"] == 16
    assert dram == ["uncore_imc_0/cas_count_read/", "uncore_imc_1/cas_count_read/",
                    "uncore_imc_0/cas_count_write/", "uncore_imc_1/cas_count_write/"] and "CAS" in label
    flop, dram, label = perf.event_plan({"vendor": "AuthenticAMD"}, root=str(tmp_path / "none"))
    assert flop == {"fp_ret_sse_avx_ops.all": 1} and dram[0] == "LLC-load-misses" and "estimate" in label


def test_blocks_derive_intensity_and_bytes_ratio():
    b = counters.block("perf", None, dram_bytes=2e9, flops=1e9, model_bytes=2.5e9)
    assert b["intensity"] == 0.5 and b["bytes_ratio"] == 0.8
    assert counters.unavailable("x") == {"source": "unavailable", "reason": "x", "dram_bytes": None, "flops": None,
                                         "intensity": None, "bytes_ratio": None}


def test_ncu_parser_skips_logs_and_applies_units():
    kernels = ncu.parse_ncu_csv(read("ncu-raw-handmade.csv"))
    assert len(kernels) == 2 and kernels[0]["Kernel Name"] == "triad_fp32"
    assert kernels[0]["dram__bytes_read.sum"] == pytest.approx(1073.74e6)
    assert kernels[0]["gpu__time_duration.sum"] == pytest.approx(540.16e-6)
    b = ncu.derive(kernels, model_bytes=3 * 134217728 * 4)
    assert b["source"] == "ncu" and b["launches"] == 2
    assert b["bytes_ratio"] == pytest.approx(1.0, rel=0.01)  # the triad's declared bytes, counted
    assert b["flops"] == pytest.approx(2 * 134217728)  # one fmul and one fadd per element
    assert ncu.parse_ncu_csv("==PROF== nothing profiled\n") == []
    # a decode call launches three kernels: counts per call sum the kernels, each averaged over its launches
    calls = [{"Kernel Name": name, "dram__bytes_read.sum": b, "dram__bytes_write.sum": 0.0}
             for _ in range(2) for name, b in (("cupy_fill", 0.0), ("decode_partial", 1e9), ("decode_merge", 2e6))]
    b = ncu.derive(calls, model_bytes=1e9)
    assert b["dram_bytes"] == pytest.approx(1.002e9) and b["kernels_per_call"] == 3 and b["launches"] == 6
    assert "no kernel" in ncu.derive([])["reason"]


def test_ncu_command_and_unavailability(monkeypatch):
    cmd = ncu.command("decode", "gpu0", "cupy-fused", ["--quick"], python="python3")
    assert cmd[:6] == ["ncu", "--csv", "--page", "raw", "--clock-control", "none"]
    assert "harness-cupy-fused/" in cmd  # "/" ends a push/pop range name for ncu
    assert cmd[-8:] == ["python3", "-m", "harness", "probe", "decode", "--device", "gpu0", "--quick"]
    assert ncu.permission_error("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission")
    monkeypatch.setattr(ncu.shutil, "which", lambda name: None)
    assert ncu.count("stream", "gpu0", "triad")["reason"] == "Nsight Compute (ncu) is not on the PATH"


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf is not installed here")
def test_counters_perf_on_this_machine_ends_with_a_reason_or_counts():
    proc = run_cli("probe", "stream", "--dtype", "fp64", "--counters", "perf", "--json")
    assert proc.returncode == 0, proc.stderr
    c = json.loads(proc.stdout)["bandwidth"]["triad"]["counters"]
    assert c["source"] == "perf"
    if c["dram_bytes"] is None:
        assert c["reason"] and c["task_clock_s"] > 0  # software events counted, hardware ones explained


def test_profile_records_carry_counters_blocks(tmp_path):
    out = tmp_path / "p.yaml"
    proc = run_cli("profile", "--quick", "--device", "cpu", "--counters", "off", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    from harness.profile import load_profile

    cpu = load_profile(out)["devices"]["cpu"]
    for rec in list(cpu["bandwidth"].values()) + cpu["decode_attention"]:
        assert rec["counters"]["source"] == "unavailable" and "--counters off" in rec["counters"]["reason"]
    assert run_cli("profile", "--counters", "papi").returncode == 2


def test_ncu_count_runs_the_tool_and_reads_its_output(tmp_path, monkeypatch):
    """A stand-in `ncu` on the PATH prints the recorded page; a refused one names the permission."""
    fixture = os.path.join(FIXTURES, "ncu-raw-handmade.csv")
    fake = tmp_path / "ncu"
    fake.write_text(f"#!/bin/sh\ncat {fixture}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    b = ncu.count("stream", "gpu0", "triad", ["--quick"], model_bytes=3 * 134217728 * 4)
    assert b["source"] == "ncu" and b["bytes_ratio"] == pytest.approx(1.0, rel=0.01) and b["kernels_per_call"] == 1
    fake.write_text("#!/bin/sh\necho '==ERROR== ERR_NVGPUCTRPERM - The user does not have permission' >&2\nexit 1\n")
    assert "ERR_NVGPUCTRPERM" in ncu.count("stream", "gpu0", "triad")["reason"]
    fake.write_text("#!/bin/sh\necho 'ncu crashed' >&2\nexit 3\n")
    assert ncu.count("stream", "gpu0", "triad")["reason"] == "ncu failed (exit 3): ncu crashed"
    # a metric this GPU lacks: named, dropped, and the rest still counted
    tensor = next(m for m in ncu.METRICS if "tensor" in m)
    fake.write_text(f"#!/bin/sh\ncase \"$*\" in *{tensor}*) echo '==ERROR== Failed to find metric {tensor.split('.')[0]}' >&2; "
                    f"exit 1;; esac\ncat {fixture}\n")
    b = ncu.count("stream", "gpu0", "triad", model_bytes=3 * 134217728 * 4)
    assert b["source"] == "ncu" and b["metrics_rejected"] == [tensor] and b["dram_bytes"] > 0
    fake.write_text("#!/bin/sh\necho '==ERROR== Failed to find metric dram__bytes_read' >&2\nexit 1\n")
    assert "Failed to find metric" in ncu.count("stream", "gpu0", "triad")["reason"]
