"""Warm-up, calibration of loops per sample, repeats with raw samples, and CPU steal time.

`measure` times a blocking callable ``run(loops)`` that performs ``loops`` repetitions of one
unit of work. The clock and the CPU-time reader are parameters so tests can pass fake ones.
"""

import math
import os
import statistics
import time
from collections import namedtuple
from dataclasses import dataclass, field

from harness import interrupt, stats
from harness.sysfs import read_text

NS_PER_S = 1e9


@dataclass
class Measurement:
    """Raw samples of one timed unit of work and what went wrong while taking them."""

    samples_s: list  # seconds per loop (one unit of work), one entry per sample
    loops_per_sample: int
    timer_resolution_s: float
    steal_fraction: float | None  # share of CPU time the hypervisor stole during the samples
    other_load_fraction: float | None = None  # share of the CPUs' time other work took meanwhile
    warnings: list = field(default_factory=list)


def timer_resolution_s(clock=time.perf_counter_ns, reads=200):
    """Smallest positive step between successive clock readings, in seconds."""
    best = math.inf
    for _ in range(reads):
        t0 = clock()
        t1 = clock()
        while t1 == t0:
            t1 = clock()
        best = min(best, t1 - t0)
    return best / NS_PER_S


# jiffies over all CPUs from /proc/stat (steal, idle incl. iowait, total) and this process's own
# CPU time (all its threads) in jiffies, read together
CpuTimes = namedtuple("CpuTimes", "steal idle total own")
MIN_JIFFIES = 50  # fewer CPU ticks than this between two readings: too coarse to say who used them


def read_cpu_times(path="/proc/stat"):
    """CpuTimes now, or None where /proc/stat is unreadable or holds no such line."""
    fields = (read_text(path) or "").split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu" or not all(v.isdigit() for v in fields[1:9]) or len(fields) < 6:
        return None  # no aggregate line with idle and iowait (a sandbox's own /proc, say)
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    steal = values[7] if len(values) > 7 else 0
    own = os.times()
    return CpuTimes(steal, values[3] + values[4], sum(values), (own.user + own.system) * os.sysconf("SC_CLK_TCK"))


def steal_fraction(before, after):
    """Share of CPU time stolen between two read_cpu_times() readings; None if unknown."""
    if before is None or after is None:
        return None
    total = after.total - before.total
    if total <= 0:
        return 0.0
    return max(0, after.steal - before.steal) / total


def other_load_fraction(before, after):
    """Share of all CPUs' time between two readings that neither this process nor the hypervisor
    took, and no CPU idled: other processes, or the kernel (writing back pages, say). None where
    unknown or too few ticks passed to tell."""
    if before is None or after is None or after.total - before.total < MIN_JIFFIES:
        return None
    total = after.total - before.total
    busy = total - (after.idle - before.idle) - (after.steal - before.steal)
    return max(0.0, busy - (after.own - before.own)) / total


def timed_s(run, loops, clock=time.perf_counter_ns):
    """Seconds that run(loops) takes on `clock` (nanoseconds); a Ctrl-C that compiled code
    swallowed is raised here (harness.interrupt)."""
    t0 = clock()
    run(loops)
    elapsed = (clock() - t0) / NS_PER_S
    interrupt.check()
    return elapsed


TUNING_ROUNDS = 5
TUNING_FIRST_ROUNDS = 2  # rounds of every setting; later rounds time only the contenders:
TUNING_KEEP_WITHIN = 1.1  # settings within this factor of the fastest median so far


def fastest_setting(settings, run, clock, rounds=TUNING_ROUNDS):
    """(the fastest of `settings` by median, {setting: its seconds per call}) where run(setting) is one
    call: each run once outside the rounds (compiled, paged in), then timed in `rounds` interleaved
    rounds, every setting in the first TUNING_FIRST_ROUNDS, after them only those within
    TUNING_KEEP_WITHIN of the fastest median so far (a probe's kernel tuning on this machine)."""
    for setting in settings:
        run(setting)
    samples = {setting: [] for setting in settings}
    timing = list(settings)
    for rnd in range(rounds):
        if rnd == TUNING_FIRST_ROUNDS:
            best = min(statistics.median(samples[x]) for x in timing)
            timing = [x for x in timing if statistics.median(samples[x]) <= TUNING_KEEP_WITHIN * best]
        for setting in timing:
            samples[setting].append(timed_s(lambda loops, setting=setting: run(setting), 1, clock))
    return min(timing, key=lambda x: statistics.median(samples[x])), samples


def calibrate_loops(run, min_sample_s, max_loops, clock):
    """Grow loops per sample (at least doubling, pyperf-style) until a sample lasts min_sample_s."""
    return calibrate(run, min_sample_s, max_loops, clock)[0]


