"""Matplotlib figures from plain series data (built by harness/report.py); headless, no probes."""

import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator  # noqa: E402

from harness.errors import HarnessError  # noqa: E402
from harness.summary import operation, si  # noqa: E402

LEVEL_COLOURS = {"DRAM": "tab:blue", "HBM": "tab:blue", "GDDR": "tab:blue", "L3": "tab:green", "L2": "tab:orange", "L1": "tab:red"}
DTYPE_COLOURS = {"fp64": "black", "fp32": "tab:purple", "bf16": "tab:brown", "fp16": "tab:olive", "int8": "tab:cyan"}
RIDGE_FONT_PT = 8
RIDGE_LINE_PT = 11  # one line of a ridge's label
RIDGE_LABEL_SHIFT_PT = 8  # right of its star
CHAR_WIDTH_EM = 0.6  # DejaVu Sans's mean glyph width, generously: labels are sized before they are drawn
LEGEND_INSIDE_MAX = 12
IMPL_MARKERS = {"numba-fused": "o", "torch-sdpa": "s", "torch-naive": "^", "cupy-fused": "D",
                # a GPU's SDPA backends, one marker each, so that two of one dtype are told apart
                "torch-sdpa[flash_attention]": "s", "torch-sdpa[efficient_attention]": "P",
                "torch-sdpa[cudnn_attention]": "X", "torch-sdpa[math]": "v"}


def save_atomically(fig, path):
    """Write a figure to a temporary file and rename it into place; a path that cannot be written
    is a HarnessError naming it."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
        os.close(fd)
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise HarnessError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def roofline(series, path):
    """Log-log roofline: bandwidth slopes per level, compute ceilings per dtype, decode points."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(12, 6.5))
    lo, hi = series["intensity_range"]
    xs = np.logspace(np.log10(lo), np.log10(hi), 200)
    measured = [c["flops_per_s"] for c in series["ceilings"] if c["measured"]]
    top = max(measured or [c["flops_per_s"] for c in series["ceilings"]] or [1e12])
    ax.axvspan(0.5, 2.0, color="gold", alpha=0.18)
    ax.text(1.0, top * 1.6, "decode attention\n(fp32 0.5 ... int8 2 FLOP/B)", ha="center", va="bottom", fontsize=8)
    for c in series["ceilings"]:  # a matmul's roof dash-dot, a dot product's dotted: a dtype's roofs share a colour
        style = "--" if not c["measured"] else {"matmul": "-.", "dot product": ":"}.get(c["roof"], "-")
        ax.plot([lo, hi], [c["flops_per_s"]] * 2, color=DTYPE_COLOURS.get(c["dtype"], "grey"),
                linestyle=style, linewidth=1.6 if c["measured"] else 1.0,
                label=f"{c['label']}: {c['flops_per_s'] / 1e9:,.0f} G{operation(c['dtype'])}/s")
    for s in series["slopes"]:  # each level's roof: min(I x bandwidth, the highest measured ceiling)
        ax.plot(xs, np.minimum(xs * s["bytes_per_s"], top), color=LEVEL_COLOURS.get(s["level"], "grey"),
                linestyle="-" if s["measured"] else "--", linewidth=1.6 if s["measured"] else 1.0,
                label=f"{s['label']}: {s['bytes_per_s'] / 1e9:,.0f} GB/s")
    for r in series["ridges"]:
        ax.plot([r["intensity"]], [r["flops_per_s"]], marker="*", markersize=14, color=DTYPE_COLOURS.get(r["dtype"], "grey"),
                linestyle="none")
    for p in series["points"]:
        colour = DTYPE_COLOURS.get(p["dtype"], "grey")
        ax.plot([p["intensity"]], [p["flops_per_s"]], marker=IMPL_MARKERS.get(p["impl"], "x"), color=colour,
                markersize=8, linestyle="none", markerfacecolor="none" if p["source"] == "counters" else colour,
                label=f"decode {p['impl']} {p['dtype']} S={p['seq_len']} ({p['source']})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(top / 3000, max([top * 4] + [2 * c["flops_per_s"] for c in series["ceilings"]]))  # theory can be far above
    label_ridges(ax, series["ridges"])
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    int8 = " and ".join(c["roof"] for c in series["ceilings"] if c["dtype"] == "int8")
    ax.set_ylabel("FLOP/s" + (f" (int8 {int8}: OP/s)" if int8 else ""))
    ax.set_title(series["title"])
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_atomically(fig, path)


def label_ridges(ax, ridges):
    """Each ridge's name and intensity beside its star, a line lower where it would cover another's
    label (once the axes' scales and limits are set: the labels are placed in points on the page)."""
    points_per_pixel = 72 / ax.figure.dpi
    texts = [f"ridge {r['name']}: {r['intensity']:.1f} {operation(r['dtype'])}/B" for r in ridges]
    anchors = [tuple(v * points_per_pixel for v in ax.transData.transform((r["intensity"], r["flops_per_s"])))
               for r in ridges]
    offsets = stack_labels([(x + RIDGE_LABEL_SHIFT_PT, y) for x, y in anchors],
                           [len(t) * RIDGE_FONT_PT * CHAR_WIDTH_EM for t in texts], RIDGE_LINE_PT)
    for r, text, dy in zip(ridges, texts, offsets):
        ax.annotate(text, (r["intensity"], r["flops_per_s"]), textcoords="offset points",
                    xytext=(RIDGE_LABEL_SHIFT_PT, dy), fontsize=RIDGE_FONT_PT,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1})  # legible over a roof


