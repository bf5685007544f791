"""Run probes on a device and assemble the profile: probe -> records -> derived figures."""

import os
import socket
import sys

from harness import cpu_peaks, machine, validation
from harness.errors import HarnessError, first_line
from harness.counters import check_mode
from harness.gpus import detect_gpus
from harness.profile import SCHEMA_VERSION, load_profile, measurement_records, utc_now
from harness.specs import load_specs, match_spec
from harness.summary import ghz, rate_unit, si
from harness.workload import Context, tiny_sizes
from probes import PROBES, load_runner, reserve_cpu_buffers, unavailable_reason

CPU_PROFILE_PROBES = ("stream", "hierarchy", "peak", "dot", "matmul", "threads", "decode")
TORCH_PROBES = ("matmul", "decode")  # they run torch: it is imported before Numba's threads (torch_first)
DEVICES = ("cpu", "gpu", "all")
DTYPES = Context.dtypes  # every dtype a probe's `--dtype` can name: each probe measures those it has


def check_threads(threads, cpu):
    """The thread count to use: `threads`, validated against the CPUs this process may use."""
    usable = cpu["usable_cpus"]
    if threads is None:
        return usable
    if not 1 <= threads <= usable:
        quota = (cpu.get("cgroup") or {}).get("cpu_quota")
        why = f"; the cgroup's CPU quota is {quota:g} CPUs" if quota is not None else ""
        raise HarnessError(f"--threads {threads} is invalid: choose 1 to {usable} (CPUs usable here{why})")
    return threads


def make_context(cpu, threads, quick, progress, dtypes=DTYPES, full=False, options=None, counters="off"):
    return Context(cpu=cpu, threads=check_threads(threads, cpu), quick=quick, tiny=tiny_sizes(),
                   progress=progress, dtypes=tuple(dtypes), full=full, options=dict(options or {}),
                   counters=counters)


def cpu_probe(name):
    """The probe's spec, or one clear error: unknown, or unable to run on this CPU."""
    spec = PROBES.get(name)
    if spec is None:
        raise HarnessError(f"unknown probe {name!r}: valid probes are {', '.join(PROBES)}")
    reason = unavailable_reason(spec, "cpu")
    if reason:
        raise HarnessError(f"probe {name} cannot run here: {reason}")
    return spec


def run_probe_on_cpu(name, ctx):
    """One probe's section of devices.cpu."""
    return load_runner(cpu_probe(name))(ctx)


def run_guarded(name, runner, section, progress):
    """section.update(runner()); if the probe raises, its error goes to section['probe_errors'][name]
    and the profile goes on: one probe's failure must not lose the others' measurements."""
    try:
        section.update(runner())
    except Exception as e:  # noqa: BLE001  (recorded, reported, and `harness profile` exits 1)
        message = f"{type(e).__name__}: {first_line(e)}"
        section.setdefault("probe_errors", {})[name] = message
        progress(f"probe {name} FAILED: {message}")


def torch_first():
    """Import torch before any Numba parallel kernel runs (probes/cpu_decode.torch_reason): None, or
    why torch cannot run here.

    Loading torch starts its own OpenMP runtime, which, where OMP_PROC_BIND is set, binds this
    thread to its first place; the thread's CPUs are given back after it, or Numba's runtime (a
    second libgomp) would put all its threads on that one CPU (on the 2-vCPU Zen 5 VM, the fp32
    FMA peak at two threads measured 228 GFLOP/s, at one 217)."""
    reason = unavailable_reason(PROBES["decode"], "cpu")
    if reason:
        return reason
    from probes.cpu_decode import torch_reason

    cpus = os.sched_getaffinity(0)
    try:
        return torch_reason()
    finally:
        os.sched_setaffinity(0, cpus)


