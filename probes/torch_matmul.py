"""What the CPU and GPU matmul probes share: seeded operands and the check of a torch product
against float64."""

from harness.errors import first_line

TOLERANCE = {"int8": 0, "fp32": 1e-5, "tf32": 1e-2, "fp16": 1e-2, "bf16": 2e-2}  # max error / max |reference|
CHECKED_ROWS = 8


def product_error(dtype, a, b, out):
    """None if the first rows of `out` match a @ b computed in float64 within the dtype's tolerance,
    else what is wrong."""
    ref = a[:CHECKED_ROWS].double() @ b.double()
    err = float((out[:CHECKED_ROWS].double() - ref).abs().max() / ref.abs().max())
    return None if err <= TOLERANCE[dtype] else f"matmul {dtype}: relative error {err:.3g} against float64"


def operands(dtype, n, device="cpu"):
    """(a, b, product, out) for an n x n x n matmul of `dtype` with torch on `device`: operands drawn
    on the device from a generator seeded with n (int8 in [-8, 8): every int32 sum exact; floats in
    [0, 1) drawn in fp32 and rounded to the dtype; tf32 is fp32 data), and the call that multiplies
    them into `out`, allocated once here. A product that allocated its result would time the
    allocator too: on the AMX Xeon VM, in a profile's memory state, int8's 16 MiB result cost 425-716
    page faults a call (73 into `out`), and in one of four runs 9.3 ms a product against 4.8 into
    `out` (medians of 7 interleaved rounds; docs/methodology.md has the profiles' spread)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(n)
    if dtype == "int8":
        a, b = (torch.randint(-8, 8, (n, n), dtype=torch.int8, generator=gen, device=device) for _ in range(2))
        out = torch.empty(n, n, dtype=torch.int32, device=device)
        return a, b, lambda: torch._int_mm(a, b, out=out), out
    t = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a, b = (torch.rand(n, n, generator=gen, device=device).to(t) for _ in range(2))
    out = torch.empty(n, n, dtype=t, device=device)
    return a, b, lambda: torch.matmul(a, b, out=out), out


def poison(out):
    """Fill a product's output with what no product of operands() gives: NaN, or int32's minimum
    for int8 (its sums stay within 64 n of zero)."""
    import torch

    out.fill_(float("nan") if out.is_floating_point() else torch.iinfo(out.dtype).min)


def via(dtype):
    """The torch call that multiplies `dtype` operands (as operands() makes them)."""
    return "torch._int_mm" if dtype == "int8" else "torch.matmul"


def accepted(workloads):
    """(the matmul workloads whose product torch ran, once and untimed, [{dtype, reason}] of those it
    refused: this build or device has no such product), before they are timed in rounds together."""
    kept, refused = [], []
    for w in workloads:
        try:
            w.run(1)
        except RuntimeError as e:
            refused.append({"dtype": w.dtype, "reason": first_line(e)})
        else:
            kept.append(w)
    return kept, refused
