"""Predictions, fractions and the model verdict from synthetic decode records (no kernels run)."""

import pytest

from harness import model, validation
from harness.summary import short_of_roofs_phrase

BW, PEAK, LLC = 50e9, 500e9, 32 << 20


def record(impl="numba-fused", dtype="fp32", seq_len=16384, kv_heads=32, batch=1, efficiency=0.8, validated=True):
    shape = model.DecodeShape(seq_len=seq_len, heads=32, kv_heads=kv_heads, head_dim=128, dtype=dtype, batch=batch)
    nbytes = model.decode_bytes(shape)
    return {"impl": impl, "dtype": dtype, "seq_len": seq_len, "heads": 32, "kv_heads": kv_heads, "batch": batch, "head_dim": 128,
            "validated": validated, "time_s": nbytes / (BW * efficiency),
            "model": {"flops": model.attention_flops(shape), "bytes": nbytes, "cache_bytes": model.cache_bytes(shape)}}


def test_derive_point_predicts_and_measures():
    rec = validation.derive_point(record(efficiency=0.8), BW, PEAK)
    assert rec["model"]["regime"] == "memory-bound"
    assert rec["model"]["predicted_time_s"] == pytest.approx(rec["model"]["bytes"] / BW)
    assert rec["achieved"]["fraction_of_bandwidth"] == pytest.approx(0.8)
    assert rec["model_error"] == pytest.approx(1 / 0.8 - 1)
    assert rec["achieved"]["fraction_of_peak_flops"] == pytest.approx(0.8 * BW * rec["model"]["flops"] / rec["model"]["bytes"] / PEAK)


def test_derive_point_without_roofs_says_none():
    rec = validation.derive_point(record(), None, None)
    assert rec["model_error"] is None and rec["achieved"]["fraction_of_bandwidth"] is None
    assert rec["achieved"]["bytes_per_s"] > 0


def test_a_section_without_an_fp32_peak_says_so_and_keeps_nothing_of_an_earlier_derivation():
    # the peak probe failed (or its check did): a stored profile's records, re-derived, crashed the
    # verdict on the adjacent-read error left from before
    recs = [dict(record(efficiency=0.85), adjacent_read_bytes_per_s=BW), record(dtype="bf16", efficiency=0.8)]
    for r in recs:
        validation.derive_point(r, BW, PEAK)
    assert recs[0]["model_error_adjacent"] is not None
    section = {"bandwidth": {"read": {"bytes_per_s": BW}}, "decode_attention": recs}
    validation.validate_section(section, LLC)
    assert section["model_validation"]["finding"] == (
        "the profile has no fp32 FMA peak (peak_flops.fp32: not measured, or its output check failed) to predict "
        "the decode points' time with")
    assert all(r["model_error"] is None and "model_error_adjacent" not in r and "regime" not in r["model"] for r in recs)


def test_model_validation_verdict_and_effects():
    recs = [record(efficiency=0.85), record("torch-sdpa", efficiency=0.4),
            record(dtype="bf16", efficiency=0.8), record(dtype="int8", efficiency=0.6),
            record(kv_heads=8, efficiency=0.8), record(dtype="bf16", kv_heads=8, seq_len=65536, efficiency=0.4),
            record(seq_len=2048, batch=8, efficiency=0.8),
            record(seq_len=256, efficiency=3.0),  # cache-resident: not used for the verdict
            record(dtype="fp16", efficiency=5.0, validated=False)]  # wrong output: ignored
    for r in recs:
        validation.derive_point(r, BW, PEAK)
    v = validation.model_validation(recs, LLC, BW)
    assert v["per_dtype"]["fp32"]["impl"] == "numba-fused"
    assert v["per_dtype"]["fp32"]["model_error"] == pytest.approx(1 / 0.85 - 1)
    assert "fp16" not in v["per_dtype"]
    assert v["model_holds"] is True
    bf16 = v["dtype_ratios"]["bf16_vs_fp32"]
    assert bf16["model_bytes_ratio"] == pytest.approx(0.5, rel=0.01)
    assert bf16["measured_time_ratio"] == pytest.approx(0.5 * 0.85 / 0.8, rel=0.01)
    assert v["gqa"]["model_bytes_ratio"] == pytest.approx(0.25, rel=0.01)
    widened = v["gqa_widened"]  # bf16 at group 4 and 4x the tokens against bf16 at group 1: the same bytes
    assert widened["dtype"] == "bf16" and widened["model_bytes_ratio"] == pytest.approx(1.0, rel=0.01)
    assert widened["measured_time_ratio"] == pytest.approx(0.8 / 0.4, rel=0.01)
    assert v["batch"]["model_bytes_ratio"] == pytest.approx(1.0, rel=0.01)
    assert v["finding"].startswith("memory-bound: numba-fused fp32 at 0.85 of DRAM read bandwidth; model error +18%")
    assert "int8 0.37x fp32's time (model 0.26)" in v["finding"]