def run_single_probe(name, device="cpu", threads=None, quick=False, options=None, progress=lambda m: None,
                     profile_path=None):
    """The Python API behind `harness probe`: one probe's records as plain data.

    Decode records are derived (prediction, fractions, model error) against this machine's stored
    profile when there is one (or `profile_path`)."""
    spec = PROBES.get(name)
    if spec is None:
        raise HarnessError(f"unknown probe {name!r}: valid probes are {', '.join(PROBES)}")
    if device != "cpu" and not (device.startswith("gpu") and device[3:].isdigit()):
        raise HarnessError(f"unknown device {device!r}: valid devices are cpu, gpu0, gpu1, ...")
    options = {k: v for k, v in (options or {}).items() if v is not None}
    counters = check_mode(options.pop("counters", "off"), device)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise HarnessError(f"probe {name} has no option {', '.join('--' + u.replace('_', '-') for u in unknown)}"
                           f" (its options: {', '.join('--' + o.replace('_', '-') for o in spec.options) or 'none'})")
    dtype = options.get("dtype")
    if dtype is not None and dtype not in spec.dtypes:
        raise HarnessError(f"--dtype {dtype!r} is not valid for probe {name}: valid are {', '.join(spec.dtypes)}")
    cpu = machine.identify_cpu()
    if device != "cpu":
        reason = unavailable_reason(spec, "gpu") or gpu_absence()
        if reason:
            raise HarnessError(f"device {device!r} is not valid for `probe {name}` here: valid devices are cpu ({reason})")
        from harness.gpu_run import count_with_ncu, run_one

        found, _ = detect_gpus()
        index = int(device[3:])
        if index >= len(found):
            raise HarnessError(f"device {device!r}: valid GPUs are gpu0 to gpu{len(found) - 1}")
        section = run_one(name, index, cpu, quick, tiny_sizes(), progress, options)
        if counters in ("auto", "ncu"):  # the records ncu counts in a profile, where this probe made them
            count_with_ncu(section, index, progress)
        return section
    if name in TORCH_PROBES:
        torch_first()
    if name == "decode":
        ctx = make_context(cpu, threads, quick, progress, options=options, counters=counters)
        section = run_probe_on_cpu(name, ctx)
        return derive_from_stored(section, cpu, profile_path)
    ctx = make_context(cpu, threads, quick, progress, dtypes=[dtype] if dtype else DTYPES, counters=counters)
    section = run_probe_on_cpu(name, ctx)
    refuse_unmeasured_dtype(section, name, dtype)
    theory = theoretical(cpu)
    flag_against_theory(section, theory, cpu)
    validation.flag_thread_scaling(section, cpu)
    validation.flag_parallel_scaling(section, cpu)
    validation.flag_disagreeing_precisions(section, theory)
    return section


def refuse_unmeasured_dtype(section, name, dtype):
    """The one dtype asked for (--dtype) that the probe left out here, as the error it is: its
    reason (fp16 FMAs on a CPU without native fp16 arithmetic), not an empty result and exit 0."""
    if not dtype or any(rec.get("dtype") == dtype for rec in measurement_records(section)):
        return
    left_out = [entry for key, entries in section.items() if key.endswith("_unsupported") for entry in entries
                if entry.get("dtype") == dtype]
    if left_out:
        raise HarnessError(f"probe {name} cannot measure --dtype {dtype} here: {left_out[0]['reason']}")


def derive_from_stored(section, cpu, profile_path=None):
    """Derive decode records against a stored profile's roofs, or say why they are missing."""
    path = profile_path or os.path.join("profiles", f"{cpu['id']}.yaml")
    if not os.path.exists(path):
        section["note"] = (f"no profile at {path}: predictions and fractions need measured roofs "
                           "(run `harness profile` first)")
        stored = {}
    else:
        stored = load_profile(path)["devices"].get("cpu", {})
        ran = sorted({r["threads"] for r in section.get("decode_attention") or []})
        if stored.get("threads") and ran and ran != [stored["threads"]]:
            section["note"] = (f"this run used {', '.join(map(str, ran))} thread(s) and the profile's roofs "
                               f"{stored['threads']} ({path}): predictions, fractions and model errors are "
                               f"against {stored['threads']} threads' bandwidth and peak")
    merged = {**{k: stored.get(k) for k in ("bandwidth", "peak_flops")}, **section}
    validation.validate_section(merged, machine.last_level_cache_bytes(cpu))
    section.update({k: merged[k] for k in ("decode_attention", "model_validation") if k in merged})
    return section


def gpu_absence():
    """None where a GPU can be profiled, else why not."""
    gpus, reason = detect_gpus()
    return reason


def theoretical(cpu):
    """devices.cpu.theoretical: peaks derived from the hardware, with how."""
    flops = cpu_peaks.theoretical_flops(cpu)
    dram = cpu_peaks.theoretical_dram_bandwidth()
    return {"bytes_per_s": dram["bytes_per_s"], "flops_per_s": flops["flops_per_s"],
            "flops_per_cycle_per_core": flops["flops_per_cycle_per_core"],
            "source": f"FLOP/s: {flops['source']}. Bytes/s: {dram['source']}",
            "matmul": cpu_peaks.theoretical_matmul_flops(cpu, flops)}


