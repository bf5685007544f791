"""The LLVM IR kernels (peak FMA chains, dot-product chains, read sums) compiled for CPUs this VM is
not, as the probes would compile them there: each CPU's flags choose the kernel's shape through the
probe's own code, llvmlite's other targets give the assembly, and the loop must hold the
instructions the probe counts and nothing that would share their pipes (register copies, spills)."""

import re

import pytest

from probes import cpu_dot, cpu_peak, cpu_read

X86, ARM = "x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"
AVX2 = ["sse4_2", "avx", "avx2", "fma"]
AVX512 = AVX2 + ["avx512f", "avx512bw", "avx512vl"]
NEON = ["fp", "asimd"]
# LLVM's name for each CPU, and the flags /proc/cpuinfo shows there (machine.SIMD_FLAGS' spelling)
CPUS = {"haswell": (X86, AVX2), "alderlake": (X86, AVX2 + ["avx_vnni"]),
        "skylake-avx512": (X86, AVX512), "cascadelake": (X86, AVX512 + ["avx512_vnni"]),
        "cooperlake": (X86, AVX512 + ["avx512_vnni", "avx512_bf16"]),
        "sapphirerapids": (X86, AVX512 + ["avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni"]),
        "znver3": (X86, AVX2), "znver4": (X86, AVX512 + ["avx512_vnni", "avx512_bf16"]),
        "znver5": (X86, AVX512 + ["avx512_vnni", "avx512_bf16", "avx_vnni"]),
        "neoverse-n1": (ARM, NEON + ["asimdhp", "asimddp"]), "neoverse-v1": (ARM, NEON + ["asimdhp", "asimddp", "sve"]),
        "neoverse-v2": (ARM, NEON + ["asimdhp", "asimddp", "sve", "sve2"])}
LOOP_CONTROL = re.compile(r"(add|sub|inc|dec|cmp|subs|adds)[lq]?$|j\w+$|b\.\w+$|cbn?z$")
X86_REGISTERS = {512: "zmm", 256: "ymm", 128: "xmm"}
ARM_ARRANGEMENT = {"fp64": "2d", "fp32": "4s", "fp16": "8h"}


def assembly(ir, llvm_cpu, features=""):
    """The IR's assembly for `llvm_cpu` (its triple from CPUS), or a skip where llvmlite lacks the target."""
    import llvmlite.binding as llvm

    for init in ("initialize_all_targets", "initialize_all_asmprinters"):  # gone where llvmlite does it itself
        getattr(llvm, init, lambda: None)()
    triple = CPUS[llvm_cpu][0]
    try:
        target = llvm.Target.from_triple(triple)
    except RuntimeError as e:
        pytest.skip(f"this llvmlite has no {triple} target: {e}")
    return target.create_target_machine(cpu=llvm_cpu, features=features, opt=3).emit_assembly(llvm.parse_assembly(ir))


def loop_body(asm, loops_expected=1):
    """The (mnemonic, operands) of the first loop in `asm` (of `loops_expected`): from a label to the
    branch back to it."""
    lines = [line.strip() for line in asm.splitlines()]
    labels = {line[:-1]: i for i, line in enumerate(lines) if re.fullmatch(r"\.LBB\d+_\d+:", line)}
    loops = [(labels[m.group(1)], i) for i, line in enumerate(lines)
             if (m := re.search(r"\s(\.LBB\d+_\d+)$", line)) and labels.get(m.group(1), len(lines)) < i]
    assert len(loops) == loops_expected, f"expected {loops_expected} loops, found {len(loops)}"
    start, end = loops[0]
    body = [line.split(None, 1) for line in lines[start + 1:end + 1] if line and not line.startswith((".", "#", "//"))]
    return [(parts[0], parts[1] if len(parts) > 1 else "") for parts in body]


def chains_loop(monkeypatch, module, build, llvm_cpu):
    """(vectors, the chains' loop body) of the chains `module` (cpu_peak, cpu_dot) compiles on
    llvm_cpu: `build(cpu)` makes the workload there, whose one call of module.parallel_chains(dtype,
    vectors, width) gives the shape, compiled here for llvm_cpu instead of for this host."""
    seen = []
    with monkeypatch.context() as m:
        m.setattr(module, "parallel_chains", lambda *args: seen.append(args) or (lambda *a: None))
        build({"simd": CPUS[llvm_cpu][1]})
    ((dtype, vectors, width),) = seen
    return vectors, loop_body(assembly(module.chains_ir(dtype, vectors, width), llvm_cpu))


PEAK_CASES = [(name, dtype) for name, (_, flags) in CPUS.items() for dtype in cpu_peak.DTYPES
              if not cpu_peak.unsupported_reason({"simd": flags}, dtype)]


@pytest.mark.parametrize("llvm_cpu,dtype", PEAK_CASES)
def test_peak_chains_loop_holds_one_fma_per_vector_and_nothing_beside_them(llvm_cpu, dtype, monkeypatch):
    # a = fma(x, y, a) is the form each ISA's vector FMA writes in place; a = a * x + y made LLVM copy
    # a register before each of Arm's FMLAs (89 instructions a loop of 24 FMLAs on neoverse-n1)
    triple, flags = CPUS[llvm_cpu]
    vectors, body = chains_loop(monkeypatch, cpu_peak, lambda cpu: cpu_peak.peak_workload(cpu, dtype, 1, 1), llvm_cpu)
    if triple == X86:
        suffix, register = {"fp64": "pd", "fp32": "ps", "fp16": "ph"}[dtype], X86_REGISTERS[cpu_peak.simd_bits({"simd": flags})]
        fmas = [ops for op, ops in body if re.fullmatch(rf"vfmadd\d{{3}}{suffix}", op) and ops.count(f"%{register}") == 3]
    else:
        fmas = [ops for op, ops in body if op == "fmla" and ops.startswith("v") and f".{ARM_ARRANGEMENT[dtype]}" in ops]
    rest = [op for op, ops in body if not (op.startswith(("vfmadd", "fmla")) or LOOP_CONTROL.match(op))]
    assert len(fmas) == vectors and not rest, (len(fmas), vectors, rest)
    assert len(body) <= vectors + 4 and not any("rsp" in ops or "[sp" in ops for _, ops in body)  # no spills


