"""Counter adapters: parsers against recorded output, availability with each cause simulated,
counters blocks in profiles, and `--counters perf` ending with a stated reason on a PMU-less VM."""

import json
import re
import os
import shutil
import subprocess
import sys

import pytest

from conftest import FIXTURES, ROOT, run_cli
from harness import counters, profile_fields
from harness.counters import ncu, perf
from harness.errors import HarnessError

HANDMADE_PERF_HW = """# HAND-MADE FIXTURE (no PMU on the dev VM): shaped like perf stat -x, output on a bare-metal Intel CPU
2000.5,msec,task-clock,2000500000,100.00,1.999,CPUs utilized
8000000000,,cycles,2000500000,100.00,4.000,GHz
9000000000,,instructions,2000500000,50.00,1.12,insn per cycle
0,,fp_arith_inst_retired.scalar_double,2000500000,100.00,,
250000000,,fp_arith_inst_retired.512b_packed_double,2000500000,100.00,,
366.21,MiB,uncore_imc_0/cas_count_read/,2000500000,100.00,,
122.07,MiB,uncore_imc_0/cas_count_write/,2000500000,100.00,,
Events disabled
"""


def read(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def test_perf_parser_on_output_recorded_on_this_vm():
    v = perf.parse_perf_csv(read("perf-kvm-software.csv"))
    assert v["task-clock"].value == pytest.approx(119.43) and v["task-clock"].unit == "msec"
    assert v["context-switches"].value == 89
    assert v["cycles"].value is None and v["instructions"].value is None and v["LLC-load-misses"].value is None


def test_perf_parser_on_hardware_events_keeps_units_and_multiplexing():
    v = perf.parse_perf_csv(HANDMADE_PERF_HW)
    assert v["fp_arith_inst_retired.512b_packed_double"].value == 250e6
    assert v["instructions"].enabled_pct == 50.0 and "Events disabled" not in v
    # perf prints the memory controllers' CAS counts scaled to MiB (their sysfs .scale/.unit)
    assert perf.bytes_of(v["uncore_imc_0/cas_count_read/"]) == pytest.approx(366.21 * 2 ** 20)
    assert perf.bytes_of(perf.Reading(1000.0, "", 100.0)) == 64000  # raw CAS commands: 64 bytes each
    assert perf.bytes_of(perf.Reading(1.0, "furlongs", 100.0)) is None


HANDMADE_PERF_HYBRID = """# HAND-MADE FIXTURE (no hybrid CPU here): shaped like perf 6.x's stat -x, on a hybrid Intel CPU,
# a row per core PMU, each scaled by perf as if multiplexed (the atom rows ran 1% of the run)
1500.0,msec,task-clock,1500000000,100.00,1.000,CPUs utilized
1100000000,,cpu_atom/cycles/,11000000,1.00,,
1600000000,,cpu_core/cycles/,1470000000,98.00,,
<not counted>,,cpu_atom/instructions/,0,0.00,,
3000000000,,cpu_core/instructions/,1500000000,100.00,,
800000000,,cpu_core/fp_arith_inst_retired.256b_packed_single/,1470000000,98.00,,
"""


def test_perf_rows_of_a_hybrid_cpu_are_unscaled_and_folded_per_event():
    v = perf.parse_perf_csv(HANDMADE_PERF_HYBRID)
    cycles = perf.reading_of(v, "cycles")  # 1.1e9 was scaled up from 1% of the run: 1.1e7 counted
    assert cycles.value == pytest.approx((1.1e7 + 1.6e9 * 0.98) / 0.99) and cycles.enabled_pct == pytest.approx(99)
    assert cycles.pmus == ("cpu_atom", "cpu_core")
    instructions = perf.reading_of(v, "instructions")  # never scheduled on an atom core: the core row is all
    assert instructions.value == 3e9 and instructions.enabled_pct == 100 and instructions.pmus == ("cpu_core",)
    flops = perf.reading_of(v, "fp_arith_inst_retired.256b_packed_single")
    assert flops.value == pytest.approx(8e8) and flops.enabled_pct == 98  # perf's own scaling, kept
    assert perf.reading_of(v, "task-clock").value == 1500.0 and perf.reading_of(v, "task-clock").pmus == ()
    assert perf.reading_of(v, "branches") is None and perf.reading_of(v, "cles") is None
    assert perf.reading_of({"cpu_atom/cycles/": perf.Reading(None, "", 0.0)}, "cycles").value is None
    # <not counted> (opened, never scheduled: the process ran on the other core type) is supported;
    # <not supported> on every PMU is not
    assert perf.reading_of(v, "instructions").supported and not v["cpu_atom/instructions/"].value
    unsupported = perf.parse_perf_csv("<not supported>,,cpu_atom/x/,0,0.00,,\n<not supported>,,cpu_core/x/,0,0.00,,\n")
    assert not perf.reading_of(unsupported, "x").supported


@pytest.mark.parametrize("layout,available", [
    ({"cpu": []}, True),  # x86
    ({"cpu_core": ["cpus"], "cpu_atom": ["cpus"]}, True),  # hybrid Intel
    ({"armv8_pmuv3_0": ["cpus"], "arm_cmn_0": ["cpumask"]}, True),  # an Arm server (Grace, Graviton, Ampere)
    ({"armv8_cortex_a53": ["cpus"], "armv8_cortex_a72": ["cpus"]}, True),  # big.LITTLE
    ({"arm_cmn_0": ["cpumask"], "software": []}, False),  # uncore only: no core events for a process
])
def test_core_pmus_are_found_by_name_or_their_cpus_file(tmp_path, monkeypatch, layout, available):
    root = sysfs(tmp_path / "devices", layout)
    monkeypatch.setattr(perf.shutil, "which", lambda name: "/usr/bin/perf")
    paranoid = tmp_path / "paranoid"
    paranoid.write_text("2\n")
    reason = perf.unavailable_reason({}, root=root, paranoid_path=str(paranoid))
    assert (reason is None) == available and (available or "no hardware PMU on this kernel" in reason)


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


def sysfs(root, layout):
    """A fake /sys/bus/event_source/devices: {pmu: [files under it]}."""
    for pmu, files in layout.items():
        (root / pmu).mkdir(parents=True, exist_ok=True)
        for name in files:
            (root / pmu / name).parent.mkdir(parents=True, exist_ok=True)
            (root / pmu / name).write_text("event=0x04,umask=0x03\n")
    return str(root)


CAS = ["events/cas_count_read", "events/cas_count_write"]
INTEL_SERVER = {"cpu": [], "uncore_imc_0": CAS, "uncore_imc_1": CAS,
                "uncore_imc_free_running_0": ["events/read", "events/write"]}


@pytest.mark.parametrize("layout,events,label", [
    (INTEL_SERVER, ["uncore_imc_0/cas_count_read/", "uncore_imc_1/cas_count_read/",
                    "uncore_imc_0/cas_count_write/", "uncore_imc_1/cas_count_write/"], "cas_count_read/cas_count_write"),
    ({"cpu": [], "uncore_imc": ["events/data_reads", "events/data_writes"]},
     ["uncore_imc/data_reads/", "uncore_imc/data_writes/"], "data_reads/data_writes"),
    ({"cpu": [], "uncore_imc_free_running_0": ["events/data_read", "events/data_write"]},
     ["uncore_imc_free_running_0/data_read/", "uncore_imc_free_running_0/data_write/"], "uncore_imc_free_running"),
    ({"cpu": [], "amd_umc_0": ["format/event", "format/rdwrmask"], "amd_umc_1": ["format/event", "format/rdwrmask"]},
     ["amd_umc_0/event=0x0a,rdwrmask=0x1/", "amd_umc_1/event=0x0a,rdwrmask=0x1/",
      "amd_umc_0/event=0x0a,rdwrmask=0x2/", "amd_umc_1/event=0x0a,rdwrmask=0x2/"], "amd_umc"),
    ({"cpu": [], "uncore_imc_0": ["events/cas_count_read"]}, [], None),  # a half pair is no pair
])
def test_memory_controller_events_are_found_in_sysfs(tmp_path, layout, events, label):
    found, found_label = perf.memory_controller_events(sysfs(tmp_path / "devices", layout))
    assert found == events
    assert (found_label is None) if label is None else label in found_label


@pytest.mark.parametrize("family,model,zen", [(0x17, 0x31, "Zen 2"), (0x19, 0x01, "Zen 3"), (0x19, 0x21, "Zen 3"),
                                              (0x19, 0x11, None), (0x19, 0x61, None), (0x1A, 0x02, None)])
def test_zen_1_to_3_count_dram_through_the_data_fabric(tmp_path, family, model, zen):
    # Zen 1-3 have no UMC PMU: the data fabric's DRAM channel counters (amd_df); Zen 4+ use amd_umc
    root = sysfs(tmp_path / "devices", {"cpu": [], "amd_df": ["format/event", "format/umask"]})
    found, label = perf.memory_controller_events(root, {"vendor": "AuthenticAMD", "family": family, "model_number": model})
    if zen:
        assert found == [f"dram_channel_data_controller_{i}" for i in range(8)] and "approximate" in label
    else:
        assert (found, label) == ([], None)


def test_event_plans_by_vendor_width_and_permission(tmp_path):
    root = sysfs(tmp_path / "devices", INTEL_SERVER)
    strict, open_ = tmp_path / "p2", tmp_path / "p0"
    strict.write_text("2")
    open_.write_text("0")
    intel = {"vendor": "GenuineIntel", "simd": ["avx", "avx2", "avx512f"]}
    plan = perf.event_plan(intel, root=root, paranoid_path=str(open_), euid=1000)
    assert plan.dram_system_wide and plan.flop["fp_arith_inst_retired.512b_packed_single"] == 16
    assert "system-wide" in plan.dram_label and plan.notes == []
    # 2 base + 8 FLOP events in passes of 4; the memory controllers count system-wide in the first
    passes = plan.passes()
    assert [len(core) - 1 for core, _ in passes] == [4, 4, 2] and all(core[0] == "task-clock" for core, _ in passes)
    assert passes[0][1] == plan.dram and passes[1][1] == passes[2][1] == []
    plan = perf.event_plan(intel, root=root, paranoid_path=str(strict), euid=1000)
    assert not plan.dram_system_wide and plan.dram == ["LLC-load-misses", "LLC-store-misses"]
    assert "estimate" in plan.dram_label and "perf_event_paranoid <= 0 or root (it is 2)" in plan.notes[0]
    assert perf.event_plan(intel, root=root, paranoid_path=str(strict), euid=0).dram_system_wide  # root may
    avx2 = perf.flop_events({"vendor": "GenuineIntel", "simd": ["avx", "avx2"]})
    assert len(avx2) == 6 and not any("512b" in e for e in avx2)  # no AVX-512: perf may not know the events
    amd = perf.event_plan({"vendor": "AuthenticAMD"}, root=str(tmp_path / "none"))
    assert amd.flop == {"fp_ret_sse_avx_ops.all": 1} and amd.dram[0] == "LLC-load-misses"
    assert "no memory-controller PMU" in amd.notes[0]
    assert "no FLOP events known" in perf.event_plan({"vendor": "ARM"}, root=str(tmp_path / "none")).notes[0]


@pytest.fixture
def fake_perf(tmp_path, monkeypatch):
    """`perf` on the PATH is tests/fake_perf.py, answering from the spec this returns a writer for."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "perf"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {os.path.join(ROOT, 'tests', 'fake_perf.py')} \"$@\"\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    log = tmp_path / "perf.log"
    perf.accepted.cache_clear()

    def write(**spec):
        path = tmp_path / "spec.json"
        path.write_text(json.dumps({"log": str(log), **spec}))
        monkeypatch.setenv("FAKE_PERF_SPEC", str(path))
        return lambda: [json.loads(line) for line in log.read_text().splitlines()]

    yield write
    perf.accepted.cache_clear()


@pytest.mark.parametrize("user_locale", ["C.UTF-8", "de_DE.UTF-8"])
def test_perf_count_on_a_bare_metal_intel_server(tmp_path, fake_perf, monkeypatch, user_locale):
    """Passes of four core events on this process, the memory controllers system-wide alongside
    the first, each enabled through perf's control pipe; MiB scaled back to bytes, FLOPs weighted.
    A user's decimal-comma locale does not reach perf's CSV."""
    monkeypatch.setenv("LC_ALL", user_locale)
    root = sysfs(tmp_path / "devices", INTEL_SERVER)
    paranoid = tmp_path / "p0"
    paranoid.write_text("0")
    counts = {e: [0, ""] for e in perf.INTEL_FLOP_EVENTS}
    counts.update({"task-clock": [400.0, "msec"], "cycles": [8e8, ""], "instructions": [1.6e9, ""],
                   "fp_arith_inst_retired.512b_packed_double": [1e8, ""],  # 8 FLOP each
                   "fp_arith_inst_retired.scalar_single": [2e6, ""],
                   "uncore_imc_0/cas_count_read/": [1000.0, "MiB"], "uncore_imc_1/cas_count_read/": [1000.0, "MiB"],
                   "uncore_imc_0/cas_count_write/": [0.0, "MiB"], "uncore_imc_1/cas_count_write/": [48.0, "MiB"]})
    calls = fake_perf(counts=counts)
    cpu = {"vendor": "GenuineIntel", "simd": ["avx", "avx512f"]}
    runs = []
    b = perf.count(cpu, runs.append, 4, model_bytes=512 * 2 ** 20, root=root, paranoid_path=str(paranoid))
    assert runs == [4, 4, 4] and b["passes"] == 3  # the workload re-runs once per pass
    assert b["reason"] is None and b["source"] == "perf"
    assert b["flops"] == pytest.approx((8e8 + 2e6) / 4)
    assert b["dram_bytes"] == pytest.approx(2048 * 2 ** 20 / 4) and b["bytes_ratio"] == pytest.approx(1.0)
    assert b["intensity"] == pytest.approx(b["flops"] / b["dram_bytes"])
    assert b["task_clock_s"] == pytest.approx(0.1) and b["cycles"] == 2e8 and "system-wide" in b["dram_bytes_source"]
    assert b["flops_source"].startswith("Intel fp_arith_inst_retired")
    profile_fields.check_mapping({"counters": b}, "record")  # a profile holding it loads
    sessions = [a for a in calls() if "--" not in a]
    system = [a for a in sessions if "-a" in a]
    assert len(system) == 1 and "uncore_imc_1/cas_count_write/" in system[0][system[0].index("-e") + 1]
    assert all("-p" in a and "--control" in a and a[a.index("-D") + 1] == "-1" for a in sessions if a not in system)


def test_perf_count_names_refused_events_and_multiplexing(tmp_path, fake_perf):
    root = sysfs(tmp_path / "devices", {"cpu": []})
    paranoid = tmp_path / "p"
    paranoid.write_text("2")
    fake_perf(counts={"task-clock": [10.0, "msec"], "cycles": [1e6, ""],  # instructions: <not supported>
                      "LLC-load-misses": [100.0, ""], "LLC-store-misses": [0.0, ""]},
              reject=["fp_ret_sse_avx_ops.all"], pct=60.0)
    b = perf.count({"vendor": "AuthenticAMD"}, lambda loops: None, 1, model_bytes=6400, root=root,
                   paranoid_path=str(paranoid))
    assert b["flops"] is None and "fp_ret_sse_avx_ops.all: event syntax error" in b["reason"]
    assert "no memory-controller PMU" in b["reason"] and "estimate" in b["dram_bytes_source"]
    assert b["dram_bytes"] == 6400 and b["bytes_ratio"] == 1.0
    assert b["warnings"] == ["multiplexed: some counts were scaled from 60% of the run"]
    assert b["cycles"] == 1e6 and b["instructions"] is None and "instructions" not in b["events"]
    assert perf.accepted("instructions") == "perf cannot count it here (<not supported>)"


def test_perf_count_on_a_hybrid_intel_cpu_folds_its_core_pmus(tmp_path, fake_perf):
    """perf prints cpu_core/ and cpu_atom/ rows for one event: they are counted, not refused as
    missing, unscaled and summed; a FLOP event only the P-cores count is scaled and says so."""
    root = sysfs(tmp_path / "devices", {"cpu_core": ["cpus"], "cpu_atom": ["cpus"]})
    paranoid = tmp_path / "p"
    paranoid.write_text("2")
    cpu = {"vendor": "GenuineIntel", "simd": ["avx", "avx2"]}
    fake_perf(counts={"task-clock": [100.0, "msec"]},
              per_pmu={"cycles": {"cpu_core": [4e8, 100.0]}, "instructions": {"cpu_core": [8e8, 100.0]},
                       "LLC-load-misses": {"cpu_core": [1000, 100.0]}, "LLC-store-misses": {"cpu_core": [24, 100.0]},
                       **{e: {"cpu_core": [0, 95.0]} for e in perf.flop_events(cpu)},
                       "fp_arith_inst_retired.256b_packed_single": {"cpu_core": [1e8, 95.0]}})
    b = perf.count(cpu, lambda loops: None, 2, model_bytes=32768, root=root, paranoid_path=str(paranoid))
    assert b["cycles"] == 2e8 and b["instructions"] == 4e8 and b["flops"] == pytest.approx(8e8 / 2)
    assert b["dram_bytes"] == 1024 * 64 / 2 and "estimate" in b["dram_bytes_source"]
    assert "not counted" not in (b["reason"] or "")
    assert len(b["warnings"]) == 1 and "fp_arith_inst_retired.scalar_single" in b["warnings"][0]
    assert "counted on cpu_core during 95% of the run" in b["warnings"][0] and "taskset" in b["warnings"][0]
    assert b["events"]["cpu_core/cycles/"] == 4e8  # the raw rows are kept as perf printed them
    # the acceptance probe (`perf stat -e E -- true`) may run `true` on an E-core only: <not counted>
    # on cpu_core is an event perf opened, not a refusal
    perf.accepted.cache_clear()
    fake_perf(counts={}, per_pmu={"cycles": {"cpu_core": ["<not counted>", 0.0], "cpu_atom": [1e5, 100.0]},
                                  "fp_arith_inst_retired.scalar_single": {"cpu_core": ["<not counted>", 0.0]}})
    assert perf.accepted("cycles") is None and perf.accepted("fp_arith_inst_retired.scalar_single") is None


def test_perf_count_on_an_arm_neoverse_weights_sve_operations_by_the_vector_length(tmp_path, fake_perf, monkeypatch):
    """FP_FIXED_OPS_SPEC counts FLOPs; FP_SCALE_OPS_SPEC counts them per 128 bits of SVE vector
    (a Neoverse V1's 256-bit SVE: x 2). A part without those events is named in the reason."""
    root = sysfs(tmp_path / "devices", {"armv8_pmuv3_0": ["cpus"]})
    paranoid, vl = tmp_path / "p", tmp_path / "sve_default_vector_length"
    paranoid.write_text("2")
    vl.write_text("32\n")
    monkeypatch.setattr(perf, "SVE_VECTOR_LENGTH", str(vl))
    v1 = {"vendor": "ARM", "model_number": 0xD40}
    assert perf.flop_events(v1) == {"r80c1": 1, "r80c0": 2.0}
    fake_perf(counts={"task-clock": [10.0, "msec"], "cycles": [3e7, ""], "instructions": [6e7, ""],
                      "r80c1": [1e6, ""], "r80c0": [5e5, ""]})
    b = perf.count(v1, lambda loops: None, 1, model_bytes=None, root=root, paranoid_path=str(paranoid))
    assert b["flops"] == 2e6 and "speculatively executed" in b["flops_source"] and "x 256/128" in b["flops_source"]
    n1 = perf.event_plan({"vendor": "ARM", "model_number": 0xD0C}, root=root)
    assert n1.flop == {} and "part 0xd0c" in n1.notes[0] and "Neoverse V1, N2, V2" in n1.notes[0]


def test_perf_that_cannot_start_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "perf").write_text("#!/bin/sh\necho 'perf: unknown option --control' >&2\nexit 129\n")
    (bin_dir / "perf").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    b = perf.count({"hypervisor": "KVM"}, lambda loops: None, 1, None, root=str(tmp_path / "none"))
    assert b["source"] == "perf" and "no hardware PMU" in b["reason"]
    with perf.PerfSession(["task-clock"]) as s:
        pass
    assert s.error == "perf: unknown option --control" and s.readings == {}


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
    assert b["flops"] == pytest.approx(2 * 134217728)  # one FFMA per element (test_gpu_code reads it in the SASS)
    assert ncu.parse_ncu_csv("==PROF== nothing profiled\n") == []
    header_only = read("ncu-raw-handmade.csv").split("\n")
    header_only = "\n".join(header_only[:next(i for i, l in enumerate(header_only) if l.startswith('"ID"')) + 1])
    assert ncu.parse_ncu_csv(header_only) == []  # cut off after its header (ncu killed): no kernel, no crash
    # a decode call launches three kernels: counts per call sum the kernels, each averaged over its launches
    calls = [{"Kernel Name": name, "dram__bytes_read.sum": b, "dram__bytes_write.sum": 0.0}
             for _ in range(2) for name, b in (("cupy_fill", 0.0), ("decode_partial", 1e9), ("decode_merge", 2e6))]
    b = ncu.derive(calls, model_bytes=1e9)
    assert b["dram_bytes"] == pytest.approx(1.002e9) and b["kernels_per_call"] == 3 and b["launches"] == 6
    assert "no kernel" in ncu.derive([])["reason"]


def test_ncu_units_scale_by_their_prefix_and_an_unknown_one_is_named_not_guessed():
    assert [ncu.unit_scale(u) for u in ("byte", "Gbyte", "nsecond", "usecond", "Kinst", "Minst", "Msector", "%", "")] \
        == [1, 1e9, 1e-9, 1e-6, 1e3, 1e6, 1e6, 1, 1]
    assert ncu.unit_scale("Xbyte") is None and ncu.unit_scale("furlong") is None
    page = ('"ID","Kernel Name","dram__bytes_read.sum","dram__bytes_write.sum","sm__sass_thread_inst_executed_op_ffma_pred_on.sum"\n'
            '"","","Gbyte","byte","Minst"\n"0","fma_fp32","0.5","1,024","16.78"\n')
    (k,) = ncu.parse_ncu_csv(page)
    assert k["dram__bytes_read.sum"] == 0.5e9 and k["dram__bytes_write.sum"] == 1024
    assert ncu.derive([k])["flops"] == pytest.approx(2 * 16.78e6)  # FFMA counted in millions: scaled, not taken as 16.78
    (odd,) = ncu.parse_ncu_csv(page.replace('"Minst"', '"Xinst"'))
    b = ncu.derive([odd])
    assert odd["sm__sass_thread_inst_executed_op_ffma_pred_on.sum"] == "16.78 Xinst"
    assert b["flops"] is None and b["dram_bytes"] is None and "16.78 Xinst" in b["reason"]
    (missing,) = ncu.parse_ncu_csv(page.replace('"1,024"', '"n/a"'))  # a metric ncu could not collect
    assert "dram__bytes_write.sum = 'n/a', not a number" in ncu.derive([missing])["reason"]


def test_a_metric_ncu_did_not_give_is_unknown_never_zero():
    ffma, hfma = (f"sm__sass_thread_inst_executed_op_{op}_pred_on.sum" for op in ("ffma", "hfma"))
    names = [m for m in ncu.SUMMED if m not in ("dram__bytes_write.sum", hfma)]  # as if ncu had rejected these two
    b = ncu.derive([{"Kernel Name": "fma_fp32", **{m: 0.0 for m in names}, ffma: 1e6, "dram__bytes_read.sum": 4e3}])
    assert b["dram_bytes"] is None and b["intensity"] is None  # the read alone is not the DRAM traffic
    assert "dram_bytes not counted: ncu gave no dram__bytes_write.sum" in b["reason"]
    assert b["flops"] == 2e6 and f"flops without ncu gave no {hfma}" in b["reason"]  # fp32 still counted, the gap named
    assert b["l2_bytes"] == 0.0 and b["kernel_time_s"] == 0.0
    profile_fields.check_mapping({"counters": b}, "record")
    (only_bytes,) = ncu.parse_ncu_csv('"ID","Kernel Name","dram__bytes_read.sum","dram__bytes_write.sum"\n"","","byte","byte"\n'
                                      '"0","k","1,024","0"\n')
    b = ncu.derive([only_bytes])
    assert b["dram_bytes"] == 1024 and b["flops"] is None and b["kernel_time_s"] is None
    assert "flops not counted" in b["reason"] and "kernel_time_s not counted" in b["reason"]


def test_the_terminal_summary_says_what_was_counted_and_once_why_not():
    from harness.summary import section_lines

    def rec(counters, **declared):
        return {"samples_s": [1e-3], "threads": 2, "validated": True, "flops_per_s": 1e12, "median_flops_per_s": 1e12,
                "dtype": "fp32", "counters": counters, **declared}

    no_pmu = counters.block("perf", "no hardware PMU under the KVM hypervisor", task_clock_s=8.5e-5)
    section = {"peak_flops": {"fp32": rec(counters.block("ncu", None, dram_bytes=2.0e3, flops=2.1e9), flops_per_call=2.0e9),
                              "fp64": rec(no_pmu), "fp16": rec(no_pmu)},
               "bandwidth": {"read": rec(counters.unavailable("counting was not asked for (--counters off)"))}}
    lines = section_lines(section)
    assert "counted peak_flops.fp32 (ncu): 2.0 kB (declared n/a), 2.1 GFLOP (declared 2.0 GFLOP) a call" in lines
    assert lines.count("counters (perf): no hardware PMU under the KVM hypervisor (task-clock counted: 0.085 ms a call)") == 1
    assert not any("--counters off" in line for line in lines)
    point = rec(counters.block("ncu", None, dram_bytes=1.07e9), impl="cupy-fused", seq_len=32768, batch=8, heads=32,
                kv_heads=8, head_dim=128, bytes_per_call=1.09e9, time_s=1e-3, achieved={})
    assert "counted decode cupy-fused fp32 B=8 H=32/8 d_h=128 S=32768 (ncu): 1.1 GB (declared 1.1 GB)" in \
        section_lines({"decode_attention": [point]})[-1]  # named by its shape, as in the report's table


def test_ncu_command_and_unavailability(monkeypatch):
    cmd = ncu.command("decode", "gpu0", "cupy-fused", ["--quick"], python="python3")
    assert cmd[:8] == ["ncu", "--csv", "--page", "raw", "--print-units", "base", "--clock-control", "none"]
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


@pytest.mark.parametrize("mode,device,needle", [
    ("ncu", "cpu", "--counters ncu counts GPU probes; the CPU is counted by perf"),
    ("perf", "gpu", "--counters perf counts CPU probes; gpu is counted by ncu"),
    ("perf", "gpu1", "--counters perf counts CPU probes; gpu1 is counted by ncu"),
    ("papi", "all", "--counters 'papi' is invalid: choose auto, off, perf, ncu"),
])
def test_a_counter_that_cannot_count_the_device_is_refused_up_front(mode, device, needle):
    with pytest.raises(HarnessError, match=re.escape(needle)):
        counters.check_mode(mode, device)
    for ok in ("auto", "off"):
        assert counters.check_mode(ok, device) == ok
    assert counters.check_mode("ncu", "all") == "ncu" and counters.check_mode("perf", "all") == "perf"
    if mode == "ncu":  # refused before the probe runs, not after
        proc = run_cli("probe", "stream", "--counters", "ncu")
        assert proc.returncode == 2 and needle in proc.stderr and "bandwidth" not in proc.stdout


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
    # the profiler does not load (as under gVisor; these lines hand-made from the message seen there) and
    # the application runs unprofiled, exit 0: that failure is the reason, not an empty NVTX range
    fake.write_text("#!/bin/sh\necho '==PROF== Connected to process 4242'\n"
                    "echo '==ERROR== Failed to initialize the profiler: LibraryNotLoaded' >&2\n"
                    "echo 'bandwidth.triad  best 3.1 TB/s'\nexit 0\n")
    b = ncu.count("stream", "gpu0", "triad")
    assert b["source"] == "unavailable" and b["reason"] == (
        "ncu counted nothing: ==ERROR== Failed to initialize the profiler: LibraryNotLoaded")
    assert ncu.recurs(b["reason"]) and not ncu.recurs("ncu failed (exit 3): ncu crashed") and not ncu.recurs(None)
    fake.write_text("#!/bin/sh\necho '==ERROR== ERR_NVGPUCTRPERM - The user does not have permission' >&2\nexit 1\n")
    assert ncu.recurs(ncu.count("stream", "gpu0", "triad")["reason"])  # refused once, refused every time


def test_ncu_details_page_is_read_as_well_as_the_raw_page():
    """ncu's default page (a row per metric) as public captures show it: abbreviated units, n/a for
    a metric the kernel did not report, a row with a trailing comma."""
    from probes import gpu_peak

    kernels = ncu.parse_ncu_csv(read("ncu-details-handmade.csv"))
    assert len(kernels) == 2 and kernels[1]["Kernel Name"] == "fma_fp32"
    assert kernels[1]["gpu__time_duration.sum"] == pytest.approx(532.45e-6)  # "us", on the trailing-comma row
    b = ncu.derive(kernels)
    declared = 2 * gpu_peak.ACC * 4096 * (132 * 16) * 256  # the probe's flops_per_call on an H100: 2 x chains x steps x threads
    assert b["flops"] == pytest.approx(declared, rel=0.01) and b["flops"] > declared  # + the chains' final sums
    assert b["dram_bytes"] == pytest.approx(1.54e3 + 2163.71e3) and "tensor_pipe_active_pct" not in b


def test_ncu_tensor_pipe_share_is_weighted_by_kernel_time():
    k = lambda name, pct, t: {"Kernel Name": name, ncu.TENSOR_PIPE: pct, "gpu__time_duration.sum": t}  # noqa: E731
    assert ncu.derive([k("gemm", 90.0, 3e-3), k("epilogue", 0.0, 1e-3)])["tensor_pipe_active_pct"] == pytest.approx(67.5)


def test_real_ncu_without_a_driver_is_a_reason(tmp_path, monkeypatch):
    """Recorded from ncu 2022.3 (Debian's nsight-compute-target) running this command on the
    development VM, which has no GPU driver."""
    fake = tmp_path / "ncu"
    fake.write_text(f"#!/bin/sh\ncat {FIXTURES}/ncu-2022.3-no-driver.stdout\ncat {FIXTURES}/ncu-2022.3-no-driver.stderr >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    b = ncu.count("stream", "gpu0", "triad", ["--quick", "--dtype", "fp32"], model_bytes=1e9)
    assert b["source"] == "unavailable" and b["reason"] == (
        "ncu failed (exit 1): ==ERROR== Nsight Compute failed to connect to the CUDA driver (stub libcuda.so[.1] on path?).")
    assert ncu.parse_ncu_csv(read("ncu-2022.3-no-driver.stdout")) == []


def test_every_metric_we_ask_ncu_for_is_one_ncu_lists_for_hopper_and_ampere():
    listed = {line for line in read("ncu-metrics-gh100-ga100.txt").splitlines() if not line.startswith("#")}
    missing = set(ncu.METRICS) - listed
    assert not missing, f"{missing}: not in ncu's recorded list; check and re-record it (the fixture's header has the command)"


@pytest.mark.skipif(shutil.which("ncu") is None, reason="Nsight Compute (ncu) is not installed here")
@pytest.mark.parametrize("chip", ["gh100", "ga100"])
def test_every_metric_we_ask_ncu_for_exists_on_hopper_and_ampere(chip, tmp_path):
    # ncu lists a chip's metrics without a GPU (Debian's nsight-compute-target has ncu)
    bases = ",".join(sorted({m.split(".")[0] for m in ncu.METRICS}))
    proc = subprocess.run(["ncu", "--query-metrics-mode", "suffix", "--metrics", bases, "--chips", chip],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert not set(ncu.METRICS) - listed, set(ncu.METRICS) - listed


def test_a_decimal_comma_locale_does_not_reach_ncu(tmp_path, monkeypatch):
    """ncu runs in the C locale: the parser strips "," as a thousands separator, so a page written
    with a decimal comma (0,53) would be read 100x too large (053) without a word."""
    page = '"ID","Kernel Name","dram__bytes_read.sum","dram__bytes_write.sum","gpu__time_duration.sum"\n' \
           '"","","Mbyte","Mbyte","usecond"\n"0","triad","%s","%s","%s"\n'
    fake = tmp_path / "ncu"
    fake.write_text("#!/bin/sh\ncase \"${LC_ALL:-${LC_NUMERIC:-$LANG}}\" in de_*) d=',';; *) d='.';; esac\n"
                    f"printf '{page}' 1${{d}}5 0${{d}}5 2${{d}}25\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    b = ncu.count("stream", "gpu0", "triad", model_bytes=2.0e6)
    assert b["dram_bytes"] == pytest.approx(2.0e6) and b["kernel_time_s"] == pytest.approx(2.25e-6)