def flag_against_theory(section, theory, cpu):
    """Fraction of the theoretical peak of the cores the threads ran on (fewer than the machine's
    with --threads or a CPU quota; SMT siblings share a core's FMA units) on each FMA peak and
    matmul record; a figure above it carries a warning."""
    matmul = theory.get("matmul") or {}
    for key, per_cycle, peaks in (("peak_flops", theory.get("flops_per_cycle_per_core"), theory.get("flops_per_s")),
                                  ("tensor_flops", matmul.get("ops_per_cycle_per_core"), matmul.get("flops_per_s"))):
        for dtype, rec in (section.get(key) or {}).items():
            if not isinstance(rec, dict) or rec.get("flops_per_s") is None or not (per_cycle or {}).get(dtype):
                continue
            cores = min(rec["threads"], cpu["cores"])
            clock_hz = rec["flops_per_s"] / (cores * per_cycle[dtype])
            if key == "peak_flops":  # FMA chains run the units flat out: their rate gives the clock
                rec["implied_clock_hz"] = clock_hz
            peak = (peaks or {}).get(dtype)
            if not peak:  # the clock is unknown: the implied one is all there is
                continue
            peak *= cores / cpu["cores"]
            rec["theoretical_flops_per_s"] = peak
            rec["fraction_of_theoretical"] = rec["flops_per_s"] / peak
            if rec["flops_per_s"] > peak:
                rec["implied_clock_hz"] = clock_hz  # a matmul's: a floor (it does not run the units flat out)
                rec["warnings"].append(
                    f"exceeds the theoretical peak of {cores} core{'s' * (cores > 1)} ({si(peak, rate_unit(dtype))} at "
                    f"the nominal {ghz(cpu['frequency']['nominal_hz'])}): the cores ran at "
                    + (f"about {ghz(clock_hz)}" if key == "peak_flops" else f"{ghz(clock_hz)} or faster")
                    + ", above the clock this machine reports")
    validation.flag_bandwidth(section, theory.get("bytes_per_s"), "DRAM")


def flag_unpinned_sockets(section, ctx):
    """A warning where threads spanned sockets unpinned (the harness pins none: see docs/methodology.md): a
    thread can move to the other socket after first-touching its pages, then read them remotely."""
    if ctx.cpu["sockets"] > 1 and ctx.threads > 1 and not any(os.environ.get(v) for v in machine.AFFINITY_VARIABLES):
        section.setdefault("warnings", []).append(
            f"{ctx.threads} threads over {ctx.cpu['sockets']} sockets ran unpinned: bandwidth can vary from run to "
            "run as threads move away from the memory they first touched; pin them (OMP_PROC_BIND=spread "
            "OMP_PLACES=cores) to measure each socket's memory as STREAM does")


def flag_unknown_caches(section, cpu):
    """A warning where sysfs shows no caches (some containers; perhaps gVisor, unchecked): every size
    taken from the last-level cache (STREAM's arrays, the decode points counted as from DRAM) assumed
    one of ASSUMED_LLC_BYTES, which a server's cache can hold."""
    if not cpu.get("caches"):
        section.setdefault("warnings", []).append(
            "no caches are visible here (/sys/devices/system/cpu/cpu0/cache is missing or empty): the STREAM arrays "
            f"and the decode points counted as from DRAM were sized as if the last-level cache were "
            f"{machine.ASSUMED_LLC_BYTES >> 20} MiB; a larger one would serve part of them, and their bandwidth would "
            "read high (the hierarchy sweep's drop to memory shows where the cache really ends)")


def flag_clock_settings(section, cpu):
    """A warning where cpufreq caps the cores below the clock the theoretical peaks assume (its
    cpuinfo_max_freq). Turbo switched off is recorded, not warned of: intel_pstate and amd-pstate
    then lower cpuinfo_max_freq itself, and the theory with it (as their kernel sources read; unseen here)."""
    freq, cap = cpu.get("frequency") or {}, (cpu.get("clock_settings") or {}).get("scaling_max_hz")
    nominal = freq.get("nominal_hz") if (freq.get("source") or "").startswith("cpufreq") else None
    if nominal and cap and cap < 0.99 * nominal:
        section.setdefault("warnings", []).append(
            f"the OS caps the cores at {ghz(cap)} (cpufreq scaling_max_freq), below the {ghz(nominal)} "
            "(cpuinfo_max_freq) the theoretical peaks assume: compute figures fall short of them by as much")


