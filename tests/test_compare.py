"""Regression verdicts on synthetic profiles built from known distributions."""

import json
import os
import pathlib

import numpy as np
import pytest

from conftest import ROOT, run_cli, timed
from harness import compare, history
from harness.errors import HarnessError
from harness.profile import load_profile, save_profile

RNG = np.random.default_rng(42)


def rate_record(rate, spread, n=10, probe_hash="abc", bytes_per_call=1e9, pattern=None):
    rates = rate * (np.asarray(pattern) if pattern is not None else 1 + spread * RNG.standard_normal(n))
    return {"dtype": "fp64", "threads": 2, "working_set_bytes": 1,
            **timed("bytes", bytes_per_call, [float(bytes_per_call / r) for r in rates]),
            "validated": True, "warnings": [], "probe_hash": probe_hash}


def decode_record(time_s, spread, n=10):
    times = time_s * (1 + spread * RNG.standard_normal(n))
    return {"impl": "numba-fused", "dtype": "fp32", "batch": 1, "heads": 32, "kv_heads": 32, "head_dim": 128,
            "seq_len": 16384, "threads": 2, "bytes_per_call": 5.4e8, "bytes_per_s": 5.4e8 / times.min(),
            "samples_s": times.tolist(), "time_s": float(np.median(times)), "validated": True, "warnings": [],
            "probe_hash": "dec", "model": {"bytes": 5.4e8, "cache_bytes": 5.4e8, "flops": 2.7e8,
                                           "predicted_time_s": time_s * 0.9}}


def profile(bandwidth, decode=None, machine_id="m-2c", threads=2, numba="0.68.1", created="2026-11-25T08:00:00Z"):
    cpu = {"threads": threads, "bandwidth": bandwidth}
    if decode:  # a last-level cache of 32 MiB: the records' 540 MB caches are beyond 4x it
        cpu["decode_attention"] = decode
        cpu["model_validation"] = {"large_cache_bytes": 4 * 32 * 2**20}
    return {"schema_version": 1, "created_utc": created, "machine": {"id": machine_id, "cpu": {"model": "X"}},
            "software": {"python": "3.11.7", "packages": {"numba": numba}}, "devices": {"cpu": cpu}}


def verdict_of(result, metric):
    return next(r for r in result["rows"] if r["metric"] == metric)["verdict"]


def test_tight_ten_percent_drop_is_a_regression_and_a_rise_an_improvement():
    base = profile({"triad": rate_record(50e9, 0.01)})
    assert verdict_of(compare.compare(base, profile({"triad": rate_record(45e9, 0.01)})), "bandwidth.triad") == "regressed"
    assert verdict_of(compare.compare(base, profile({"triad": rate_record(55e9, 0.01)})), "bandwidth.triad") == "improved"


def test_the_same_shift_inside_wide_noise_is_noisy():
    wide = [0.6, 1.0, 1.4, 0.75, 1.25]
    base = profile({"triad": rate_record(50e9, 0, pattern=wide)})
    result = compare.compare(base, profile({"triad": rate_record(45e9, 0, pattern=wide[::-1])}))
    assert verdict_of(result, "bandwidth.triad") == "noisy"


def test_identical_samples_are_unchanged():
    rec = rate_record(50e9, 0.02)
    result = compare.compare(profile({"read": rec}), profile({"read": dict(rec)}))
    row = result["rows"][0]
    assert row["verdict"] == "unchanged" and row["change"] == 0
    assert not compare.has_regression(result)


def test_time_metrics_regress_upward():
    base = profile({}, decode=[decode_record(10e-3, 0.01)])
    slower = profile({}, decode=[decode_record(11e-3, 0.01)])
    result = compare.compare(base, slower)
    name = "decode.numba-fused.fp32.B1.H32.KV32.D128.S16384.time"
    assert verdict_of(result, name) == "regressed"
    assert verdict_of(compare.compare(slower, base), name) == "improved"


def test_a_model_error_moves_in_points_not_as_a_ratio():
    def erring(error):  # samples 1% apart around `error` above the prediction
        rec = decode_record(10e-3, 0.01)
        rec["model"]["predicted_time_s"] = float(np.median(rec["samples_s"])) / (1 + error)
        return profile({}, decode=[rec])

    name = "decode.numba-fused.fp32.B1.H32.KV32.D128.S16384.abs_model_error"
    doubled = next(r for r in compare.compare(erring(0.02), erring(0.04))["rows"] if r["metric"] == name)
    assert doubled["change_kind"] == "difference" and doubled["change"] == pytest.approx(0.02, abs=0.002)
    assert doubled["verdict"] == "unchanged"  # +100% as a ratio, 2 points under the 5-point threshold
    worse = next(r for r in compare.compare(erring(0.02), erring(0.12))["rows"] if r["metric"] == name)
    assert worse["verdict"] == "regressed" and worse["ci"][0] > 0.05
    text = compare.markdown(compare.compare(erring(0.02), erring(0.12)), "a.yaml", "b.yaml")
    assert "| +10.0 pts | [+" in text and "pts] |" in text and "| 5 pts |" in text
    time_row = next(r for r in compare.compare(erring(0.02), erring(0.12))["rows"] if r["metric"].endswith(".time"))
    assert time_row["change_kind"] == "ratio"


