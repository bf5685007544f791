"""A damaged or hand-edited profile is one error naming the field, on load, never a traceback from
the report, `show`, `compare`, `export`, `fleet` or `model` that reads it later."""

import copy
import glob
import os
import random
import re

import pytest

from conftest import timed
from harness import compare, export, fleet, history, model, profile, report, summary, validation
from harness.errors import HarnessError
from harness.specs import load_specs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "profile-amd-epyc-2c.yaml")
REMOVE = object()  # the field taken out
STORED = sorted(glob.glob(os.path.join(ROOT, "profiles", "*.yaml")) + glob.glob(os.path.join(ROOT, "profiles", "history", "*", "*.yaml")))


@pytest.fixture(scope="module")
def stored():
    return profile.load_profile(FIXTURE)


def at(doc, path):
    """The mapping or list holding `path`'s last step."""
    for step in path[:-1]:
        doc = doc[step]
    return doc


def write(doc, tmp_path):
    path = tmp_path / "edited.yaml"
    path.write_text(profile.dump(doc))
    return str(path)


@pytest.mark.parametrize("path", STORED, ids=os.path.basename)
def test_every_committed_profile_loads(path):
    assert profile.load_profile(path)["devices"]


@pytest.mark.parametrize("path,value,message", [
    (("devices", "cpu", "bandwidth", "read", "counters", "dram_bytes"), "many", "bandwidth.read.counters.dram_bytes must be a number, 0 or more, or null, got 'many'"),
    (("devices", "cpu", "bandwidth", "read", "counters"), "none", "bandwidth.read.counters must be a mapping"),
    (("devices", "cpu", "bandwidth", "triad", "threads"), REMOVE, "bandwidth.triad has no threads"),
    # the output check's verdict, and what it found where it failed: `show` printed "WRONG OUTPUT: None"
    # for a record without either, while the balance still took its rate
    (("devices", "cpu", "peak_flops", "fp32", "validated"), REMOVE, "peak_flops.fp32 has no validated"),
    (("devices", "cpu", "hierarchy", 0, "validated"), None, "hierarchy[0] has no validated"),
    (("devices", "cpu", "decode_attention", 0, "validated"), False, "decode_attention[0] has no error"),
    (("devices", "cpu", "peak_flops", "fp32", "validated"), False, "peak_flops.fp32 has no error"),
    # shares of the CPUs' time, which compare's run conditions print as percentages
    (("devices", "cpu", "bandwidth", "copy", "other_load_fraction"), -3, "bandwidth.copy.other_load_fraction must be a share from 0 to 1"),
    (("devices", "cpu", "thread_sweep", "triad", 0, "steal_fraction"), 1.5, "thread_sweep.triad[0].steal_fraction must be a share"),
    (("devices", "cpu", "decode_attention", 1, "seq_len"), {}, "decode_attention[1].seq_len must be a whole number, at least 1"),
    (("devices", "cpu", "decode_attention", 0, "heads"), [32], "decode_attention[0].heads must be a whole number"),
    (("devices", "cpu", "peak_flops", "fp32", "accumulators_per_thread"), -1,
     "peak_flops.fp32.accumulators_per_thread must be a whole number, at least 1"),
    (("devices", "cpu", "peak_flops", "fp32", "one_thread_flops_per_s"), "fast",  # a matmul's or dot peak's field
     "peak_flops.fp32.one_thread_flops_per_s must be a number, 0 or more"),
    (("devices", "cpu", "decode_attention", 0, "model", "cache_bytes"), None, "decode_attention[0].model has no cache_bytes"),
    (("devices", "cpu", "decode_attention", 0, "rel_error"), "tiny", "decode_attention[0].rel_error must be a number"),
    # the measured time the model is checked against, and a rate, each as its raw samples give it
    (("devices", "cpu", "decode_attention", 2, "time_s"), 1e-3, "decode_attention[2].time_s is 0.001, but the median of its samples is "),
    (("devices", "cpu", "decode_attention", 2, "bytes_per_s"), 1e12, "decode_attention[2].bytes_per_s is 1e+12, but its raw samples give "),
    # what the point's time and the section's roofs give: the model's verdict in every report
    (("devices", "cpu", "decode_attention", 2, "model_error"), 0.01, "decode_attention[2].model_error is 0.01, but the point's time and the section's roofs give "),
    (("devices", "cpu", "decode_attention", 3, "achieved", "fraction_of_bandwidth"), 0.99, "decode_attention[3].achieved.fraction_of_bandwidth is 0.99, but "),
    (("devices", "cpu", "decode_attention", 3, "model", "predicted_time_s"), None, "decode_attention[3].model.predicted_time_s is None, but "),
    (("devices", "cpu", "decode_attention", 0, "model", "regime"), "compute-bound", "decode_attention[0].model.regime is 'compute-bound', but "),
    # the verdict a report states, and the figures it is stated from
    (("devices", "cpu", "model_validation", "per_dtype", "fp32", "model_error"), 0.05, "model_validation.per_dtype.fp32 holds figures no validated "),
    (("devices", "cpu", "model_validation", "per_dtype", "int8", "seq_len"), 4096, "per_dtype.int8 holds figures no validated numba-fused int8 point at seq_len 4096 gives"),
    (("devices", "cpu", "model_validation", "model_holds"), False, "model_validation.model_holds is False, but its headline point's model error "),
    # the dtype, GQA and batch findings: each a ratio of two validated points' times and bytes
    (("devices", "cpu", "model_validation", "dtype_ratios", "bf16_vs_fp32", "measured_time_ratio"), 0.5, "model_validation.dtype_ratios.bf16_vs_fp32 holds a ratio no pair of validated decode points gives"),
    (("devices", "cpu", "model_validation", "gqa", "model_bytes_ratio"), 0.3, "model_validation.gqa holds a ratio no pair"),
    (("devices", "cpu", "model_validation", "batch", "measured_over_model"), 1.0, "model_validation.batch holds a ratio no pair"),
    (("devices", "cpu", "model_validation", "gqa", "time_ratio_at_equal_read"), 1.0, "model_validation.gqa holds a ratio no pair"),
    (("devices", "cpu", "model_validation", "dtype_ratios", "int8_vs_fp32", "seq_len"), 4096, "dtype_ratios.int8_vs_fp32 holds a ratio no pair of validated decode points gives (its numerator: numba-fused at seq_len 4096, batch 1; "),
    (("devices", "cpu", "bandwidth", "read", "samples_s"), [], "bandwidth.read.samples_s must be a list of seconds, at least one"),
    (("devices", "cpu", "balance", "fp32"), 99.0, "devices.cpu.balance.fp32 is 99, but the section's rate over its read bandwidth is "),
    (("devices", "cpu", "model_validation", "per_dtype", "fp32", "fraction_of_bandwidth"), {}, "per_dtype.fp32.fraction_of_bandwidth must be a number"),
    (("devices", "cpu", "model_validation", "per_dtype", "fp32", "model_error"), None, "per_dtype.fp32 has no model_error"),
    (("devices", "cpu", "model_validation", "gqa", "measured_time_ratio"), "1.2", "model_validation.gqa.measured_time_ratio must be a number"),
    (("devices", "cpu", "hierarchy_levels", "L1"), 0, "hierarchy_levels.L1 must be a mapping"),
    # a level's bandwidth is a roof of the balance table: the median of its points' best rates
    (("devices", "cpu", "hierarchy_levels", "L2", "bytes_per_s"), 1e12, "hierarchy_levels.L2.bytes_per_s is 1000000000000.0, but the sweep's points inside its range give "),
    (("devices", "cpu", "hierarchy_levels", "L3", "points"), 9, "hierarchy_levels.L3.points is 9, but the sweep's points inside its range give "),
    (("devices", "cpu", "hierarchy", 1, "median_bytes_per_s"), REMOVE, "hierarchy[1] has no median_bytes_per_s"),
    (("devices", "cpu", "theoretical", "flops_per_s"), 1.0, "theoretical.flops_per_s must be a mapping of names to numbers"),
    (("machine", "cpu", "caches", 0, "size_bytes"), {"k": 1}, "machine.cpu.caches[0].size_bytes must be a number, 0 or more"),
    (("machine", "cpu", "simd", 0), 3, "machine.cpu.simd must be a list of strings"),
    (("machine", "cpu", "frequency"), -1.5, "machine.cpu.frequency must be a mapping"),
    (("machine", "cpu", "cores"), 0, "machine.cpu.cores must be a whole number, at least 1"),
    (("software", "packages"), "numba", "software.packages must be a mapping"),
    # a GPU's bus width names its memory (HBM or GDDR)
    (("machine", "gpus"), [{"index": 0, "memory_bus_width_bits": [5120]}], "machine.gpus[0].memory_bus_width_bits must be a number, 0 or more, or null"),
    (("machine", "gpus"), [{"index": 0, "mig_mode": {"on": 1}}], "machine.gpus[0].mig_mode must be a number or null"),  # NVML's 1/0
])
def test_a_wrong_field_is_named_on_load(stored, tmp_path, path, value, message):
    doc = copy.deepcopy(stored)
    holder = at(doc, path)
    if value is REMOVE:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    file = write(doc, tmp_path)
    with pytest.raises(HarnessError) as e:
        profile.load_profile(file)
    assert f"profile {file} is malformed: " in str(e.value) and message in str(e.value)


