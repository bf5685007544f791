"""What every benchmark ends with: medians of the per-round figures, each target met or missed,
and the raw rounds written as JSON."""

import json
import os
import statistics


def finish(rows, targets, header, path, meta):
    """targets: {key: (">=" or "<=", target, label)}. Prints the verdicts, writes rows + medians."""
    summary = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"\n{header}, {len(rows)} rounds (medians)")
    for key, (op, target, label) in targets.items():
        ok = summary[key] >= target if op == ">=" else summary[key] <= target
        print(f"  {label}: {summary[key]:.3f} ({'meets' if ok else 'MISSES'} {op} {target})")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({**meta, "rounds": rows, "median": summary}, f, indent=2)
    print(f"  raw rounds written to {path}")
    return summary
