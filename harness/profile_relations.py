"""The relations between a profile's figures, checked on load once their types are (profile_fields):
each figure derived from others must be what the harness derives from them, as the probes and
`harness.validation` wrote it, so a figure edited after the run is refused, not drawn by every reader
(a timed record's rates against its own samples are checked with its type: profile_fields).

- a peak's fraction_of_theoretical: its rate over its theoretical figure;
- each balance: its rate over the section's read bandwidth;
- each decode point's achieved rates, fractions, prediction, regime and model errors;
- each hierarchy level: the median, best and count of the sweep points inside its range;
- model_validation: per-dtype figures those of the points they name, model_holds their verdict,
  each dtype, GQA and batch ratio that of a pair of validated points.

A field an older profile lacks is left alone. `validation` is imported in the functions, not at the
top: it imports summary, which imports profile, which imports this module.
"""

import copy
import math

from harness import stats
from harness.profile_fields import FieldError, is_finite_number


def check_section(sec, where):
    """Every relation of one devices.<name> section, whose types profile_fields.check_section has checked."""
    section_theory = (sec.get("theoretical") or {}).get("flops_per_s")
    for key in ("peak_flops", "tensor_flops"):
        for dtype, rec in (sec.get(key) or {}).items():
            if isinstance(rec, dict):
                whole = section_theory.get(dtype) if key == "peak_flops" and isinstance(section_theory, dict) else None
                check_fraction_of_theoretical(rec, f"{where}.{key}.{dtype}", whole)
    check_balance_from_rates(sec, where)
    check_decode_derivations(sec, where)
    check_levels_from_points(sec, where)
    if "model_validation" in sec:
        check_model_verdict(sec, where)
        check_model_ratios(sec, where)


def check_fraction_of_theoretical(rec, where, section_theory=None):
    """A peak's fraction_of_theoretical is its rate over its theoretical_flops_per_s (a CPU's FMA and
    matmul records: run.flag_against_theory), else over `section_theory`, the section's figure for its
    dtype (a GPU's FMA chains, at the SM clock NVML reported: gpu_run.flag_against_theory)."""
    theory = rec.get("theoretical_flops_per_s") or section_theory
    fraction = rec.get("fraction_of_theoretical")
    if not (is_finite_number(theory) and theory > 0 and fraction is not None and rec.get("flops_per_s") is not None):
        return
    if not math.isclose(fraction, want := rec["flops_per_s"] / theory, rel_tol=1e-9):
        source = "theoretical_flops_per_s" if rec.get("theoretical_flops_per_s") else "the section's theoretical rate"
        raise FieldError(f"{where}.fraction_of_theoretical is {fraction:.10g}, but flops_per_s over {source} "
                         f"is {want:.10g} (edited after the run?)")


def check_balance_from_rates(sec, where):
    """Each stored balance is its rate over the read bandwidth, as the profile's records give them
    (validation.balance, which the probes' sections are written with); an older profile may lack some."""
    from harness import validation

    derived = validation.balance(sec)
    for key, value in (sec.get("balance") or {}).items():
        want = derived.get(key)
        if value is not None and want is not None and not math.isclose(value, want, rel_tol=1e-9):
            raise FieldError(f"{where}.balance.{key} is {value:.10g}, but the section's rate over its read bandwidth "
                             f"is {want:.10g} (edited after the run?)")


DERIVED_DECODE_FIELDS = (("model_error",), ("model_error_adjacent",), ("model", "predicted_time_s"),
                         ("model", "predicted_time_adjacent_s"), ("model", "regime"))


def _at(mapping, path):
    for key in path:
        mapping = (mapping or {}).get(key)
    return mapping


def _same(value, derived):
    """A stored figure and the one derived again: equal, to 1e-9 where both are numbers."""
    if value is None or derived is None or isinstance(value, str) or isinstance(derived, str):
        return value == derived
    return math.isclose(value, derived, rel_tol=1e-9)


def check_decode_derivations(sec, where):
    """Each decode point's achieved rates, fractions, prediction and model error are what its time
    and the section's roofs give (validation.derive_point, which wrote them): an edited model error or
    fraction would be the model's verdict in every report. A field an older profile lacks is left alone."""
    from harness import validation

    bw, peak = validation.roofs(sec)
    for i, rec in enumerate(sec.get("decode_attention") or []):
        want = validation.derive_point(copy.deepcopy(rec), bw, peak)
        paths = [("achieved", key) for key in want["achieved"]] + list(DERIVED_DECODE_FIELDS)
        for path in paths:
            held, derived = _at(rec, path[:-1]) or {}, _at(want, path)
            if path[-1] not in held:
                continue
            value = held[path[-1]]
            if not _same(value, derived):
                raise FieldError(f"{where}.decode_attention[{i}].{'.'.join(path)} is {value!r}, but the point's time "
                                 f"and the section's roofs give {derived!r} (edited after the run?)")
        check_in_core_times(rec, want, f"{where}.decode_attention[{i}].in_core")


IN_CORE_TIMES = ("core_time_s", "memory_time_s", "no_overlap_time_s", "full_overlap_time_s")


def check_in_core_times(rec, want, where):
    """A point's in-core times (validation.derive_in_core: its loops', its memory's at the read beside
    it, and the two bounds of their overlap) are there together or not at all, each what the point's
    in-core rate, time and the read beside it give: the report tables the four side by side."""
    from harness import validation

    held = rec.get("in_core") or {}
    if not any(key in held for key in IN_CORE_TIMES):
        return
    validation.derive_in_core(want)  # the point derived again, with its achieved fractions
    derived = want.get("in_core") or {}
    for key in IN_CORE_TIMES:
        if key not in held:
            raise FieldError(f"{where} has {', '.join(k for k in IN_CORE_TIMES if k in held)} but no {key}: the "
                             "four in-core times are derived together (edited after the run?)")
        if not _same(held[key], derived.get(key)):
            raise FieldError(f"{where}.{key} is {held[key]!r}, but the point's in-core rate, time and the read "
                             f"beside it give {derived.get(key)!r} (edited after the run?)")


