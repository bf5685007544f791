"""What the compiled decode kernels cost per byte, read from their sm_90 machine code (no GPU needed).

For each decode_partial instantiation asked for: ptxas's registers and spills, the blocks per SM
its registers allow, and the instructions one warp issues per step of the K pass and of the V
pass (the two innermost loops that load 16-byte packets; a step is UNROLL warp loads of 512 bytes),
then the fraction of the SM's issue rate (4 warp instructions per clock) each pass needs to keep up
with a given bandwidth. A pass that needs most of the issue rate cannot reach that bandwidth.

Needs nvcc and nvdisasm (on the PATH, or from the nvidia-cuda-nvdisasm wheel the dev extra installs).
Usage: python benchmarks/decode_sass.py [--kernel fp16,128,4 ...] [--unroll 8] [--tb-per-s 4.3 --sms 132 --ghz 1.98]
"""

import argparse
import collections
import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harness.model import BYTES_PER_ELEMENT  # noqa: E402
from probes import gpu_common  # noqa: E402

ISSUE_PER_CLOCK = 4  # warp instructions per SM per clock: four schedulers (Volta to Hopper)
SM_90_LIMITS = {"registers": 65536, "shared_bytes": 233472, "threads": 2048, "blocks": 32}  # what an H100/H200 SM holds
WARP_LOAD_BYTES = 512  # 32 lanes x 16 bytes


def nvdisasm():
    """nvdisasm on the PATH, else the one the nvidia-cuda-nvdisasm wheel installs, else None."""
    found = shutil.which("nvdisasm")
    if found:
        return found
    try:
        import nvidia
    except ImportError:
        return None
    hits = [p for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "*", "bin", "nvdisasm"))]
    return hits[0] if hits else None


def functions(listing):
    """{mangled name: [(address, instruction)]} from `nvdisasm -c`, branch targets as addresses."""
    out, name, label, labels = {}, None, [], {}
    for line in listing.splitlines():
        head = re.match(r"\.text\.(\w+):", line)
        target = re.match(r"(\.L_x_\d+):", line)
        ins = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if head:
            name = head.group(1)
            out[name] = []
        elif target:
            label.append(target.group(1))
        elif ins and name:
            addr = int(ins.group(1), 16)
            labels.update((lab, addr) for lab in label)
            label = []
            out[name].append((addr, ins.group(2)))
    for body in out.values():
        body[:] = [(a, re.sub(r"`\((\.L_x_\d+)\)", lambda m: hex(labels[m.group(1)]), t)) for a, t in body]
    return out


def innermost_loops(ins):
    """[[instruction, ...]] of the loops in one function (a backward branch and the instructions
    from its target to it) that hold no other loop, in address order."""
    index = {a: i for i, (a, _) in enumerate(ins)}
    spans = []
    for i, (addr, text) in enumerate(ins):
        m = re.search(r"\bBRA (0x[0-9a-f]+)", text)
        if m and "DIV" not in text and int(m.group(1), 16) < addr:
            spans.append((index[int(m.group(1), 16)], i))
    inner = [(lo, hi) for lo, hi in spans if not any(lo <= a and b <= hi and (a, b) != (lo, hi) for a, b in spans)]
    return [[t for _, t in ins[lo:hi + 1]] for lo, hi in sorted(inner)]


def packets_per_lane(dtype, head_dim):
    """16-byte loads one lane makes per row (decode.cu's PER_LANE): a row is spread over at most 32 lanes."""
    return max(1, head_dim * BYTES_PER_ELEMENT[dtype] // 16 // 32)


def mix(body, top=6):
    ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in body)
    return ", ".join(f"{op} {n}" for op, n in ops.most_common(top))


DEFAULT_KERNELS = (("fp16", 128, 4), ("fp16", 128, 1), ("fp16", 128, 8), ("fp32", 128, 4), ("bf16", 128, 4),
                   ("int8", 128, 4))
MANGLED_TYPE = {"fp32": "If", "fp16": "I6__half", "bf16": "I13__nv_bfloat16", "int8": "Ia"}


def build(names, nvcc, defines=()):
    """(ptxas's report per mangled kernel name, the cubin's bytes) of decode.cu with the `names`
    instantiated, built for sm_90 with the -D options in `defines` (kept: the tests read it twice)."""
    return _build(tuple(names), nvcc, tuple(defines))


@functools.lru_cache(maxsize=4)
def _build(names, nvcc, defines):
    with tempfile.TemporaryDirectory() as tmp:
        src, cubin = os.path.join(tmp, "decode.cu"), os.path.join(tmp, "decode.cubin")
        with open(src, "w") as f:
            f.write(gpu_common.cuda_source("decode") + "\nvoid* kernels[] = {" + ", ".join(f"(void*){n}" for n in names) + "};\n")
        built = subprocess.run([nvcc, "-arch=sm_90", "-cubin", "-Xptxas", "-v", *defines, "-o", cubin, src],
                               capture_output=True, text=True)
        if built.returncode:
            raise RuntimeError(built.stderr)
        with open(cubin, "rb") as f:
            binary = f.read()
    reports = dict(re.findall(r"Compiling entry function '(\w+)' for 'sm_90'\n(.*?)(?=ptxas info    : Compiling|\Z)",
                              built.stderr, re.S))
    return reports, binary


