"""Who is this machine: CPU model, caches, SIMD features, frequency, memory, OS and software."""

import importlib.metadata
import math
import os
import platform
import re
import shutil
import subprocess
import sys

from harness import cgroups
from harness.sysfs import read_text

# the OpenMP settings that bind threads to CPUs: recorded, never set by the harness
AFFINITY_VARIABLES = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY")
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
              "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "asimd", "asimdhp", "asimddp", "sve")
# the units beyond the FMA units that multiply matrices (cpu_peaks.MATRIX_UNITS): recorded apart
# from `simd`, whose list profiles made before them hold without these names
MATRIX_FLAGS = ("amx_bf16", "amx_fp16", "amx_int8", "avx512_fp16")
# Arm CPUs name no model in /proc/cpuinfo, only their implementer and part numbers (the Arm ARM's
# MIDR_EL1 fields; the names as Linux's arch/arm64/include/asm/cputype.h and lscpu give them)
ARM = 0x41  # Arm Ltd's own cores (Neoverse)
ARM_IMPLEMENTERS = {ARM: "ARM", 0x48: "HiSilicon", 0x4E: "NVIDIA", 0x51: "Qualcomm", 0x61: "Apple", 0xC0: "Ampere"}
ARM_PARTS = {(ARM, 0xD0C): "Neoverse-N1", (ARM, 0xD40): "Neoverse-V1", (ARM, 0xD49): "Neoverse-N2",
             (ARM, 0xD4F): "Neoverse-V2", (ARM, 0xD84): "Neoverse-V3", (ARM, 0xD8E): "Neoverse-N3",
             (0xC0, 0xAC3): "AmpereOne"}
# (family, first model, last model, generation) of AMD's Zen cores
AMD_ZEN_MODELS = ((0x17, 0x00, 0x2F, "Zen 1"), (0x17, 0x30, 0xFF, "Zen 2"), (0x19, 0x00, 0x0F, "Zen 3"),
                  (0x19, 0x10, 0x1F, "Zen 4"), (0x19, 0x20, 0x5F, "Zen 3"), (0x19, 0x60, 0xAF, "Zen 4"),
                  (0x1A, 0x00, 0xFF, "Zen 5"))
PACKAGES = ("numpy", "numba", "llvmlite", "torch", "pyyaml", "nvidia-ml-py", "cupy-cuda12x",
            "cupy-cuda13x", "matplotlib")


def parse_cpuinfo(text):
    """The first processor's fields of /proc/cpuinfo, plus counts of processors and sockets."""
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    procs = []
    for block in blocks:
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        procs.append(fields)
    first = procs[0] if procs else {}
    sockets = {p.get("physical id", "0") for p in procs}
    return {
        "fields": first,
        "processors": len(procs),
        "sockets": max(1, len(sockets)),
        "flags": set((first.get("flags") or first.get("Features") or "").split()),
    }


def arm_identity(fields):
    """(vendor, part number, model name) of an Arm CPU from its cpuinfo fields, or None if the
    fields name no implementer (x86). An unknown part is named by its numbers."""
    try:
        implementer, part = int(fields["CPU implementer"], 16), int(fields["CPU part"], 16)
    except (KeyError, ValueError):
        return None
    vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer 0x{implementer:02x}")
    return vendor, part, ARM_PARTS.get((implementer, part), f"{vendor} part 0x{part:03x}")


def sysfs_sockets(cpu_root="/sys/devices/system/cpu"):
    """Sockets as the kernel's topology counts them (distinct physical_package_id), or None: Arm's
    /proc/cpuinfo has no "physical id", so a two-socket Ampere would otherwise count as one."""
    try:
        entries = os.listdir(cpu_root)
    except OSError:
        return None
    ids = {read_text(os.path.join(cpu_root, e, "topology", "physical_package_id"))
           for e in entries if re.fullmatch(r"cpu\d+", e)} - {None}
    return len(ids) or None


