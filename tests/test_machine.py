import os
import re
import subprocess
import sys

import pytest

from conftest import FIXTURES
from harness import cpu_peaks, machine


def read_fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def test_parse_cpuinfo_of_this_kvm_guest():
    info = machine.parse_cpuinfo(read_fixture("cpuinfo-amd-epyc-zen5-kvm.txt"))
    assert info["processors"] == 2 and info["sockets"] == 1
    assert info["fields"]["model name"] == "AMD EPYC"
    assert {"avx512f", "fma", "hypervisor"} <= info["flags"]


@pytest.mark.parametrize("model,cores,expected", [
    ("AMD EPYC", 2, "amd-epyc-2c"),
    ("Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz", 4, "intel-core-i5-8250u-4c"),
    ("AMD Ryzen 9 7950X 16-Core Processor", 16, "amd-ryzen-9-7950x-16c"),
    ("AMD Ryzen 7 PRO 7840U w/ Radeon 780M Graphics", 8, "amd-ryzen-7-pro-7840u-w-radeon-780m-graphics-8c"),
])
def test_machine_slug_is_stable_and_readable(model, cores, expected):
    assert machine.machine_slug(model, cores) == expected


@pytest.mark.parametrize("model", ["", "???", "Neoverse-V2", "Ünïcode CPU (TM) @ 3.0GHz", "  x  "])
def test_every_slug_is_an_id_a_profile_may_hold(model):
    """profile.validate holds machine.id to profile.MACHINE_ID: whatever a CPU calls itself, its own
    profile must load."""
    import re

    from harness.profile import MACHINE_ID

    assert re.fullmatch(MACHINE_ID, machine.machine_slug(model, 2))


@pytest.mark.parametrize("fixture,expected", [("cpuinfo-amd-epyc-zen4-kvm.txt", "amd-epyc-zen4-2c"),
                                              ("cpuinfo-amd-epyc-zen5-kvm.txt", "amd-epyc-zen5-2c"),
                                              ("cpuinfo-intel-xeon-family6-model207-kvm.txt",
                                               "intel-xeon-family6-model207-2c"),
                                              ("cpuinfo-intel-i5-8250u.txt", "intel-core-i5-8250u-4c")])
def test_kvm_guests_that_hide_the_model_are_told_apart_by_generation(fixture, expected):
    """Both dev VMs call themselves 'AMD EPYC' with 2 cores (recorded /proc/cpuinfo: family 25
    model 17 and family 26 model 2): one id would have made each profile the other's history and
    `make regress` compare a Zen 4 with a Zen 5. A name that names a model keeps its id."""
    assert machine.identify_cpu(os.path.join(FIXTURES, fixture))["id"] == expected


@pytest.mark.parametrize("family,model,generation", [
    (0x17, 0x01, "Zen 1"), (0x17, 0x08, "Zen 1"), (0x17, 0x31, "Zen 2"), (0x17, 0x71, "Zen 2"),
    (0x19, 0x01, "Zen 3"), (0x19, 0x11, "Zen 4"), (0x19, 0x21, "Zen 3"), (0x19, 0x44, "Zen 3"),
    (0x19, 0x50, "Zen 3"), (0x19, 0x61, "Zen 4"), (0x19, 0x74, "Zen 4"), (0x19, 0xA0, "Zen 4"),
    (0x1A, 0x02, "Zen 5"), (0x1A, 0x44, "Zen 5"), (0x19, 0xB0, None), (0x15, 0x02, None), (0x19, None, None)])
def test_amd_zen_generations_by_family_and_model(family, model, generation):
    # Naples 17h/01h, Pinnacle Ridge 08h, Rome 31h, Matisse 71h, Milan 19h/01h, Genoa 11h,
    # Vermeer 21h, Rembrandt 44h, Cezanne 50h, Raphael 61h, Phoenix 74h, Bergamo A0h, Turin 1Ah/02h,
    # Granite Ridge 44h; Piledriver (15h) is no Zen
    assert machine.amd_zen_generation(family, model) == generation


def test_a_generic_name_without_a_known_generation_gets_family_and_model():
    assert machine.machine_slug("Intel(R) Xeon(R) Processor", 2, 6, 167, "GenuineIntel") == "intel-xeon-family6-model167-2c"
    assert machine.machine_slug("AMD EPYC", 2, 0x19, 0xB0, "AuthenticAMD") == "amd-epyc-family25-model176-2c"
    assert machine.machine_slug("AMD EPYC 9654 96-Core Processor", 96, 0x19, 0x11, "AuthenticAMD") == "amd-epyc-9654-96c"


