#!/usr/bin/env python3
"""A stand-in `perf` for the counter tests: `perf stat -x,` with -e, -a/-p, -D -1, --control fd:,
-o and `-- cmd`, answering from the JSON in $FAKE_PERF_SPEC:
  {"counts": {event: [total, unit]}, "reject": [event, ...], "pct": percent enabled, "log": path,
   "per_pmu": {event: {pmu: [total, percent enabled]}}}
An event in per_pmu is printed as a hybrid CPU's perf prints it: a row per core PMU (cpu_core/cycles/),
no bare row. Each invocation's arguments are appended to the log (one JSON list per line)."""

import json
import os
import signal
import sys

spec = json.load(open(os.environ["FAKE_PERF_SPEC"]))
args = sys.argv[1:]
with open(spec["log"], "a") as f:
    f.write(json.dumps(args) + "\n")
events = args[args.index("-e") + 1].split(",")
for e in events:
    if e in spec.get("reject", []):
        sys.stderr.write(f"event syntax error: '{e}'\n")
        sys.exit(129)


# as real perf (it calls setlocale(LC_ALL, "")): numbers in the locale's own decimal mark, a comma
# under de_DE (seen: `0,53,msec,task-clock,529913,100,00,...`)
LOCALE = next((os.environ[k] for k in ("LC_ALL", "LC_NUMERIC", "LANG") if os.environ.get(k)), "C")
DECIMAL = "," if LOCALE.startswith("de_") else "."


def number(value):
    return str(value).replace(".", DECIMAL) if isinstance(value, float) else str(value)


def page():
    lines = []
    for e in events:
        if e in spec.get("per_pmu", {}):
            lines += [f"{number(value)},,{pmu}/{e}/,1000,{number(pct)},," for pmu, (value, pct) in spec["per_pmu"][e].items()]
            continue
        value, unit = spec["counts"].get(e, ["<not supported>", ""])
        lines.append(f"{number(value)},{unit},{e},1000,{number(spec.get('pct', 100.0))},,")
    return "\n".join(lines) + "\n"


if "--" in args:  # a probe: count the command, print to stderr
    sys.stderr.write(page())
    sys.exit(0)
out = args[args.index("-o") + 1]
ctl, ack = (int(x) for x in args[args.index("--control") + 1][3:].split(","))


def finish(*_):
    with open(out, "w") as f:
        f.write("# started on a fake day\n\n" + page())
    sys.exit(0)


signal.signal(signal.SIGINT, finish)
with os.fdopen(ctl) as commands:
    for line in commands:
        os.write(ack, b"ack\n\x00")
finish()
