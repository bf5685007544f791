"""Measured numbers in other tools' hardware-config formats (no probe runs here).

llm-analysis (cli99/llm-analysis) reads a GPU config JSON with these keys: name,
mem_per_GPU_in_GB, hbm_bandwidth_in_GB_per_sec, intra_node_bandwidth_in_GB_per_sec,
intra_node_min_message_latency, peak_fp16_TFLOPS, peak_i8_TFLOPS, peak_i4_TFLOPS,
inter_node_bandwidth_in_GB_per_sec. Fields this harness does not measure are null, and each
substitution is listed in the notes printed beside the JSON.
"""

from harness.errors import HarnessError
from harness.validation import roofs

FORMATS = ("llm-analysis",)


def llm_analysis(doc):
    """(config dict, notes) for a CPU profile: measured DRAM read bandwidth and fp32 peak."""
    cpu = (doc.get("devices") or {}).get("cpu") or {}
    bw, peak = roofs(cpu)
    if not (bw and peak):
        raise HarnessError("the profile has no measured read bandwidth and fp32 peak to export")
    mem = (doc["machine"].get("cpu") or {}).get("memory_bytes")
    config = {
        "name": f"{doc['machine']['id']}-measured",
        "mem_per_GPU_in_GB": round(mem / 1e9, 1) if mem else None,
        "hbm_bandwidth_in_GB_per_sec": round(bw / 1e9, 2),
        "intra_node_bandwidth_in_GB_per_sec": None,
        "intra_node_min_message_latency": None,
        "peak_fp16_TFLOPS": round(peak / 1e12, 4),
        "peak_i8_TFLOPS": round(peak / 1e12, 4),
        "peak_i4_TFLOPS": round(peak / 1e12, 4),
        "inter_node_bandwidth_in_GB_per_sec": None,
    }
    notes = [
        f"hbm_bandwidth_in_GB_per_sec: measured DRAM read bandwidth (bandwidth.read, best sample) of {doc['machine']['id']}",
        "peak_fp16/i8/i4_TFLOPS: the measured fp32 FMA peak; this CPU computes 16-bit and 8-bit caches in fp32 "
        "(no faster fp16/int8 path was measured)",
        "mem_per_GPU_in_GB: the machine's RAM",
        "intra/inter-node bandwidth and latency: not measured (null)",
    ]
    return config, notes


def export(doc, fmt):
    if fmt not in FORMATS:
        raise HarnessError(f"unknown export format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    return llm_analysis(doc)
