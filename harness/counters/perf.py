"""CPU counters through `perf stat`, enabled exactly around the counted run.

perf starts with its counters disabled (`-D -1`) and is switched on and off through its control
pipe (`--control fd:`, perf 5.10+), each switch acknowledged, so nothing before or after the run
is counted. Core events count this process (`-p`, threads included) in passes of at most
GROUP_SIZE events, each pass re-running the workload, so no count is scaled from a multiplexed
fraction of the run. On a hybrid CPU perf prints a row per core PMU (cpu_core/, cpu_atom/); they
are folded into one count per event (reading_of). FLOPs by vendor (weights = FLOPs per counted
unit): AMD Zen `fp_ret_sse_avx_ops.all` already counts FLOPs; Intel `fp_arith_inst_retired.*` counts
instructions, weighted by lanes (FMA instructions count twice in these events); Arm Neoverse
V1/N2/V2/V3/N3 `FP_FIXED_OPS_SPEC` + `FP_SCALE_OPS_SPEC` x VL/128 (speculative operations).

DRAM bytes come from the memory controllers where the kernel exposes them: Intel
`uncore_imc*` CAS or data counters (found in sysfs; perf scales them to MiB), AMD Zen 4+
`amd_umc_*` CAS commands (64 bytes each), AMD Zen 1-3 the data fabric's DRAM channel counters.
Those are system-wide counters (`-a`: every process's
traffic during the run, which needs perf_event_paranoid <= 0 or root); where they cannot be
used, last-level-cache misses x 64 bytes stand in, labelled as an estimate, with the reason.
"""

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import lru_cache

from harness import machine
from harness.counters import block

EVENT_SOURCES = "/sys/bus/event_source/devices"
PARANOID = "/proc/sys/kernel/perf_event_paranoid"
LINE_BYTES = 64
CORE_PMUS = {"cpu", "armv8_pmuv3"}  # core PMUs without a `cpus` file (x86, older Arm kernels); see core_pmus
GROUP_SIZE = 4  # general-purpose counters per logical CPU with SMT on (Intel); AMD Zen has 6
INTEL_FLOP_EVENTS = {  # event -> FLOPs per count (fp32 lanes; fp64 half as many)
    "fp_arith_inst_retired.scalar_single": 1, "fp_arith_inst_retired.scalar_double": 1,
    "fp_arith_inst_retired.128b_packed_single": 4, "fp_arith_inst_retired.128b_packed_double": 2,
    "fp_arith_inst_retired.256b_packed_single": 8, "fp_arith_inst_retired.256b_packed_double": 4,
    "fp_arith_inst_retired.512b_packed_single": 16, "fp_arith_inst_retired.512b_packed_double": 8,
}
AMD_FLOP_EVENTS = {"fp_ret_sse_avx_ops.all": 1}
# Arm cores with the PMU's floating-point operation events (Neoverse V1, N2, V2, V3, N3 by part
# number): FP_FIXED_OPS_SPEC counts Advanced SIMD and scalar FLOPs, FP_SCALE_OPS_SPEC SVE FLOPs in
# units of 128 bits of vector (so x VL/128), FMA counting 2 in both. Asked for as raw events, which
# every perf knows (the names need a perf whose tables list the core).
ARM_FP_OPS_PARTS = {0xD40, 0xD49, 0xD4F, 0xD84, 0xD8E}
ARM_FIXED_OPS, ARM_SCALE_OPS = "r80c1", "r80c0"
SVE_VECTOR_LENGTH = "/proc/sys/abi/sve_default_vector_length"  # bytes, for new processes
SOFTWARE_EVENTS = ("task-clock",)
BASE_EVENTS = ("cycles", "instructions")
LLC_EVENTS = ("LLC-load-misses", "LLC-store-misses")
# Intel memory-controller PMUs and their (read, write) events, by kernel generation: server CAS
# counts, client data counters, free-running counters (ICL+); the first family found is used (an
# Ice Lake server has both CAS and free-running counters of the same traffic)
IMC_FAMILIES = (("uncore_imc", ("cas_count_read", "cas_count_write")), ("uncore_imc", ("data_reads", "data_writes")),
                ("uncore_imc_free_running", ("data_read", "data_write")), ("uncore_imc_free_running", ("read", "write")))
