"""probes/cuda/*.cu on the CPU: a stand-in for cupy.RawModule that compiles the CUDA source with
g++ against tests/cuda_cpu/cuda_cpu.h (CUDA's built-ins emulated: every thread a fiber, barriers
and warp shuffles released only when the whole block or warp reaches them) and launches its
kernels through ctypes, passing arguments as cudaLaunchKernel does (sizes checked).

Device arrays (`device_empty`, `device_copy`) start as 0xff bytes (NaN as floats) between 0xff
guard zones; a launch that writes past an argument array is an error, and so is an `__ldg` read
outside every array argument. This shows that the kernels
compute the right thing at the sizes tested; it shows nothing about their speed.
"""

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import weakref

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM_DIR = os.path.join(HERE, "cuda_cpu")
BUILD_DIR = os.path.join(os.path.dirname(HERE), "build", "cuda_cpu")
CXX = shutil.which("g++")
SHIM = ["-std=c++17", "-I", SHIM_DIR, "-include", os.path.join(SHIM_DIR, "cuda_cpu.h")]
FLAGS = [*SHIM, "-O1", "-U_FORTIFY_SOURCE", "-shared", "-fPIC", "-Wno-unknown-pragmas"]
GUARD = 256  # bytes of 0xff either side of a device array
ALIGN = 256  # as cudaMalloc aligns

_arrays = {}  # data pointer -> (weak reference to its buffer, offset, nbytes): a freed array's buffer goes


def unavailable_reason():
    return None if CXX else "g++ is not installed: the CUDA sources cannot be run on the CPU"


def device_empty(shape, dtype=np.float64):
    """A device array: 0xff bytes (NaN as floats: what a kernel has not written) inside guard zones."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.full(nbytes + 2 * GUARD + ALIGN, 0xFF, np.uint8)
    off = GUARD + (-(buf.ctypes.data + GUARD)) % ALIGN
    arr = buf[off:off + nbytes].view(dtype).reshape(shape)
    _arrays[arr.ctypes.data] = (weakref.ref(buf), off, nbytes)  # the array keeps buf alive (its base)
    return arr


def device_copy(a):
    a = np.asarray(a)
    out = device_empty(a.shape, a.dtype)
    out[...] = a
    return out


def guard_damage(arr):
    """None, or how the guard zones of a device array were written."""
    ref, off, nbytes = _arrays.get(arr.ctypes.data, (lambda: None, 0, 0))
    buf = ref()
    if buf is None:  # not a device array (or one since freed)
        return None
    before, after = buf[off - GUARD:off], buf[off + nbytes:off + nbytes + GUARD]
    if (before != 0xFF).any():
        return f"written before its start (offset {int(np.flatnonzero(before != 0xFF)[0]) - GUARD} bytes)"
    if (after != 0xFF).any():
        return f"written past its end (byte {nbytes + int(np.flatnonzero(after != 0xFF)[0])} of {nbytes})"
    return None


def translation_unit(code, names, defines=()):
    """The source made host C++ (dynamic shared memory from the emulator) plus a table of its
    kernels: every extern "C" kernel and the named template instantiations."""
    code = re.sub(r"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;",
                  r"\1* \2 = reinterpret_cast<\1*>(cuda_cpu::shared_mem.data());", code)
    expanded = subprocess.run([CXX, "-E", "-x", "c++", *SHIM, *defines, "-"], input=code, capture_output=True,
                              text=True, check=True).stdout
    kernels = re.findall(r'extern\s+"C"\s+void\s+(\w+)\s*\(', expanded) + list(names)
    rows = ",\n".join(f'    {{"{k}", [](void** a) {{ cuda_cpu::invoke(&{k}, a); }}, cuda_cpu::arity(&{k}), '
                      f"cuda_cpu::argument_sizes(&{k})}}" for k in kernels)
    return code + f"""
