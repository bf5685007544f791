"""The CUDA sources themselves, run on the CPU (tests/cuda_emulator.py): every GPU probe's kernels
through the probes' own launch code and output checks, the decode kernel at odd sizes, and the
emulator shown to catch what it is for (a missing barrier, a wrong halving step, a divergent
shuffle, a shared-memory or global overrun, a read past an array, a misaligned 16-byte load, an
argument of the wrong size). Correctness only: nothing here is timed."""

import sys

import numpy as np
import pytest

import cuda_emulator
import fakes
import gpu_decode_cases
from harness import run
from harness.profile import measurement_records
from probes import gpu_common

pytestmark = pytest.mark.skipif(cuda_emulator.unavailable_reason() is not None,
                                reason=str(cuda_emulator.unavailable_reason()))


@pytest.fixture
def emulated_gpu(monkeypatch):
    fakes.install_fake_gpu(monkeypatch, emulate=True)
    monkeypatch.setitem(sys.modules, "torch", None)


@pytest.mark.parametrize("case", gpu_decode_cases.FUSED_DECODE_CASES)
def test_fused_decode_cases_run_the_cuda_source(emulated_gpu, case):
    gpu_decode_cases.check_fused_decode(*case)  # the GPU test's cases and checks


@pytest.mark.parametrize("probe", ["stream", "hierarchy", "peak"])
def test_stream_hierarchy_and_fma_kernels_run_the_cuda_source(emulated_gpu, probe):
    records = list(measurement_records(run.run_single_probe(probe, device="gpu0")))
    assert records and all(r["validated"] for r in records), [r.get("error") for r in records]
    if probe == "stream":  # the triad once scaled lane y twice and lane x never (a macro's parameter)
        assert len(records) == 10


@pytest.mark.parametrize("through", ["L2", "L1"])
def test_the_hierarchy_reads_sum_every_vector_whatever_each_thread_gets(emulated_gpu, through):
    # grid of 8 blocks (L1) or 32 (L2) x 256 threads on the fake's 4 SMs: fewer vectors than threads,
    # whole rounds of the L2 read's four loads in flight, and rounds with a tail of one to three
    import cupy as cp

    from probes import gpu_stream

    buf = cp.random.default_rng(5).random(4 * 41000, dtype=cp.float32) + cp.float32(0.5)
    for n in (2, 8192 * 4, 8192 * 4 + 2, 8192 * 5 + 6):
        w = gpu_stream.read_workload({"sm_count": 4}, n, buf, bytes_per_launch=3 << 20, through=through)
        w.run(1)
        assert w.check() is None, (n, w.check())


def test_decode_variants_run_the_cuda_source_with_each_build_option(emulated_gpu, monkeypatch, tmp_path):
    # benchmarks/decode_variants.py is for a lent GPU: here its variants (UNROLL 2 and 8, two
    # splits) are built from decode.cu, checked against the float64 reference and tabled
    import json
    import os

    from harness.model import DecodeShape

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import decode_variants

    monkeypatch.setattr(decode_variants, "DecodeShape",
                        lambda **k: DecodeShape(**{**k, "heads": 8, "kv_heads": 2, "batch": 1}))
    out = tmp_path / "variants.json"
    monkeypatch.setattr(sys, "argv", ["decode_variants.py", "--unroll", "2,8", "--blocks-per-sm", "1,32", "--rounds", "1",
                                      "--repeats", "1", "--seq-len", "1031", "--json", str(out)])
    decode_variants.main()
    table = json.loads(out.read_text())["variants"]
    assert [(v["unroll"], v["blocks_per_sm_aim"]) for v in table] == [(2, 1), (2, 32), (8, 1), (8, 32)]
    assert all(v["fraction_of_read"] > 0 for v in table)
    assert table[0]["chunks"] < table[1]["chunks"]  # one block per SM aimed at: longer chunks


def mutated(monkeypatch, name, old, new):
    """probes/cuda/<name>.cu with `old` replaced by `new`, for this test."""
    source = gpu_common.cuda_source
    assert old in source(name)
    monkeypatch.setattr(gpu_common, "cuda_source", lambda n: source(n).replace(old, new) if n == name else source(n))


CASE = ("fp16", 128, 4, 700, 1)


DECODE_MUTATIONS = {  # what a broken decode.cu looks like to the emulator: (old, new, error, message)
    # no barrier between the last K-pass score and shared memory's reuse for the warps' sums
    "missing barrier": ("    __syncthreads();  // every warp is done with the scores", "    //",
                        AssertionError, "relative error"),
    # both partners send the same half of their sums: the K pass's recursive halving loses the other
    "wrong halving step": ("const float send = upper ? x[i] : x[i + C / 2];", "const float send = x[i + C / 2];",
                           AssertionError, "relative error"),
    # a shuffle one lane of the warp takes alone
    "divergent shuffle": ("if (part % RUN == 0) {",
                          "if (part % RUN == 0) {\n if (lane == 0) s[0] += __shfl_xor_sync(FULL_MASK, s[0], 1);",
                          cuda_emulator.EmulatedCudaError, "deadlock: .* wait at a warp shuffle"),
    # every warp given its own G x D of sums in shared memory sized for half of them
    "shared overrun": ("smem + (warp % HALF) * G * D;", "smem + warp * G * D;",
                       cuda_emulator.EmulatedCudaError, "shared memory past its dynamic size"),
    # q read from one float past its start: every float4 of it straddles two (the GPU faults)
    "misaligned load": ("reinterpret_cast<const float4*>(q)", "reinterpret_cast<const float4*>(q + 1)",
                        cuda_emulator.EmulatedCudaError, "misaligned 16-byte load"),
    # rows past a chunk loaded anyway: at the cache's last chunk they lie past the array's end
    "read past the cache": ("if (u * STEP < left) raw[u][i] = __ldg(", "raw[u][i] = __ldg(",
                            cuda_emulator.EmulatedCudaError, "16-byte load outside every array argument"),
}


@pytest.mark.parametrize("mutation", list(DECODE_MUTATIONS))
def test_the_emulator_catches_a_broken_decode_kernel(emulated_gpu, monkeypatch, mutation):
    old, new, error, message = DECODE_MUTATIONS[mutation]
    mutated(monkeypatch, "decode", old, new)
    with pytest.raises(error, match=message):
        gpu_decode_cases.check_fused_decode(*CASE)


def test_global_overruns_and_wrong_argument_sizes_are_reported():
    mod = cuda_emulator.RawModule(code=gpu_common.cuda_source("stream"))
    copy = mod.get_function("copy_fp32")
    a = cuda_emulator.device_copy(np.arange(2048, dtype=np.float32))
    c = cuda_emulator.device_empty(1024, np.float32)
    assert np.isnan(c).all()  # fresh device memory reads as NaN until written
    copy((2,), (256,), (a, c, np.int64(256)))
    assert (c == a[:1024]).all()
    with pytest.raises(cuda_emulator.EmulatedCudaError, match="argument 1 written past its end"):
        copy((2,), (256,), (a, c, np.int64(260)))  # 64 bytes over: inside the guard zone
    with pytest.raises(cuda_emulator.EmulatedCudaError, match="argument 2 is 4 bytes, the kernel takes 8"):
        copy((2,), (256,), (a, c, np.int32(256)))
    with pytest.raises(cuda_emulator.EmulatedCudaError, match="1025 threads"):
        copy((1,), (1025,), (a, c, np.int64(256)))
    with pytest.raises(KeyError, match="name_expressions"):
        cuda_emulator.RawModule(code=gpu_common.cuda_source("decode")).get_function("decode_partial<float, 64, 1>")