def stack_labels(lefts, widths, line, first=-14):
    """Vertical offsets in points of one-line labels whose left ends are at `lefts` ((x, y) points)
    and `widths` points wide: `first` below their anchor, or a line lower per label placed before
    it that it would cover there (a GPU's fp16 and bf16 matmuls share a ridge)."""
    placed, offsets = [], []
    for (x, y), width in zip(lefts, widths):
        dy = first
        while any(x < px + pw and px < x + width and abs(y + dy - py) < line for px, py, pw in placed):
            dy -= line
        placed.append((x, y + dy, width))
        offsets.append(dy)
    return offsets


def decode_vs_seq_len(series, path):
    """Time per decode step against seq_len (measured and predicted), and fraction of bandwidth."""
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(12, 5))
    for s in series["series"]:
        colour = DTYPE_COLOURS.get(s["dtype"], "grey")
        marker = IMPL_MARKERS.get(s["impl"], "x")
        ax_t.plot(s["seq_len"], s["time_s"], marker=marker, color=colour, label=f"{s['impl']} {s['dtype']}")
        if any(f is not None for f in s["fraction_of_bandwidth"]):
            ax_f.plot(s["seq_len"], s["fraction_of_bandwidth"], marker=marker, color=colour, label=f"{s['impl']} {s['dtype']}")
    for m in series.get("models", []):
        ax_t.plot(m["seq_len"], m["predicted_time_s"], linestyle=":", linewidth=2, marker="_", markersize=16,
                  markeredgewidth=2, color=DTYPE_COLOURS.get(m["dtype"], "grey"),
                  label=f"model {m['dtype']}")  # the marker: a dtype measured at one length has no line to draw
    for ax in (ax_t, ax_f):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("seq_len (tokens in the KV cache)")
        ax.grid(True, which="both", alpha=0.25)
        if series.get("llc_seq_len"):
            ax.axvline(series["llc_seq_len"], color="grey", linestyle="--", linewidth=0.8)
            ax.annotate(f"cache = {series['cache']} (fp32)", (series["llc_seq_len"], 0.02), xycoords=("data", "axes fraction"),
                        fontsize=7, rotation=90)
    ax_t.set_yscale("log")
    ax_t.set_ylabel("time per decode step (s)")
    ax_t.set_title("decode attention: measured (solid) vs model (dotted)")
    ax_f.axhline(1.0, color="grey", linewidth=0.8)
    ax_f.set_ylabel(f"achieved bytes/s / measured {series['memory']} read bandwidth")
    ax_f.set_title(f"fraction of {series['memory']} read bandwidth (above 1: cache-resident)")
    for ax in (ax_t, ax_f):
        place_legend(ax)
    fig.suptitle(series["title"])
    save_atomically(fig, path)


