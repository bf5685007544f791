"""Each CPU kernel at tiny sizes, its output checked; poisoned outputs caught; packed FMAs in the asm."""

import copy
import os
import re
import shutil
import subprocess

import numba
import numpy as np
import pytest

from conftest import ROOT
from harness.workload import Context, time_interleaved, time_workload, working_set_text
from probes import cpu_peak, cpu_stream, cpu_threads


@pytest.fixture
def tiny_ctx(cpu):
    return Context(cpu=cpu, threads=2, tiny=True)


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
@pytest.mark.parametrize("threads", [1, 2])
def test_stream_kernels_validate_and_count_bytes(tiny_ctx, dtype, threads):
    n = 1001  # odd: the read kernel's per-thread chunks leave a remainder
    recs = {w.name: time_workload(w, repeats=2, min_sample_s=1e-4)
            for w in cpu_stream.stream_workloads(tiny_ctx, dtype, n, threads)}
    assert list(recs) == ["copy", "scale", "add", "triad", "read"]
    itemsize = 8 if dtype == "fp64" else 4
    for name, rec in recs.items():
        assert rec["validated"], rec.get("error")
        assert rec["bytes_per_s"] > 0 and len(rec["samples_s"]) == 2
    assert recs["copy"]["bytes_per_call"] == 2 * n * itemsize
    assert recs["triad"]["bytes_per_call"] == 3 * n * itemsize
    assert recs["read"]["bytes_per_call"] == (n // threads) * threads * itemsize


@pytest.mark.parametrize("name, arrays, scalar", [("k_copy", 2, []), ("k_scale", 2, [3.0]),
                                                   ("k_add", 3, []), ("k_triad", 3, [3.0])])
def test_stream_kernels_store_through_the_cache_not_through_memcpy(name, arrays, scalar):
    """A copy loop LLVM turns into a memcpy call times glibc's non-temporal stores, not the plain
    stores the other three kernels use (1.80x scale's rate on the model 207 Xeon VM)."""
    kernel = numba.njit(parallel=True)(getattr(cpu_stream, name).py_func)  # uncached: its IR can be read
    kernel(*[np.ones(64) for _ in range(arrays)], *scalar)
    ir = "".join(kernel.inspect_llvm().values())
    assert "vector.body" in ir and "memcpy" not in ir and "memmove" not in ir


def test_random_fill_is_not_constant_and_in_range():
    a = cpu_stream.aligned_empty(4096, np.float64)
    cpu_stream.fill_random(a, 1)
    assert a.ctypes.data % 64 == 0
    assert 0.5 <= a.min() and a.max() < 1.5 and len(np.unique(a)) > 4000


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
def test_stream_kernels_in_interleaved_rounds_validate_each_against_the_arrays_it_read(tiny_ctx, dtype):
    """Rounds of copy, scale, add, triad and read rewrite the arrays each round (the read sums what the
    last triad wrote): each is checked right after its last sample, and BabelStream's scalar keeps the
    values in range however many rounds run."""
    workloads = list(cpu_stream.stream_workloads(tiny_ctx, dtype, 1001, 2))
    recs = time_interleaved(workloads, repeats=30, min_sample_s=1e-4)
    assert [r["validated"] for r in recs] == [True] * 5, [r.get("error") for r in recs]
    assert all(r["interleaved_with"] == ["copy", "scale", "add", "triad", "read"] and len(r["samples_s"]) == 30
               for r in recs)
    assert recs[0]["steal_fraction"] == recs[-1]["steal_fraction"]  # one span of rounds


def test_a_broken_kernel_in_interleaved_rounds_fails_alone(tiny_ctx):
    workloads = list(cpu_stream.stream_workloads(tiny_ctx, "fp64", 256, 2))
    workloads[4].run = lambda loops: None  # the read writes nothing: its poisoned sums stay NaN
    recs = time_interleaved(workloads, repeats=2, min_sample_s=1e-4)
    assert [r["validated"] for r in recs] == [True, True, True, True, False]
    assert recs[4]["bytes_per_s"] is None and recs[4]["error"].startswith("read sum: element 0 is nan, expected ")


def test_the_thread_sweep_times_each_thread_count_in_the_same_rounds_on_its_own_threads(tiny_ctx):
    """Each sample runs on its workload's threads (Numba's count set per sample), so the sweep's
    1-thread and 2-thread points alternate; its triads need no tuned DRAM read."""
    messages = []
    ctx = Context(cpu=tiny_ctx.cpu, threads=2, tiny=True, progress=messages.append)
    sweep = cpu_threads.run_thread_sweep(ctx)["thread_sweep"]
    assert [r["threads"] for r in sweep["triad"]] == [r["threads"] for r in sweep["peak_fp32"]] == [1, 2]
    assert all(r["validated"] for r in sweep["triad"] + sweep["peak_fp32"])
    assert sweep["triad"][0]["interleaved_with"] == ["triad (1 thread)", "triad (2 threads)", "fma_fp32 (1 thread)",
                                                     "fma_fp32 (2 threads)"]
    assert not any("read kernels" in m for m in messages) and "in interleaved rounds" in messages[-1]
    seen = []

    def counting(threads):
        w = copy.copy(next(cpu_stream.stream_workloads(ctx, "fp64", 256, threads, kernels=("copy",))))
        run = w.run
        w.run = lambda loops: (seen.append((threads, numba.get_num_threads())), run(loops))
        return w
    time_interleaved([counting(1), counting(2)], repeats=3, min_sample_s=1e-4)
    assert seen and all(want == got for want, got in seen)


def test_a_kernel_that_writes_nothing_fails_its_check(tiny_ctx):
    w = next(w for w in cpu_stream.stream_workloads(tiny_ctx, "fp64", 256, 2) if w.name == "triad")
    w.run = lambda loops: None  # a broken kernel: the poisoned output stays NaN
    rec = time_workload(w, repeats=2, min_sample_s=1e-4)
    assert not rec["validated"] and rec["bytes_per_s"] is None
    assert rec["error"].startswith("triad a: element 0 is nan, expected ")  # plain numbers, not numpy reprs
    assert "triad a" in rec["error"] and any("output check failed" in x for x in rec["warnings"])


@pytest.mark.parametrize("name", cpu_stream.REFERENCES)
@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
def test_elementwise_check_finds_the_first_wrong_element(monkeypatch, name, dtype):
    monkeypatch.setattr(cpu_stream, "CHECK_CHUNK", 64)  # several parallel blocks at a tiny size
    first_mismatch = numba.njit(parallel=True)(cpu_stream.first_mismatch.py_func)  # recompiled with that chunk
    monkeypatch.setattr(cpu_stream, "first_mismatch", first_mismatch)
    t, s, n = cpu_stream.DTYPES[dtype], 3.0, 1000
    x, y = (cpu_stream.aligned_empty(n, t) for _ in range(2))
    cpu_stream.fill_random(x, 1)
    cpu_stream.fill_random(y, 2)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    out = {"copy": x64, "scale": s * x64, "add": x64 + y64, "triad": x64 + s * y64}[name].astype(t)
    rtol = cpu_stream.RTOL[dtype]
    assert cpu_stream.check_elementwise(out, x, y, s, name, rtol, name) is None
    out[700] *= 1 + 10 * rtol
    out[901] = np.nan
    assert f"{name}: element 700 is" in cpu_stream.check_elementwise(out, x, y, s, name, rtol, name)
    out[70] = np.nan  # an earlier one, in another block
    assert "element 70 is nan" in cpu_stream.check_elementwise(out, x, y, s, name, rtol, name)


def test_exact_sum_matches_fsum_across_blocks(monkeypatch):
    monkeypatch.setattr(cpu_stream, "CHECK_CHUNK", 1000)
    a = cpu_stream.aligned_empty(12345, np.float32)
    cpu_stream.fill_random(a, 4)
    import math
    assert cpu_stream.exact_sum(a) == pytest.approx(math.fsum(a.astype(np.float64)), rel=1e-15)


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
@pytest.mark.parametrize("reps", [1, 2, 5])
@pytest.mark.parametrize("streams", [1, 2])
def test_read_kernel_with_reps_matches_float64_reference(dtype, reps, streams):
    t = cpu_stream.DTYPES[dtype]
    threads, per = 2, 997  # odd reps: a pair of reps summed together (streams 2) leaves one over
    a = cpu_stream.aligned_empty(threads * per + cpu_stream.READ_OFFSET_ELEMS * threads, t)
    cpu_stream.fill_random(a, 3)
    out = np.full(threads, np.nan)
    cpu_stream.k_read(a, out, per, reps, streams)
    ref = cpu_stream.read_reference(a, threads, per, reps)
    assert cpu_stream.check_close(out, ref, cpu_stream.RTOL[dtype], "read") is None


def test_read_workload_checks_every_call_against_a_reference_computed_once(monkeypatch):
    a = cpu_stream.aligned_empty(2 * 1000 + 2 * cpu_stream.READ_OFFSET_ELEMS, np.float64)
    cpu_stream.fill_random(a, 5)
    computed = []
    real = cpu_stream.read_reference
    monkeypatch.setattr(cpu_stream, "read_reference", lambda *args: computed.append(1) or real(*args))
    w = cpu_stream.read_workload(a, "fp64", 2000 * 8, 2, 3 * 2000 * 8)
    for _ in range(2):
        w.poison()
        assert w.check().startswith("read sum: element 0 is nan, expected ")  # a poisoned output still fails (plain numbers)
        w.run(1)
        assert w.check() is None
    assert len(computed) == 1


def test_hierarchy_points_are_validated_and_labelled(tiny_ctx):
    section = cpu_stream.run_hierarchy(tiny_ctx)
    points = section["hierarchy"]
    assert len(points) >= 5
    assert all(p["validated"] for p in points)
    sizes = [p["working_set_bytes"] for p in points]
    assert sizes == sorted(sizes)
    assert points[0]["level"] == "L1" and points[-1]["level"] == "L2"  # tiny sweep stops at 1 MiB
    l1_bytes = dict(cpu_stream.cache_capacities(tiny_ctx.cpu, tiny_ctx.threads))["L1"]
    assert [p["read_streams"] for p in points] == [2 if ws <= l1_bytes else 1 for ws in sizes]
    assert {1, 2} <= {p["read_streams"] for p in points}
    assert section["hierarchy_levels"]["L1"]["bytes_per_s"] > 0
    assert section["hierarchy_levels"]["DRAM"]["bytes_per_s"] is None
    # one set of rounds: a drift of the host's memory mid-sweep slows every point alike
    names = [f"read ({working_set_text(ws)})" for ws in sizes]
    assert all(p["interleaved_with"] == names and len(p["samples_s"]) == len(points[0]["samples_s"]) for p in points)
    assert len(set(names)) == len(names) and names[0] == "read (16 KiB)"
    assert all(p["interleaved_with"] is points[0]["interleaved_with"] for p in points)  # one list: YAML writes it once
    assert len({p["steal_fraction"] for p in points}) == 1  # one span of rounds


def test_the_names_of_workloads_in_rounds_tell_apart_the_same_kernel_at_two_sizes():
    from harness.workload import Workload, interleaved_names

    def w(name, threads, ws):
        return Workload(name=name, run=None, check=None, poison=None, threads=threads, dtype="fp64",
                        working_set_bytes=ws)
    assert interleaved_names([w("copy", 2, 1 << 28), w("triad", 2, 1 << 28)]) == ["copy", "triad"]
    assert interleaved_names([w("triad", 1, 1 << 28), w("triad", 2, 1 << 28)]) == ["triad (1 thread)", "triad (2 threads)"]
    assert interleaved_names([w("read", 2, 3 << 19), w("read", 2, 8192)]) == ["read (1.5 MiB)", "read (8 KiB)"]
    assert interleaved_names([w("read", 1, 1 << 30), w("read", 1, 1 << 30), w("fma", 2, 0)]) == [
        "read (1 thread, 1 GiB)", "read (1 thread, 1 GiB)", "fma (2 threads, 0 B)"]


def test_level_summary_uses_points_well_inside_each_level():
    caps = [("L1", 64 << 10), ("L2", 2 << 20), ("L3", 32 << 20)]
    pts = [{"working_set_bytes": ws, "bytes_per_s": bw} for ws, bw in
           [(16 << 10, 900e9), (32 << 10, 1000e9), (64 << 10, 700e9), (256 << 10, 400e9),
            (1 << 20, 380e9), (8 << 20, 200e9), (128 << 20, 60e9), (256 << 20, 50e9), (512 << 20, 40e9)]]
    levels = cpu_stream.summarize_levels(pts, caps)
    assert levels["L1"]["bytes_per_s"] == pytest.approx(950e9) and levels["L1"]["max_bytes_per_s"] == 1000e9
    assert levels["L2"]["points"] == 2 and levels["L3"]["bytes_per_s"] == 200e9
    assert levels["DRAM"]["bytes_per_s"] == pytest.approx(45e9)  # 8x the last-level cache and up
    assert cpu_stream.level_of(48 << 10, caps) == "L1" and cpu_stream.level_of(1 << 30, caps) == "DRAM"


def test_without_known_caches_no_sweep_point_is_called_dram(tiny_ctx):
    # a container whose sysfs shows no caches: a 16 KiB read at L1's speed is no DRAM point, and the
    # sweep has no levels to summarise (run.flag_unknown_caches says why)
    ctx = Context(cpu={**tiny_ctx.cpu, "caches": []}, threads=2, tiny=True)
    section = cpu_stream.run_hierarchy(ctx)
    assert {p["level"] for p in section["hierarchy"]} == {"unknown"} and section["hierarchy_levels"] == {}
    assert all(p["validated"] for p in section["hierarchy"])


def test_cache_capacities_scale_private_levels_with_threads(cpu):
    assert cpu_stream.cache_capacities(cpu, 1) == [("L1", 32768), ("L2", 1 << 20), ("L3", 32 << 20)]
    assert cpu_stream.cache_capacities(cpu, 2) == [("L1", 65536), ("L2", 2 << 20), ("L3", 32 << 20)]


@pytest.mark.parametrize("dtype", ["fp64", "fp32"])
def test_peak_chains_are_checked_exactly(cpu, dtype):
    w = cpu_peak.peak_workload(cpu, dtype, threads=2, iters_per_call=50)
    rec = time_workload(w, repeats=2, min_sample_s=1e-4)
    assert rec["validated"], rec.get("error")
    n = cpu_peak.accumulators(cpu, dtype)
    assert rec["flops_per_call"] == 2 * n * 2 * 50
    assert rec["flops_per_s"] > 0


def test_peak_accumulators_cover_fma_latency_on_every_pipe():
    # vectors x lanes: AVX-512 16 zmm, AVX2 12 ymm, Arm Advanced SIMD 24 of 32 q registers (a
    # Neoverse V2 has four 128-bit FMA pipes of 4-cycle latency: 16 chains in flight)
    assert cpu_peak.accumulators({"simd": ["avx2", "avx512f"]}, "fp32") == 16 * 16
    assert cpu_peak.accumulators({"simd": ["avx", "avx2"]}, "fp64") == 12 * 4
    assert cpu_peak.accumulators({"simd": ["asimd", "sve"]}, "fp32") == 24 * 4


@pytest.mark.parametrize("dtype", ["fp64", "fp32", "fp16"])
def test_each_step_is_exact_until_the_ceiling_where_rounding_holds_the_chain(dtype):
    # the reference the check compares with, against the dtype's own arithmetic (numpy rounds each
    # add to nearest even, as the FMA rounds a + x*y once; x*y is the step exactly)
    t, top = cpu_peak.DTYPES[dtype], cpu_peak.ceiling(dtype)
    step = 2.0 ** cpu_peak.STEP_EXPONENT[dtype]
    half = t(2.0 ** (cpu_peak.STEP_EXPONENT[dtype] / 2))
    assert float(half) * float(half) == step and top == {"fp64": 2.0 ** 13, "fp32": 16.0, "fp16": 2.0}[dtype]
    start = np.array([0.5, 1.0, 1.5 - step, top - 3 * step], np.float64)
    a = start.astype(t)
    assert np.array_equal(a.astype(np.float64), start)  # every start lies on the step's grid
    for steps in range(1, 6):
        a = (a + half * half).astype(t)
        assert np.array_equal(a, cpu_peak.stepped(start, step, top, steps).astype(t)), (dtype, steps)
    assert a[-1] == top and (np.array([top], t) + half * half)[0] == top  # a tie: held at the ceiling


def broken_chains(monkeypatch, broken):
    """cpu_peak.parallel_chains wrapped: `broken(kernel, acc_bytes, xy, iters)` runs in each call's place."""
    real = cpu_peak.parallel_chains

    def factory(*args):
        good = real(*args)
        return lambda acc, xy, iters: broken(good, acc, xy, iters)

    monkeypatch.setattr(cpu_peak, "parallel_chains", factory)


def test_peak_check_catches_a_skipped_accumulator(cpu, monkeypatch):
    def last_lane_never_computed(good, acc, xy, iters):
        kept = acc[:, -4:].copy()  # fp32: the last lane's four bytes
        good(acc, xy, iters)
        acc[:, -4:] = kept

    broken_chains(monkeypatch, last_lane_never_computed)
    w = cpu_peak.peak_workload(cpu, "fp32", threads=1, iters_per_call=5)
    rec = time_workload(w, repeats=2, min_sample_s=1e-4)
    assert not rec["validated"] and rec["flops_per_s"] is None
    assert re.match(r"fma accumulator \(0, \d+\) is [-\d.e+]+, expected [-\d.e+]+ after \d+ steps$", rec["error"]), \
        rec["error"]


def native_fp16_here():
    from harness.machine import identify_cpu

    here = identify_cpu()
    reason = cpu_peak.unsupported_reason(here, "fp16")
    if reason:
        pytest.skip(f"this CPU cannot run the fp16 chains: {reason}")
    return here


def test_fp16_peak_chains_are_checked_exactly():
    here = native_fp16_here()
    w = cpu_peak.peak_workload(here, "fp16", threads=2, iters_per_call=40)
    rec = time_workload(w, repeats=2, min_sample_s=1e-4)
    assert rec["validated"], rec.get("error")
    n = cpu_peak.accumulators(here, "fp16")
    assert n == 2 * cpu_peak.accumulators(here, "fp32")  # twice fp32's lanes in the same registers
    assert rec["flops_per_call"] == 2 * n * 2 * 40 and rec["flops_per_s"] > 0


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_peak_check_catches_a_step_too_few(cpu, monkeypatch, dtype):
    # the timed runs leave fp32's and fp16's chains at their ceiling, where one step fewer changes
    # nothing: the check's fresh run of COUNT_STEPS steps shows it
    here = native_fp16_here() if dtype == "fp16" else cpu
    broken_chains(monkeypatch, lambda good, acc, xy, iters: good(acc, xy, iters - 1))
    w = cpu_peak.peak_workload(here, dtype, threads=1, iters_per_call=1 << 18)
    w.poison()
    w.run(64)  # 2^24 steps less 64: fp32's lanes reach their ceiling, 16, from at most 16.25 x 2^20 below it
    error = w.check()
    assert re.match(r"fma accumulator \(0, \d+\) is [-\d.e+]+, expected [-\d.e+]+ after 3 steps of a fresh run "
                    r"\(a step skipped or repeated\)$", error or ""), error


def test_fma_peaks_of_every_dtype_are_timed_in_the_same_rounds(cpu):
    section = cpu_peak.run_peak(Context(cpu=cpu, threads=2, tiny=True, dtypes=("fp64", "fp32")))
    assert list(section["peak_flops"]) == ["fp64", "fp32"] and "peak_flops_unsupported" not in section
    assert all(r["validated"] and r["interleaved_with"] == ["fma_fp64", "fma_fp32"] and r["threads"] == 2
               for r in section["peak_flops"].values())


def test_fp16_peak_is_left_out_where_the_cpu_has_no_native_fp16(cpu):
    ctx = Context(cpu=cpu, threads=1, tiny=True, dtypes=("fp32", "fp16"))
    section = cpu_peak.run_peak(ctx)
    assert set(section["peak_flops"]) == {"fp32"} and section["peak_flops"]["fp32"]["validated"]
    (skipped,) = section["peak_flops_unsupported"]
    assert skipped["dtype"] == "fp16" and "avx512_fp16 or asimdhp" in skipped["reason"]
    assert cpu_peak.unsupported_reason(dict(cpu, simd=["asimd", "asimdhp"]), "fp16") is None


def test_a_cpu_without_vector_fma_has_no_peak_and_its_thread_sweep_the_triad_alone(cpu):
    # @llvm.fma would call libm's fma for each step there (and fmuladd would hoist x*y out of the loop)
    old = dict(cpu, simd=["avx", "sse4_2"])
    section = cpu_peak.run_peak(Context(cpu=old, threads=1, tiny=True, dtypes=("fp64", "fp32")))
    assert section["peak_flops"] == {}
    assert [u["dtype"] for u in section["peak_flops_unsupported"]] == ["fp64", "fp32"]
    assert all(u["reason"].startswith("no FMA among the x86 CPU's flags (fma: Haswell and later")
               for u in section["peak_flops_unsupported"])
    # elsewhere the vector ISA has FMAs whatever its flags say (POWER's VSX here: no flags recorded)
    assert cpu_peak.unsupported_reason({"arch": "ppc64le", "simd": []}, "fp32") is None
    sweep = cpu_threads.run_thread_sweep(Context(cpu=old, threads=1, tiny=True))["thread_sweep"]
    assert list(sweep) == ["triad"] and sweep["triad"][0]["validated"]


def test_chains_that_do_not_compile_leave_the_other_peaks(cpu, monkeypatch):
    # llvmlite's JIT builds them: an LLVM that cannot target this CPU's fp16 must not cost fp32's peak
    real = cpu_peak.parallel_chains

    def refuse(dtype, vectors, lanes):
        if dtype == "fp16":
            raise RuntimeError("LLVM ERROR: Cannot select: fma v32f16\nmore")
        return real(dtype, vectors, lanes)

    monkeypatch.setattr(cpu_peak, "parallel_chains", refuse)
    ctx = Context(cpu=dict(cpu, simd=cpu["simd"] + ["avx512_fp16"]), threads=1, tiny=True, dtypes=("fp32", "fp16"))
    section = cpu_peak.run_peak(ctx)
    assert section["peak_flops"]["fp32"]["validated"] and "fp16" not in section["peak_flops"]
    assert section["peak_flops_unsupported"] == [
        {"dtype": "fp16", "reason": "the fp16 chains did not compile here: RuntimeError: LLVM ERROR: Cannot select: fma v32f16"}]


def has_cpu_flag(flag):
    with open("/proc/cpuinfo") as f:
        return f" {flag} " in f.read()


def has_fma_flag():
    return has_cpu_flag("fma")


def _asm(kernel):
    return "\n".join(kernel.inspect_asm().values())


@pytest.mark.skipif(not has_fma_flag(), reason="this CPU has no FMA instructions")
@pytest.mark.parametrize("dtype", ["fp64", "fp32", "fp16"])
def test_peak_chains_compiled_here_hold_one_packed_fma_per_vector(dtype):
    # as the probe compiles them for this host (tests/test_llvm_targets.py: for other CPUs)
    from harness.machine import identify_cpu
    from probes.llvm_jit import compile_ir

    here = identify_cpu()
    if dtype == "fp16":
        native_fp16_here()
    vectors = cpu_peak.chain_vectors(here)
    lanes = cpu_peak.accumulators(here, dtype) // vectors
    _, asm = compile_ir(cpu_peak.chains_ir(dtype, vectors, lanes), "chains", cpu_peak.SIGNATURE)
    reg = "zmm" if "avx512f" in here["simd"] else "ymm"
    suffix = {"fp64": "pd", "fp32": "ps", "fp16": "ph"}[dtype]
    assert len(re.findall(rf"vfmadd231{suffix}\s+[^\n]*%{reg}", asm)) == vectors
    assert not re.search(r"vfmadd\d+s[sdh]\s|vcvtph2ps", asm)


@pytest.mark.parametrize("name", ["_chunk_sum", "_pair_sum"])
def test_read_kernel_assembly_is_vectorised(name):
    # the cached kernel cannot be inspected: compile the same source again without a cache
    chunk_sum = numba.njit(fastmath=True)(getattr(cpu_stream, name).py_func)
    chunk_sum(*((np.ones(64),) if name == "_chunk_sum" else (np.ones(80), 0, 64, 16)))
    asm = _asm(chunk_sum)
    assert re.search(r"vaddpd\s+[^\n]*%[xyz]mm", asm)


@pytest.mark.skipif(not has_fma_flag(), reason="this CPU has no FMA instructions")
@pytest.mark.parametrize("dtype,widening", [("fp16", r"vcvtph2psx?"), ("bf16", r"vpslld")])  # x: AVX512-FP16 form
def test_decode_kernel_widens_16_bit_caches_in_packed_registers(dtype, widening):
    # 16-bit K and V rows are converted inside the dot and the update, a vector at a time
    from harness.model import DecodeShape
    from probes import cpu_decode_kernel
    from probes.cpu_decode import DecodeCache

    if dtype == "fp16" and not has_cpu_flag("f16c"):
        pytest.skip("this CPU has no F16C: half to float is a library call there")
    shape = DecodeShape(seq_len=64, heads=4, kv_heads=2, head_dim=64, dtype=dtype)
    cache = DecodeCache(shape, 1)
    # the cached kernel cannot be inspected: compile its task function (where rows are widened)
    # anew, alone (through the parallel decode_kernel, LLVM would optimise it twice: 7 s more here),
    # and run it on the first (batch, kv head)'s 64 tokens
    chunk = numba.njit(fastmath=True)(cpu_decode_kernel._chunk.py_func)
    group, f32 = 2, np.float32
    chunk(cache.q, 0, group, cache.k, cache.v, cache.k_scale, cache.v_scale, 0, 64, f32(0.125),
          np.empty((group, 64), f32), np.empty((group, 64), f32), np.empty(group, f32), np.empty(group, f32), 0,
          np.empty((8, 64), f32), np.empty(64, np.int32), False, 4, 128)
    asm = _asm(chunk)
    assert len(re.findall(rf"{widening}\s+[^\n]*%[yz]mm", asm)) >= 8
    assert len(re.findall(r"vfmadd\w*ps\s+[^\n]*%[yz]mm", asm)) >= 8
    assert re.search(r"prefetcht0\s", asm) and re.search(r"prefetcht1\s", asm)  # rows ahead into L1, further into L2



def test_a_reserved_pool_buffer_serves_smaller_requests_in_place(monkeypatch):
    monkeypatch.setattr(cpu_stream, "_POOL", {})
    cpu_stream.reserve_pool({"pool b": 1 << 20})
    first = cpu_stream._POOL["pool b"]
    (small,) = cpu_stream.pooled_arrays(1000, np.float32, ("pool b",))
    (again,) = cpu_stream.pooled_arrays(3000, np.float64, ("pool b",))
    assert cpu_stream._POOL["pool b"] is first and small.ctypes.data == again.ctypes.data == first.ctypes.data
    assert small.ctypes.data % cpu_stream.ALIGN_BYTES == 0 and again.shape == (3000,)
    (grown,) = cpu_stream.pooled_arrays(1 << 20, np.float64, ("pool b",))  # 8 MiB: past the reservation
    assert cpu_stream._POOL["pool b"] is not first and grown.nbytes == 8 << 20


def test_the_profile_holds_the_sweeps_dram_level_against_the_read_bandwidth_and_the_cache(cpu, monkeypatch):
    from harness import run
    from harness.machine import last_level_cache_bytes

    # the Zen 4 VM: the read and the sweep seconds apart; the sweep's point at 4x the cache at L3 speed
    measured = {"stream": {"bandwidth": {"read": {"bytes_per_s": 34.7e9, "warnings": []}}},
                "hierarchy": {"hierarchy_levels": {"L3": {"bytes_per_s": 194e9}, "DRAM": {"bytes_per_s": 59.6e9}},
                              "hierarchy": [{"working_set_bytes": 4 * last_level_cache_bytes(cpu), "bytes_per_s": 194e9,
                                             "level": "DRAM", "warnings": []}]}}
    monkeypatch.setattr(run, "reserve_cpu_buffers", lambda ctx, names: None)
    monkeypatch.setattr(run, "run_probe_on_cpu", lambda name, ctx: measured[name])
    section = run.cpu_section(Context(cpu=cpu, threads=2, tiny=True), ("stream", "hierarchy"))
    assert [w for w in section["warnings"] if w.startswith("the hierarchy sweep's DRAM level (59.6 GB/s)")]
    assert [w for w in section["warnings"] if w.startswith("the hierarchy sweep read ") and "a larger cache served it" in w]


def test_the_profile_reserves_every_probes_largest_buffers_before_the_first_probe(cpu, monkeypatch):
    from harness import run
    from probes import cpu_decode

    events = []
    monkeypatch.setattr(run, "torch_first", lambda: events.append("torch"))
    monkeypatch.setattr(run, "reserve_cpu_buffers", lambda ctx, names: events.append(("reserve", tuple(names))))
    monkeypatch.setattr(run, "run_probe_on_cpu", lambda name, ctx: events.append(name) or {})
    run.cpu_section(Context(cpu=cpu, threads=2, tiny=True), ("stream", "decode"))
    assert events == ["torch", ("reserve", ("stream", "decode")), "stream", "decode"]
    from probes import reserve_cpu_buffers

    monkeypatch.setattr(cpu_stream, "_POOL", {})
    ctx = Context(cpu=cpu, threads=2, tiny=True)
    need = reserve_cpu_buffers(ctx, ("stream", "hierarchy", "decode"))
    stream, decode = cpu_stream.stream_buffers(ctx), cpu_decode.decode_buffers(ctx)
    for name in cpu_stream.POOL:
        assert need[name] == max(stream[name], decode[name], cpu_stream.hierarchy_buffers(ctx).get(name, 0))
        assert cpu_stream._POOL[name].nbytes >= need[name]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed: `make bench` cannot build its C references")
@pytest.mark.parametrize("name,variant", [("triad", ""), ("read", ""), ("fma", ""), ("fma", "FP16")])
def test_the_benchmarks_c_references_build_and_check_their_output(tmp_path, monkeypatch, name, variant):
    # benchmarks/cpu_balance.py's yardsticks, run tiny: each checks its own result and prints a rate
    if variant == "FP16" and not has_cpu_flag("avx512_fp16"):
        pytest.skip("this CPU has no AVX512-FP16: the fp16 reference is built only where it has")
    import importlib.util

    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))  # as when it runs as a script
    spec = importlib.util.spec_from_file_location("cpu_balance", os.path.join(ROOT, "benchmarks", "cpu_balance.py"))
    bench = importlib.util.module_from_spec(spec)  # a benchmark script, not a package module
    spec.loader.exec_module(bench)
    exe = bench.compile_c(name, variant, out_dir=str(tmp_path))
    out = subprocess.run([exe, "100000", "2"], capture_output=True, text=True,  # fma: enough steps to converge
                         env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) > 0


