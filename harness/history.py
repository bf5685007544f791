"""A metric's trend over a machine's stored profiles, with step changes flagged (no probe runs)."""

import datetime
import difflib
import glob
import os
import statistics

from matplotlib.ticker import FuncFormatter

from harness import compare, plots
from harness.profile import CPU_CLOCK, GPU_CLOCK, STAMP_FORMAT, device_order, load_readable, run_conditions
from harness.summary import natural_key

HEADLINE = ("bandwidth.read", "bandwidth.triad", "peak_flops.fp32", "peak_flops.fp64")
STEP_COLOURS = {"regressed": "tab:red", "improved": "tab:green"}  # anything else (changed, probe changed): grey


def profiles_of(machine_id, folder="profiles"):
    """((path, doc) for the machine's history and current profile, oldest first; [(path, error)] for
    those that cannot be read, left out of the trend)."""
    paths = sorted(glob.glob(os.path.join(folder, "history", machine_id, "*.yaml")))
    current = os.path.join(folder, f"{machine_id}.yaml")
    if os.path.exists(current):
        paths.append(current)
    docs, unreadable = load_readable(paths)
    return sorted(one_per_run(docs), key=lambda pd: pd[1]["created_utc"]), unreadable


def one_per_run(docs):
    """(path, doc) pairs with each run once: a profile whose copy is also in the history (restored with
    git after a later run moved it there) is the current file, not two points of its trend."""
    kept = {}
    for path, doc in docs:  # the current profile comes last, and replaces its copy
        same = [p for p, d in kept.items() if d == doc]
        for p in same:
            del kept[p]
        kept[path] = doc
    return list(kept.items())


def machine_ids(folder="profiles"):
    """The machine ids with a profile in `folder`, or a history in its history/ (sorted)."""
    current = {os.path.basename(p)[:-len(".yaml")] for p in glob.glob(os.path.join(folder, "*.yaml"))}
    return sorted(current | {os.path.basename(p) for p in glob.glob(os.path.join(folder, "history", "*"))})


MAX_LISTED = 12  # valid metric names an error lists before it narrows them to the likeliest


def metric_names(docs):
    """Every metric name that some profile of `docs` measured, numbers in them in number order."""
    return sorted({name for _, doc in docs for name in compare.metric_samples(doc)}, key=natural_key)


def metric_choices(metric, names, shown=MAX_LISTED):
    """What to say of the valid names when `metric` is none of them: all of them if few; else those
    it begins (a family: 'decode'), else the closest spellings, else each family with its count."""
    if len(names) <= shown:
        return ", ".join(names) or "none (no validated measurement)"
    begun = [n for n in names if n.startswith(metric)]
    close = begun or difflib.get_close_matches(metric, names, n=shown, cutoff=0.75)
    if close:
        more = f" and {len(close) - shown} more" if len(close) > shown else ""
        return ", ".join(close[:shown]) + more
    families = {}
    for n in names:
        families.setdefault(n.split(".")[0], []).append(n)
    return "; ".join(f"{len(members)} {family}.* (as {members[0]})" for family, members in families.items())


def headline_metrics(docs):
    """HEADLINE for each device the profiles measured, the CPU's first then gpu0, gpu1, ... by
    number ('gpu0.bandwidth.read'): a GPU-only machine's trend has no CPU metric. HEADLINE itself
    where none of them was measured (the caller names what was)."""
    measured = metric_names(docs)
    devices = sorted({compare.metric_device(name) for name in measured}, key=device_order)
    found = [name for device in devices for metric in HEADLINE
             if (name := metric if device == "cpu" else f"{device}.{metric}") in measured]
    return found or list(HEADLINE)


def trend(docs, metric, threshold=compare.DEFAULT_THRESHOLD):
    """Rows per profile: created, median, the clock the metric's device ran at (compare's run
    conditions: a step with the clock is the host's, not the code's) and the verdict against the
    previous profile ('probe changed' where the probe's code or parameters did between them: the
    step may be the probe's)."""
    rows, previous = [], None
    device = compare.metric_device(metric)
    for path, doc in docs:
        samples = compare.metric_samples(doc).get(metric)
        conditions = run_conditions(doc).get(device) or {}
        row = {"created_utc": doc["created_utc"], "path": path, "median": None, "step": "", "unit": None,
               "clock_hz": conditions.get(CPU_CLOCK) or conditions.get(GPU_CLOCK)}
        failed = compare.metric_failures(doc).get(metric)
        if failed:
            row["step"] = f"wrong output: {failed}"
        if samples and samples[0]:
            row["median"] = statistics.median(samples[0])  # the median compare reports
            row["unit"] = samples[2]
            if previous is not None:
                result = compare.compare(previous, doc, threshold)
                match = next((r for r in result["rows"] if r["metric"] == metric), None)
                if match and match["verdict"] in ("regressed", "improved", "changed"):
                    row["step"] = f"{match['verdict']} {compare.change_text(match)}"
                elif match and match.get("reason") == compare.PROBE_CHANGED:
                    row["step"] = "probe changed: not comparable with the point before"
            previous = doc
        rows.append(row)
    return rows


def plot(metric, rows, path, title):
    """The trend as a PNG on a time axis, values in their unit, step changes marked."""
    drawn = [(created_at(r), r) for r in rows if r["median"] is not None]
    fig, ax = plots.plt.subplots(figsize=(9, 4.5))
    ax.plot([t for t, _ in drawn], [r["median"] for _, r in drawn], marker="o")
    for t, r in drawn:
        if r["step"]:
            ax.annotate(r["step"].split(":")[0], (t, r["median"]), textcoords="offset points", xytext=(0, 10),
                        ha="center", fontsize=8, color=STEP_COLOURS.get(r["step"].split()[0], "tab:gray"))
    unit = next((r["unit"] for r in rows if r["unit"]), "")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: compare.value_text(y, unit)))
    ax.set_ylabel("median of the samples")  # the title names the metric, the ticks its unit
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    ax.grid(True, alpha=0.3)
    plots.save_atomically(fig, path)


def created_at(row):
    """A trend row's creation time as a datetime (a profile's created_utc, as profile.utc_now writes it)."""
    return datetime.datetime.strptime(row["created_utc"], STAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)
