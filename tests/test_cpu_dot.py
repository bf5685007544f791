"""The dot-product peaks (probes/cpu_dot.py): the IR names each instruction, the exact references
(int8's wrap, bf16's ceiling), the flags that decide what runs, and on a CPU that has them, chains
validated at tiny sizes and a kernel that skips its steps caught."""

import numpy as np
import pytest

from harness.machine import identify_cpu
from harness.workload import Context, time_workload
from probes import cpu_dot

CPU = identify_cpu()
MISSING = [d for d in cpu_dot.DTYPES if cpu_dot.unsupported_reason(CPU, d)]


def test_the_ir_steps_each_chain_with_the_dtypes_instruction():
    bf16 = cpu_dot.chains_ir("bf16", 3, 512)
    assert "call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %v2, <32 x bfloat> %x, <32 x bfloat> %y)" in bf16
    int8 = cpu_dot.chains_ir("int8", 2, 256)
    assert "call <8 x i32> @llvm.x86.avx512.vpdpbusd.256(<8 x i32> %v1, <8 x i32> %x, <8 x i32> %y)" in int8
    assert int8.count("store <8 x i32>") == 2


def test_the_references_are_exact_int8_wrapping_and_bf16_stopping_at_its_tie():
    a0 = np.array([2 ** 31 - 1, -2 ** 31, 0], np.int32)
    step = -18  # 1*5 - 2*6 + 3*7 - 4*8
    assert cpu_dot.expected("int8", a0, 1).tolist() == [2 ** 31 - 1 + step, 2 ** 31 + step, step]
    assert cpu_dot.expected("int8", a0, 2 ** 32).tolist() == a0.tolist()  # a whole turn of int32
    b0 = np.array([0.5, 1.0 + 2 ** -10], np.float32)
    assert cpu_dot.expected("bf16", b0, 3).tolist() == [0.5 + 3 * 2 ** -10, 1.0 + 4 * 2 ** -10]
    assert cpu_dot.expected("bf16", b0, 10 ** 9).tolist() == [2.0 ** 14] * 2


def test_the_operands_are_the_pairs_the_references_assume():
    x, y = cpu_dot.operands("bf16", 256).view(np.uint16).reshape(2, 16)
    widened = lambda bits: (bits.astype(np.uint32) << 16).view(np.float32)  # noqa: E731
    assert widened(x).tolist() == [2.0 ** -5] * 16 and widened(y).tolist() == [2.0 ** -5, 0.0] * 8
    u, s = cpu_dot.operands("int8", 512).reshape(2, 64)
    assert u.tolist() == [1, 2, 3, 4] * 16 and s.view(np.int8).tolist() == [5, -6, 7, -8] * 16


def test_the_flags_decide_each_instructions_width_or_why_it_is_left_out():
    assert cpu_dot.vector_bits({"simd": ["avx512f", "avx512_bf16", "avx512_vnni"]}, "int8") == 512
    assert cpu_dot.vector_bits({"simd": ["avx2", "avx_vnni"]}, "int8") == 256  # VEX-encoded VNNI: 256-bit only
    assert cpu_dot.unsupported_reason({"simd": ["avx2", "avx_vnni"]}, "int8") is None
    reason = cpu_dot.unsupported_reason({"simd": ["avx2", "avx_vnni"]}, "bf16")
    assert reason == "no vdpbf16ps among the CPU's flags (avx512_bf16)"
    assert "avx512_vnni or avx_vnni or asimddp" in cpu_dot.unsupported_reason({"simd": ["asimd"]}, "int8")
    # Arm: int8 on SDOT (four s8 x s8 pairs a lane, as vpdpbusd's u8 x s8: the operands are 1-4 and +-5-8)
    arm = {"simd": ["asimd", "asimddp", "asimdhp"]}
    assert cpu_dot.vector_bits(arm, "int8") == 128 and cpu_dot.instruction("int8", 128) == "sdot"
    assert cpu_dot.vector_types("int8", 128) == ("<4 x i32>", "<16 x i8>", "@llvm.aarch64.neon.sdot.v4i32.v16i8")
    assert "Arm's BFDOT is not timed: its sums round to odd" in cpu_dot.unsupported_reason(arm, "bf16")