def test_sizes_and_cpu_lists():
    assert machine.parse_size_bytes("48K") == 48 * 1024
    assert machine.parse_size_bytes("32M") == 32 << 20
    assert machine.count_cpu_list("0-3,8") == 5
    with pytest.raises(ValueError):
        machine.parse_size_bytes("lots")


def test_read_caches_from_a_sysfs_tree(tmp_path):
    def index(i, level, ctype, size, shared):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, value in (("level", level), ("type", ctype), ("size", size), ("shared_cpu_list", shared)):
            (d / name).write_text(f"{value}\n")

    index(0, 1, "Data", "48K", "0")
    index(1, 1, "Instruction", "32K", "0")
    index(2, 2, "Unified", "1024K", "0")
    index(3, 3, "Unified", "32768K", "0-1")
    caches = machine.read_caches(str(tmp_path), online_cpus=2)
    assert [(c["level"], c["size_bytes"], c["instances"]) for c in caches] == [
        (1, 48 << 10, 2), (2, 1 << 20, 2), (3, 32 << 20, 1)]
    assert machine.last_level_cache_bytes({"caches": caches}) == 32 << 20


def test_caches_sysfs_does_not_show_are_said_to_be_unknown_not_left_blank(tmp_path, monkeypatch):
    # a sysfs with CPU directories but no cache/ (some containers; perhaps gVisor, unchecked): sizes assumed, and said
    from harness import report, run

    assert machine.read_caches(str(tmp_path / "cpu0" / "cache"), online_cpus=16) == []
    monkeypatch.setattr(machine, "read_caches", lambda *a, **k: [])
    doc = run.build_profile(device="cpu", quick=True, probe_names=("stream",), counters="off")
    cpu = doc["machine"]["cpu"]
    assert cpu["caches"] == [] and machine.last_level_cache_bytes(cpu) == machine.ASSUMED_LLC_BYTES
    (warning,) = [w for w in doc["devices"]["cpu"]["warnings"] if "no caches are visible" in w]
    assert "sized as if the last-level cache were 32 MiB" in warning
    text = report.markdown(report.report_data(doc))
    assert "| caches | unknown (none visible in sysfs: sizes that depend on the last-level cache assumed one of 32 MiB) |" in text
    assert f"- {warning}" in text
    section = {}
    run.flag_unknown_caches(section, {"caches": [{"level": 3, "size_bytes": 1 << 25, "instances": 1}]})
    assert section == {}  # caches known: nothing to say


def test_meminfo_values_that_are_no_numbers_count_as_absent(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal:       24683584 kB\nMemFree: lots kB\nMemAvailable:   20000000 kB\n")
    assert machine.read_meminfo(str(tmp_path / "meminfo")) == (24683584 * 1024, 20000000 * 1024)
    (tmp_path / "meminfo").write_text("MemTotal: ? kB\nMemFree: 1 kB\n")
    assert machine.read_meminfo(str(tmp_path / "meminfo")) == (None, 1024)


def test_a_kernel_file_that_is_no_text_counts_as_unreadable(tmp_path):
    from harness.sysfs import read_text

    (tmp_path / "size").write_bytes(b"\xff\xfe32K\n")
    (tmp_path / "level").write_text(" 3\n")
    assert read_text(str(tmp_path / "size")) is None and read_text(str(tmp_path / "level")) == "3"
    assert read_text(str(tmp_path / "missing")) is None


def test_sockets_from_the_kernel_topology_where_cpuinfo_names_none(tmp_path):
    # Arm's /proc/cpuinfo has no "physical id": a two-socket Ampere Altra counts its packages in sysfs
    for cpu, package in ((0, 0), (1, 0), (2, 1), (3, 1)):
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "physical_package_id").write_text(f"{package}\n")
    (tmp_path / "cpufreq").mkdir()  # not a CPU
    assert machine.sysfs_sockets(str(tmp_path)) == 2
    assert machine.sysfs_sockets(str(tmp_path / "none")) is None


