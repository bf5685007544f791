#!/usr/bin/env bash
# The CPU probes compiled for Arm (Neoverse V2's features) and run, tiny, on an emulated core:
# every kernel's output checked as on real hardware (benchmarks/arm_qemu.py says what it covers).
# Sets up, once, under build/arm64: qemu-user-static (apt-get), an arm64 Python 3.11 unpacked from
# Debian's packages (not installed: dpkg -x) and the aarch64 wheels of the numba, llvmlite, numpy
# and pyyaml versions this checkout's .venv has (pip download, unpacked). Needs root on Debian 12 and
# its package mirrors and PyPI; a few minutes under emulation (decode: most of them).
# Usage: bash benchmarks/arm_qemu.sh [peak dot stream hierarchy decode]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${ARM_BUILD:-$HERE/../build/arm64}
PY=${PY:-$HERE/../.venv/bin/python}
DEBS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libexpat1 zlib1g libffi8 libssl3
      libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1 libnsl2 libtirpc3
      libstdc++6 libgcc-s1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libdb5.3"

if ! command -v qemu-aarch64-static > /dev/null; then
    apt-get install -y -q qemu-user-static
fi
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
    "$HERE/arm_qemu.py" "$@"
