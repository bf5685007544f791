"""Profile many machines through an existing launcher (mpirun, srun), and find the slow ones.

`fleet run` is started once per rank by the launcher. Each rank finds its rank, size and local
rank (mpi4py, else the launcher's environment), profiles what it owns (its GPU where the node has
GPUs, one per local rank; otherwise the CPU cores it is bound to), and rank 0 gathers every result
and writes one profile per rank under profiles/fleet/<name>/ plus summary.yaml. `fleet report`
compares every node with the fleet median (no probe runs there).
"""

import glob
import os
import socket
import statistics
import traceback

from harness.compare import FLOP_GROUPS, metric_failures
from harness.errors import HarnessError, read_yaml
from harness.profile import LOADER, atomic_write_text, dump, load_readable, save_profile, try_writing_in, utc_now
from harness.summary import CLOCK_SETTINGS, natural_key, rate_unit, si, switch_text
from harness.validation import headline_fraction

ENV_LAUNCHERS = (  # (rank, size, local rank) variables of common launchers
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)
MAD_SCALE = 1.4826  # MAD of a normal sample x 1.4826 estimates its standard deviation
OUTLIER_MADS = 3.0
DEFAULT_THRESHOLD = 0.10
HEADLINE_PLOTS = ("bandwidth.triad", "bandwidth.read", "peak_flops.fp32", "decode.fraction_of_read", "sm_clock_hz")


def rank_info(environ=os.environ, use_mpi=True):
    """{'rank', 'size', 'local_rank', 'via', 'comm'}: mpi4py's world, else the launcher's variables."""
    if use_mpi:
        try:
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
            local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
            return {"rank": comm.Get_rank(), "size": comm.Get_size(), "local_rank": local, "via": "mpi4py", "comm": comm}
        except (ImportError, RuntimeError):  # no mpi4py, or mpi4py without an MPI library to load
            pass
    for rank_var, size_var, local_var in ENV_LAUNCHERS:
        if rank_var in environ and size_var in environ:
            rank, size, local = (_env_count(environ, name, default) for name, default in
                                 ((rank_var, None), (size_var, None), (local_var, "0")))
            if not 0 <= rank < size:
                raise HarnessError(f"{rank_var}={rank} is outside 0 to {size - 1} ({size_var}={size})")
            return {"rank": rank, "size": size, "local_rank": local, "via": rank_var.split("_")[0].lower(), "comm": None}
    return {"rank": 0, "size": 1, "local_rank": 0, "via": "single process", "comm": None}


def _env_count(environ, name, default):
    """A launcher's variable as a whole number 0 or more; a clear error where it is not one."""
    text = environ.get(name, default)
    if not (text or "").strip().isdigit():
        raise HarnessError(f"the launcher's {name}={text!r} is not a whole number: rank, size and local rank must be")
    return int(text)


def rank_gpu(local_rank, gpus, host):
    """The GPU a rank profiles, of those CUDA shows it: the only one, where the launcher gave each
    rank its own (srun --gpus-per-task=1 sets CUDA_VISIBLE_DEVICES per task), else its local rank's."""
    if len(gpus) == 1:
        return gpus[0]
    if local_rank >= len(gpus):
        raise HarnessError(f"local rank {local_rank} has no GPU of its own ({len(gpus)} on {host})")
    return gpus[local_rank]