def test_points_below_both_roofs_are_named_least_attained_first():
    recs = [record(efficiency=0.85), record(dtype="int8", efficiency=0.6), record(kv_heads=8, efficiency=0.5),
            record("torch-sdpa", kv_heads=8, efficiency=0.2, validated=False),  # wrong output: not named
            record(seq_len=256, efficiency=0.1)]  # cache-resident: not from DRAM, not named
    for r in recs:
        validation.derive_point(r, BW, PEAK)
    short = validation.model_validation(recs, LLC, BW)["short_of_roofs"]
    assert [p["point"] for p in short] == ["decode numba-fused fp32 B=1 H=32/8 d_h=128 S=16384",
                                           "decode numba-fused int8 B=1 H=32/32 d_h=128 S=16384"]
    assert [p["fraction_of_roof"] for p in short] == pytest.approx([0.5, 0.6])
    assert short[0]["roof"] == "memory-bound" and short[0]["against_adjacent_read"] is False
    assert short[0]["fraction_of_peak_flops"] == pytest.approx(recs[2]["achieved"]["fraction_of_peak_flops"])
    phrase = short_of_roofs_phrase(short)
    assert phrase.startswith("below both roofs") and "H=32/8 d_h=128 S=16384 at 0.50 of its memory roof" in phrase
    assert short_of_roofs_phrase([]) is None


def test_below_both_roofs_is_judged_against_the_read_measured_beside_the_point():
    rec = record(efficiency=0.5)  # half the profile's read bandwidth, but the memory was slow then
    rec["adjacent_read_bytes_per_s"] = BW * 0.55
    v = validation.model_validation([validation.derive_point(rec, BW, PEAK)], LLC, BW)
    assert v["short_of_roofs"] == []


def test_model_validation_flags_a_model_that_does_not_hold():
    recs = [validation.derive_point(record(efficiency=0.3), BW, PEAK)]
    v = validation.model_validation(recs, LLC, BW)
    assert v["model_holds"] is False and "+233%" in v["finding"]
    assert v["gqa"]["available"] is False and v["gqa_widened"]["available"] is False


def test_without_an_fp32_point_the_verdict_is_a_16_bit_caches_and_the_report_says_which():
    from harness import report

    recs = [validation.derive_point(record(dtype=d, efficiency=e), BW, PEAK) for d, e in (("int8", 0.5), ("fp16", 0.9))]
    v = validation.model_validation(recs, LLC, BW)  # no fp32 point from memory
    assert validation.headline_dtype(v["per_dtype"]) == "fp16" and v["model_holds"] is True
    assert "numba-fused fp16 at 0.90" in v["finding"]
    text = "\n".join(report.decode_markdown({"decode_attention": recs, "model_validation": v}, "decode.png", "##"))
    assert "Model holds (|error| <= 25% for the best fp16 implementation): **yes**." in text
    assert "| numba-fused | fp16 | 1 | 32/32 | 128 | 16384 |" in text  # the head dimension has its column
    assert "| fp16 | numba-fused | 16384 | +11% | 0.90 | n/a | n/a |" in text  # no read timed beside it
    v["per_dtype"]["fp16"].update(model_error_adjacent=0.07, fraction_of_adjacent_read=0.93)
    text = "\n".join(report.decode_markdown({"decode_attention": recs, "model_validation": v}, "decode.png", "##"))
    assert "| fp16 | numba-fused | 16384 | +11% | 0.90 | +7% | 0.93 |" in text  # the fraction the verdict is of


