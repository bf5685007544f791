#!/usr/bin/env bash
# What only a GPU machine can show, in steps that each fit a short session on a lent H100/H200.
# Runs from the source tree with the machine's own python3 (no install); every output lands in OUT (packed).
#   tests    pytest -m gpu (every GPU probe run and validated at tiny sizes)
#   bench    benchmarks/gpu_balance.py: the GPU issue's side-by-side ratios, raw rounds as JSON
#   variants benchmarks/decode_variants.py: the cupy-fused kernel's build options and splits side by
#            side (fraction of the HBM read each), to set decode.cu's defaults from
#   ncu      the metric names checked against the machine's ncu; raw `ncu --csv --page raw` output
#            of the triad, the fp32 FMA and the cupy-fused decode,
#            as the counter parser's fixtures (tests/fixtures/ncu-*.csv once checked), and ncu's
#            sections for the decode kernel (speed of light, occupancy, issue, stalls): where its
#            time goes (docs/decode-kernel.md says what to look for)
#   profile  harness profile --device gpu, then its report (the CPU of a GPU machine is profiled
#            separately: `harness profile --device cpu`)
#   sanitize compute-sanitizer memcheck and racecheck over the fused decode's odd-size GPU tests
#            (not in `all`: slow under the sanitizer; for a session with time left)
# With a 15-minute lease, one step per call, in the order the issues need them: bench (the
# acceptance ratios), profile (the committed profile and report), ncu (the fixtures), then
# variants and tests as time allows.
# Everything a step writes lands in one archive, OUT/gpu-session-STEP.tar.gz, rewritten after each
# command, so a call killed at its time limit still brings back what finished (the lent machine
# returns at most 8 files): tar -xzf it here.
# Usage: bash benchmarks/gpu_session.sh OUT [tests|bench|variants|ncu|profile|sanitize|all]
set -u
OUT=${1:?usage: bash benchmarks/gpu_session.sh OUT [tests|bench|variants|ncu|profile|sanitize|all]}
STEP=${2:-all}
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ARCHIVE=$OUT/gpu-session-$STEP.tar.gz
WORK=$(mktemp -d)  # the step's files, packed into ARCHIVE
trap 'rm -rf "$WORK"' EXIT
nvidia-smi >"$WORK/nvidia-smi.txt" 2>&1

pack() {  # the step's files so far, as one archive in OUT (replaced whole: never half-written)
    tar -czf "$ARCHIVE.part" -C "$WORK" . && mv "$ARCHIVE.part" "$ARCHIVE"
}

run() {  # run NAME CMD...: output to NAME.log, exit status reported, later steps still run
    local name=$1
    shift
    echo "== $name: $*"
    "$@" >"$WORK/$name.log" 2>&1
    echo "== $name exit $?"
    tail -n 5 "$WORK/$name.log"
    pack
}

ncu_raw() {  # ncu_raw NAME PROBE RANGE ARGS...: the harness's own ncu command line, raw CSV kept
    local name=$1 probe=$2 range=$3
    shift 3
    local cmd
    cmd=$("$PY" -c 'import shlex, sys; from harness.counters import ncu
print(shlex.join(ncu.command(sys.argv[2], "gpu0", sys.argv[3], sys.argv[4:], python=sys.argv[1])))' \
        "$PY" "$probe" "$range" "$@") || return
    run "ncu-$name" env LC_ALL=C bash -c "$cmd"  # as the harness runs it: in the C locale
    cp "$WORK/ncu-$name.log" "$WORK/ncu-$name.csv"
}

DECODE_ARGS=(--quick --impl cupy-fused --dtype fp16 --seq-len 32768 --batch 8)  # the GPU issue's decode shape

ncu_sections() {  # the decode kernel's ncu sections, as text: two launches of the split-K kernel
    run ncu-decode-sections env LC_ALL=C ncu --clock-control none --target-processes all --nvtx \
        --nvtx-include "harness-cupy-fused/" --kernel-name regex:decode_partial --launch-count 2 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section SchedulerStats \
        --section WarpStateStats --section MemoryWorkloadAnalysis \
        "$PY" -m harness probe decode --device gpu0 "${DECODE_ARGS[@]}"
}

case $STEP in tests | all) run pytest-gpu "$PY" -m pytest -q -m gpu tests ;; esac
case $STEP in bench | all) run gpu-balance "$PY" benchmarks/gpu_balance.py --json "$WORK/gpu-balance.json" ;; esac
case $STEP in variants | all)
    run decode-variants "$PY" benchmarks/decode_variants.py --json "$WORK/decode-variants.json"
    ;;
esac
case $STEP in ncu | all)
    # the metric names against this machine's own ncu (the recorded list is ncu 2022.3's)
    run ncu-metric-names "$PY" -m pytest -q tests/test_counters.py -k "metric_we_ask_ncu_for"
    ncu_raw triad stream triad --quick --dtype fp32
    # a failure every ncu run meets (harness.counters.ncu.recurs: gVisor's profiler not loading,
    # counters refused, no driver): the device time goes to the other steps instead
    if "$PY" -c 'import sys; from harness.counters import ncu; sys.exit(not ncu.recurs(open(sys.argv[1]).read()))' \
        "$WORK/ncu-triad.log"; then
        echo "== ncu cannot count on this machine (ncu-triad.log says why): the other ncu runs are skipped"
    else
        ncu_raw fma-fp32 peak fma_fp32 --quick
        ncu_raw decode decode cupy-fused "${DECODE_ARGS[@]}"
        ncu_sections
    fi
    ;;
esac
case $STEP in profile | all)
    run profile "$PY" -m harness profile --device gpu --out "$WORK/profile.yaml"
    run report "$PY" -m harness report "$WORK/profile.yaml" --out "$WORK/reports"
    ;;
esac
case $STEP in sanitize)
    for tool in memcheck racecheck; do
        run "sanitize-$tool" compute-sanitizer --tool "$tool" --error-exitcode 9 \
            "$PY" -m pytest -q -m gpu tests/test_gpu_code.py -k fused_decode
    done
    ;;
esac
pack
