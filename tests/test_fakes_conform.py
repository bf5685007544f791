"""The stand-ins say only what the real libraries say. The GPU code paths run here against
tests/fakes.py; a name the fake has and the real library lacks (or spells otherwise) would pass
every test here and fail on the first GPU. Checked against the installed pynvml, CuPy (the dev
extra installs CuPy for CUDA 13: it imports without a GPU) and torch."""

import inspect

import pytest

import fakes
from harness import gpu_run


def public(obj):
    return {n for n in vars(obj) if not n.startswith("_")}


def test_fake_nvml_calls_and_constants_are_pynvml_s():
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    fake = fakes.FakeNVML
    calls = {n for n in public(fake) if n.startswith("nvml")}
    assert calls and not calls - set(dir(pynvml)), calls - set(dir(pynvml))
    for name in ("NVML_CLOCK_SM", "NVML_CLOCK_MEM", "NVML_TEMPERATURE_GPU"):
        assert getattr(fake, name) == getattr(pynvml, name), name
    assert issubclass(pynvml.NVMLError, Exception)
    for name in calls:  # called with the arguments pynvml requires, no more
        params = inspect.signature(getattr(pynvml, name)).parameters.values()
        required = [p.name for p in params if p.default is inspect.Parameter.empty]
        mine = list(inspect.signature(getattr(fake, name)).parameters)[1:]  # less self
        assert len(required) == len(mine), (name, required, mine)


@pytest.fixture(scope="module")
def cupy():
    return pytest.importorskip("cupy", reason="CuPy is not installed (the dev extra installs it)")


def test_fake_cupy_names_are_cupy_s(cupy):
    fake = fakes.fake_cupy()
    for module, real in ((fake, cupy), (fake.cuda, cupy.cuda)):
        missing = {n for n in vars(module) if not n.startswith("_") and not hasattr(real, n)}
        assert not missing, f"{real.__name__} has no {missing}"
    for group in ("runtime", "nvtx", "random"):
        holder = getattr(fake.cuda, group, None) or getattr(fake, group)
        real = getattr(cupy.cuda, group, None) or getattr(cupy, group)
        assert not set(vars(holder)) - set(dir(real)), (group, set(vars(holder)) - set(dir(real)))
    assert hasattr(cupy.cuda.nvtx, "available")  # probes.gpu_common.nvtx reads it


def test_fake_device_kernel_and_module_behave_as_cupy_s(cupy):
    runtime_attrs = {n[len("cudaDevAttr"):] for n in dir(cupy.cuda.runtime) if n.startswith("cudaDevAttr")}
    # Device.attributes is keyed by cudaDevAttr* names less the prefix (CuPy's docstring says so)
    assert "cudaDevAttr" in cupy.cuda.Device.attributes.__doc__
    assert not set(fakes._Device.attributes) - runtime_attrs
    assert not set(gpu_run.SM_LIMIT_ATTRIBUTES.values()) - runtime_attrs
    assert isinstance(inspect.getattr_static(cupy.cuda.Device, "pci_bus_id"), type(inspect.getattr_static(
        cupy.cuda.Device, "attributes")))  # a property-like attribute, as the fake's
    for attr in ("num_regs", "local_size_bytes", "shared_size_bytes"):
        assert hasattr(cupy.RawKernel, attr), attr
    assert "shared_mem" in cupy.RawKernel.__call__.__doc__
    signature = cupy.RawModule.__doc__.splitlines()[0]  # Cython keeps the signature as the first doc line
    for keyword in ("code", "options", "name_expressions"):
        assert keyword in signature, signature
    assert "tuple options" in signature  # probes.gpu_common.load_module passes a tuple
    for method in ("record", "synchronize"):
        assert hasattr(cupy.cuda.Event, method)


def test_cpu_event_stands_in_for_torch_cuda_event():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    for method in public(fakes.CpuEvent):
        assert hasattr(torch.cuda.Event, method), method
    assert "enable_timing" in inspect.signature(fakes.CpuEvent).parameters
    assert "enable_timing" in inspect.signature(torch.cuda.Event).parameters
