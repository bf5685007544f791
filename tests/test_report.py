"""Reports from a recorded profile: the data handed to the plots, valid PNGs, the markdown's
numbers, stated absences, the index, the export, and bad input."""

import copy
import json
import os
import pathlib

import matplotlib.image
import pytest

from conftest import FIXTURES, faster, run_cli
from harness import compare, model, report, summary, validation
from harness.export import export
from harness.errors import HarnessError
from harness.profile import load_profile, save_profile
from harness.specs import load_specs
from harness.summary import section_lines, si

FIXTURE = os.path.join(FIXTURES, "profile-amd-epyc-2c.yaml")


@pytest.fixture(scope="module")
def doc():
    return load_profile(FIXTURE)


def test_roofline_series_hold_levels_ceilings_ridges_and_decode_points(doc):
    data = report.report_data(doc, load_specs())
    roof = data["roofline"]
    assert [s["level"] for s in roof["slopes"] if s["measured"]] == ["L1", "L2", "L3", "DRAM"]
    # the memory's slope is the read the ridges divide by, so each ridge sits on it (not its sweep level)
    assert roof["slopes"][-1]["bytes_per_s"] == doc["devices"]["cpu"]["bandwidth"]["read"]["bytes_per_s"]
    assert roof["slopes"][-1]["label"] == "DRAM read (measured, bandwidth.read)"
    levels = doc["devices"]["cpu"]["hierarchy_levels"]
    assert roof["slopes"][0]["bytes_per_s"] == levels["L1"]["bytes_per_s"]
    ceilings = {(c["dtype"], c["measured"]) for c in roof["ceilings"]}
    assert ceilings == {("fp64", True), ("fp64", False), ("fp32", True), ("fp32", False)}
    read = doc["devices"]["cpu"]["bandwidth"]["read"]["bytes_per_s"]
    fp32 = next(r for r in roof["ridges"] if r["dtype"] == "fp32")
    assert fp32["intensity"] == pytest.approx(doc["devices"]["cpu"]["peak_flops"]["fp32"]["flops_per_s"] / read)
    assert fp32["name"] == "fp32 FMA"
    both = copy.deepcopy(doc["devices"]["cpu"])  # a GPU's fp16: half2 FMA chains and tensor cores, two ridges
    both["peak_flops"]["fp16"] = dict(both["peak_flops"]["fp32"], dtype="fp16")
    both["tensor_flops"] = {"fp16": {"validated": True, "flops_per_s": 15 * both["peak_flops"]["fp32"]["flops_per_s"]}}
    ridges = report.roofline_series("m", both, 1 << 20)["ridges"]
    assert [r["name"] for r in ridges if r["dtype"] == "fp16"] == ["fp16 FMA", "fp16 matmul"]
    points = {(p["impl"], p["dtype"]) for p in roof["points"]}
    assert {("numba-fused", d) for d in ("fp32", "bf16", "fp16", "int8")} <= points
    assert all(p["source"] == "analytic" for p in roof["points"])  # no counters in this profile
    assert all(0.4 <= p["intensity"] <= 2.1 for p in roof["points"])


def test_ridge_labels_that_would_cover_each_other_stack_a_line_apart(doc, tmp_path, monkeypatch):
    from harness import plots

    # a GPU's fp16 and bf16 matmuls on one ridge; one far right of them; one just below them
    assert plots.stack_labels([(100, 300), (100, 300), (400, 300), (150, 295)], [150] * 4, 11) == [-14, -25, -14, -36]
    assert plots.stack_labels([(100, 300), (100, 200)], [150] * 2, 11) == [-14, -14]  # a decade apart: no clash
    sec = copy.deepcopy(doc["devices"]["cpu"])
    rate = 20 * sec["peak_flops"]["fp32"]["flops_per_s"]
    sec["tensor_flops"] = {d: {"validated": True, "flops_per_s": rate * k} for d, k in (("fp16", 1), ("bf16", 1.02))}
    drawn = []

    def keep(fig, path):
        drawn.extend((t.get_text(), t.xyann[1]) for t in fig.axes[0].texts if t.get_text().startswith("ridge "))
        plots.plt.close(fig)

    monkeypatch.setattr(plots, "save_atomically", keep)
    plots.roofline(report.roofline_series("m", sec, 1 << 20), str(tmp_path / "r.png"))
    offsets = dict((text.split(":")[0], dy) for text, dy in drawn)
    assert offsets["ridge bf16 matmul"] <= offsets["ridge fp16 matmul"] - plots.RIDGE_LINE_PT, drawn  # a line or more below
    assert offsets["ridge fp32 FMA"] == offsets["ridge fp64 FMA"] == -14, drawn  # apart from the others


def test_a_decode_legend_too_long_for_the_axes_goes_below_them(tmp_path, monkeypatch):
    from harness import plots

    def series(impls):
        return {"title": "t", "llc_seq_len": None, "memory": "HBM", "cache": "L2", "models": [],
                "series": [{"impl": impl, "dtype": dtype, "seq_len": [1024, 4096], "time_s": [1e-4, 4e-4],
                            "fraction_of_bandwidth": [0.5, 0.8]} for impl in impls for dtype in ("fp16", "bf16")]}

    below = {}

    def keep(fig, path):
        fig.canvas.draw()
        below[path] = [ax.get_legend().get_window_extent().y1 <= ax.get_window_extent().y0 for ax in fig.axes]
        plots.plt.close(fig)

    monkeypatch.setattr(plots, "save_atomically", keep)
    gpu = ["cupy-fused", "torch-naive"] + [f"torch-sdpa[{b}]" for b in ("flash_attention", "efficient_attention",
                                                                          "cudnn_attention", "math")]
    plots.decode_vs_seq_len(series(gpu), "gpu")  # 12 entries each: inside
    plots.decode_vs_seq_len(series(gpu + ["numba-fused"]), "more")  # 14 entries: below
    assert below == {"gpu": [False, False], "more": [True, True]}


def test_hierarchy_series_hold_every_point_and_each_levels_band(doc):
    series = report.report_data(doc)["hierarchy"]
    sweep = doc["devices"]["cpu"]["hierarchy"]
    assert [p["working_set_bytes"] for p in series["points"]] == [r["working_set_bytes"] for r in sweep]
    assert {p["kernel"] for p in series["points"]} == {"read"}
    bands = {lv["level"]: (lv["lo"], lv["hi"], lv["bytes_per_s"]) for lv in series["levels"]}
    levels = doc["devices"]["cpu"]["hierarchy_levels"]
    assert bands["L2"] == (196608, 1048576, levels["L2"]["bytes_per_s"])
    assert bands["L1"][0] == sweep[0]["working_set_bytes"]  # from the first point, not from 0 bytes
    assert bands["DRAM"][0] == bands["DRAM"][1] == sweep[-1]["working_set_bytes"]  # the one point at its size
    wrong = copy.deepcopy(doc)
    wrong["devices"]["cpu"]["hierarchy"][0]["validated"] = False
    assert len(report.report_data(wrong)["hierarchy"]["points"]) == len(sweep) - 1  # a wrong sum is not drawn


