"""The CPU matmul probe (torch): every product validated against float64 at tiny sizes, a wrong
product caught, the size chosen by a trial product's time, and no torch said, not crashed."""

import sys
import time

import pytest

from conftest import run_cli
from harness import validation
from harness.workload import Context, time_workload
from probes import cpu_matmul

torch = pytest.importorskip("torch", reason="torch is not installed (make setup installs the CPU build)")


@pytest.fixture
def tiny_ctx(cpu):
    return Context(cpu=cpu, threads=2, tiny=True)


def test_every_product_is_timed_and_validated_or_refused_with_torchs_reason(tiny_ctx):
    section = cpu_matmul.run_matmul(tiny_ctx)
    refused = {u["dtype"]: u["reason"] for u in section.get("tensor_flops_unsupported", [])}
    assert set(section["tensor_flops"]) | set(refused) == set(cpu_matmul.DTYPES)
    assert "fp32" in section["tensor_flops"] and "bf16" in section["tensor_flops"]
    for dtype, rec in section["tensor_flops"].items():
        assert rec["validated"], rec.get("error")
        assert rec["flops_per_call"] == 2 * cpu_matmul.TINY_SIZE ** 3 and rec["flops_per_s"] > 0
        assert rec["threads"] == 2 and rec["n"] == cpu_matmul.TINY_SIZE
        assert rec["one_thread_flops_per_s"] > 0  # the rate two threads are held to
        assert rec["interleaved_with"] == [f"matmul_{d}" for d in section["tensor_flops"]]  # timed in rounds


def test_a_product_torch_refuses_is_named_in_order_and_the_rest_timed_in_rounds(tiny_ctx, monkeypatch):
    import torch

    def refuse(a, b, out=None):
        raise RuntimeError("_int_mm_out_cpu not compiled for this platform\ndetail")
    monkeypatch.setattr(torch, "_int_mm", refuse)
    real = cpu_matmul.matmul_workload

    def fp16_refused(dtype, n, threads):
        w = real(dtype, n, threads)
        if dtype == "fp16":
            w.run = lambda loops: refuse(None, None)
        return w
    monkeypatch.setattr(cpu_matmul, "matmul_workload", fp16_refused)
    section = cpu_matmul.run_matmul(tiny_ctx)
    assert section["tensor_flops_unsupported"] == [
        {"dtype": d, "reason": "_int_mm_out_cpu not compiled for this platform"} for d in ("fp16", "int8")]
    assert list(section["tensor_flops"]) == ["fp32", "bf16"]
    assert all(r["validated"] and r["interleaved_with"] == ["matmul_fp32", "matmul_bf16"]
               for r in section["tensor_flops"].values())


def test_operands_are_seeded_by_size_and_int8_sums_stay_exact():
    from probes.torch_matmul import operands

    a, b, _, _ = operands("bf16", 8)
    again, _, _, _ = operands("bf16", 8)
    assert a.dtype == torch.bfloat16 and torch.equal(a, again) and not torch.equal(a, b)
    a8, _, product, _ = operands("int8", 32)
    assert a8.dtype == torch.int8 and -8 <= int(a8.min()) and int(a8.max()) < 8
    assert product().dtype == torch.int32


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16", "int8"])
def test_the_product_writes_into_one_output_that_poison_fills(dtype):
    """The timed call allocates nothing (its result goes into `out`, made once), and the poison
    is a value no product of these operands gives, so the check sees this call's result."""
    from probes.torch_matmul import operands, poison, product_error

    a, b, product, out = operands(dtype, 16)
    poison(out)
    assert product_error(dtype, a, b, out) is not None  # the poison fails the check
    assert product().data_ptr() == out.data_ptr()
    assert product_error(dtype, a, b, out) is None


def test_a_product_that_leaves_its_output_poisoned_is_caught(monkeypatch):
    real = cpu_matmul.operands

    def unwritten(dtype, n):
        a, b, _, out = real(dtype, n)
        return a, b, lambda: out, out

    monkeypatch.setattr(cpu_matmul, "operands", unwritten)
    for dtype in ("fp32", "int8"):
        rec = time_workload(cpu_matmul.matmul_workload(dtype, 16, threads=1), repeats=2, min_sample_s=1e-4)
        assert not rec["validated"] and f"matmul {dtype}: relative error" in rec["error"]