def test_frequency_sources(tmp_path):
    f = machine.read_frequency({"cpu MHz": "2596.124"}, cpufreq_dir=str(tmp_path / "none"))
    assert f["nominal_hz"] == pytest.approx(2.596124e9) and "hypervisor" in f["source"]
    f = machine.read_frequency({"model name": "Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz", "cpu MHz": "1800"},
                               cpufreq_dir=str(tmp_path / "none"))
    assert f["nominal_hz"] == pytest.approx(1.6e9) and f["current_hz"] == pytest.approx(1.8e9)
    (tmp_path / "cpuinfo_max_freq").write_text("3400000\n")
    f = machine.read_frequency({"cpu MHz": "1800"}, cpufreq_dir=str(tmp_path))
    assert f["nominal_hz"] == pytest.approx(3.4e9) and "cpufreq" in f["source"]
    (tmp_path / "cpuinfo_max_freq").write_text("<unknown>\n")  # a figure that is no number is no figure
    f = machine.read_frequency({"cpu MHz": "n/a"}, cpufreq_dir=str(tmp_path))
    assert f["nominal_hz"] is None and f["current_hz"] is None and f["source"].startswith("unknown")
    f = machine.read_frequency({"model name": "Odd CPU @ 1.2.3GHz", "cpu MHz": "1800"}, cpufreq_dir=str(tmp_path))
    assert f["nominal_hz"] == pytest.approx(1.8e9)  # no clock in the name: the next source, not a ValueError


def test_identify_this_cpu():
    cpu = machine.identify_cpu()
    assert cpu["id"].endswith(f"-{cpu['cores']}c")
    assert cpu["cores"] >= 1 and cpu["usable_cpus"] >= 1
    assert cpu["memory_bytes"] and cpu["memory_available_bytes"]
    assert cpu["frequency"]["source"]
    sw = machine.identify_software()
    assert sw["packages"]["numba"] and sw["python"]


def test_theoretical_flops_for_the_seed_i5_8250u():
    info = machine.parse_cpuinfo(read_fixture("cpuinfo-intel-i5-8250u.txt"))
    cpu = {"vendor": "GenuineIntel", "family": 6, "model_number": 142, "cores": 4, "simd": sorted(info["flags"]),
           "frequency": {"nominal_hz": 1.6e9, "source": "model name"}, "hypervisor": None}
    t = cpu_peaks.theoretical_flops(cpu)
    # 4 cores x 2 FMA x 8 fp32 lanes x 2 x 1.6 GHz = 204.8 GFLOP/s: the seed page's "pi about 200"
    assert t["flops_per_s"]["fp32"] == pytest.approx(204.8e9)
    assert t["flops_per_s"]["fp64"] == pytest.approx(102.4e9)
    assert "1.600 GHz" in t["source"]


def test_theoretical_flops_zen4_from_this_vms_cpuinfo():
    """Zen 4 runs AVX-512 on two 256-bit FMA pipes: 32 fp32 FLOP per cycle per core, half of
    Zen 5's; told apart by model, not by the avx512f flag both carry."""
    cpu = machine.identify_cpu(os.path.join(FIXTURES, "cpuinfo-amd-epyc-zen4-kvm.txt"))
    t = cpu_peaks.theoretical_flops(cpu)
    assert t["flops_per_cycle_per_core"] == {"fp64": 16, "fp32": 32} and "Zen 4" in t["source"]
    assert t["flops_per_s"]["fp32"] == pytest.approx(cpu["cores"] * 32 * cpu["frequency"]["nominal_hz"])
    zen3 = dict(cpu, model_number=0x01)  # Milan: the same pipes, no AVX-512
    assert cpu_peaks.theoretical_flops(zen3)["flops_per_cycle_per_core"] == {"fp64": 16, "fp32": 32}
    assert "Zen 3" in cpu_peaks.theoretical_flops(zen3)["source"]


def test_cpuinfo_fields_that_are_no_numbers_count_as_absent(tmp_path):
    """A field the kernel should print as a number but does not ('cpu cores', 'cpu family', 'cpu
    MHz'): unknown, and the rest of the machine is still identified."""
    text = open(os.path.join(FIXTURES, "cpuinfo-amd-epyc-zen4-kvm.txt")).read()
    for field in ("cpu cores", "cpu family", "cpu MHz"):
        text = re.sub(rf"^{field}\s*:.*$", f"{field}\t: n/a", text, flags=re.MULTILINE)
    (tmp_path / "cpuinfo").write_text(text)
    cpu = machine.identify_cpu(str(tmp_path / "cpuinfo"))
    assert cpu["family"] is None and cpu["cores"] >= 1 and cpu["model"].startswith("AMD EPYC")