def calibrate(run, min_sample_s, max_loops, clock):
    """(loops per sample, seconds of the last calibration run when it ran those loops and lasted
    min_sample_s, else None): that run is a sample like the others."""
    loops = 1
    while loops < max_loops:
        elapsed = timed_s(run, loops, clock)
        if elapsed >= min_sample_s:
            return loops, elapsed
        factor = 10 if elapsed <= 0 else min(10, max(2, math.ceil(1.2 * min_sample_s / elapsed)))
        loops = min(max_loops, loops * factor)
    return loops, None


def measure(
    run,
    *,
    repeats,
    min_sample_s,
    warmup=1,
    max_loops=1 << 24,
    clock=time.perf_counter_ns,
    cpu_times=read_cpu_times,
    between=None,
    budget_s=None,
    min_repeats=3,
):
    """Warm up, calibrate, then take `repeats` samples of `run(loops)`; keep them all. The
    calibration's last run, when it ran the chosen loops, is the first sample (one call fewer for
    the long calls of DRAM-sized work), except where each sample must follow a `between()` call.

    `between()`, if given, is called right before each sample, outside its timed region (the
    decode probe measures the DRAM read bandwidth there, one reading per sample). With `budget_s`,
    samples so long that `repeats` of them would pass it are taken only as many times as fit, and
    at least `min_repeats` times (torch's SDPA took 1-9 s a call on the Xeon VM's longest caches)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        run(1)  # JIT compilation and first-touch page faults happen here, outside the samples
    resolution = timer_resolution_s(clock)
    before = cpu_times()
    loops, calibrated_s = calibrate(run, min_sample_s, max_loops, clock)
    samples = [calibrated_s / loops] if calibrated_s is not None and between is None else []

    def take():
        if between:
            between()
        samples.append(timed_s(run, loops, clock) / loops)

    if not samples:
        take()
    if budget_s:
        repeats = min(repeats, max(min_repeats, math.floor(budget_s / (samples[0] * loops))))
    while len(samples) < repeats:
        take()
    return measurement(samples, loops, resolution, before, cpu_times())


def measurement(samples, loops, resolution, before, after):
    """A Measurement of samples taken between two read_cpu_times() readings, with its warnings."""
    steal, others = steal_fraction(before, after), other_load_fraction(before, after)
    warnings = stats.spread_warnings(samples)
    for w in (stats.resolution_warning(min(samples) * loops, resolution), stats.steal_warning(steal),
              stats.other_load_warning(others)):
        if w:
            warnings.append(w)
    return Measurement(samples, loops, resolution, steal, others, warnings)


def measure_interleaved(runs, *, repeats, min_sample_s, warmup=1, max_loops=1 << 24, clock=time.perf_counter_ns,
                        cpu_times=read_cpu_times, around_last=None, budget_s=None, min_repeats=3):
    """One Measurement per callable of `runs`, their samples taken in `repeats` rounds of one sample
    of each, in order (BabelStream's loop over its kernels): a memory whose speed drifts (a shared VM
    host's) then slows every kernel alike, where timed one after another a drift between two kernels'
    samples would be a difference between the kernels. Each is warmed up and calibrated on its own
    first (calibration runs are not samples: they are not interleaved). `around_last[i]`, a pair of
    callables, is called right before and right after run i's last sample, untimed (the poison and
    the output check: each check sees that run's output before a later run overwrites it). With
    `budget_s`, rounds so long that `repeats` of them would pass budget_s a run are taken only as many
    times as fit, and at least `min_repeats` times (measure's budget, over all the runs: the CPU's
    matmuls of up to 1 s a call)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for run in runs:
        for _ in range(warmup):
            run(1)
    resolution = timer_resolution_s(clock)
    before = cpu_times()
    loops, calibrated_s = zip(*(calibrate(run, min_sample_s, max_loops, clock) for run in runs))
    if budget_s:  # a calibration that hit max_loops lasted under min_sample_s
        round_s = sum(min_sample_s if s is None else s for s in calibrated_s)
        repeats = min(repeats, max(min_repeats, math.floor(budget_s * len(runs) / round_s)))
    samples = [[] for _ in runs]
    for rnd in range(repeats):
        for i, run in enumerate(runs):
            last = around_last[i] if around_last and rnd == repeats - 1 else None
            if last:
                last[0]()
            samples[i].append(timed_s(run, loops[i], clock) / loops[i])
            if last:
                last[1]()
    after = cpu_times()
    return [measurement(s, n, resolution, before, after) for s, n in zip(samples, loops)]