def cpu_section(ctx, probe_names):
    """devices.cpu: every probe's records, theoretical peaks, flags and balance."""
    section = {"threads": ctx.threads, "quick": ctx.quick}
    for name in probe_names:  # each can run here, or one clear error before minutes of probing
        cpu_probe(name)
    if set(TORCH_PROBES) & set(probe_names):
        torch_first()
    reserve_cpu_buffers(ctx, probe_names)
    for name in probe_names:
        run_guarded(name, lambda name=name: run_probe_on_cpu(name, ctx), section, ctx.progress)
    theory = theoretical(ctx.cpu)
    flag_against_theory(section, theory, ctx.cpu)
    validation.flag_thread_scaling(section, ctx.cpu)
    validation.flag_parallel_scaling(section, ctx.cpu)
    validation.flag_disagreeing_repeats(section)
    validation.flag_disagreeing_memory_reads(section, "DRAM")
    validation.flag_disagreeing_dtype_reads(section)
    validation.flag_cache_beyond_reported(section, machine.last_level_cache_bytes(ctx.cpu), "DRAM")
    validation.flag_disagreeing_precisions(section, theory)
    flag_unpinned_sockets(section, ctx)
    flag_unknown_caches(section, ctx.cpu)
    flag_clock_settings(section, ctx.cpu)
    section["theoretical"] = theory
    if "peak_flops" in section and "bandwidth" in section:
        section["balance"] = validation.balance(section)
        section["balance_basis"] = ("measured peak_flops (FMA), dot_flops (dot_<dtype>) and validated tensor_flops "
                                    "(torch matmul, matmul_<dtype>) / measured bandwidth.read (DRAM, fp64 sum)")
    validation.validate_section(section, machine.last_level_cache_bytes(ctx.cpu))
    return section


def build_profile(device="all", threads=None, quick=False, progress=lambda m: None,
                  probe_names=CPU_PROFILE_PROBES, full=False, gpu_selection=None, counters="auto", checkpoint=None):
    """A complete profile of this machine (plain data, ready for profile.save_profile).
    `checkpoint(doc)` is handed the measured profile before ncu re-runs the GPU workloads (minutes,
    and a stalled ncu or a run cut short must not lose the measurements)."""
    if device not in DEVICES:
        raise HarnessError(f"unknown device {device!r}: valid devices are {', '.join(DEVICES)}")
    check_mode(counters, device)
    cpu = machine.identify_cpu()
    gpus, gpu_reason = detect_gpus()
    if gpus and not gpu_reason:
        from harness.gpu_run import gpu_probe_reason

        gpu_reason = gpu_probe_reason()
    if device == "gpu" and gpu_reason:
        raise HarnessError(f"--device gpu: no GPU can be profiled here ({gpu_reason})")
    if gpu_selection is not None:  # checked before minutes of CPU probing, not after
        if device == "cpu":
            raise HarnessError(f"--gpus {gpu_selection} selects GPUs, but --device cpu profiles none: "
                               "give --device gpu or all")
        if not gpus:
            raise HarnessError(f"--gpus {gpu_selection}: this machine has no GPU ({gpu_reason})")
        from harness.gpu_run import parse_selection

        parse_selection(gpu_selection, len(gpus))
    created = utc_now()
    devices = {}
    if device in ("cpu", "all"):
        devices["cpu"] = cpu_section(make_context(cpu, threads, quick, progress, full=full, counters=counters),
                                     probe_names)
    if device in ("gpu", "all") and not gpu_reason:
        from harness.gpu_run import gpu_sections

        found, gpu_reason = gpu_sections(gpus, gpu_selection, cpu, quick, tiny_sizes(), progress)
        devices.update(found)
    software = machine.identify_software()
    software["numba"] = machine.numba_threading()
    doc = {
        "schema_version": SCHEMA_VERSION,
        "created_utc": created,
        "command": " ".join(["harness"] + sys.argv[1:]),
        "machine": {"id": cpu["id"], "hostname": socket.gethostname(), "cpu": cpu,
                    "cpu_spec": (match_spec(cpu["model"], load_specs()) or {}).get("file"),
                    "gpus": gpus, "gpus_reason": gpu_reason},
        "software": software,
        "devices": devices,
    }
    counted = {name: sec for name, sec in devices.items() if name != "cpu"}
    if counted and counters in ("auto", "ncu"):
        from harness.gpu_run import count_gpus, mark_pending

        if checkpoint:
            mark_pending(counted)
            checkpoint(doc)
        count_gpus(counted, progress)
    return doc
