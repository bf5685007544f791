"""What the CPU and GPU matmul probes share: the check of a torch product against float64."""

TOLERANCE = {"int8": 0, "fp32": 1e-5, "tf32": 1e-2, "fp16": 1e-2, "bf16": 2e-2}  # max error / max |reference|
CHECKED_ROWS = 8


def product_error(dtype, a, b, out):
    """None if the first rows of `out` match a @ b computed in float64 within the dtype's tolerance,
    else what is wrong."""
    ref = a[:CHECKED_ROWS].double() @ b.double()
    err = float((out[:CHECKED_ROWS].double() - ref).abs().max() / ref.abs().max())
    return None if err <= TOLERANCE[dtype] else f"matmul {dtype}: relative error {err:.3g} against float64"
