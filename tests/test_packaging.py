"""The wheel holds everything the code reads: every module, the CUDA sources, the model presets and
the datasheet specs; installed without the source tree, the harness finds them (a wheel that left
out harness/counters or probes/cuda/ would break `--counters` and every GPU probe after install)."""

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import ROOT


def wheel_build_missing():
    """Why a wheel cannot be built offline here (no build isolation), or None."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed here: the wheel cannot be built offline"
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:
        return f"setuptools {setuptools.__version__} builds wheels only with the wheel package, not installed here"
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if wheel_build_missing():
        pytest.skip(wheel_build_missing())
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    # built from a copy: setuptools packs whatever a stale build/lib of the tree still holds
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source)
    for folder in ("harness", "probes", "profiles/models", "profiles/specs"):
        shutil.copytree(os.path.join(ROOT, folder), source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "--wheel-dir", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (path,) = glob.glob(str(out / "*.whl"))
    return path


def tree_files(folder, pattern):
    return {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, folder, "**", pattern), recursive=True)
            if "__pycache__" not in p}


def test_the_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = tree_files("harness", "*.py") | tree_files("probes", "*.py") | tree_files("probes/cuda", "*.cu")
    wanted |= {f"harness/presets/{os.path.basename(p)}" for p in tree_files("profiles/models", "*.yaml")}
    wanted |= {f"harness/datasheets/{os.path.basename(p)}" for p in tree_files("profiles/specs", "*.yaml")}
    assert len(wanted) > 50
    assert wanted - names == set()


def test_the_installed_wheel_runs_without_the_source_tree(wheel, tmp_path):
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    # -S: no .pth files, so the editable install's finder cannot lead back to the source tree
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(unpacked), sysconfig.get_paths()["purelib"]]))
    check = ("import harness, harness.counters.perf, harness.counters.ncu, probes.gpu_common as g\n"
             "from harness import model, specs\n"
             "assert harness.__file__.startswith(%r), harness.__file__\n"
             "assert model.preset_names() == ['llama-2-7b', 'llama-3-8b', 'mistral-7b'], model.PRESET_DIR\n"
             "assert len(specs.load_specs()) >= 10, specs.SPEC_DIR\n"
             "assert sorted(os.listdir(g.CUDA_DIR)) == ['decode.cu', 'fma.cu', 'stream.cu']\n" % str(unpacked))
    proc = subprocess.run([sys.executable, "-S", "-c", "import os\n" + check], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-S", "-m", "harness", "model", "llama-3-8b", "--bandwidth", "1e11",
                           "--flops", "1e12"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and "llama-3-8b fp16" in proc.stdout, proc.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed here")
def test_make_uses_an_interpreter_that_holds_every_dependency_as_it_is(tmp_path):
    """A GPU box's image holds torch, CuPy and the rest and often has no internet for a venv: without
    PY= or a venv, `make profile` runs its python3 as it is; anywhere else it creates the venv."""
    for name, status in (("ready", 0), ("bare", 1)):  # stand-ins: `python -c 'import ...'` succeeds or fails
        (tmp_path / name).write_text(f"#!/bin/sh\nexit {status}\n")
        (tmp_path / name).chmod(0o755)

    def dry_run(python):
        proc = subprocess.run(["make", "-n", "-C", ROOT, "profile", f"PYTHON={tmp_path / python}",
                               f"VENV={tmp_path / 'venv'}"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    ready = dry_run("ready")
    assert f"PYTHONPATH={ROOT} {tmp_path / 'ready'} -m harness profile" in ready and "-m venv" not in ready
    assert "holds every dependency (GPU ones too): used as it is" in ready
    bare = dry_run("bare")
    assert f"{tmp_path / 'bare'} -m venv" in bare and f"{tmp_path / 'venv'}/bin/python -m harness profile" in bare
