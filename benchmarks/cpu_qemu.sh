#!/usr/bin/env bash
# The CPU probes compiled for a CPU this machine is not and run, tiny, on an emulated one (qemu-user):
# every kernel's output checked as on real hardware (benchmarks/cpu_qemu.py says what each covers).
#   neoverse-v2  Arm, on qemu-aarch64 -cpu max. Sets up, once, under build/arm64: an arm64 Python
#                3.11 unpacked from Debian's packages (dpkg -x, not installed) and the aarch64 wheels
#                of the numba, llvmlite, numpy and pyyaml versions this checkout's .venv has (unpacked).
#                Decode takes most of its ~10 minutes.
#   haswell      AVX2 and FMA without AVX-512, on qemu-x86_64 -cpu Haswell-v4 with the .venv's Python.
# Installs qemu-user-static where it is missing. Needs root on Debian 12, its package mirrors and PyPI.
# Usage: bash benchmarks/cpu_qemu.sh neoverse-v2|haswell [peak dot stream hierarchy decode]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TARGET=${1:?usage: bash benchmarks/cpu_qemu.sh neoverse-v2|haswell [peak dot stream hierarchy decode]}
shift
BUILD=${ARM_BUILD:-$HERE/../build/arm64}
PY=${PY:-$HERE/../.venv/bin/python}
DEBS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libexpat1 zlib1g libffi8 libssl3
      libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1 libnsl2 libtirpc3
      libstdc++6 libgcc-s1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libdb5.3"

if [ ! -x "$PY" ]; then
    echo "no Python at $PY: run 'make setup' first, or name one with PY=/path/to/python3" >&2
    exit 2
fi
if ! command -v qemu-aarch64-static > /dev/null; then
    apt-get install -y -q qemu-user-static
fi
case $TARGET in
haswell)
    exec qemu-x86_64-static -cpu Haswell-v4 "$PY" "$HERE/cpu_qemu.py" haswell "$@" ;;
neoverse-v2) ;;
*)
    echo "unknown target $TARGET: valid are neoverse-v2, haswell" >&2
    exit 2 ;;
esac
if [ ! -x "$BUILD/root/usr/bin/python3.11" ]; then
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -q
    mkdir -p "$BUILD/debs" "$BUILD/root"
    (cd "$BUILD/debs" && apt-get download $(for p in $DEBS; do echo "$p:arm64"; done))
    for deb in "$BUILD"/debs/*.deb; do dpkg -x "$deb" "$BUILD/root"; done
fi
if [ ! -d "$BUILD/site/numba" ]; then
    pins=$("$PY" -m pip freeze | grep -iE '^(numba|llvmlite|numpy|pyyaml)==')
    "$PY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
        --python-version 3.11 --implementation cp -d "$BUILD/wheels" $pins
    mkdir -p "$BUILD/site"
    for wheel in "$BUILD"/wheels/*.whl; do "$PY" -m zipfile -e "$wheel" "$BUILD/site"; done
fi
PYTHONPATH=$BUILD/site exec qemu-aarch64-static -cpu max -L "$BUILD/root" "$BUILD/root/usr/bin/python3.11" \
    "$HERE/cpu_qemu.py" neoverse-v2 "$@"