AMD_UMC_EVENTS = ("event=0x0a,rdwrmask=0x1", "event=0x0a,rdwrmask=0x2")  # CAS commands for reads, writes
# Zen 1 to 3 (family 17h, and 19h before Zen 4's models): no UMC PMU, but the data fabric's eight DRAM
# channel counters (perf's names for them; 64 bytes a count, reads and writes together, "approximate"
# in AMD's words, per die in NPS1), as perf's nps1_die_to_dram metric sums them
AMD_DF_DRAM_EVENTS = tuple(f"dram_channel_data_controller_{i}" for i in range(8))
UNIT_BYTES = {"": LINE_BYTES, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 1e3, "MB": 1e6, "GB": 1e9}
CONTROL_TIMEOUT_S = 10


def pmus(root=EVENT_SOURCES):
    try:
        return set(os.listdir(root))
    except OSError:
        return set()


def core_pmus(root=EVENT_SOURCES):
    """The PMUs that count a process's core events: perf's own test, a PMU named `cpu` (x86) or one
    with a `cpus` file (hybrid Intel's cpu_core and cpu_atom, Arm's armv8_pmuv3_0, armv8_cortex_a72,
    ...); uncore PMUs have a `cpumask` instead."""
    return {d for d in pmus(root) if d in CORE_PMUS or os.path.isfile(os.path.join(root, d, "cpus"))}


def paranoid_level(path=PARANOID):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def unavailable_reason(cpu, root=EVENT_SOURCES, paranoid_path=PARANOID):
    """None if perf can count hardware events for this process, else the cause, named."""
    if not shutil.which("perf"):
        return "perf is not installed (Debian: apt-get install linux-perf)"
    devices = pmus(root)
    if not core_pmus(root):
        where = f"under the {cpu.get('hypervisor')} hypervisor" if cpu.get("hypervisor") else "on this kernel"
        return (f"no hardware PMU {where}: {root} holds only {', '.join(sorted(devices)) or 'nothing'}; "
                "cycles, FLOP and DRAM events are <not supported>")
    level = paranoid_level(paranoid_path)
    if level is not None and level > 2:
        return f"perf_event_paranoid is {level}: counting this process needs 2 or less (sysctl kernel.perf_event_paranoid)"
    return None


def zen_before_4(cpu):
    """An AMD Zen 1, 2 or 3 (machine.AMD_ZEN_MODELS' ranges of families 17h and 19h)."""
    return cpu.get("vendor") == "AuthenticAMD" and machine.amd_zen_generation(
        cpu.get("family"), cpu.get("model_number") or 0) in ("Zen 1", "Zen 2", "Zen 3")


def memory_controller_events(root=EVENT_SOURCES, cpu=None):
    """([read and write events of every memory controller], label), or ([], None) where none is exposed."""
    devices = sorted(pmus(root))
    for family, pair in IMC_FAMILIES:
        units = [d for d in devices if re.fullmatch(rf"{family}(_\d+)?", d)]
        if units and all(os.path.exists(os.path.join(root, u, "events", e)) for u in units for e in pair):
            return [f"{u}/{e}/" for e in pair for u in units], f"memory-controller {'/'.join(pair)} ({family}*)"
    units = [d for d in devices if re.fullmatch(r"amd_umc_\d+", d)]
    if units and all(os.path.exists(os.path.join(root, u, "format", "rdwrmask")) for u in units):
        return [f"{u}/{e}/" for e in AMD_UMC_EVENTS for u in units], "memory-controller CAS commands (amd_umc_*) x 64 bytes"
    if "amd_df" in devices and zen_before_4(cpu or {}):
        return list(AMD_DF_DRAM_EVENTS), ("data-fabric DRAM channel counts (amd_df, Zen 1-3) x 64 bytes, reads and "
                                          "writes together (AMD: approximate)")
    return [], None


def system_wide_reason(paranoid_path=PARANOID, euid=None):
    """None if this user may count system-wide (uncore) events, else why not."""
    level = paranoid_level(paranoid_path)
    if (os.geteuid() if euid is None else euid) == 0 or level is None or level <= 0:
        return None
    return (f"memory-controller events count system-wide, which needs perf_event_paranoid <= 0 or root "
            f"(it is {level})")


