"""The GPU profile end to end on a CPU-only machine: NumPy stands in for CuPy (tests/fakes.py
emulates each CUDA kernel) and a fake NVML answers like an H100. What this shows: launch
arguments, geometry, poisoning, output checks, records, the devices.gpu0 section, the profile
round trip and the report. What it cannot show: that the CUDA kernels are right or fast."""

import inspect
import json
import os
import pathlib
import re
import sys
import types

import pytest

import fakes
import nvrtc
from conftest import ROOT, faster, timed, undocumented_fields
from harness import compare, gpu_run, gpus, profile, report, run, validation
from harness.errors import HarnessError
from harness.specs import load_specs
from harness.summary import section_lines, si
from probes import PROBES, gpu_common

COMMITTED_PROFILE = os.path.join(ROOT, "profiles", "amd-epyc-zen4-2c.yaml")


@pytest.fixture
def fake_gpu_machine(monkeypatch):
    fakes.install_fake_gpu(monkeypatch)
    monkeypatch.setitem(sys.modules, "torch", None)  # torch's CUDA paths cannot run here: say so


@pytest.fixture
def fake_gpu_with_cpu_torch(monkeypatch):
    """The fake GPU, with CPU torch standing in for CUDA torch (device="cuda" dropped, CPU-clock events)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    fakes.install_fake_gpu(monkeypatch)
    monkeypatch.setattr(torch.cuda, "Event", fakes.CpuEvent)
    for name in ("rand", "empty", "randint", "Generator"):
        make = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, device=None, make=make, **k: make(*a, **k))
    return torch


def test_gpu_profile_section_report_with_numpy_standing_in(fake_gpu_machine, tmp_path, monkeypatch):
    from harness.counters import ncu

    monkeypatch.setattr(ncu, "unavailable_reason", lambda: "Nsight Compute (ncu) is not on the PATH")  # wherever ncu is
    judged, reads, beyond = [], validation.flag_disagreeing_memory_reads, validation.flag_cache_beyond_reported
    monkeypatch.setattr(validation, "flag_disagreeing_memory_reads",
                        lambda sec, memory: (judged.append((f"gpu{sec['gpu']['index']}", memory)), reads(sec, memory)))
    monkeypatch.setattr(validation, "flag_cache_beyond_reported", lambda sec, l2_bytes, memory: (
        judged.append((l2_bytes, memory)), beyond(sec, l2_bytes, memory)))
    doc = run.build_profile(device="gpu", quick=True, counters="auto")
    assert set(doc["devices"]) == {"gpu0"} and doc["machine"]["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    sec = doc["devices"]["gpu0"]
    assert sec["gpu"]["sm_limits"] == {"registers": 65536, "shared_bytes": 233472, "threads": 2048, "blocks": 32}
    records = list(profile.measurement_records(sec))
    assert records and all(r["validated"] for r in records)
    assert set(sec["bandwidth"]) == {"copy", "scale", "add", "triad", "read"}
    assert set(sec["peak_flops"]) == {"fp64", "fp32", "fp16"} and "torch" in sec["tensor_flops"]["reason"]
    assert all(r["interleaved_with"] == list(sec["bandwidth"]) for r in sec["bandwidth"].values())  # in rounds
    assert all(r["interleaved_with"] == ["fma_fp64", "fma_fp32", "fma_fp16"] for r in sec["peak_flops"].values())
    fused = [r for r in sec["decode_attention"] if r["impl"] == "cupy-fused"]
    assert {r["dtype"] for r in fused} == {"fp16", "fp32", "bf16", "int8"} and all(r["rel_error"] <= r["tolerance"] for r in fused)
    assert all(r["model"]["bytes"] > 0 and r["counters"]["source"] == "unavailable" for r in fused)
    longest = max(r["seq_len"] for r in fused)  # only the longest caches are re-run under ncu (absent here)
    assert all(("not on the PATH" in r["counters"]["reason"]) == (r["seq_len"] == longest) for r in fused)
    assert "not on the PATH" in sec["bandwidth_fp32"]["triad"]["counters"]["reason"]
    assert any("torch" in u["reason"] for u in sec["decode_unsupported"])
    assert sec["theoretical"]["bytes_per_s"] == pytest.approx(3.352e12, rel=1e-3)
    assert set(sec["hierarchy_levels"]) == {"L1", "L2", "HBM"} and sec["telemetry"]["stream"]
    l1 = [p for p in sec["hierarchy"] if p["level"] == "L1"]  # 16 to 64 KiB per SM, read through L1
    assert [p["bytes_per_sm"] for p in l1] == [16 << 10, 32 << 10, 48 << 10, 64 << 10]
    assert {p["kernel"] for p in sec["hierarchy"]} == {"read_reps_l1_fp32", "read_reps_fp32"}
    assert sec["hierarchy_levels"]["L1"]["points"] == 4
    assert all(0 < r["fraction_of_theoretical"] for r in sec["peak_flops"].values())
    assert sec["balance"]["fp32"] > 0 and "HBM" in sec["balance_basis"]
    # the sweep's HBM level held against bandwidth.read, its points beyond the L2 against that level
    assert judged == [("gpu0", "HBM"), (sec["gpu"]["l2_bytes"], "HBM")]
    assert "cupy-fused" in sec["model_validation"]["finding"] and "HBM" in sec["model_validation"]["finding"]

    assert any(line.startswith("theoretical HBM ") and line.endswith("3.4 TB/s") for line in section_lines(sec))

    # half2 chains at twice the fp32 rate, as on a GPU: NumPy's stand-in for them may be slower or faster
    # than its fp32 (a busy machine), and the drills take the faster as the roof
    chains = sec["peak_flops"]
    chains["fp16"] = faster(chains["fp16"], 2 * chains["fp32"]["flops_per_s"] / chains["fp16"]["flops_per_s"])
    sec["balance"] = validation.balance(sec)
    path = tmp_path / "gpu.yaml"
    profile.save_profile(doc, str(path))
    back = profile.load_profile(str(path))
    clock = compare.compare(back, back)["conditions"]  # the regression report's run conditions
    assert clock == [("gpu0", compare.GPU_CLOCK, *[sec["telemetry"]["peak"]["sm_clock_hz"]["median"]] * 2)]
    paths = report.write_report(back, str(tmp_path / "reports"), load_specs())
    text = pathlib.Path(paths[-1]).read_text()
    assert [r[1] for r in report.index_rows([back], [])] == ["measured (gpu0: NVIDIA H100 80GB HBM3)"]
    assert {p.rsplit("/", 1)[-1] for p in paths} == {"roofline-gpu0.png", "decode-gpu0.png", "hierarchy-gpu0.png", "report.md"}
    kernels = {p["kernel"] for p in report.gpu_data(back, "gpu0", back["devices"]["gpu0"])["hierarchy"]["points"]}
    assert kernels == {"read", "read through L1 (a slice per SM)"}
    cpu_part = text.split("## GPUs")[0]  # profiled with --device gpu: the host described, its CPU not measured
    assert "| CPU | " in cpu_part and "threads used" not in cpu_part and "## Peaks" not in cpu_part
    assert "## CPU\n\nNot measured in this profile (it was made with `--device gpu`)" in cpu_part
    gpu_part = text.split("## GPUs")[1].split("## Hardware counters")[0]
    for needle in ("### gpu0: NVIDIA H100 80GB HBM3", "| UUID / PCI bus id | GPU-00000000-5a5a / 0000:18:00.0 |", "| datasheet spec | NVIDIA H100 80GB HBM3 (SXM5) |", "| ECC / MIG | on / not supported |", "![Roofline of gpu0](roofline-gpu0.png)", "| peak fp32 FMA |",
                   "![Read bandwidth against working set](hierarchy-gpu0.png)", "16.4 kB to 65.5 kB per SM",
                   "Tensor-core peaks not measured: torch is not installed", "#### Decode attention",
                   "| cupy-fused | int8 | 8 | 8/2 | 64 |", "Model holds (|error| <= 25% for the best fp16 implementation)", "Decode points not measured: torch-sdpa, torch-naive (torch is not installed",
                   "#### Does the model hold here?", "#### Telemetry while measuring",
                   "| HBM | n/a | n/a | 0 | no sweep point lies well inside this level |", "#### The seed page's drill problems, for gpu0", "(fp16 FMA peak) / ", "Its half2 FMA chains compute ", "cupy-fused split-K kernels as loaded: bf16 d=64 G=4: 80 registers, 0 B local per thread, "
                   "3 blocks per SM (registers)"):
        assert needle in gpu_part, needle


def test_single_gpu_probes_and_options_with_numpy_standing_in(fake_gpu_machine):
    for name in ("stream", "hierarchy", "peak"):
        section = run.run_single_probe(name, device="gpu0")
        recs = list(profile.measurement_records(section))
        assert recs and all(r["validated"] for r in recs), name
    section = run.run_single_probe("decode", device="gpu0", options={"impl": "cupy-fused", "dtype": "int8", "seq_len": 300,
                                                                     "heads": 8, "kv_heads": 4, "head_dim": 64, "batch": 3})
    (rec,) = section["decode_attention"]
    assert rec["validated"] and (rec["batch"], rec["heads"], rec["kv_heads"], rec["seq_len"]) == (3, 8, 4, 300)
    # the kernel as the driver loaded it (the fake's attributes: 80 registers, an H100's SM limits)
    assert (rec["registers"], rec["local_bytes_per_thread"], rec["blocks_per_sm"], rec["blocks_per_sm_limit"]) == \
        (80, 0, 3, "registers")
    with pytest.raises(Exception, match="gpu0 to gpu0"):
        run.run_single_probe("stream", device="gpu1")


def test_a_gddr_gpu_names_its_memory_gddr_not_hbm(fake_gpu_machine, monkeypatch):
    """An L4's 192-bit GDDR6 bus: its sweep's memory level, the report and `show` say GDDR."""
    monkeypatch.setattr(fakes.FakeNVML, "nvmlDeviceGetMemoryBusWidth", lambda self, h: 192)
    monkeypatch.setattr(fakes.FakeNVML, "nvmlDeviceGetName", lambda self, h: b"NVIDIA L4")
    sec = run.run_single_probe("hierarchy", device="gpu0")
    assert set(sec["hierarchy_levels"]) == {"L1", "L2", "GDDR"}
    assert {p["level"] for p in sec["hierarchy"]} == {"L1", "L2", "GDDR"}
    info, _ = gpu_run.identify(0)
    sec.update(gpu=info, bandwidth={"read": {"bytes_per_s": 250e9}}, peak_flops={"fp32": {"flops_per_s": 30e12}},
               theoretical=gpus.theoretical(info))
    doc = {"machine": {"id": "m"}, "devices": {"gpu0": sec}}
    text = "\n".join(report.gpu_markdown(report.gpu_data(doc, "gpu0", sec)))
    assert "Reads GDDR at 250.0 GB/s" in text and "| GDDR |" in text
    assert text.replace("HBM2e/HBM3/HBM3e and GDDR6", "").count("HBM") == 0, text  # the formula names both
    assert any(line.startswith("theoretical GDDR ") for line in section_lines(sec))


def ptx_signatures(ptx):
    """{entry name: parameter types} from PTX (.u64 is a pointer or a long long)."""
    sigs = {}
    for entry in re.finditer(r"\.entry (\w+)\(([^)]*)\)", ptx):
        sigs[entry.group(1)] = tuple(re.findall(r"\.param \.(\w+)", entry.group(2)))
    return sigs


@pytest.mark.skipif(nvrtc.unavailable_reason() is not None, reason=str(nvrtc.unavailable_reason()))
def test_every_kernel_launch_passes_what_its_compiled_signature_takes(fake_gpu_machine):
    # CuPy passes a kernel's arguments as raw bytes by their NumPy type: an np.int64 where the
    # kernel takes an int shifts every later argument, silently. Check each launch the probes make
    # against the parameters NVRTC compiled.
    fakes.LAUNCHES.clear()
    for name in ("stream", "hierarchy", "peak"):
        run.run_single_probe(name, device="gpu0")
    for dtype, group in (("fp16", 4), ("int8", 1), ("bf16", 2), ("fp32", 8)):
        run.run_single_probe("decode", device="gpu0", options={"impl": "cupy-fused", "dtype": dtype, "seq_len": 300,
                                                               "heads": 8, "kv_heads": 8 // group, "head_dim": 64})
    sigs, lowered = {}, {}
    for source in gpu_common.CUDA_SOURCES:
        names = sorted({n for n, _ in fakes.LAUNCHES if "<" in n}) if source == "decode" else []
        ptx, low = nvrtc.compile_ptx(gpu_common.cuda_source(source), "compute_90", gpu_common.NVRTC_OPTIONS, names)
        sigs.update(ptx_signatures(ptx))
        lowered.update(low)
    takes = {"u64": {"array", "int64"}, "u32": {"int32"}, "f32": {"float32"}, "f64": {"float64"}}
    launched = set()
    for name, args in fakes.LAUNCHES:
        params = sigs[lowered.get(name, name)]
        assert len(args) == len(params), (name, args, params)
        for i, (arg, param) in enumerate(zip(args, params)):
            assert arg in takes[param], f"{name} argument {i}: {arg} passed where the kernel takes .{param}"
        launched.add(name)
    assert {"triad_fp32", "read_fp64", "read_reps_fp32", "fma_fp16", "decode_merge"} <= launched
    assert sum("<" in n for n in launched) == 4


def test_a_gpu_probes_hash_covers_its_module_and_its_cuda_source(fake_gpu_machine, monkeypatch, tmp_path):
    from harness.workload import probe_hash
    from probes import gpu_common, gpu_stream

    (w, *_) = gpu_stream.stream_workloads({"sm_count": 4}, "fp32", 64)
    assert inspect.getmodule(w.run) is gpu_stream  # the NVTX wrapper keeps the probe's module
    before = probe_hash(w)
    copy = tmp_path / "stream.cu"
    copy.write_text(gpu_common.cuda_source("stream"))
    monkeypatch.setattr(gpu_stream, "KERNEL_FILES", (str(copy),))
    assert probe_hash(w) == before  # same bytes, same hash
    copy.write_text(gpu_common.cuda_source("stream") + "// changed\n")
    assert probe_hash(w) != before


def test_torch_decode_paths_on_the_cpu_with_numpy_standing_in_for_cupy(fake_gpu_with_cpu_torch):
    # the DLPack views (bf16 through int16), the [B, H_kv, S, d] layout and the GQA grouping of the
    # torch implementations, checked against the float64 reference with CPU torch
    for dtype in ("bf16", "fp16", "fp32"):
        sec = run.run_single_probe("decode", device="gpu0", options={"impl": "all", "dtype": dtype, "seq_len": 300,
                                                                     "heads": 8, "kv_heads": 2, "head_dim": 64, "batch": 2})
        impls = {r["impl"] for r in sec["decode_attention"] if r["validated"] and r["rel_error"] <= r["tolerance"]}
        assert {"cupy-fused", "torch-sdpa[math]", "torch-naive"} <= impls, dtype
        assert all("torch-sdpa[" in u["impl"] and u["reason"] for u in sec["decode_unsupported"])


def test_gpu_probes_run_where_cupy_has_no_nvtx(fake_gpu_machine):
    pushed = []
    sys.modules["cupy"].cuda.nvtx = types.SimpleNamespace(available=False, RangePush=pushed.append, RangePop=lambda: None)
    sec = run.run_single_probe("stream", device="gpu0")
    assert all(r["validated"] for r in sec["bandwidth"].values()) and pushed == []


def test_a_fused_kernel_that_spills_carries_a_warning(fake_gpu_machine, monkeypatch):
    monkeypatch.setattr(fakes._Kernel, "local_size_bytes", 64)
    (rec,) = run.run_single_probe("decode", device="gpu0", options={"seq_len": 300, "heads": 8, "kv_heads": 2,
                                                                    "head_dim": 64, "batch": 1})["decode_attention"]
    assert rec["validated"] and rec["local_bytes_per_thread"] == 64
    assert any("spills 64 bytes per thread to local memory" in w for w in rec["warnings"])


def test_stream_arrays_that_free_memory_keeps_under_4x_the_l2_are_flagged(fake_gpu_machine, monkeypatch):
    import cupy

    monkeypatch.delenv("HARNESS_TINY")  # full sizing, which free memory (6 MiB here) cuts to 1 MiB arrays
    monkeypatch.setattr(cupy.cuda.runtime, "memGetInfo", lambda: (6 << 20, 80 << 30))
    section = run.run_single_probe("stream", device="gpu0", quick=True)
    triad = section["bandwidth_fp32"]["triad"]
    assert triad["validated"] and triad["elements"] == 1 << 18
    assert any("under 4x the L2 (1 MiB)" in w and "only 6 MiB was free" in w for w in triad["warnings"])


def test_a_cache_too_small_to_rotate_out_of_the_l2_is_said_to_be_timed_warm(fake_gpu_machine):
    # the fake H100's L2 is 1 MiB: a 4 KiB cache would need 512 copies to exceed twice it; 64 are made
    options = {"seq_len": 16, "heads": 2, "kv_heads": 1, "head_dim": 64, "batch": 1}
    (rec,) = run.run_single_probe("decode", device="gpu0", options=options)["decode_attention"]
    assert rec["validated"] and rec["l2_copies"] == 64 and not rec["l2_cold"]
    assert any("holds all 64 rotated copies" in w and "timed warm" in w for w in rec["warnings"])
    (rec,) = run.run_single_probe("decode", device="gpu0", options={**options, "seq_len": 4096})["decode_attention"]
    assert rec["l2_cold"] and not any("timed warm" in w for w in rec["warnings"])


def test_fused_decode_poisons_once_before_timing_and_times_only_its_kernels(fake_gpu_machine):
    from harness.model import DecodeShape
    from probes import gpu_decode

    shape = DecodeShape(seq_len=300, heads=8, kv_heads=2, head_dim=64, dtype="fp16", batch=2)
    w = gpu_decode.decode_workload({"sm_count": 4, "l2_bytes": 1 << 20}, "cupy-fused", shape, seed=1)
    w.poison()
    assert "relative error inf" in w.check()  # the poisoned (NaN) output fails the check
    fakes.LAUNCHES.clear()
    w.run(3)
    assert [n for n, _ in fakes.LAUNCHES] == [gpu_common.decode_kernel_name("fp16", 64, 4), "decode_merge"] * 3
    assert w.check() is None


def test_gpu_profile_with_torch_tensor_cores_and_sdpa(fake_gpu_with_cpu_torch, tmp_path):
    doc = run.build_profile(device="gpu", quick=True, counters="off")
    sec = doc["devices"]["gpu0"]
    assert set(sec["tensor_flops"]) == {"fp16", "bf16", "tf32", "int8"}
    assert all(r["validated"] and r["flops_per_s"] > 0 and r["interleaved_with"] == [
        "matmul_fp16", "matmul_bf16", "matmul_tf32", "matmul_int8"] for r in sec["tensor_flops"].values())
    assert sec["tensor_flops"]["int8"]["via"] == "torch._int_mm" and sec["tensor_flops"]["bf16"]["via"] == "torch.matmul"
    impls = {r["impl"] for r in sec["decode_attention"] if r["validated"]}
    assert {"cupy-fused", "torch-sdpa[math]", "torch-naive"} <= impls
    path = tmp_path / "gpu.yaml"
    profile.save_profile(doc, str(path))
    missing = sorted(undocumented_fields(profile.load_profile(str(path))))
    assert not missing, f"fields docs/profile.md does not describe: {missing}"
    text = pathlib.Path(report.write_report(profile.load_profile(str(path)), str(tmp_path / "r"), load_specs())[-1]).read_text()
    assert "| tensor-core matmul bf16 |" in text and "(datasheet, dense)" in text
    assert "| torch-sdpa[math] |" in text
    # the tensor cores' balance beside the FMA chains', against each level the sweep found and the HBM read
    read = sec["bandwidth"]["read"]["bytes_per_s"]
    assert {k: v * read for k, v in sec["balance"].items() if k.startswith("matmul_")} == pytest.approx(
        {f"matmul_{d}": r["flops_per_s"] for d, r in sec["tensor_flops"].items()})
    table = report.gpu_data(doc, "gpu0", sec)["balance"]
    assert table["levels"][-1] == "HBM (read)" and "| compute | rate | " in text and "| int8 matmul |" in text
    assert [r["compute"] for r in table["rows"]] == ["fp64 FMA", "fp32 FMA", "fp16 FMA", "fp16 matmul", "bf16 matmul",
                                                     "tf32 matmul", "int8 matmul"]
    # the seed page's H100 drill takes the fp16 tensor-core rate as the peak, as `harness model` does for fp16 weights
    assert "#### The seed page's drill problems, for gpu0" in text  # CPU torch's fp16 matmul: slower than the FMA
    fp16 = 100 * sec["peak_flops"]["fp32"]["flops_per_s"]  # a real H100's: about 15x its fp32 FMA
    sec["tensor_flops"]["fp16"]["flops_per_s"] = sec["tensor_flops"]["bf16"]["flops_per_s"] = fp16
    g = report.gpu_data(doc, "gpu0", sec)
    assert g["drills"]["peak"] == fp16 and g["drills"]["peak_what"] == "tensor-core fp16 matmul peak"
    text = "\n".join(report.gpu_markdown(g))
    assert f"- Machine balance: {si(fp16, 'FLOP/s')} (tensor-core fp16 matmul peak) / " in text
    assert f"Its tensor cores compute {si(fp16, 'FLOP/s')} (bf16 matmul)" in text  # the first of a tie


def test_a_tensor_core_matmul_torch_refuses_is_named_and_the_rest_measured(fake_gpu_with_cpu_torch, monkeypatch,
                                                                           tmp_path):
    import torch

    def refuse(a, b, out=None):
        raise RuntimeError("_int_mm_out_cuda not compiled for this platform\ndetail")

    monkeypatch.setattr(torch, "_int_mm", refuse)
    sec = run.run_single_probe("peak", device="gpu0")
    assert set(sec["tensor_flops"]) == {"fp16", "bf16", "tf32"} and set(sec["peak_flops"]) == {"fp64", "fp32", "fp16"}
    assert sec["tensor_flops_unsupported"] == [{"dtype": "int8", "reason": "_int_mm_out_cuda not compiled for this platform"}]
    assert all(r["validated"] and r["interleaved_with"] == ["matmul_fp16", "matmul_bf16", "matmul_tf32"]
               for r in sec["tensor_flops"].values())
    doc = run.build_profile(device="gpu", quick=True, counters="off")
    path = tmp_path / "gpu.yaml"
    profile.save_profile(doc, str(path))
    text = pathlib.Path(report.write_report(profile.load_profile(str(path)), str(tmp_path / "r"), load_specs())[-1]).read_text()
    assert "Tensor-core matmuls torch refused here: int8 (_int_mm_out_cuda not compiled for this platform)." in text


def test_gpu_benchmark_runs_end_to_end_with_stand_ins(fake_gpu_with_cpu_torch, monkeypatch, tmp_path):
    # benchmarks/gpu_balance.py only runs on a lent GPU: run it here at small sizes so a broken
    # script cannot waste that session
    from harness.model import DecodeShape

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import gpu_balance

    monkeypatch.setattr(gpu_balance, "MATMUL_N", 128)
    monkeypatch.setattr(gpu_balance, "DecodeShape", lambda **k: DecodeShape(**{**k, "seq_len": 512, "batch": 2}))
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["gpu_balance.py", "--rounds", "1", "--json", str(out)])
    gpu_balance.main()
    (row,) = json.loads(out.read_text())["rounds"]
    assert set(gpu_balance.TARGETS) <= set(row) and all(row[k] > 0 for k in gpu_balance.TARGETS)


def test_a_throttled_gpu_marks_its_records_and_the_report(fake_gpu_machine, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", fakes.FakeNVML(reasons=0x4))  # sw power cap throughout
    section = run.run_single_probe("peak", device="gpu0")
    doc = run.build_profile(device="gpu", quick=True, counters="off")
    sec = doc["devices"]["gpu0"]
    assert sec["telemetry"]["peak"]["warnings"] == ["throttled while measuring: sw power cap"]
    assert "throttled while measuring: sw power cap" in sec["peak_flops"]["fp32"]["warnings"]
    text = pathlib.Path(report.write_report(doc, str(tmp_path))[-1]).read_text()
    assert "- gpu0 peak_flops.fp32: throttled while measuring: sw power cap" in text
    assert section["telemetry"]["peak"]["warnings"] and "sw power cap" in section["peak_flops"]["fp32"]["warnings"][-1]


def test_a_failing_gpu_probe_keeps_the_others_and_the_profile(fake_gpu_machine, monkeypatch, tmp_path, capsys):
    from harness import cli
    from probes import gpu_decode

    def crash(ctx):
        raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered\nmore detail")

    monkeypatch.setattr(gpu_decode, "run_decode", crash)
    out = tmp_path / "gpu.yaml"
    assert cli.main(["profile", "--device", "gpu", "--quick", "--counters", "off", "--out", str(out)]) == 1
    assert "probe failed, its measurements are missing from the profile: gpu0: decode: RuntimeError: " \
           "cudaErrorIllegalAddress" in capsys.readouterr().err
    sec = profile.load_profile(str(out))["devices"]["gpu0"]  # written, and loads
    assert sec["probe_errors"] == {"decode": "RuntimeError: cudaErrorIllegalAddress: an illegal memory access "
                                             "was encountered"}
    assert all(r["validated"] for r in profile.measurement_records(sec)) and sec["bandwidth"] and sec["peak_flops"]
    assert "decode_attention" not in sec and sec["balance"]["fp32"] > 0
    text = pathlib.Path(report.write_report(profile.load_profile(str(out)), str(tmp_path / "r"), load_specs())[-1]).read_text()
    assert "gpu0 probe decode failed, its measurements are missing: RuntimeError" in text


def test_cli_probe_on_a_gpu_prints_its_records(fake_gpu_machine, capsys):
    from harness import cli

    assert cli.main(["probe", "decode", "--device", "gpu0", "--dtype", "bf16", "--seq-len", "77", "--heads", "4",
                     "--kv-heads", "2", "--head-dim", "128", "--batch", "1"]) == 0
    assert "decode cupy-fused  bf16 B=1 H=4/2 d_h=128 S=77" in capsys.readouterr().out


def test_tensor_core_rows_against_the_datasheet():
    spec = next(s for s in load_specs() if s["file"] == "h100-sxm5-80gb.yaml")
    sec = {"tensor_flops": {"bf16": {"flops_per_s": 7.9e14, "median_flops_per_s": 7.8e14, "validated": True},
                            "int8": {"flops_per_s": None, "validated": False, "error": "matmul int8: relative error 1"}}}
    bf16, int8 = report.tensor_rows(sec, spec)
    assert bf16["theoretical"] == "989.4 TFLOP/s (datasheet, dense)" and bf16["fraction"] == "80%" and bf16["flag"] == ""
    assert int8["flag"].startswith("WRONG") and int8["fraction"] == "n/a"
    assert report.tensor_rows(sec, None)[0]["theoretical"] == "n/a"


def test_a_cpus_matmul_rows_against_its_matrix_units():
    sec = {"tensor_flops": {"bf16": {"flops_per_s": 8.792e11, "median_flops_per_s": 8.3e11, "validated": True,
                                     "theoretical_flops_per_s": 4.3008e12},
                            "int8": {"flops_per_s": 9e12, "median_flops_per_s": 8.9e12, "validated": True,
                                     "theoretical_flops_per_s": 8.6016e12, "implied_clock_hz": 2.197e9}}}
    bf16, int8 = report.tensor_rows(sec, None, "matmul (torch)")
    assert bf16["theoretical"] == "4.3 TFLOP/s (nominal clock)" and bf16["fraction"] == "20%" and bf16["flag"] == ""
    assert int8["theoretical"] == "8.6 TOP/s (nominal clock)" and int8["flag"].endswith("implies at least 2.20 GHz")
    theory = {"matmul": {"source": {"bf16": "AMX-BF16 tiles (TDPBF16PS), 1024 per cycle per core",
                                    "int8": "not derivable: no int8 matrix unit"}, "table_source": "the manual"}}
    assert report.matmul_theory_lines({"theoretical": theory})[0] == (
        "Theoretical matmul figures, at the nominal clock: bf16: AMX-BF16 tiles (TDPBF16PS), 1024 per cycle per core; "
        "int8: not derivable: no int8 matrix unit; rates from the manual.")
    assert report.matmul_theory_lines({"theoretical": {"source": "a profile made before matmul theory"}}) == []
    # a host that runs the cores 1.84x the nominal clock (the fp32 FMA peak says so) re-rates the units
    fast = {**sec, "peak_flops": {"fp32": {"flops_per_s": 4.94e11, "fraction_of_theoretical": 1.84,
                                           "implied_clock_hz": 3.86e9}}}
    bf16, int8 = report.tensor_rows(fast, None, "matmul (torch)")
    assert bf16["fraction"] == "20%" and bf16["flag"] == "11% of the units' rate at the 3.86 GHz the fp32 FMA peak implies"
    assert int8["flag"] == ("above the theoretical peak at the nominal clock: implies at least 2.20 GHz; "
                            "57% of the units' rate at the 3.86 GHz the fp32 FMA peak implies")
    steady = {**sec, "peak_flops": {"fp32": {"fraction_of_theoretical": 0.97, "implied_clock_hz": 2.04e9}}}
    assert report.tensor_rows(steady, None, "matmul (torch)")[0]["flag"] == ""  # within CLOCK_SHIFT: no re-rating
    series = report.roofline_series("m", {**sec, "peak_flops": {"fp32": {"flops_per_s": 3.3e11}}}, 32 << 20)
    assert {c["label"] for c in series["ceilings"] if not c["measured"]} == {
        "bf16 matmul (theoretical, nominal clock)", "int8 matmul (theoretical, nominal clock)"}


def test_regression_report_covers_gpu_metrics(fake_gpu_machine):
    from harness import compare

    base, new = (run.build_profile(device="gpu", quick=True, counters="off") for _ in range(2))
    rows = {r["metric"]: r for r in compare.compare(base, new)["rows"]}
    for name in ("gpu0.bandwidth.triad", "gpu0.peak_flops.fp32", "gpu0.balance.fp32",
                 "gpu0.decode.cupy-fused.int8.B8.H8.KV2.D64.S256.time"):
        assert rows[name]["verdict"] != "not comparable", name
    new["devices"]["gpu0"]["gpu"]["driver_version"] = "590.1"
    new["devices"]["gpu0"]["gpu"]["uuid"] = "GPU-00000003-5a5a"  # another GPU of the node (CUDA_VISIBLE_DEVICES)
    differences = [list(d) for d in compare.identity_differences(base, new)]
    assert ["GPU driver", "580.82.07", "590.1"] in differences
    assert ["gpu0 UUID", "GPU-00000000-5a5a", "GPU-00000003-5a5a"] in differences
    new["devices"]["gpu0"]["gpu"]["power_limit_w"] = 500.0  # capped: every figure it bounds can drop
    new["devices"]["gpu1"] = {**new["devices"]["gpu0"], "gpu": {**new["devices"]["gpu0"]["gpu"], "index": 1}}
    differences = [list(d) for d in compare.identity_differences(base, new)]
    assert ["gpu0 power limit W", 700.0, 500.0] in differences and ["gpu1", None, "NVIDIA H100 80GB HBM3"] in differences
    assert not any(label.startswith("gpu0 max") or label == "gpu0" for label, *_ in differences)


def test_export_for_llm_analysis_takes_the_gpu(fake_gpu_machine):
    from harness.errors import HarnessError
    from harness.export import export

    doc = run.build_profile(device="gpu", quick=True, counters="off")
    config, notes = export(doc, "llm-analysis")
    sec = doc["devices"]["gpu0"]
    assert config["name"].endswith("-gpu0-measured") and config["mem_per_GPU_in_GB"] == 85.5
    assert config["hbm_bandwidth_in_GB_per_sec"] == round(sec["bandwidth"]["read"]["bytes_per_s"] / 1e9, 2)
    assert config["peak_fp16_TFLOPS"] is None and any("torch is not installed" in n for n in notes)
    # a null i8 or i4 is filled by llm-analysis with 2x or 4x the fp16 rate: said, as nobody measured it
    assert any(n.startswith("peak_i4_TFLOPS: not measured (null)") and "assumes 4x peak_fp16_TFLOPS" in n for n in notes)
    sec["tensor_flops"] = {"fp16": {"validated": True, "flops_per_s": 7.5e14},
                           "int8": {"validated": True, "flops_per_s": 1.4e15, "via": "torch._int_mm"}}
    config, notes = export(doc, "llm-analysis", "gpu0")
    assert config["peak_fp16_TFLOPS"] == 750.0 and config["peak_i8_TFLOPS"] == config["peak_i4_TFLOPS"] == 1400.0
    assert "peak_i8_TFLOPS: measured tensor-core matmul (int8, torch._int_mm)" in notes
    assert any(n.startswith("peak_i4_TFLOPS: measured tensor-core matmul (int8, torch._int_mm) (int4 products widened")
               for n in notes)
    with pytest.raises(HarnessError, match="no device 'cpu': it has gpu0"):
        export(doc, "llm-analysis", "cpu")


def test_a_gpu_peaks_fraction_of_theoretical_is_checked_against_the_sections_theory(fake_gpu_machine, tmp_path):
    """A GPU's FMA records carry no theoretical figure of their own: their fraction is of the section's,
    at the SM clock NVML reported while they ran."""
    doc = run.build_profile(device="gpu", quick=True, counters="off")
    sec = doc["devices"]["gpu0"]
    rec = sec["peak_flops"]["fp32"]
    assert "theoretical_flops_per_s" not in rec
    assert rec["fraction_of_theoretical"] == pytest.approx(rec["flops_per_s"] / sec["theoretical"]["flops_per_s"]["fp32"])
    rec["fraction_of_theoretical"] *= 2
    path = tmp_path / "gpu.yaml"
    path.write_text(profile.dump(doc))
    with pytest.raises(HarnessError, match=r"devices\.gpu0\.peak_flops\.fp32\.fraction_of_theoretical is .*, but "
                                           r"flops_per_s over the section's theoretical rate is "):
        profile.load_profile(str(path))


def test_model_predicts_with_a_gpus_roofs(fake_gpu_machine, tmp_path, capsys):
    import json

    from harness import cli

    doc = run.build_profile(device="gpu", quick=True, counters="off")
    doc["devices"]["gpu0"]["tensor_flops"] = {"fp16": {"validated": True, **timed("flops", 7.5e11, [1e-3]),
                                                       "threads": 1}}
    path = tmp_path / "gpu.yaml"
    profile.save_profile(doc, str(path))
    assert cli.main(["model", "llama-2-7b", "--profile", str(path), "--json"]) == 0
    step = json.loads(capsys.readouterr().out)
    read = doc["devices"]["gpu0"]["bandwidth"]["read"]["bytes_per_s"]
    assert step["bandwidth_bytes_per_s"] == read and step["peak_flops_per_s"] == 7.5e14
    assert "gpu0" in step["machine"] and "tensor-core fp16" in step["machine"]
    # int4 weights are widened to 16 bits for the matmul (W4A16): the fp16 tensor cores, not the FMA chains
    assert cli.main(["model", "llama-2-7b", "--profile", str(path), "--weight-dtype", "int4", "--json"]) == 0
    step = json.loads(capsys.readouterr().out)
    assert step["peak_flops_per_s"] == 7.5e14 and "tensor-core fp16" in step["machine"]
    assert (step["weight_dtype"], step["cache_dtype"]) == ("int4", "fp16")
    assert cli.main(["model", "llama-2-7b", "--profile", str(path), "--device", "cpu"]) == 2
    assert "no device 'cpu'" in capsys.readouterr().err
    # a `--device all` profile of a GPU machine: the GPU unless --device cpu asks for the CPU
    doc["devices"] = {"cpu": profile.load_profile(COMMITTED_PROFILE)["devices"]["cpu"], **doc["devices"]}
    profile.save_profile(doc, str(path))
    for argv, device in ((["--json"], "gpu0"), (["--json", "--device", "cpu"], "cpu")):
        assert cli.main(["model", "llama-2-7b", "--profile", str(path), *argv]) == 0
        assert f"{device} ({path}" in json.loads(capsys.readouterr().out)["machine"]
    assert profile.default_device({"cpu": {}, "gpu10": {}, "gpu2": {}}) == "gpu2"
    assert profile.default_device({"cpu": {}}) == "cpu"


def test_fleet_metrics_of_a_gpu_node(fake_gpu_machine):
    from harness import fleet

    doc = run.build_profile(device="gpu", quick=True, counters="off")
    doc["devices"]["gpu0"]["tensor_flops"] = {"bf16": {"flops_per_s": 8e14, "median_flops_per_s": 7.9e14}}
    metrics = fleet.node_metrics(doc)
    assert metrics["gpu0.tensor_flops.bf16"] == (7.9e14, True)
    assert {"gpu0.bandwidth.read", "gpu0.peak_flops.fp32", "gpu0.sm_clock_hz.peak"} <= set(metrics)
    per_dtype = doc["devices"]["gpu0"]["model_validation"]["per_dtype"]  # test sizes: fp32's cache stays in the L2, fp16's
    assert "fp32" not in per_dtype and metrics["gpu0.decode.fraction_of_read"] == (
        validation.headline_fraction(per_dtype)[0], True)
    assert fleet.config_of(doc)["gpu0 driver"] == "580.82.07"


def test_a_malformed_gpu_section_is_named_on_load(fake_gpu_machine, tmp_path):
    doc = run.build_profile(device="gpu", quick=True, counters="off")
    doc["devices"]["gpu0"]["peak_flops"]["fp32"]["samples_s"] = "fast"
    path = tmp_path / "bad.yaml"
    path.write_text(profile.dump(doc))
    with pytest.raises(Exception, match="devices.gpu0.peak_flops.fp32.samples_s must be a list"):
        profile.load_profile(str(path))


def test_two_gpus_each_a_device_and_gpus_selects(fake_gpu_machine, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fakes.FakeNVML(count=2))
    doc = run.build_profile(device="gpu", quick=True, counters="off", gpu_selection="1")
    assert set(doc["devices"]) == {"gpu1"} and doc["devices"]["gpu1"]["gpu"]["index"] == 1
    assert [g["index"] for g in doc["machine"]["gpus"]] == [0, 1]
    def no_cpu_probing(*args):
        raise AssertionError("a bad --gpus must be refused before the CPU is probed")

    monkeypatch.setattr(run, "cpu_section", no_cpu_probing)
    for selection, needle in (("2", "valid indices are 0 to 1"), ("one", "not a comma-separated list"),
                              (",", "valid indices are 0 to 1"), ("1,0,1", "names GPU 1 more than once")):
        with pytest.raises(HarnessError, match=needle):
            run.build_profile(device="all", quick=True, gpu_selection=selection)
    with pytest.raises(HarnessError, match="--device cpu profiles none"):
        run.build_profile(device="cpu", quick=True, gpu_selection="0")


def test_a_gpu_hidden_behind_cuda_visible_devices_is_identified_by_its_bus_not_its_ordinal(fake_gpu_machine, monkeypatch):
    # NVML numbers GPUs by PCI bus and ignores CUDA_VISIBLE_DEVICES: CUDA's gpu0 here is NVML's GPU 1
    monkeypatch.setitem(sys.modules, "pynvml", fakes.FakeNVML(count=2))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    doc = run.build_profile(device="gpu", quick=True, counters="off")
    gpu = doc["devices"]["gpu0"]["gpu"]
    assert set(doc["devices"]) == {"gpu0"} and gpu["index"] == 0
    assert gpu["uuid"] == "GPU-00000001-5a5a" and gpu["pci_bus_id"] == fakes.FakeNVML.pci_bus_id(1)
    assert [(g["index"], g["nvml_index"]) for g in doc["machine"]["gpus"]] == [(0, 1)]


def test_ncu_runs_share_one_time_budget(fake_gpu_machine, monkeypatch):
    from harness import gpu_run
    from harness.counters import ncu

    section = run.build_profile(device="gpu", quick=True, counters="off")["devices"]["gpu0"]
    now, given = [0.0], []

    def fake_count(probe, device, nvtx_range, args, model_bytes, timeout_s):
        given.append((nvtx_range, timeout_s))
        now[0] += 60  # each ncu run takes a minute
        return {"source": "ncu", "reason": None}

    monkeypatch.setattr(ncu, "count", fake_count)
    gpu_run.count_with_ncu(section, 0, lambda m: None, budget_s=100, clock=lambda: now[0])
    assert given == [("triad", 100), ("fma_fp32", 40)]  # the third would start with the budget spent
    longest = max(r["seq_len"] for r in section["decode_attention"] if r["impl"] == "cupy-fused")
    (decode,) = [r for r in section["decode_attention"] if r["impl"] == "cupy-fused" and r["seq_len"] == longest]
    assert "the 100 s this profile gives ncu were spent" in decode["counters"]["reason"]


def test_a_failure_every_ncu_run_would_meet_stops_the_later_runs(fake_gpu_machine, monkeypatch):
    from harness import gpu_run
    from harness.counters import ncu

    section = run.build_profile(device="gpu", quick=True, counters="off")["devices"]["gpu0"]
    given = []
    reason = "ncu counted nothing: ==ERROR== Failed to initialize the profiler: LibraryNotLoaded"

    def fake_count(probe, device, nvtx_range, args, model_bytes, timeout_s):
        given.append(nvtx_range)
        return {"source": "unavailable", "reason": reason}

    monkeypatch.setattr(ncu, "count", fake_count)
    gpu_run.count_with_ncu(section, 0, lambda m: None)
    assert given == ["triad"]  # one run: the others would have met the same failure
    blocks = [rec["counters"] for rec, *_ in gpu_run.ncu_targets(section)]
    assert len(blocks) >= 3 and blocks[0]["reason"] == reason
    assert all(b["source"] == "unavailable" and b["reason"] == f"not counted: ncu's run of stream triad failed so, "
               f"as every run here would: {reason}" for b in blocks[1:])
    given.clear()
    monkeypatch.setattr(ncu, "count", lambda *a, **k: given.append(a[2]) or {"source": "unavailable",
                                                                             "reason": "ncu failed (exit 3): x"})
    gpu_run.count_with_ncu(section, 0, lambda m: None)
    assert len(given) == len(blocks)  # a failure of one run alone: each run is tried


def test_measurements_are_written_before_ncu_counts_and_survive_it_being_cut_short(fake_gpu_machine, monkeypatch, tmp_path):
    from harness.cli import main
    from harness.counters import ncu

    out = tmp_path / "gpu.yaml"
    monkeypatch.setattr(ncu, "count", lambda *a, **k: {"source": "ncu", "reason": None, "dram_bytes": 1.0,
                                                      "flops": None, "intensity": None, "bytes_ratio": None})
    assert main(["profile", "--device", "gpu", "--quick", "--out", str(out)]) == 0
    assert profile.load_profile(str(out))["devices"]["gpu0"]["bandwidth_fp32"]["triad"]["counters"]["source"] == "ncu"
    assert not (tmp_path / "history").exists()  # the run's own first write is not history

    def stalled(*a, **k):
        raise KeyboardInterrupt  # ncu hangs and the run is stopped
    monkeypatch.setattr(ncu, "count", stalled)
    assert main(["profile", "--device", "gpu", "--quick", "--out", str(out)]) == 130
    doc = profile.load_profile(str(out))  # this run's measurements, without their counts
    triad = doc["devices"]["gpu0"]["bandwidth_fp32"]["triad"]
    assert triad["validated"] and triad["counters"]["reason"].startswith("pending: the profile was written before ncu")
    assert len(os.listdir(tmp_path / "history" / doc["machine"]["id"])) == 1  # the first run's profile, kept


def test_a_gpu_probe_is_counted_by_ncu_when_asked_and_perf_is_refused(fake_gpu_machine, monkeypatch, capsys):
    import shutil as sh

    from harness import cli

    monkeypatch.setattr(sh, "which", lambda name: None)  # no ncu here (nor anywhere on this PATH)
    section = run.run_single_probe("stream", device="gpu0", quick=True, options={"dtype": "fp32", "counters": "ncu"})
    assert section["bandwidth_fp32"]["triad"]["counters"]["reason"] == "Nsight Compute (ncu) is not on the PATH"
    assert "not counted: ncu re-runs only" in section["bandwidth_fp32"]["copy"]["counters"]["reason"]
    assert cli.main(["probe", "peak", "--device", "gpu0", "--counters", "perf"]) == 2
    assert "--counters perf counts CPU probes; gpu0 is counted by ncu" in capsys.readouterr().err


def test_every_decode_impl_has_its_own_marker_in_the_plots():
    from harness.plots import IMPL_MARKERS
    from probes import cpu_decode, gpu_decode

    impls = ["numba-fused", "torch-sdpa", "torch-naive", "cupy-fused"]
    impls += [f"torch-sdpa[{b.lower()}]" for b in gpu_decode.SDPA_BACKENDS]  # as run_decode names them
    assert set(cpu_decode.IMPLS) | set(gpu_decode.IMPLS) <= set(impls)
    gpu = [IMPL_MARKERS[i] for i in impls if i.startswith("torch-sdpa[")] + [IMPL_MARKERS[i] for i in ("torch-naive", "cupy-fused")]
    assert len(set(gpu)) == len(gpu)  # a GPU's decode plot draws them side by side


@pytest.mark.parametrize("dtype", ["fp64", "fp32", "fp16"])
def test_an_fma_kernel_a_step_short_is_caught_though_its_chains_converge(fake_gpu_machine, monkeypatch, dtype):
    # after the timed launches the chains stand at their fixed point, where one step fewer changes
    # nothing: the check's own launch of COUNT_STEPS steps shows it
    from probes import gpu_peak

    w = gpu_peak.fma_workload({"sm_count": 4}, dtype, 64)
    w.poison()
    w.run(2)
    assert w.check() is None
    real = fakes._fma
    monkeypatch.setattr(fakes, "_fma", lambda name, grid, block, args: real(name, grid, block, (*args[:3], args[3] - 1)))
    w.run(2)
    assert "after 3 steps of one block" in w.check()


@pytest.mark.parametrize("probe", ["stream", "hierarchy", "peak"])
def test_any_failing_gpu_probe_leaves_a_profile_that_loads_and_reports(fake_gpu_machine, monkeypatch, tmp_path, probe):
    # without the stream or the peak probe the decode points have no roofs: no prediction, and no crash
    import importlib

    from harness import cli

    def crash(ctx):
        raise RuntimeError("cudaErrorMemoryAllocation: out of memory")

    module, function = PROBES[probe].runners["gpu"].split(":")
    monkeypatch.setattr(importlib.import_module(module), function, crash)
    out = tmp_path / "gpu.yaml"
    assert cli.main(["profile", "--device", "gpu", "--quick", "--counters", "off", "--out", str(out)]) == 1
    doc = profile.load_profile(str(out))
    assert doc["devices"]["gpu0"]["probe_errors"] == {probe: "RuntimeError: cudaErrorMemoryAllocation: out of memory"}
    assert doc["devices"]["gpu0"]["decode_attention"]
    text = pathlib.Path(report.write_report(doc, str(tmp_path / "r"), load_specs())[-1]).read_text()
    assert f"gpu0 probe {probe} failed" in text
