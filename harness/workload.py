"""A probe's declared unit of work, and the one place where time becomes bytes/s and FLOP/s.

Probes declare bytes and FLOPs per call as data (BabelStream's and likwid-bench's lesson); the
harness times them, checks their output and derives the rates here, so a unit error cannot hide
in one probe.
"""

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from harness import stats
from harness.timing import measure, measure_interleaved


@dataclass
class Workload:
    """One timed kernel: ``run(loops)`` does `loops` calls; ``check()`` returns an error or None."""

    name: str
    run: Callable[[int], None]
    check: Callable[[], "str | None"]
    poison: Callable[[], None]
    threads: int
    dtype: str
    bytes_per_call: int = 0
    flops_per_call: int = 0
    working_set_bytes: int = 0
    info: dict = field(default_factory=dict)  # extra fields recorded as they are
    device: str = "cpu"  # "gpu": `threads` is the GPU's thread count and Numba's is left alone


@dataclass
class Context:
    """What a probe needs from the harness: sizes, repeats, threads, progress and the machine."""

    cpu: dict
    threads: int
    quick: bool = False
    tiny: bool = False  # test-only: tiny arrays and few samples (HARNESS_TINY=1)
    dtypes: tuple = ("fp64", "fp32", "fp16")  # asked for: each probe measures those it has (of_dtypes)
    full: bool = False  # the long sweeps (`harness profile --full`)
    options: dict = field(default_factory=dict)  # probe options from `harness probe NAME --...`
    gpu: dict | None = None  # the GPU a GPU probe runs on (index, sm_count, l2_bytes, ...)
    counters: str = "off"  # auto | off | perf | ncu (harness/counters)
    progress: Callable[[str], None] = lambda msg: None
    clock: Callable[[], int] = time.perf_counter_ns

    def of_dtypes(self, valid):
        """The dtypes asked for that a probe has (`valid`), in the order asked."""
        return tuple(d for d in self.dtypes if d in valid)

    @property
    def repeats(self):
        return 3 if self.tiny else (4 if self.quick else 10)

    @property
    def min_sample_s(self):
        return 0.001 if self.tiny else (0.015 if self.quick else 0.05)

    @property
    def budget_s(self):
        """Seconds of samples past which a probe with long calls takes fewer (at least 3)."""
        return None if self.tiny else (1.0 if self.quick else 2.5)

    def measure(self, workload, between=None, repeats=None):
        """Poison, time, validate: a record with raw samples and derived rates, and its counters
        (`between`: called right before each sample, untimed; `repeats`: at most this many samples)."""
        repeats = min(self.repeats, repeats or self.repeats)
        rec = time_workload(workload, repeats, self.min_sample_s, self.clock, between, self.budget_s)
        rec["counters"] = self.count(workload, rec)
        return rec

    def measure_interleaved(self, workloads, repeats=None):
        """measure, of workloads timed in interleaved rounds (time_interleaved): their records, in order."""
        recs = time_interleaved(workloads, min(self.repeats, repeats or self.repeats), self.min_sample_s, self.clock,
                                self.budget_s)
        for w, rec in zip(workloads, recs):
            if w.device == "cpu":
                set_cpu_threads(w.threads)  # perf counts its calls on the threads they were timed on
            rec["counters"] = self.count(w, rec)
        return recs

    def count(self, w, rec):
        """The counters block for a CPU record: counted by perf when asked (or when `auto` finds a
        PMU), else the reason. GPU records are counted afterwards by re-running under ncu."""
        from harness import counters
        from harness.counters import perf

        if w.device != "cpu":
            return counters.unavailable("not counted: ncu re-runs only the fp32 triad, the fp32 FMA and the longest "
                                        "cupy-fused decode caches of a GPU profile (--counters auto or ncu)")
        if self.counters == "off":
            return counters.unavailable("counting was not asked for (--counters off)")
        if self.counters == "ncu":
            return counters.unavailable("--counters ncu counts GPU probes only")
        reason = perf.unavailable_reason(self.cpu)
        if self.counters == "auto" and reason:
            return counters.unavailable(reason)
        return perf.count(self.cpu, w.run, rec["loops_per_sample"], w.bytes_per_call or None)


