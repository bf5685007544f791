"""Measured numbers in other tools' hardware-config formats (no probe runs here).

llm-analysis (cli99/llm-analysis) reads a GPU config JSON with these keys: name,
mem_per_GPU_in_GB, hbm_bandwidth_in_GB_per_sec, intra_node_bandwidth_in_GB_per_sec,
intra_node_min_message_latency, peak_fp16_TFLOPS, peak_i8_TFLOPS, peak_i4_TFLOPS,
inter_node_bandwidth_in_GB_per_sec. Fields this harness does not measure are null, and each
substitution is listed in the notes printed beside the JSON.
"""

from harness.errors import HarnessError
from harness.profile import default_device, device_names
from harness.validation import compute_roof, matmul_rate, roofs

FORMATS = ("llm-analysis",)
# llm-analysis takes peak_i4_TFLOPS for products of int4 weights and int4 activations; no int4 matmul
# is measured here, so they are rated as they would run widened: int8 (or, on a CPU, 16-bit floats)
I4_WIDENED_TO = ("int8", "bf16", "fp16")


def llm_analysis(doc, device=None):
    """(config dict, notes) for one device of a profile: its measured read bandwidth and peaks.
    By default the first GPU where the profile has one (llm-analysis models GPUs), else the CPU."""
    devices = doc.get("devices") or {}
    device = device or default_device(devices)
    if device not in devices:
        raise HarnessError(f"the profile has no device {device!r}: it has {device_names(devices)}")
    sec = devices[device]
    bw, peak = roofs(sec)
    if not (bw and peak):
        raise HarnessError(f"the profile's {device} has no measured read bandwidth and fp32 peak to export")
    config = {
        "name": f"{doc['machine']['id']}-{device}-measured",
        "mem_per_GPU_in_GB": None,
        "hbm_bandwidth_in_GB_per_sec": round(bw / 1e9, 2),
        "intra_node_bandwidth_in_GB_per_sec": None,
        "intra_node_min_message_latency": None,
        "peak_fp16_TFLOPS": None,
        "peak_i8_TFLOPS": None,
        "peak_i4_TFLOPS": None,
        "inter_node_bandwidth_in_GB_per_sec": None,
    }
    notes = [f"hbm_bandwidth_in_GB_per_sec: measured read bandwidth (bandwidth.read, best sample) of "
             f"{doc['machine']['id']} {device}", "intra/inter-node bandwidth and latency: not measured (null)"]
    tensor = sec.get("tensor_flops") or {}
    if device == "cpu":
        mem = (doc["machine"].get("cpu") or {}).get("memory_bytes")
        config["mem_per_GPU_in_GB"] = round(mem / 1e9, 1) if mem else None
        for key, dtypes in (("peak_fp16_TFLOPS", ("bf16", "fp16")), ("peak_i8_TFLOPS", ("int8",)),
                            ("peak_i4_TFLOPS", I4_WIDENED_TO)):
            rate, how = compute_roof(sec, dtypes)
            config[key] = round(rate / 1e12, 4)
            notes.append(f"{key}: the measured {how}" + (" (no faster validated matmul in the profile)"
                                                         if how == "fp32 FMA peak" else "")
                         + (" (int4 products widened: no int4 matmul is measured)" if key == "peak_i4_TFLOPS" else ""))
        notes.append("mem_per_GPU_in_GB: the machine's RAM")
        return config, notes
    mem = (sec.get("gpu") or {}).get("memory_bytes")
    config["mem_per_GPU_in_GB"] = round(mem / 1e9, 1) if mem else None
    for key, dtype, guess in (("peak_fp16_TFLOPS", "fp16", None), ("peak_i8_TFLOPS", "int8", "2x"),
                              ("peak_i4_TFLOPS", "int8", "4x")):
        rate = matmul_rate(tensor, dtype)
        if rate:
            config[key] = round(rate / 1e12, 4)
            notes.append(f"{key}: measured tensor-core matmul ({dtype}, {(tensor.get(dtype) or {}).get('via', 'torch')})"
                         + (" (int4 products widened to int8: no int4 matmul is measured, and Hopper has no int4 "
                            "tensor cores)" if key == "peak_i4_TFLOPS" else ""))
        else:
            notes.append(f"{key}: not measured (null): {tensor.get('reason') or 'no validated tensor-core ' + dtype + ' matmul'}"
                         + (f"; llm-analysis then assumes {guess} peak_fp16_TFLOPS, a figure nobody measured" if guess else ""))
    notes.append("mem_per_GPU_in_GB: NVML's memory size")
    return config, notes


def export(doc, fmt, device=None):
    if fmt not in FORMATS:
        raise HarnessError(f"unknown export format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    return llm_analysis(doc, device)
