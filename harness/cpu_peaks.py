"""Theoretical CPU peaks: FLOP/s from a microarchitecture table, DRAM bytes/s from SMBIOS."""

import re
import shutil
import subprocess

from harness.machine import ARM, ARM_PARTS, amd_zen_generation

DTYPE_BYTES = {"fp64": 8, "fp32": 4}
# flags of native fp16 vector FMAs, on the same FMA units as fp32's with twice the lanes (Intel's
# optimisation manual: VFMADD*PH as VFMADD*PS on Sapphire Rapids; Arm's guides: FMLA .8H as .4S)
NATIVE_FP16_FLAGS = {"avx512_fp16": "AVX512-FP16", "asimdhp": "Arm Advanced SIMD FP16"}
TABLE_SOURCE = ("FMA units and datapath width per core from the vendors' optimisation guides (AMD "
                "Software Optimization Guides for family 17h/19h/1Ah; Intel 64 and IA-32 Architectures "
                "Optimization Reference Manual; Arm Neoverse Software Optimization Guides)")
# AMD Zen generations (machine.amd_zen_generation): FMA pipes per core and their width
ZEN_FMA = {"Zen 1": (2, 128, "Zen/Zen+ (family 17h)"), "Zen 2": (2, 256, "Zen 2 (family 17h)"),
           "Zen 3": (2, 256, "Zen 3 (family 19h)"),
           "Zen 4": (2, 256, "Zen 4 (family 19h: AVX-512 executed on 256-bit datapaths)"),
           "Zen 5": (2, 512, "Zen 5 (family 1Ah: full 512-bit FMA datapaths on EPYC and desktop parts; "
                             "mobile parts have 256-bit ones)")}
# Arm Neoverse cores by part number (model_number): FP/ASIMD pipes that each take a 128-bit FMLA.
# V1's SVE is 256 bits wide on two of its four pipes: the same FLOPs per cycle either way.
NEOVERSE_FMA = {0xD0C: 2, 0xD40: 4, 0xD49: 2, 0xD4F: 4, 0xD84: 4, 0xD8E: 2}  # N1, V1, N2, V2, V3, N3
# Intel's E-cores (Gracemont, Crestmont) have two 128-bit FMA-capable FP pipes, half a P-core's width:
# the E-core-only parts by model number, and a hybrid's E-cores (machine.efficiency_cores) beside P-cores
E_CORE_FMA = (2, 128)
INTEL_E_CORE_MODELS = {0xAF: "Sierra Forest", 0xB6: "Grand Ridge", 0xBE: "Alder Lake-N"}


def fma_datapath(vendor, family, model, flags):
    """(FMA units per core, datapath bits, microarchitecture name) or (None, None, reason)."""
    if vendor == "ARM" and model in NEOVERSE_FMA:  # every AArch64 core has FMA in Advanced SIMD
        units = NEOVERSE_FMA[model]
        name = ARM_PARTS[(ARM, model)].replace("-", " ")  # "Neoverse V2", as Arm's guides write it
        return units, 128, f"{name} ({units} x 128-bit FP/ASIMD pipes)"
    if "asimd" in flags:
        part = f"0x{model:03x}" if isinstance(model, int) else repr(model)
        return None, None, f"no FMA table entry for Arm vendor {vendor!r} part {part} (Neoverse N1 to V3 are known)"
    if "fma" not in flags:
        return None, None, "no FMA instructions: this harness has no peak table for non-FMA CPUs"
    zen = amd_zen_generation(family, model) if vendor == "AuthenticAMD" else None
    if zen:
        return ZEN_FMA[zen]
    if vendor == "GenuineIntel" and family == 6:
        if model in INTEL_E_CORE_MODELS:
            return (*E_CORE_FMA, f"Intel {INTEL_E_CORE_MODELS[model]} (E-cores: two {E_CORE_FMA[1]}-bit FMA units)")
        if "avx512f" in flags:
            return 2, 512, ("Intel with AVX-512 (two 512-bit FMA units assumed, as on Xeon Gold/Platinum; "
                            "some SKUs have one)")
        return 2, 256, "Intel with AVX2/FMA (two 256-bit FMA units, Haswell and later)"
    return None, None, f"no FMA table entry for vendor {vendor!r} family {family!r}"