@dataclass
class Plan:
    """What one count measures: core events in passes, DRAM events system-wide or an estimate."""

    flop: dict
    core: list
    dram: list
    dram_label: str
    dram_system_wide: bool
    notes: list = field(default_factory=list)  # why the DRAM figure is an estimate (or missing)
    flop_label: str | None = None  # what the FLOP events count (flop_label())

    def passes(self):
        """[(core events, system-wide events)]: the memory controllers ride along the first pass."""
        core = list(self.core) + ([] if self.dram_system_wide else list(self.dram))
        groups = [core[i:i + GROUP_SIZE] for i in range(0, len(core), GROUP_SIZE)] or [[]]
        return [(list(SOFTWARE_EVENTS) + g, list(self.dram) if i == 0 and self.dram_system_wide else [])
                for i, g in enumerate(groups)]


def sve_vector_bits(path=None):
    """This system's SVE vector length for new processes in bits (128 where it has no SVE)."""
    try:
        with open(path or SVE_VECTOR_LENGTH) as f:
            return int(f.read()) * 8
    except (OSError, ValueError):
        return 128


def flop_events(cpu, sve_path=None):
    """{event: FLOPs per count} for this CPU's vendor; Intel's wide events only where the CPU has the width."""
    if cpu.get("vendor") == "AuthenticAMD":
        return dict(AMD_FLOP_EVENTS)
    if cpu.get("vendor") == "ARM":
        return {ARM_FIXED_OPS: 1, ARM_SCALE_OPS: sve_vector_bits(sve_path) / 128} \
            if cpu.get("model_number") in ARM_FP_OPS_PARTS else {}
    if cpu.get("vendor") != "GenuineIntel":
        return {}
    simd = set(cpu.get("simd") or ())
    return {e: w for e, w in INTEL_FLOP_EVENTS.items()
            if not (("512b" in e and "avx512f" not in simd) or ("256b" in e and "avx" not in simd))}


def flop_label(flop):
    """What the FLOP events count, for the counters block's flops_source."""
    if ARM_FIXED_OPS in flop:
        return (f"Arm FP_FIXED_OPS_SPEC + FP_SCALE_OPS_SPEC x {flop[ARM_SCALE_OPS] * 128:g}/128 (raw {ARM_FIXED_OPS}, "
                f"{ARM_SCALE_OPS}): speculatively executed operations, FMA counting 2 (misspeculated work included)")
    if set(flop) & set(AMD_FLOP_EVENTS):
        return "AMD fp_ret_sse_avx_ops.all: retired FLOPs, FMA counting 2"
    return "Intel fp_arith_inst_retired.*: retired instructions x lanes, FMA counting 2" if flop else None


def event_plan(cpu, root=EVENT_SOURCES, paranoid_path=PARANOID, euid=None):
    """The events to count for this CPU, the memory controllers' where this user may read them."""
    flop = flop_events(cpu)
    part = cpu.get("model_number")
    notes = [] if flop else [f"no FLOP events known for CPU vendor {cpu.get('vendor')!r}" + (
        f" part 0x{part:03x} (Arm's FP_*_OPS_SPEC events: Neoverse V1, N2, V2, V3, N3)"
        if cpu.get("vendor") == "ARM" and isinstance(part, int) else "")]
    imc, label = memory_controller_events(root, cpu)
    why = "no memory-controller PMU is exposed here" if not imc else system_wide_reason(paranoid_path, euid)
    if why:
        notes.append(why)
        return Plan(flop, list(BASE_EVENTS) + list(flop), list(LLC_EVENTS),
                    "estimate: last-level-cache misses x 64 bytes (demand misses of this process; prefetches "
                    "not counted)", False, notes, flop_label(flop))
    return Plan(flop, list(BASE_EVENTS) + list(flop), imc,
                f"{label}, system-wide: every process's DRAM traffic while the run was counted", True, notes,
                flop_label(flop))


@dataclass
class Reading:
    value: float | None  # None: <not supported> / <not counted>
    unit: str
    enabled_pct: float | None  # share of the run the event was on a counter (below 100: multiplexed, scaled)
    pmus: tuple = ()  # on a hybrid CPU, the core PMUs whose rows were folded into this one (reading_of)
    supported: bool = True  # False for <not supported>; <not counted> is an event perf opened that never ran


def parse_perf_csv(text):
    """{event: Reading} from `perf stat -x,` output (value, unit, event, run time, enabled %, ...)."""
    readings = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) < 3:
            continue  # "Events enabled" and other notes perf writes among the counts
        raw, unit, event = (f.strip() for f in fields[:3])
        try:
            value = float(raw)
        except ValueError:
            value = None
        try:
            pct = float(fields[4]) if len(fields) > 4 else None
        except ValueError:
            pct = None
        readings[event] = Reading(value, unit, pct, supported=raw != "<not supported>")
    return readings