def efficiency_cores(devices="/sys/devices"):
    """E-cores of a hybrid Intel CPU (Alder Lake and later: the kernel's cpu_atom PMU lists them,
    one thread each, beside cpu_core's P-cores), or 0 where the CPU is not hybrid."""
    if read_text(os.path.join(devices, "cpu_core", "cpus")) is None:
        return 0
    try:
        return count_cpu_list(read_text(os.path.join(devices, "cpu_atom", "cpus")) or "")
    except ValueError:  # no CPU list
        return 0


def amd_zen_generation(family, model):
    """'Zen 4' for an AMD family 19h model 11h, or None: AMD's families 17h, 19h and 1Ah hold
    several generations each, told apart by model ranges (AMD's revision guides; Linux's
    arch/x86 Zen checks and lscpu name the same ranges)."""
    for fam, low, high, name in AMD_ZEN_MODELS:
        if family == fam and model is not None and low <= model <= high:
            return name
    return None


def machine_slug(model_name, cores, family=None, model=None, vendor=None):
    """A stable, readable id such as 'amd-epyc-9654-96c' or 'intel-core-i5-8250u-4c'. A model
    name that names no model ('AMD EPYC', 'Intel(R) Xeon(R) Processor': what a hypervisor shows)
    gets the CPU's generation, so two kinds of guest do not share one id: 'amd-epyc-zen4-2c', or
    the family and model numbers where no generation is known ('intel-xeon-family6-model167-2c')."""
    name = re.sub(r"\((R|TM|tm|r)\)", " ", model_name)
    name = re.sub(r"@.*$", " ", name)  # nominal frequency
    name = re.sub(r"\b(CPU|Processor|\d+-Core|with .*)\b", " ", name, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cpu"
    if not re.search(r"\d", slug) and family is not None and model is not None:
        zen = amd_zen_generation(family, model) if vendor == "AuthenticAMD" else None
        slug += "-" + (zen.lower().replace(" ", "") if zen else f"family{family}-model{model}")
    return f"{slug}-{cores}c"


def parse_size_bytes(text):
    """'48K', '1024K', '32M' (sysfs cache sizes) -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"unrecognised size {text!r}")
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2).upper()]


def count_cpu_list(text):
    """'0-3,8' -> 5; ValueError where `text` is no CPU list."""
    n = 0
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            n += int(hi) - int(lo) + 1
        elif part:
            n += 1
    return n


def read_caches(cpu_dir="/sys/devices/system/cpu/cpu0/cache", online_cpus=None):
    """Data and unified caches of cpu0: level, size per instance, CPUs sharing one, instances."""
    online_cpus = online_cpus or os.cpu_count() or 1
    caches = []
    if not os.path.isdir(cpu_dir):
        return caches
    for entry in sorted(os.listdir(cpu_dir)):
        if not entry.startswith("index"):
            continue
        ctype, shared_list, level, size = (read_text(os.path.join(cpu_dir, entry, name))
                                           for name in ("type", "shared_cpu_list", "level", "size"))
        if ctype == "Instruction" or None in (ctype, shared_list, level, size):
            continue
        try:
            shared = count_cpu_list(shared_list)
            caches.append({"level": int(level), "type": ctype, "size_bytes": parse_size_bytes(size),
                           "shared_by_cpus": shared, "instances": max(1, online_cpus // max(1, shared))})
        except ValueError:
            continue
    return sorted(caches, key=lambda c: c["level"])


def read_meminfo(path="/proc/meminfo"):
    """(total, available) bytes of RAM (a value that is no whole number of kB counts as absent)."""
    values = {}
    for line in (read_text(path) or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    return values.get("MemTotal"), values.get("MemAvailable", values.get("MemFree"))


def number(text):
    """`text` as a finite float, or None where it is absent or no such number."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def whole_number(text):
    """`text` as an int, or None where it is absent or no whole number."""
    value = number(text)
    return int(value) if value is not None and value.is_integer() else None


def read_frequency(fields, cpufreq_dir="/sys/devices/system/cpu/cpu0/cpufreq"):
    """Nominal and current core clock in Hz, with where the nominal figure came from (a figure that
    is no number counts as absent)."""
    mhz, max_khz = number(fields.get("cpu MHz")), number(read_text(os.path.join(cpufreq_dir, "cpuinfo_max_freq")))
    current = mhz * 1e6 if mhz else None
    if max_khz:
        return {"nominal_hz": max_khz * 1e3, "current_hz": current,
                "source": "cpufreq cpuinfo_max_freq (maximum boost the OS may request)"}
    m = re.search(r"@\s*(\d+(?:\.\d+)?)\s*GHz", fields.get("model name", ""))
    if m:
        return {"nominal_hz": float(m.group(1)) * 1e9, "current_hz": current,
                "source": "model name (base clock; boost clocks are higher)"}
    if current:
        return {"nominal_hz": current, "current_hz": current,
                "source": "/proc/cpuinfo 'cpu MHz' (no cpufreq: under a hypervisor this is the "
                          "TSC rate; boost clocks are not visible)"}
    return {"nominal_hz": None, "current_hz": None, "source": "unknown: no cpufreq and no cpu MHz"}


# systemd-detect-virt's names where lscpu spells the same hypervisor otherwise; others ('amazon', ...) as it says
VIRT_NAMES = {"kvm": "KVM", "microsoft": "Microsoft", "vmware": "VMware", "xen": "Xen"}


def c_locale_env():
    """This process's environment in the C locale, for tools whose output is parsed: lscpu translates
    its labels, perf writes its CSV numbers with the locale's decimal mark (0,53 under de_DE)."""
    return {**os.environ, "LC_ALL": "C"}


def _output(command):
    """A command's standard output in the C locale, or None where it is missing or fails."""
    if not shutil.which(command[0]):
        return None
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=10, env=c_locale_env())
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def hypervisor_vendor(flags, arch=None):
    """'KVM', 'VMware', ... where this machine is a guest, else None. An x86 CPU flags it and lscpu
    names the vendor; an Arm CPU has no such flag (a Graviton or Azure Arm VM looked like bare
    metal), so systemd-detect-virt decides there, from DMI and the device tree."""
    if "hypervisor" in flags:
        m = re.search(r"Hypervisor vendor:\s*(\S+)", _output(["lscpu"]) or "")
        return m.group(1) if m else "unknown"
    if (arch or platform.machine()) in ("x86_64", "i386", "i686"):
        return None
    virt = (_output(["systemd-detect-virt", "--vm"]) or "").strip()
    return VIRT_NAMES.get(virt, virt) or None