@pytest.mark.parametrize("what", ["stream", "hierarchy", "threads", "peaks", "matmul", "dot"])
@pytest.mark.parametrize("way", ["blocked", "interleaved"])
def test_the_rounds_benchmark_times_both_ways_with_checked_outputs(tiny_ctx, way, what):
    # benchmarks/rounds.py, run tiny: each way's workloads validated, its figures from their medians
    if what in ("matmul", "dot"):
        pytest.importorskip("torch", reason="torch is not installed (make setup installs the CPU build)")
    if what == "dot":  # the instructions this CPU has, not the fixture's flags
        from harness.machine import identify_cpu
        from probes.cpu_dot import DTYPES, unsupported_reason

        tiny_ctx = Context(cpu={**tiny_ctx.cpu, "simd": identify_cpu()["simd"]}, threads=2, tiny=True)
        missing = [d for d in DTYPES if unsupported_reason(tiny_ctx.cpu, d)]
        if missing:
            pytest.skip(f"this CPU lacks {', '.join(missing)}'s dot-product instruction (avx512_bf16, avx512_vnni or avx_vnni)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("rounds", os.path.join(ROOT, "benchmarks", "rounds.py"))
    bench = importlib.util.module_from_spec(spec)  # a benchmark script, not a package module
    spec.loader.exec_module(bench)
    bench.REPEATS, bench.MIN_SAMPLE_S = dict.fromkeys(bench.SUITES, 2), 1e-4  # this test's own copy of the module
    row = bench.one_run(tiny_ctx, 1001, way, what)
    assert set(row) == {"stream": {"read_gb_per_s", "triad_over_read", "copy_over_scale", "add_over_triad"},
                        "hierarchy": {"dram_gb_per_s", "l1_over_dram", "l2_over_dram", "llc_over_dram"},
                        "threads": {"triad_speedup", "fma_speedup"},
                        "peaks": {"fp64_best_gflop_per_s", "fp32_over_fp64_best", "fp32_over_fp64_median"},
                        "matmul": {"fp32_best_gflop_per_s", "bf16_over_fp32_median", "int8_over_fp32_median"},
                        "dot": {"dot_bf16_over_fma", "dot_int8_over_fma", "matmul_bf16_over_dot",
                                "matmul_int8_over_dot"}}[what]
    assert all(v > 0 for v in row.values())
