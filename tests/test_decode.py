"""Decode attention: every implementation at small odd sizes against float64, and its pieces."""

import os
import re

import numpy as np
import pytest
from numba import njit

from conftest import ROOT
from harness import model, timing
from harness.errors import HarnessError
from harness.workload import Context, time_workload
from probes import cpu_decode
from probes import cpu_decode_kernel as kernel
from probes.cpu_decode_kernel import (MAX_CHUNK_TOKENS, aligned_rows, chunk_length, exp_nonpositive, kernel_configs,
                                      row_max)

HAS_TORCH = cpu_decode.torch_reason() is None

SHAPES = [  # (seq_len, head_dim, heads, kv_heads, batch): S=1, S prime, d_h 64/80/128, groups 1/2/4/6/8, batch 1/2/3
    (1, 64, 8, 8, 1),
    (67, 80, 8, 4, 3),
    (131, 128, 8, 1, 1),
    (300, 64, 8, 2, 3),
    (7, 128, 4, 1, 1),
    (45, 64, 12, 2, 2),  # group 6: one tile of four heads, then two heads alone
]


def shape_of(s, d, h, hkv, b, dtype):
    return model.DecodeShape(seq_len=s, heads=h, kv_heads=hkv, head_dim=d, dtype=dtype, batch=b)


def measure(impl, shape, cpu):
    w = cpu_decode.decode_workload(impl, shape, cpu, threads=2, seed=11)
    rec = time_workload(w, repeats=2, min_sample_s=1e-4)
    rec.update(w.info)
    return rec


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16", "int8"])
@pytest.mark.parametrize("dims", SHAPES, ids=lambda d: "S{}-d{}-H{}-Hkv{}-B{}".format(*d))
def test_numba_fused_matches_float64(cpu, dtype, dims):
    rec = measure("numba-fused", shape_of(*dims, dtype), cpu)
    assert rec["validated"], rec.get("error")
    assert rec["rel_error"] <= cpu_decode.TOLERANCE[dtype] == rec["tolerance"]  # short caches: the base bound
    if dtype == "fp32":
        assert rec["storage_error"] == 0
    else:
        assert rec["storage_error"] > 0  # what the cache dtype costs, reported apart


SETTINGS = [(dtype, config) for dtype in ("fp32", "bf16", "fp16", "int8") for config in kernel_configs(dtype)]


@pytest.mark.parametrize("dtype,config", SETTINGS, ids=lambda x: str(x))
@pytest.mark.parametrize("dims", SHAPES[1:4], ids=lambda d: "S{}-d{}-H{}-Hkv{}-B{}".format(*d))
def test_numba_fused_matches_float64_in_every_kernel_setting(dtype, config, dims):
    """Every row staging and prefetch distance (into L1, into L2) the tuning may choose, at small odd sizes."""
    shape = shape_of(*dims, dtype)
    cache = cpu_decode.DecodeCache(shape, seed=5)
    run, output, record = cpu_decode.numba_runner(cache, threads=2, llc_bytes=0, config=config)
    assert cpu_decode.record_config(record) == config
    run(1)
    on_stored, on_original = cache.reference()
    err = cpu_decode.relative_error(output(), on_stored if dtype == "int8" else on_original)
    assert err <= cpu_decode.TOLERANCE[dtype]