def test_fields_of_other_harness_versions_are_left_alone(stored, tmp_path):
    doc = copy.deepcopy(stored)
    doc["devices"]["cpu"]["bandwidth"]["read"]["numa_node"] = 0  # a newer harness's
    doc["machine"]["cpu"]["microcode"] = "0x2b000603"
    for i, rec in enumerate(doc["devices"]["cpu"]["decode_attention"]):  # profiles of 2026-11-25: a pair, or null
        rec["adjacent_reads_bytes_per_s"] = [9.8e10, 8.7e10] if i % 2 else None
    assert profile.load_profile(write(doc, tmp_path)) == doc


def edits_of(stored):
    """(path, edit) of every field, mapping and list of `stored` (a list's first two items, and the first
    item holding a field that those two lack: a decode point's in_core, a short_of_roofs point's loops):
    removed, or set to null, text, -1, 0, an empty list or an empty mapping."""
    paths, shapes, stack = [], set(), [((), (), False, stored)]
    while stack:
        path, shape, beyond, node = stack.pop()  # beyond: under a list's third item or later
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            here = shape + ("[]" if isinstance(node, list) else key,)  # the field's place, whichever item holds it
            further = beyond or (isinstance(node, list) and key >= 2)
            if not further or here not in shapes:
                paths.append(path + (key,))
            shapes.add(here)
            stack.append((path + (key,), here, further, value))
    return [(path, edit) for path in paths for edit in (REMOVE, None, "x", -1, 0, [], {})]


