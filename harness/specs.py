"""Datasheet specs (profiles/specs/*.yaml): every number with its source, dense and sparse apart."""

import os
import re

from harness.errors import HarnessError, read_yaml, refuse_unknown_keys
from harness.profile_fields import is_finite_number
from harness.shipped import shipped_folder

SPEC_DIR = shipped_folder("profiles/specs", "datasheets")
SPEC_TOO_LOW = 0.5  # a measurement under half its spec is flagged, as is one above it
SPEC_KEYS = {"name", "kind", "match", "memory_bytes", "bandwidth_bytes_per_s", "flops_per_s", "sparse_flops_per_s"}
# the rates a spec may give: plain FMA rates, and the matrix units' by operand type (readers look up
# "<dtype>_tensor"); a misspelt one would never be compared with anything
SPEC_DTYPES = {"fp64", "fp32", "fp16", "bf16", *(f"{t}_tensor" for t in ("fp64", "tf32", "bf16", "fp16", "fp8", "fp6",
                                                                         "fp4", "int8", "int4"))}


def _sourced(value, where, path):
    number = value.get("value") if isinstance(value, dict) else None
    if not (is_finite_number(number) and number > 0
            and isinstance(value.get("source"), str) and value["source"].strip()):
        raise HarnessError(f"spec {path} is malformed: {where} needs a positive, finite value and a source")
    return value


def load_spec(path):
    """One spec file, validated: name, kind, match patterns, sourced bandwidth and FLOP/s."""
    doc = read_yaml(path, "spec")
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or doc.get("kind") not in ("cpu", "gpu"):
        raise HarnessError(f"spec {path} is malformed: needs name and kind (cpu or gpu)")
    refuse_unknown_keys(doc, SPEC_KEYS, f"spec {path} is malformed")
    memory = doc.get("memory_bytes")
    if memory is not None and not (is_finite_number(memory) and memory > 0):
        raise HarnessError(f"spec {path} is malformed: memory_bytes must be a positive number, got {memory!r}")
    match = doc.get("match")
    if not (isinstance(match, list) and match and all(isinstance(p, str) and p.strip() for p in match)):
        raise HarnessError(f"spec {path} is malformed: needs a list of names to match")
    _sourced(doc.get("bandwidth_bytes_per_s"), "bandwidth_bytes_per_s", path)
    for group in ("flops_per_s", "sparse_flops_per_s"):
        rates = doc.get(group)
        if not isinstance(rates, dict) or (group == "flops_per_s" and not rates):
            raise HarnessError(f"spec {path} is malformed: {group} must be a mapping of dtype to rate")
        for dtype, value in rates.items():
            if dtype not in SPEC_DTYPES:
                raise HarnessError(f"spec {path} is malformed: {group}.{dtype} is not a rate the harness reads: valid "
                                   f"are {', '.join(sorted(SPEC_DTYPES))}")
            _sourced(value, f"{group}.{dtype}", path)
    doc["file"] = os.path.basename(path)
    return doc


def load_specs(folder=SPEC_DIR):
    """Every spec in the folder, sorted by name."""
    if not os.path.isdir(folder):
        return []
    return sorted((load_spec(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".yaml")),
                  key=lambda s: s["name"])


def match_spec(device_name, specs):
    """The spec whose match pattern occurs in the device's name as whole words (not "NVIDIA L4"
    in "NVIDIA L40S", nor "H200" in "NVIDIA GH200 480GB"), the longest such pattern where several
    do ("H200 NVL" over "H200"), or None."""
    name = (device_name or "").lower()
    best, length = None, 0
    for spec in specs:
        for p in spec["match"]:
            if len(p) > length and re.search(rf"(?<![a-z0-9]){re.escape(p.lower())}(?![a-z0-9])", name):
                best, length = spec, len(p)
    return best


def spec_flag(measured, spec_value):
    """'above its spec' / 'under half its spec' / None."""
    if measured is None or not spec_value:
        return None
    if measured > spec_value:
        return "above its spec"
    if measured < SPEC_TOO_LOW * spec_value:
        return "under half its spec"
    return None