def reading_of(readings, event):
    """The Reading of `event`, or None if perf printed none: perf's own row, or on a hybrid CPU the
    rows it prints per core PMU (cpu_core/cycles/, cpu_atom/cycles/) folded into one. perf scales
    each of those by enabled over running time as if multiplexed, though the process's event can
    only run on its PMU while the process is on that core type: each row is unscaled (times its
    running share), the rows summed, and the sum scaled once by the share of the run some PMU
    counted (below 100% when multiplexed, or where one core type cannot count the event)."""
    if event in readings:
        return readings[event]
    rows = {m.group(1): r for k, r in readings.items() if (m := re.fullmatch(r"([\w.-]+)/" + re.escape(event) + "/", k))}
    counted = {pmu: r for pmu, r in rows.items() if r.value is not None}
    if not counted:
        return Reading(None, next(iter(rows.values())).unit, None, tuple(rows),
                       any(r.supported for r in rows.values())) if rows else None
    shares = [(100.0 if r.enabled_pct is None else r.enabled_pct) / 100 for r in counted.values()]
    share = sum(shares)
    raw = sum(r.value * f for r, f in zip(counted.values(), shares))
    return Reading(raw / share if share else 0.0, next(iter(counted.values())).unit, min(100.0, 100 * share),
                   tuple(counted))


def bytes_of(reading):
    """Bytes a memory-controller reading stands for: perf prints scaled units (MiB) or raw 64-byte counts."""
    if reading is None or reading.value is None or reading.unit not in UNIT_BYTES:
        return None
    return reading.value * UNIT_BYTES[reading.unit]


