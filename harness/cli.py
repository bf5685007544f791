"""The `harness` command: one function per subcommand; user errors exit with code 2."""

import argparse
import json
import math
import os
import sys

from harness import interrupt
from harness.errors import HarnessError
from harness.profile import by_device

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away


def default_profile_path(machine_id):
    return os.path.join("profiles", f"{machine_id}.yaml")


def note_devices_left_behind(replaced, out, device, gpus):
    """A note, before any probe runs, where the profile this run replaces (`replaced`, at `out`) holds
    devices the run will not measure (`--device cpu` over a profile with gpu0): they go to history/ with it."""
    if replaced is None:
        return
    chosen = [x.strip() for x in gpus.split(",")] if gpus is not None else None
    if chosen is not None and not all(x.isdigit() for x in chosen):
        return  # a malformed --gpus is refused before probing, with its own error

    def measured(name):
        if name == "cpu":
            return device in ("cpu", "all")
        return device in ("gpu", "all") and (chosen is None or name[len("gpu"):] in chosen)

    left = [name for name, _ in by_device(replaced) if not measured(name)]
    if left:
        run_words = f"--device {device}" + (f" --gpus {gpus}" if gpus is not None else "")
        print(f"harness: note: {out} holds {', '.join(left)}, which this run ({run_words}) does not measure: "
              f"that profile moves to history/ and the new one will not have {'it' if len(left) == 1 else 'them'} "
              "(--device all profiles every device into one file)", file=sys.stderr)


def note_quick_over_full(replaced, out, quick):
    """A note, before any probe runs, where a --quick run replaces a full profile: its sweeps measure
    fewer points (hierarchy sizes, decode lengths and dtypes), so the full profile's others leave
    with it for history/."""
    full = [name for name, sec in by_device(replaced or {}) if sec.get("quick") is False]
    if quick and full:
        print(f"harness: note: {out} holds a full profile of {', '.join(full)}; this --quick run replaces it with "
              "sweeps of fewer points (the full profile moves to history/; --out elsewhere keeps it in place)",
              file=sys.stderr)


def cmd_profile(args):
    """Measure this machine and write its profile (previous one kept in history/)."""
    from harness import machine
    from harness.profile import check_writable, save_profile
    from harness.run import build_profile
    from harness.summary import profile_lines
    from harness.workload import stderr_progress

    machine_id = machine.identify_cpu()["id"]
    out = args.out or default_profile_path(machine_id)
    replaced = check_writable(out, machine_id)  # before minutes of probing, not after
    note_devices_left_behind(replaced, out, args.device, args.gpus)
    note_quick_over_full(replaced, out, args.quick)
    progress, written = stderr_progress(), []

    def checkpoint(doc):  # the measurements, written before ncu's re-runs (rewritten with their counts)
        written.append(save_profile(doc, out))
        progress(f"measurements written to {out}; counting GPU workloads under ncu")

    doc = build_profile(device=args.device, threads=args.threads, quick=args.quick, full=args.full,
                        progress=progress, gpu_selection=args.gpus, counters=args.counters, checkpoint=checkpoint)
    save_profile(doc, out, keep_history=not written)  # the checkpoint is this run's, not history
    print("\n".join(profile_lines(doc)))
    print(f"profile written to {out}; its report (markdown and plots): harness report {out}")
    suspect = sum(len(sec.get("warnings") or []) for sec in doc["devices"].values())
    if suspect:  # the last thing a terminal shows, below the per-measurement warnings
        print(f"harness: {suspect} warning{'s' * (suspect != 1)} about the run as a whole (WARNING above): the roofs "
              "taken from it are suspect; on a shared host, run `harness profile` again", file=sys.stderr)
    failed = [f"{device}: {name}: {message}" for device, sec in doc["devices"].items()
              for name, message in (sec.get("probe_errors") or {}).items()]
    for line in failed:
        print(f"harness: probe failed, its measurements are missing from the profile: {line}", file=sys.stderr)
    return 1 if failed else 0