def time_workload(w, repeats, min_sample_s, clock=time.perf_counter_ns, between=None, budget_s=None):
    """Run the timing core on a workload and turn its samples into a profile record."""
    digest = probe_hash(w)  # before the check adds its findings to w.info
    if w.device == "cpu":
        set_cpu_threads(w.threads)
    w.poison()
    m = measure(w.run, repeats=repeats, min_sample_s=min_sample_s, clock=clock, between=between, budget_s=budget_s)
    return record(w, m, w.check(), digest)


def time_interleaved(workloads, repeats, min_sample_s, clock=time.perf_counter_ns, budget_s=None):
    """Records of workloads timed in interleaved rounds (timing.measure_interleaved), each CPU one on its threads,
    each poisoned right before its last sample and checked right after it. Each record's
    `interleaved_with` names the workloads its samples alternated with, in their order (with their
    threads, where they differ). `budget_s`: as timing.measure_interleaved's."""
    digests = [probe_hash(w) for w in workloads]
    runs = [w.run for w in workloads]
    several = len({w.threads for w in workloads}) > 1
    if workloads[0].device == "cpu":
        if not several:
            set_cpu_threads(workloads[0].threads)
        else:  # each sample sets its own (a few microseconds, inside samples of milliseconds)
            runs = [lambda loops, w=w: (set_cpu_threads(w.threads), w.run(loops)) for w in workloads]
    errors = [None] * len(workloads)

    def checked(i):
        def check():
            errors[i] = workloads[i].check()
        return check
    ms = measure_interleaved(runs, repeats=repeats, min_sample_s=min_sample_s, clock=clock,
                             around_last=[(w.poison, checked(i)) for i, w in enumerate(workloads)], budget_s=budget_s)
    names = interleaved_names(workloads)  # one list, which the profile's YAML then writes once
    return [{**record(w, m, error, digest), "interleaved_with": names}
            for w, m, error, digest in zip(workloads, ms, errors, digests)]


def interleaved_names(workloads):
    """The names `interleaved_with` gives workloads timed in the same rounds: each workload's name,
    with its threads where those differ (the thread sweep) and its working set where names repeat
    (the hierarchy sweep's reads)."""
    several = len({w.threads for w in workloads}) > 1
    repeated = len({(w.name, w.threads) for w in workloads}) < len(workloads)
    names = []
    for w in workloads:
        qualifiers = ([f"{w.threads} thread{'s' * (w.threads != 1)}"] if several else []) + (
            [working_set_text(w.working_set_bytes)] if repeated else [])
        names.append(f"{w.name} ({', '.join(qualifiers)})" if qualifiers else w.name)
    return names


def working_set_text(nbytes):
    """A working set as '16 KiB' or '256 MiB' (binary units, whole where they are)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.4g} {unit}"
    return f"{int(nbytes)} B"


def record(w, m, error, digest):
    """The profile record of workload `w` from its Measurement `m` and its output check's error (None: valid)."""
    rec = {"dtype": w.dtype, "threads": w.threads, "working_set_bytes": int(w.working_set_bytes),
           "probe_hash": digest}
    rec.update(w.info)
    for work, key in ((w.bytes_per_call, "bytes"), (w.flops_per_call, "flops")):
        if work:
            rec[f"{key}_per_call"] = int(work)
            figures = stats.sample_figures(m.samples_s, int(work), key)
            rec[f"{key}_per_s"] = None if error else figures[f"{key}_per_s"]
            rec[f"median_{key}_per_s"] = None if error else figures[f"median_{key}_per_s"]
    best, median = stats.sample_times(m.samples_s)
    rec.update({
        "best_time_s": best,
        "median_time_s": median,
        "samples_s": [float(s) for s in m.samples_s],
        "loops_per_sample": m.loops_per_sample,
        "timer_resolution_s": m.timer_resolution_s,
        "steal_fraction": m.steal_fraction,
        "other_load_fraction": m.other_load_fraction,
        "validated": error is None,
        "warnings": list(m.warnings),
    })
    if error:
        rec["error"] = error
        rec["warnings"].append(f"output check failed: {error}")
    return rec


# syntax-tree fields Python added after 3.11 (3.12: PEP 695 type parameters), left out where empty
LATER_AST_FIELDS = ("type_params",)