def test_model_validation_without_large_caches():
    recs = [validation.derive_point(record(seq_len=64), BW, PEAK)]
    finding = validation.model_validation(recs, LLC, BW)["finding"]
    assert "no validated decode point has a cache of at least 4x the last-level cache (" in finding
    assert "read bandwidth" not in finding  # the profile has one: the cause is named alone
    assert validation.model_validation(recs, LLC, None)["finding"] == \
        "the profile has no read bandwidth to validate the model against"


def test_adjacent_read_bandwidth_gives_the_verdict_when_present():
    rec = record(efficiency=0.45)
    rec["adjacent_read_bytes_per_s"] = BW * 0.5  # the machine was at half its profiled bandwidth then
    validation.derive_point(rec, BW, PEAK)
    assert rec["achieved"]["fraction_of_adjacent_read"] == pytest.approx(0.9)
    assert rec["model_error_adjacent"] == pytest.approx(1 / 0.9 - 1)
    v = validation.model_validation([rec], LLC, BW)
    assert v["model_holds"] is True
    assert "0.90 of the DRAM read bandwidth measured beside it (0.45 of the profile's)" in v["finding"]
    assert "model error +11% (+122% against the profile's bandwidth)" in v["finding"]


def test_a_point_faster_than_the_read_beside_it_is_flagged_once():
    rec = record(efficiency=0.9)
    rec["adjacent_read_bytes_per_s"] = BW * 0.6  # the point ran 1.5x faster than the read beside it
    validation.derive_point(rec, BW, PEAK)
    validation.derive_point(rec, BW, PEAK)  # derived again (a reloaded profile): still one warning
    assert [w for w in rec["warnings"] if "1.50x as fast as the read measured beside it" in w] == [rec["warnings"][-1]]
    assert len(rec["warnings"]) == 1
    ok = record(efficiency=0.9)
    ok["adjacent_read_bytes_per_s"] = BW
    assert not validation.derive_point(ok, BW, PEAK).get("warnings")


def section_of(*recs):
    return {"bandwidth": {"read": {"bytes_per_s": BW}}, "peak_flops": {"fp32": {"flops_per_s": PEAK}},
            "decode_attention": list(recs)}


def test_a_point_from_dram_faster_than_the_profiled_read_is_flagged_once_with_the_read_beside_it():
    fast = record(efficiency=1.32)  # the cache is 16x the LLC: no cache serves it
    fast["adjacent_read_bytes_per_s"] = BW * 1.7  # the memory ran at 85 GB/s while it ran
    section = section_of(fast, record(seq_len=256, efficiency=3.0), record(efficiency=0.9))
    validation.validate_section(section, LLC)
    validation.validate_section(section, LLC)  # derived again (a reloaded profile): still one warning
    assert fast["warnings"] == [
        "moved its bytes 1.32x as fast as the profile's DRAM read (50.0 GB/s) from a cache 16x the last-level "
        "cache, which no cache serves: the read beside it ran at 85.0 GB/s, so the memory was faster while it ran; "
        f"take its fraction and model error against that read (0.78, {1 / (1.32 / 1.7) - 1:+.0%}), not the profile's"]
    cached, slower = section["decode_attention"][1:]
    assert not cached.get("warnings") and not slower.get("warnings")  # the cache serves S=256; 0.9 is below the read


def test_a_point_faster_than_the_profiled_read_without_a_read_beside_it_is_flagged():
    fast = record(efficiency=1.2)
    validation.validate_section(section_of(fast), LLC, memory="HBM")
    assert fast["warnings"] == [
        "moved its bytes 1.20x as fast as the profile's HBM read (50.0 GB/s) from a cache 16x the last-level cache, "
        "which no cache serves: the memory ran faster than when its read was profiled, or the point's byte count "
        "is wrong"]


def test_a_point_faster_than_both_reads_carries_only_the_warning_about_the_read_beside_it():
    fast = record(efficiency=1.5)
    fast["adjacent_read_bytes_per_s"] = BW
    validation.validate_section(section_of(fast), LLC)
    assert len(fast["warnings"]) == 1 and "1.50x as fast as the read measured beside it" in fast["warnings"][0]


def test_the_verdict_uses_the_longest_cache():
    recs = [validation.derive_point(r, BW, PEAK) for r in (record(seq_len=4096, efficiency=0.9),
                                                           record(seq_len=16384, efficiency=0.7))]
    v = validation.model_validation(recs, LLC, BW)
    assert v["per_dtype"]["fp32"]["seq_len"] == 16384