def test_tuning_picks_the_fastest_setting_and_reuses_it(monkeypatch, fake_clock):
    """With a fake clock the 'direct, prefetch 8, L2 128' setting is made fastest and 'direct, prefetch 0,
    L2 0' a close second: after the first rounds only those two are timed. A second cache of the same
    dtype, group and memory level reuses the choice without timing again."""
    monkeypatch.setattr(cpu_decode, "_TUNED", {})
    shape = shape_of(67, 64, 8, 4, 1, "fp32")
    real = cpu_decode.decode_kernel
    calls = []

    def timed_kernel(*args):
        setting = args[-4:-1]  # stage, ahead, l2_ahead
        calls.append(setting)
        fake_clock.advance_s({(False, 8, 128): 0.001, (False, 0, 0): 0.00105}.get(setting, 0.002 + 0.0001 * setting[1]))
        real(*args)

    monkeypatch.setattr(cpu_decode, "decode_kernel", timed_kernel)
    run, _, record = cpu_decode.numba_runner(cpu_decode.DecodeCache(shape, 1), 2, llc_bytes=0, clock=fake_clock)
    assert (record["stage_rows_in_l1"], record["prefetch_rows_ahead"], record["prefetch_l2_rows_ahead"]) == (False, 8, 128)
    settings = kernel_configs("fp32")
    first, rounds = timing.TUNING_FIRST_ROUNDS, timing.TUNING_ROUNDS
    assert len(calls) == (1 + first) * len(settings) + (rounds - first) * 2  # a warm-up, every setting, the contenders
    assert calls[len(settings):2 * len(settings)] == settings  # interleaved: each round runs every setting once
    assert calls[-2:] == [(False, 0, 0), (False, 8, 128)]
    contenders = ("direct, prefetch 0, L2 0", "direct, prefetch 8, L2 128")
    assert record["calls_per_setting"] == {k: rounds if k in contenders else first for k in record["median_s_per_setting"]}
    assert record["median_s_per_setting"]["direct, prefetch 8, L2 128"] == pytest.approx(0.001, abs=1e-8)
    assert "streaming from DRAM" in record["chosen_by"]
    calls.clear()
    _, _, again = cpu_decode.numba_runner(cpu_decode.DecodeCache(shape, 2), 2, llc_bytes=0, clock=fake_clock)
    assert calls == [] and again == record and again is not record
    _, _, resident = cpu_decode.numba_runner(cpu_decode.DecodeCache(shape, 2), 2, llc_bytes=1 << 30, clock=fake_clock)
    assert "cache-resident" in resident["chosen_by"]  # another memory level is tuned apart
    _, _, past = cpu_decode.numba_runner(cpu_decode.DecodeCache(shape, 2), 2, llc_bytes=model.cache_bytes(shape) // 2,
                                         clock=fake_clock)
    assert "just past the last-level cache" in past["chosen_by"] and "at S=67," in past["chosen_by"]


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("impl", ["torch-sdpa", "torch-naive"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("dims", SHAPES[:4], ids=lambda d: "S{}-d{}-H{}-Hkv{}-B{}".format(*d))
def test_torch_impls_match_float64(cpu, impl, dtype, dims):
    rec = measure(impl, shape_of(*dims, dtype), cpu)
    assert rec["validated"], rec.get("error")


def test_a_kernel_that_leaves_the_poison_fails(cpu, monkeypatch):
    real = cpu_decode.numba_runner

    def skips_a_head(cache, threads, llc_bytes):
        run, output, record = real(cache, threads, llc_bytes)

        def broken(loops):
            run(loops)
            output()[1, :] = np.nan  # as a kernel that never wrote head 1 would leave it

        return broken, output, record

    monkeypatch.setattr(cpu_decode, "numba_runner", skips_a_head)
    w = cpu_decode.decode_workload("numba-fused", shape_of(33, 64, 4, 4, 1, "fp32"), cpu, threads=1, seed=3)
    rec = time_workload(w, repeats=2, min_sample_s=1e-4)
    assert not rec["validated"] and rec["bytes_per_s"] is None
    assert "relative error inf" in rec["error"]


@pytest.mark.parametrize("n", [1, 7, 16, 17, 31, 64, 100])
def test_row_max_is_the_maximum_wherever_it_lies(n):
    rng = np.random.default_rng(n)
    a2 = rng.standard_normal((3, 128)).astype(np.float32) - 5  # all negative, as scores can be
    for where in {0, n // 2, n - 1}:  # first, middle, last (the tail beyond the 16 lanes)
        row = a2.copy()
        row[1, where] = 7.5
        row[1, n:] = 99.0  # beyond n: never read
        assert row_max(row, 1, n) == 7.5
    assert row_max(a2, 2, n) == a2[2, :n].max()


def test_exp_matches_numpy_for_nonpositive_inputs():
    x = np.concatenate([np.linspace(-100, 0, 10001), [-87.0, -86.9, -1e-8, 0.0]]).astype(np.float32)
    got = x.copy()
    exp_nonpositive(got, np.empty(x.shape[0], np.int32))
    ref = np.exp(x.astype(np.float64))
    ok = x > -86.9
    assert np.max(np.abs(got[ok] - ref[ok]) / ref[ok]) < 2e-6
    assert np.all(got[x <= -87.0] == 0)


def test_the_kernels_that_run_the_tasks_are_compiled_in_each_process():
    # loaded from Numba's disk cache the same machine code ran slower (the notes above task_loops);
    # the task body they inline stays cached, for its bitcode

    assert type(kernel.decode_kernel._cache).__name__ == type(kernel.task_loops._cache).__name__ == "NullCache"
    assert type(kernel._chunk._cache).__name__ != "NullCache"


@pytest.mark.parametrize("word", [np.float32, np.uint16, np.int8])
def test_the_row_loops_make_no_reference_count_calls(word):
    # a helper inlined in Numba's IR left an NRT_incref/NRT_decref pair per call inside the loops: a
    # locked add on a count every thread shares (the notes at the top of cpu_decode_kernel)
    @njit(fastmath=True)
    def row_loops(q2, k2, buf, scores, acc, n, ahead, l2_ahead):
        t = 0
        while t + 8 <= n:
            for a in range(8):
                kernel.prefetch_ahead(k2, t + a, 1, n, ahead, l2_ahead)
                kernel._copy_row(k2, t + a, buf, a)
            kernel._score_four(q2, 0, q2.shape[0], buf, 0, scores, t)
            kernel._score_four(q2, 0, q2.shape[0], k2, t, scores, t)
            kernel._add_eight(k2, t, q2.shape[0], scores, t, acc)
            kernel._add_eight(buf, 0, q2.shape[0], scores, t, acc)
            t += 8

    n, d, group = 16, 64, 4
    args = (np.ones((group, d), np.float32), np.zeros((n, d), word), np.zeros((8, d), np.float32),
            np.zeros((group, n), np.float32), np.zeros((group, d), np.float32), n, 4, 8)
    row_loops(*args)
    body = row_loops.inspect_llvm(row_loops.signatures[0]).split("\ndefine ")[1].split("{\n", 1)[1]
    blocks = re.split(r"\n(?=[\w.$\"-]+:)", body)  # the function's basic blocks: the first takes the arguments
    assert "@NRT_incref" in blocks[0]  # the arguments' references: the check below sees the calls
    assert [b.split(":")[0] for b in blocks[1:] if "@NRT_incref" in b] == []


def to_storage(block, dtype):
    """NumPy's fp32 rows -> (stored rows, per-row scales or None): what the probe's fill must write."""
    if dtype == "fp32":
        return block, None
    if dtype == "bf16":
        u = block.view(np.uint32).astype(np.uint64)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16), None  # round to nearest even
    if dtype == "fp16":
        return block.astype(np.float16).view(np.int16), None  # fp16 bits live in int16 words (STORAGE)
    scale = np.maximum(np.abs(block).max(axis=1), 1e-30).astype(np.float32) / np.float32(127)
    return np.clip(np.rint(block / scale[:, None]), -127, 127).astype(np.int8), scale


def from_storage(stored, scale, dtype):
    """NumPy's stored rows -> float64 values (widened or dequantised)."""
    if dtype == "fp32":
        return stored.astype(np.float64)
    if dtype == "bf16":
        return (stored.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype == "fp16":
        return stored.view(np.float16).astype(np.float64)
    return stored.astype(np.float64) * scale.astype(np.float64)[:, None]


def numpy_reference(cache, values):
    """float64 attention per query row with NumPy, on values(which) = K (1) or V (2) as float64 rows."""
    s = cache.shape
    k, v = values(1), values(2)
    out = np.empty((s.batch * s.heads, s.head_dim))
    q = cache.q.astype(np.float64) / np.sqrt(s.head_dim)
    for row in range(s.batch * s.heads):
        b, hq = divmod(row, s.heads)
        r0 = (b * s.kv_heads + hq // s.group) * s.seq_len
        scores = k[r0:r0 + s.seq_len] @ q[row]
        p = np.exp(scores - scores.max())
        out[row] = (p / p.sum()) @ v[r0:r0 + s.seq_len]
    return out


def test_storage_round_trips():
    rows = np.random.default_rng(0).uniform(-1, 1, size=(50, 64)).astype(np.float32)
    for dtype, bound in (("bf16", 2.0 ** -8), ("fp16", 2.0 ** -11)):
        stored, scale = to_storage(rows, dtype)
        back = from_storage(stored, scale, dtype)
        assert stored.dtype == cpu_decode.STORAGE[dtype] and scale is None
        assert np.max(np.abs(back - rows) / np.maximum(np.abs(rows), 1e-3)) <= bound
    stored, scale = to_storage(rows, "int8")
    back = from_storage(stored, scale, "int8")
    assert stored.dtype == np.int8 and scale.shape == (50,)
    assert np.all(np.abs(back - rows) <= scale[:, None] / 2 + 1e-7)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16", "int8"])
@pytest.mark.parametrize("dims", SHAPES, ids=lambda d: "S{}-d{}-H{}-Hkv{}-B{}".format(*d))
def test_cache_and_references_match_numpy(dtype, dims):
    """The probe's parallel fill writes exactly what NumPy's conversions would, and its float64
    references (stored and original) agree with NumPy's."""
    shape = shape_of(*dims, dtype)
    cache = cpu_decode.DecodeCache(shape, seed=9)
    rows = shape.batch * shape.kv_heads * shape.seq_len
    originals = {}
    for which, seed, store, scales in ((1, cache.seeds[0], cache.k, cache.k_scale), (2, cache.seeds[1], cache.v, cache.v_scale)):
        originals[which] = np.empty((rows, shape.head_dim), np.float32)
        cpu_decode.fill_uniform(originals[which], seed, 0)
        want, want_scale = to_storage(originals[which], dtype)
        assert np.array_equal(store, want)
        if want_scale is not None:
            assert np.array_equal(scales, want_scale)
    scales = {1: cache.k_scale, 2: cache.v_scale}
    stores = {1: cache.k, 2: cache.v}
    on_stored, on_original = cache.reference()
    np.testing.assert_allclose(on_stored, numpy_reference(cache, lambda w: from_storage(stores[w], scales[w], dtype)),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(on_original, numpy_reference(cache, lambda w: originals[w].astype(np.float64)),
                               rtol=1e-12, atol=1e-14)


def test_reused_caches_share_buffers_and_are_filled_afresh():
    shape = shape_of(67, 64, 4, 2, 1, "bf16")
    first = cpu_decode.DecodeCache(shape, seed=1, reuse=True)
    k1 = first.k.copy()
    second = cpu_decode.DecodeCache(shape, seed=2, reuse=True)
    assert second.k.ctypes.data == first.k.ctypes.data  # the same memory, paged in once
    assert not np.array_equal(second.k, k1)  # with the new seed's data
    assert cpu_decode.DecodeCache(shape, seed=3).k.ctypes.data != second.k.ctypes.data


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_caches_and_scratch_start_on_cache_lines(dtype):
    cache = cpu_decode.DecodeCache(model.DecodeShape(seq_len=5, heads=2, kv_heads=1, head_dim=64, dtype=dtype), 0)
    assert [a.ctypes.data % 64 for a in (cache.q, cache.k, cache.v)] == [0, 0, 0]
    for rows, cols in ((4, 128), (3, 80), (1, 1)):
        a = aligned_rows(rows, cols)
        assert a.shape == (rows, cols) and a.flags.c_contiguous and a.ctypes.data % 64 == 0


def test_fp32_and_int8_bounds_grow_like_sqrt_of_long_caches():
    def bound(dtype, seq_len):
        return cpu_decode.tolerance(shape_of(seq_len, 128, 32, 32, 1, dtype))

    assert bound("fp32", 4096) == bound("fp32", 16384) == 1e-5
    assert bound("fp32", 262144) == pytest.approx(4e-5) and bound("int8", 65536) == pytest.approx(2e-5)
    assert bound("bf16", 262144) == bound("fp16", 1 << 20) == 1e-2


def test_chunks_split_long_caches_and_balance_threads():
    assert chunk_length(1, 1, 300, 2) == 64  # 5 chunks for one head on two threads
    assert chunk_length(1, 32, 16384, 2) == 16384
    assert chunk_length(1, 32, 65536, 2) == MAX_CHUNK_TOKENS == 16384
    assert chunk_length(8, 32, 2048, 2) == 2048


@pytest.mark.parametrize("impl,kwargs,needle", [
    ("nosuch", {}, "valid impls are numba-fused"),
    ("torch-sdpa", {"dtype": "int8"}, "does not support int8 caches"),
    ("numba-fused", {"seq_len": 1 << 34}, "needs about"),
])
def test_bad_points_fail_before_allocating(cpu, impl, kwargs, needle):
    args = dict(seq_len=16, heads=4, kv_heads=4, head_dim=32, dtype="fp32")
    args.update(kwargs)
    with pytest.raises(HarnessError, match=needle):
        cpu_decode.check_point(impl, model.DecodeShape(**args), cpu)


def test_sweeps_cover_lengths_dtypes_gqa_and_batch(cpu):
    default = cpu_decode.sweep(Context(cpu=cpu, threads=2))
    big = max(s.seq_len for _, s in default if s.kv_heads == s.heads)
    fused = [s for impl, s in default if impl == "numba-fused"]
    assert {s.dtype for s in fused} == {"fp32", "bf16", "fp16", "int8"}
    assert any(s.kv_heads == s.heads // 4 for s in fused) and any(s.batch == 8 for s in fused)
    assert {s.dtype for s in fused if s.kv_heads == s.heads // 4} == {"fp32", "bf16"}  # the Llama 3 shape too,
    assert {s.seq_len for s in fused if s.kv_heads == s.heads // 4 and s.dtype == "bf16"} == {4 * big}  # from DRAM
    assert min(s.seq_len for s in fused) < big // 32  # from cache-resident ...
    assert 2 * 32 * 128 * 4 * big >= 8 * (32 << 20)  # ... to 8x the last-level cache in fp32
    quick = cpu_decode.sweep(Context(cpu=cpu, threads=2, quick=True))
    full = cpu_decode.sweep(Context(cpu=cpu, threads=2, full=True))
    assert len(quick) < len(default) < len(full)
    # torch up to a quarter of the longest cache (fp32 still >= 4x the LLC), all of it with --full
    for sweep, longest in ((default, big // 4), (quick, big // 4), (full, big)):
        torch_lens = {s.seq_len for impl, s in sweep if impl.startswith("torch")}
        assert max(torch_lens) == longest and 2 * 32 * 128 * 4 * longest >= 4 * (32 << 20)
    assert {s.dtype for impl, s in default if impl == "torch-sdpa"} == {"fp32", "bf16"}
    assert {s.dtype for impl, s in full if impl == "torch-sdpa"} == {"fp32", "bf16", "fp16"}


def amx_xeon_vm(cpu, available_gib):
    """The AMX Xeon VM of 2026-12-06 as the sweep sees it: 300 MiB of L3, the given memory free."""
    l3 = {"level": 3, "type": "Unified", "size_bytes": 300 << 20, "shared_by_cpus": 2, "instances": 1}
    return dict(cpu, caches=cpu["caches"][:2] + [l3], memory_available_bytes=int(available_gib * 2**30))


def test_sweep_points_beyond_memory_are_left_out_with_the_reason(cpu, monkeypatch):
    """--full on that VM (23.1 GiB free) asked for an fp32 cache of S=1048576, 36 GiB: check_point
    refused it and the whole decode probe failed, the four points before it lost."""
    vm = amx_xeon_vm(cpu, 23.1)
    monkeypatch.setattr(cpu_decode, "torch_reason", lambda: None)  # torch's points within memory either way
    points, left_out = cpu_decode.planned_points(Context(cpu=vm, threads=2, full=True))
    assert [(u["impl"], u["dtype"], u["seq_len"], u["kv_heads"]) for u in left_out] == [("numba-fused", "fp32", 1048576, 32)]
    assert "needs about 36.1 GiB, more than 70% of the 23.1 GiB available" in left_out[0]["reason"]
    assert all(cpu_decode.memory_refusal(s, vm) is None for _, s in points) and len(points) > 17
    assert cpu_decode.planned_points(Context(cpu=vm, threads=2))[1] == []  # the default sweep fits there


def test_the_longest_cache_is_shortened_to_fit_a_small_memory(cpu, monkeypatch):
    """Where a large reported LLC meets little memory the sweep's longest fp32 cache is halved until
    it fits, rather than every point at it being left out: 300 MiB of L3 asks for S=262144 (8.6 GB
    in fp32); with 8 GiB free the longest is S=131072 (4.3 GB)."""
    monkeypatch.setattr(cpu_decode, "torch_reason", lambda: None)  # torch's points within memory either way
    default = cpu_decode.sweep(Context(cpu=amx_xeon_vm(cpu, 23.1), threads=2))
    small = cpu_decode.sweep(Context(cpu=amx_xeon_vm(cpu, 8), threads=2))
    longest = lambda points: max(s.seq_len for _, s in points if s.kv_heads == s.heads and s.batch == 1)  # noqa: E731
    assert (longest(default), longest(small)) == (262144, 131072)
    assert cpu_decode.planned_points(Context(cpu=amx_xeon_vm(cpu, 8), threads=2))[1] == []
    with pytest.raises(HarnessError, match="more than 70% of the 8.0 GiB available"):  # asked for by name: an error
        cpu_decode.check_point("numba-fused", model.DecodeShape(seq_len=262144, heads=32, kv_heads=32, head_dim=128,
                                                                dtype="fp32"), amx_xeon_vm(cpu, 8))


def test_a_left_out_point_is_recorded_and_reported_and_the_others_measured(cpu, monkeypatch):
    from harness import report
    from harness.summary import section_lines

    tiny = model.DecodeShape(seq_len=67, heads=4, kv_heads=4, head_dim=32, dtype="fp32")
    huge = model.DecodeShape(seq_len=1 << 24, heads=32, kv_heads=32, head_dim=128, dtype="fp32")
    monkeypatch.setattr(cpu_decode, "sweep", lambda ctx: [("numba-fused", tiny), ("numba-fused", huge)])
    section = cpu_decode.run_decode(Context(cpu=cpu, threads=2, tiny=True))
    assert [r["seq_len"] for r in section["decode_attention"]] == [67] and section["decode_attention"][0]["validated"]
    (left,) = section["decode_unsupported"]
    assert left["seq_len"] == 1 << 24 and "GiB available" in left["reason"]
    line = "numba-fused fp32 B=1 H=32/32 S=16777216 (seq-len 16777216 x batch 1 x kv-heads 32 needs about"
    assert any(f"decode not measured: {line}" in s for s in section_lines(section))
    assert report.unmeasured_markdown(section)[0].startswith(f"Decode points not measured: {line}")


def test_probe_options_pick_one_shape(cpu, monkeypatch):
    ctx = Context(cpu=cpu, threads=2, options={"impl": "all", "dtype": "bf16", "seq_len": 64, "heads": 4,
                                                "head_dim": 32})
    points = cpu_decode.points_from_options(ctx)
    assert [impl for impl, _ in points] == ["numba-fused", "torch-sdpa", "torch-naive"]
    assert all(s.kv_heads == 4 and s.dtype == "bf16" for _, s in points)
    # without torch, `--impl all` runs the impl that can run and names the others, with the reason
    monkeypatch.setattr(cpu_decode, "torch_reason", lambda: "torch is not importable (No module named 'torch')")
    points, left_out = cpu_decode.planned_points(ctx)
    assert [impl for impl, _ in points] == ["numba-fused"]
    assert [(u["impl"], u["dtype"], u["reason"]) for u in left_out] == [
        (impl, "bf16", "torch is not importable (No module named 'torch')") for impl in ("torch-sdpa", "torch-naive")]
    ctx.options["impl"] = "torch-sdpa"  # asked for by name: an error
    with pytest.raises(HarnessError, match="torch-sdpa cannot run here: torch is not importable"):
        cpu_decode.planned_points(ctx)
    ctx.options.update(impl="all", dtype="int8")  # `--impl all` on a cache torch's impls do not take: named
    points, left_out = cpu_decode.planned_points(ctx)
    assert [impl for impl, _ in points] == ["numba-fused"]
    assert [(u["impl"], u["reason"]) for u in left_out] == [
        (impl, f"{impl} does not support int8 caches: valid dtypes are fp32, bf16, fp16") for impl in ("torch-sdpa", "torch-naive")]


def test_a_sweep_without_torch_names_torchs_points_as_not_measured(cpu, monkeypatch):
    from harness import report
    from harness.summary import section_lines

    ctx = Context(cpu=cpu, threads=2)
    everything = cpu_decode.sweep(ctx)
    monkeypatch.setattr(cpu_decode, "torch_reason", lambda: "torch is not importable (No module named 'torch')")
    points, left_out = cpu_decode.planned_points(ctx)
    assert points == [(impl, s) for impl, s in everything if impl == "numba-fused"]
    assert len(left_out) == sum(impl.startswith("torch") for impl, _ in everything) >= 5
    assert {u["reason"] for u in left_out} == {"torch is not importable (No module named 'torch')"}
    (line, _) = report.unmeasured_markdown({"decode_unsupported": left_out})  # one reason, said once
    assert line.startswith("Decode points not measured: torch-sdpa fp32 B=1 H=32/32 S=") and line.count("importable") == 1
    (said,) = [s for s in section_lines({"decode_unsupported": left_out}) if "not measured" in s]
    assert said.startswith("decode not measured: torch-sdpa fp32 B=1 H=32/32 S=") and said.count("importable") == 1


def test_large_points_pair_each_sample_with_a_read_before_it(cpu, monkeypatch):
    monkeypatch.setattr(cpu_decode, "LARGE_CACHE_FACTOR", 0)  # every point counts as a large cache
    ctx = Context(cpu=cpu, threads=2, tiny=True, options={"seq_len": 67, "heads": 4, "head_dim": 32})
    (rec,) = cpu_decode.run_decode(ctx)["decode_attention"]
    reads = rec["reads_before_samples_bytes_per_s"]
    assert rec["validated"] and len(reads) == len(rec["samples_s"]) == ctx.repeats
    assert all(r > 0 for r in reads)
    assert rec["adjacent_read_bytes_per_s"] == pytest.approx(float(np.median(reads)))
    core = rec["in_core"]  # the fused kernel's own tasks, one a thread at once, rows in half a thread's L2
    l2 = cpu_decode.l2_bytes(cpu)
    assert core["validated"] and core["rel_error"] <= core["tolerance"] and core["threads"] == 2
    assert core["seq_len"] == max(64, l2 // 2 // (2 * 32 * 4) // 64 * 64) and core["heads"] == core["kv_heads"] == 2
    assert core["median_bytes_per_s"] > 0 and len(core["samples_s"]) == 3


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16", "int8"])
def test_the_in_core_task_is_checked_against_float64(cpu, dtype, monkeypatch):
    ctx = Context(cpu=cpu, threads=2, tiny=True)
    shape = model.DecodeShape(seq_len=1 << 20, heads=12, kv_heads=2, head_dim=80, dtype=dtype)  # group 6
    rec = {"kernel_config": {"stage_rows_in_l1": dtype == "fp32", "prefetch_rows_ahead": 8, "prefetch_l2_rows_ahead": 128}}
    small_l2 = dict(cpu, caches=[{"level": 2, "size_bytes": 64 << 10, "instances": 2, "shared_by_cpus": 1}])
    cpu_decode.measure_in_core(Context(cpu=small_l2, threads=2, tiny=True), rec, shape, seed=5)
    core = rec["in_core"]
    per_token = 2 * 80 * {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}[dtype] + 8 * (dtype == "int8")
    assert core["validated"] and core["rel_error"] <= core["tolerance"] and core["threads"] == 2
    assert (core["heads"], core["kv_heads"]) == (12, 2)  # a task of group 6 on each thread
    assert core["seq_len"] == max(64, (32 << 10) // per_token // 64 * 64)
    assert core["bytes_per_call"] == model.decode_bytes(model.DecodeShape(seq_len=core["seq_len"], heads=12, kv_heads=2,
                                                                          head_dim=80, dtype=dtype))
    monkeypatch.setattr(cpu_decode, "task_loops", lambda *args: None)  # a kernel that leaves the poison: caught
    cpu_decode.measure_in_core(ctx, rec, shape, seed=5)
    assert not rec["in_core"]["validated"] and "relative error inf" in rec["in_core"]["error"]
    cpu_decode.measure_in_core(Context(cpu=dict(cpu, caches=[]), threads=2, tiny=True), rec, shape, seed=5)
    assert rec["in_core"] == {"reason": "the CPU reports no L2 cache to size the in-core task by"}


def test_the_in_core_tasks_fit_a_threads_share_of_l2():
    """Where CPUs share an L2 (SMT siblings), a task's rows fit its thread's share of it."""
    l2 = {"level": 2, "size_bytes": 2 << 20, "instances": 4}
    assert cpu_decode.l2_bytes({"caches": [dict(l2, shared_by_cpus=2)]}) == 1 << 20
    assert cpu_decode.l2_bytes({"caches": [dict(l2, shared_by_cpus=None)]}) == 2 << 20
    assert cpu_decode.l2_bytes({"caches": [{"level": 3, "size_bytes": 1 << 25}]}) is None


def test_a_wrong_read_beside_a_point_is_named_not_used(cpu, monkeypatch):
    monkeypatch.setattr(cpu_decode, "LARGE_CACHE_FACTOR", 0)
    answers = iter([50e9, None, 50e9])
    monkeypatch.setattr(cpu_decode, "adjacent_reader", lambda ctx: lambda: next(answers))
    ctx = Context(cpu=cpu, threads=2, tiny=True, options={"seq_len": 67, "heads": 4, "head_dim": 32})
    (rec,) = cpu_decode.run_decode(ctx)["decode_attention"]
    assert rec["reads_before_samples_bytes_per_s"] == [50e9, None, 50e9]
    assert rec["adjacent_read_bytes_per_s"] is None
    assert any("summed wrong" in w for w in rec["warnings"])


def test_a_long_cache_is_tuned_on_a_prefix_still_twice_the_last_level_cache():
    llc = 1 << 20
    for seq_len, want in ((1 << 16, 1 << 9), (1 << 9, 1 << 9), (3 << 12, 3 << 8), (67, 67)):
        shape = shape_of(seq_len, 64, 8, 8, 1, "fp32")  # 4 KiB per token: >= 2 MiB from S=512
        got = cpu_decode.tuning_seq_len(shape, llc)
        assert got == want
        assert got == seq_len or model.cache_bytes(shape_of(got, 64, 8, 8, 1, "fp32")) >= cpu_decode.TUNING_CACHE_FACTOR * llc
    assert cpu_decode.tuning_seq_len(shape_of(1 << 16, 64, 8, 8, 1, "fp32"), 0) == 1 << 16  # unknown cache: its own


def test_tuning_times_the_prefix_and_the_point_runs_the_whole_cache(monkeypatch, fake_clock):
    monkeypatch.setattr(cpu_decode, "_TUNED", {})
    shape = shape_of(256, 64, 8, 8, 1, "fp32")
    cache = cpu_decode.DecodeCache(shape, 4)
    lengths = []
    real = cpu_decode.decode_kernel

    def recording(*args):
        lengths.append((args[8], args[1].shape[0]))  # seq_len, K rows passed
        real(*args)

    monkeypatch.setattr(cpu_decode, "decode_kernel", recording)
    llc = model.cache_bytes(shape) // 8  # the tuning prefix: S=64, the last of the halvings >= 2x this
    run, output, record = cpu_decode.numba_runner(cache, 2, llc_bytes=llc, clock=fake_clock)
    assert set(lengths) == {(64, 8 * 64)} and "at S=64" in record["chosen_by"]
    lengths.clear()
    run(1)
    assert lengths == [(256, 8 * 256)]
    on_stored, on_original = cache.reference()
    assert cpu_decode.relative_error(output(), on_original) <= cpu_decode.TOLERANCE["fp32"]


def test_torch_imported_after_numbas_openmp_threads_is_flagged(cpu, monkeypatch):
    monkeypatch.setitem(cpu_decode._TORCH_IMPORTED, "after_numba_omp", True)
    ctx = Context(cpu=cpu, threads=2, tiny=True)
    shape = shape_of(16, 32, 4, 4, 1, "fp32")
    assert cpu_decode.TORCH_AFTER_NUMBA_OMP not in cpu_decode.measure_point(ctx, "numba-fused", shape, 1)["warnings"]
    if HAS_TORCH:
        assert cpu_decode.TORCH_AFTER_NUMBA_OMP in cpu_decode.measure_point(ctx, "torch-naive", shape, 1)["warnings"]


def test_decode_buffers_hold_every_point_of_the_sweep(cpu):
    ctx = Context(cpu=cpu, threads=2, tiny=True)
    need = cpu_decode.decode_buffers(ctx)
    points = cpu_decode.sweep(ctx)
    assert need["pool b"] == need["pool c"] == max(cpu_decode.array_bytes(s) for _, s in points)
    for _, s in points:
        assert s.batch * s.kv_heads * s.seq_len * s.head_dim * np.dtype(cpu_decode.STORAGE[s.dtype]).itemsize <= need["pool b"]


def test_a_probe_on_fewer_threads_than_the_profile_says_whose_roofs_it_is_held_to(cpu, tmp_path):
    """`harness probe decode --threads 1` beside a 2-thread profile: its fractions are against two
    threads' bandwidth, and the note says so."""
    from harness import run
    from harness.profile import load_profile, save_profile

    stored = load_profile(os.path.join(ROOT, "profiles", "amd-epyc-zen4-2c.yaml"))
    path = tmp_path / "p.yaml"
    save_profile(stored, path)
    ctx = Context(cpu=cpu, threads=1, tiny=True, options={"seq_len": 67, "heads": 4, "head_dim": 32})
    section = run.derive_from_stored(cpu_decode.run_decode(ctx), cpu, str(path))
    assert section["note"] == (f"this run used 1 thread(s) and the profile's roofs 2 ({path}): predictions, fractions "
                               "and model errors are against 2 threads' bandwidth and peak")
    assert section["decode_attention"][0]["achieved"]["fraction_of_bandwidth"] > 0
    ctx = Context(cpu=cpu, threads=2, tiny=True, options={"seq_len": 67, "heads": 4, "head_dim": 32})
    assert "note" not in run.derive_from_stored(cpu_decode.run_decode(ctx), cpu, str(path))