static const cuda_cpu::Kernel cuda_cpu_kernels[] = {{
{rows}
}};
extern "C" int cuda_cpu_find(const char* name) {{
    for (int i = 0; i < (int)(sizeof(cuda_cpu_kernels) / sizeof(cuda_cpu_kernels[0])); i++)
        if (!std::strcmp(cuda_cpu_kernels[i].name, name)) return i;
    return -1;
}}
extern "C" const char* cuda_cpu_launch(int k, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                       unsigned bz, unsigned long long shared, void** args, const long long* sizes,
                                       int nargs, const unsigned long long* bounds, int narrays) {{
    return cuda_cpu::launch(cuda_cpu_kernels[k], {{gx, gy, gz}}, {{bx, by, bz}}, shared, args, sizes, nargs, bounds,
                            narrays);
}}
"""


def build(code, names, defines=()):
    """The compiled library of one source and its instantiations, built with the -D options in
    `defines` (cached under build/cuda_cpu)."""
    tu = translation_unit(code, names, defines)
    with open(os.path.join(SHIM_DIR, "cuda_cpu.h"), encoding="utf-8") as f:
        digest = hashlib.sha256((tu + f.read() + " ".join([*FLAGS, *defines])).encode()).hexdigest()[:16]
    lib = os.path.join(BUILD_DIR, f"{digest}.so")
    if not os.path.exists(lib):
        os.makedirs(BUILD_DIR, exist_ok=True)
        src = os.path.join(BUILD_DIR, f"{digest}.cpp")
        with open(src, "w", encoding="utf-8") as f:
            f.write(tu)
        tmp = f"{lib}.{os.getpid()}"
        subprocess.run([CXX, *FLAGS, *defines, "-o", tmp, src], check=True, capture_output=True, text=True)
        os.replace(tmp, lib)
    dll = ctypes.CDLL(lib)
    dll.cuda_cpu_find.restype = ctypes.c_int
    dll.cuda_cpu_find.argtypes = [ctypes.c_char_p]
    dll.cuda_cpu_launch.restype = ctypes.c_char_p
    dll.cuda_cpu_launch.argtypes = [ctypes.c_int] + [ctypes.c_uint] * 6 + [
        ctypes.c_ulonglong, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_longlong), ctypes.c_int,
        ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_int]
    return dll


SCALARS = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
           np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


def marshal(arg):
    """(ctypes value, its size) as CUDA passes a kernel argument: arrays by device pointer."""
    if isinstance(arg, np.ndarray):
        return ctypes.c_void_p(arg.ctypes.data), 8
    if isinstance(arg, np.generic) and arg.dtype in SCALARS:
        return SCALARS[arg.dtype](arg.item()), arg.dtype.itemsize
    raise TypeError(f"kernel argument {arg!r}: pass a device array or a NumPy scalar, as CuPy needs")


def dims(x):
    x = tuple(x) + (1, 1)
    return x[:3]


class EmulatedCudaError(RuntimeError):
    """What the emulator found wrong with a launch (CuPy raises CUDARuntimeError, a RuntimeError)."""


class Kernel:
    def __init__(self, dll, index, name):
        self.dll, self.index, self.name = dll, index, name

    def __call__(self, grid, block, args, shared_mem=0):
        values = [marshal(a) for a in args]
        ptrs = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v, _ in values])
        sizes = (ctypes.c_longlong * len(values))(*[s for _, s in values])
        spans = [(a.ctypes.data, a.ctypes.data + a.nbytes) for a in args if isinstance(a, np.ndarray)]
        bounds = (ctypes.c_ulonglong * (2 * len(spans)))(*[x for span in spans for x in span])
        err = self.dll.cuda_cpu_launch(self.index, *dims(grid), *dims(block), shared_mem, ptrs, sizes, len(values),
                                       bounds, len(spans))
        if err:
            raise EmulatedCudaError(f"{self.name}: {err.decode()}")
        for i, a in enumerate(args):
            damage = isinstance(a, np.ndarray) and guard_damage(a)
            if damage:
                raise EmulatedCudaError(f"{self.name}: argument {i} {damage}")


class RawModule:
    """cupy.RawModule(code=..., options=..., name_expressions=[...]) on the CPU (of the options,
    the -D definitions count)."""

    def __init__(self, code=None, options=(), name_expressions=None):
        self.names = list(name_expressions or ())
        self.dll = build(code, self.names, [o for o in options if o.startswith("-D")])

    def get_function(self, name):
        index = self.dll.cuda_cpu_find(name.encode())
        if index < 0:
            raise KeyError(f"{name} is not a kernel of this module (templates must be named in name_expressions)")
        return Kernel(self.dll, index, name)
