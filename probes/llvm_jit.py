"""LLVM IR compiled for this host's CPU and features with llvmlite (Numba's own code generator),
for the kernels Numba cannot express: fp16 vectors (cpu_half), a chosen vector width (cpu_read)."""


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