def test_theoretical_flops_zen5_and_unknown(cpu):
    t = cpu_peaks.theoretical_flops(cpu)
    assert t["flops_per_cycle_per_core"] == {"fp64": 32, "fp32": 64}
    assert t["flops_per_s"]["fp32"] == pytest.approx(2 * 64 * 2.5e9)
    assert "hypervisor" in t["source"]
    arm = dict(cpu, vendor="ARM", family=None, model_number=None, simd=["asimd"])
    t = cpu_peaks.theoretical_flops(arm)
    assert t["flops_per_s"] == {"fp64": None, "fp32": None} and t["source"].startswith("not derivable")


def test_an_arm_server_is_named_by_its_part_and_its_peak_derived(tmp_path):
    """Arm's /proc/cpuinfo has no model name or vendor, only implementer and part numbers (the
    fixture is hand-made: two of a GH200 Grace's 72 processors, fields as Grace reports them)."""
    cpu = machine.identify_cpu(os.path.join(FIXTURES, "cpuinfo-arm-grace-handmade.txt"))
    assert (cpu["model"], cpu["vendor"], cpu["model_number"], cpu["family"]) == ("Neoverse-V2", "ARM", 0xD4F, None)
    assert cpu["id"] == "neoverse-v2-2c" and {"asimd", "sve"} <= set(cpu["simd"])
    grace = dict(cpu, cores=72, frequency={"nominal_hz": 3.0e9, "source": "test"}, hypervisor=None)
    t = cpu_peaks.theoretical_flops(grace)
    # 4 x 128-bit FMA pipes: 4 x 4 fp32 lanes x 2 = 32 FLOP per cycle per core; asimdhp: fp16's 8 lanes
    assert t["flops_per_cycle_per_core"] == {"fp64": 16, "fp32": 32, "fp16": 64} and "Neoverse V2" in t["source"]
    assert t["flops_per_s"]["fp32"] == pytest.approx(72 * 32 * 3.0e9)
    assert machine.arm_identity({"CPU implementer": "0x41", "CPU part": "0xfff"}) == ("ARM", 0xFFF, "ARM part 0xfff")
    assert machine.arm_identity({"vendor_id": "GenuineIntel"}) is None
    unknown = dict(grace, vendor="Apple", model_number=0x22)
    assert "Arm vendor 'Apple' part 0x022" in cpu_peaks.theoretical_flops(unknown)["source"]
    # a cloud Arm VM (Graviton) reports no clock at all: no peak, but FLOPs per cycle, so the peak
    # probe's measurement gives the clock it implies (and the report says so)
    from harness import run

    clockless = dict(grace, frequency={"nominal_hz": None, "source": "unknown"})
    t = cpu_peaks.theoretical_flops(clockless)
    assert t["flops_per_s"] == {"fp64": None, "fp32": None, "fp16": None} and t["flops_per_cycle_per_core"]["fp32"] == 32
    assert "the core clock is unknown" in t["source"]
    section = {"peak_flops": {"fp32": {"flops_per_s": 2 * 32 * 2.6e9, "threads": 2, "warnings": []}}}
    run.flag_against_theory(section, {"flops_per_s": t["flops_per_s"], "flops_per_cycle_per_core": t["flops_per_cycle_per_core"]},
                            clockless)
    rec = section["peak_flops"]["fp32"]
    assert rec["implied_clock_hz"] == pytest.approx(2.6e9) and "fraction_of_theoretical" not in rec


def test_theoretical_matmul_rates_of_this_amx_xeon_vm():
    """The Xeon VM of 2026-12-06 (recorded /proc/cpuinfo: family 6 model 207, 2 vCPUs at 2.1 GHz)
    has AMX tiles and AVX512-FP16: its matmul peaks are held to those units, not left n/a (torch
    reached 879 GFLOP/s bf16 there, 0.20 of the tiles' 4.3 TFLOP/s, and 202 GFLOP/s fp16, 0.38 of
    AVX512-FP16's 538)."""
    cpu = machine.identify_cpu(os.path.join(FIXTURES, "cpuinfo-intel-xeon-family6-model207-kvm.txt"))
    assert cpu["matrix_units"] == ["amx_bf16", "amx_int8", "avx512_fp16"]
    fma = cpu_peaks.theoretical_flops(cpu)
    t = cpu_peaks.theoretical_matmul_flops(cpu, fma)
    assert t["ops_per_cycle_per_core"] == {"fp32": 64, "bf16": 1024, "fp16": 128, "int8": 2048}
    assert t["flops_per_s"]["bf16"] == pytest.approx(2 * 1024 * 2.1e9)
    assert t["flops_per_s"]["int8"] == pytest.approx(2 * 2048 * 2.1e9)
    assert t["flops_per_s"]["fp32"] == fma["flops_per_s"]["fp32"]
    assert "AMX-BF16" in t["source"]["bf16"] and "AVX512-FP16" in t["source"]["fp16"] and "Optimization" in t["table_source"]
    # AVX512-FP16's FMAs, twice fp32's lanes on the same two units: the fp16 FMA chains' theory
    assert fma["flops_per_cycle_per_core"] == {"fp64": 32, "fp32": 64, "fp16": 128}
    assert "fp16 (AVX512-FP16) on the same units, twice fp32's lanes" in fma["source"]
    granite = dict(cpu, matrix_units=["amx_bf16", "amx_fp16", "amx_int8", "avx512_fp16"])
    assert cpu_peaks.theoretical_matmul_flops(granite, fma)["ops_per_cycle_per_core"]["fp16"] == 1024  # tiles win