def test_effects_at_equal_read_bandwidth_take_out_the_memorys_drift():
    fp32, bf16 = record(efficiency=0.8), record(dtype="bf16", efficiency=0.8)
    fp32["adjacent_read_bytes_per_s"] = BW  # bf16 ran while the memory was at half speed: twice as long
    bf16["time_s"] *= 2
    bf16["adjacent_read_bytes_per_s"] = BW / 2
    recs = [validation.derive_point(r, BW, PEAK) for r in (fp32, bf16)]
    v = validation.model_validation(recs, LLC, BW)
    ratio = v["dtype_ratios"]["bf16_vs_fp32"]
    assert ratio["measured_time_ratio"] == pytest.approx(1.0, rel=0.01)
    assert ratio["time_ratio_at_equal_read"] == pytest.approx(0.5, rel=0.01)
    assert "bf16 1.00x fp32's time (0.50x at equal read bandwidth; model 0.50)" in v["finding"]
    assert "time_ratio_at_equal_read" not in v["gqa"] and v["gqa"]["available"] is False


def test_a_headline_point_faster_than_the_read_beside_it_leaves_the_verdict_undecided():
    rec = record(efficiency=0.9)
    rec["adjacent_read_bytes_per_s"] = BW * 0.6  # 1.5x the read beside it: that read is not its memory
    v = validation.model_validation([validation.derive_point(rec, BW, PEAK)], LLC, BW)
    assert v["model_holds"] is None
    assert v["finding"].endswith("undecided: the memory's speed changed while that point ran")


def test_samples_paired_with_the_read_before_each_give_the_fraction():
    rec = record(efficiency=0.8)
    t = rec["time_s"]
    # the memory alternated between full and half speed, and each sample followed the read before it
    rec["samples_s"] = [t, 2 * t, t, 2 * t, t]
    rec["reads_before_samples_bytes_per_s"] = [BW, BW / 2, BW, BW / 2, BW]
    rec["adjacent_read_bytes_per_s"] = BW
    rec["time_s"] = t  # the median sample
    validation.derive_point(rec, BW, PEAK)
    assert rec["achieved"]["fraction_of_adjacent_read"] == pytest.approx(0.8)
    assert rec["model_error_adjacent"] == pytest.approx(1 / 0.8 - 1)
    rec["time_s"] = 2 * t  # were the slow samples the median, the pairs would still say 0.8
    validation.derive_point(rec, BW, PEAK)
    assert rec["achieved"]["fraction_of_adjacent_read"] == pytest.approx(0.8)
    assert rec["model_error_adjacent"] == pytest.approx(1 / 0.8 - 1)
    rec["reads_before_samples_bytes_per_s"] = [BW, None, BW, BW, BW]  # a wrong read output: not paired
    validation.derive_point(rec, BW, PEAK)
    assert rec["achieved"]["fraction_of_adjacent_read"] == pytest.approx(0.4)


def _sweep(one, top, threads=2):
    recs = [{"threads": 1, "median_flops_per_s": one}, {"threads": threads, "median_flops_per_s": top}]
    return {"thread_sweep": {"peak_fp32": recs}}


def test_an_fma_peak_that_does_not_scale_with_the_cores_is_flagged(cpu):
    confined = _sweep(221e9, 218e9)  # measured: OMP_PLACES={0} on the 2-vCPU Zen 5 VM
    validation.flag_thread_scaling(confined, cpu)
    assert len(confined["warnings"]) == 1 and "0.99x one thread's where 2 cores" in confined["warnings"][0]
    barely = _sweep(223e9, 226e9)  # measured in a profile on the Zen 5 VM: 1.01x is as flagged as 0.99x
    validation.flag_thread_scaling(barely, cpu)
    assert "1.01x one thread's where 2 cores" in barely["warnings"][0]
    scaled = _sweep(222e9, 443e9)
    validation.flag_thread_scaling(scaled, cpu)
    assert "warnings" not in scaled
    smt = _sweep(222e9, 240e9)  # two threads on the two siblings of one core: no more FMA units
    validation.flag_thread_scaling(smt, {**cpu, "cores": 1, "threads": 2})
    assert "warnings" not in smt
    server = {**cpu, "cores": 64, "threads": 128, "usable_cpus": 128}
    honest, shared = _sweep(50e9, 0.6 * 64 * 50e9, threads=128), _sweep(50e9, 16 * 50e9, threads=128)
    validation.flag_thread_scaling(honest, server)  # all-core clock at 0.6 of one core's: no warning
    validation.flag_thread_scaling(shared, server)
    assert "warnings" not in honest and "16.00x one thread's where 64 cores" in shared["warnings"][0]
    nothing = {}
    validation.flag_thread_scaling(nothing, cpu)
    assert nothing == {}