def package_versions():
    """Installed versions of the packages the harness may use (None where absent)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def numba_threading():
    """Numba's threading layer (once a parallel kernel has run) and its thread counts."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not yet initialised"
    return {"layer": layer, "max_threads": numba.config.NUMBA_NUM_THREADS,
            "threads": numba.get_num_threads(),
            "openmp_affinity": {k: os.environ[k] for k in AFFINITY_VARIABLES if os.environ.get(k)} or None,
            "llvm_tuning": "-prefer-256-bit" if (numba.config.CPU_FEATURES or "").endswith(",-prefer-256-bit") else None}


def usable_cpus(quota=None):
    """CPUs this process may run on, which bounds --threads: those its affinity allows, no more
    than whole CPUs of its cgroup's CPU quota (threads beyond it would be throttled)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return cgroups.cpus_within(quota, cpus)


def memory_settings(root=""):
    """Kernel settings that move memory bandwidth: transparent huge pages (numpy asks for them on
    large arrays, so 'madvise' gives the STREAM arrays 2 MiB pages and 'never' does not), the NUMA
    nodes and automatic NUMA balancing (which migrates pages while a probe reads them)."""
    thp = re.search(r"\[(\w+)\]", read_text(f"{root}/sys/kernel/mm/transparent_hugepage/enabled") or "")
    try:
        nodes = sum(1 for n in os.listdir(f"{root}/sys/devices/system/node") if re.fullmatch(r"node\d+", n))
    except OSError:
        nodes = 0
    balancing = read_text(f"{root}/proc/sys/kernel/numa_balancing") or ""
    return {"transparent_hugepages": thp.group(1) if thp else None, "numa_nodes": nodes or None,
            "numa_balancing": int(balancing) if balancing.isdigit() else None}


def clock_settings(root=""):
    """Kernel settings that move the cores' clock (cpufreq, as pyperf's `system show` checks them;
    all None without cpufreq, as under most hypervisors): cpu0's scaling governor and energy/performance
    preference, the highest clock the OS lets it ask for (scaling_max_freq: below cpuinfo_max_freq
    it caps every compute figure) and whether turbo/boost is enabled (intel_pstate's no_turbo, else
    cpufreq's boost)."""
    cpu = f"{root}/sys/devices/system/cpu"
    cap_khz = number(read_text(f"{cpu}/cpu0/cpufreq/scaling_max_freq"))
    no_turbo, boost = read_text(f"{cpu}/intel_pstate/no_turbo"), read_text(f"{cpu}/cpufreq/boost")
    turbo = {"0": True, "1": False}.get(no_turbo) if no_turbo is not None else {"1": True, "0": False}.get(boost)
    return {"governor": read_text(f"{cpu}/cpu0/cpufreq/scaling_governor") or None,
            "energy_performance_preference": read_text(f"{cpu}/cpu0/cpufreq/energy_performance_preference") or None,
            "scaling_max_hz": cap_khz * 1e3 if cap_khz else None, "turbo": turbo}


def identify_cpu(cpuinfo_path="/proc/cpuinfo"):
    """Everything the profile records about the CPU and its memory."""
    info = parse_cpuinfo(read_text(cpuinfo_path) or "")
    fields, flags = info["fields"], info["flags"]
    if "physical id" not in fields:
        info["sockets"] = sysfs_sockets() or info["sockets"]
    threads = info["processors"] or (os.cpu_count() or 1)
    cores_per_socket = whole_number(fields.get("cpu cores")) or max(1, threads // info["sockets"])
    cores = cores_per_socket * info["sockets"]
    arm = arm_identity(fields)
    model = fields.get("model name") or (arm and arm[2]) or platform.processor() or platform.machine()
    vendor = arm[0] if arm else fields.get("vendor_id", "unknown")
    family = whole_number(fields.get("cpu family"))
    model_number = arm[1] if arm else int(fields["model"]) if fields.get("model", "").isdigit() else None
    total, available = read_meminfo()
    limits = cgroups.limits()
    if limits["memory_limit_bytes"]:  # a container's memory: /proc/meminfo shows the host's
        room = limits["memory_limit_bytes"] - (limits["memory_used_bytes"] or 0)
        available = min(available, room) if available else room
    return {
        "id": machine_slug(model, cores, family, model_number, vendor),
        "model": model,
        "vendor": vendor,
        "family": family,
        "model_number": model_number,
        "arch": platform.machine(),
        "sockets": info["sockets"],
        "cores": cores,
        "efficiency_cores": efficiency_cores(),  # of `cores`, on a hybrid Intel CPU
        "threads": threads,
        "usable_cpus": usable_cpus(limits["cpu_quota"]),
        "simd": sorted(f for f in SIMD_FLAGS if f in flags),
        "matrix_units": sorted(f for f in MATRIX_FLAGS if f in flags),
        "frequency": read_frequency(fields),
        "caches": read_caches(online_cpus=threads),
        "memory_bytes": total,
        "memory_available_bytes": available,
        "cgroup": limits,
        "memory_settings": memory_settings(),
        "clock_settings": clock_settings(),
        "hypervisor": hypervisor_vendor(flags),
    }


def identify_software():
    """OS, kernel, Python and package versions."""
    return {
        "os": platform.system(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
    }


ASSUMED_LLC_BYTES = 32 << 20  # the last-level cache assumed where sysfs shows no caches


def last_level_cache_bytes(cpu):
    """Total size of the largest cache level (all instances), or ASSUMED_LLC_BYTES if none is known."""
    caches = cpu.get("caches") or []
    if not caches:
        return ASSUMED_LLC_BYTES
    top = max(c["level"] for c in caches)
    return sum(c["size_bytes"] * c["instances"] for c in caches if c["level"] == top)
