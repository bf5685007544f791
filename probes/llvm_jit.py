"""LLVM IR compiled for this host's CPU and features with llvmlite (Numba's own code generator),
for the kernels Numba cannot express: FMA chains whose accumulator is the addend (cpu_peak), bf16
and int8 dot products (cpu_dot), a chosen vector width (cpu_read); and the chains' exact check."""

import numpy as np

COUNT_STEPS = 3  # the steps of the check's fresh run


def compile_ir(ir, name, signature):
    """(the IR's function `name` as a ctypes function of `signature`, the module's assembly). The
    execution engine that owns the code is kept alive with the function."""
    import numba  # noqa: F401  (initialises LLVM's native target the way Numba's own kernels use it)
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    module = llvm.parse_assembly(ir)
    module.verify()
    machine = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3)
    assembly = machine.emit_assembly(module)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    function = signature(engine.get_function_address(name))
    function.engine = engine  # the code lives as long as the engine
    return function, assembly


def chains_ir(vec, vectors, preamble, step, declare, align):
    """LLVM IR of `void chains(ptr acc, ptr xy, i64 iters)`: the `preamble` lines (which read xy),
    then `vectors` accumulators of type `vec` loaded from acc, each stepped `iters` times in registers
    by the call `step` names (a format string of the accumulator, '{a}'), and stored back; `declare`
    declares the called function, `align` is the accumulators' alignment in bytes."""
    lines = ["define void @chains(ptr %acc, ptr %xy, i64 %iters) {", "entry:", *preamble]
    for j in range(vectors):
        lines += [f"  %p{j} = getelementptr {vec}, ptr %acc, i64 {j}", f"  %a{j} = load {vec}, ptr %p{j}, align {align}"]
    lines += ["  %none = icmp sle i64 %iters, 0", "  br i1 %none, label %done, label %loop", "loop:",
              "  %i = phi i64 [0, %entry], [%inext, %loop]"]
    lines += [f"  %v{j} = phi {vec} [%a{j}, %entry], [%n{j}, %loop]" for j in range(vectors)]
    lines += [f"  %n{j} = " + step.format(a=f"%v{j}") for j in range(vectors)]
    lines += ["  %inext = add i64 %i, 1", "  %more = icmp slt i64 %inext, %iters",
              "  br i1 %more, label %loop, label %exit", "exit:"]
    lines += [f"  store {vec} %n{j}, ptr %p{j}, align {align}" for j in range(vectors)]
    lines += ["  br label %done", "done:", "  ret void", "}", declare]
    return "\n".join(lines)


def parallel_rows(chains):
    """A Numba kernel(rows, xy, iters) that calls the compiled `chains(row, xy, iters)` (ctypes, as
    compile_ir returns it) on each row of the 2-D array `rows` in its own thread."""
    from numba import njit, prange

    @njit(parallel=True)
    def kernel(rows, xy, iters):
        for t in prange(rows.shape[0]):
            chains(rows[t].ctypes.data, xy.ctypes.data, iters)

    return kernel


def chain_iterations(ctx):
    """Steps one call of the FMA or dot-product chains takes: long enough to time, short enough to
    calibrate (the tests' tiny mode: 100)."""
    return 100 if ctx.tiny else 20_000


def stepped(a0, step, ceiling, steps):
    """Accumulators `steps` steps of `step` from a0, in float64: exact where a0 lies on multiples of
    `step` below `ceiling`, the power of two whose next step is a tie that rounding to nearest even
    keeps there (the chains' lanes stop at it)."""
    return np.minimum(np.asarray(a0, np.float64) + step * steps, ceiling)


def first_mismatch(got, want, name, steps, what=""):
    """None where the accumulators `got` equal `want` exactly, else the first that differs, as
    '<name> accumulator (thread, lane) is ..., expected ... after <steps> steps<what>'."""
    bad = got != want
    if not bad.any():
        return None
    i = tuple(int(k) for k in np.unravel_index(int(np.argmax(bad)), bad.shape))
    return f"{name} accumulator {i} is {got[i].item()!r}, expected {want[i].item()!r} after {steps} steps{what}"


def checked_chains(acc, a0, steps, fresh, step_fresh, expected, name):
    """The chains' check: the timed accumulators `acc`, `steps` steps from a0, exactly as
    `expected(a0, steps)` gives them; then, since lanes held at a ceiling hide a step more or less,
    accumulators from `fresh()` stepped COUNT_STEPS times by `step_fresh(values, steps)`. None where
    both hold, else the first mismatch (first_mismatch)."""
    error = first_mismatch(acc, expected(a0, steps), name, steps)
    if error:
        return error
    start = fresh()
    got = start.copy()
    step_fresh(got, COUNT_STEPS)
    return first_mismatch(got, expected(start, COUNT_STEPS), name, COUNT_STEPS,
                          " of a fresh run (a step skipped or repeated)")
