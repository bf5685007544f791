"""GPU code that needs no GPU: every CUDA source compiles with nvcc for sm_80 and sm_90, launch
geometry and sizing are right, and GPU probes say why they cannot run here."""

import importlib.util
import math
import os
import re
import shutil
import subprocess

import pytest

import gpu_decode_cases
import nvrtc
from probes import PROBES, gpu_common, unavailable_reason

NVCC = shutil.which("nvcc")
_spec = importlib.util.spec_from_file_location(  # a benchmark script, not a package module
    "decode_sass", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "decode_sass.py"))
decode_sass = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(decode_sass)
EXPECTED_KERNELS = {"stream": ["triad_fp32", "read_fp64", "read_reps_fp32", "read_reps_l1_fp32"], "fma": ["fma_fp16", "fma_fp64"],
                    "decode": ["decode_merge"]}


ALL_DECODE_KERNELS = [(t, d, g) for t in gpu_common.DECODE_TYPES for d in gpu_common.DECODE_HEAD_DIMS
                      for g in gpu_common.DECODE_GROUPS]


def template_names(name):
    """Every template instantiation the probes can ask a source for (as CuPy name expressions)."""
    if name != "decode":
        return []
    return [gpu_common.decode_kernel_name(*k) for k in ALL_DECODE_KERNELS]


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", gpu_common.CUDA_SOURCES)
def test_cuda_sources_compile(tmp_path, name, arch):
    src = tmp_path / f"{name}.cu"
    code = gpu_common.cuda_source(name)
    names = template_names(name)
    if names:  # instantiate every template the probe can ask for, as CuPy would
        code += "\nvoid* all_kernels[] = {" + ", ".join(f"(void*){n}" for n in names) + "};\n"
    src.write_text(code)
    proc = subprocess.run([NVCC, f"-arch={arch}", "--ptx", "-Werror", "all-warnings", "-o", str(tmp_path / "out.ptx"),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    for kernel in EXPECTED_KERNELS[name]:
        assert f".entry {kernel}" in ptx
    assert ptx.count(".entry _Z14decode_partial") == len(names)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
def test_decode_kernels_keep_their_values_in_registers_on_sm_90():
    # ptxas's own report for the H100/H200: a kernel that spills to local memory cannot land
    names = ALL_DECODE_KERNELS
    reports, _ = decode_sass.build(template_names("decode"), NVCC)
    assert len(reports) == len(names) + 1  # and decode_merge
    spilling = [name for name, report in reports.items()
                if not re.search(r"\b0 bytes spill stores, 0 bytes spill loads", report)]
    assert not spilling, spilling


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
def test_the_l2_read_bypasses_l1_and_the_l1_read_does_not(tmp_path):
    # every block re-reads its own slice: loads cached in L1 would make the sweep's L2 points L1's
    src = tmp_path / "stream.cu"
    src.write_text(gpu_common.cuda_source("stream"))
    subprocess.run([NVCC, "-arch=sm_90", "--ptx", "-o", str(tmp_path / "s.ptx"), str(src)], check=True, timeout=300)
    entries = dict(re.findall(r"\.entry (\w+)\((.*?)\n}", (tmp_path / "s.ptx").read_text(), re.S))
    l2, l1 = entries["read_reps_fp32"], entries["read_reps_l1_fp32"]
    assert l2.count("ld.global.cg.v4.f32") == 5 and "ld.global.nc" not in l2  # four in flight, one for the rest
    assert "ld.global.cg" not in l1 and "ld.global.nc.v4.f32" in l1


def test_the_l1_read_check_knows_how_long_the_kernel_sums_in_fp32():
    from probes import gpu_stream

    flush = re.search(r"#define L1_FLUSH_REPS (\d+)", gpu_common.cuda_source("stream"))
    assert flush and int(flush.group(1)) == gpu_stream.L1_FLUSH_REPS


NVDISASM_LISTING = """\
.text._Z6kernelPf:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   LDG.E.128.CONSTANT R4, desc[UR6][R2.64] ;
.L_x_1:
        /*0020*/                   FFMA R8, R4, R5, R8 ;
        /*0030*/              @!P0 BRA `(.L_x_1) ;
        /*0040*/                   BRA.DIV UR4, `(.L_x_2) ;
        /*0050*/              @!P1 BRA `(.L_x_0) ;
.L_x_2:
        /*0060*/                   EXIT ;
"""


def test_decode_sass_reads_nvdisasm_listings():
    code = decode_sass.functions(NVDISASM_LISTING)
    assert list(code) == ["_Z6kernelPf"] and code["_Z6kernelPf"][3] == (0x30, "@!P0 BRA 0x20")
    # the inner loop only (the outer one holds it); a BRA.DIV is a divergence path, not a loop
    assert decode_sass.innermost_loops(code["_Z6kernelPf"]) == [["FFMA R8, R4, R5, R8", "@!P0 BRA 0x20"]]


@pytest.mark.skipif(NVCC is None or decode_sass.nvdisasm() is None,
                    reason="needs nvcc and nvdisasm (the dev extra's nvidia-cuda-nvdisasm wheel)")
def test_decode_passes_load_16_bytes_and_keep_off_local_memory_on_sm_90():
    results = decode_sass.analyse(ALL_DECODE_KERNELS, nvcc=NVCC)  # the spill test's build, read again
    for result in results:
        passes = result["passes"]
        assert set(passes) == {"K", "V"}, result["kernel"]  # both loops found in the machine code
        assert result["spill_bytes"] == 0 and not any(p["local_memory"] for p in passes.values()), result
        dtype, head_dim, _ = result["kernel"]
        for p in passes.values():  # every row a lane reads comes in 16-byte loads, UNROLL rows a step
            assert p["wide_loads"] == p["steps_per_loop"] * decode_sass.unroll() * decode_sass.packets_per_lane(
                dtype, head_dim), (result["kernel"], p)
    headline = next(r for r in results if r["kernel"] == ("fp16", 128, 4))
    assert headline["blocks_per_sm"] == 3  # 24 warps' loads in flight: docs/decode-kernel.md


@pytest.mark.skipif(NVCC is None or decode_sass.nvdisasm() is None,
                    reason="needs nvcc and nvdisasm (the dev extra's nvidia-cuda-nvdisasm wheel)")
def test_stream_kernels_arithmetic_is_what_ncu_counts_and_their_accesses_16_bytes_on_sm_90(tmp_path):
    """ncu counts a FLOP per FMUL or FADD and two per FFMA: nvcc contracts the triad's s * c + b into
    one FMA per element (the recorded ncu page's counts follow this), scale is a multiply and add an add."""
    src, cubin = tmp_path / "stream.cu", tmp_path / "stream.cubin"
    src.write_text(gpu_common.cuda_source("stream"))
    subprocess.run([NVCC, "-arch=sm_90", "-cubin", "-o", str(cubin), str(src)], check=True, timeout=300)
    code = decode_sass.disassemble(cubin.read_bytes(), decode_sass.nvdisasm())

    def ops(kernel):
        return {op for _, ins in code[kernel] for op in re.findall(r"\b([DF](?:FMA|MUL|ADD))\b", ins)}

    for p, suffix in (("F", "fp32"), ("D", "fp64")):
        assert ops(f"triad_{suffix}") == {f"{p}FMA"}, suffix
        assert ops(f"scale_{suffix}") == {f"{p}MUL"} and ops(f"add_{suffix}") == {f"{p}ADD"}, suffix
        assert ops(f"copy_{suffix}") == set(), suffix
    # the 16-byte loads per thread: every global load of every kernel, and every store of the
    # four that write arrays, is 128 bits wide (the read kernels store one 8-byte sum a thread)
    for kernel, ins in code.items():
        loads = re.findall(r"\bLDG\.E(?:\.(\d+))?", " ".join(t for _, t in ins))
        stores = re.findall(r"\bSTG\.E(?:\.(\d+))?", " ".join(t for _, t in ins))
        assert loads and set(loads) == {"128"}, (kernel, loads)
        assert set(stores) == ({"64"} if kernel.startswith("read") else {"128"}), (kernel, stores)
        assert decode_sass.innermost_loops(ins), kernel  # a grid-stride loop: a backward branch


@pytest.mark.skipif(NVCC is None or decode_sass.nvdisasm() is None,
                    reason="needs nvcc and nvdisasm (the dev extra's nvidia-cuda-nvdisasm wheel)")
def test_fma_peak_loops_hold_the_fmas_and_three_loop_instructions_on_sm_90(tmp_path):
    """Each instruction a warp issues takes a slot an FMA could have: the peak kernels' unrolled loop
    must be 16 x ACC FMAs of its dtype and the loop's count, compare and branch (97.7% FMAs, where the
    GPU issue asks for 0.9 of the theoretical rate), as the CPU chains' loops are held to one FMA a
    chain (tests/test_llvm_targets.py)."""
    from probes import gpu_peak

    src, cubin = tmp_path / "fma.cu", tmp_path / "fma.cubin"
    src.write_text(gpu_common.cuda_source("fma"))
    unroll = int(re.search(r"#pragma unroll (\d+)", src.read_text()).group(1))
    subprocess.run([NVCC, "-arch=sm_90", "-cubin", "-o", str(cubin), str(src)], check=True, timeout=300)
    code = decode_sass.disassemble(cubin.read_bytes(), decode_sass.nvdisasm())
    for kernel, fma in (("fma_fp32", "FFMA"), ("fma_fp64", "DFMA"), ("fma_fp16", "HFMA2")):
        main = max(decode_sass.innermost_loops(code[kernel]), key=len)  # the other: iters % unroll steps
        ops = [re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in main]
        steps = unroll * gpu_peak.ACC
        assert ops.count(fma) == steps and len(ops) == steps + 3, (kernel, decode_sass.mix(main))
        assert set(ops) - {fma} <= {"IADD3", "VIADD", "ISETP", "BRA"}, (kernel, decode_sass.mix(main))


@pytest.mark.skipif(nvrtc.unavailable_reason() is not None, reason=str(nvrtc.unavailable_reason()))
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("name", gpu_common.CUDA_SOURCES)
def test_cuda_sources_compile_with_nvrtc_as_cupy_does(name, arch):
    # nvcc pulls in host headers NVRTC lacks (an INFINITY from <math.h> once passed nvcc and
    # would have failed on the GPU): compile with NVRTC, CuPy's options and name expressions too
    names = template_names(name)
    ptx, lowered = nvrtc.compile_ptx(gpu_common.cuda_source(name), arch, gpu_common.NVRTC_OPTIONS, names)
    for kernel in EXPECTED_KERNELS[name]:
        assert f".entry {kernel}" in ptx
    assert sorted(lowered) == sorted(names)
    for mangled in lowered.values():
        assert f".entry {mangled}(" in ptx
        # the only static shared memory: the scratch decode_chunking budgets for beside the scores
        assert f"_ZZ{mangled[2:]}E7scratch[{gpu_common.DECODE_STATIC_SHARED_BYTES}];" in ptx
    static_shared = [line for line in ptx.splitlines() if line.strip().startswith(".shared") and "decode_partial" in line]
    assert len(static_shared) == len(names)


def test_decode_block_size_matches_the_cuda_source():
    assert f"#define THREADS {gpu_common.DECODE_THREADS}\n" in gpu_common.cuda_source("decode")
    assert gpu_common.decode_kernel_name("int8", 128, 4) == "decode_partial<signed char, 128, 4>"


def test_grid_and_sizes():
    assert gpu_common.grid_blocks(10, sm_count=132) == 1
    assert gpu_common.grid_blocks(10**9, sm_count=132) == 132 * 8
    # H100: 50 MB L2 -> 4x per array, 16-byte vectors
    assert gpu_common.stream_vectors(50 << 20, 80 << 30) == 4 * (50 << 20) // 16
    assert gpu_common.stream_vectors(50 << 20, 600 << 20) == int(0.5 * (600 << 20) / 3) // 16


@pytest.mark.parametrize("batch,kv_heads,seq_len,group", [(1, 8, 32768, 4), (8, 8, 32768, 4), (1, 32, 100, 1), (1, 1, 65536, 8),
                                                    (8, 8, 100 * 12288, 1)])  # the last: chunks as long as shared memory allows
def test_decode_chunking_fills_the_gpu_and_fits_shared_memory(batch, kv_heads, seq_len, group):
    chunks, chunk_len = gpu_common.decode_chunking(batch, kv_heads, seq_len, group, sm_count=132)
    assert chunks * chunk_len >= seq_len > (chunks - 1) * chunk_len
    assert gpu_common.decode_shared_bytes(group, chunk_len, 256) + gpu_common.DECODE_STATIC_SHARED_BYTES <= 48 * 1024
    blocks = chunks * batch * kv_heads
    assert blocks >= min(8 * 132, math.ceil(seq_len / 256) * batch * kv_heads)  # several waves where there is work
    assert chunk_len >= min(256, seq_len) or blocks >= 32 * 132 * 0.9  # not cut finer than needed


H100_SM = {"registers": 65536, "shared_bytes": 233472, "threads": 2048, "blocks": 32}


@pytest.mark.parametrize("registers,shared,expected", [
    (80, 8192 + 256, (3, "registers")),  # the headline decode kernel: 2560 registers a warp, 8 warps a block
    (88, 8192 + 256, (2, "registers")),  # one register unit more a thread costs a block
    (32, 0, (8, "registers")),           # 1024 a warp: registers and threads both allow 8 (the first named)
    (45, 48 * 1024, (4, "shared memory")),  # 49 KB a block with its reserved 1 KB
])
def test_resident_blocks_per_sm(registers, shared, expected):
    assert gpu_common.resident_blocks(registers, shared, 256, H100_SM) == expected


def test_gpu_probes_say_why_they_cannot_run_here():
    reason = gpu_common.cupy_unavailable_reason()
    if reason is None:
        pytest.skip("this machine has a usable GPU")
    for name in ("stream", "peak", "decode"):
        assert unavailable_reason(PROBES[name], "gpu")
    import ctypes.util

    if "CuPy is not installed" not in reason and not ctypes.util.find_library("cuda"):
        # CUDA calls a missing driver "insufficient": the reason says there is none
        assert reason.startswith("no NVIDIA driver here (no libcuda): CUDA runtime cannot see a GPU"), reason


def test_gpu_decode_points_and_cold_l2_copies():
    from harness.errors import HarnessError
    from probes import gpu_decode

    points, left_out = gpu_decode.points_from_options({"impl": "all", "dtype": "fp16", "seq_len": 64})
    assert [p[0] for p in points].count("torch-sdpa") == len(gpu_decode.SDPA_BACKENDS) and left_out == []
    assert points[0][0] == "cupy-fused" and points[0][1].batch == 8 and points[0][1].kv_heads == 8
    with pytest.raises(HarnessError, match="head-dim 64, 128, 256"):
        gpu_decode.points_from_options({"head_dim": 80})
    with pytest.raises(HarnessError, match="heads / kv-heads in 1, 2, 4, 8"):
        gpu_decode.points_from_options({"heads": 24, "kv_heads": 8})
    with pytest.raises(HarnessError, match="int8 cache"):
        gpu_decode.points_from_options({"impl": "torch-naive", "dtype": "int8"})
    points, left_out = gpu_decode.points_from_options({"impl": "all", "dtype": "int8"})  # torch's: named, not dropped
    assert [p[0] for p in points] == ["cupy-fused"]
    assert left_out == [{"impl": impl, "dtype": "int8", "reason": "does not support an int8 cache: valid dtypes are "
                         "fp32, bf16, fp16"} for impl in ("torch-sdpa", "torch-naive")]
    assert gpu_decode.copies_for_cold_l2(1 << 30, 50 << 20) == 1
    assert gpu_decode.copies_for_cold_l2(1 << 20, 50 << 20) == 64  # capped
    assert gpu_decode.copies_for_cold_l2(10 << 20, 50 << 20) == 10


def test_gpu_fma_closed_form():
    from probes import gpu_peak

    fixed = gpu_peak.Y / (1 - gpu_peak.X)
    assert gpu_peak.closed_form_sum(0) == pytest.approx(sum(0.5 + 0.0625 * k for k in range(gpu_peak.ACC)))
    assert gpu_peak.closed_form_sum(10**6) == pytest.approx(gpu_peak.ACC * fixed)


@pytest.mark.gpu
@pytest.mark.skipif(gpu_common.cupy_unavailable_reason() is not None,
                    reason=f"no usable GPU here: {gpu_common.cupy_unavailable_reason()}")
def test_gpu_probes_run_and_validate_at_tiny_sizes(monkeypatch):
    from harness import run
    from harness.profile import measurement_records

    monkeypatch.setenv("HARNESS_TINY", "1")
    for name in ("stream", "peak", "decode"):
        section = run.run_single_probe(name, device="gpu0")
        recs = list(measurement_records(section))
        assert recs and all(r["validated"] for r in recs), name


@pytest.mark.gpu
@pytest.mark.skipif(gpu_common.cupy_unavailable_reason() is not None,
                    reason=f"no usable GPU here: {gpu_common.cupy_unavailable_reason()}")
def test_gpu_hierarchy_levels_are_each_their_own(monkeypatch):
    # full sizes (a few seconds): L1 well above L2 (with the L2 read cached in L1 the L2 level came
    # out at L1's rate), L2 above HBM (an H200's HBM3e reads at about 4.3 TB/s, its L2 not far above)
    from harness import run

    monkeypatch.delenv("HARNESS_TINY", raising=False)
    levels = run.run_single_probe("hierarchy", device="gpu0", quick=True)["hierarchy_levels"]
    l1, l2, hbm = (levels[k]["bytes_per_s"] for k in ("L1", "L2", "HBM"))
    assert l1 > 1.3 * l2 and l2 > 1.05 * hbm, levels


@pytest.mark.gpu
@pytest.mark.skipif(gpu_common.cupy_unavailable_reason() is not None,
                    reason=f"no usable GPU here: {gpu_common.cupy_unavailable_reason()}")
def test_each_cuda_device_is_identified_as_the_gpu_it_is():
    # NVML is matched to each CUDA ordinal by PCI bus id: the UUIDs of both sides must agree
    import cupy
    import pynvml

    from harness import gpu_run

    pynvml.nvmlInit()
    try:
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            raw = cupy.cuda.runtime.getDeviceProperties(i).get("uuid")
            if not raw:
                pytest.skip("this CuPy gives no device UUID")
            h = (raw if isinstance(raw, (bytes, bytearray)) else bytes(raw)).hex()[:32]
            info, _ = gpu_run.identify(i)
            assert info["uuid"] == f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", (i, info["pci_bus_id"])
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.gpu
@pytest.mark.skipif(gpu_common.cupy_unavailable_reason() is not None,
                    reason=f"no usable GPU here: {gpu_common.cupy_unavailable_reason()}")
@pytest.mark.parametrize("case", gpu_decode_cases.FUSED_DECODE_CASES)
def test_gpu_fused_decode_at_odd_sizes(monkeypatch, case):
    monkeypatch.setenv("HARNESS_TINY", "1")
    gpu_decode_cases.check_fused_decode(*case)


@pytest.mark.gpu
@pytest.mark.skipif(gpu_common.cupy_unavailable_reason() is not None,
                    reason=f"no usable GPU here: {gpu_common.cupy_unavailable_reason()}")
def test_gpu_decode_kernels_as_cupy_builds_them_keep_off_local_memory():
    # NVRTC and the driver on the GPU machine, not this machine's nvcc: the same no-spill guard
    names = template_names("decode")
    module = gpu_common.load_module("decode", templates=names)
    spilling = {n: k.local_size_bytes for n in names if (k := module.get_function(n)).local_size_bytes}
    assert not spilling, spilling
    headline = module.get_function(gpu_common.decode_kernel_name("fp16", 128, 4))
    assert headline.num_regs <= 80  # three blocks of 256 threads per SM (docs/decode-kernel.md)


def test_gpu_session_script_builds_the_ncu_commands(tmp_path):
    """benchmarks/gpu_session.sh is for a lent GPU machine; here its ncu step must still run to the
    end, each capture naming the harness's own ncu command and why it did not count, and bring
    everything back as one archive (the lent machine returns at most 8 files)."""
    import os
    import sys
    import tarfile

    env = {**os.environ, "PY": sys.executable, "PATH": "/usr/bin:/bin"}  # no ncu, no nvidia-smi
    proc = subprocess.run(["bash", "benchmarks/gpu_session.sh", str(tmp_path / "out"), "ncu"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path / "out") == ["gpu-session-ncu.tar.gz"]
    with tarfile.open(tmp_path / "out" / "gpu-session-ncu.tar.gz") as tar:
        tar.extractall(tmp_path / "got", filter="data")
    for name, range_ in (("triad", "harness-triad/"), ("fma-fp32", "harness-fma_fp32/"), ("decode", "harness-cupy-fused/")):
        assert f"--nvtx-include {range_}" in proc.stdout
        assert "ncu" in (tmp_path / "got" / f"ncu-{name}.csv").read_text()
    assert "--kernel-name regex:decode_partial --launch-count 2 --section SpeedOfLight" in proc.stdout
    assert "ncu" in (tmp_path / "got" / "ncu-decode-sections.log").read_text()
    assert proc.stdout.count("exit 127") == 4  # ncu is not installed here: three raw captures, the sections
    # an ncu whose profiler does not load (gVisor's message; the script hand-made): one capture, then the rest skipped
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ncu").write_text("#!/bin/sh\necho '==ERROR== Failed to initialize the profiler: "
                                          "LibraryNotLoaded' >&2\nexit 0\n")
    (tmp_path / "bin" / "ncu").chmod(0o755)
    env["PATH"] = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    proc = subprocess.run(["bash", "benchmarks/gpu_session.sh", str(tmp_path / "out2"), "ncu"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "--nvtx-include harness-triad/" in proc.stdout and "harness-fma_fp32/" not in proc.stdout
    assert "ncu cannot count on this machine (ncu-triad.log says why): the other ncu runs are skipped" in proc.stdout