def test_a_cpu_without_matrix_units_says_so_per_dtype():
    cpu = machine.identify_cpu(os.path.join(FIXTURES, "cpuinfo-amd-epyc-zen4-kvm.txt"))
    assert cpu["matrix_units"] == []  # avx512_bf16 dot products are not in the table
    t = cpu_peaks.theoretical_matmul_flops(cpu, cpu_peaks.theoretical_flops(cpu))
    assert t["flops_per_s"]["fp32"] == pytest.approx(cpu["cores"] * 32 * cpu["frequency"]["nominal_hz"])
    for dtype in ("bf16", "fp16", "int8"):
        assert t["flops_per_s"][dtype] is None and t["source"][dtype].startswith(f"not derivable: no {dtype} matrix unit")
    old = {k: v for k, v in cpu.items() if k != "matrix_units"}  # a profile made before the field
    assert cpu_peaks.theoretical_matmul_flops(old, cpu_peaks.theoretical_flops(old))["flops_per_s"]["bf16"] is None


def test_matmul_records_get_their_fraction_of_the_units_and_a_warning_above_them(cpu):
    from harness import run

    theory = {"flops_per_s": {"fp32": 332.3e9}, "flops_per_cycle_per_core": {"fp32": 64},
              "matmul": {"flops_per_s": {"fp32": 332.3e9, "bf16": 4.3e12, "int8": 8.6e12, "fp16": None},
                         "ops_per_cycle_per_core": {"fp32": 64, "bf16": 1024, "int8": 2048, "fp16": None}}}
    section = {"tensor_flops": {"bf16": {"flops_per_s": 879e9, "threads": 2, "warnings": []},
                                "int8": {"flops_per_s": 5.0e12, "threads": 1, "warnings": []},  # 1 of 2 cores
                                "fp16": {"flops_per_s": 2e11, "threads": 2, "warnings": []}}}
    run.flag_against_theory(section, theory, cpu)
    bf16, int8, fp16 = (section["tensor_flops"][d] for d in ("bf16", "int8", "fp16"))
    assert bf16["fraction_of_theoretical"] == pytest.approx(879e9 / 4.3e12) and not bf16["warnings"]
    assert "implied_clock_hz" not in bf16  # torch's product is no clock meter below its units' peak
    assert int8["theoretical_flops_per_s"] == pytest.approx(4.3e12)
    assert int8["implied_clock_hz"] == pytest.approx(5.0e12 / 2048)
    assert "theoretical peak of 1 core (4.3 TOP/s" in int8["warnings"][0] and "the cores ran at 2.44 GHz or faster, above" in int8["warnings"][0]
    assert "theoretical_flops_per_s" not in fp16 and not fp16["warnings"]  # no unit in the table: n/a
    fma = {"peak_flops": {"fp32": {"flops_per_s": 2 * 64 * 3.86e9, "threads": 2, "warnings": []}}}
    run.flag_against_theory(fma, theory, cpu)  # FMA chains run the units flat out: their clock, not a floor
    assert "the cores ran at about 3.86 GHz" in fma["peak_flops"]["fp32"]["warnings"][0]
    without_torch = {"tensor_flops": {"reason": "torch is not installed"}}
    run.flag_against_theory(without_torch, theory, cpu)
    assert without_torch == {"tensor_flops": {"reason": "torch is not installed"}}