def test_thread_sweep_is_tabled_against_one_thread_and_says_where_memory_saturates(doc):
    series = report.report_data(doc)["threads"]
    triad, peak = series["kernels"]
    assert (triad["label"], triad["threads"], triad["unit"]) == ("triad (fp64)", [1, 2], "B/s")
    assert peak["best"] == [r["flops_per_s"] for r in doc["devices"]["cpu"]["thread_sweep"]["peak_fp32"]]
    text = "\n".join(report.threads_markdown(series, "threads.png"))
    assert "| 2 | 44.7 GB/s | 1.10x | 540.3 GFLOP/s | 1.99x |" in text
    assert "The triad reaches 90% of its best rate at 1 of 2 threads: the memory saturates there" in text
    wide = {"kernel": "triad", "threads": [1, 2, 4, 8, 16], "best": [10, 19, 36, 50, 52]}
    assert report.saturation_threads(wide) == 8  # 50 >= 0.9 x 52, 36 is not
    climbing = dict(wide, best=[10, 20, 40, 80, 160])
    assert report.saturation_threads(climbing) == 16
    bare = copy.deepcopy(doc)
    bare["devices"]["cpu"]["thread_sweep"]["triad"][0]["validated"] = False  # a wrong triad is not a rate
    series = report.report_data(bare)["threads"]
    assert series["kernels"][0]["threads"] == [2]
    assert "| 2 | 44.7 GB/s | n/a |" in "\n".join(report.threads_markdown(series, "threads.png"))
    bare["devices"]["cpu"].pop("thread_sweep")
    assert report.report_data(bare)["threads"] is None
    assert "No thread sweep in this profile." in report.threads_markdown(None, "threads.png")


def test_a_levels_line_says_its_figure_is_a_median_of_points_not_the_best(doc):
    lines = [line for line in section_lines(doc["devices"]["cpu"]) if line.startswith("level ")]
    assert lines[1] == ("level L2                         399.1 GB/s  median of 5 points' best samples, "
                        "working sets 196.6 kB to 1.0 MB; best point 509.5 GB/s")
    one = section_lines({"hierarchy_levels": {"DRAM": {"bytes_per_s": 3.1e10, "max_bytes_per_s": 3.1e10, "points": 1}}})
    assert one == ["level DRAM                        31.0 GB/s  the best sample of its one point"]
    empty = section_lines({"hierarchy_levels": {"L3": {"bytes_per_s": None, "reason": "no sweep point lies well inside"}}})
    assert empty == ["level L3                                n/a  (no sweep point lies well inside)"]