def test_one_workload_timed_twice_with_disagreeing_medians_is_flagged():
    def rec(median, probe_hash, threads=2, key="median_flops_per_s"):
        return {key: median, "probe_hash": probe_hash, "threads": threads}

    # measured in one profile on the 2-vCPU Zen 5 VM: the FMA peak at one core's rate, the sweep at two
    section = {"peak_flops": {"fp32": rec(230.4e9, "c5c8"), "fp64": rec(222.7e9, "ab12")},
               "bandwidth": {"triad": rec(40.1e9, "e817", key="median_bytes_per_s")},
               "thread_sweep": {"peak_fp32": [rec(224.6e9, "1ada", threads=1), rec(447.2e9, "c5c8")],
                                "triad": [rec(38.0e9, "7ac6", 1, "median_bytes_per_s"),
                                          rec(39.2e9, "e817", key="median_bytes_per_s")]}}
    validation.flag_disagreeing_repeats(section)
    (warning,) = section["warnings"]  # the triad's 2% and the unpaired fp64 peak say nothing
    assert warning.startswith("peak_flops.fp32 (median 230.4 GFLOP/s) and the thread sweep's peak_fp32 at 2 threads "
                              "(median 447.2 GFLOP/s), the same workload, differ 1.94x")
    old = {"peak_flops": {"fp32": {"median_flops_per_s": 1e9}}, "thread_sweep": {"peak_fp32": [{"threads": 2}]}}
    validation.flag_disagreeing_repeats(old)  # a profile from before probe hashes: nothing to pair
    assert "warnings" not in old


def test_a_memory_level_and_read_bandwidth_that_disagree_are_flagged():
    # measured in one profile on the 2-vCPU Zen 4 VM, seconds apart
    drifted = {"hierarchy_levels": {"L3": {"bytes_per_s": 194.1e9}, "DRAM": {"bytes_per_s": 59.6e9}},
               "bandwidth": {"read": {"bytes_per_s": 34.7e9}}}
    validation.flag_disagreeing_memory_reads(drifted, "DRAM")
    (warning,) = drifted["warnings"]
    assert warning.startswith("the hierarchy sweep's DRAM level (59.6 GB/s) and bandwidth.read (34.7 GB/s), the same "
                              "reads beyond the caches, differ 1.72x")
    steady = {"hierarchy_levels": {"HBM": {"bytes_per_s": 4.1e12}}, "bandwidth": {"read": {"bytes_per_s": 4.3e12}}}
    no_level = {"hierarchy_levels": {"HBM": {"bytes_per_s": None, "reason": "no sweep point"}},
                "bandwidth": {"read": {"bytes_per_s": 4.3e12}}}
    for section in (steady, no_level, {}):
        validation.flag_disagreeing_memory_reads(section, "HBM")
        assert "warnings" not in section


def test_fp64_and_fp32_stream_medians_that_disagree_are_flagged():
    # measured in one profile on the 2-vCPU Zen 4 VM: the fp32 read ran while the memory was faster
    def kernels(**gbps):
        return {kernel: {"median_bytes_per_s": rate * 1e9} for kernel, rate in gbps.items()}

    drifted = {"bandwidth": kernels(triad=33.1, read=33.5), "bandwidth_fp32": kernels(triad=31.9, read=62.9)}
    validation.flag_disagreeing_dtype_reads(drifted)
    (warning,) = drifted["warnings"]  # the triads' 4% says nothing
    assert warning.startswith("STREAM medians that move the same bytes in fp64 and fp32 differ more than 1.25x: "
                              "read 33.5 GB/s fp64 and 62.9 GB/s fp32 (1.88x): the memory's speed changed")
    steady = {"bandwidth": kernels(read=36.4), "bandwidth_fp32": kernels(read=36.3)}
    unpaired = {"bandwidth": kernels(read=36.4), "bandwidth_fp32": {"read": {"reason": "fp32 not run"}}}
    for section in (steady, unpaired, {"bandwidth": kernels(read=36.4)}, {}):
        validation.flag_disagreeing_dtype_reads(section)
        assert "warnings" not in section