def edited(stored, path, edit):
    """`stored` with one edit of edits_of: the containers along `path` copied, the rest shared."""
    doc = holder = copy.copy(stored)
    for step in path[:-1]:
        holder[step] = copy.copy(holder[step])
        holder = holder[step]
    if edit is REMOVE:
        del holder[path[-1]]
    else:
        holder[path[-1]] = edit
    return doc


def quick_readers(doc, specs):
    """The readers of one stored profile that take milliseconds: the report, `show`, export, model."""
    report.markdown(report.report_data(doc, specs))
    report.index_rows([doc], specs)
    summary.profile_lines(doc)
    for device, sec in doc["devices"].items():
        export.llm_analysis(doc, device)
        bandwidth, fma = report.roofs(sec)
        if bandwidth and fma:
            model.decode_step(model.load_preset("llama-3-8b"), "fp16", 1, 4096, bandwidth,
                              validation.compute_roof(sec, ("fp16",), "torch")[0])
    fleet.node_metrics(doc)
    fleet.config_of(doc)


def readers(doc, base, specs):
    """Every reader of a stored profile, run on `doc`: the quick ones, and compare's and history's
    bootstraps against `base`."""
    quick_readers(doc, specs)
    compare.markdown(compare.compare(base, doc, 0.05, {}), "a", "b")
    history.trend([("a", base), ("b", doc)], "bandwidth.read")


@pytest.mark.parametrize("source", [FIXTURE, os.path.join(ROOT, "profiles", "amd-epyc-zen4-2c.yaml")],
                         ids=["fixture", "committed"])
