"""Pure functions over timing samples: summaries and the warnings a measurement carries."""

import math
import statistics

WIDE_SPREAD_CV = 0.10  # pyperf warns when stdev >= 10% of the mean
WIDE_SPREAD_IQR = 0.10  # torch.utils.benchmark warns on a wide IQR relative to the median
MIN_SAMPLE_RESOLUTIONS = 1000  # a sample shorter than 1000 timer ticks is dominated by the timer
BUSY_STEAL_FRACTION = 0.02
# other work's share of all CPUs' time while measuring: 0.5% on the idle 2-vCPU dev VM, 37% with one
# `yes` running beside a 2-thread FMA peak (which then measured 235 GFLOP/s instead of 424)
BUSY_OTHER_FRACTION = 0.1


def quartiles(samples):
    """(q1, median, q3) with linear interpolation; one sample gives itself three times."""
    xs = sorted(samples)
    if not xs:
        raise ValueError("no samples")
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def summarize(samples):
    """min, max, median, q1, q3, iqr, mean, stdev and cv of a list of seconds."""
    xs = [float(x) for x in samples]
    q1, med, q3 = quartiles(xs)
    mean = statistics.fmean(xs)
    stdev = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return {
        "n": len(xs),
        "min": min(xs),
        "max": max(xs),
        "median": med,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "mean": mean,
        "stdev": stdev,
        "cv": stdev / mean if mean > 0 else math.inf,
    }


def sample_times(samples):
    """(best, median) of a list of seconds: the fastest sample and their median."""
    return min(samples), summarize(samples)["median"]


def sample_figures(samples, work_per_call, unit):
    """The figures a timed record draws from its raw samples (seconds per call): the fastest and the
    median time, and `work_per_call` (bytes or FLOPs, as `unit` names it) over each as the best and
    the median rate. The probes write them so, and the loader checks them so."""
    best, median = sample_times(samples)
    return {"best_time_s": best, "median_time_s": median,
            f"{unit}_per_s": work_per_call / best, f"median_{unit}_per_s": work_per_call / median}


def spread_warnings(samples):
    """Warnings about a wide spread of samples (pyperf's and torch's rules)."""
    s = summarize(samples)
    out = []
    if s["n"] > 1 and s["cv"] >= WIDE_SPREAD_CV:
        out.append(f"wide spread: stdev is {s['cv']:.0%} of the mean (>= {WIDE_SPREAD_CV:.0%})")
    if s["median"] > 0 and s["iqr"] / s["median"] >= WIDE_SPREAD_IQR:
        out.append(f"wide spread: IQR is {s['iqr'] / s['median']:.0%} of the median")
    return out


def resolution_warning(sample_total_s, resolution_s):
    """A warning when a whole sample lasts fewer than MIN_SAMPLE_RESOLUTIONS timer ticks."""
    if resolution_s > 0 and sample_total_s < MIN_SAMPLE_RESOLUTIONS * resolution_s:
        return (
            f"samples too short for the timer: {sample_total_s:.3g} s per sample is under "
            f"{MIN_SAMPLE_RESOLUTIONS} x the timer resolution ({resolution_s:.3g} s)"
        )
    return None


def steal_warning(steal_fraction):
    """A warning when the hypervisor took CPU time from this guest during a measurement."""
    if steal_fraction is not None and steal_fraction >= BUSY_STEAL_FRACTION:
        return f"machine busy: CPU steal time was {steal_fraction:.1%} of CPU time during the measurement"
    return None


def other_load_warning(fraction):
    """A warning when other work took a share of the CPUs while a measurement ran."""
    if fraction is not None and fraction >= BUSY_OTHER_FRACTION:
        return (f"machine busy: other work (processes, or the kernel) took {fraction:.0%} of the CPUs' time "
                "during the measurement")
    return None


def level_entry(points, **where):
    """One level of hierarchy_levels from the sweep points inside it: the median of their best
    samples and the best, with `where` (the working sets it covers), or the reason there is none.
    The probes write it; the loader (profile_relations) derives it again to check a stored level."""
    rates = sorted(p["bytes_per_s"] for p in points if p.get("bytes_per_s"))
    if not rates:
        return {"bytes_per_s": None, "reason": "no sweep point lies well inside this level"}
    return {"bytes_per_s": float(statistics.median(rates)), "max_bytes_per_s": rates[-1], "points": len(rates), **where}