def test_a_wrong_product_is_caught(monkeypatch):
    w = cpu_matmul.matmul_workload("fp32", 16, threads=1)
    rec = time_workload(w, repeats=2, min_sample_s=1e-4)
    assert rec["validated"]
    real = cpu_matmul.operands

    def zeros(dtype, n):
        a, b, _, out = real(dtype, n)
        return a, b, out.zero_, out

    monkeypatch.setattr(cpu_matmul, "operands", zeros)
    rec = time_workload(cpu_matmul.matmul_workload("fp32", 16, threads=1), repeats=2, min_sample_s=1e-4)
    assert not rec["validated"] and "relative error 1 against float64" in rec["error"]


def test_a_dtype_without_a_fast_path_is_timed_at_the_trial_size(fake_clock, monkeypatch):
    def timed(seconds):
        def operands(dtype, n):
            return None, None, lambda: fake_clock.advance_s(seconds), None
        return operands

    monkeypatch.setattr(cpu_matmul, "operands", timed(0.015))  # fp16 on the Zen 5 VM: 2.3 GFLOP/s at n=256
    assert cpu_matmul.size_for("fp16", 2, fake_clock) == cpu_matmul.TRIAL_SIZE
    monkeypatch.setattr(cpu_matmul, "operands", timed(1e-4))  # bf16 there: 2048 takes ~25 ms
    assert cpu_matmul.size_for("bf16", 2, fake_clock) == cpu_matmul.SIZE


def test_one_slow_trial_call_does_not_make_a_fast_path_slow(fake_clock, monkeypatch):
    """On the Zen 4 VM one trial call of bf16 after the warm-up projected past 1 s at n=2048, and
    bf16 was timed at n=256 with a 'no fast path' warning: the fastest trial call decides."""
    calls = iter([0.01, 0.01, 1e-4, 0.01, 1e-4, 1e-4])  # warm-up, a slow call, then fast ones

    def operands(dtype, n):
        return None, None, lambda: fake_clock.advance_s(next(calls)), None

    monkeypatch.setattr(cpu_matmul, "operands", operands)
    assert cpu_matmul.size_for("bf16", 2, fake_clock) == cpu_matmul.SIZE


def test_a_parallel_product_at_one_threads_rate_is_flagged(cpu, fake_clock, monkeypatch):
    """Three of ten profiles on the Zen 4 VM had int8 at 451-453 GOP/s, one thread's rate (two
    threads: 715-890): the rate is held to one thread's, timed on the same operands."""
    monkeypatch.setattr(cpu_matmul, "operands", lambda dtype, n: (None, None, lambda: fake_clock.advance_s(2 * n ** 3 / 430e9), None))
    one = cpu_matmul.one_thread_flops("int8", 2048, 2, fake_clock)
    halved = {"threads": 2, "flops_per_s": 451e9, "one_thread_flops_per_s": one, "warnings": []}
    scaled = {"threads": 2, "flops_per_s": 860e9, "one_thread_flops_per_s": one, "warnings": []}
    validation.flag_parallel_scaling({"tensor_flops": {"int8": halved, "bf16": scaled}}, cpu)
    assert halved["one_thread_flops_per_s"] == pytest.approx(430e9)
    (warning,) = halved["warnings"]
    assert warning.startswith("1.05x the rate of one thread (430.0 GOP/s) where 2 cores should give about 2x")
    assert scaled["warnings"] == []
    alone = {"threads": 2, "flops_per_s": 451e9, "one_thread_flops_per_s": one, "warnings": []}  # one core
    validation.flag_parallel_scaling({"tensor_flops": {"int8": alone}}, {**cpu, "usable_cpus": 1})
    assert alone["warnings"] == []
    unset = {"threads": 1, "flops_per_s": 451e9, "warnings": []}  # one thread: the probe timed no reference
    validation.flag_parallel_scaling({"tensor_flops": {"int8": unset, "reason": "n/a"}}, cpu)
    assert unset == {"threads": 1, "flops_per_s": 451e9, "warnings": []}


def test_the_one_thread_reference_sets_torchs_threads_back():
    torch.set_num_threads(2)
    assert cpu_matmul.one_thread_flops("fp32", 32, 2, time.perf_counter_ns) > 0
    assert torch.get_num_threads() == 2


def test_without_torch_the_section_says_why(tiny_ctx, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert "torch is not installed" in cpu_matmul.run_matmul(tiny_ctx)["tensor_flops"]["reason"]


def test_cli_probe_matmul():
    proc = run_cli("probe", "matmul")
    assert proc.returncode == 0, proc.stderr
    assert "tensor_flops.bf16" in proc.stdout and "ok" in proc.stdout
    assert run_cli("probe", "matmul", "--dtype", "fp32").returncode == 2  # it takes no options