def stable_dump(node):
    """A syntax tree as Python 3.11's ast.dump writes it, on every Python: 3.12 adds empty
    type_params=[] fields and 3.13 leaves out every empty list, so ast.dump itself would give the
    same code another hash on each (and a Python upgrade would make every metric 'not comparable')."""
    if isinstance(node, ast.AST):
        fields = []
        for name in node._fields:
            value = getattr(node, name, None)
            if (value is None and getattr(type(node), name, ...) is None) or (name in LATER_AST_FIELDS and not value):
                continue  # an optional field left out, as 3.11 leaves it out
            fields.append(f"{name}={stable_dump(value)}")
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return f"[{', '.join(stable_dump(x) for x in node)}]"
    return repr(node)


def source_text(path):
    """A module's source, read each time: the parsing below is cached by it, so an edit counts."""
    with open(path, encoding="utf-8") as f:
        return f.read()


@functools.lru_cache(maxsize=64)
def python_code(source):
    """A module's code as its syntax tree: comments, docstrings and line numbers do not count."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return stable_dump(tree).encode()


MEASURED_INFO = ("seed", "kernel_config")  # info that varies between runs of the same probe: not hashed


@functools.lru_cache(maxsize=64)
def probe_imports(source):
    """The probes.* names a module's source imports, at its top or inside a function: ('probes.x',
    ()) for `import probes.x` or `from probes.x import f`, ('probes', ('cpu_read', ...)) for `from
    probes import ...` (names that may be modules)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {(a.name, ()) for a in node.names if a.name.startswith("probes.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "probes":
            found.add((node.module, tuple(a.name for a in node.names)))
    return sorted(found)


def imported_probe_modules(module):
    """The probes.* modules a module imports (probe_imports; `from probes import cpu_read` names a
    module, `from probes import torch_unavailable_reason` the registry's function, which is not a
    probe's code)."""
    names = set()
    for name, members in probe_imports(source_text(inspect.getsourcefile(module))):
        package = hasattr(importlib.import_module(name), "__path__")
        names |= {name} | {f"{name}.{m}" for m in members if package and importlib.util.find_spec(f"{name}.{m}")}
    return [importlib.import_module(n) for n in sorted(names) if n.startswith("probes.")]


def probe_modules(w):
    """The modules a workload's code comes from: its run function's module and every probes.*
    module that one imports, and those import, to the end of the chain (the stream probe's read
    kernel is compiled by probes.llvm_jit through probes.cpu_read), sorted by name."""
    start = inspect.getmodule(w.run)
    found, todo = set(), [start] if start else []
    while todo:
        module = todo.pop()
        if module not in found:
            found.add(module)
            todo.extend(imported_probe_modules(module))
    return sorted(found, key=lambda m: m.__name__)


def probe_hash(w):
    """A short hash of the probe's code (the modules `probe_modules` finds, as syntax
    trees, so an edited comment or docstring changes nothing; the kernel files they list in
    KERNEL_FILES, byte for byte) and of the workload's parameters: `compare` calls metrics of a
    changed probe not comparable. Any change to a probe's code counts, a reworded error message
    too: it makes the committed profiles' metrics of that probe not comparable with a new run
    (`make regress`) until the machine is profiled again."""
    modules = probe_modules(w)
    h = hashlib.sha256()
    for m in modules:
        h.update(m.__name__.encode() + python_code(source_text(inspect.getsourcefile(m))))
    for path in sorted({p for m in modules for p in getattr(m, "KERNEL_FILES", ())}):
        with open(path, "rb") as f:  # kernels compiled at run time (a GPU probe's CUDA source)
            h.update(os.path.basename(path).encode() + f.read())
    params = {"name": w.name, "dtype": w.dtype, "threads": w.threads, "bytes": w.bytes_per_call,
              "flops": w.flops_per_call, "working_set": w.working_set_bytes,
              "info": {k: v for k, v in w.info.items() if k not in MEASURED_INFO}}
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def set_cpu_threads(threads):
    """Set Numba's thread count for the next parallel kernels."""
    import numba

    numba.set_num_threads(threads)


def tiny_sizes():
    """True when HARNESS_TINY=1 asks for test-sized runs."""
    return os.environ.get("HARNESS_TINY") == "1"


def stderr_progress(prefix="harness"):
    """A progress callback that prints timestamped lines to stderr."""
    t0 = time.monotonic()

    def progress(msg):
        print(f"[{prefix} {time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return progress