def test_random_damage_is_refused_on_load_or_read_without_a_traceback(source):
    """80 seeded edits (a field removed, or set to null, text, a negative number, an empty list or
    mapping, zero): each is refused on load, or every reader copes with it. On the fixture and on a
    committed profile, whose newer fields (the thread sweep, the read's kernel_config) the fixture
    lacks."""
    stored = profile.load_profile(source)
    rng, specs, refused = random.Random(7), load_specs(), 0
    for path, edit in rng.sample(edits_of(stored), 80):
        doc = edited(copy.deepcopy(stored), path, edit)  # compare and history read both: nothing shared
        try:
            profile.validate(doc, "edited")
        except HarnessError:
            refused += 1
            continue
        try:
            readers(doc, stored, specs)  # any other exception fails the test, its traceback naming the edit
        except HarnessError:
            pass  # a reader's own clear refusal (a roof the export needs is gone)
    assert 0 < refused < 80


def test_a_peaks_fraction_of_theoretical_must_be_its_rate_over_its_theoretical_figure(tmp_path):
    doc = profile.load_profile(os.path.join(ROOT, "profiles", "amd-epyc-zen4-2c.yaml"))  # records carrying both
    rec = doc["devices"]["cpu"]["peak_flops"]["fp64"]
    assert rec["fraction_of_theoretical"] == pytest.approx(rec["flops_per_s"] / rec["theoretical_flops_per_s"])
    want = rec["flops_per_s"] / rec["theoretical_flops_per_s"]  # as measured: the committed profile's, not a constant
    rec["fraction_of_theoretical"] = 0.5
    with pytest.raises(HarnessError, match=re.escape(f"devices.cpu.peak_flops.fp64.fraction_of_theoretical is 0.5, but "
                                                     f"flops_per_s over theoretical_flops_per_s is {want:.10g}")):
        profile.load_profile(write(doc, tmp_path))


def test_a_record_whose_output_check_failed_has_no_rate_to_draw(stored, tmp_path):
    doc = copy.deepcopy(stored)
    rec = doc["devices"]["cpu"]["peak_flops"]["fp64"]
    rec.update(validated=False, error="fp64 chains: sum 0 differs from the float64 reference 512")
    with pytest.raises(HarnessError, match=r"peak_flops\.fp64\.flops_per_s must be null: the record's output check failed"):
        profile.load_profile(write(doc, tmp_path))  # else the balance took the rate of a wrong output
    rec.update(flops_per_s=None, median_flops_per_s=None)
    back = profile.load_profile(write(doc, tmp_path))
    assert validation.balance(back["devices"]["cpu"])["fp64"] is None
    assert "WRONG OUTPUT: fp64 chains: sum 0 differs" in "\n".join(summary.section_lines(back["devices"]["cpu"]))


def test_an_in_core_record_is_checked_as_a_timing_record(stored, tmp_path):
    doc = copy.deepcopy(stored)
    rec = doc["devices"]["cpu"]["decode_attention"][0]
    rec["in_core"] = {**timed("bytes", 1 << 20, [1e-5, 1.1e-5]), "threads": 1, "validated": True}
    assert profile.load_profile(write(doc, tmp_path))["devices"]["cpu"]["decode_attention"][0]["in_core"]["threads"] == 1
    for key, value, message in (("samples_s", "fast", "in_core.samples_s must be a list of numbers"),
                                ("median_bytes_per_s", REMOVE, "in_core has no median_bytes_per_s"),
                                ("median_bytes_per_s", 1.0, "in_core.median_bytes_per_s is 1, but its raw samples give"),
                                ("best_time_s", "long", "in_core.best_time_s must be a number")):
        bad = copy.deepcopy(doc)
        target = bad["devices"]["cpu"]["decode_attention"][0]["in_core"]
        if value is REMOVE:
            del target[key]
        else:
            target[key] = value
        with pytest.raises(HarnessError, match=message.replace(".", r"\.")):
            profile.load_profile(write(bad, tmp_path))
    rec["in_core"] = {"reason": "the CPU reports no L2 cache to size the in-core task by"}
    assert profile.load_profile(write(doc, tmp_path))