def test_a_model_error_is_compared_only_where_the_model_predicts_a_dram_time():
    def at(time_s, cache_bytes):  # a point predicted at 10 ms, measured at time_s
        rec = decode_record(time_s, 0.01)
        rec["model"].update(cache_bytes=cache_bytes, predicted_time_s=10e-3)
        return rec

    name = "decode.numba-fused.fp32.B1.H32.KV32.D128.S16384"
    large = 4 * 32 * 2**20
    # the whole cache in the last-level cache: 20% faster widens its error from -5% to -24%
    resident = compare.compare(profile({}, decode=[at(9.5e-3, large // 8)]),
                               profile({}, decode=[at(7.6e-3, large // 8)]))
    assert verdict_of(resident, f"{name}.time") == "improved"
    assert f"{name}.abs_model_error" not in {r["metric"] for r in resident["rows"]}
    assert not compare.has_regression(resident)
    # from DRAM the same change is the model holding less well
    dram = compare.compare(profile({}, decode=[at(9.5e-3, large)]), profile({}, decode=[at(7.6e-3, large)]))
    assert verdict_of(dram, f"{name}.abs_model_error") == "regressed"
    # a section whose validation found no point beyond 4x the last-level cache compares no model error
    unvalidated = profile({}, decode=[at(9.5e-3, large)])
    unvalidated["devices"]["cpu"]["model_validation"] = {"finding": "no validated decode point has a cache of ..."}
    assert not [m for m in compare.section_metrics(unvalidated["devices"]["cpu"]) if m.endswith(".abs_model_error")]


def test_memory_drift_between_runs_moves_decode_time_but_not_its_fraction_of_the_adjacent_read():
    def paired(time_s, efficiency):  # each sample moved `efficiency` of the read taken right before it
        rec = decode_record(time_s, 0.01)
        rec["reads_before_samples_bytes_per_s"] = [5.4e8 / t / efficiency for t in rec["samples_s"]]
        return rec

    base = profile({}, decode=[paired(10e-3, 0.85)])
    drifted = profile({}, decode=[paired(13e-3, 0.85)])  # the host's memory 30% slower, same kernel
    name = "decode.numba-fused.fp32.B1.H32.KV32.D128.S16384"
    result = compare.compare(base, drifted)
    assert verdict_of(result, f"{name}.time") == "regressed"
    assert verdict_of(result, f"{name}.fraction_of_adjacent_read") == "unchanged"
    worse = compare.compare(base, profile({}, decode=[paired(13e-3, 0.65)]))  # the kernel itself slower
    assert verdict_of(worse, f"{name}.fraction_of_adjacent_read") == "regressed"
    unpaired = profile({}, decode=[decode_record(10e-3, 0.01)])  # a profile from before reads were paired
    assert f"{name}.fraction_of_adjacent_read" not in compare.metric_samples(unpaired)


def test_a_changed_probe_is_not_comparable_and_missing_metrics_are_said():
    result = compare.compare(profile({"copy": rate_record(50e9, 0.01, probe_hash="old"), "add": rate_record(1e9, 0.01)}),
                             profile({"copy": rate_record(40e9, 0.01, probe_hash="new"), "scale": rate_record(1e9, 0.01)}))
    rows = {r["metric"]: r for r in result["rows"]}
    assert rows["bandwidth.copy"]["verdict"] == "not comparable" and "probe hash" in rows["bandwidth.copy"]["reason"]
    assert rows["bandwidth.add"]["reason"] == "only in the base profile"
    assert rows["bandwidth.scale"]["reason"] == "only in the new profile"
    text = compare.markdown(result, "a.yaml", "b.yaml")  # one line per side, not a row per metric
    assert "Not comparable, only in the base profile (1): `bandwidth.add`" in text and "| bandwidth.add |" not in text
    assert "Not comparable, only in the new profile (1): `bandwidth.scale`" in text
    assert "| not comparable | bandwidth.copy |" in text and "probe hash" in text


def test_a_device_profiled_in_one_run_only_is_named_once_not_metric_by_metric():
    """`--device all` against `--device cpu`: gpu0's metrics are one device missing from the new
    profile; a metric missing beside it is still named."""
    base = profile({"copy": rate_record(50e9, 0.01), "add": rate_record(1e9, 0.01)})
    base["devices"]["gpu0"] = {"bandwidth": {"copy": rate_record(3e12, 0.01), "read": rate_record(3e12, 0.01)}}
    result = compare.compare(base, profile({"copy": rate_record(50e9, 0.01)}))
    assert result["devices_only_in"] == {"base": ["gpu0"], "new": []}
    text = compare.markdown(result, "a.yaml", "b.yaml")
    assert ("Not comparable, only in the base profile (3): every metric of device `gpu0` (2: the new profile has no "
            "gpu0), `bandwidth.add`") in text and "gpu0.bandwidth.copy" not in text
    flipped = compare.markdown(compare.compare(profile({}), base), "b.yaml", "a.yaml")  # the CPU has no prefix
    assert "only in the new profile (4): every metric of device `gpu0` (2: the base profile has no gpu0), `bandwidth.add`, " \
           "`bandwidth.copy`" in flipped
    assert compare.metric_device("gpu12.bandwidth.read") == "gpu12" and compare.metric_device("gpuish.x") == "cpu"
    base["devices"]["gpu0"]["gpu"] = {"name": "H100", "ecc_mode": 1, "mig_mode": None}
    cells = {label: (b, n) for label, b, n in compare.difference_cells(compare.compare(base, profile({})))}
    assert cells["gpu0"] == ("H100", "n/a") and cells["gpu0 ECC mode"] == ("on", "n/a")  # not "not supported"
    flipped = {label: (b, n) for label, b, n in compare.difference_cells(compare.compare(profile({}), base))}
    assert flipped["gpu0 ECC mode"] == ("n/a", "on")


def test_a_kernel_whose_output_turned_wrong_is_a_regression_not_a_missing_metric(tmp_path):
    decode = decode_record(0.02, 0.01)
    base = profile({"triad": rate_record(50e9, 0.01), "read": rate_record(60e9, 0.01)}, decode=[decode])
    new = profile({"triad": dict(rate_record(50e9, 0.01), validated=False, error="triad: 3 of 1000 elements differ",
                                 bytes_per_s=None, median_bytes_per_s=None),
                   "read": rate_record(60e9, 0.01)},
                  decode=[dict(decode, validated=False, error="rel_error 0.3 > tolerance 0.01")])
    result = compare.compare(base, new)
    rows = {r["metric"]: r for r in result["rows"]}
    assert rows["bandwidth.triad"]["verdict"] == "wrong output" and "3 of 1000 elements differ" in rows["bandwidth.triad"]["reason"]
    time_row = rows["decode.numba-fused.fp32.B1.H32.KV32.D128.S16384.time"]
    assert time_row["verdict"] == "wrong output" and "rel_error 0.3" in time_row["reason"]
    assert "decode.numba-fused.fp32.B1.H32.KV32.D128.S16384.abs_model_error" not in rows  # said once, by .time
    assert compare.has_regression(result) and rows["bandwidth.read"]["verdict"] == "unchanged"
    text = compare.markdown(result, "a", "b")
    assert "- verdicts: 2 wrong output" in text and text.index("| wrong output |") < text.index("| unchanged |")
    back = compare.compare(new, base)  # the base run was the wrong one: nothing to measure a change from
    assert {r["metric"]: r for r in back["rows"]}["bandwidth.triad"]["reason"].startswith("the base run's output check failed")
    assert not compare.has_regression(back)
    real = load_profile(os.path.join(ROOT, "profiles", "intel-xeon-family6-model207-2c.yaml"))
    real["devices"]["cpu"]["bandwidth"]["triad"].update(validated=False, error="triad: 3 of 1000 elements differ",
                                                         bytes_per_s=None, median_bytes_per_s=None)
    wrong = tmp_path / "wrong.yaml"
    save_profile(real, str(wrong))
    proc = run_cli("compare", os.path.join(ROOT, "profiles", "intel-xeon-family6-model207-2c.yaml"), str(wrong))
    assert proc.returncode == 1 and "| wrong output | bandwidth.triad |" in proc.stdout


def test_machine_and_software_differences_are_listed():
    result = compare.compare(profile({}, machine_id="a-2c", threads=2, numba="0.68.1"),
                             profile({}, machine_id="b-8c", threads=8, numba="0.69.0"))
    labels = {d[0] for d in result["differences"]}
    assert {"machine id", "threads used", "package numba"} <= labels
    assert result["same_machine"] is False
    text = compare.markdown(result, "a.yaml", "b.yaml")
    assert "two different machines" in text and "package numba" in text
    quick = profile({})
    quick["devices"]["cpu"]["quick"] = True
    full = profile({})
    full["devices"]["cpu"]["quick"] = False
    assert ["quick run", False, True] in [list(d) for d in compare.identity_differences(full, quick)]
    tuned = profile({})
    tuned["machine"]["cpu"]["clock_settings"] = {"governor": "performance", "turbo": False}
    full["machine"]["cpu"]["clock_settings"] = {"governor": "powersave", "turbo": True}
    diffs = [list(d) for d in compare.identity_differences(full, tuned)]
    assert ["cpufreq governor", "powersave", "performance"] in diffs and ["cpufreq turbo", True, False] in diffs
    full["machine"]["cpu"]["clock_settings"]["scaling_max_hz"] = 2e9
    text = compare.markdown(compare.compare(full, tuned), "a.yaml", "b.yaml")
    assert "| cpufreq OS clock cap | 2.00 GHz | n/a |" in text and "| cpufreq turbo | on | off |" in text
    assert compare.identity_text("OpenMP affinity", {"OMP_PROC_BIND": "spread", "OMP_PLACES": "cores"}) == (
        "OMP_PROC_BIND=spread, OMP_PLACES=cores")  # settings, not a Python dict
    assert compare.identity_text("transparent huge pages", None) == "n/a"
    assert compare.identity_text("SIMD", ["avx2", "fma"]) == "avx2, fma"
    assert [compare.identity_text("gpu0 ECC mode", m) for m in (1, 0, None)] == ["on", "off", "not supported"]


def test_each_runs_own_warnings_head_the_report():
    drifted = profile({"read": rate_record(35e9, 0.01)})
    drifted["devices"]["cpu"]["warnings"] = ["the hierarchy sweep's DRAM level (59.6 GB/s) and bandwidth.read (34.7 "
                                             "GB/s), the same reads beyond the caches, differ 1.72x"]
    result = compare.compare(profile({"read": rate_record(35e9, 0.01)}), drifted)
    assert result["run_warnings"] == {"base": [], "new": [("cpu", drifted["devices"]["cpu"]["warnings"][0])]}
    text = compare.markdown(result, "a.yaml", "b.yaml")
    assert "## Warnings about the runs" in text
    assert "- new (cpu): the hierarchy sweep's DRAM level (59.6 GB/s) and bandwidth.read (34.7 GB/s)" in text
    quiet = compare.compare(profile({"read": rate_record(35e9, 0.01)}), profile({"read": rate_record(35e9, 0.01)}))
    assert "Warnings about the runs" not in compare.markdown(quiet, "a.yaml", "b.yaml")


def clocked(cpu_clock_hz, gpu_clock_hz=None, steal=0.0):
    doc = profile({"read": rate_record(35e9, 0.01) | {"steal_fraction": steal, "other_load_fraction": 0.02}})
    doc["devices"]["cpu"]["peak_flops"] = {"fp32": rate_record(3e11, 0.01) | {"implied_clock_hz": cpu_clock_hz}}
    if gpu_clock_hz:
        doc["devices"]["gpu0"] = {"gpu": {"name": "H100"}, "telemetry": {"peak": {"sm_clock_hz": {"median": gpu_clock_hz}}}}
    return doc


def test_a_clock_that_moved_between_the_runs_is_shown_and_said():
    result = compare.compare(clocked(2.75e9, 1.98e9, steal=0.0), clocked(3.84e9, 1.755e9, steal=0.1))
    rows = {(d, k): (b, n) for d, k, b, n in result["conditions"]}
    assert rows[("cpu", compare.CPU_CLOCK)] == (2.75e9, 3.84e9)
    assert rows[("cpu", "CPU steal")] == (0.0, 0.1)
    assert rows[("cpu", "other load")] == (0.02, 0.02)
    assert rows[("gpu0", compare.GPU_CLOCK)] == (1.98e9, 1.755e9)
    assert [(d, round(c, 3)) for d, c in result["clock_moved"]] == [("cpu", 0.396), ("gpu0", -0.114)]
    text = compare.markdown(result, "a.yaml", "b.yaml")
    assert "| cpu | clock implied by the fp32 FMA peak | 2.75 GHz | 3.84 GHz |" in text
    assert "| cpu | CPU steal | 0.0% | 10.0% |" in text and "medians over each profile's measurements" in text
    assert "The cpu's clock differs by +40% between the runs" in text
    assert "The gpu0's clock differs by -11% between the runs" in text
    doc = compare.as_json(result, "a.yaml", "b.yaml")
    assert {"device": "cpu", "condition": compare.CPU_CLOCK, "base": 2.75e9, "new": 3.84e9} in doc["conditions"]
    assert doc["clock_moved"][0] == {"device": "cpu", "change": pytest.approx(0.396, abs=1e-3)}
    steady = compare.compare(clocked(2.75e9), clocked(2.8e9))  # under the 5% threshold
    assert steady["clock_moved"] == [] and "clock differs" not in compare.markdown(steady, "a.yaml", "b.yaml")
    bare = compare.compare(profile({}), profile({}))  # nothing recorded: no table
    assert bare["conditions"] == [] and "Run conditions" not in compare.markdown(bare, "a.yaml", "b.yaml")


def test_two_guests_of_one_name_are_told_apart_by_family_and_model():
    """The committed Zen 5 and Zen 4 VM profiles both say 'AMD EPYC', 2 cores: their family, model
    number and SIMD features are what a reader needs to see differ."""
    zen5, zen4 = (load_profile(os.path.join(ROOT, "profiles", f"amd-epyc-{z}-2c.yaml")) for z in ("zen5", "zen4"))
    diffs = {label: (b, n) for label, b, n in compare.compare(zen5, zen4)["differences"]}
    assert diffs["CPU family"] == (26, 25) and diffs["CPU model number"] == (2, 17)
    assert "avx_vnni" in diffs["SIMD"][0] and "avx_vnni" not in diffs["SIMD"][1]
    assert "CPU model" not in diffs and "cores" not in diffs
    # their MemTotal differs by 224 KiB (25275973632 and 25276203008 bytes): the same memory, not listed
    assert "memory bytes" not in diffs
    zen4["machine"]["cpu"]["memory_bytes"] //= 2
    assert "memory bytes" in {d[0] for d in compare.identity_differences(zen5, zen4)}


def test_sizes_in_metric_names_sort_as_numbers_in_the_rows_and_the_report():
    bandwidth = {k: rate_record(50e9, 0.01) for k in ("triad", "read")}
    doc = profile(bandwidth)
    doc["devices"]["cpu"]["hierarchy"] = [dict(rate_record(90e9, 0.01), working_set_bytes=ws)
                                          for ws in (131072, 16384, 1048576)]
    result = compare.compare(doc, doc)
    names = [r["metric"] for r in result["rows"]]
    assert [n for n in names if n.startswith("hierarchy.")] == ["hierarchy.16384", "hierarchy.131072", "hierarchy.1048576"]
    text = compare.markdown(result, "a", "b")
    assert text.index("hierarchy.16384 ") < text.index("hierarchy.131072 ") < text.index("hierarchy.1048576 ")
    assert "| hierarchy.131072 (131.1 kB) |" in text and compare.metric_label("gpu0.hierarchy.1048576") == (
        "gpu0.hierarchy.1048576 (1.0 MB)")
    assert compare.metric_label("bandwidth.read") == "bandwidth.read"


def test_per_metric_thresholds_from_a_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("threshold_pct: 5\nmetrics:\n  'bandwidth.tri*': 20\n")
    loaded = compare.load_config(str(cfg))
    base, new = profile({"triad": rate_record(50e9, 0.01)}), profile({"triad": rate_record(45e9, 0.01)})
    result = compare.compare(base, new, 0.05, loaded["metrics"])
    assert verdict_of(result, "bandwidth.triad") == "unchanged" and result["unmatched_patterns"] == []
    misspelt = compare.compare(base, new, 0.05, {"bandwith.*": 20, "bandwidth.tri*": 20})
    assert misspelt["unmatched_patterns"] == ["bandwith.*"]
    assert "match no metric (no threshold set by them): `bandwith.*`" in compare.markdown(misspelt, "a", "b")
    for bad, needle in (("metrics:\n  x: -3\n", "non-negative"), ("threshold_pct: .nan\n", "non-negative"),
                        ("metrics:\n  x: .inf\n", "non-negative"),
                        ("metrics:\n  123: 10\n", "metrics pattern 123 must be a string"),  # was a TypeError from fnmatch
                        ("metrics:\n  null: 10\n", "metrics pattern None must be a string"),
                        ("treshold_pct: 5\n", "unknown key 'treshold_pct': valid keys are metrics, threshold_pct")):
        cfg.write_text(bad)
        with pytest.raises(HarnessError, match=needle):
            compare.load_config(str(cfg))


def test_a_thousand_metrics_compare(tmp_path):
    base = profile({f"k{i}": rate_record(50e9, 0.02) for i in range(1000)})
    new = profile({f"k{i}": rate_record(50e9, 0.02) for i in range(1000)})
    result = compare.compare(base, new)
    assert len(result["rows"]) == 1000 and not compare.has_regression(result)


def write(tmp_path, name, doc):
    path = tmp_path / name
    save_profile(doc, path)
    return str(path)


def test_history_headlines_each_measured_device_cpu_first():
    gpu_only = profile({})
    gpu_only["devices"] = {"gpu10": {"bandwidth": {"triad": rate_record(3e12, 0.01)}},
                           "gpu2": {"bandwidth": {"read": rate_record(3e12, 0.01)}}}
    assert history.headline_metrics([("p", gpu_only)]) == ["gpu2.bandwidth.read", "gpu10.bandwidth.triad"]
    both = profile({"triad": rate_record(50e9, 0.01)})
    both["devices"]["gpu0"] = {"bandwidth": {"triad": rate_record(3e12, 0.01)}}
    assert history.headline_metrics([("a", gpu_only), ("b", both)]) == [
        "bandwidth.triad", "gpu0.bandwidth.triad", "gpu2.bandwidth.read", "gpu10.bandwidth.triad"]
    assert history.headline_metrics([("p", profile({}))]) == list(history.HEADLINE)  # nothing measured: the error names it


def test_cli_exit_codes(tmp_path):
    base = write(tmp_path, "base.yaml", profile({"triad": rate_record(50e9, 0.01)}))
    same = write(tmp_path, "same.yaml", profile({"triad": rate_record(50e9, 0.01)}))
    worse = write(tmp_path, "worse.yaml", profile({"triad": rate_record(40e9, 0.01)}))
    assert run_cli("compare", base, same).returncode == 0
    out = tmp_path / "report.md"
    proc = run_cli("compare", base, worse, "--out", str(out))
    assert proc.returncode == 1 and "| regressed | bandwidth.triad |" in proc.stdout
    assert out.read_text().startswith("# Regression report")


def test_cli_json_carries_every_verdict_and_the_exit_status(tmp_path):
    base = write(tmp_path, "base.yaml", profile({"triad": rate_record(50e9, 0.01)}))
    worse_doc = profile({"triad": rate_record(40e9, 0.01)}, numba="0.69.0")
    worse_doc["devices"]["cpu"]["warnings"] = ["the threads shared cores"]
    worse = write(tmp_path, "worse.yaml", worse_doc)
    out = tmp_path / "verdicts.json"
    proc = run_cli("compare", base, worse, "--json", "--out", str(out))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc == json.loads(out.read_text()) and doc["regressed"] is True and (doc["base"], doc["new"]) == (base, worse)
    (row,) = doc["rows"]
    assert row["metric"] == "bandwidth.triad" and row["verdict"] == "regressed" and row["unit"] == "B/s"
    assert row["change"] == pytest.approx(-0.2, abs=0.02) and row["ci"][0] < row["change"] < row["ci"][1]
    assert {"field": "package numba", "base": "0.68.1", "new": "0.69.0"} in doc["differences"]
    assert doc["run_warnings"] == [{"side": "new", "device": "cpu", "warning": "the threads shared cores"}]
    assert doc["conditions"] == [] and doc["clock_moved"] == []
    same = json.loads(run_cli("compare", base, base, "--json").stdout)
    assert same["regressed"] is False and same["rows"][0]["verdict"] == "unchanged"


def test_cli_bad_input_changes_no_file(tmp_path):
    base = write(tmp_path, "base.yaml", profile({"triad": rate_record(50e9, 0.01)}))
    truncated = tmp_path / "t.yaml"
    truncated.write_text(pathlib.Path(base).read_text()[:200])
    before = truncated.read_text()
    out = tmp_path / "report.md"
    proc = run_cli("compare", base, str(truncated), "--out", str(out))
    assert proc.returncode == 2 and str(truncated) in proc.stderr
    assert not out.exists() and truncated.read_text() == before
    assert run_cli("compare", base, base, "--threshold", "-1").returncode == 2
    bad_cfg = tmp_path / "cfg.yaml"
    bad_cfg.write_text("metrics: [1, 2]\n")
    proc = run_cli("compare", base, base, "--config", str(bad_cfg))
    assert proc.returncode == 2 and "malformed" in proc.stderr
    bad_cfg.write_text("metrics:\n  'bandwith.*': 20\n")
    proc = run_cli("compare", base, base, "--config", str(bad_cfg))
    assert proc.returncode == 0 and "pattern 'bandwith.*' matches no metric" in proc.stderr


def test_values_are_written_in_their_units():
    assert compare.value_text(24.2e9, "B/s") == "24.2 GB/s" and compare.value_text(6.2244e-3, "s") == "6.224 ms"
    assert compare.value_text(937e9, "OP/s") == "937.0 GOP/s" and compare.value_text(0.8123, "") == "0.812"
    assert compare.value_text(None, "B/s") == "n/a" and compare.value_text(None, None) == "n/a"
    assert compare.value_text(12.34, "FLOP/B") == "12.3 FLOP/B" and compare.value_text(35.2, "OP/B") == "35.2 OP/B"


def test_history_table_png_and_steps(tmp_path):
    folder = tmp_path / "profiles"
    hist = folder / "history" / "m-2c"
    hist.mkdir(parents=True)
    for i, rate in enumerate([50e9, 50.2e9, 40e9]):
        doc = profile({"read": rate_record(rate, 0.005)}, created=f"2026-11-2{i + 1}T08:00:00Z")
        if i == 2:  # the last run's clock, as its FMA peak implied it: shown beside its median
            doc["devices"]["cpu"]["peak_flops"] = {"fp32": {
                "dtype": "fp32", "threads": 2, "flops_per_call": 3e8, "flops_per_s": 3e11, "median_flops_per_s": 3e11,
                "samples_s": [1e-3] * 3, "validated": True, "warnings": [], "implied_clock_hz": 2.75e9}}
        save_profile(doc, str(hist / f"2026112{i + 1}T080000Z.yaml"))
    proc = run_cli("history", "m-2c", "--metric", "bandwidth.read", "--profiles", str(folder), "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("  2026")]
    assert len(lines) == 3 and "regressed" in lines[2] and "regressed" not in lines[1]
    assert "at 2.75 GHz" in lines[2] and "GHz" not in lines[0]
    assert " GB/s" in lines[0] and "e+10" not in lines[0]  # in its unit, not 5.001e+10
    assert (tmp_path / "r" / "m-2c" / "history-bandwidth.read.png").exists()
    docs, _ = history.profiles_of("m-2c", str(folder))
    for row, (_, doc) in zip(history.trend(docs, "bandwidth.read"), docs):  # the median compare reports
        (reported,) = [r for r in compare.compare(doc, doc)["rows"] if r["metric"] == "bandwidth.read"]
        assert row["median"] == pytest.approx(reported["base"])
    proc = run_cli("history", "m-2c", "--metric", "bandwidth.raed", "--profiles", str(folder), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "metric 'bandwidth.raed' is in none of the profiles of m-2c" in proc.stderr
    assert "valid are balance.fp32, bandwidth.read, peak_flops.fp32\n" in proc.stderr  # every metric the profiles have
    proc = run_cli("history", "m-2c", "--metric", "peak_flops.fp32", "--metric", "bandwidth.read", "--profiles",
                   str(folder), "--out", str(tmp_path / "r2"))  # each metric given, in its order
    assert proc.returncode == 0 and proc.stdout.index("peak_flops.fp32") < proc.stdout.index("bandwidth.read")
    assert {p.name for p in (tmp_path / "r2" / "m-2c").iterdir()} == {"history-peak_flops.fp32.png",
                                                                     "history-bandwidth.read.png"}
    proc = run_cli("history", "nobody", "--profiles", str(folder))
    assert proc.returncode == 2 and "no readable profiles of machine 'nobody'" in proc.stderr
    assert ": machines there are m-2c\n" in proc.stderr  # the ids it could have meant
    proc = run_cli("history", "m-2c", "--profiles", str(hist / "20261121T080000Z.yaml"))
    assert proc.returncode == 2 and "is not a folder: give the folder `harness profile` writes into" in proc.stderr
    proc = run_cli("history", "m-2c", "--profiles", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "nowhere does not exist: give the folder" in proc.stderr
    (hist / "20261124T080000Z.yaml").write_text("schema_version: 1\nmachine: [")  # one cut short: left out, named
    proc = run_cli("history", "m-2c", "--metric", "bandwidth.read", "--profiles", str(folder), "--out", str(tmp_path / "r"))
    assert proc.returncode == 0 and len([l for l in proc.stdout.splitlines() if l.startswith("  2026")]) == 3
    assert "left out of the trend: profile" in proc.stderr and "20261124T080000Z.yaml is not valid YAML" in proc.stderr
    # a probe whose code changed between two profiles: the step says so, not a silent jump
    doc = profile({"read": rate_record(30e9, 0.005, probe_hash="new")}, created="2026-11-25T08:00:00Z")
    save_profile(doc, str(folder / "m-2c.yaml"))
    docs, _ = history.profiles_of("m-2c", str(folder))
    rows = history.trend(docs, "bandwidth.read")
    assert rows[-1]["step"] == "probe changed: not comparable with the point before"
    assert {r["unit"] for r in rows} == {"B/s"}  # the PNG's axis label (its title names the metric)
    doc["devices"]["cpu"]["bandwidth"]["read"].update(validated=False, error="read sum: 1.0 where 2.0 was due")
    rows = history.trend([("p", doc)], "bandwidth.read")
    assert rows[0]["median"] is None and rows[0]["step"] == "wrong output: read sum: 1.0 where 2.0 was due"


def test_history_shows_a_run_once_where_a_restored_profile_left_its_copy_in_the_history(tmp_path):
    """`harness profile` moved the current profile into the history, and `git checkout` brought it back
    over the new run's: the same run in both places is one point of the trend, not two."""
    folder = tmp_path / "profiles"
    hist = folder / "history" / "m-2c"
    hist.mkdir(parents=True)
    first = profile({"read": rate_record(50e9, 0.005)}, created="2026-11-21T08:00:00Z")
    current = profile({"read": rate_record(40e9, 0.005)}, created="2026-11-22T08:00:00Z")
    save_profile(first, str(hist / "20261121T080000Z.yaml"))
    save_profile(current, str(hist / "20261122T080000Z.yaml"))
    save_profile(current, str(folder / "m-2c.yaml"), keep_history=False)
    docs, _ = history.profiles_of("m-2c", str(folder))
    assert [path for path, _ in docs] == [str(hist / "20261121T080000Z.yaml"), str(folder / "m-2c.yaml")]
    rows = history.trend(docs, "bandwidth.read")
    assert [r["created_utc"] for r in rows] == ["2026-11-21T08:00:00Z", "2026-11-22T08:00:00Z"]
    assert "regressed" in rows[1]["step"]
    # a different run that happens to carry the same time (another host's clock) is its own point
    other = profile({"read": rate_record(45e9, 0.005)}, created="2026-11-22T08:00:00Z")
    save_profile(other, str(hist / "20261122T080000Z.yaml"))
    assert len(history.profiles_of("m-2c", str(folder))[0]) == 3


PROBE_SOURCE = '''"""A probe."""

SCALE = 2  # {comment}


def run(loops):
    """{doc}"""
    return loops * SCALE
'''


def probe_from_source(path, source, monkeypatch):
    """A Workload whose run function is `source`'s, written to `path` and imported as a probe module is."""
    import importlib.util
    import sys

    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, path.stem, module)
    return probe_workload(module.run)


def test_probe_hash_follows_code_not_comments_or_docstrings(tmp_path, monkeypatch):
    from harness.workload import probe_hash

    path = tmp_path / "probe_edited.py"
    w = probe_from_source(path, PROBE_SOURCE.format(comment="twice", doc="Loops."), monkeypatch)
    before = probe_hash(w)
    path.write_text("\n\n" + PROBE_SOURCE.format(comment="doubled", doc="Runs the loops."))
    assert probe_hash(w) == before  # comments, docstrings and line numbers are not code
    path.write_text(PROBE_SOURCE.replace("SCALE = 2", "SCALE = 3").format(comment="twice", doc="Loops."))
    assert probe_hash(w) != before


def probe_workload(run, dtype="fp32"):
    from harness.workload import Workload

    return Workload(name="x", run=run, check=lambda: None, poison=lambda: None, threads=1, dtype=dtype)


def hash_moves(w, module, monkeypatch):
    """Whether w's probe hash changes when `module`'s code changes (its file swapped for another's)."""
    from harness.workload import probe_hash

    before = probe_hash(w)
    with monkeypatch.context() as m:
        m.setattr(module, "__file__", __file__)
        return probe_hash(w) != before


def test_probe_hash_covers_a_probe_module_imported_whole(monkeypatch):
    # probes/cpu_stream.py takes its DRAM read kernels from `from probes import cpu_read`: that
    # module's code (the LLVM IR the kernels are built from) is the stream and hierarchy probes' too
    from probes import cpu_read, cpu_stream

    assert hash_moves(probe_workload(cpu_stream.read_workload, "fp64"), cpu_read, monkeypatch)


def test_probe_hash_follows_the_imports_to_the_end_of_the_chain(monkeypatch):
    # decode -> cpu_stream -> cpu_read -> llvm_jit: the decode probe's adjacent DRAM read kernel is
    # built by llvm_jit two imports away, and an edit there changes what decode is compared with
    from harness.workload import probe_modules
    from probes import cpu_decode, cpu_read, cpu_stream, llvm_jit

    w = probe_workload(cpu_decode.run_decode)
    assert {cpu_stream, cpu_read, llvm_jit} <= set(probe_modules(w))
    assert hash_moves(w, llvm_jit, monkeypatch)


LAZY_PROBE = """def run(loops):
    from probes import cpu_read

    return cpu_read
"""


def test_probe_hash_covers_a_probe_module_imported_inside_a_function(tmp_path, monkeypatch):
    from probes import cpu_read

    assert hash_moves(probe_from_source(tmp_path / "probe_lazy.py", LAZY_PROBE, monkeypatch), cpu_read, monkeypatch)


def test_the_dot_probes_hash_covers_the_chains_it_shares_and_not_the_fma_peaks_code(monkeypatch):
    # cpu_dot and cpu_peak share llvm_jit (the chains' IR, threads and check): an edit there is both
    # probes', an edit of cpu_peak's FMA chains is not the dot products' (it took iterations from there)
    from probes import cpu_dot, cpu_peak, llvm_jit

    w = probe_workload(cpu_dot.dot_workload, "int8")
    assert not hash_moves(w, cpu_peak, monkeypatch) and hash_moves(w, llvm_jit, monkeypatch)


SNIPPET = """async def f(x, *a, k=None, **kw) -> int:
    return None
class A(B, metaclass=M):
    y: int = 1
    def g(self): ...
lam = lambda: [i async for i in x] if x else {1: 2}
"""
# ast.dump of SNIPPET on Python 3.11, the form probe hashes are taken in on every Python
SNIPPET_DUMP_311 = (
    "Module(body=[AsyncFunctionDef(name='f', args=arguments(posonlyargs=[], args=[arg(arg='x')], vararg=arg(arg='a'), "
    "kwonlyargs=[arg(arg='k')], kw_defaults=[Constant(value=None)], kwarg=arg(arg='kw'), defaults=[]), "
    "body=[Return(value=Constant(value=None))], decorator_list=[], returns=Name(id='int', ctx=Load())), "
    "ClassDef(name='A', bases=[Name(id='B', ctx=Load())], keywords=[keyword(arg='metaclass', value=Name(id='M', ctx=Load()))], "
    "body=[AnnAssign(target=Name(id='y', ctx=Store()), annotation=Name(id='int', ctx=Load()), value=Constant(value=1), "
    "simple=1), FunctionDef(name='g', args=arguments(posonlyargs=[], args=[arg(arg='self')], kwonlyargs=[], kw_defaults=[], "
    "defaults=[]), body=[Expr(value=Constant(value=Ellipsis))], decorator_list=[])], decorator_list=[]), "
    "Assign(targets=[Name(id='lam', ctx=Store())], value=Lambda(args=arguments(posonlyargs=[], args=[], kwonlyargs=[], "
    "kw_defaults=[], defaults=[]), body=IfExp(test=Name(id='x', ctx=Load()), body=ListComp(elt=Name(id='i', ctx=Load()), "
    "generators=[comprehension(target=Name(id='i', ctx=Store()), iter=Name(id='x', ctx=Load()), ifs=[], is_async=1)]), "
    "orelse=Dict(keys=[Constant(value=1)], values=[Constant(value=2)]))))], type_ignores=[])")


def test_probe_code_is_the_same_on_every_python():
    """The same probe code hashes the same on 3.10 to 3.13: ast.dump adds type_params=[] on 3.12
    and drops every empty list on 3.13, which gave every probe a new hash after a Python upgrade
    (checked on 3.10.13, 3.11.7, 3.12.1, 3.13.0: one hash of probes/ and harness/ on all four)."""
    import ast

    from harness.workload import stable_dump

    assert stable_dump(ast.parse(SNIPPET)) == SNIPPET_DUMP_311


def test_an_unknown_history_metric_is_answered_with_the_likeliest_names():
    from harness import history

    few = ["balance.fp32", "bandwidth.read"]
    assert history.metric_choices("x", few) == "balance.fp32, bandwidth.read"  # few: every one
    assert history.metric_choices("x", []) == "none (no validated measurement)"
    names = ([f"hierarchy.{1 << i}" for i in range(10, 30)] + ["bandwidth.read", "bandwidth.triad"]
             + [f"decode.numba-fused.fp32.S{s}.time" for s in (4096, 16384)])
    assert history.metric_choices("decode", names) == "decode.numba-fused.fp32.S4096.time, decode.numba-fused.fp32.S16384.time"
    assert history.metric_choices("hierarchy", names, shown=3) == "hierarchy.1024, hierarchy.2048, hierarchy.4096 and 17 more"
    assert history.metric_choices("bandwidth.raed", names).startswith("bandwidth.read")  # a misspelling: the closest
    assert history.metric_choices("nope", names) == (
        "20 hierarchy.* (as hierarchy.1024); 2 bandwidth.* (as bandwidth.read); 2 decode.* (as decode.numba-fused.fp32.S4096.time)")


def test_a_decode_points_in_core_rate_is_a_metric_and_its_failure_is_wrong_output():
    rec = {"impl": "numba-fused", "dtype": "bf16", "batch": 1, "heads": 32, "kv_heads": 32, "head_dim": 128,
           "seq_len": 262144, "validated": True, "samples_s": [0.16, 0.17], "model": {"bytes": 4e9},
           "in_core": {"validated": True, "bytes_per_call": 1 << 20, "samples_s": [1e-4, 2e-4], "probe_hash": "h"}}
    name = "decode.numba-fused.bf16.B1.H32.KV32.D128.S262144"
    samples, higher_is_better, unit, digest = compare.section_metrics({"decode_attention": [rec]})[f"{name}.in_core"]
    assert samples == [(1 << 20) / 1e-4, (1 << 20) / 2e-4] and higher_is_better and unit == "B/s" and digest == "h"
    rec["in_core"] = {**rec["in_core"], "validated": False, "error": "in-core task bf16: relative error inf exceeds 0.01"}
    assert compare.section_failures({"decode_attention": [rec]}) == {f"{name}.in_core": rec["in_core"]["error"]}
    rec["in_core"] = {"reason": "the CPU reports no L2 cache to size the in-core task by"}
    assert not [m for m in compare.section_metrics({"decode_attention": [rec]}) if m.endswith(".in_core")]


def test_a_dot_product_peak_is_a_rate_metric_with_a_balance_of_its_own():
    def rec(per_call, samples):
        return {"validated": True, "flops_per_call": per_call, "samples_s": samples, "probe_hash": "h"}
    sec = {"bandwidth": {"read": {"validated": True, "bytes_per_call": 100, "samples_s": [1.0, 2.0, 4.0],
                                  "probe_hash": "r"}},
           "peak_flops": {"fp32": rec(10, [1.0, 1.0])}, "dot_flops": {"int8": rec(80, [1.0, 2.0])},
           "tensor_flops": {"int8": rec(60, [1.0, 1.0])}}
    metrics = compare.section_metrics(sec)
    samples, higher_is_better, unit, _ = metrics["dot_flops.int8"]
    assert samples == [80.0, 40.0] and higher_is_better and unit == "OP/s"
    assert metrics["balance.dot_int8"][0] == [1.6, 0.8] and metrics["balance.dot_int8"][2] == "OP/B"  # over the median read, 50 B/s
    assert {"balance.fp32", "balance.matmul_int8", "balance.dot_int8"} <= set(metrics)
