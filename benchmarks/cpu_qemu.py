"""The CPU probes compiled for a CPU this machine is not and run on an emulated one (qemu-user),
each kernel's output checked as on real hardware: the code paths no machine here runs natively.
neoverse-v2: Arm (the fp16 FMLA and SDOT chains, the 128-bit read kernels, the decode kernels'
fp16 and bf16 conversions); haswell: AVX2 without AVX-512 (12 chains of 256-bit FMAs, the 256-bit
read kernels, no fp16 or dot-product peaks). Rates mean nothing under emulation; only the checks
count. Each target's CPU is a recorded /proc/cpuinfo of tests/fixtures, its LLVM CPU and features
given to llvmlite and Numba as the host's (under qemu-user /proc/cpuinfo and LLVM's host detection
see this machine, and the probes would compile for it). Exit 1 where a record failed.
Usage (through cpu_qemu.sh): python benchmarks/cpu_qemu.py TARGET [peak dot stream hierarchy decode]
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# target: (recorded /proc/cpuinfo, LLVM CPU name, LLVM features)
TARGETS = {"neoverse-v2": ("cpuinfo-arm-grace-handmade.txt", "neoverse-v2",
                           "+neon,+fp-armv8,+fullfp16,+dotprod,+bf16,+i8mm,+sve,+sve2"),
           "haswell": ("cpuinfo-intel-i5-8250u.txt", "haswell",
                       "+sse4.2,+popcnt,+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+lzcnt,+movbe")}
PROBES = {"peak": ("probes.cpu_peak", "run_peak", ("fp64", "fp32", "fp16")),
          "dot": ("probes.cpu_dot", "run_dot", ("bf16", "int8")),
          "stream": ("probes.cpu_stream", "run_stream", ("fp64", "fp32")),
          "hierarchy": ("probes.cpu_stream", "run_hierarchy", ("fp64",)),
          "decode": ("probes.cpu_decode", "run_decode", ("fp32", "bf16", "fp16", "int8"))}

if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
    sys.exit(f"usage: python benchmarks/cpu_qemu.py TARGET [PROBE ...]: TARGET is one of {', '.join(TARGETS)}")
CPUINFO, CPU_NAME, FEATURES = TARGETS[sys.argv[1]]
os.environ.update(NUMBA_CPU_NAME=CPU_NAME, NUMBA_CPU_FEATURES=FEATURES, HARNESS_TINY="1")
sys.path.insert(0, ROOT)
import llvmlite.binding as llvm  # noqa: E402


class HostFeatures(dict):
    """llvmlite's FeatureMap, as probes.llvm_jit reads it (flatten())."""

    def flatten(self, sort=True):
        return FEATURES


llvm.get_host_cpu_name = lambda: CPU_NAME  # probes.llvm_jit compiles for the host llvmlite names
llvm.get_host_cpu_features = HostFeatures

import importlib  # noqa: E402

from harness.machine import identify_cpu  # noqa: E402
from harness.workload import Context  # noqa: E402


def records(section, path=""):
    """(path, record) of every measured record in a probe's section."""
    if isinstance(section, dict):
        if "validated" in section:
            yield path, section
            return
        for key, value in section.items():
            yield from records(value, f"{path}.{key}" if path else key)
    elif isinstance(section, list):
        for i, value in enumerate(section):
            yield from records(value, f"{path}[{i}]")


def left_out(section):
    """(what, reason) of what a probe's section says it left out (peak_flops_unsupported, ...):
    a dtype, or a decode point's impl and dtype."""
    return [(" ".join(str(u[k]) for k in ("impl", "dtype") if k in u), u.get("reason"))
            for key, value in section.items() if key.endswith("_unsupported") for u in value]


def main():
    names = sys.argv[2:] or list(PROBES)
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        sys.exit(f"unknown probe {', '.join(unknown)}: valid are {', '.join(PROBES)}")
    cpu = identify_cpu(os.path.join(ROOT, "tests", "fixtures", CPUINFO))
    print(f"{cpu['model']} ({cpu['arch']}), simd {', '.join(cpu['simd'])}; LLVM: {CPU_NAME} {FEATURES}")
    failed = checked = 0
    for name in names:
        module, function, dtypes = PROBES[name]
        ctx = Context(cpu=cpu, threads=2, tiny=True, dtypes=dtypes, progress=lambda m: print(f"  .. {m}", flush=True))
        t0 = time.monotonic()
        section = getattr(importlib.import_module(module), function)(ctx)
        for path, rec in records(section):
            checked += 1
            failed += not rec["validated"]
            what = (rec.get("instruction") or (rec.get("kernel_config") or {}).get("read_kernel")
                    or (f"{rec['impl']} {rec['dtype']}" if rec.get("impl") else ""))
            print(f"{name}: {path} {what} {'validated' if rec['validated'] else 'FAILED: ' + str(rec.get('error'))}")
        for what, reason in sorted(set(left_out(section))):
            print(f"{name}: {what} left out: {reason}")
        print(f"{name}: {time.monotonic() - t0:.0f} s under emulation", flush=True)
    print(f"{checked - failed} of {checked} records validated on an emulated {CPU_NAME}")
    sys.exit(1 if failed or not checked else 0)


if __name__ == "__main__":
    main()