def test_a_points_in_core_times_are_there_together_and_as_derived(tmp_path):
    doc = profile.load_profile(os.path.join(ROOT, "profiles", "amd-epyc-zen4-2c.yaml"))  # its points from DRAM have them
    i, rec = next((i, r) for i, r in enumerate(doc["devices"]["cpu"]["decode_attention"])
                  if (r.get("in_core") or {}).get("core_time_s"))
    for key, value, message in (("memory_time_s", REMOVE, "has core_time_s, no_overlap_time_s, full_overlap_time_s but no "
                                                          "memory_time_s"),
                                ("no_overlap_time_s", rec["in_core"]["no_overlap_time_s"] * 1.1, "no_overlap_time_s is "),
                                ("core_time_s", rec["in_core"]["core_time_s"] / 2, "core_time_s is ")):
        bad = copy.deepcopy(doc)
        target = bad["devices"]["cpu"]["decode_attention"][i]["in_core"]
        if value is REMOVE:
            del target[key]
        else:
            target[key] = value
        with pytest.raises(HarnessError, match=rf"decode_attention\[{i}\]\.in_core\.?( has)? ?{message}"):
            profile.load_profile(write(bad, tmp_path))
    for key in ("core_time_s", "memory_time_s", "no_overlap_time_s", "full_overlap_time_s"):  # a profile before them
        del rec["in_core"][key]
    assert profile.load_profile(write(doc, tmp_path))
    rec["model"]["bytes"] = 0  # every rate of the point divides by it, and its fraction of the read beside it
    with pytest.raises(HarnessError, match=rf"decode_attention\[{i}\]\.model\.bytes is 0: a decode step's modelled "
                                           "bytes must be more than 0"):
        profile.load_profile(write(doc, tmp_path))
    del rec["kernel_config"]["prefetch_rows_ahead"]  # the report states the tuned setting in words
    rec["model"]["bytes"] = 1
    with pytest.raises(HarnessError, match=rf"decode_attention\[{i}\]\.kernel_config has no prefetch_rows_ahead"):
        profile.load_profile(write(doc, tmp_path))


def test_a_short_of_roofs_points_loops_share_of_its_time_is_a_number(stored, tmp_path):
    doc = copy.deepcopy(stored)
    doc["devices"]["cpu"]["model_validation"]["short_of_roofs"] = [
        {"point": "decode numba-fused fp32", "roof": "memory", "fraction_of_roof": 0.6, "fraction_of_peak_flops": 0.06,
         "in_core_fraction_of_time": 1.05}]  # the loops alone may outlast the step: above 1 is a number
    assert profile.load_profile(write(doc, tmp_path))
    doc["devices"]["cpu"]["model_validation"]["short_of_roofs"][0]["in_core_fraction_of_time"] = "x"
    with pytest.raises(HarnessError, match=r"short_of_roofs\[0\]\.in_core_fraction_of_time must be a number, 0 or more"):
        profile.load_profile(write(doc, tmp_path))


def test_every_single_edit_of_a_committed_profile_is_refused_or_reported_without_a_traceback():
    """Each edit of edits_of, one at a time, on the newest committed profile: refused on load, or the
    quick readers cope (compare's and history's bootstraps make them too slow for every edit: the
    seeded test above takes them). A sweep like this found a thread-sweep record without its rate,
    a range that was not a pair and an unknown read-kernel name; once it reached the later items that
    hold fields the first two lack, a decode point's in-core times apart, its kernel setting without
    its prefetch distance and a modelled byte count of 0."""
    stored, specs, read = profile.load_profile(os.path.join(ROOT, "profiles", "amd-epyc-zen4-2c.yaml")), load_specs(), 0
    pristine = copy.deepcopy(stored)
    for path, edit in edits_of(stored):
        doc = edited(stored, path, edit)
        try:
            profile.validate(doc, "edited")
        except HarnessError:
            continue
        read += 1
        try:
            quick_readers(doc, specs)
        except HarnessError:
            pass  # a reader's own clear refusal
        except Exception as e:
            what = "removed" if edit is REMOVE else f"set to {edit!r}"
            raise AssertionError(f"{'.'.join(map(str, path))} {what}: {type(e).__name__}: {e}") from e
    assert read > 1000  # 3,282 of the 10,514 load (2026-12-08): the readers were exercised
    assert stored == pristine  # no reader changed what it read (the edits shared it)