# Matrix units beyond the FMA units, by the cpuinfo flag that names them (machine.MATRIX_FLAGS):
# dtype, operations per cycle per core (a multiply-add counts 2; None: twice the fp32 FMA rate), unit.
# AMX's tile unit multiplies a 16 x 16 tile over 32 bf16 or fp16 pairs, or 64 int8 ones, every 16
# cycles; AVX512-FP16 FMAs hold 32 halves in 512 bits, twice fp32's lanes, on the same FMA units.
MATRIX_UNITS = {"amx_bf16": ("bf16", 1024, "AMX-BF16 tiles (TDPBF16PS)"),
                "amx_fp16": ("fp16", 1024, "AMX-FP16 tiles (TDPFP16PS)"),
                "amx_int8": ("int8", 2048, "AMX-INT8 tiles (TDPBSSD)"),
                "avx512_fp16": ("fp16", None, "AVX512-FP16 FMAs")}
MATRIX_SOURCE = ("Intel 64 and IA-32 Architectures Optimization Reference Manual (AMX: one 16x16 tile product "
                 "every 16 cycles, 1024 bf16/fp16 or 2048 int8 operations per cycle per core; AVX512-FP16)")
MATMUL_DTYPES = ("fp32", "bf16", "fp16", "int8")


def theoretical_matmul_flops(cpu, fma):
    """The matmul peaks' theory (probes/cpu_matmul.py), at the nominal clock: fp32 on the FMA units
    (`fma`: theoretical_flops' result), bf16, fp16 and int8 on the matrix units the CPU names
    (MATRIX_UNITS). A dtype with no such unit says so: torch then runs it on dot-product
    instructions or widens it to fp32, rates this table does not hold.
    {'flops_per_s': {dtype: rate or None}, 'ops_per_cycle_per_core', 'source': {dtype: how}, 'table_source'}."""
    units = set(cpu.get("matrix_units") or [])
    fp32 = (fma.get("flops_per_cycle_per_core") or {}).get("fp32")
    per_cycle, how = {"fp32": fp32}, {"fp32": "the FMA units (the fp32 FMA peak)" if fp32 else fma["source"]}
    for flag, (dtype, ops, unit) in MATRIX_UNITS.items():
        rate = ops or (2 * fp32 if fp32 else None)
        if flag in units and rate and (per_cycle.get(dtype) or 0) < rate:
            per_cycle[dtype], how[dtype] = rate, f"{unit}, {rate} per cycle per core"
    for dtype in MATMUL_DTYPES:
        if dtype not in per_cycle:
            per_cycle[dtype] = None
            how[dtype] = (f"not derivable: no {dtype} matrix unit in this harness's table (AMX, AVX512-FP16) among "
                          f"the CPU's flags")
    freq = (cpu.get("frequency") or {}).get("nominal_hz")
    flops = {d: cpu["cores"] * n * freq if n and freq else None for d, n in per_cycle.items()}
    return {"flops_per_s": flops, "ops_per_cycle_per_core": per_cycle, "source": how, "table_source": MATRIX_SOURCE}


def native_fp16(flags):
    """The native fp16 FMA extensions among the CPU's flags, by name ([] where fp16 would be widened)."""
    return [name for flag, name in NATIVE_FP16_FLAGS.items() if flag in flags]


def fma_dtype_bytes(flags):
    """{dtype: bytes} the CPU's FMA units compute on: fp64 and fp32, and fp16 where it is native."""
    return {**DTYPE_BYTES, **({"fp16": 2} if native_fp16(flags) else {})}