def disassemble(binary, tool):
    """{mangled name: [(address, instruction)]} of a cubin, through nvdisasm."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(binary)
        f.flush()
        return functions(subprocess.run([tool, "-c", f.name], capture_output=True, text=True, check=True).stdout)


def unroll():
    """decode.cu's default UNROLL: rows a lane has in flight per step."""
    return int(re.search(r"#define UNROLL (\d+)", gpu_common.cuda_source("decode")).group(1))


def analyse(kernels=DEFAULT_KERNELS, tb_per_s=4.3, sms=132, ghz=1.98, nvcc=None, tool=None, rows_in_flight=None):
    """Per (dtype, head_dim, group): registers, spills, blocks per SM, and per pass its instructions
    per warp step, the issue fraction it needs at tb_per_s, its mix and whether it touches local
    memory; `rows_in_flight` builds decode.cu with that UNROLL instead of its default."""
    nvcc, tool = nvcc or shutil.which("nvcc"), tool or nvdisasm()
    names = tuple(gpu_common.decode_kernel_name(t, int(d), int(g)) for t, d, g in kernels)
    reports, binary = build(names, nvcc, (f"-DUNROLL={rows_in_flight}",) if rows_in_flight else ())
    code = disassemble(binary, tool)
    step_bytes = (rows_in_flight or unroll()) * WARP_LOAD_BYTES
    per_clock = tb_per_s * 1e12 / sms / (ghz * 1e9)  # bytes per SM per clock
    out = []
    for dtype, d, g in kernels:
        mangled = next(m for m in code if re.search(rf"decode_partial{MANGLED_TYPE[dtype]}Li{d}ELi{g}E", m))
        regs = int(re.search(r"Used (\d+) registers", reports[mangled]).group(1))
        loads_per_step = (rows_in_flight or unroll()) * packets_per_lane(dtype, int(d))
        passes = []
        for body in innermost_loops(code[mangled]):
            wide = sum("LDG.E.128" in t for t in body)
            if not wide:
                continue
            steps = max(1, wide // loads_per_step)  # nvcc may unroll the step loop itself
            passes.append({"instructions": len(body) / steps, "steps_per_loop": steps, "wide_loads": wide,
                           "issue_fraction": per_clock / step_bytes * len(body) / steps / ISSUE_PER_CLOCK,
                           "mix": mix(body), "local_memory": any(re.search(r"\b(LDL|STL)\b", t) for t in body)})
        out.append({"kernel": (dtype, int(d), int(g)), "registers": regs,
                    "spill_bytes": int(re.search(r"(\d+) bytes spill stores", reports[mangled]).group(1)),
                    "blocks_per_sm": gpu_common.resident_blocks(regs, 0, gpu_common.DECODE_THREADS, SM_90_LIMITS)[0],
                    "passes": dict(zip(("K", "V"), passes)), "step_bytes": step_bytes, "bytes_per_clock": per_clock})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", action="append", help="dtype,head_dim,group (default: fp16,128,4, the GPU issue's, "
                                                     "beside groups 1 and 8 and the other dtypes)")
    p.add_argument("--tb-per-s", type=float, default=4.3, help="bandwidth to keep up with (H200 copy: about 4.3)")
    p.add_argument("--sms", type=int, default=132)
    p.add_argument("--ghz", type=float, default=1.98, help="SM clock")
    p.add_argument("--unroll", type=int, help="rows per lane in flight (decode.cu's UNROLL; default: the source's)")
    args = p.parse_args()
    if not (nvdisasm() and shutil.which("nvcc")):
        sys.exit("needs nvcc and nvdisasm on the PATH (nvdisasm: pip install nvidia-cuda-nvdisasm)")
    kernels = [tuple(k.split(",")) for k in args.kernel] if args.kernel else DEFAULT_KERNELS
    results = analyse(kernels, args.tb_per_s, args.sms, args.ghz, rows_in_flight=args.unroll)
    print(f"at {args.tb_per_s} TB/s over {args.sms} SMs at {args.ghz} GHz: {results[0]['bytes_per_clock']:.1f} bytes "
          f"per SM per clock; a warp step loads {results[0]['step_bytes']} bytes")
    for r in results:
        dtype, d, g = r["kernel"]
        print(f"\n{dtype} d={d} G={g}: {r['registers']} registers, {r['spill_bytes']} bytes spilled, "
              f"{r['blocks_per_sm']} blocks ({r['blocks_per_sm'] * gpu_common.DECODE_THREADS // 32} warps) per SM by registers")
        for name, ps in r["passes"].items():
            print(f"  {name} pass: {ps['instructions']:.0f} instructions per step, {ps['issue_fraction']:.0%} of the issue rate"
                  f"{', LOCAL MEMORY' if ps['local_memory'] else ''} "
                  f"({'the loop of ' + str(ps['steps_per_loop']) + ' steps: ' if ps['steps_per_loop'] > 1 else ''}{ps['mix']})")


if __name__ == "__main__":
    main()
