"""The YAML hardware profile: plain data with a schema version, validated load, atomic save.

Changelog of the format (loading an unknown version is an error):
  1: first version (machine, software, devices.cpu: bandwidth, hierarchy, peak_flops, thread_sweep,
     theoretical, balance, decode_attention, model_validation).
"""

import datetime as dt
import math
import os
import tempfile

import yaml

from harness.errors import HarnessError, first_line

SCHEMA_VERSION = 1
# libyaml's C loader and dumper where PyYAML has them (10x faster on large profiles); both safe
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
BANDWIDTH_KERNELS = ("copy", "scale", "add", "triad", "read")
PEAK_DTYPES = ("fp64", "fp32")


def utc_now():
    """Current UTC time as an ISO 8601 string with a Z suffix, to the second."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _require(cond, source, what):
    if not cond:
        raise HarnessError(f"profile {source} is malformed: {what}")


def _check_timing_record(rec, source, where, rate_key, work_key):
    _require(isinstance(rec, dict), source, f"{where} must be a mapping")
    samples = rec.get("samples_s")
    _require(isinstance(samples, list) and all(_is_number(s) for s in samples),
             source, f"{where}.samples_s must be a list of seconds")
    _require(rec.get(rate_key) is None or _is_number(rec.get(rate_key)),
             source, f"{where}.{rate_key} must be a number or null")
    _require(_is_number(rec.get(work_key)), source, f"{where}.{work_key} must be a number")


def validate(doc, source="<profile>"):
    """Raise HarnessError naming `source` and the first problem if `doc` is not a valid profile."""
    _require(isinstance(doc, dict), source, "expected a YAML mapping at the top level")
    version = doc.get("schema_version")
    _require("schema_version" in doc, source, "no schema_version (is this a harness profile?)")
    if version != SCHEMA_VERSION:
        raise HarnessError(f"profile {source} has schema_version {version!r}; this harness reads "
                           f"version {SCHEMA_VERSION} only")
    _require(isinstance(doc.get("created_utc"), str), source, "created_utc must be a string")
    machine = doc.get("machine")
    _require(isinstance(machine, dict) and isinstance(machine.get("id"), str) and machine["id"],
             source, "machine.id must be a non-empty string")
    _require(isinstance(doc.get("software"), dict), source, "software must be a mapping")
    devices = doc.get("devices")
    _require(isinstance(devices, dict), source, "devices must be a mapping")
    for name, section in devices.items():
        _validate_section(section, source, f"devices.{name}")
    return doc


def _validate_section(sec, source, where):
    """One devices.<name> section (cpu, gpu0, ...): the shapes the reports and compare read."""
    _require(isinstance(sec, dict), source, f"{where} must be a mapping")
    for key in ("bandwidth", "bandwidth_fp32", "peak_flops", "tensor_flops", "hierarchy_levels", "thread_sweep",
                "theoretical", "balance", "model_validation", "telemetry"):
        _require(isinstance(sec.get(key, {}), dict), source, f"{where}.{key} must be a mapping")
    for key, rate, work in (("bandwidth", "bytes_per_s", "bytes_per_call"), ("bandwidth_fp32", "bytes_per_s", "bytes_per_call"),
                            ("peak_flops", "flops_per_s", "flops_per_call"), ("tensor_flops", "flops_per_s", "flops_per_call")):
        for name, rec in (sec.get(key) or {}).items():
            if not (key == "tensor_flops" and name == "reason"):  # no torch: {reason: ...}
                _check_timing_record(rec, source, f"{where}.{key}.{name}", rate, work)
    for kernel, recs in (sec.get("thread_sweep") or {}).items():
        _require(isinstance(recs, list) and all(isinstance(r, dict) for r in recs), source,
                 f"{where}.thread_sweep.{kernel} must be a list of records")
    warnings = sec.get("warnings", [])
    _require(isinstance(warnings, list) and all(isinstance(w, str) for w in warnings), source,
             f"{where}.warnings must be a list of messages")
    errors = sec.get("probe_errors", {})
    _require(isinstance(errors, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in errors.items()),
             source, f"{where}.probe_errors must map probe names to messages")
    decode = sec.get("decode_attention", [])
    _require(isinstance(decode, list), source, f"{where}.decode_attention must be a list")
    for i, rec in enumerate(decode):
        at = f"{where}.decode_attention[{i}]"
        _require(isinstance(rec, dict) and isinstance(rec.get("impl"), str) and isinstance(rec.get("dtype"), str),
                 source, f"{at} needs impl and dtype")
        _check_timing_record(rec, source, at, "bytes_per_s", "bytes_per_call")
        _require(_is_number(rec.get("time_s")) and isinstance(rec.get("model"), dict),
                 source, f"{at} needs time_s and model")
    hierarchy = sec.get("hierarchy", [])
    _require(isinstance(hierarchy, list), source, f"{where}.hierarchy must be a list")
    for i, point in enumerate(hierarchy):
        _require(isinstance(point, dict) and _is_number(point.get("working_set_bytes")),
                 source, f"{where}.hierarchy[{i}] needs a working_set_bytes number")


def labelled_records(section):
    """(key, name, record) of every timed record of a device section (or of one probe's output),
    wherever it sits: {kernel: record} mappings (name: the kernel), lists of records (name: None)
    and thread_sweep's {kernel: [records]}."""
    for key, value in section.items():
        groups = value.items() if isinstance(value, dict) else [(None, value)] if isinstance(value, list) else []
        for name, group in groups:
            for rec in (group if isinstance(group, list) else [group]):
                if isinstance(rec, dict) and "samples_s" in rec:
                    yield key, name, rec


def measurement_records(section):
    """Every timed record of a device section (or of one probe's output)."""
    return (rec for _, _, rec in labelled_records(section))


def load_profile(path):
    """Read and validate a profile; any problem is one HarnessError naming the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise HarnessError(f"profile {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"profile {path} cannot be read: {e}") from None
    try:
        doc = yaml.load(text, Loader=LOADER)
    except yaml.YAMLError as e:
        raise HarnessError(f"profile {path} is not valid YAML (truncated or corrupted?): "
                           f"{first_line(e)}") from None
    return validate(doc, path)


def atomic_write_text(path, text):
    """Write text to path through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".yaml", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make profiles private to their writer
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also Ctrl-C: never leave the temporary file behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def dump(doc):
    """The profile as YAML text (keys in insertion order)."""
    return yaml.dump(doc, Dumper=DUMPER, sort_keys=False, default_flow_style=None, width=100)


def history_path(path, previous):
    """Where the profile being replaced is kept: history/<machine.id>/<its created_utc>.yaml."""
    stamp = previous["created_utc"].replace(":", "").replace("-", "")
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), "history", previous["machine"]["id"])
    return os.path.join(folder, f"{stamp}.yaml")


def check_writable(path):
    """Fail early, before any probe runs, if `path` cannot be written or holds a malformed profile."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise HarnessError(f"--out {path} is a directory; give a file path such as {path}/machine.yaml")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise HarnessError(f"cannot write the profile to {path}: {e.strerror or e}") from None
    if os.path.exists(path):
        try:
            load_profile(path)
        except HarnessError as e:
            raise HarnessError(f"{e}; refusing to overwrite it: move it aside or choose another --out") from None


def save_profile(doc, path, keep_history=True):
    """Validate, keep the profile it replaces in history/ (unless `keep_history` is False: it is
    this run's own earlier write), then write atomically."""
    path = os.fspath(path)
    validate(doc, path)
    if os.path.exists(path):
        previous = load_profile(path)  # a malformed file raises here and is left as it is
        if keep_history:
            with open(path, encoding="utf-8") as f:
                atomic_write_text(history_path(path, previous), f.read())
    atomic_write_text(path, dump(doc))
    return path