def sweep(levels, points_mib_gbps, memory="DRAM"):
    return {"hierarchy_levels": levels,
            "hierarchy": [{"working_set_bytes": mib << 20, "bytes_per_s": gbps * 1e9,
                           "level": memory if mib > 32 else "L3"} for mib, gbps in points_mib_gbps]}


def test_the_bytes_a_cache_must_have_held_for_a_reads_speed():
    assert validation.cached_bytes_needed(60e9, 64 << 20, 60e9, 194e9) == 0  # at the memory's speed
    assert validation.cached_bytes_needed(200e9, 64 << 20, 60e9, 194e9) == 64 << 20  # at the cache's
    half = 1 / (0.5 / 194e9 + 0.5 / 60e9)  # half of it from each
    assert validation.cached_bytes_needed(half, 64 << 20, 60e9, 194e9) == pytest.approx(32 << 20)


def test_a_cache_serving_more_than_the_reported_one_holds_is_flagged():
    # two profiles of the 2-vCPU Zen 4 VM (32 MiB L3 reported): vCPUs on separate L3s, then on one
    levels = {"L3": {"bytes_per_s": 194.1e9}, "DRAM": {"bytes_per_s": 59.6e9}}
    split = sweep(levels, [(16, 194), (32, 160), (45, 128), (64, 107), (90, 63), (128, 58), (256, 60)])
    shared = sweep({"L3": {"bytes_per_s": 179e9}, "DRAM": {"bytes_per_s": 33.6e9}},
                   [(16, 181), (32, 85), (45, 56), (64, 43), (90, 40), (128, 33), (256, 34)])
    validation.flag_cache_beyond_reported(split, 32 << 20, "DRAM")
    validation.flag_cache_beyond_reported(shared, 32 << 20, "DRAM")  # 45-90 MiB at 1.2-1.7x DRAM: <= 29 MiB cached
    (warning,) = split["warnings"]
    assert warning.startswith("the hierarchy sweep read 64 MiB at 107.0 GB/s, between its DRAM level (59.6 GB/s) and "
                              "its last cache level (194.1 GB/s): at least 41 MiB of it was cached, where this machine "
                              "reports a 32 MiB last-level cache: a larger cache served it")
    assert "warnings" not in shared
    no_level = sweep({"L2": {"bytes_per_s": 9e12}, "HBM": {"bytes_per_s": None, "reason": "no sweep point"}},
                     [(256, 4000)], "HBM")
    for section in (no_level, {}):
        validation.flag_cache_beyond_reported(section, 50 << 20, "HBM")
        assert "warnings" not in section


