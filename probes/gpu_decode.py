"""Decode attention on an NVIDIA GPU: our split-K CuPy kernel (probes/cuda/decode.cu) and torch
(each SDPA backend the install offers, named; and matmul-softmax-matmul), on the same fresh
random caches as the CPU probe and checked against the same float64 reference. The L2 is kept
cold by rotating through enough copies of the cache to exceed twice its size."""

import math

import numpy as np

from harness import model
from harness.errors import HarnessError, first_line
from harness.gpus import memory_name
from harness.workload import Workload
from probes.cpu_decode import DecodeCache, relative_error, tolerance
from probes.gpu_common import (DECODE_GROUPS, DECODE_HEAD_DIMS, DECODE_THREADS, cuda_path, decode_chunking,
                                decode_kernel_name, decode_shared_bytes, load_module, nvtx, resident_blocks)

IMPLS = ("cupy-fused", "torch-sdpa", "torch-naive")
SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
MAX_COPIES = 64
KERNEL_FILES = (cuda_path("decode"),)


def dtype_refusal(impl, dtype):
    """Why `impl` cannot take a `dtype` cache (after its name), or None where it can: torch's impls
    take no int8 cache."""
    if impl != "cupy-fused" and dtype == "int8":
        return "does not support an int8 cache: valid dtypes are fp32, bf16, fp16"
    return None


def check_shape(impl, shape):
    if impl == "cupy-fused":
        if shape.head_dim not in DECODE_HEAD_DIMS:
            raise HarnessError(f"cupy-fused needs head-dim {', '.join(map(str, DECODE_HEAD_DIMS))}, got {shape.head_dim}")
        if shape.group not in DECODE_GROUPS:
            raise HarnessError(f"cupy-fused needs heads / kv-heads in {', '.join(map(str, DECODE_GROUPS))}, "
                               f"got {shape.group}")
    elif why := dtype_refusal(impl, shape.dtype):
        raise HarnessError(f"{impl} {why}")


def copies_for_cold_l2(cache_bytes, l2_bytes):
    """How many copies of the cache to rotate through so each call finds it out of the L2."""
    return max(1, min(MAX_COPIES, math.ceil(2 * l2_bytes / max(1, cache_bytes))))


def upload(cache, copies):
    """Device copies of (k, v, k_scale, v_scale) and the query."""
    import cupy as cp

    sets = [tuple(cp.asarray(x) for x in (cache.k, cache.v, cache.k_scale, cache.v_scale)) for _ in range(copies)]
    return cp.asarray(cache.q), sets


def fused_runner(gpu, cache, q, sets, unroll=None, blocks_per_sm=None):
    """The split-K kernel and its merge over `sets` in turn; `unroll` (decode.cu's UNROLL) and
    `blocks_per_sm` (decode_chunking's target) tune it, as benchmarks/decode_variants.py does."""
    import cupy as cp

    s = cache.shape
    name = decode_kernel_name(s.dtype, s.head_dim, s.group)
    module = load_module("decode", templates=[name], defines={"UNROLL": unroll} if unroll else None)
    kernel, merge = module.get_function(name), module.get_function("decode_merge")
    chunks, chunk_len = decode_chunking(s.batch, s.kv_heads, s.seq_len, s.group, gpu["sm_count"],
                                        **({"blocks_per_sm": blocks_per_sm} if blocks_per_sm else {}))
    shared = decode_shared_bytes(s.group, chunk_len, s.head_dim)
    bkv = s.batch * s.kv_heads
    po = cp.empty((chunks * bkv * s.group, s.head_dim), cp.float32)
    pm = cp.empty(chunks * bkv * s.group, cp.float32)
    pl = cp.empty_like(pm)
    out = cp.empty((s.batch * s.heads, s.head_dim), cp.float32)
    state = {"i": 0}
    ints = [np.int32(x) for x in (s.heads, s.kv_heads, s.seq_len, chunk_len)]

    def run(loops):
        for _ in range(loops):
            k, v, ks, vs = sets[state["i"] % len(sets)]
            state["i"] += 1
            kernel((chunks, bkv), (DECODE_THREADS,), (q, k, v, ks, vs, po, pm, pl, *ints), shared_mem=shared)
            merge((bkv, s.group), (128,), (po, pm, pl, out, np.int32(chunks), np.int32(bkv), np.int32(s.group),
                                           np.int32(s.heads), np.int32(s.kv_heads), np.int32(s.head_dim)))

    # poisoned once before the timed calls, not in them: a fill launch per call would add a few
    # microseconds to kernels that take ~10 us at short caches
    tuned = {k: v for k, v in (("unroll", unroll), ("chunk_blocks_per_sm", blocks_per_sm)) if v}
    return run, lambda: cp.asnumpy(out), lambda: out.fill(np.nan), {"chunks": chunks, "chunk_len": chunk_len, **tuned,
                                                                     **kernel_resources(kernel, shared, gpu)}