class PerfSession:
    """`with PerfSession(events) as s: work()` counts `events` during the block only: for this
    process (threads included) or, system_wide, on every CPU. s.error says why nothing was counted."""

    def __init__(self, events, system_wide=False, pid=None):
        self.events, self.system_wide, self.pid = list(events), system_wide, pid or os.getpid()
        self.readings, self.error, self.proc = {}, None, None

    def _command(self, ctl, ack):
        target = ["-a"] if self.system_wide else ["-p", str(self.pid)]
        return ["perf", "stat", "-x,", "--no-big-num", "-e", ",".join(self.events), *target, "-D", "-1",
                "--control", f"fd:{ctl},{ack}", "-o", self.out]

    def _switch(self, command):
        """Send enable/disable and wait for perf's ack; False (and self.error) if perf does not answer."""
        try:
            os.write(self.ctl_w, command.encode() + b"\n")
        except OSError:
            pass
        ready, _, _ = select.select([self.ack_r], [], [], CONTROL_TIMEOUT_S)
        reply = os.read(self.ack_r, 16) if ready else b""
        if reply.startswith(b"ack"):
            return True
        try:  # an empty reply: perf closed the pipe, it is exiting
            self.proc.wait(timeout=1 if ready else 0.01)
        except subprocess.TimeoutExpired:
            pass
        err = (self.proc.stderr.read() if self.proc.returncode is not None else "") or ""
        self.error = (err.strip().splitlines() or [f"perf did not acknowledge '{command}' (perf 5.10+ has --control)"])[0]
        return False

    def __enter__(self):
        fd, self.out = tempfile.mkstemp(prefix="harness-perf-", suffix=".csv")
        os.close(fd)
        ctl_r, self.ctl_w = os.pipe()
        self.ack_r, ack_w = os.pipe()
        self.proc = subprocess.Popen(self._command(ctl_r, ack_w), pass_fds=(ctl_r, ack_w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=machine.c_locale_env())
        os.close(ctl_r)
        os.close(ack_w)
        self._switch("enable")
        return self

    def __exit__(self, *exc):
        if self.error is None:
            self._switch("disable")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=CONTROL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        os.close(self.ctl_w)
        os.close(self.ack_r)
        try:
            with open(self.out) as f:
                self.readings = parse_perf_csv(f.read())
        finally:
            os.unlink(self.out)
        return False


@lru_cache(maxsize=None)
def accepted(event, system_wide=False):
    """None if perf can open `event` here (system-wide or for this process), else perf's objection."""
    proc = subprocess.run(["perf", "stat", "-x,", *(["-a"] if system_wide else []), "-e", event, "--", "true"],
                          capture_output=True, text=True, timeout=CONTROL_TIMEOUT_S, env=machine.c_locale_env())
    reading = reading_of(parse_perf_csv(proc.stderr), event)
    if proc.returncode == 0 and reading and reading.supported:
        return None  # counted, or <not counted>: opened, but `true` never ran where it counts (a hybrid CPU's other cores)
    if reading:
        return "perf cannot count it here (<not supported>)"
    return (proc.stderr.strip().splitlines() or [f"perf exited {proc.returncode}"])[0]


def count(cpu, run, loops, model_bytes, root=EVENT_SOURCES, paranoid_path=PARANOID):
    """Run `run(loops)` under perf (once per pass) and return the counters block per call."""
    reason = unavailable_reason(cpu, root, paranoid_path)
    # without a PMU the run is still counted in software events, and the hardware figures explained
    plan = Plan({}, [], [], "", False) if reason else event_plan(cpu, root, paranoid_path)
    wanted = list(plan.flop) + list(plan.dram)
    refused = {e: why for e in plan.core + plan.dram
               if (why := accepted(e, plan.dram_system_wide and e in plan.dram))}
    plan = replace(plan, core=[e for e in plan.core if e not in refused], dram=[e for e in plan.dram if e not in refused])
    readings, errors = {}, []
    for i, (core, system) in enumerate(plan.passes()):
        with ExitStack() as stack:
            sessions = [stack.enter_context(PerfSession(core))]
            if system:
                sessions.append(stack.enter_context(PerfSession(system, system_wide=True)))
            run(loops)
        for s in sessions:
            errors += [s.error] if s.error else []
            readings.update({e: r for e, r in s.readings.items() if i == 0 or e not in SOFTWARE_EVENTS})
    if errors and not reason:
        reason = f"perf failed: {errors[0]}"
    return summarize(plan, readings, loops, model_bytes, reason, wanted, refused)


def summarize(plan, readings, loops, model_bytes, reason, wanted, refused):
    """The counters block from the passes' readings (totals over `loops` calls)."""
    merged = {e: r for e in [*SOFTWARE_EVENTS, *BASE_EVENTS, *plan.flop, *plan.dram]
              if (r := reading_of(readings, e)) is not None}
    value = lambda e: merged[e].value if e in merged else None  # noqa: E731
    per_call = lambda x: None if x is None else x / loops  # noqa: E731
    task_clock_ms = per_call(value("task-clock"))
    task_clock_s = None if task_clock_ms is None else task_clock_ms / 1e3
    events = {e: r.value for e, r in readings.items()}
    if reason:
        return block("perf", reason, model_bytes=model_bytes, task_clock_s=task_clock_s, events=events)
    flops = None
    if plan.flop and all(value(e) is not None for e in plan.flop):
        flops = per_call(sum(value(e) * w for e, w in plan.flop.items()))
    dram = None
    if plan.dram and all(bytes_of(merged.get(e)) is not None for e in plan.dram):
        dram = per_call(sum(bytes_of(merged[e]) for e in plan.dram))
    why = [f"{e}: {refused.get(e, 'not counted')}" for e in wanted if value(e) is None] + plan.notes
    short = {e: r for e, r in merged.items() if r.enabled_pct is not None and r.enabled_pct < 100}
    scaled = sorted({f"{r.enabled_pct:g}%" for r in short.values() if not r.pmus})
    warnings = [f"multiplexed: some counts were scaled from {', '.join(scaled)} of the run"] if scaled else []
    folded = {}
    for e, r in short.items():
        if r.pmus:
            folded.setdefault((r.pmus, r.enabled_pct), []).append(e)
    warnings += [f"{', '.join(es)} counted on {' and '.join(pmus)} during {pct:g}% of the run, scaled to the whole: "
                 "the process also ran on cores whose PMU does not count them (pin it to one core type with "
                 "taskset), or they were multiplexed" for (pmus, pct), es in folded.items()]
    return block("perf", "; ".join(why) or None, dram_bytes=dram, flops=flops, model_bytes=model_bytes,
                 dram_bytes_source=plan.dram_label, flops_source=plan.flop_label, task_clock_s=task_clock_s, cycles=per_call(value("cycles")),
                 instructions=per_call(value("instructions")), passes=len(plan.passes()), events=events,
                 **({"warnings": warnings} if warnings else {}))