def cmd_list(args):
    """Every probe, its devices, and whether it can run here."""
    from harness.run import gpu_absence
    from probes import PROBES, cpu_left_out, unavailable_reason

    rows = []
    for spec in PROBES.values():
        for device in ("cpu", "gpu"):
            reason = unavailable_reason(spec, device)
            if device == "gpu" and reason is None:
                reason = gpu_absence()
            nothing, left_out = cpu_left_out(spec) if device == "cpu" and reason is None else (False, None)
            rows.append({"probe": spec.name, "device": device, "runs_here": reason is None and not nothing,
                         "reason": reason or left_out, "description": spec.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = ("yes" + (f" ({r['reason']})" if r["reason"] else "")) if r["runs_here"] else f"no: {r['reason']}"
        print(f"{r['probe']:<10} {r['device']:<4} {state}")
        if r["device"] == "cpu":
            print(f"{'':<16}{r['description']}")
    return 0


def cmd_probe(args):
    """Run one probe and print its measurement."""
    from harness.run import run_single_probe
    from harness.summary import section_lines, warning_lines
    from harness.workload import stderr_progress

    options = {name: getattr(args, name) for name in ("dtype", "impl", "seq_len", "heads", "kv_heads", "head_dim", "batch")}
    options["counters"] = args.counters
    result = run_single_probe(args.name, device=args.device, threads=args.threads, quick=args.quick,
                              options=options, progress=stderr_progress())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(section_lines(result) + warning_lines(result)))
    return 0


def cmd_model(args):
    """Predicted per-token decode latency of a model preset on a profiled (or described) machine."""
    from harness import machine, model
    from harness.profile import default_device, device_names, load_profile
    from harness.summary import model_lines
    from harness.validation import compute_roof, roofs

    preset = model.load_preset(args.name)
    model.check_dtype(args.dtype, "weight and cache")
    weight_dtype = model.check_dtype(args.weight_dtype or args.dtype, "weight")
    cache_dtype = model.check_dtype(args.cache_dtype or args.dtype, "cache")
    if (args.bandwidth is None) != (args.flops is None):
        raise HarnessError("--bandwidth and --flops go together (bytes/s and FLOP/s)")
    if args.bandwidth is not None:
        if args.profile:
            raise HarnessError("give either --profile or --bandwidth/--flops, not both")
        if args.device:
            raise HarnessError(f"--device {args.device} picks a device of a profile: with --bandwidth/--flops there "
                               "is none (drop --device, or give --profile PATH instead of the rates)")
        bw, peak, where, memory = args.bandwidth, args.flops, "given rates", None
    else:
        path = args.profile or default_profile_path(machine.identify_cpu()["id"])
        if not os.path.exists(path):
            raise HarnessError(f"no profile at {path}: run `harness profile` first, or give --profile PATH "
                               "or --bandwidth BYTES_PER_S --flops FLOPS_PER_S")
        doc = load_profile(path)
        devices = doc.get("devices") or {}
        device = args.device or default_device(devices)
        if device not in devices:
            raise HarnessError(f"profile {path} has no device {device!r}: it has {device_names(devices)}")
        bw, fma = roofs(devices[device])
        if not (bw and fma):
            raise HarnessError(f"profile {path} has no measured read bandwidth and fp32 peak for {device} to predict with")
        peak, compute = compute_roof(devices[device], model.MATMUL_DTYPES[weight_dtype],
                                     "torch" if device == "cpu" else "tensor-core")
        where = f"{doc['machine']['id']} {device} ({path}: measured read bandwidth and {compute})"
        identity = devices[device].get("gpu") if device != "cpu" else doc["machine"].get("cpu")
        memory = (identity or {}).get("memory_bytes")  # NVML's, or the machine's RAM
    step = model.decode_step(preset, weight_dtype, args.batch, args.seq_len, bw, peak, cache_dtype, memory)
    step["machine"] = where
    print(json.dumps(step, indent=2) if args.json else "\n".join(model_lines(step)))
    return 0


def cmd_report(args):
    """Markdown and PNG reports from stored profiles, and the side-by-side index."""
    import glob

    from harness.profile import load_profile
    from harness.report import write_index, write_report
    from harness.specs import load_specs

    stored = sorted(glob.glob(os.path.join("profiles", "*.yaml")))
    paths = args.profiles or stored
    if not paths:
        raise HarnessError("no profiles given and none in profiles/: run `harness profile` first")
    docs = [load_profile(p) for p in paths]  # every file validated before anything is written
    check_one_profile_per_machine(docs, paths)
    specs = load_specs()
    written = [path for doc, source in zip(docs, paths)
               for path in write_report(doc, args.out, specs, source=os.path.relpath(source))]
    written.append(write_index(docs + reported_earlier(stored, docs, args.out), specs, args.out))
    print("\n".join(f"wrote {path}" for path in written))  # after every write: a reader gone stops none
    return 0


def check_one_profile_per_machine(docs, paths):
    """A report folder holds one machine: two profiles of it would write one report over the other."""
    first_of = {}
    for doc, path in zip(docs, paths):
        machine_id = doc["machine"]["id"]
        if machine_id not in first_of:
            first_of[machine_id] = path
        elif first_of[machine_id] == path:
            raise HarnessError(f"profile {path} is given more than once")
        else:
            earlier = first_of[machine_id]
            raise HarnessError(f"profiles {earlier} and {path} are both of machine {machine_id}: its report folder "
                               f"holds one; compare the two runs with `harness compare {earlier} {path}`")


def reported_earlier(stored, docs, out_dir):
    """The stored profiles, other than `docs`' machines, whose report is already in `out_dir`: the
    index keeps listing them when a report is made for one machine. A malformed one is named on
    stderr and left out."""
    from harness.profile import load_readable

    named = {d["machine"]["id"] for d in docs}
    ids = {path: os.path.splitext(os.path.basename(path))[0] for path in stored}  # profiles/<machine id>.yaml
    loaded, unreadable = load_readable([path for path, machine_id in ids.items() if machine_id not in named
                                        and os.path.exists(os.path.join(out_dir, machine_id, "report.md"))])
    for _, error in unreadable:
        print(f"left out of the index: {error}", file=sys.stderr)
    return [doc for _, doc in loaded if doc["machine"]["id"] not in named]


def cmd_export(args):
    """A profile's measured numbers in another tool's hardware-config format."""
    from harness.export import export
    from harness.profile import atomic_write_text, load_profile

    config, notes = export(load_profile(args.profile), args.format, args.device)
    text = json.dumps(config, indent=4) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_compare(args):
    """Regression report between two profiles; exit 1 when something regressed."""
    from harness import compare
    from harness.profile import atomic_write_text, load_profile

    base, new = load_profile(args.base), load_profile(args.new)  # both validated before any output
    cfg = compare.load_config(args.config) if args.config else {}
    threshold = (args.threshold if args.threshold is not None else cfg.get("threshold_pct", 5)) / 100
    result = compare.compare(base, new, threshold, cfg.get("metrics", {}))
    text = (json.dumps(compare.as_json(result, args.base, args.new), indent=2) if args.json
            else compare.markdown(result, args.base, args.new))
    if args.out:  # before the report is printed, which fails where its reader went away
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    for pattern in result["unmatched_patterns"]:
        print(f"harness: note: compare config pattern {pattern!r} matches no metric of these profiles", file=sys.stderr)
    print(text)
    return 1 if compare.has_regression(result) else 0


def cmd_history(args):
    """A metric's trend over profiles/history/<id>/, as a table and a PNG."""
    from harness import compare, history
    from harness.summary import ghz

    if not os.path.isdir(args.profiles):
        what = "is not a folder" if os.path.exists(args.profiles) else "does not exist"
        raise HarnessError(f"--profiles {args.profiles} {what}: give the folder `harness profile` writes into "
                           "(profiles/, with its history/)")
    docs, unreadable = history.profiles_of(args.machine_id, args.profiles)
    for _, error in unreadable:
        print(f"left out of the trend: {error}", file=sys.stderr)
    if not docs:
        known = history.machine_ids(args.profiles)
        raise HarnessError(f"no readable profiles of machine {args.machine_id!r} in {args.profiles}/ or its history/"
                           + (f": machines there are {', '.join(known)}" if known else ""))
    metrics = args.metric or history.headline_metrics(docs)
    for metric in metrics:
        rows = history.trend(docs, metric)
        if all(r["median"] is None and not r["step"] for r in rows):  # a step: its output check failed there
            raise HarnessError(f"metric {metric!r} is in none of the profiles of {args.machine_id}: valid are "
                               f"{history.metric_choices(metric, history.metric_names(docs))}")
        path = os.path.join(args.out, args.machine_id, f"history-{metric.replace('/', '_')}.png")
        # the PNG before printing, which fails where the reader went away
        history.plot(metric, rows, path, f"{args.machine_id}: {metric} over time")
        print(f"{metric}")
        for r in rows:
            clock = f"at {ghz(r['clock_hz'])}" if r["clock_hz"] else ""
            print(f"  {r['created_utc']}  {compare.value_text(r['median'], r['unit']):>14}  {clock:<13}  {r['step']}")
        print(f"  wrote {path}")
    return 0


def cmd_fleet_run(args):
    """One rank of a fleet run (start it with mpirun or srun); rank 0 writes the results."""
    from harness.fleet import fleet_run
    from harness.workload import stderr_progress

    summary = fleet_run(args.name, args.out, quick=args.quick, threads=args.threads, progress=stderr_progress("fleet"))
    if summary is None:
        return 0
    folder = os.path.join(args.out, args.name)
    print(f"fleet {args.name}: {len(summary['nodes'])} profiles in {folder} ({summary['launched_via']})")
    for f in summary["failed"]:
        print(f"  rank {f['rank']} on {f['host']} FAILED: {f['error']}")
    if summary.get("note"):
        print(summary["note"])
    return 1 if summary["failed"] else 0


def cmd_fleet_report(args):
    """Which nodes are slower than their peers; exit 1 when there are outliers, failed ranks or
    unreadable profiles."""
    from harness import fleet
    from harness.profile import atomic_write_text

    nodes, summary, unreadable = fleet.load_fleet(args.dir)
    threshold = args.threshold / 100
    result = fleet.analyse(nodes, threshold)
    text = fleet.markdown(result, summary, args.dir, threshold, unreadable)
    out = args.out or os.path.join(args.dir, "report.md")
    atomic_write_text(out, text)
    for row in result["rows"]:
        if any(key in row["metric"] for key in fleet.HEADLINE_PLOTS):
            fleet.plot_metric(row, os.path.join(os.path.dirname(os.path.abspath(out)), f"{row['metric']}.png"))
    print(text)  # after every write: printing fails where the reader went away
    print(f"wrote {out}", file=sys.stderr)
    for _, error in unreadable:
        print(f"left out: {error}", file=sys.stderr)
    failed = (summary or {}).get("failed")
    return 1 if fleet.outliers(result) or failed or unreadable else 0


def cmd_show(args):
    """Print a stored profile's summary (validated on load)."""
    from harness.profile import load_profile
    from harness.summary import profile_lines

    doc = load_profile(args.profile)
    print(json.dumps(doc, indent=2) if args.json else "\n".join(profile_lines(doc)))
    return 0


def _bounded(parse, noun, valid, bound):
    """An argparse type: `parse` the text, and refuse a value that is not finite or fails `valid`,
    saying `bound`."""
    def check(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not math.isfinite(value) or not valid(value):
            raise argparse.ArgumentTypeError(f"{value} is invalid: must be {bound}")
        return value
    return check


positive_int = _bounded(int, "a whole number", lambda v: v >= 1, "at least 1")
nonnegative_float = _bounded(float, "a number", lambda v: v >= 0, "a finite number, 0 or more")
# a machine's bandwidth or FLOP rate: outside 1 to 1e30 per second it is no machine (the fastest are near
# 1e18), and the ratio of two such figures (the balance, a crossover batch) can overflow
rate_per_s = _bounded(float, "a number", lambda v: 1 <= v <= 1e30, "a rate from 1 to 1e30 per second")


def parser():
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("profile", help="measure this machine and write profiles/<machine-id>.yaml")
    size = sp.add_mutually_exclusive_group()  # a quick run of the full sweep is neither
    size.add_argument("--quick", action="store_true", help="fewer samples and sizes (under a minute)")
    size.add_argument("--full", action="store_true", help="longer decode sweep (more lengths, groups, dtypes)")
    sp.add_argument("--device", default="all", choices=["cpu", "gpu", "all"])
    sp.add_argument("--threads", type=positive_int, help="CPU threads (default: every usable CPU)")
    sp.add_argument("--gpus", help="GPU indices to profile, e.g. 0,2 (default: all)")
    sp.add_argument("--counters", default="auto", choices=["auto", "off", "perf", "ncu"],
                    help="hardware counters: auto (whatever works here), off, perf (CPU), ncu (GPU)")
    sp.add_argument("--out", help="profile path (default: profiles/<machine-id>.yaml)")
    sp.set_defaults(func=cmd_profile)

    sp = sub.add_parser("list", help="every probe and whether it can run here")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("probe", help="run one probe and print its measurement")
    sp.add_argument("name", help="probe name (see `harness list`)")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--threads", type=positive_int)
    sp.add_argument("--dtype", help="stream/hierarchy: fp64 or fp32; peak: fp64, fp32 or fp16; dot: bf16 or int8; decode: fp32, bf16, fp16 or int8")
    sp.add_argument("--quick", action="store_true")
    sp.add_argument("--json", action="store_true", help="print the records as JSON")
    sp.add_argument("--counters", default="off", choices=["auto", "off", "perf", "ncu"],
                    help="count with perf (CPU) or ncu (GPU: the fp32 triad, the fp32 FMA, the longest cupy-fused cache)")
    decode = sp.add_argument_group("decode options (one shape; defaults: numba-fused fp32, S=16384, "
                                   "H=32, H_kv=H, d_h=128, B=1)")
    decode.add_argument("--impl", help="numba-fused, torch-sdpa, torch-naive, or all")
    decode.add_argument("--seq-len", type=positive_int)
    decode.add_argument("--heads", type=positive_int)
    decode.add_argument("--kv-heads", type=positive_int)
    decode.add_argument("--head-dim", type=positive_int)
    decode.add_argument("--batch", type=positive_int)
    sp.set_defaults(func=cmd_probe)

    sp = sub.add_parser("model", help="predicted per-token decode latency of a model on a profiled machine")
    sp.add_argument("name", help="model preset (profiles/models/NAME.yaml), a preset YAML path, or a Hugging "
                    "Face config.json (Llama, Mistral, Qwen2, Qwen3)")
    sp.add_argument("--profile", help="profile to take the measured roofs from (default: this machine's)")
    sp.add_argument("--bandwidth", type=rate_per_s, help="bytes/s, instead of a profile (with --flops)")
    sp.add_argument("--flops", type=rate_per_s, help="FLOP/s, instead of a profile (with --bandwidth)")
    sp.add_argument("--device", help="the profile's device: cpu, gpu0, ... (default: its first GPU, else cpu)")
    sp.add_argument("--batch", type=positive_int, default=1)
    sp.add_argument("--seq-len", type=positive_int, default=4096)
    sp.add_argument("--dtype", default="fp16", help="weight and cache dtype: fp32, fp16, bf16, int8, int4 (default fp16)")
    sp.add_argument("--weight-dtype", help="the weights' dtype, where it differs from --dtype (int4 weights, fp16 cache)")
    sp.add_argument("--cache-dtype", help="the KV cache's dtype, where it differs from --dtype")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_model)

    sp = sub.add_parser("report", help="markdown + PNG reports from stored profiles (never runs a probe)")
    sp.add_argument("profiles", nargs="*", help="profile files (default: profiles/*.yaml)")
    sp.add_argument("--out", default="reports", help="output folder (default: reports)")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("export", help="a profile's measured numbers in another tool's format")
    sp.add_argument("profile")
    sp.add_argument("--format", default="llm-analysis", help="llm-analysis")
    sp.add_argument("--device", help="cpu, gpu0, ... (default: the first GPU if the profile has one, else cpu)")
    sp.add_argument("--out", help="file to write (default: print)")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("compare", help="regression report between two profiles (exit 1 on a regression)")
    sp.add_argument("base")
    sp.add_argument("new")
    sp.add_argument("--threshold", type=nonnegative_float, help="practical threshold in percent (default 5)")
    sp.add_argument("--config", help="YAML: threshold_pct and per-metric overrides {glob: percent}")
    sp.add_argument("--out", help="also write the report here (markdown, or JSON with --json)")
    sp.add_argument("--json", action="store_true",
                    help="the verdicts as JSON (every metric's medians, change, CI and verdict) instead of markdown")
    sp.set_defaults(func=cmd_compare)

    sp = sub.add_parser("history", help="a metric's trend over a machine's stored profiles")
    sp.add_argument("machine_id")
    sp.add_argument("--metric", action="append", help="e.g. bandwidth.read; give it again for more "
                                                      "(default: the headline metrics)")
    sp.add_argument("--profiles", default="profiles", help="profiles folder (default: profiles)")
    sp.add_argument("--out", default="reports", help="where the PNG goes (default: reports)")
    sp.set_defaults(func=cmd_history)

    fl = sub.add_parser("fleet", help="profile many machines through mpirun/srun, and find the slow ones")
    fsub = fl.add_subparsers(dest="fleet_command", required=True)
    sp = fsub.add_parser("run", help="one rank of a fleet profile: mpirun -np N harness fleet run ...")
    sp.add_argument("--name", default="fleet")
    sp.add_argument("--out", default=os.path.join("profiles", "fleet"))
    sp.add_argument("--quick", action="store_true")
    sp.add_argument("--threads", type=positive_int, help="CPU threads per rank (default: the cores it is bound to)")
    sp.set_defaults(func=cmd_fleet_run)
    sp = fsub.add_parser("report", help="each node against the fleet median; exit 1 on outliers")
    sp.add_argument("dir")
    sp.add_argument("--threshold", type=nonnegative_float, default=10.0, help="percent worse than the median (default 10)")
    sp.add_argument("--out", help="markdown report (default: DIR/report.md)")
    sp.set_defaults(func=cmd_fleet_report)

    sp = sub.add_parser("show", help="summarise a stored profile")
    sp.add_argument("profile")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_show)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        with interrupt.handled():
            return args.func(args)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("harness: interrupted; no profile was changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout's reader went away (`harness compare A B | head`): quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # or the exit's flush fails again
        return EXIT_BROKEN_PIPE