def kernel_resources(kernel, dynamic_shared_bytes, gpu):
    """The split-K kernel as the driver loaded it: registers, local memory (spills) per thread and
    the blocks one SM holds (the limit that sets them); {} where the kernel object has no attributes."""
    regs = getattr(kernel, "num_regs", None)
    if regs is None:
        return {}
    out = {"registers": int(regs), "local_bytes_per_thread": int(kernel.local_size_bytes)}
    limits = gpu.get("sm_limits") or {}
    if all(limits.get(k) for k in ("registers", "shared_bytes", "threads", "blocks")):
        shared = int(kernel.shared_size_bytes) + dynamic_shared_bytes
        out["blocks_per_sm"], out["blocks_per_sm_limit"] = resident_blocks(int(regs), shared, DECODE_THREADS, limits)
    return out


def torch_runner(impl, cache, q, sets, backend=None):
    import torch
    import torch.nn.functional as F

    s = cache.shape
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[s.dtype]

    def as_torch(a):
        t = torch.from_dlpack(a.view(np.int16) if s.dtype == "bf16" else (a.view(np.float16) if s.dtype == "fp16" else a))
        return (t.view(torch.bfloat16) if s.dtype == "bf16" else t).view(s.batch, s.kv_heads, s.seq_len, s.head_dim)

    tq = torch.from_dlpack(q).to(dt).view(s.batch, s.heads, 1, s.head_dim)
    kvs = [(as_torch(k), as_torch(v)) for k, v, _, _ in sets]
    state = {"i": 0}
    if impl == "torch-sdpa":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ctx = lambda: sdpa_kernel([getattr(SDPBackend, backend)])  # noqa: E731
        gqa = {"enable_gqa": True} if s.group > 1 else {}
        op = lambda k, v: F.scaled_dot_product_attention(tq, k, v, **gqa)  # noqa: E731
    else:
        import contextlib

        ctx = contextlib.nullcontext
        qg = tq.view(s.batch, s.kv_heads, s.group, s.head_dim)
        op = lambda k, v: torch.softmax((qg @ k.transpose(-1, -2)).float() / math.sqrt(s.head_dim), -1).to(v.dtype) @ v  # noqa: E731

    def run(loops):
        with torch.inference_mode(), ctx():
            for _ in range(loops):
                k, v = kvs[state["i"] % len(kvs)]
                state["i"] += 1
                state["out"] = op(k, v)

    return (run, lambda: state["out"].float().reshape(s.batch * s.heads, s.head_dim).cpu().numpy(),
            lambda: state.pop("out", None), {"backend": backend})


def decode_data(gpu, shape, seed):
    """(cache, device q, device copies of the cache) for one shape: fresh random data, enough
    copies to keep the L2 cold."""
    cache = DecodeCache(shape, seed)
    return (cache, *upload(cache, copies_for_cold_l2(model.cache_bytes(shape), gpu["l2_bytes"])))


def decode_workload(gpu, impl, shape, seed, backend=None, tuning=None, data=None):
    """One decode implementation at one shape on fresh random caches (or `data` from decode_data,
    shared by several workloads); `tuning` goes to fused_runner."""
    check_shape(impl, shape)
    cache, q, sets = data or decode_data(gpu, shape, seed)
    copies = len(sets)
    if impl == "cupy-fused":
        run, output, poison, extra = fused_runner(gpu, cache, q, sets, **(tuning or {}))
    else:
        run, output, poison, extra = torch_runner(impl, cache, q, sets, backend)
    run(1)  # an unsupported SDPA backend raises here, before timing
    info = {"impl": impl if not backend else f"{impl}[{backend.lower()}]", "batch": shape.batch, "heads": shape.heads,
            "kv_heads": shape.kv_heads, "head_dim": shape.head_dim, "seq_len": shape.seq_len, "seed": seed,
            "l2_copies": copies, "l2_cold": copies * model.cache_bytes(shape) >= 2 * gpu["l2_bytes"],
            **{k: v for k, v in extra.items() if v is not None}}

    def check():
        on_stored, on_original = cache.reference()
        ref = on_stored if shape.dtype == "int8" else on_original
        err = relative_error(output(), ref)
        info.update(rel_error=err, tolerance=tolerance(shape), storage_error=relative_error(on_stored, on_original))
        return None if err <= info["tolerance"] else f"{impl} {shape.dtype}: relative error {err:.3g}"

    return Workload(name=info["impl"], run=nvtx(info["impl"], run), check=check, poison=poison, threads=1, dtype=shape.dtype,
                    device="gpu",
                    bytes_per_call=model.decode_bytes(shape), flops_per_call=model.attention_flops(shape),
                    working_set_bytes=model.cache_bytes(shape), info=info)