def place_legend(ax):
    """The axes' legend in two columns: inside, where matplotlib finds it room, or below the axes
    when it has more than LEGEND_INSIDE_MAX entries (a GPU's decode sweep: our kernel and each SDPA
    backend per dtype, and the models), which would cover the points."""
    entries = len(ax.get_legend_handles_labels()[1])
    if entries > LEGEND_INSIDE_MAX:
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    elif entries:
        ax.legend(fontsize=7, ncol=2)


def hierarchy(series, path):
    """Read bandwidth against working set (log-log): each point's best sample coloured by the level
    that holds it, the medians joined, and each level's bandwidth over the band it was taken from."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for kernel in dict.fromkeys(p["kernel"] for p in series["points"]):
        pts = sorted((p for p in series["points"] if p["kernel"] == kernel), key=lambda p: p["working_set_bytes"])
        xs = [p["working_set_bytes"] for p in pts]
        ax.plot(xs, [p["median_bytes_per_s"] or p["bytes_per_s"] for p in pts], color="grey",
                linestyle="-" if kernel == "read" else ":", linewidth=1, label=f"{kernel}: median of each point")
        for level in dict.fromkeys(p["level"] for p in pts):
            at = [p for p in pts if p["level"] == level]
            ax.plot([p["working_set_bytes"] for p in at], [p["bytes_per_s"] for p in at], linestyle="none",
                    marker="o" if kernel == "read" else "D", color=LEVEL_COLOURS.get(level, "grey"),
                    label=f"{kernel}: best of each point held by {level}")
    for lv in series["levels"]:
        colour = LEVEL_COLOURS.get(lv["level"], "grey")
        lo, hi = (lv["lo"] / 1.25, lv["hi"] * 1.25) if lv["lo"] == lv["hi"] else (lv["lo"], lv["hi"])  # one point: still seen
        ax.axvspan(lo, hi, color=colour, alpha=0.08)
        ax.hlines(lv["bytes_per_s"], lo, hi, color=colour, linewidth=3, alpha=0.6,
                  label=f"{lv['level']}: {si(lv['bytes_per_s'], 'B/s')} (median of its band's best samples)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    rates = [p["bytes_per_s"] for p in series["points"]]
    ax.set_ylim(min(rates) / 1.5, max(rates) * 1.3)  # room for a labelled tick below the slowest point
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: si(x, "B")))
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: si(y, "B/s")))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: ""))
    ax.set_xlabel("working set")
    ax.set_ylabel("read bandwidth")
    ax.set_title(series["title"])
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_atomically(fig, path)


def thread_scaling(series, path):
    """Each swept kernel's best and median rate against threads, beside perfect scaling from one thread."""
    kernels = series["kernels"]
    fig, axes = plt.subplots(1, len(kernels), figsize=(6 * len(kernels), 4.5), squeeze=False, constrained_layout=True)
    for ax, k in zip(axes[0], kernels):
        ax.plot(k["threads"], k["best"], marker="o", label="best sample")
        if all(m is not None for m in k["median"]):
            ax.plot(k["threads"], k["median"], marker=".", linestyle=":", color="grey", label="median")
        if k["threads"][0] == 1:
            ax.plot(k["threads"], [k["best"][0] * t for t in k["threads"]], linestyle="--", color="black", linewidth=0.8,
                    label="one thread's rate x threads")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _, unit=k["unit"]: si(y, unit)))
        ax.set_xlabel("threads")
        ax.set_title(k["label"])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(series["title"])
    save_atomically(fig, path)
