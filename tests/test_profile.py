"""Profile round trips on real files, history, atomic writes and rejection of bad files."""

import glob
import os
import re

import pytest
import yaml

from conftest import ROOT, timed, undocumented_fields
from harness import profile
from harness.errors import HarnessError


def record(unit="bytes"):
    return {"dtype": "fp64", "threads": 2, "working_set_bytes": 3 << 20, **timed(unit, 1 << 20, [2.1e-5, 2.2e-5, 2.0e-5]),
            "loops_per_sample": 64, "validated": True, "warnings": []}


def make_doc(created="2026-11-25T08:00:00Z", machine_id="test-cpu-2c"):
    return {
        "schema_version": 1, "created_utc": created, "command": "harness profile",
        "machine": {"id": machine_id, "cpu": {"model": "Test CPU", "cores": 2}},
        "software": {"python": "3.11.7", "packages": {"numba": "0.68.1"}},
        "devices": {"cpu": {
            "bandwidth": {k: record() for k in profile.BANDWIDTH_KERNELS},
            "hierarchy": [dict(record(), working_set_bytes=16384, level="L1")],
            "peak_flops": {d: record("flops") for d in profile.PEAK_DTYPES},
            "theoretical": {"bytes_per_s": None, "flops_per_s": {"fp64": 1.6e11, "fp32": 3.2e11}, "source": "t"},
            "balance": {"fp64": 1.0, "fp32": 1.0},  # the peaks and the read: the same record, the same rate
        }},
    }


def test_round_trip_is_equal(tmp_path):
    path = tmp_path / "p.yaml"
    doc = make_doc()
    profile.save_profile(doc, path)
    assert profile.load_profile(path) == doc
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_saving_again_keeps_the_previous_profile_in_history(tmp_path):
    path = tmp_path / "m.yaml"
    first, second = make_doc("2026-11-25T08:00:00Z"), make_doc("2026-11-25T09:30:00Z")
    profile.save_profile(first, path)
    profile.save_profile(second, path)
    kept = tmp_path / "history" / "test-cpu-2c" / "20261125T080000Z.yaml"
    assert profile.load_profile(kept) == first
    assert profile.load_profile(path) == second