def profile_this_rank(info, quick, threads, progress):
    """This rank's result: {'rank', 'host', 'name', 'doc'} or {'rank', 'host', 'error'}."""
    from harness.gpus import detect_gpus
    from harness.run import build_profile

    host = socket.gethostname()
    result = {"rank": info["rank"], "host": host, "local_rank": info["local_rank"]}
    try:
        gpus, _ = detect_gpus()
        if gpus:
            gpu = rank_gpu(info["local_rank"], gpus, host)
            doc = build_profile(device="gpu", quick=quick, progress=progress, gpu_selection=str(gpu["index"]))
            result["name"] = f"{host}-gpu{gpu['nvml_index']}"
        else:
            doc = build_profile(device="cpu", threads=threads, quick=quick, progress=progress)
            result["name"] = f"{host}-r{info['rank']}" if info["size"] > 1 else host
        doc["fleet"] = {"rank": info["rank"], "size": info["size"], "local_rank": info["local_rank"], "host": host,
                        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
        result["doc"] = doc
    except Exception as e:  # a failing rank is reported by name; the others' results are kept
        result["error"] = f"{type(e).__name__}: {e}"
        result["trace"] = traceback.format_exc(limit=3)
    return result


def output_problem(folder):
    """Why rank 0 cannot write the fleet's results into `folder` (None: it can), found before any
    rank profiles, not after the whole fleet has."""
    try:
        try_writing_in(folder)
    except OSError as e:
        return f"cannot write the fleet's results to {folder}: {e.strerror or e}"
    return None


def fleet_run(name, out_dir, quick=False, threads=None, progress=lambda m: None, environ=os.environ):
    """Run on every rank; rank 0 writes the profiles and the summary. Returns rank 0's summary or None."""
    info = rank_info(environ)
    if info["comm"] is None and info["size"] > 1:  # every rank stops before profiling for nothing
        raise HarnessError(f"launched as rank {info['rank']} of {info['size']} ({info['via']}) but mpi4py is not "
                           "installed, so results cannot be gathered: pip install mpi4py")
    folder = os.path.join(out_dir, name)
    problem = output_problem(folder) if info["rank"] == 0 else None
    if info["comm"] is not None:  # every rank stops, not only the one that writes
        problem = info["comm"].bcast(problem, root=0)
    if problem:
        raise HarnessError(problem)
    mine = profile_this_rank(info, quick, threads, progress)
    results = info["comm"].gather(mine, root=0) if info["comm"] is not None else [mine]
    if info["rank"] != 0:
        return None
    nodes, failed, owner = [], [], {}
    for r in sorted(results, key=lambda r: r["rank"]):
        if "doc" in r and owner.setdefault(r["name"], r["rank"]) != r["rank"]:
            r = {**r, "error": f"profiled the same device as rank {owner[r['name']]} ({r['name']}): give each rank "
                              "its own GPU or cores"}
            r.pop("doc")
        if "doc" in r:
            path = os.path.join(folder, f"{r['name']}.yaml")
            save_profile(r["doc"], path)
            nodes.append({"rank": r["rank"], "host": r["host"], "name": r["name"], "profile": os.path.basename(path)})
        else:
            failed.append({"rank": r["rank"], "host": r["host"], "error": r["error"]})
    summary = {"fleet": name, "created_utc": utc_now(), "ranks": info["size"], "launched_via": info["via"],
               "nodes": nodes, "failed": failed}
    if info["size"] == 1:
        summary["note"] = ("a fleet of one: start it with a launcher to profile every node, e.g. "
                           f"`mpirun -np N harness fleet run --name {name}` or `srun harness fleet run --name {name}`")
    atomic_write_text(os.path.join(folder, "summary.yaml"), dump(summary))
    return summary


def node_metrics(doc):
    """{metric: (value, higher_is_better)} for one node's profile: the headline figures."""
    out = {}
    for dev, section in (doc.get("devices") or {}).items():
        for kernel, rec in (section.get("bandwidth") or {}).items():
            if rec.get("bytes_per_s"):
                out[f"{dev}.bandwidth.{kernel}"] = (rec["median_bytes_per_s"], True)
        for level, rec in (section.get("hierarchy_levels") or {}).items():
            if rec.get("bytes_per_s"):
                out[f"{dev}.hierarchy.{level}"] = (rec["bytes_per_s"], True)
        for group in FLOP_GROUPS:
            for dtype, rec in (section.get(group) or {}).items():
                if isinstance(rec, dict) and rec.get("flops_per_s"):
                    out[f"{dev}.{group}.{dtype}"] = (rec["median_flops_per_s"], True)
        per_dtype = (section.get("model_validation") or {}).get("per_dtype") or {}
        fraction, _ = headline_fraction(per_dtype)  # the point and figure the model's verdict is of
        if fraction:
            out[f"{dev}.decode.fraction_of_read"] = (fraction, True)
        for probe, tele in (section.get("telemetry") or {}).items():
            clock = (tele.get("sm_clock_hz") or {}).get("median")
            if clock:
                out[f"{dev}.sm_clock_hz.{probe}"] = (clock, True)
    return out


CONFIG_FIELDS = (("driver", ("gpu", "driver_version"), str), ("ecc", ("gpu", "ecc_mode"), switch_text),
                 ("max SM clock", ("gpu", "max_sm_clock_hz"), lambda hz: f"{hz / 1e6:.0f} MHz"),  # 1980 vs 1950 differ
                 ("power limit", ("gpu", "power_limit_w"), lambda w: f"{w:.0f} W"))


def config_of(doc):
    """Configuration a healthy fleet shares, as the text the report shows (and compares, so a
    MemTotal a few hundred KiB apart between boots is the same 25.3 GB): CPU, memory, kernel,
    Python, packages, the CPU's cpufreq settings, GPU driver/ECC/clocks."""
    memory = doc["machine"].get("cpu", {}).get("memory_bytes")
    cfg = {"cpu model": doc["machine"].get("cpu", {}).get("model"), "memory": si(memory, "B") if memory else None,
           "kernel": doc["software"].get("kernel"), "python": doc["software"].get("python")}
    cfg.update({f"package {k}": v for k, v in (doc["software"].get("packages") or {}).items()})
    clock = doc["machine"].get("cpu", {}).get("clock_settings") or {}  # a node left on powersave, or capped
    cfg.update({f"cpu {label}": text(clock[key]) for key, label, text in CLOCK_SETTINGS if clock.get(key) is not None})
    for dev, section in (doc.get("devices") or {}).items():
        for label, (a, b), text in CONFIG_FIELDS:
            value = (section.get(a) or {}).get(b)
            if value is not None:
                cfg[f"{dev} {label}"] = text(value)
        for probe, tele in (section.get("telemetry") or {}).items():
            if tele.get("clocks_event_reasons"):
                cfg[f"{dev} throttle reasons ({probe})"] = ", ".join(tele["clocks_event_reasons"])
    return cfg


def load_fleet(folder):
    """(nodes {name: doc}, summary or None, unreadable [(file, error)]): every profile validated; one
    that is malformed is set aside with its error so that the others are still compared."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise HarnessError(f"fleet folder {folder} is a file: give the folder `harness fleet run` wrote (a profile per "
                           "node and summary.yaml)")
    if not os.path.isdir(folder):
        raise HarnessError(f"fleet folder {folder} does not exist")
    paths = [p for p in sorted(glob.glob(os.path.join(folder, "*.yaml"))) if os.path.basename(p) != "summary.yaml"]
    loaded, unreadable = load_readable(paths)
    nodes = {os.path.basename(path)[:-5]: doc for path, doc in loaded}
    unreadable = [(os.path.basename(path), error) for path, error in unreadable]
    summary = None
    spath = os.path.join(folder, "summary.yaml")
    if os.path.exists(spath):
        summary = read_yaml(spath, "fleet summary", LOADER)
        failed = summary.get("failed", []) if isinstance(summary, dict) else None
        if not (isinstance(failed, list) and all(isinstance(f, dict) and {"rank", "host", "error"} <= set(f) for f in failed)):
            raise HarnessError(f"fleet summary {spath} is malformed: expected a mapping whose `failed` lists ranks "
                               "as {rank, host, error}")
    if not nodes and not (summary or {}).get("failed"):
        raise HarnessError(f"fleet folder {folder} holds no readable profiles"
                           + "".join(f"; {error}" for _, error in unreadable))
    return nodes, summary, unreadable


def analyse(nodes, threshold=DEFAULT_THRESHOLD):
    """Per metric: fleet median, MAD, each node's ratio, and outliers (see `is_outlier`)."""
    per_metric = {}
    for node, doc in nodes.items():
        for metric, (value, better) in node_metrics(doc).items():
            per_metric.setdefault(metric, {"better": better, "values": {}})["values"][node] = value
    rows = []
    for metric, m in sorted(per_metric.items(), key=lambda item: natural_key(item[0])):
        values = m["values"]
        med = statistics.median(values.values())
        mad = statistics.median(abs(v - med) for v in values.values())
        if len(values) == 2:  # the MAD of two is half their gap: the MAD rule could never flag either
            (a, va), (b, vb) = values.items()
            flagged = {a: pair_outlier(va, vb, m["better"], threshold), b: pair_outlier(vb, va, m["better"], threshold)}
        else:
            flagged = {n: is_outlier(v, med, mad, m["better"], threshold) for n, v in values.items()}
        nodes_rows = {n: {"value": v, "ratio": v / med if med else None, "outlier": flagged[n]} for n, v in values.items()}
        rows.append({"metric": metric, "median": med, "mad": mad, "nodes": nodes_rows})
    # a node whose kernel computed a wrong answer has no rate in that row: named here, not left out
    wrong = {n: failures for n, doc in nodes.items() if (failures := metric_failures(doc))}
    configs = {n: config_of(doc) for n, doc in nodes.items()}
    keys = sorted({k for c in configs.values() for k in c})
    differences = {k: {n: c.get(k) for n, c in configs.items()} for k in keys
                   if len({str(c.get(k)) for c in configs.values()}) > 1}
    return {"rows": rows, "differences": differences, "wrong_output": wrong}


def is_outlier(value, median, mad, higher_is_better, threshold):
    """Worse than the median by more than the threshold AND by more than OUTLIER_MADS robust
    standard deviations (MAD x 1.4826). The MAD rule is robust to the slow nodes themselves; the
    threshold keeps a tight fleet's trivial differences (tiny MAD) from being flagged."""
    if not median:
        return False
    shortfall = (median - value) if higher_is_better else (value - median)
    if shortfall / abs(median) <= threshold:
        return False
    return mad == 0 or shortfall > OUTLIER_MADS * MAD_SCALE * mad


def pair_outlier(value, other, higher_is_better, threshold):
    """Of two nodes, whether this one is more than the threshold worse than the other: with no third
    to say which is off, the slower one is named."""
    if not other:
        return False
    shortfall = (other - value) if higher_is_better else (value - other)
    return shortfall / abs(other) > threshold


def outliers(result):
    """Nodes slower than the fleet on some metric, or whose output check failed on one."""
    slow = {n for r in result["rows"] for n, x in r["nodes"].items() if x["outlier"]}
    return sorted(slow | set(result.get("wrong_output") or {}), key=natural_key)


def metric_unit(metric):
    """The unit of one of node_metrics' names (device.group.key), '' for a fraction."""
    group, key = metric.split(".")[1], metric.split(".")[-1]
    if group in ("bandwidth", "hierarchy"):
        return "B/s"
    if group in FLOP_GROUPS:
        return rate_unit(key)
    return "Hz" if group == "sm_clock_hz" else ""


def markdown(result, summary, folder, threshold, unreadable=()):
    bad = outliers(result)
    out = [f"# Fleet report: {folder}", "",
           f"{len(result['rows'])} metrics over {len({n for r in result['rows'] for n in r['nodes']})} nodes; "
           f"outlier rule: more than {threshold:.0%} worse than the fleet median and more than {OUTLIER_MADS:g} robust "
           f"standard deviations (MAD x {MAD_SCALE}) from it; of two nodes, the one more than {threshold:.0%} "
           "worse than the other.", ""]
    out += [f"**Outliers: {', '.join(bad)}**" if bad else "**No outliers.**", ""]
    failed = (summary or {}).get("failed") or []
    if failed:
        out += ["## Ranks that failed", ""] + [f"- rank {f['rank']} on {f['host']}: {f['error']}" for f in failed] + [""]
    if result.get("wrong_output"):
        out += ["## Wrong output (a kernel's output check failed: no rate of it is compared)", ""]
        out += [f"- {node}: {metric}: {error}" for node, failures in sorted(result["wrong_output"].items(),
                                                                         key=lambda item: natural_key(item[0]))
                for metric, error in failures.items()] + [""]
    if unreadable:
        out += ["## Profiles that could not be read (left out of the comparison)", ""]
        out += [f"- {file}: {error}" for file, error in unreadable] + [""]
    if result["differences"]:
        names = sorted(next(iter(result["differences"].values())), key=natural_key)  # every node, in number order
        out += ["## Configuration differences", "", "| field | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for field, by_node in result["differences"].items():
            out.append(f"| {field} | " + " | ".join(str(by_node[n]) for n in names) + " |")
        out.append("")
    out += ["## Metrics", "", "| metric | fleet median | MAD | node: ratio to median |", "|---|---|---|---|"]
    for r in result["rows"]:
        unit = metric_unit(r["metric"])
        cells = ", ".join(f"**{n} {x['ratio']:.2f} (outlier)**" if x["outlier"] else f"{n} {x['ratio']:.2f}"
                          for n, x in sorted(r["nodes"].items(), key=lambda item: natural_key(item[0])))
        median = si(r["median"], unit) if unit else f"{r['median']:.3g}"
        spread = f"{r['mad'] / r['median']:.1%}" if r["median"] else "n/a"
        out.append(f"| {r['metric']} | {median} | {spread} | {cells} |")
    out.append("")
    return "\n".join(out)


def plot_metric(row, path):
    """Every node against the fleet median for one metric."""
    import matplotlib.pyplot as plt

    from harness.plots import save_atomically

    names = sorted(row["nodes"], key=natural_key)
    ratios = [row["nodes"][n]["ratio"] for n in names]
    colours = ["tab:red" if row["nodes"][n]["outlier"] else "tab:blue" for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4))
    ax.bar(names, ratios, color=colours)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("ratio to the fleet median")
    ax.set_title(f"{row['metric']} (red: outlier)")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    save_atomically(fig, path)