DOT_CASES = [(name, dtype) for name, (_, flags) in CPUS.items() for dtype in cpu_dot.DTYPES
             if cpu_dot.vector_bits({"simd": flags}, dtype)]


@pytest.mark.parametrize("llvm_cpu,dtype", DOT_CASES)
def test_dot_chains_loop_holds_one_dot_instruction_per_vector(llvm_cpu, dtype, monkeypatch):
    # AVX-VNNI's 256-bit vpdpbusd is VEX-encoded ({vex}): Alder Lake has no AVX-512 to encode it in
    triple, flags = CPUS[llvm_cpu]
    vectors, body = chains_loop(monkeypatch, cpu_dot, lambda cpu: cpu_dot.dot_workload(cpu, dtype, 1, 1), llvm_cpu)
    bits = cpu_dot.vector_bits({"simd": flags}, dtype)
    name = cpu_dot.instruction(dtype, bits)
    if triple == X86:
        operands = [ops.removeprefix(f"{name}\t") for op, ops in body if op == name or op == "{vex}" and
                    ops.startswith(name) and "avx512_vnni" not in flags]
        steps = [ops for ops in operands if ops.count(f"%{X86_REGISTERS[bits]}") == 3]
    else:  # sdot v1.4s, v0.16b, v9.16b
        steps = [ops for op, ops in body if op == name and ops.count(".4s") == 1 and ops.count(".16b") == 2]
    rest = [op for op, ops in body if op not in (name, "{vex}") and not LOOP_CONTROL.match(op)]
    assert len(steps) == vectors and not rest, (len(steps), vectors, rest)


@pytest.mark.parametrize("llvm_cpu", ["haswell", "skylake-avx512", "znver4", "neoverse-n1", "neoverse-v2"])
def test_read_kernels_loop_holds_one_load_and_add_per_sum_at_each_width(llvm_cpu):
    # cpu_read's settings: every width the CPU's flags give, 1 to 8 sums in flight
    triple, flags = CPUS[llvm_cpu]
    for setting in cpu_read.settings({"simd": flags})[1:]:  # [0]: Numba's own kernel, compiled for this host only
        bits, accumulators = cpu_read.parse_setting(setting)
        body = loop_body(assembly(cpu_read.sum_ir("double", bits // 64, accumulators), llvm_cpu), 2)  # and the tail's
        if triple == X86:  # vaddpd with its load folded in
            adds = [ops for op, ops in body if op == "vaddpd" and "(" in ops and f"%{X86_REGISTERS[bits]}" in ops]
            loads = adds
        else:
            adds = [ops for op, ops in body if op == "fadd" and ".2d" in ops]
            loads = [ops for op, ops in body if op in ("ldr", "ldp", "ld1") and ops.startswith("q")]
        assert len(adds) == accumulators and 0 < len(loads) <= accumulators, (setting, body)


@pytest.mark.parametrize("llvm_cpu,native,widened,packed", [
    ("neoverse-v2", "+neon,+fullfp16", "+neon,-fullfp16", r"fmla\s+v\d+\.8h"),
    ("sapphirerapids", "+avx512f,+avx512fp16", "+avx512f,-avx512fp16", r"vfmadd\d+ph\s+[^\n]*%zmm")])
def test_fp16_chains_are_native_fma_only_where_the_cpu_has_fp16_arithmetic(llvm_cpu, native, widened, packed):
    # why unsupported_reason holds the fp16 peak back: without the feature (Arm's asimdhp, x86's
    # avx512_fp16) LLVM widens every step to fp32 and back, and the probe would time conversions
    lanes = 8 if CPUS[llvm_cpu][0] == ARM else 32
    asm = assembly(cpu_peak.chains_ir("fp16", 24, lanes), llvm_cpu, native)
    assert len(re.findall(packed, asm)) == 24 and not re.search(r"fcvt|vcvtph2ps", asm)
    asm = assembly(cpu_peak.chains_ir("fp16", 24, lanes), llvm_cpu, widened)
    assert not re.findall(packed, asm) and re.search(r"fcvt|vcvtph2ps", asm)


def test_the_cases_cover_every_kernel_shape_the_probes_pick():
    # AVX2, AVX-512 and Advanced SIMD chains of each dtype; both vpdpbusd encodings and vdpbf16ps
    assert {d for _, d in PEAK_CASES} == {"fp64", "fp32", "fp16"}
    assert {(CPUS[c][0], cpu_peak.simd_bits({"simd": CPUS[c][1]})) for c, _ in PEAK_CASES} == {
        (X86, 256), (X86, 512), (ARM, 128)}
    assert {(d, cpu_dot.vector_bits({"simd": CPUS[c][1]}, d)) for c, d in DOT_CASES} == {
        ("int8", 128), ("int8", 256), ("int8", 512), ("bf16", 512)}