def sweep(ctx):
    """(impl, shape, backend) points: seq_len from L2-resident to device-memory-sized, dtypes, GQA, batch 8."""
    h, hkv, d = (8, 2, 64) if ctx.tiny else (32, 8, 128)
    lens = [256, 1024] if ctx.tiny else [1024, 4096, 16384, 32768, 65536]
    shape = lambda dtype="fp16", s=lens[-2], kv=hkv, b=8: model.DecodeShape(  # noqa: E731
        seq_len=s, heads=h, kv_heads=kv, head_dim=d, dtype=dtype, batch=b)
    points = [("cupy-fused", shape(s=n), None) for n in lens]
    points += [("cupy-fused", shape(dt), None) for dt in ("fp32", "bf16", "int8")]
    points += [("cupy-fused", shape(kv=h), None)]
    points += [("torch-sdpa", shape(), b) for b in SDPA_BACKENDS] + [("torch-naive", shape(), None)]
    return points


def points_from_options(options):
    """(points, left out) of one shape from `harness probe decode --device gpuN --...` (impl 'all':
    every impl and backend, and those that do not take the dtype left out with the reason)."""
    opts = {"impl": "cupy-fused", "dtype": "fp16", "seq_len": 32768, "heads": 32, "kv_heads": 8, "head_dim": 128,
            "batch": 8, **{k: v for k, v in options.items() if v is not None}}
    shape = model.DecodeShape(seq_len=opts["seq_len"], heads=opts["heads"], kv_heads=opts["kv_heads"],
                              head_dim=opts["head_dim"], dtype=opts["dtype"], batch=opts["batch"])
    if opts["impl"] == "all":
        impls = list(IMPLS)
    elif opts["impl"] in IMPLS:
        impls = [opts["impl"]]
    else:
        raise HarnessError(f"unknown GPU decode impl {opts['impl']!r}: valid impls are {', '.join(IMPLS)} or all")
    points, left_out = [], []
    for impl in impls:
        if opts["impl"] == "all" and (why := dtype_refusal(impl, shape.dtype)):
            left_out.append({"impl": impl, "dtype": shape.dtype, "reason": why})
            continue
        check_shape(impl, shape)
        points += [(impl, shape, b) for b in SDPA_BACKENDS] if impl == "torch-sdpa" else [(impl, shape, None)]
    return points, left_out


def run_decode(ctx):
    """devices.gpuN.decode_attention; unsupported SDPA backends are recorded with the reason."""
    records = []
    points, skipped = points_from_options(ctx.options) if ctx.options else (sweep(ctx), [])
    try:
        import torch  # noqa: F401
    except ImportError as e:  # the cupy-fused points still run
        skipped += [{"impl": impl, "dtype": shape.dtype, "reason": f"torch is not installed ({e})"}
                    for impl, shape, _ in points if impl != "cupy-fused"]
        points = [p for p in points if p[0] == "cupy-fused"]
    for i, (impl, shape, backend) in enumerate(points):
        ctx.progress(f"gpu{ctx.gpu['index']} decode {impl} {backend or ''} {shape.dtype} B={shape.batch} "
                     f"H={shape.heads}/{shape.kv_heads} S={shape.seq_len}")
        try:
            w = decode_workload(ctx.gpu, impl, shape, seed=2000 + i, backend=backend)
        except RuntimeError as e:  # torch: this SDPA backend does not take this shape or dtype
            if backend is None:  # our kernel failing (CuPy's CUDARuntimeError) is an error, not "unsupported"
                raise
            skipped.append({"impl": f"{impl}[{backend.lower()}]", "dtype": shape.dtype, "reason": first_line(e)})
            continue
        rec = ctx.measure(w)
        rec.update(w.info)
        if not rec["l2_cold"]:
            rec["warnings"].append(f"the L2 ({ctx.gpu['l2_bytes'] >> 20} MiB) holds all {rec['l2_copies']} rotated copies "
                                   f"of this cache: it was timed warm, from L2, not from {memory_name(ctx.gpu)}")
        if rec.get("local_bytes_per_thread"):
            rec["warnings"].append(f"{impl} spills {rec['local_bytes_per_thread']} bytes per thread to local memory "
                                   "as compiled here: its loads compete with the cache's")
        rec["time_s"] = rec["median_time_s"]
        rec["model"] = model.record_figures(shape)
        records.append(rec)
    return {"decode_attention": records, "decode_unsupported": skipped}