def test_a_cpu_without_the_instructions_says_why_and_measures_none():
    section = cpu_dot.run_dot(Context(cpu={**CPU, "simd": ["avx2"]}, threads=2, tiny=True))
    assert section["dot_flops"] == {}
    assert [u["dtype"] for u in section["dot_flops_unsupported"]] == ["bf16", "int8"]


needs_instructions = pytest.mark.skipif(bool(MISSING), reason=f"this CPU lacks {', '.join(MISSING)}'s dot-product "
                                        "instruction (avx512_bf16; avx512_vnni, avx_vnni or asimddp)")


@needs_instructions
def test_the_chains_are_timed_in_rounds_and_validated_exactly():
    section = cpu_dot.run_dot(Context(cpu=CPU, threads=2, tiny=True))
    assert list(section["dot_flops"]) == ["bf16", "int8"] and "dot_flops_unsupported" not in section
    for dtype, rec in section["dot_flops"].items():
        assert rec["validated"], rec.get("error")
        assert rec["instruction"] == cpu_dot.instruction(dtype, cpu_dot.vector_bits(CPU, dtype))
        assert rec["interleaved_with"] == ["dot_bf16", "dot_int8"]
        lanes = rec["accumulators_per_thread"]
        assert rec["flops_per_call"] == cpu_dot.OPS_PER_LANE[dtype] * lanes * 2 * rec["iterations_per_call"]
        assert rec["one_thread_flops_per_s"] > 0  # the rate two threads are held to
    only = cpu_dot.run_dot(Context(cpu=CPU, threads=1, tiny=True, dtypes=("int8",)))
    assert list(only["dot_flops"]) == ["int8"] and "one_thread_flops_per_s" not in only["dot_flops"]["int8"]


def test_a_dot_peak_at_one_threads_rate_is_flagged():
    # one Zen 4 profile had both dot peaks at half their rate (234 GFLOP/s, 468 GOP/s) beside full FMA peaks
    from harness import validation

    halved = {"threads": 2, "flops_per_s": 234e9, "one_thread_flops_per_s": 232e9, "warnings": []}
    full = {"threads": 2, "flops_per_s": 936e9, "one_thread_flops_per_s": 468e9, "warnings": []}
    validation.flag_parallel_scaling({"dot_flops": {"bf16": halved, "int8": full}}, {**CPU, "cores": 2, "threads": 2,
                                                                                   "usable_cpus": 2})
    (warning,) = halved["warnings"]
    assert warning == ("1.01x the rate of one thread (232.0 GFLOP/s) where 2 cores should give about 2x: it ran on "
                       "fewer cores (the host put the vCPUs on one core: run again)")
    assert full["warnings"] == []


@needs_instructions
@pytest.mark.parametrize("dtype", cpu_dot.DTYPES)
def test_a_kernel_that_skips_its_steps_fails_its_check(dtype, monkeypatch):
    monkeypatch.setattr(cpu_dot, "parallel_chains", lambda *shape: lambda acc, xy, iters: None)
    w = cpu_dot.dot_workload(CPU, dtype, 2, 100)  # its steps counted, never taken: the lanes stay where they began
    rec = time_workload(w, repeats=2, min_sample_s=1e-4)
    assert not rec["validated"] and rec["flops_per_s"] is None
    assert rec["error"].startswith(f"{cpu_dot.instruction(dtype, cpu_dot.vector_bits(CPU, dtype))} accumulator (0, 0) is ")


@needs_instructions
def test_a_kernel_that_doubles_its_steps_is_caught_where_its_timed_lanes_sit_at_the_ceiling(monkeypatch):
    """Past 2^14 a bf16 step changes nothing, so the timed lanes cannot tell; the fresh run can."""
    real = cpu_dot.parallel_chains
    monkeypatch.setattr(cpu_dot, "parallel_chains", lambda *shape: lambda acc, xy, iters: real(*shape)(acc, xy, 2 * iters))
    w = cpu_dot.dot_workload(CPU, "bf16", 2, 1 << 24)  # 2^24 steps of 2^-10: every lane reaches 2^14
    w.poison()
    w.run(1)
    assert w.check().endswith("after 3 steps of a fresh run (a step skipped or repeated)")