def check_levels_from_points(sec, where):
    """Each hierarchy level's bandwidth, best and point count are what stats.level_entry gives for the
    sweep points inside the working sets it names (a GPU's L1: the bytes per SM), as the probe wrote
    them: a level is a roof of the balance table. A level without its range (an older profile) is
    left alone."""
    for level, entry in (sec.get("hierarchy_levels") or {}).items():
        if entry.get("bytes_per_s") is None:
            continue
        if entry.get("bytes_per_sm_range"):
            key, (lo, hi), inside = "bytes_per_sm", entry["bytes_per_sm_range"], lambda p: "bytes_per_sm" in p
        elif entry.get("working_set_bytes_range"):
            key, (lo, hi), inside = "working_set_bytes", entry["working_set_bytes_range"], lambda p: "bytes_per_sm" not in p
        else:
            continue
        want = stats.level_entry([p for p in sec.get("hierarchy") or [] if inside(p) and p.get(key) is not None
                                  and (lo is None or p[key] >= lo) and (hi is None or p[key] <= hi)])
        for field in ("bytes_per_s", "max_bytes_per_s", "points"):
            if field in entry and not _same(entry[field], want.get(field)):
                raise FieldError(f"{where}.hierarchy_levels.{level}.{field} is {entry[field]!r}, but the sweep's points "
                                 f"inside its range give {want.get(field)!r} (edited after the run?)")


# a model_validation.per_dtype entry's figures, as its decode point holds them
PER_DTYPE_FIGURES = {"model_error": ("model_error",), "model_error_adjacent": ("model_error_adjacent",),
                     "fraction_of_bandwidth": ("achieved", "fraction_of_bandwidth"),
                     "fraction_of_adjacent_read": ("achieved", "fraction_of_adjacent_read"),
                     "regime": ("model", "regime")}


def check_model_verdict(sec, where):
    """model_validation's per-dtype figures are those of the decode point each names, and model_holds
    is what the headline dtype's error gives (validation.headline_verdict, as model_finding judges it): the verdict
    a report states."""
    from harness import validation

    mv = sec.get("model_validation") or {}
    per_dtype = mv.get("per_dtype") or {}
    for dtype, entry in per_dtype.items():
        points = [r for r in sec.get("decode_attention") or [] if r.get("validated") and r["dtype"] == dtype
                  and r["impl"] == entry["impl"] and r["seq_len"] == entry["seq_len"]]
        if not any(all(_same(entry[key], _at(r, path)) for key, path in PER_DTYPE_FIGURES.items() if key in entry)
                   for r in points):
            raise FieldError(f"{where}.model_validation.per_dtype.{dtype} holds figures no validated {entry['impl']} "
                             f"{dtype} point at seq_len {entry['seq_len']} gives (edited after the run?)")
    dtype = validation.headline_dtype(per_dtype)
    if dtype is None or "model_holds" not in mv:
        return
    holds, error, _, _ = validation.headline_verdict(per_dtype[dtype], mv["holds_within"])
    if mv["model_holds"] != holds:
        raise FieldError(f"{where}.model_validation.model_holds is {mv['model_holds']!r}, but its headline point's "
                         f"model error {error:+.1%} against holds_within {mv['holds_within']:.0%} gives {holds!r} "
                         "(edited after the run?)")


def ratio_entries(mv):
    """(name, entry, dtypes of its numerator and denominator or None) of each ratio model_validation
    measured: dtype_ratios' <dtype>_vs_fp32, gqa_widened's of one dtype, gqa's and batch's of any.
    An entry without the numerator's impl, seq_len and batch (an older profile) is left out."""
    found = [(f"dtype_ratios.{key}", entry, key.split("_vs_")) for key, entry in (mv.get("dtype_ratios") or {}).items()]
    found += [(key, mv.get(key), None) for key in ("gqa", "batch")]
    widened = mv.get("gqa_widened") or {}
    found.append(("gqa_widened", widened, [widened.get("dtype")] * 2))
    return [(name, entry, dtypes) for name, entry, dtypes in found if isinstance(entry, dict)
            and entry.get("measured_time_ratio") is not None and all(k in entry for k in ("impl", "seq_len", "batch"))]


def check_model_ratios(sec, where):
    """Each ratio model_validation states (a dtype's time over fp32's, GQA's, batch's) is what a pair of
    validated decode points gives (validation.ratio_check, which wrote it), the numerator of the impl,
    seq_len and batch it names: an edited ratio would be a finding about the model in every report."""
    from harness import validation

    points = [r for r in sec.get("decode_attention") or [] if r.get("validated")]
    for name, entry, dtypes in ratio_entries(sec.get("model_validation") or {}):
        nums = [r for r in points if r["impl"] == entry["impl"] and r["seq_len"] == entry["seq_len"]
                and r["batch"] == entry["batch"] and (dtypes is None or r["dtype"] == dtypes[0])]
        dens = [r for r in points if dtypes is None or r["dtype"] == dtypes[1]]
        if not any(all(_same(value, pair[key]) for key, value in entry.items() if key in pair)
                   for pair in (validation.ratio_check(num, den, name) for num in nums for den in dens)):
            raise FieldError(f"{where}.model_validation.{name} holds a ratio no pair of validated decode points gives "
                             f"(its numerator: {entry['impl']} at seq_len {entry['seq_len']}, batch {entry['batch']}; "
                             "edited after the run?)")