def theoretical_flops(cpu):
    """{'flops_per_s': {fp64, fp32, fp16 where native}, 'flops_per_cycle_per_core': {...}, 'source': str}."""
    flags = set(cpu.get("simd", []))
    units, bits, arch = fma_datapath(cpu.get("vendor"), cpu.get("family"), cpu.get("model_number"), flags)
    freq = cpu.get("frequency", {}).get("nominal_hz")
    widths = fma_dtype_bytes(flags)
    if units is None:
        return {"flops_per_s": {d: None for d in widths}, "flops_per_cycle_per_core": None,
                "source": f"not derivable: {arch}"}
    per_cycle = {d: units * (bits // (8 * b)) * 2 for d, b in widths.items()}
    if not freq:  # a cloud Arm VM has neither cpufreq nor "cpu MHz": FLOPs per cycle still give the clock implied
        return {"flops_per_s": {d: None for d in widths}, "flops_per_cycle_per_core": per_cycle,
                "source": f"not derivable: the core clock is unknown ({arch}: {per_cycle['fp32']} fp32 FLOP per "
                          f"cycle per core; the peak probe gives the clock it implies); {TABLE_SOURCE}"}
    cores, e_cores = cpu["cores"], cpu.get("efficiency_cores") or 0
    fp16 = " or ".join(native_fp16(flags))
    source = (f"{cores} cores x {units} FMA units x ({bits}-bit lanes) x 2 FLOP x {freq / 1e9:.3f} GHz; "
              + (f"fp16 ({fp16}) on the same units, twice fp32's lanes; " if fp16 else "")
              + f"{arch}; clock from {cpu['frequency']['source']}; {TABLE_SOURCE}")
    if e_cores and cpu.get("vendor") == "GenuineIntel" and 0 < e_cores < cores:
        e_units, e_bits = E_CORE_FMA
        per_cycle = {d: ((cores - e_cores) * per_cycle[d] + e_cores * e_units * (e_bits // (8 * b)) * 2) / cores
                     for d, b in widths.items()}
        source = (f"hybrid: {cores - e_cores} P-cores x {units} FMA units x ({bits}-bit lanes) + {e_cores} E-cores x "
                  f"{e_units} x ({e_bits}-bit lanes), x 2 FLOP x {freq / 1e9:.3f} GHz (the E-cores' own clock is "
                  f"lower: this overstates them); per core, their mean; clock from {cpu['frequency']['source']}; "
                  f"{TABLE_SOURCE}")
    if cpu.get("hypervisor"):
        source += "; under a hypervisor each vCPU is counted as a core"
    return {"flops_per_s": {d: cores * n * freq for d, n in per_cycle.items()},
            "flops_per_cycle_per_core": per_cycle, "source": source}


def parse_dmidecode_memory(text):
    """Populated memory devices of `dmidecode -t 17`: [{'mt_per_s', 'data_width_bits'}]."""
    devices = []
    for block in text.split("\n\n"):
        if "Memory Device" not in block:
            continue
        size = re.search(r"^\s*Size:\s*(.+)$", block, re.MULTILINE)
        if not size or "No Module" in size.group(1) or size.group(1).strip() in ("Unknown", "0"):
            continue
        speed = (re.search(r"Configured (?:Memory|Clock) Speed:\s*(\d+)\s*MT/s", block)
                 or re.search(r"^\s*Speed:\s*(\d+)\s*MT/s", block, re.MULTILINE))
        width = re.search(r"^\s*Data Width:\s*(\d+)\s*bits", block, re.MULTILINE)
        if speed and width:
            devices.append({"mt_per_s": int(speed.group(1)), "data_width_bits": int(width.group(1))})
    return devices


def theoretical_dram_bandwidth(run=subprocess.run):
    """{'bytes_per_s', 'source'}: sum over populated DIMMs of transfer rate x bus width."""
    if not shutil.which("dmidecode"):
        return {"bytes_per_s": None,
                "source": "not derivable: dmidecode is not installed, so DIMM speeds and count are unknown"}
    try:
        proc = run(["dmidecode", "-t", "17"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return {"bytes_per_s": None, "source": f"not derivable: dmidecode failed ({e})"}
    devices = parse_dmidecode_memory(proc.stdout) if proc.returncode == 0 else []
    if not devices:
        why = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else "no populated memory devices"
        return {"bytes_per_s": None,
                "source": f"not derivable: dmidecode reported no usable DIMMs ({why}); common under a hypervisor"}
    total = sum(d["mt_per_s"] * 1e6 * d["data_width_bits"] / 8 for d in devices)
    return {"bytes_per_s": total,
            "source": (f"dmidecode: {len(devices)} populated DIMMs, sum of transfer rate x data width; "
                       "assumes one DIMM per channel (two per channel share one channel's bandwidth)")}
