"""CPU counters through `perf stat`, attached to this process for exactly the counted run.

FLOP events by vendor (weights = FLOPs per counted unit): AMD Zen `fp_ret_sse_avx_ops.all`
already counts FLOPs; Intel `fp_arith_inst_retired.*` counts instructions, weighted by lanes (FMA
instructions count twice in these events). DRAM bytes from the memory controllers' CAS counts
(Intel `uncore_imc/cas_count_read|write/`, 64 bytes each) where the PMU is exposed, otherwise an
estimate from last-level-cache misses x 64 bytes, labelled as such.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from harness.counters import block

EVENT_SOURCES = "/sys/bus/event_source/devices"
LINE_BYTES = 64
INTEL_FLOP_EVENTS = {  # event -> FLOPs per count (fp32 lanes; fp64 half as many)
    "fp_arith_inst_retired.scalar_single": 1, "fp_arith_inst_retired.scalar_double": 1,
    "fp_arith_inst_retired.128b_packed_single": 4, "fp_arith_inst_retired.128b_packed_double": 2,
    "fp_arith_inst_retired.256b_packed_single": 8, "fp_arith_inst_retired.256b_packed_double": 4,
    "fp_arith_inst_retired.512b_packed_single": 16, "fp_arith_inst_retired.512b_packed_double": 8,
}
AMD_FLOP_EVENTS = {"fp_ret_sse_avx_ops.all": 1}
SOFTWARE_EVENTS = ("task-clock",)
BASE_EVENTS = ("cycles", "instructions")


def pmus(root=EVENT_SOURCES):
    try:
        return set(os.listdir(root))
    except OSError:
        return set()


def unavailable_reason(cpu, root=EVENT_SOURCES, paranoid_path="/proc/sys/kernel/perf_event_paranoid"):
    """None if perf can count hardware events for this process, else the cause, named."""
    if not shutil.which("perf"):
        return "perf is not installed (Debian: apt-get install linux-perf)"
    devices = pmus(root)
    if not devices & {"cpu", "cpu_core", "cpu_atom", "armv8_pmuv3"}:
        where = f"under the {cpu.get('hypervisor')} hypervisor" if cpu.get("hypervisor") else "on this kernel"
        return (f"no hardware PMU {where}: {root} holds only {', '.join(sorted(devices)) or 'nothing'}; "
                "cycles, FLOP and DRAM events are <not supported>")
    try:
        with open(paranoid_path) as f:
            level = int(f.read())
    except (OSError, ValueError):
        level = None
    if level is not None and level > 2:
        return f"perf_event_paranoid is {level}: counting this process needs 2 or less (sysctl kernel.perf_event_paranoid)"
    return None


def event_plan(cpu, root=EVENT_SOURCES):
    """({event: flop weight}, [dram events], dram source label) for this CPU."""
    flop = AMD_FLOP_EVENTS if cpu.get("vendor") == "AuthenticAMD" else (
        INTEL_FLOP_EVENTS if cpu.get("vendor") == "GenuineIntel" else {})
    imcs = sorted(d for d in pmus(root) if d.startswith("uncore_imc"))
    if imcs:
        dram = [f"{imc}/cas_count_read/" for imc in imcs] + [f"{imc}/cas_count_write/" for imc in imcs]
        return flop, dram, "memory-controller CAS counts x 64 bytes"
    return flop, ["LLC-load-misses", "LLC-store-misses"], "estimate: last-level-cache misses x 64 bytes"


def parse_perf_csv(text):
    """{event: float or None} from `perf stat -x,` output; None for <not supported>/<not counted>."""
    values = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) < 3:
            continue
        raw, event = fields[0].strip(), fields[2].strip()
        try:
            values[event] = float(raw)
        except ValueError:
            values[event] = None  # <not supported>, <not counted>
    return values


class PerfSession:
    """`with PerfSession(events) as s: work()` counts `events` for this process during the block."""

    ATTACH_WAIT_S = 0.3

    def __init__(self, events, pid=None):
        self.events, self.pid = list(events), pid or os.getpid()
        self.values, self.error = {}, None

    def __enter__(self):
        fd, self.out = tempfile.mkstemp(prefix="harness-perf-", suffix=".csv")
        os.close(fd)
        self.proc = subprocess.Popen(["perf", "stat", "-x,", "--no-big-num", "-e", ",".join(self.events),
                                      "-p", str(self.pid), "-o", self.out],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(self.ATTACH_WAIT_S)  # perf needs a moment to open its counters
        if self.proc.poll() is not None:
            self.error = (self.proc.stderr.read() or "perf exited at once").strip().splitlines()[0]
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        try:
            with open(self.out) as f:
                self.values = parse_perf_csv(f.read())
        finally:
            os.unlink(self.out)
        return False


def count(cpu, run, loops, model_bytes):
    """Run `run(loops)` under perf and return the counters block per call."""
    reason = unavailable_reason(cpu)
    flop_events, dram_events, dram_label = event_plan(cpu)
    events = list(SOFTWARE_EVENTS) + ([] if reason else list(BASE_EVENTS) + list(flop_events) + dram_events)
    with PerfSession(events) as session:
        run(loops)
    if session.error:
        return block("perf", f"perf failed: {session.error}", model_bytes=model_bytes)
    v = session.values
    per_call = lambda x: None if x is None else x / loops  # noqa: E731
    task_clock_s = per_call(v.get("task-clock")) and per_call(v.get("task-clock")) / 1e3
    if reason:
        return block("perf", reason, model_bytes=model_bytes, task_clock_s=task_clock_s, events=v)
    flops = None
    if flop_events and all(v.get(e) is not None for e in flop_events):
        flops = per_call(sum(v[e] * w for e, w in flop_events.items()))
    dram = None
    if all(v.get(e) is not None for e in dram_events):
        dram = per_call(sum(v[e] for e in dram_events) * LINE_BYTES)
    missing = [e for e in list(flop_events) + dram_events if v.get(e) is None]
    return block("perf", f"not counted here: {', '.join(missing)}" if missing else None, dram_bytes=dram, flops=flops,
                 model_bytes=model_bytes, dram_bytes_source=dram_label, task_clock_s=task_clock_s,
                 cycles=per_call(v.get("cycles")), instructions=per_call(v.get("instructions")), events=v)
