"""cupy-fused decode cases at odd sizes, shared by the GPU test (tests/test_gpu_code.py, on a real
GPU) and tests/test_cuda_on_cpu.py (decode.cu itself run on the CPU): S=1, S prime and S past one
chunk, every dtype and head dim, GQA groups 1/2/4/8, batch 1/3."""

from probes import gpu_common

FUSED_DECODE_CASES = (
    [(dtype, d, 4, 1031, 3) for dtype in gpu_common.DECODE_TYPES for d in gpu_common.DECODE_HEAD_DIMS]
    + [("fp16", 128, g, 257, 1) for g in gpu_common.DECODE_GROUPS]
    + [("fp32", 64, 1, 1, 1), ("int8", 128, 8, 1, 3), ("bf16", 256, 2, 4099, 1)]
)


def check_fused_decode(dtype, head_dim, group, seq_len, batch):
    from harness import run

    kv_heads = 2
    section = run.run_single_probe("decode", device="gpu0", options={
        "impl": "cupy-fused", "dtype": dtype, "seq_len": seq_len, "heads": kv_heads * group,
        "kv_heads": kv_heads, "head_dim": head_dim, "batch": batch})
    (rec,) = section["decode_attention"]
    assert rec["validated"] and rec["rel_error"] <= rec["tolerance"], (dtype, head_dim, group, seq_len, batch, rec.get("error"))