def test_dmidecode_parsing_and_bandwidth(monkeypatch):
    devices = cpu_peaks.parse_dmidecode_memory(read_fixture("dmidecode-t17.txt"))
    assert devices == [{"mt_per_s": 2933, "data_width_bits": 64}] * 2

    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 0, stdout=read_fixture("dmidecode-t17.txt"), stderr="")

    monkeypatch.setattr(cpu_peaks.shutil, "which", lambda name: "/usr/sbin/dmidecode")
    bw = cpu_peaks.theoretical_dram_bandwidth(run=fake_run)
    assert bw["bytes_per_s"] == pytest.approx(2 * 2933e6 * 8)
    assert "2 populated DIMMs" in bw["source"]


def test_dram_bandwidth_without_dmidecode(monkeypatch):
    monkeypatch.setattr(cpu_peaks.shutil, "which", lambda name: None)
    bw = cpu_peaks.theoretical_dram_bandwidth()
    assert bw["bytes_per_s"] is None and "dmidecode" in bw["source"]


def _numba_features(env_extra):
    code = "import harness, numba.core.config as c; print(c.CPU_FEATURES or '')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **env_extra},
                         check=True)
    return out.stdout.strip()


def test_numba_gets_full_vector_width_on_avx512_unless_the_user_chose():
    from llvmlite import binding

    features = _numba_features({"PYTHONPATH": os.path.dirname(os.path.dirname(FIXTURES))})
    if binding.get_host_cpu_features().get("avx512f"):
        assert features.endswith(",-prefer-256-bit") and "+avx512f" in features
    else:
        assert features == ""  # nothing to lift: Numba detects the host as usual
    chosen = _numba_features({"PYTHONPATH": os.path.dirname(os.path.dirname(FIXTURES)), "NUMBA_CPU_FEATURES": "+avx2"})
    assert chosen == "+avx2"


def _affinity(env_extra):
    code = "import harness, os; print(os.environ.get('OMP_PROC_BIND'), os.environ.get('OMP_PLACES'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY",
                                                             "KMP_AFFINITY")}
    env.update(PYTHONPATH=os.path.dirname(os.path.dirname(FIXTURES)), **env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout.split()


def test_importing_the_harness_binds_no_threads_and_keeps_the_users_binding():
    # two OpenMP runtimes share the process (torch's own libgomp, the system's for Numba): a binding
    # set for both put Numba's threads on the one CPU torch's runtime had bound this thread to
    assert _affinity({}) == ["None", "None"]
    assert _affinity({"OMP_PROC_BIND": "close"}) == ["close", "None"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")
def test_torch_first_gives_this_thread_its_cpus_back_after_torchs_openmp_binds_it():
    code = ("import os, harness.run; before = os.sched_getaffinity(0); reason = harness.run.torch_first(); "
            "print(reason is None or 'torch' in reason, os.sched_getaffinity(0) == before)")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(FIXTURES)), OMP_PROC_BIND="spread",
               OMP_PLACES="cores")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["True", "True"]



def test_a_guest_is_named_by_lscpu_on_x86_and_by_systemd_detect_virt_on_arm(monkeypatch):
    said = {"lscpu": "Architecture: x86_64\nHypervisor vendor:   KVM\n", "systemd-detect-virt": "amazon\n"}
    asked = []
    monkeypatch.setattr(machine, "_output", lambda command: asked.append(command[0]) or said.get(command[0]))
    assert machine.hypervisor_vendor({"hypervisor", "avx2"}, arch="x86_64") == "KVM"
    assert machine.hypervisor_vendor({"avx2"}, arch="x86_64") is None and asked == ["lscpu"]  # x86 bare metal: no flag
    assert machine.hypervisor_vendor({"asimd"}, arch="aarch64") == "amazon"  # a Graviton VM flags nothing
    said["systemd-detect-virt"] = "kvm\n"
    assert machine.hypervisor_vendor({"asimd"}, arch="aarch64") == "KVM"
    said["systemd-detect-virt"] = None  # 'none' exits 1, or the tool is missing: bare metal as far as can be told
    assert machine.hypervisor_vendor({"asimd"}, arch="aarch64") is None
    said["lscpu"] = "Architecture: x86_64\n"
    assert machine.hypervisor_vendor({"hypervisor"}, arch="x86_64") == "unknown"


