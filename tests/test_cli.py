"""The CLI end to end at tiny sizes (HARNESS_TINY=1), and every bad-input case: exit code 2."""

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, faster, hf_config, run_cli
from harness import cpu_peaks, validation
from harness.machine import identify_cpu
from harness.profile import BANDWIDTH_KERNELS, load_profile, measurement_records, save_profile

COMMITTED_PROFILE = os.path.join(ROOT, "profiles", "amd-epyc-zen4-2c.yaml")


@pytest.fixture(scope="module")
def quick_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("prof") / "machine.yaml"
    proc = run_cli("profile", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_profile_writes_a_valid_profile_with_the_contract_keys(quick_profile):
    out, proc = quick_profile
    doc = load_profile(out)
    cpu = doc["devices"]["cpu"]
    for kernel in BANDWIDTH_KERNELS:
        rec = cpu["bandwidth"][kernel]
        for key in ("bytes_per_s", "median_bytes_per_s", "samples_s", "bytes_per_call",
                    "working_set_bytes", "threads", "validated", "warnings"):
            assert key in rec, (kernel, key)
        assert rec["validated"] and rec["bytes_per_s"] >= rec["median_bytes_per_s"] > 0
    from probes.cpu_peak import unsupported_reason

    # fp16's FMA chains where the cores have them, else the reason they were left out
    fp16 = unsupported_reason(doc["machine"]["cpu"], "fp16")
    peaks = ("fp64", "fp32") + (() if fp16 else ("fp16",))
    assert cpu.get("peak_flops_unsupported", []) == ([{"dtype": "fp16", "reason": fp16}] if fp16 else [])
    for dtype in peaks:
        rec = cpu["peak_flops"][dtype]
        assert rec["validated"] and rec["flops_per_s"] > 0 and rec["flops_per_call"] > 0
        assert cpu["balance"][dtype] == pytest.approx(rec["flops_per_s"] / cpu["bandwidth"]["read"]["bytes_per_s"])
    matmuls = [d for d, rec in (cpu.get("tensor_flops") or {}).items() if isinstance(rec, dict) and rec.get("validated")]
    for dtype in matmuls:  # torch's matmuls (AMX, VNNI) have a balance of their own
        assert cpu["balance"][f"matmul_{dtype}"] == pytest.approx(
            cpu["tensor_flops"][dtype]["flops_per_s"] / cpu["bandwidth"]["read"]["bytes_per_s"])
    from probes.cpu_dot import DTYPES as DOTS, unsupported_reason

    # the dot-product chains this CPU's instructions give (vdpbf16ps, vpdpbusd), else why each was left out
    dots = [d for d in DOTS if not unsupported_reason(doc["machine"]["cpu"], d)]
    assert [u["dtype"] for u in cpu.get("dot_flops_unsupported", [])] == [d for d in DOTS if d not in dots]
    for dtype in dots:
        rec = cpu["dot_flops"][dtype]
        assert rec["validated"] and cpu["balance"][f"dot_{dtype}"] == pytest.approx(
            rec["flops_per_s"] / cpu["bandwidth"]["read"]["bytes_per_s"])
    assert set(cpu["balance"]) == {*peaks, *(f"dot_{d}" for d in dots), *(f"matmul_{d}" for d in matmuls)}
    # the report's balance table: the memory's column is the stored balance, a cache's divides by its level
    from harness import report

    table = report.report_data(doc)["balance"]
    assert table["levels"][-1] == "DRAM (read)" and table["levels"][:-1] == [
        lv for lv in ("L1", "L2", "L3") if (cpu["hierarchy_levels"].get(lv) or {}).get("bytes_per_s")]
    stored = ([cpu["balance"][k] for k in peaks] + [cpu["balance"][f"dot_{d}"] for d in dots]
              + [cpu["balance"][f"matmul_{d}"] for d in matmuls])
    assert [r["per_level"][-1] for r in table["rows"]] == pytest.approx(stored)
    l1 = cpu["hierarchy_levels"]["L1"]["bytes_per_s"]
    assert table["rows"][1]["per_level"][0] == pytest.approx(cpu["peak_flops"]["fp32"]["flops_per_s"] / l1)
    assert all({"working_set_bytes", "bytes_per_s", "level"} <= set(p) for p in cpu["hierarchy"])
    assert set(cpu["theoretical"]) >= {"bytes_per_s", "flops_per_s", "source"}
    assert [r["threads"] for r in cpu["thread_sweep"]["triad"]][-1] == cpu["threads"]
    assert doc["machine"]["id"] and doc["software"]["numba"]["layer"]
    assert "stream fp64: copy, scale, add, triad, read in interleaved rounds" in proc.stderr  # progress goes to stderr
    assert "profile written to" in proc.stdout and "its report (markdown and plots): harness report " in proc.stdout


def test_profiling_again_keeps_history(quick_profile):
    out, _ = quick_profile
    before = load_profile(out)
    time.sleep(1.1)  # history files are named by the second
    proc = run_cli("profile", "--quick", "--device", "cpu", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    history = out.parent / "history" / before["machine"]["id"]
    kept = [load_profile(history / f) for f in os.listdir(history)]
    assert before in kept
    assert load_profile(out)["devices"]["cpu"]["threads"] == 1


def test_list_says_what_runs_here():
    proc = run_cli("list", "--json")
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)
    names = {r["probe"] for r in rows}
    assert {"stream", "hierarchy", "peak"} <= names
    assert all(r["runs_here"] or r["reason"].startswith("torch is not importable") for r in rows if r["device"] == "cpu")
    assert all(r["reason"] for r in rows if not r["runs_here"])
    gpu_reason = {r["probe"]: r["reason"] for r in rows if r["device"] == "gpu"}
    assert "timed by its peak probe (harness probe peak --device gpu0)" in gpu_reason["matmul"]
    assert gpu_reason["threads"].startswith("probe threads does not run on gpu: it sweeps CPU threads")


def test_probe_names_each_warning_it_counts(monkeypatch, capsys):
    """`harness probe` printed '[1 warning(s)]' and kept the warning itself for --json."""
    from harness import cli, run

    rec = {"samples_s": [1e-3, 1e-3], "validated": True, "threads": 1, "bytes_per_s": 1e10, "median_bytes_per_s": 1e10,
           "warnings": ["machine busy: CPU steal time was 3.2% of CPU time during the measurement"]}
    monkeypatch.setattr(run, "run_single_probe", lambda *a, **k: {"bandwidth": {"triad": rec}})
    assert cli.main(["probe", "stream"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bandwidth.triad") and out[0].endswith("[1 warning(s)]")
    assert out[1] == "warning: bandwidth.triad: machine busy: CPU steal time was 3.2% of CPU time during the measurement"


def test_show_names_each_warning_of_a_profile():
    proc = run_cli("show", COMMITTED_PROFILE)
    assert proc.returncode == 0, proc.stderr
    doc = load_profile(COMMITTED_PROFILE)
    said = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("warning: ")]
    counts = [int(n) for n in re.findall(r"\[(\d+) warning\(s\)\]", proc.stdout)]
    counted = sum(len(r.get("warnings") or []) + len((r.get("in_core") or {}).get("warnings") or [])
                  for r in measurement_records(doc["devices"]["cpu"]))  # a decode point's in-core task's too
    assert counted and len(said) == counted == sum(counts)  # every warning the record lines count, said


def test_probe_json_prints_validated_records():
    proc = run_cli("probe", "stream", "--dtype", "fp32", "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"bandwidth_fp32"}
    assert all(r["validated"] and r["threads"] == 1 for r in result["bandwidth_fp32"].values())


def test_probe_holds_its_records_to_the_theory_as_a_profile_does():
    proc = run_cli("probe", "peak", "--dtype", "fp32", "--json")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)["peak_flops"]["fp32"]
    theory = cpu_peaks.theoretical_flops(identify_cpu())  # `harness probe` took no fraction or flag before
    assert ("implied_clock_hz" in rec) == bool(theory["flops_per_cycle_per_core"])
    assert ("fraction_of_theoretical" in rec) == bool(theory["flops_per_s"]["fp32"])
    assert any("exceeds the theoretical peak" in w for w in rec["warnings"]) == (rec.get("fraction_of_theoretical", 0) > 1)


def test_probe_of_a_dtype_this_cpu_leaves_out_is_an_error_with_the_reason(monkeypatch):
    from harness.errors import HarnessError
    from harness.run import run_single_probe
    from probes import cpu_peak

    real = cpu_peak.unsupported_reason
    monkeypatch.setattr(cpu_peak, "unsupported_reason",
                        lambda cpu, dtype: "no native fp16 vector arithmetic (test)" if dtype == "fp16" else real(cpu, dtype))
    with pytest.raises(HarnessError, match=r"probe peak cannot measure --dtype fp16 here: no native fp16 vector "
                                           r"arithmetic \(test\)"):  # was an empty result, exit 0
        run_single_probe("peak", options={"dtype": "fp16"})
    assert set(run_single_probe("peak", quick=True, options={"dtype": "fp64"})["peak_flops"]) == {"fp64"}


def test_probe_text_output():
    proc = run_cli("probe", "peak", "--dtype", "fp64")
    assert proc.returncode == 0, proc.stderr
    # the rate's prefix depends on how busy the machine is at tiny sizes (MFLOP/s under load): any
    assert re.search(r"peak_flops\.fp64 +best +[\d.]+ [kMGT]?FLOP/s +median +[\d.]+ [kMGT]?FLOP/s", proc.stdout), proc.stdout


def test_show_summarises_a_profile(quick_profile):
    out, _ = quick_profile
    proc = run_cli("show", str(out))
    assert proc.returncode == 0 and "bandwidth.triad" in proc.stdout
    # a record's line bears the name compare gives its metric (a hierarchy point's is its level)
    from harness import compare

    names = [m for m in compare.section_metrics(load_profile(out)["devices"]["cpu"])
             if m.split(".")[0] in ("bandwidth", "bandwidth_fp32", "peak_flops", "tensor_flops", "thread_sweep")]
    assert "thread_sweep.triad.1" in names
    shown = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert set(names) <= shown, set(names) - shown


def test_a_file_that_is_no_text_is_one_clear_message(tmp_path):
    """A model config, a compare config or a spec that is no UTF-8 text: exit 2, the file named."""
    from harness import specs
    from harness.errors import HarnessError

    for name in ("config.json", "thresholds.yaml", "spec.yaml"):
        (tmp_path / name).write_bytes(b"\xff\xfe\x00 not text")
    proc = run_cli("model", str(tmp_path / "config.json"), "--bandwidth", "1e11", "--flops", "1e12")
    assert proc.returncode == 2 and f"model preset {tmp_path / 'config.json'} cannot be read: 'utf-8' codec" in proc.stderr
    proc = run_cli("compare", COMMITTED_PROFILE, COMMITTED_PROFILE, "--config", str(tmp_path / "thresholds.yaml"))
    assert proc.returncode == 2 and f"compare config {tmp_path / 'thresholds.yaml'} cannot be read" in proc.stderr
    with pytest.raises(HarnessError, match="spec .*spec.yaml cannot be read: 'utf-8' codec"):
        specs.load_spec(str(tmp_path / "spec.yaml"))


@pytest.mark.parametrize("args,needle", [
    (["probe", "nosuch"], "valid probes are stream"),
    (["probe", "stream", "--device", "tpu"], "unknown device 'tpu'"),
    (["probe", "stream", "--device", "gpu0"], "valid devices are cpu"),
    (["profile", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["profile", "--threads", "0"], "must be at least 1"),
    (["profile", "--quick", "--full"], "argument --full: not allowed with argument --quick"),
    (["probe", "stream", "--threads", "4096"], "choose 1 to"),
    (["profile", "--threads", "many"], "not a whole number"),
    (["profile", "--out", "/proc/harness.yaml"], "cannot write the profile"),
    (["show", "/nonexistent/p.yaml"], "does not exist"),
    (["report", COMMITTED_PROFILE, "--out", "/proc/harness-reports"], "cannot write /proc/harness-reports/"),
    (["export", COMMITTED_PROFILE, "--out", "/proc/harness.json"], "cannot write /proc/harness.json"),
    (["compare", COMMITTED_PROFILE, COMMITTED_PROFILE, "--out", "/proc"], "cannot write /proc: Is a directory"),
])
def test_bad_input_is_one_clear_message_and_exit_2(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_profile_does_not_replace_another_machines_profile(tmp_path):
    doc = load_profile(COMMITTED_PROFILE)
    doc["machine"]["id"] = "another-machine-2c"  # whichever machine runs the tests
    out = tmp_path / "other.yaml"
    save_profile(doc, out)
    before = out.read_text()
    proc = run_cli("profile", "--quick", "--out", str(out))
    assert proc.returncode == 2 and "holds a profile of machine 'another-machine-2c'" in proc.stderr
    assert out.read_text() == before and sorted(os.listdir(tmp_path)) == ["other.yaml"]


def test_profile_does_not_overwrite_a_malformed_file(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("schema_version: 1\ndevices: [truncated")
    proc = run_cli("profile", "--quick", "--out", str(bad))
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr
    assert bad.read_text() == "schema_version: 1\ndevices: [truncated"
    proc = run_cli("show", str(bad))
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


def test_foreign_yaml_is_rejected(tmp_path):
    foreign = tmp_path / "f.yaml"
    foreign.write_text("apiVersion: v1\nkind: Pod\n")
    proc = run_cli("show", str(foreign))
    assert proc.returncode == 2 and "no schema_version" in proc.stderr


def test_ctrl_c_during_profile_leaves_the_previous_profile_intact(quick_profile, tmp_path):
    src, _ = quick_profile
    out = tmp_path / "m.yaml"
    out.write_text(src.read_text())
    before = out.read_text()
    env = dict(os.environ, PYTHONPATH=ROOT)  # real sizes: long enough to interrupt
    proc = subprocess.Popen([sys.executable, "-m", "harness", "profile", "--quick", "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until probing has started, then interrupt as Ctrl-C would
    line = proc.stderr.readline()
    assert "stream" in line or "harness" in line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert out.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["m.yaml"]


def test_profile_holds_decode_records_and_a_verdict(quick_profile):
    out, _ = quick_profile
    cpu = load_profile(out)["devices"]["cpu"]
    recs = cpu["decode_attention"]
    assert {r["impl"] for r in recs} >= {"numba-fused"}
    assert {r["dtype"] for r in recs} == {"fp32", "int8"}  # --quick skips the 16-bit kernels
    for r in recs:
        assert r["validated"] and r["rel_error"] <= r["tolerance"]
        assert r["time_s"] == r["median_time_s"] and r["model"]["predicted_time_s"] > 0
        assert set(r["achieved"]) == {"bytes_per_s", "flops_per_s", "fraction_of_bandwidth", "fraction_of_peak_flops"}
        assert r["model_error"] == pytest.approx(r["time_s"] / r["model"]["predicted_time_s"] - 1)
        assert r["counters"]["source"] == "unavailable" and r["counters"]["reason"]
    assert "finding" in cpu["model_validation"]


def test_probe_decode_json(tmp_path):
    proc = run_cli("probe", "decode", "--impl", "all", "--seq-len", "37", "--heads", "4", "--kv-heads", "2",
                   "--head-dim", "64", "--batch", "3", "--json", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    recs = result["decode_attention"]
    assert all(r["validated"] and r["seq_len"] == 37 and r["kv_heads"] == 2 for r in recs)
    assert "no profile at" in result["note"]  # run outside the repo: nothing to derive fractions from


def test_model_with_explicit_rates_reproduces_the_seed_figures():
    proc = run_cli("model", "llama-2-7b", "--bandwidth", "2e12", "--flops", "312e12", "--seq-len", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    step = json.loads(proc.stdout)
    for key in ("model", "weight_dtype", "cache_dtype", "batch", "seq_len", "weight_bytes", "cache_bytes", "flops", "intensity",
                "bandwidth_bytes_per_s", "peak_flops_per_s", "predicted_time_s", "regime"):
        assert key in step
    assert step["seed_weight_bytes"] == pytest.approx(12.9e9, rel=0.01)  # the page's 12*L*d^2*s
    assert step["weight_bytes"] == 2 * 6_607_077_376  # the architecture's: gated FFN 11008 wide, LM head
    assert step["predicted_time_s"] == pytest.approx(6.61e-3, rel=0.01)
    assert step["regime"] == "memory-bound" and step["crossover_batch"] == pytest.approx(156)


def test_model_reads_a_hugging_face_config(tmp_path):
    qwen3 = hf_config("qwen3-0.6b")
    config = tmp_path / "Qwen3-0.6B" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps(qwen3))
    proc = run_cli("model", str(config), "--bandwidth", "1e11", "--flops", "1e12", "--json")
    assert proc.returncode == 0, proc.stderr
    step = json.loads(proc.stdout)
    assert step["model"] == "Qwen3-0.6B" and step["weights_counted"] == "architecture" and step["window"] is None
    assert step["cache_bytes"] == 2 * 28 * 4096 * 8 * 128 * 2  # head_dim 128 from the config, not 1024 / 16
    assert step["context_tokens"] == 40960  # max_position_embeddings
    config.write_text(json.dumps({**qwen3, "architectures": ["GPT2LMHeadModel"]}))
    proc = run_cli("model", str(config), "--bandwidth", "1e11", "--flops", "1e12")
    assert proc.returncode == 2 and "GPT2LMHeadModel is not modelled" in proc.stderr


def test_model_against_a_profile(quick_profile):
    out, _ = quick_profile
    proc = run_cli("model", "mistral-7b", "--profile", str(out), "--seq-len", "32768", "--batch", "4")
    assert proc.returncode == 0, proc.stderr
    assert "predicted per-token latency" in proc.stdout and "window 4096" in proc.stdout
    assert "(the seed page's 12*L*d^2 counts 12.9 GB, -9%)" in proc.stdout  # mistral's weights: 14.2 GB
    assert "note: seq_len 32768 is beyond mistral-7b's 8192-token context" in proc.stdout
    # a CPU without fp16 arithmetic, whose torch fp16 matmul is a slow fallback: fp16 weights run at the fp32 FMA peak
    doc = load_profile(out)
    fma = doc["devices"]["cpu"]["peak_flops"]["fp32"]
    doc["devices"]["cpu"]["peak_flops"].pop("fp16", None)
    doc["devices"]["cpu"]["tensor_flops"] = {"fp16": dict(faster(fma, 1 / 100), dtype="fp16")}
    doc["devices"]["cpu"]["balance"] = validation.balance(doc["devices"]["cpu"])  # as the probes write it
    slow_fp16 = out.parent / "slow-fp16.yaml"
    save_profile(doc, slow_fp16)
    proc = run_cli("model", "llama-2-7b", "--profile", str(slow_fp16), "--json")
    step = json.loads(proc.stdout)
    assert step["peak_flops_per_s"] == fma["flops_per_s"] and "fp32 FMA peak" in step["machine"]
    # one with native fp16 FMA chains (AVX512-FP16) computes on fp16 weights at their rate
    doc["devices"]["cpu"]["peak_flops"]["fp16"] = dict(faster(fma, 2), dtype="fp16")
    doc["devices"]["cpu"]["balance"] = validation.balance(doc["devices"]["cpu"])
    save_profile(doc, slow_fp16)
    step = json.loads(run_cli("model", "llama-2-7b", "--profile", str(slow_fp16), "--json").stdout)
    assert step["peak_flops_per_s"] == pytest.approx(2 * fma["flops_per_s"]) and "fp16 FMA peak" in step["machine"]


@pytest.mark.parametrize("args,needle", [
    (["model", "gpt-9"], "valid presets are llama-2-7b"),
    (["model", "llama-2-7b", "--dtype", "fp8", "--bandwidth", "1e9", "--flops", "1e9"], "unknown weight and cache dtype 'fp8'"),
    (["model", "llama-2-7b", "--weight-dtype", "int3", "--bandwidth", "1e9", "--flops", "1e9"], "unknown weight dtype 'int3'"),
    (["model", "llama-2-7b", "--cache-dtype", "fp8", "--bandwidth", "1e9", "--flops", "1e9"], "unknown cache dtype 'fp8'"),
    (["model", "llama-2-7b", "--bandwidth", "1e9"], "go together"),
    (["model", "llama-2-7b", "--device", "gpu0", "--bandwidth", "1e9", "--flops", "1e9"], "picks a device of a profile"),
    (["model", "llama-2-7b", "--bandwidth", "-1", "--flops", "1e12"], "must be a rate from 1 to 1e30 per second"),
    (["model", "llama-2-7b", "--bandwidth", "1e9", "--flops", "0"], "must be a rate from 1 to 1e30 per second"),
    (["model", "llama-2-7b", "--bandwidth", "nan", "--flops", "1e12"], "must be a rate from 1 to 1e30 per second"),
    (["model", "llama-2-7b", "--bandwidth", "1e9", "--flops", "inf"], "must be a rate from 1 to 1e30 per second"),
    (["model", "llama-2-7b", "--bandwidth", "1e-300", "--flops", "1e12"], "1e-300 is invalid: must be a rate from 1 to 1e30 per second"),
    (["model", "llama-2-7b", "--bandwidth", "1", "--flops", "1.7e308"], "1.7e+308 is invalid: must be a rate from 1 to 1e30 per second"),
    (["compare", "a.yaml", "b.yaml", "--threshold", "nan"], "must be a finite number, 0 or more"),
    (["probe", "decode", "--heads", "6", "--kv-heads", "4", "--seq-len", "8"], "divisible by kv-heads"),
    (["probe", "decode", "--seq-len", "0"], "must be at least 1"),
    (["probe", "decode", "--impl", "torch-sdpa", "--dtype", "int8", "--seq-len", "8"], "does not support int8 caches"),
    (["probe", "decode", "--dtype", "fp64"], "valid are fp32, bf16, fp16, int8"),
    (["probe", "decode", "--seq-len", "4000000000"], "needs about"),
    (["probe", "decode", "--impl", "flash"], "valid impls are"),
    (["probe", "stream", "--dtype", "int8"], "valid are fp64, fp32"),
    (["probe", "stream", "--seq-len", "8"], "has no option --seq-len"),
])
def test_decode_and_model_bad_input(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_model_without_a_profile_says_so(tmp_path):
    proc = run_cli("model", "llama-2-7b", cwd=str(tmp_path))
    assert proc.returncode == 2 and "no profile at" in proc.stderr


@pytest.mark.parametrize("device, gpus, left", [
    ("cpu", None, "gpu0, gpu1"), ("gpu", None, "cpu"), ("gpu", "1", "cpu, gpu0"), ("all", "0,1", None), ("all", None, None)])
def test_profile_notes_the_devices_its_run_leaves_behind(tmp_path, monkeypatch, capsys, device, gpus, left):
    """`--device cpu` over a profile with GPUs says, before probing, that they go to history/ with it."""
    from harness import cli, run
    from harness.errors import HarnessError

    doc = load_profile(COMMITTED_PROFILE)
    doc["machine"]["id"] = identify_cpu()["id"]  # this machine's, or it is refused before the note
    doc["devices"]["gpu0"] = doc["devices"]["gpu1"] = copy.deepcopy(doc["devices"]["cpu"])
    out = tmp_path / "m.yaml"
    save_profile(doc, out)

    def stop(**_):
        raise HarnessError("stopped before probing")

    monkeypatch.setattr(run, "build_profile", stop)
    argv = ["profile", "--device", device, "--out", str(out)] + (["--gpus", gpus] if gpus else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    if left:
        assert f"{out} holds {left}, which this run (--device {device}{' --gpus ' + gpus if gpus else ''}) " \
               "does not measure" in err and "(--device all profiles every device into one file)" in err
    else:
        assert "does not measure" not in err


def test_a_profile_with_warnings_about_the_run_says_so_last(tmp_path, monkeypatch, capsys):
    """A shared VM's host spells (its memory flipping between two speeds, both vCPUs on one core)
    leave run-level warnings among fifty lines of per-measurement ones: the last line names them."""
    from harness import cli, run

    doc = load_profile(COMMITTED_PROFILE)
    doc["machine"]["id"] = identify_cpu()["id"]
    doc["devices"]["cpu"]["warnings"] = ["the hierarchy sweep's DRAM level differs", "STREAM medians differ"]
    monkeypatch.setattr(run, "build_profile", lambda **_: copy.deepcopy(doc))
    assert cli.main(["profile", "--out", str(tmp_path / "m.yaml")]) == 0  # warnings are no failure
    err = capsys.readouterr().err.rstrip().splitlines()
    assert err[-1] == ("harness: 2 warnings about the run as a whole (WARNING above): the roofs taken from it are "
                       "suspect; on a shared host, run `harness profile` again")
    doc["devices"]["cpu"]["warnings"] = []
    assert cli.main(["profile", "--out", str(tmp_path / "m.yaml")]) == 0
    assert "about the run as a whole" not in capsys.readouterr().err


@pytest.mark.parametrize("stored_quick, run_quick, noted", [(False, True, True), (False, False, False), (True, True, False)])
def test_a_quick_run_over_a_full_profile_says_so_before_probing(tmp_path, monkeypatch, capsys, stored_quick, run_quick,
                                                                 noted):
    from harness import cli, run
    from harness.errors import HarnessError

    doc = load_profile(COMMITTED_PROFILE)
    doc["machine"]["id"] = identify_cpu()["id"]
    doc["devices"]["cpu"]["quick"] = stored_quick
    out = tmp_path / "m.yaml"
    save_profile(doc, out)
    monkeypatch.setattr(run, "build_profile", lambda **_: (_ for _ in ()).throw(HarnessError("stopped before probing")))
    assert cli.main(["profile", "--out", str(out)] + (["--quick"] if run_quick else [])) == 2
    err = capsys.readouterr().err
    assert (f"{out} holds a full profile of cpu; this --quick run replaces it with sweeps of fewer points" in err) == noted


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path):
    """`harness compare A B | head`: no BrokenPipeError traceback, exit 141 as a shell reports it."""
    out = tmp_path / "report.md"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "compare", COMMITTED_PROFILE, COMMITTED_PROFILE, "--out",
                             str(out)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the report is printed
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == f"wrote {out}\n"
    assert out.read_text().startswith("# Regression report")  # --out written all the same
    reports = tmp_path / "reports"  # two reports and the index, all written
    proc = subprocess.Popen([sys.executable, "-m", "harness", "report", COMMITTED_PROFILE,
                             os.path.join(ROOT, "profiles", "amd-epyc-zen5-2c.yaml"), "--out", str(reports)],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141 and "Traceback" not in err
    assert {p.name for p in reports.rglob("*.md")} == {"report.md", "README.md"} and len(list(reports.glob("*/report.md"))) == 2


def test_list_says_what_torch_leaves_out_without_it(monkeypatch, capsys):
    """Without torch the matmul probe measures nothing and decode runs numba-fused alone: `list` says so."""
    from harness import cli

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert cli.main(["list", "--json"]) == 0
    rows = {(r["probe"], r["device"]): r for r in json.loads(capsys.readouterr().out)}
    matmul, decode, stream = rows["matmul", "cpu"], rows["decode", "cpu"], rows["stream", "cpu"]
    assert not matmul["runs_here"] and matmul["reason"].startswith("torch is not importable")
    assert decode["runs_here"] and decode["reason"].startswith("torch-sdpa, torch-naive left out: torch is not importable")
    assert stream["runs_here"] and stream["reason"] is None
    assert cli.main(["list"]) == 0
    assert "decode     cpu  yes (torch-sdpa, torch-naive left out: torch is not importable" in capsys.readouterr().out


def test_list_says_where_the_cpu_cannot_run_the_fp16_chains(monkeypatch, capsys):
    from harness import cli, machine

    cpu = machine.identify_cpu()
    monkeypatch.setattr(machine, "identify_cpu", lambda: dict(cpu, simd=["avx2", "fma"]))
    assert cli.main(["list", "--json"]) == 0
    peak = {(r["probe"], r["device"]): r for r in json.loads(capsys.readouterr().out)}["peak", "cpu"]
    assert peak["runs_here"] and peak["reason"].startswith("fp16 left out: no native fp16 vector arithmetic")
    monkeypatch.setattr(machine, "identify_cpu", lambda: dict(cpu, simd=["avx512f", "fma", "avx512_fp16"]))
    assert cli.main(["list", "--json"]) == 0
    peak = {(r["probe"], r["device"]): r for r in json.loads(capsys.readouterr().out)}["peak", "cpu"]
    assert peak["runs_here"] and peak["reason"] is None
    # no vector FMA: no dtype runs, and the probe does not run here; each dot instruction missing, by name
    monkeypatch.setattr(machine, "identify_cpu", lambda: dict(cpu, simd=["avx", "sse4_2"]))
    assert cli.main(["list", "--json"]) == 0
    rows = {(r["probe"], r["device"]): r for r in json.loads(capsys.readouterr().out)}
    assert not rows["peak", "cpu"]["runs_here"]
    assert rows["peak", "cpu"]["reason"].startswith("fp64 and fp32 and fp16 left out: no FMA among the x86 CPU's flags")
    assert not rows["dot", "cpu"]["runs_here"] and rows["dot", "cpu"]["reason"] == (
        "bf16 left out: no vdpbf16ps among the CPU's flags (avx512_bf16); "
        "int8 left out: no vpdpbusd or sdot among the CPU's flags (avx512_vnni or avx_vnni or asimddp)")


def test_the_readmes_cli_synopsis_names_every_option():
    import argparse

    from harness.cli import parser

    with open(os.path.join(ROOT, "README.md")) as f:
        synopsis = f.read().split("## The CLI", 1)[1].split("```", 2)[1]
    entries = {}  # "harness fleet run" -> its lines (a continuation line is indented)
    for line in synopsis.strip().splitlines():
        if line.startswith("harness "):
            key = line
        entries[key] = entries.get(key, "") + line

    def options(p, command):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from options(sub, f"{command} {name}")
            else:
                yield from ((command, o) for o in action.option_strings if o.startswith("--") and o != "--help")

    def entry(command):
        return next((text for key, text in entries.items() if key.startswith(command + " ")), "")

    missing = [f"{command} {option}" for command, option in options(parser(), "harness") if option not in entry(command)]
    assert not missing, f"README's CLI synopsis leaves out {missing}"