def test_fp32_and_fp64_peaks_off_their_lane_ratio_are_flagged():
    theory = {"flops_per_cycle_per_core": {"fp64": 16, "fp32": 32}}  # Zen 4
    # measured in one profile on the 2-vCPU Zen 4 VM: fp64 at one core's rate, fp32 at two
    halved = {"peak_flops": {"fp64": {"median_flops_per_s": 58.6e9}, "fp32": {"median_flops_per_s": 229.7e9}}}
    validation.flag_disagreeing_precisions(halved, theory)
    (warning,) = halved["warnings"]
    assert warning.startswith("the fp32 FMA peak (median 229.7 GFLOP/s) is 3.92x the fp64 one (median 58.6 GFLOP/s) "
                              "where their SIMD lanes give 2x")
    honest = {"peak_flops": {"fp64": {"median_flops_per_s": 114.9e9}, "fp32": {"median_flops_per_s": 229.3e9}}}
    validation.flag_disagreeing_precisions(honest, theory)
    fp32_halved = {"peak_flops": {"fp64": {"median_flops_per_s": 114.9e9}, "fp32": {"median_flops_per_s": 115e9}}}
    validation.flag_disagreeing_precisions(fp32_halved, theory)
    unknown = {"peak_flops": dict(halved["peak_flops"])}  # no table entry: no ratio to hold them to
    validation.flag_disagreeing_precisions(unknown, {"flops_per_cycle_per_core": None})
    assert "warnings" not in honest and "1.00x the fp64 one" in fp32_halved["warnings"][0] and "warnings" not in unknown
    # fp16's chains (AVX512-FP16) have twice fp32's lanes: held to 0.5x
    xeon = {"flops_per_cycle_per_core": {"fp64": 32, "fp32": 64, "fp16": 128}}
    fp16 = {"fp64": {"median_flops_per_s": 246e9}, "fp32": {"median_flops_per_s": 493e9}}
    together = {"peak_flops": dict(fp16, fp16={"median_flops_per_s": 998e9})}
    validation.flag_disagreeing_precisions(together, xeon)
    one_core = {"peak_flops": dict(fp16, fp16={"median_flops_per_s": 499e9})}
    validation.flag_disagreeing_precisions(one_core, xeon)
    assert "warnings" not in together
    (warning,) = one_core["warnings"]
    assert "is 0.99x the fp16 one (median 499.0 GFLOP/s) where their SIMD lanes give 0.5x" in warning
    # a --quick profile: both medians at one core's rate (their ratio right), fp64's best too, fp32's not
    both = {"peak_flops": {"fp64": {"median_flops_per_s": 58.6e9, "flops_per_s": 58.7e9},
                           "fp32": {"median_flops_per_s": 117.1e9, "flops_per_s": 219.5e9}}}
    validation.flag_disagreeing_precisions(both, theory)
    (warning,) = both["warnings"]
    assert warning.startswith("the fp32 FMA peak (best 219.5 GFLOP/s) is 3.74x the fp64 one (best 58.7 GFLOP/s) "
                              "where their SIMD lanes give 2x")


def test_a_points_time_is_set_against_its_loops_in_core_and_its_memory():
    """The int8 point of the Xeon VM (2026-12-06): 2 threads at 24.3 GB/s, 0.69 of the read beside it,
    its kernel's task 16.3 GB/s on one thread with the rows in L2 (a record from before the tasks ran on
    every thread at once: scaled to the point's threads): loops and memory about half hidden."""
    rec = record(dtype="int8", efficiency=0.5)
    nbytes = rec["model"]["bytes"]
    rec.update(threads=2, time_s=nbytes / 24.3e9, adjacent_read_bytes_per_s=24.3e9 / 0.69,
               in_core={"validated": True, "bytes_per_s": 16.3e9, "median_bytes_per_s": 12e9})
    section = {"bandwidth": {"read": {"bytes_per_s": 36e9}}, "peak_flops": {"fp32": {"flops_per_s": PEAK}},
               "decode_attention": [rec]}
    validation.validate_section(section, LLC)
    core = rec["in_core"]
    assert core["core_time_s"] == pytest.approx(nbytes / 32.6e9)
    assert core["memory_time_s"] == pytest.approx(rec["time_s"] * 0.69)
    assert core["no_overlap_time_s"] == pytest.approx(core["core_time_s"] + core["memory_time_s"])
    assert core["full_overlap_time_s"] == pytest.approx(core["core_time_s"])  # its loops take longer than its bytes
    assert core["full_overlap_time_s"] < rec["time_s"] < core["no_overlap_time_s"]
    (short,) = section["model_validation"]["short_of_roofs"]
    assert short["in_core_fraction_of_time"] == pytest.approx(24.3 / 32.6)
    assert short_of_roofs_phrase([short]).endswith("of the compute peak, its loops alone (rows in L2) 0.75 of its time")
    for core in ({"validated": False, "bytes_per_s": None}, {"reason": "the CPU reports no L2"}):
        other = dict(rec, in_core=dict(core))
        validation.derive_in_core(other)
        assert "core_time_s" not in other["in_core"]  # nothing derived from a wrong or missing task
    on_both = dict(rec, in_core={"validated": True, "bytes_per_s": 31.9e9, "threads": 2})  # tasks on both threads at once
    validation.derive_in_core(on_both)
    assert on_both["in_core"]["core_time_s"] == pytest.approx(nbytes / 31.9e9)  # its rate as measured, not scaled
    unpaired = dict(rec, in_core={"validated": True, "bytes_per_s": 16.3e9},
                    achieved={k: v for k, v in rec["achieved"].items() if k != "fraction_of_adjacent_read"})
    validation.derive_in_core(unpaired)  # no read beside it (one summed wrong): no memory time to set it against
    assert "core_time_s" not in unpaired["in_core"]