def test_tools_are_read_in_the_c_locale_whatever_the_users(tmp_path, monkeypatch):
    # a stand-in lscpu that answers as util-linux's German catalogue does unless the locale is C
    fake = tmp_path / "lscpu"
    fake.write_text('#!/bin/sh\nif [ "$LC_ALL" = C ]; then echo "Hypervisor vendor: KVM"; '
                    'else echo "Hypervisor-Anbieter: KVM"; fi\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    assert machine.hypervisor_vendor({"hypervisor"}, arch="x86_64") == "KVM"


def test_a_peak_on_fewer_cores_than_the_machine_is_held_to_those_cores(cpu):
    from harness import run

    theory = {"flops_per_s": {"fp32": 332.3e9}, "flops_per_cycle_per_core": {"fp32": 64}}  # 2 cores at 2.6 GHz
    one = {"peak_flops": {"fp32": {"flops_per_s": 233.9e9, "threads": 1, "warnings": []}}}  # --threads 1, or a quota
    run.flag_against_theory(one, theory, cpu)
    rec = one["peak_flops"]["fp32"]
    assert rec["theoretical_flops_per_s"] == pytest.approx(166.15e9)
    assert rec["fraction_of_theoretical"] == pytest.approx(233.9 / 166.15)  # not 0.70 of two cores' peak
    assert rec["implied_clock_hz"] == pytest.approx(233.9e9 / 64) and "theoretical peak of 1 core (166.2 GFLOP/s" in rec["warnings"][0]
    smt = {"peak_flops": {"fp32": {"flops_per_s": 300e9, "threads": 4, "warnings": []}}}  # 4 threads, 2 cores
    run.flag_against_theory(smt, theory, cpu)
    assert smt["peak_flops"]["fp32"]["theoretical_flops_per_s"] == pytest.approx(332.3e9)
    assert smt["peak_flops"]["fp32"]["implied_clock_hz"] == pytest.approx(300e9 / 128)
    # the report says the rows' figure is that share of the machine's, which its source line derives
    from harness import report

    theory["source"] = "2 cores x 2 FMA units x (512-bit lanes) x 2 FLOP x 2.596 GHz"
    assert report.theory_share_lines(dict(one, theoretical=theory)) == [
        "The table's theoretical FLOP/s are 50% of that figure: the peak of the cores the peak probes' 1 thread ran on.", ""]
    assert report.theory_share_lines(dict(smt, theoretical=theory)) == []


def test_threads_spanning_sockets_unpinned_are_warned(cpu, monkeypatch):
    from harness import run
    from harness.workload import Context

    for name in machine.AFFINITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    warned, single, pinned = {}, {}, {}
    run.flag_unpinned_sockets(warned, Context(cpu={**cpu, "sockets": 2}, threads=4))
    assert "4 threads over 2 sockets ran unpinned" in warned["warnings"][0]
    run.flag_unpinned_sockets(single, Context(cpu=cpu, threads=2))
    monkeypatch.setenv("OMP_PROC_BIND", "spread")
    run.flag_unpinned_sockets(pinned, Context(cpu={**cpu, "sockets": 2}, threads=4))
    assert single == {} and pinned == {}


def test_memory_settings_that_move_bandwidth_are_read(tmp_path):
    from harness import report

    for path, text in (("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n"),  # this VM's
                       ("proc/sys/kernel/numa_balancing", "1\n"), ("sys/devices/system/node/node0/cpulist", "0-1\n"),
                       ("sys/devices/system/node/node1/cpulist", "2-3\n"), ("sys/devices/system/node/online", "0-1\n")):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    settings = machine.memory_settings(str(tmp_path))
    assert settings == {"transparent_hugepages": "madvise", "numa_nodes": 2, "numa_balancing": 1}
    assert report.memory_settings(settings) == "transparent huge pages madvise, 2 NUMA node(s), NUMA balancing on"
    assert machine.memory_settings(str(tmp_path / "none")) == {"transparent_hugepages": None, "numa_nodes": None,
                                                                "numa_balancing": None}
    assert report.memory_settings(None) == "not recorded"


def test_clock_settings_that_move_compute_are_read_and_flagged(tmp_path):
    """cpufreq as a bare-metal Intel with intel_pstate shows it (HAND-MADE: this VM has no cpufreq),
    then as acpi-cpufreq's boost switch shows it, then none."""
    from harness import report, run

    cpu0 = "sys/devices/system/cpu/cpu0/cpufreq"
    for path, text in ((f"{cpu0}/scaling_governor", "powersave\n"), (f"{cpu0}/energy_performance_preference",
                       "balance_performance\n"), (f"{cpu0}/scaling_max_freq", "2000000\n"),
                       (f"{cpu0}/cpuinfo_max_freq", "3800000\n"), ("sys/devices/system/cpu/intel_pstate/no_turbo", "1\n")):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    settings = machine.clock_settings(str(tmp_path))
    assert settings == {"governor": "powersave", "energy_performance_preference": "balance_performance",
                        "scaling_max_hz": 2e9, "turbo": False}
    assert report.clock_settings(settings) == ("governor powersave, energy/performance preference balance_performance, "
                                               "turbo off, OS clock cap 2.00 GHz")
    cpu = {"clock_settings": settings, "frequency": machine.read_frequency({}, str(tmp_path / cpu0))}
    section = {}
    run.flag_clock_settings(section, cpu)
    assert [w.split(":")[0] for w in section["warnings"]] == [  # turbo off is recorded, not warned of
        "the OS caps the cores at 2.00 GHz (cpufreq scaling_max_freq), below the 3.80 GHz (cpuinfo_max_freq) the "
        "theoretical peaks assume"]
    (tmp_path / "sys/devices/system/cpu/intel_pstate/no_turbo").unlink()
    (tmp_path / "sys/devices/system/cpu/cpufreq").mkdir()
    (tmp_path / "sys/devices/system/cpu/cpufreq/boost").write_text("1\n")  # acpi-cpufreq, amd-pstate
    assert machine.clock_settings(str(tmp_path))["turbo"] is True
    none = machine.clock_settings(str(tmp_path / "none"))  # this VM: no cpufreq at all
    assert none == {"governor": None, "energy_performance_preference": None, "scaling_max_hz": None, "turbo": None}
    assert report.clock_settings(none).startswith("not visible (no cpufreq") and report.clock_settings(None) == "not recorded"
    section = {}
    run.flag_clock_settings(section, {"clock_settings": none, "frequency": {"nominal_hz": 2.1e9, "source": "/proc/cpuinfo"}})
    assert section == {}  # no cpufreq maximum to fall short of


def test_a_hybrid_intel_cpus_e_cores_count_at_their_own_fma_width(tmp_path):
    """An Alder Lake i7-12700H (HAND-MADE topology: 6 P-cores with SMT, cpu_core 0-11; 8 E-cores,
    cpu_atom 12-19): E-cores have two 128-bit FMA pipes to a P-core's two 256-bit ones, so 14 cores
    at the P-core rate overstated the peak by 1.4x."""
    (tmp_path / "cpu_core").mkdir()
    (tmp_path / "cpu_core" / "cpus").write_text("0-11\n")
    (tmp_path / "cpu_atom").mkdir()
    (tmp_path / "cpu_atom" / "cpus").write_text("12-19\n")
    assert machine.efficiency_cores(str(tmp_path)) == 8
    assert machine.efficiency_cores(str(tmp_path / "nowhere")) == 0  # not hybrid
    (tmp_path / "cpu_atom" / "cpus").write_text("12-x\n")
    assert machine.efficiency_cores(str(tmp_path)) == 0  # no CPU list: none counted, no crash
    (tmp_path / "cpu_atom" / "cpus").write_text("12-19\n")
    alder = {"vendor": "GenuineIntel", "family": 6, "model_number": 154, "cores": 14, "efficiency_cores": 8,
             "simd": ["avx", "avx2", "fma"], "frequency": {"nominal_hz": 2.3e9, "source": "cpufreq base_frequency"},
             "hypervisor": None}
    t = cpu_peaks.theoretical_flops(alder)
    assert t["flops_per_s"]["fp32"] == pytest.approx((6 * 32 + 8 * 16) * 2.3e9)  # 736 GFLOP/s, not 1030
    assert t["flops_per_cycle_per_core"]["fp32"] * 14 == pytest.approx(6 * 32 + 8 * 16)
    assert t["source"].startswith("hybrid: 6 P-cores x 2 FMA units x (256-bit lanes) + 8 E-cores x 2 x (128-bit lanes)")
    assert cpu_peaks.theoretical_flops(dict(alder, efficiency_cores=0))["flops_per_s"]["fp32"] == pytest.approx(14 * 32 * 2.3e9)
    sierra = dict(alder, model_number=0xAF, cores=144, efficiency_cores=0)  # E-cores only: by model
    t = cpu_peaks.theoretical_flops(sierra)
    assert t["flops_per_cycle_per_core"] == {"fp64": 8, "fp32": 16} and "Sierra Forest" in t["source"]