def test_where_decode_attention_sits_is_computed_from_the_balance_not_assumed(doc):
    assert "sits 6.0x or more below that ridge, so it is memory-bound here" in report.attention_sentence(12.0)
    assert report.attention_sentence(2.0).endswith("reaches that ridge: on int8 caches it is compute-bound here.")
    assert report.attention_sentence(0.9).endswith("on fp16 and int8 caches it is compute-bound here.")
    cpu = doc["devices"]["cpu"]
    d = report.report_data(doc)["drills"]
    groups = {dt: g for dt, (g, _) in d["compute_bound_group"].items()}
    assert groups == {dt: int(d["balance"] // model.mha_intensity(dt)) + 1 for dt in ("fp32", "fp16", "int8")}
    text = "\n".join(report.drills_markdown(d))
    assert (f"turns compute-bound here from a group of {groups['fp32']} with an fp32 cache (fp32 FMA peak), "
            f"{groups['fp16']} with an fp16 cache (fp32 FMA peak), {groups['int8']} with an int8 cache") in text
    # each cache dtype against the fastest way to compute on its data: a GPU's fp32 cache is not on its
    # fp16 tensor cores (an H100's would need a group of ~480 against them, ~40 against its fp32 FMA)
    bw = cpu["bandwidth"]["read"]["bytes_per_s"]
    gpu = {"bandwidth": {"read": {"bytes_per_s": bw}}, "peak_flops": {"fp32": {"flops_per_s": 20 * bw}},
           "tensor_flops": {d: {"validated": True, "flops_per_s": k * bw} for d, k in (("fp16", 240), ("int8", 480))}}
    assert report.drills(gpu, gpu=True)["compute_bound_group"] == {
        "fp32": (41, "fp32 FMA peak"), "fp16": (241, "tensor-core fp16 matmul peak"), "int8": (241, "tensor-core int8 matmul peak")}


def test_working_set_bands_in_words():
    assert summary.working_set_band({"working_set_bytes_range": [0, 49152.0]}) == "up to 49.2 kB"
    assert summary.working_set_band({"working_set_bytes_range": [196608, 1048576.0]}) == "196.6 kB to 1.0 MB"
    assert summary.working_set_band({"working_set_bytes_range": [268435456, None]}) == "from 268.4 MB"
    assert summary.working_set_band({"bytes_per_sm_range": [16384, 65536]}) == "16.4 kB to 65.5 kB per SM"
    assert summary.working_set_band({"bytes_per_s": None, "reason": "no sweep point lies well inside this level"}) == ""


def test_decode_series_hold_measurement_and_model(doc):
    series = report.report_data(doc)["decode"]
    fused = next(s for s in series["series"] if s["impl"] == "numba-fused" and s["dtype"] == "fp32")
    assert fused["seq_len"] == sorted(fused["seq_len"]) and len(fused["seq_len"]) >= 4
    assert all(p > 0 for p in fused["predicted_time_s"])
    assert {m["dtype"] for m in series["models"]} == {"fp32", "bf16", "fp16", "int8"}
    assert (series["memory"], series["cache"]) == ("DRAM", "last-level cache")


def test_the_cache_line_of_the_decode_plot_is_where_the_swept_shapes_cache_fills_it(doc):
    cpu = copy.deepcopy(doc["devices"]["cpu"])
    # a GPU's sweep: batch 8, H_kv 8, and its first record not of that shape
    records = [dict(r, batch=8, heads=32, kv_heads=8) for r in cpu["decode_attention"] if r["impl"] == "numba-fused"]
    cpu["decode_attention"] = [dict(records[0], batch=1, kv_heads=32)] + records
    series = report.decode_series("m gpu0", cpu, 50 << 20, "HBM", "L2")
    assert series["llc_seq_len"] == (50 << 20) / (2 * 8 * 8 * 128 * 4)  # K and V in fp32 for 8 sequences
    assert (series["memory"], series["cache"]) == ("HBM", "L2")


def test_report_files_are_written_and_valid(doc, tmp_path):
    paths = report.write_report(doc, str(tmp_path), load_specs())
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["decode.png", "hierarchy.png", "report.md", "roofline.png", "threads.png"]
    for p in paths:
        if p.endswith(".png"):
            with open(p, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            assert matplotlib.image.imread(p).shape[0] > 300
    text = pathlib.Path(os.path.join(tmp_path, doc["machine"]["id"], "report.md")).read_text()
    cpu = doc["devices"]["cpu"]
    assert si(cpu["bandwidth"]["read"]["bytes_per_s"], "B/s") in text
    assert si(cpu["peak_flops"]["fp32"]["flops_per_s"], "FLOP/s") in text
    assert cpu["model_validation"]["finding"] in text
    assert (f"| while measuring | cores at {cpu['peak_flops']['fp32']['implied_clock_hz'] / 1e9:.2f} GHz (implied by "
            "the fp32 FMA peak); CPU steal ") in text  # as the regression report's run conditions give them
    assert "| effect | measured time ratio | at equal read bandwidth | model byte ratio |" in text  # reads paired
    assert "Llama-2-7B" in text and "drill problems" in text
    assert "(13.2 GB of weights:" in text and "the page's 12·L·d² gives 12.9 GB (-2%)" in text
    assert "for Llama-3-8B 12.9 GB of 15.0 GB (-14%)" in text
    assert "No counter measurements in this profile" in text
    assert "![Read bandwidth against working set](hierarchy.png)" in text
    assert "| L2 | 399.1 GB/s | 509.5 GB/s | 5 | 196.6 kB to 1.0 MB |" in text


def test_points_below_both_roofs_are_named_in_the_report_and_the_summary(doc, tmp_path):
    slow = copy.deepcopy(doc)
    cpu = slow["devices"]["cpu"]
    cpu["model_validation"]["short_of_roofs"] = [{"point": "decode numba-fused int8 S=65536 B=1 H=32/32",
                                                  "fraction_of_roof": 0.61, "roof": "memory-bound",
                                                  "fraction_of_peak_flops": 0.092, "against_adjacent_read": True}]
    paths = report.write_report(slow, str(tmp_path))
    text = pathlib.Path(next(p for p in paths if p.endswith(".md"))).read_text()
    line = "int8 S=65536 B=1 H=32/32 at 0.61 of its memory roof, 9.2% of the compute peak"
    assert "Below both roofs (the roofline leaves out" in text and line in text
    assert any(line in s for s in section_lines(cpu))


def test_a_profile_without_decode_gpu_or_counters_states_the_absences(doc, tmp_path):
    bare = copy.deepcopy(doc)
    for key in ("decode_attention", "model_validation", "hierarchy", "hierarchy_levels"):
        bare["devices"]["cpu"].pop(key)
    paths = report.write_report(bare, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ["report.md", "roofline.png", "threads.png"]
    text = pathlib.Path(paths[-1]).read_text()
    assert "No decode attention measurements in this profile." in text
    assert "No hierarchy sweep in this profile." in text
    assert "NVML" in text or "GPU" in text
    empty = copy.deepcopy(doc)
    empty["devices"] = {}
    text = report.markdown(report.report_data(empty))
    assert "No bandwidth or peak measurements" in text and "Not answerable" in text


def test_a_sweep_without_known_caches_is_drawn_with_its_points_and_no_levels(doc, tmp_path):
    unknown = copy.deepcopy(doc)
    unknown["machine"]["cpu"]["caches"] = []
    cpu = unknown["devices"]["cpu"]
    cpu["hierarchy_levels"] = {}
    for point in cpu["hierarchy"]:
        point["level"] = "unknown"
    paths = report.write_report(unknown, str(tmp_path))
    assert "hierarchy.png" in [os.path.basename(p) for p in paths]
    text = pathlib.Path(next(p for p in paths if p.endswith(".md"))).read_text()
    assert f"No level is summarised from the sweep's {len(cpu['hierarchy'])} points: no cache was visible" in text
    assert "No hierarchy sweep in this profile." not in text and "| caches | unknown (none visible in sysfs" in text


def test_the_hierarchy_section_says_where_l1_reads_used_two_streams(doc):
    note = "Working sets that fit L1 are summed in two streams"
    assert note not in report.markdown(report.report_data(doc))  # a profile from before read_streams
    two = copy.deepcopy(doc)
    two["devices"]["cpu"]["hierarchy"][0]["read_streams"] = 2
    assert note in report.markdown(report.report_data(two))


def test_the_machine_row_names_an_arm_cpu_by_its_part(doc):
    text = report.markdown(report.report_data(doc))
    assert "(AuthenticAMD, family 26, model 2)" in text
    arm = copy.deepcopy(doc)
    arm["machine"]["cpu"].update(model="Neoverse-V2", vendor="ARM", family=None, model_number=0xD4F)
    assert "| CPU | Neoverse-V2 (ARM, part 0xd4f) |" in report.markdown(report.report_data(arm))
    cpu = arm["devices"]["cpu"]  # and no clock reported (a cloud Arm VM): the peak row gives the implied one
    cpu["theoretical"]["flops_per_s"] = {"fp64": None, "fp32": None}
    cpu["peak_flops"]["fp32"]["implied_clock_hz"] = 2.6e9
    assert "no clock reported: the measurement implies 2.60 GHz" in report.markdown(report.report_data(arm))


def test_a_sections_own_warnings_are_reported_and_summarised(doc):
    warned = copy.deepcopy(doc)
    warned["devices"]["cpu"]["warnings"] = ["the threads shared cores"]
    assert "- the threads shared cores" in report.markdown(report.report_data(warned))
    assert "WARNING: the threads shared cores" in section_lines(warned["devices"]["cpu"])


def test_record_warnings_name_every_record_as_the_terminal_does(doc):
    warned = copy.deepcopy(doc)
    cpu = warned["devices"]["cpu"]
    mha = next(r for r in cpu["decode_attention"] if r["heads"] == r["kv_heads"])
    gqa = {**copy.deepcopy(mha), "kv_heads": mha["heads"] // 4, "warnings": ["wide spread: IQR is 30% of the median"]}
    mha["warnings"] = ["wide spread: IQR is 12% of the median"]
    cpu["decode_attention"].append(gqa)  # one impl, dtype and length: only the KV heads tell them apart
    sweep = next(iter(cpu["thread_sweep"].values()))[-1]  # at 2 threads
    sweep["warnings"] = ["wide spread: stdev is 11% of the mean (>= 10%)"]
    text = report.markdown(report.report_data(warned))
    shape = f"{mha['dtype']} B={mha['batch']} H={mha['heads']}/{{}} d_h={mha['head_dim']} S={mha['seq_len']}"
    assert f"- decode {mha['impl']} {shape.format(mha['kv_heads'])}: wide spread: IQR is 12%" in text
    assert f"- decode {mha['impl']} {shape.format(gqa['kv_heads'])}: wide spread: IQR is 30%" in text
    assert (f"- thread_sweep.{next(iter(cpu['thread_sweep']))} at {sweep['threads']} threads: wide spread: stdev is 11%"
            in text)  # left out before
    assert [line[len("warning: "):] for line in summary.warning_lines(cpu)] == report.collect_warnings(cpu)


def test_counted_records_are_tabled_beside_declared_and_drawn_on_the_roofline(doc):
    counted = copy.deepcopy(doc)
    cpu = counted["devices"]["cpu"]
    triad = cpu["bandwidth"]["triad"]
    triad["counters"] = {"source": "perf", "reason": None, "dram_bytes": 0.97 * triad["bytes_per_call"], "flops": None,
                         "intensity": None, "bytes_ratio": 0.97, "dram_bytes_source": "memory-controller CAS"}
    data = report.report_data(counted, load_specs())
    large = max((r for r in cpu["decode_attention"] if r["validated"] and r["impl"] == "numba-fused"),
                key=lambda r: r["model"]["cache_bytes"])
    large["counters"] = {"source": "perf", "reason": None, "dram_bytes": 1.05 * large["bytes_per_call"],
                         "flops": large["flops_per_call"], "intensity": large["flops_per_call"] / (1.05 * large["bytes_per_call"]),
                         "bytes_ratio": 1.05, "flops_source": "AMD fp_ret_sse_avx_ops.all: retired FLOPs, FMA counting 2"}
    data = report.report_data(counted, load_specs())
    assert any(p["source"] == "counters" and p["impl"] == "numba-fused" for p in data["roofline"]["points"])
    text = report.markdown(data)
    rows = [line for line in text.splitlines() if line.startswith("| cpu |")]
    assert any("bandwidth.triad | perf |" in r and "| 0.970 |" in r and "memory-controller CAS" in r for r in rows)
    decode = next(r for r in rows if "decode numba-fused" in r)
    assert "| 1.050 |" in decode and "| 1.000 |" in decode  # bytes 5% over the model's; FLOPs as declared
    assert decode.endswith("| AMD fp_ret_sse_avx_ops.all: retired FLOPs, FMA counting 2 |")  # what counted them
    assert "No counter measurements" not in text


def test_index_lists_machines_and_specs(doc, tmp_path):
    path = report.write_index([doc], load_specs(), str(tmp_path))
    text = pathlib.Path(path).read_text()
    assert f"[{doc['machine']['id']}]" in text
    for name in ("A100-SXM4-80GB", "H100 PCIe", "H200", "L4", "RTX 4090", "i5-8250U"):
        assert name in text
    assert "989.4 TFLOP/s bf16_tensor dense" in text
    # a balance says what it divides: a CPU's fp32 FMA peak, a datasheet's best tensor rate
    assert "| 295 (bf16_tensor) |" in text
    cpu = doc["devices"]["cpu"]
    assert f"| {cpu['peak_flops']['fp32']['flops_per_s'] / cpu['bandwidth']['read']['bytes_per_s']:.1f} (fp32) |" in text
    # a device's fastest validated float rate is its peak there, as a datasheet's is (int8 counts OP/s)
    amx = copy.deepcopy(doc)
    fma = cpu["peak_flops"]["fp32"]["flops_per_s"]
    amx["devices"]["cpu"]["tensor_flops"] = {"bf16": {"validated": True, "flops_per_s": 3 * fma},
                                             "int8": {"validated": True, "flops_per_s": 9 * fma},
                                             "fp16": {"validated": False, "flops_per_s": None}}
    assert report.best_float_rate(amx["devices"]["cpu"]) == (3 * fma, "bf16 matmul")
    row = report.index_rows([amx], [])[0]
    assert row[3] == f"{si(3 * fma, 'FLOP/s')} bf16 matmul" and row[5].endswith(" (bf16 matmul)")
    v = amx["devices"]["cpu"]["model_validation"]  # the decode column names the cache dtype it gives
    fp32 = v["per_dtype"]["fp32"]  # and which read it is a fraction of: the verdict's (the one beside it where timed)
    fp32.update(fraction_of_bandwidth=1.14, fraction_of_adjacent_read=0.74)  # Zen 4 VM: the memory sped up meanwhile
    assert report.index_rows([amx], [])[0][6] == "0.74 (fp32, of the read beside it)"
    fp32["fraction_of_adjacent_read"] = None  # no read paired with its samples
    assert report.index_rows([amx], [])[0][6] == "1.14 (fp32, of the profile's read)"
    v["per_dtype"] = {d: p for d, p in v["per_dtype"].items() if d != "fp32"}  # no fp32 point from memory
    assert f" ({validation.headline_dtype(v['per_dtype'])}, of the " in report.index_rows([amx], [])[0][6]
    v["per_dtype"] = {}
    assert report.index_rows([amx], [])[0][6] == "n/a"
    other = copy.deepcopy(doc)
    other["machine"]["id"] = "aaa-first-2c"  # machines in id order, whichever the command named first
    assert [r[0] for r in report.index_rows([doc, other], [])] == [r[0] for r in report.index_rows([other, doc], [])]
    assert report.index_rows([doc, other], [])[0][0].startswith("[aaa-first-2c]")
    assert [report.balance_text(x) for x in (0.00861, 0.553, 5.461, 14.66, 99.97, 295.2)] == ["0.0086", "0.55", "5.5", "14.7", "100", "295"]  # the spec rows' too
    # a value just under a prefix's step is written in the next prefix, never as 1000.0 of this one
    assert [si(v, "B/s") for v in (999.97e9, 999.94e9, 999.96e3, 999.5, 999.4, 3.352e12)] == [
        "1.0 TB/s", "999.9 GB/s", "1.0 MB/s", "1.0 kB/s", "999 B/s", "3.4 TB/s"]
    assert report.best_float_rate({}) == (None, None)
    # a GPU without torch: its half2 fp16 chains (twice its fp32 FMA) are its fastest
    no_torch = {"peak_flops": {"fp32": {"flops_per_s": 60e12}, "fp16": {"flops_per_s": 120e12}},
                "tensor_flops": {"reason": "torch is not installed"}}
    assert report.best_float_rate(no_torch) == (120e12, "fp16 FMA")


def test_export_llm_analysis(doc):
    config, notes = export(doc, "llm-analysis")
    assert set(config) == {"name", "mem_per_GPU_in_GB", "hbm_bandwidth_in_GB_per_sec",
                           "intra_node_bandwidth_in_GB_per_sec", "intra_node_min_message_latency",
                           "peak_fp16_TFLOPS", "peak_i8_TFLOPS", "peak_i4_TFLOPS",
                           "inter_node_bandwidth_in_GB_per_sec"}
    assert config["hbm_bandwidth_in_GB_per_sec"] == pytest.approx(
        doc["devices"]["cpu"]["bandwidth"]["read"]["bytes_per_s"] / 1e9, rel=1e-3)
    assert any("fp32" in n for n in notes)
    with pytest.raises(HarnessError, match="valid formats are llm-analysis"):
        export(doc, "vidur")


def test_a_cpus_torch_matmuls_are_tabled_and_exported(doc):
    cpu_doc = copy.deepcopy(doc)
    fp32_fma = cpu_doc["devices"]["cpu"]["peak_flops"]["fp32"]["flops_per_s"]
    rec = dict(cpu_doc["devices"]["cpu"]["peak_flops"]["fp32"], flops_per_s=2 * fp32_fma, median_flops_per_s=2 * fp32_fma)
    cpu_doc["devices"]["cpu"]["tensor_flops"] = {"bf16": rec, "fp16": dict(rec, flops_per_s=2.3e9, warnings=["timed at n=256"])}
    cpu_doc["devices"]["cpu"]["tensor_flops_unsupported"] = [{"dtype": "int8", "reason": "no _int_mm here"}]
    cpu_doc["devices"]["cpu"]["peak_flops_unsupported"] = [{"dtype": "fp16", "reason": "no native fp16"}]
    data = report.report_data(cpu_doc)
    measured = {c["label"] for c in data["roofline"]["ceilings"] if c["measured"]}
    assert "bf16 matmul (measured)" in measured and "fp16 matmul (measured)" not in measured  # 2.3 GFLOP/s: no roof
    assert any(r["dtype"] == "bf16" for r in data["roofline"]["ridges"])
    text = report.markdown(data)
    assert "| matmul (torch) bf16 |" in text and "Matmuls torch refused here: int8 (no _int_mm here)." in text
    assert "FMA peaks not measured: fp16 (no native fp16)." in text
    lines = summary.section_lines(cpu_doc["devices"]["cpu"])
    assert "FMA peak fp16 not measured: no native fp16" in lines and "matmul int8 not measured: no _int_mm here" in lines
    read = cpu_doc["devices"]["cpu"]["bandwidth"]["read"]["bytes_per_s"]  # the summary names the matrix units' roof too
    assert (f"a balance of {fp32_fma / read:.1f} FLOP/byte (its bf16 matmul through torch: {si(2 * fp32_fma, 'FLOP/s')}, "
            f"a balance of {report.balance_text(2 * fp32_fma / read)}); decode attention") in text
    assert "through torch" not in report.markdown(report.report_data(doc))  # no matmul measured: the FMA alone
    half = copy.deepcopy(doc)  # AVX512-FP16 chains, no torch: the summary names them as its fastest
    half["devices"]["cpu"]["peak_flops"]["fp16"] = dict(half["devices"]["cpu"]["peak_flops"]["fp32"],
                                                        dtype="fp16", flops_per_s=2 * fp32_fma)
    assert (f"FLOP/byte (its fp16 FMA chains: {si(2 * fp32_fma, 'FLOP/s')}, a balance of "
            f"{report.balance_text(2 * fp32_fma / read)}); decode attention") in report.markdown(report.report_data(half))
    assert "- tensor_flops.fp16: timed at n=256" in text
    config, notes = export(cpu_doc, "llm-analysis", "cpu")
    assert config["peak_fp16_TFLOPS"] == pytest.approx(2 * fp32_fma / 1e12, rel=1e-3)  # bf16, not the slow fp16
    assert config["peak_i8_TFLOPS"] == pytest.approx(fp32_fma / 1e12, rel=1e-3)  # int8 refused: the FMA peak
    assert "peak_fp16_TFLOPS: the measured torch bf16 matmul peak" in notes
    # int4 x int4 products (llm-analysis' peak_i4) run widened: here as bf16, the fastest validated way
    assert config["peak_i4_TFLOPS"] == config["peak_fp16_TFLOPS"]
    assert ("peak_i4_TFLOPS: the measured torch bf16 matmul peak (int4 products widened: no int4 matmul is measured)"
            in notes)
    cpu_doc["devices"]["cpu"]["tensor_flops"] = {"reason": "torch is not installed (no module)"}
    assert "Matmul peaks not measured: torch is not installed" in report.markdown(report.report_data(cpu_doc))


def test_integer_matmuls_are_rated_in_operations_not_flops(doc):
    cpu_doc = copy.deepcopy(doc)
    rec = dict(cpu_doc["devices"]["cpu"]["peak_flops"]["fp32"], dtype="int8", flops_per_s=1.7e12, median_flops_per_s=1.6e12)
    cpu_doc["devices"]["cpu"]["tensor_flops"] = {"int8": rec}
    assert "| matmul (torch) int8 | 1.7 TOP/s | 1.6 TOP/s |" in report.markdown(report.report_data(cpu_doc))
    assert any("tensor_flops.int8" in line and "1.7 TOP/s" in line for line in section_lines(cpu_doc["devices"]["cpu"]))
    assert compare.section_metrics(cpu_doc["devices"]["cpu"])["tensor_flops.int8"][2] == "OP/s"
    assert compare.section_metrics(cpu_doc["devices"]["cpu"])["peak_flops.fp32"][2] == "FLOP/s"
    assert compare.section_metrics(cpu_doc["devices"]["cpu"])["balance.matmul_int8"][2] == "OP/B"
    assert compare.section_metrics(cpu_doc["devices"]["cpu"])["balance.fp32"][2] == "FLOP/B"


def test_balance_is_tabled_per_compute_roof_and_memory_level(doc):
    cpu_doc = copy.deepcopy(doc)
    sec = cpu_doc["devices"]["cpu"]
    fp32 = sec["peak_flops"]["fp32"]
    sec["tensor_flops"] = {"bf16": dict(fp32, dtype="bf16", flops_per_s=4 * fp32["flops_per_s"]),
                           "int8": dict(fp32, dtype="int8", flops_per_s=1.5e12),
                           "fp16": dict(fp32, dtype="fp16", validated=False, flops_per_s=9e15)}  # a wrong answer: no roof
    read = sec["bandwidth"]["read"]["bytes_per_s"]
    stored = validation.balance(sec)
    assert set(stored) == {"fp64", "fp32", "matmul_bf16", "matmul_int8"}
    assert stored["matmul_bf16"] == pytest.approx(4 * fp32["flops_per_s"] / read)
    sec["balance"] = stored
    table = report.report_data(cpu_doc)["balance"]
    levels = sec["hierarchy_levels"]
    assert table["levels"] == ["L1", "L2", "L3", "DRAM (read)"]
    assert [r["compute"] for r in table["rows"]] == ["fp64 FMA", "fp32 FMA", "bf16 matmul", "int8 matmul"]
    fp32_row = table["rows"][1]
    assert fp32_row["per_level"] == pytest.approx([fp32["flops_per_s"] / levels[lv]["bytes_per_s"] for lv in ("L1", "L2", "L3")]
                                                  + [stored["fp32"]])
    text = report.markdown(report.report_data(cpu_doc))
    assert "| compute | rate | L1 | L2 | L3 | DRAM (read) |" in text
    assert f"| int8 matmul | 1.5 TOP/s | {report.balance_text(1.5e12 / levels['L1']['bytes_per_s'])} |" in text
    assert any(line.startswith("balance matmul_int8") and line.endswith("OP/byte") for line in section_lines(sec))
    assert any(line.startswith("balance fp32") and line.endswith("FLOP/byte") for line in section_lines(sec))
    slow = validation.balance(dict(sec, tensor_flops={"fp16": dict(fp32, dtype="fp16", flops_per_s=read / 50)}))
    assert "balance matmul_fp16          0.02 FLOP/byte" in section_lines(dict(sec, balance=slow))  # not 0.0
    del sec["hierarchy_levels"]  # no sweep: the memory's column alone
    assert report.report_data(cpu_doc)["balance"]["levels"] == ["DRAM (read)"]
    del sec["bandwidth"]
    assert report.report_data(cpu_doc)["balance"] is None
    assert "No balance: the profile lacks a bandwidth or a peak measurement." in report.markdown(report.report_data(cpu_doc))


def test_cli_report_and_export(tmp_path):
    prof = tmp_path / "p.yaml"
    save_profile(load_profile(FIXTURE), prof)
    proc = run_cli("report", str(prof), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "README.md").exists()
    proc = run_cli("export", str(prof), "--format", "llm-analysis")
    assert proc.returncode == 0 and json.loads(proc.stdout)["peak_fp16_TFLOPS"] > 0


def test_a_report_for_one_machine_keeps_the_others_reported_earlier_in_the_index(doc, tmp_path):
    other = copy.deepcopy(doc)
    other["machine"]["id"] = "other-cpu-4c"
    stored = tmp_path / "profiles"
    stored.mkdir()
    save_profile(doc, stored / f"{doc['machine']['id']}.yaml")
    save_profile(other, stored / "other-cpu-4c.yaml")
    (stored / "broken-2c.yaml").write_text("schema_version: 1\nmachine: [")
    assert run_cli("report", cwd=str(tmp_path)).returncode == 2  # a malformed named (all stored) profile: nothing
    (stored / "broken-2c.yaml").unlink()
    assert run_cli("report", cwd=str(tmp_path)).returncode == 0
    (stored / "broken-2c.yaml").write_text("schema_version: 1\nmachine: [")
    (tmp_path / "reports" / "broken-2c").mkdir()
    (tmp_path / "reports" / "broken-2c" / "report.md").write_text("an earlier report")
    proc = run_cli("report", str(stored / "other-cpu-4c.yaml"), cwd=str(tmp_path))
    assert proc.returncode == 0 and "left out of the index" in proc.stderr and "broken-2c" in proc.stderr
    index = (tmp_path / "reports" / "README.md").read_text()
    assert f"[{doc['machine']['id']}]" in index and "[other-cpu-4c]" in index and "broken-2c" not in index
    header = (tmp_path / "reports" / "other-cpu-4c" / "report.md").read_text().splitlines()[2]
    assert "every number below is read from `profiles/other-cpu-4c.yaml`" in header  # the file, not a scratch path
    elsewhere = run_cli("report", str(stored / "other-cpu-4c.yaml"), "--out", str(tmp_path / "x"), cwd=str(tmp_path))
    assert elsewhere.returncode == 0  # a new folder: only what was reported there
    assert f"[{doc['machine']['id']}]" not in (tmp_path / "x" / "README.md").read_text()


def test_cli_report_refuses_two_runs_of_one_machine_and_writes_nothing(tmp_path):
    earlier, later = tmp_path / "earlier.yaml", tmp_path / "later.yaml"
    for path in (earlier, later):
        save_profile(load_profile(FIXTURE), path)
    proc = run_cli("report", str(earlier), str(later), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "are both of machine" in proc.stderr
    assert f"harness compare {earlier} {later}" in proc.stderr  # one report would have overwritten the other
    proc = run_cli("report", str(earlier), str(earlier), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "is given more than once" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_report_rejects_a_malformed_profile_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nmachine: [")
    proc = run_cli("report", FIXTURE, str(bad), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = run_cli("export", str(bad))
    assert proc.returncode == 2


def test_a_hybrid_cpus_cores_are_split_into_p_and_e_cores(doc):
    hybrid = copy.deepcopy(doc)
    hybrid["machine"]["cpu"].update(cores=14, threads=20, efficiency_cores=8)
    lines = report.markdown(report.report_data(hybrid, load_specs())).splitlines()
    assert "| cores / threads / sockets | 14 (6 P + 8 E) / 20 / 1 |" in lines
    assert "| cores / threads / sockets | 2 / 2 / 1 |" in report.markdown(report.report_data(doc, load_specs())).splitlines()


def test_where_the_fused_kernels_time_goes_is_tabled_for_points_with_their_in_core_rate():
    rec = {"impl": "numba-fused", "dtype": "bf16", "batch": 1, "heads": 32, "kv_heads": 32, "head_dim": 128,
           "seq_len": 262144, "time_s": 0.1595,
           "in_core": {"core_time_s": 0.0734, "memory_time_s": 0.1212, "no_overlap_time_s": 0.1946,
                       "full_overlap_time_s": 0.1212}}
    lines = report.in_core_markdown([rec, {**rec, "in_core": {"reason": "no L2"}}, {**rec, "impl": "torch-sdpa",
                                                                                      "in_core": None}], "##")
    assert lines[0] == "## Where the fused kernel's time goes"
    rows = [line for line in "\n".join(lines).splitlines() if line.startswith("| numba")]
    assert rows == ["| numba-fused bf16 B=1 H=32/32 d_h=128 S=262144 | n/a | 159.5 | 73.4 | 121.2 | 194.6 | 121.2 | 0.82 |"]
    assert report.in_core_markdown([{**rec, "in_core": {"reason": "no L2"}}], "##") == []
    tuned = {"stage_rows_in_l1": False, "prefetch_rows_ahead": 16, "prefetch_l2_rows_ahead": 128}
    (row,) = [line for line in "\n".join(report.in_core_markdown([{**rec, "kernel_config": tuned}], "##")).splitlines()
              if line.startswith("| numba")]
    assert row.startswith("| numba-fused bf16 B=1 H=32/32 d_h=128 S=262144 | direct, 16 rows ahead into L1, 128 into L2 | 159.5 |")
    before_l2 = {k: v for k, v in tuned.items() if k != "prefetch_l2_rows_ahead"}  # a profile from before the L2 setting
    assert report.kernel_setting(before_l2) == "direct, 16 rows ahead into L1"
    assert report.kernel_setting({"stage_rows_in_l1": True, "prefetch_rows_ahead": 0, "prefetch_l2_rows_ahead": 0}) == \
        "staged, no prefetch into L1, none into L2"


def test_a_decode_line_names_its_loops_time_where_the_in_core_task_ran():
    rec = {"impl": "numba-fused", "dtype": "fp32", "batch": 1, "heads": 32, "kv_heads": 32, "head_dim": 128,
           "seq_len": 262144, "time_s": 0.2739, "validated": True, "model_error": 0.11,
           "achieved": {"bytes_per_s": 31.4e9, "fraction_of_bandwidth": 0.90, "fraction_of_adjacent_read": 0.93},
           "in_core": {"core_time_s": 0.0423}}
    line = summary.decode_line(rec)
    assert line.endswith("0.90 of read bw (0.93 of the read beside it)  model error +11%  loops 42.3 ms in L2  ok")
    assert "loops" not in summary.decode_line({**rec, "in_core": {"reason": "the CPU reports no L2"}})
    # its count takes in its in-core task's warnings, which the warning lines name under it
    spread = ["wide spread: stdev is 12% of the mean (>= 10%)"]
    assert summary.decode_line({**rec, "in_core": {"core_time_s": 0.0423, "warnings": spread}}).endswith(
        "in L2  ok  [1 warning(s)]")
    assert summary.decode_line({**rec, "warnings": spread * 2, "in_core": {"warnings": spread}}).endswith(
        "ok  [3 warning(s)]")


def test_an_in_core_tasks_warnings_are_named_under_its_point():
    rec = {"impl": "numba-fused", "dtype": "int8", "batch": 1, "heads": 32, "kv_heads": 32, "head_dim": 128,
           "seq_len": 262144, "samples_s": [0.09], "warnings": [],
           "in_core": {"samples_s": [1.2e-4, 6e-5], "warnings": ["wide spread: IQR is 83% of the median"]}}
    assert summary.record_warnings({"decode_attention": [rec]}) == [
        "decode numba-fused int8 B=1 H=32/32 d_h=128 S=262144, its in-core task: wide spread: IQR is 83% of the median"]


def test_the_drills_predict_llama_as_harness_model_does(doc, tmp_path, capsys):
    """The drills' Llama steps and FFN crossover take each weight dtype's roof, as `harness model`
    does: on a CPU with fp16 FMAs twice fp32's rate, fp16 weights turn compute-bound at twice the
    batch the fp32 FMA peak would give."""
    from harness import cli

    with_fp16 = copy.deepcopy(doc)
    cpu = with_fp16["devices"]["cpu"]
    fp32 = cpu["peak_flops"]["fp32"]
    cpu["peak_flops"]["fp16"] = {**faster(copy.deepcopy(fp32), 2), "dtype": "fp16"}
    path = tmp_path / "with-fp16.yaml"
    save_profile(with_fp16, str(path), keep_history=False)
    d = report.drills(load_profile(str(path))["devices"]["cpu"])
    for dtype, step in (("fp16", d["llama2_fp16"]), ("int8", d["llama2_int8"])):
        assert cli.main(["model", "llama-2-7b", "--profile", str(path), "--dtype", dtype, "--json"]) == 0
        predicted = json.loads(capsys.readouterr().out)
        assert step["crossover_batch"] == pytest.approx(predicted["crossover_batch"])
        assert step["predicted_time_s"] == pytest.approx(predicted["predicted_time_s"])
    bw = cpu["bandwidth"]["read"]["bytes_per_s"]
    assert d["llama2_fp16"]["crossover_batch"] == pytest.approx(2 * fp32["flops_per_s"] / bw)  # 2B/2 bytes = B FLOP/byte
    text = "\n".join(report.drills_markdown(d))
    assert "(fp16 weights, against the fp16 FMA peak: the roof `harness model` takes for them)" in text
    assert f"Machine balance: {si(fp32['flops_per_s'], 'FLOP/s')} (fp32 FMA peak)" in text  # the page's drill: fp32


def test_the_report_says_which_read_kernel_the_read_ran_and_what_it_gained():
    sec = {"bandwidth": {"read": {"kernel_config": {"read_kernel": "256-bit x1", "median_s_per_setting": {
        "numba": 0.0630, "256-bit x1": 0.0545, "512-bit x4": 0.0620}}}}}
    line = report.read_kernel_lines(sec)[0]
    assert "`256-bit x1` (one sum of 256-bit vectors in flight)" in line and "1.16x the rate of Numba's own" in line
    sec["bandwidth"]["read"]["kernel_config"]["read_kernel"] = "512-bit x4"
    assert "(4 sums of 512-bit vectors in flight), 1.02x the rate" in report.read_kernel_lines(sec)[0]
    sec["bandwidth"]["read"]["kernel_config"]["read_kernel"] = "numba"
    assert "Numba's own kernel, the fastest of the 3 settings timed" in report.read_kernel_lines(sec)[0]
    assert report.read_kernel_lines({"bandwidth": {"read": {}}}) == []  # a profile from before the tuning
    sec["bandwidth"]["read"]["kernel_config"].update(read_kernel="vec512", median_s_per_setting={
        "numba": 0.0630, "vec512": 0.0600})  # a setting another version named: as recorded, no traceback
    assert "`vec512`, 1.05x the rate of Numba's own" in report.read_kernel_lines(sec)[0]


def test_the_report_says_the_bandwidth_kernels_and_peaks_were_timed_in_interleaved_rounds(doc):
    note = "were timed in interleaved rounds"
    assert note not in report.markdown(report.report_data(doc))  # a profile from before the rounds
    rounds = copy.deepcopy(doc)
    for rec in rounds["devices"]["cpu"]["bandwidth"].values():
        rec["interleaved_with"] = ["copy", "scale", "add", "triad", "read"]
    assert "The bandwidth kernels (copy, scale, add, triad, read) were timed in interleaved rounds" in report.markdown(
        report.report_data(rounds))
    for rec in rounds["devices"]["cpu"]["peak_flops"].values():
        rec["interleaved_with"] = ["fma_fp64", "fma_fp32"]
    (line, _) = report.rounds_lines(rounds["devices"]["cpu"])
    assert line.startswith("The bandwidth kernels (copy, scale, add, triad, read) and the FMA peaks (fma_fp64, fma_fp32) "
                           "were timed in interleaved rounds")
    rounds["devices"]["cpu"]["tensor_flops"] = {d: {"interleaved_with": ["matmul_fp32", "matmul_bf16"]} for d in ("fp32", "bf16")}
    assert report.rounds_lines(rounds["devices"]["cpu"])[0].startswith(
        "The bandwidth kernels (copy, scale, add, triad, read), the FMA peaks (fma_fp64, fma_fp32) and the matmul peaks "
        "(matmul_fp32, matmul_bf16) were timed in interleaved rounds")
    for point in rounds["devices"]["cpu"]["hierarchy"]:
        point["interleaved_with"] = ["read (16 KiB)", "read (22 KiB)", "read (32 KiB)"]
    assert report.rounds_lines(rounds["devices"]["cpu"])[0].startswith(
        "The bandwidth kernels (copy, scale, add, triad, read), the hierarchy sweep's reads at its 3 working sets, the "
        "FMA peaks (fma_fp64, fma_fp32) and the matmul peaks (matmul_fp32, matmul_bf16) were timed in interleaved rounds")
    del rounds["devices"]["cpu"]["bandwidth"], rounds["devices"]["cpu"]["hierarchy"]
    assert report.rounds_lines(rounds["devices"]["cpu"])[0].startswith(
        "The FMA peaks (fma_fp64, fma_fp32) and the matmul peaks (matmul_fp32, matmul_bf16) were timed")
    del rounds["devices"]["cpu"]["tensor_flops"]
    assert report.rounds_lines(rounds["devices"]["cpu"])[0].startswith("The FMA peaks (fma_fp64, fma_fp32) were timed")


def test_a_cpus_dot_product_peaks_are_rows_a_balance_and_the_ceiling_its_matmuls_are_held_to():
    dots = {"bf16": {"flops_per_s": 4.6e11, "median_flops_per_s": 4.5e11, "validated": True, "instruction": "vdpbf16ps"},
            "int8": {"flops_per_s": None, "median_flops_per_s": None, "validated": False, "instruction": "vpdpbusd",
                     "error": "vpdpbusd accumulator (0, 0) is 1, expected 2 after 3 steps"}}
    sec = {"dot_flops": dots, "tensor_flops": {"bf16": {"flops_per_s": 4.09e11, "median_flops_per_s": 3.9e11, "validated": True}},
           "peak_flops": {"fp32": {"flops_per_s": 2.3e11, "median_flops_per_s": 2.2e11, "validated": True}},
           "bandwidth": {"read": {"bytes_per_s": 3.5e10, "validated": True}},
           "dot_flops_unsupported": [{"dtype": "fp8", "reason": "no such instruction"}]}
    rows = report.peak_rows(sec, None)
    assert [r["metric"] for r in rows[-2:]] == ["peak bf16 dot product (vdpbf16ps)", "peak int8 dot product (vpdpbusd)"]
    assert rows[-2]["best"] == "460.0 GFLOP/s" and rows[-2]["theoretical"] == "n/a" and rows[-1]["flag"].startswith("WRONG: ")
    assert rows[-2]["flag"] == ""  # without their shapes no instruction rate: an older profile's records
    # with them: vdpbf16ps does 4 FLOPs a fp32 lane where an FMA does 2, both 16 lanes a zmm here (Zen 4's
    # profile: 468.6 GFLOP/s against fp32's 234.0, each instruction issued at the same rate)
    shape = {"threads": 2, "iterations_per_call": 20000, "simd_bits": 512}
    dots["bf16"].update(shape, flops_per_s=468.6e9, flops_per_call=4 * 256 * 2 * 20000, accumulators_per_thread=256)
    sec["peak_flops"]["fp32"].update(shape, flops_per_s=234.0e9, flops_per_call=2 * 256 * 2 * 20000, accumulators_per_thread=256)
    assert report.peak_rows(sec, None)[-2]["flag"] == "1.00x the fp32 FMA chains' instructions a second"
    dots["bf16"]["flops_per_s"] = 234.0e9  # a core that issues it on one of its two FMA pipes
    assert report.peak_rows(sec, None)[-2]["flag"] == "0.50x the fp32 FMA chains' instructions a second"
    dots["bf16"]["flops_per_s"] = 4.6e11
    (bf16,) = report.tensor_rows(sec, None, "matmul (torch)")
    assert bf16["flag"] == "89% of the bf16 dot-product peak (vdpbf16ps)"
    table = report.balance_table(sec, "DRAM")
    assert [r["compute"] for r in table["rows"]] == ["fp32 FMA", "bf16 dot product", "bf16 matmul"]  # the wrong int8: none
    assert table["rows"][1]["per_level"] == pytest.approx([4.6e11 / 3.5e10])
    assert validation.balance(sec)["dot_bf16"] == pytest.approx(4.6e11 / 3.5e10) and validation.balance(sec)["dot_int8"] is None
    assert "Dot-product peaks not measured: fp8 (no such instruction)." in report.matmul_notes(sec, gpu=False)
    for rec in dots.values():
        rec["interleaved_with"] = ["dot_bf16", "dot_int8"]
    assert report.rounds_lines(sec)[0].startswith("The dot-product peaks (dot_bf16, dot_int8) were timed in interleaved rounds")
    series = report.roofline_series("m", sec, 32 << 20)  # the bf16 dot raises the roof over the fp32 FMA: a ceiling
    assert [(c["roof"], c["dtype"]) for c in series["ceilings"] if c["measured"]] == [
        ("FMA", "fp32"), ("dot product", "bf16"), ("matmul", "bf16")]
    assert [r["name"] for r in series["ridges"]] == ["fp32 FMA", "bf16 dot product", "bf16 matmul"]  # the wrong int8: none
    assert "dotted measured dot product" in series["title"]
