"""NVRTC through ctypes, for tests: compile a CUDA source the way CuPy's RawModule does (NVRTC,
not nvcc: no host headers, so no <math.h> macros), with no GPU and no CuPy.

NVRTC and the CUDA headers come from the `nvidia-cuda-nvrtc` and `nvidia-cuda-runtime` wheels
(the dev extra), the same packages CuPy uses on a GPU machine.
"""

import ctypes
import glob
import importlib.util
import os

_LIB = None


def _nvidia_dirs():
    spec = importlib.util.find_spec("nvidia")
    return list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []


def library_path():
    """The newest libnvrtc.so.* in the nvidia wheels, or None."""
    found = sorted(p for d in _nvidia_dirs() for p in glob.glob(os.path.join(d, "*", "lib", "libnvrtc.so.*"))
                   if "builtins" not in p)
    return found[-1] if found else None


def include_dir():
    """The wheel directory holding the CUDA headers (cuda_fp16.h), or None; the newest if several."""
    found = sorted(os.path.dirname(p) for d in _nvidia_dirs() for p in glob.glob(os.path.join(d, "*", "include", "cuda_fp16.h")))
    return found[-1] if found else None


def unavailable_reason():
    if library_path() is None:
        return "NVRTC is not installed (pip install nvidia-cuda-nvrtc nvidia-cuda-runtime, the dev extra)"
    if include_dir() is None:
        return "the CUDA headers are not installed beside NVRTC (pip install nvidia-cuda-runtime)"
    return None


def _lib():
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(library_path())
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        _LIB = lib
    return _LIB


def _check(code, what):
    if code != 0:
        raise RuntimeError(f"{what}: {_lib().nvrtcGetErrorString(code).decode()}")


def _strings(items):
    return (ctypes.c_char_p * len(items))(*[s.encode() for s in items])


def compile_ptx(source, arch, options=(), name_expressions=()):
    """(ptx, {name expression: lowered name}); raises RuntimeError with NVRTC's log on failure."""
    lib = _lib()
    prog = ctypes.c_void_p()
    _check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kern.cu", 0, None, None), "create")
    try:
        for name in name_expressions:
            _check(lib.nvrtcAddNameExpression(prog, name.encode()), f"name expression {name}")
        opts = [f"--gpu-architecture={arch}", f"-I{include_dir()}", *options]
        code = lib.nvrtcCompileProgram(prog, len(opts), _strings(opts))
        size = ctypes.c_size_t()
        _check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "log size")
        log = ctypes.create_string_buffer(size.value)
        _check(lib.nvrtcGetProgramLog(prog, log), "log")
        if code != 0:
            raise RuntimeError(f"NVRTC could not compile for {arch}:\n{log.value.decode(errors='replace')}")
        lowered = {}
        for name in name_expressions:
            out = ctypes.c_char_p()
            _check(lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)), f"lowered name {name}")
            lowered[name] = out.value.decode()
        _check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "PTX size")
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib.nvrtcGetPTX(prog, ptx), "PTX")
        return ptx.value.decode(), lowered
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