def test_interrupted_save_leaves_the_previous_profile_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.yaml"
    profile.save_profile(make_doc(), path)
    before = path.read_text()

    def interrupted(doc):
        raise KeyboardInterrupt

    monkeypatch.setattr(profile, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        profile.save_profile(make_doc("2026-11-25T10:00:00Z"), path)
    assert path.read_text() == before
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_atomic_write_cleans_up_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "x.yaml"
    path.write_text("old")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(HarnessError, match=f"cannot write {path}: disk full"):
        profile.atomic_write_text(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["x.yaml"]


def test_an_unwritable_output_path_is_one_error_naming_it(tmp_path):
    from harness import plots

    blocker = tmp_path / "file"
    blocker.write_text("")
    for target in (blocker / "sub" / "x.md", tmp_path):  # a file where a folder must be; a folder as the file
        with pytest.raises(HarnessError, match=f"cannot write {target}"):
            profile.atomic_write_text(str(target), "text")
        fig = plots.plt.figure()
        with pytest.raises(HarnessError, match=f"cannot write {target}"):
            plots.save_atomically(fig, str(target))
        assert not plots.plt.get_fignums()  # the figure is closed all the same
    assert sorted(os.listdir(tmp_path)) == ["file"]  # no temporary file left behind


@pytest.mark.parametrize("text,message", [
    ("schema_version: 1\ncreated_utc: '2026'\nmachine: {id: x\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping at the top level"),
    ("name: some other tool's config\n", "no schema_version"),
    ("schema_version: 99\n", "schema_version 99"),
    ("schema_version: 1\ncreated_utc: '2026-11-25T08:00:00Z'\nmachine: {}\nsoftware: {}\ndevices: {}\n",
     "machine.id"),
    # history/ names the replaced profile's file by its created_utc, and sorts by it
    ("schema_version: 1\ncreated_utc: '../../elsewhere'\nmachine: {id: x}\nsoftware: {}\ndevices: {}\n",
     "created_utc must be a UTC time as harness writes it (2026-12-06T11:09:36Z), got '../../elsewhere'"),
    ("schema_version: 1\ncreated_utc: '2026-11-25 08:00'\nmachine: {id: x}\nsoftware: {}\ndevices: {}\n",
     "created_utc must be a UTC time"),
    ("schema_version: 1\ncreated_utc: 2026-11-25T08:00:00Z\nmachine: {id: x}\nsoftware: {}\ndevices: {}\n",
     "got datetime.datetime(2026, 11, 25, 8, 0"),  # unquoted: YAML's timestamp, not the harness's text
    # profiles/<id>.yaml, history/<id>/ and reports/<id>/ are named by machine.id
    ("schema_version: 1\ncreated_utc: '2026-11-25T08:00:00Z'\nmachine: {id: ../../x}\nsoftware: {}\ndevices: {}\n",
     "machine.id must be a slug as harness writes it (lower-case letters, digits and dashes: amd-epyc-zen4-2c), "
     "got '../../x'"),
    ("schema_version: 1\ncreated_utc: '2026-11-25T08:00:00Z'\nmachine: {id: x}\nsoftware: {}\ndevices: {tpu0: {}}\n",
     "devices may be cpu, gpu0, gpu1, ...: got 'tpu0'"),
])
def test_malformed_profiles_are_rejected_with_the_file_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(HarnessError) as e:
        profile.load_profile(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_truncated_profile_is_rejected(tmp_path):
    path = tmp_path / "t.yaml"
    profile.save_profile(make_doc(), path)
    text = path.read_text()
    path.write_text(text[: len(text) // 3])
    with pytest.raises(HarnessError, match=str(path)):
        profile.load_profile(path)


def test_bad_samples_are_rejected(tmp_path):
    doc = make_doc()
    doc["devices"]["cpu"]["bandwidth"]["triad"]["samples_s"] = ["fast"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(HarnessError, match="bandwidth.triad.samples_s"):
        profile.load_profile(path)


@pytest.mark.parametrize("key,edit", [
    ("bytes_per_s", lambda rec: 2 * rec["bytes_per_s"]),  # a figure "corrected" by hand
    ("median_bytes_per_s", lambda rec: 1.0001 * rec["median_bytes_per_s"]),
    ("best_time_s", lambda rec: rec["median_time_s"]),
    ("median_time_s", lambda rec: rec["best_time_s"]),
    ("bytes_per_call", lambda rec: rec["bytes_per_call"] // 2),  # the rates no longer follow from the work
])
def test_a_figure_its_raw_samples_do_not_give_is_refused(tmp_path, key, edit):
    doc = make_doc()
    rec = doc["devices"]["cpu"]["bandwidth"]["triad"]
    rec[key] = edit(rec)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(doc))
    shown = key if key != "bytes_per_call" else "bytes_per_s"
    with pytest.raises(HarnessError, match=rf"devices\.cpu\.bandwidth\.triad\.{shown} is .*, but its raw samples give "
                                           r".*\(edited after the run\?\)"):
        profile.load_profile(path)


@pytest.mark.parametrize("sample", [0.0, -2e-5])
def test_a_sample_of_no_time_is_refused(tmp_path, sample):
    doc = make_doc()
    doc["devices"]["cpu"]["peak_flops"]["fp32"]["samples_s"][1] = sample
    path = tmp_path / "zero.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(HarnessError, match=r"peak_flops\.fp32\.samples_s must be seconds above 0, got "):
        profile.load_profile(path)


def test_figures_that_follow_from_their_samples_load(tmp_path):
    """Times and rates as the probe derives them (stats.sample_figures), after a YAML round trip; a
    record without a rate (its output check failed) has nothing to check."""
    doc = make_doc()
    rec = doc["devices"]["cpu"]["bandwidth"]["triad"]
    assert rec["bytes_per_s"] == (1 << 20) / 2.0e-5 and rec["median_bytes_per_s"] == (1 << 20) / 2.1e-5
    doc["devices"]["cpu"]["bandwidth"]["copy"].update(bytes_per_s=None, median_bytes_per_s=None, validated=False,
                                                      error="copy: 3 of 1000 elements differ")
    path = tmp_path / "p.yaml"
    profile.save_profile(doc, path)
    assert profile.load_profile(path) == doc


def test_a_malformed_existing_profile_is_not_overwritten(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("not: [a profile\n")
    with pytest.raises(HarnessError, match="refusing to overwrite"):
        profile.check_writable(path)
    with pytest.raises(HarnessError):
        profile.save_profile(make_doc(), path)
    assert path.read_text() == "not: [a profile\n"


def test_another_machines_profile_is_not_replaced(tmp_path):
    """--out naming another machine's profile (profiles/amd-epyc-zen4-2c.yaml on a Xeon) is refused
    before probing: the file's name would say one machine and its data another's."""
    path = tmp_path / "m.yaml"
    profile.save_profile(make_doc(), path)
    stored = profile.load_profile(path)["machine"]["id"]
    profile.check_writable(path, stored)  # the same machine: replaced, the old one kept in history/
    with pytest.raises(HarnessError, match=f"{path} holds a profile of machine '{stored}', and this machine is "
                                           "'other-2c': refusing to replace it: move it aside or choose another --out"):
        profile.check_writable(path, "other-2c")


def test_missing_and_unwritable_paths(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        profile.load_profile(tmp_path / "nope.yaml")
    with pytest.raises(HarnessError, match="is a directory"):
        profile.check_writable(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HarnessError, match="cannot write"):
        profile.check_writable(blocker / "sub" / "p.yaml")


def test_a_failing_cpu_probe_is_recorded_and_the_rest_kept(monkeypatch, tmp_path):
    from harness import run
    from probes import cpu_peak

    def crash(ctx):
        raise MemoryError("cannot allocate the peak probe's buffers")

    monkeypatch.setenv("HARNESS_TINY", "1")
    monkeypatch.setattr(cpu_peak, "run_peak", crash)
    doc = run.build_profile(device="cpu", quick=True, probe_names=("stream", "peak", "decode"), counters="off")
    sec = doc["devices"]["cpu"]
    assert sec["probe_errors"] == {"peak": "MemoryError: cannot allocate the peak probe's buffers"}
    assert sec["bandwidth"] and all(r["validated"] for r in profile.measurement_records(sec))
    assert "peak_flops" not in sec and "balance" not in sec
    # decode points without a compute roof have no prediction: written and loaded all the same
    assert sec["decode_attention"] and all(r["model"]["predicted_time_s"] is None for r in sec["decode_attention"])
    path = tmp_path / "p.yaml"
    profile.save_profile(doc, str(path))
    assert profile.load_profile(str(path))["devices"]["cpu"]["probe_errors"] == sec["probe_errors"]


def test_probe_errors_must_name_probes_and_messages(tmp_path):
    path = tmp_path / "bad.yaml"
    doc = make_doc()
    doc["devices"]["cpu"]["probe_errors"] = {"peak": 3}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(HarnessError, match="devices.cpu.probe_errors.peak must be a string, got 3"):
        profile.load_profile(str(path))


@pytest.mark.parametrize("key,point,message", [
    ("peak_flops_unsupported", {"dtype": "fp16"}, "devices.cpu.peak_flops_unsupported[0] has no reason"),
    ("tensor_flops_unsupported", [{"dtype": "int8", "reason": "no _int_mm"}, {"reason": "?"}],
     "devices.cpu.tensor_flops_unsupported[1] has no dtype"),
    ("decode_unsupported", {"impl": "torch-sdpa", "dtype": "int8"}, "devices.cpu.decode_unsupported[0] has no reason"),
    ("peak_flops_unsupported", "fp16", "devices.cpu.peak_flops_unsupported must be a list of mappings")])
def test_what_a_probe_left_out_must_say_what_and_why(tmp_path, key, point, message):
    # the report names each left-out dtype and its reason: a hand-edited entry without them is
    # refused on load, not met as a KeyError while rendering
    path = tmp_path / "bad.yaml"
    doc = make_doc()
    doc["devices"]["cpu"][key] = point if isinstance(point, (list, str)) else [point]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(HarnessError, match=re.escape(message)):
        profile.load_profile(str(path))


def test_section_warnings_must_be_messages(tmp_path):
    path = tmp_path / "bad.yaml"
    doc = make_doc()
    doc["devices"]["cpu"]["warnings"] = "threads shared cores"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(HarnessError, match="devices.cpu.warnings must be a list of strings"):
        profile.load_profile(str(path))


def test_a_document_that_fails_validation_on_save_is_kept_beside_the_profile(tmp_path):
    path = tmp_path / "m.yaml"
    profile.save_profile(make_doc(), path)
    before = path.read_text()
    doc = make_doc("2026-11-25T09:30:00Z")
    doc["devices"]["cpu"]["bandwidth"]["triad"]["threads"] = "two"  # what a harness bug would write
    with pytest.raises(HarnessError) as e:
        profile.save_profile(doc, path)
    kept = tmp_path / "m.yaml.rejected"
    assert "bandwidth.triad.threads must be a whole number" in str(e.value) and f"kept in {kept}" in str(e.value)
    assert yaml.safe_load(kept.read_text()) == doc and path.read_text() == before  # nothing lost, nothing replaced
    assert not (tmp_path / "history").exists()
    kept.unlink()
    kept.mkdir()  # the .rejected copy cannot be written either: the validation error is still the one raised
    with pytest.raises(HarnessError, match="bandwidth.triad.threads must be a whole number") as e:
        profile.save_profile(doc, path)
    assert "kept in" not in str(e.value) and path.read_text() == before


def test_devices_go_in_cudas_order():
    """gpu10 after gpu9, not between gpu1 and gpu2 (a 16-GPU node's report and compare rows)."""
    doc = {"devices": {f"gpu{i}": {} for i in (10, 2, 0, 9, 1)} | {"cpu": {}}}
    assert [name for name, _ in profile.by_device(doc)] == ["cpu", "gpu0", "gpu1", "gpu2", "gpu9", "gpu10"]
    assert profile.default_device({"gpu10": {}, "gpu2": {}, "cpu": {}}) == "gpu2"
    assert profile.default_device({"cpu": {}}) == "cpu" and profile.by_device({}) == []
    assert profile.device_names(doc["devices"]) == "cpu, gpu0, gpu1, gpu2, gpu9, gpu10"
    assert profile.device_names({}) == "none"


def test_every_field_of_a_real_profile_is_described_in_docs_profile_md():
    """docs/profile.md is the schema's description: a field the harness writes that it does not name
    is a field a reader cannot interpret (a GPU section's: tests/test_gpu_plumbing.py)."""
    missing = set()
    for path in glob.glob(os.path.join(ROOT, "profiles", "*.yaml")):
        with open(path, encoding="utf-8") as f:
            missing |= undocumented_fields(yaml.safe_load(f))
    assert not missing, f"fields docs/profile.md does not describe: {sorted(missing)}"


@pytest.mark.parametrize("edit,message", [
    (lambda sec: sec["thread_sweep"]["triad"][0].pop("bytes_per_s"), "devices.cpu.thread_sweep.triad[0] has no bytes_per_s"),
    (lambda sec: sec["thread_sweep"]["triad"][0].update(bytes_per_s=None),
     "devices.cpu.thread_sweep.triad[0] has no bytes_per_s"),
    (lambda sec: sec["hierarchy_levels"]["L1"].update(working_set_bytes_range=[16384]),
     "devices.cpu.hierarchy_levels.L1.working_set_bytes_range must be [low, high]"),
    (lambda sec: sec["hierarchy_levels"]["L1"].update(working_set_bytes_range=[1, 2, 3]),
     "devices.cpu.hierarchy_levels.L1.working_set_bytes_range must be [low, high]"),
    (lambda sec: sec["peak_flops"]["fp32"].update(flops_per_s=-1.0),
     "devices.cpu.peak_flops.fp32.flops_per_s must be a number, 0 or more, or null, got -1.0")],
    ids=["rate-missing", "rate-null", "range-of-one", "range-of-three", "rate-below-0"])
def test_what_the_report_draws_is_checked_on_load(tmp_path, edit, message):
    # a validated record without its rate, a level's range that is not a pair or a rate below 0 is
    # refused on load, where the report and `harness show` met it as a KeyError, a failed unpacking
    # or a balance of None
    doc = make_doc()
    sec = doc["devices"]["cpu"]
    sec["thread_sweep"] = {"triad": [dict(record(), threads=1), record()]}
    point = sec["hierarchy"][0]["bytes_per_s"]  # the level is its one point, as stats.level_entry derives it
    sec["hierarchy_levels"] = {"L1": {"bytes_per_s": point, "working_set_bytes_range": [16384, None]}}
    sec["model_validation"] = {"finding": "f", "model_error": -0.12}  # an error may be below 0, a rate not
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    profile.load_profile(str(path))  # as harness writes them: a range open above is a pair with null
    edit(sec)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(HarnessError, match=re.escape(message)):
        profile.load_profile(str(path))
