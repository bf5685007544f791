"""The YAML hardware profile: plain data with a schema version, validated load, atomic save.

Changelog of the format (loading an unknown version is an error):
  1: first version (machine, software, devices.cpu: bandwidth, hierarchy, peak_flops, thread_sweep,
     theoretical, balance, decode_attention, model_validation).
"""

import datetime as dt
import os
import re
import statistics
import tempfile

import yaml

from harness import profile_fields, profile_relations
from harness.errors import HarnessError, first_line

SCHEMA_VERSION = 1
# libyaml's C loader and dumper where PyYAML has them (10x faster on large profiles); both safe
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
BANDWIDTH_KERNELS = ("copy", "scale", "add", "triad", "read")
PEAK_DTYPES = ("fp64", "fp32")
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # created_utc: history/ names files by it and sorts by it
MACHINE_ID = r"[a-z0-9]+(-[a-z0-9]+)*"  # machine.slug's: profiles/, history/ and reports/ name paths by it
DEVICE_NAME = r"cpu|gpu(0|[1-9][0-9]*)"  # CUDA's ordinals


def utc_now():
    """Current UTC time as an ISO 8601 string with a Z suffix, to the second."""
    return dt.datetime.now(dt.timezone.utc).strftime(STAMP_FORMAT)


def is_utc_stamp(value):
    """Whether `value` is a time as utc_now writes it."""
    try:
        return isinstance(value, str) and dt.datetime.strptime(value, STAMP_FORMAT).strftime(STAMP_FORMAT) == value
    except ValueError:
        return False


def _require(cond, source, what):
    if not cond:
        raise HarnessError(f"profile {source} is malformed: {what}")


def validate(doc, source="<profile>"):
    """Raise HarnessError naming `source` and the first problem if `doc` is not a valid profile."""
    _require(isinstance(doc, dict), source, "expected a YAML mapping at the top level")
    version = doc.get("schema_version")
    _require("schema_version" in doc, source, "no schema_version (is this a harness profile?)")
    if version != SCHEMA_VERSION:
        raise HarnessError(f"profile {source} has schema_version {version!r}; this harness reads "
                           f"version {SCHEMA_VERSION} only")
    _require(is_utc_stamp(doc.get("created_utc")), source,
             f"created_utc must be a UTC time as harness writes it (2026-12-06T11:09:36Z), got {doc.get('created_utc')!r}")
    machine = doc.get("machine")
    _require(isinstance(machine, dict) and isinstance(machine.get("id"), str) and machine["id"],
             source, "machine.id must be a non-empty string")
    _require(re.fullmatch(MACHINE_ID, machine["id"]), source, f"machine.id must be a slug as harness writes it "
             f"(lower-case letters, digits and dashes: amd-epyc-zen4-2c), got {machine['id']!r}")
    _require(isinstance(doc.get("software"), dict), source, "software must be a mapping")
    devices = doc.get("devices")
    _require(isinstance(devices, dict), source, "devices must be a mapping")
    for name in devices:  # a report names its figures by them (roofline-gpu0.png)
        _require(isinstance(name, str) and re.fullmatch(DEVICE_NAME, name), source,
                 f"devices may be cpu, gpu0, gpu1, ...: got {name!r}")
    try:
        profile_fields.check_machine(machine)
        profile_fields.check_software(doc["software"])
        for name, section in devices.items():
            profile_fields.check_section(section, f"devices.{name}")
            profile_relations.check_section(section, f"devices.{name}")
    except profile_fields.FieldError as e:
        raise HarnessError(f"profile {source} is malformed: {e}") from None
    return doc


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


CPU_CLOCK, GPU_CLOCK = "clock implied by the fp32 FMA peak", "SM clock during the peak probe (NVML)"


def _median_of(records, key):
    """The median of a field over records, those holding a number; None where none does."""
    values = [r[key] for r in records if profile_fields.is_finite_number(r.get(key))]
    return float(statistics.median(values)) if values else None


def run_conditions(doc):
    """{device: {condition: value}}: how fast the machine ran while it was profiled, which no
    identity field shows. A CPU's clock implied by its fp32 FMA peak (flat-out FMA chains: on a VM
    the host's turbo and load set it, and an SMT sibling busy with another guest lowers it) and the
    median steal and other load over its measurements ('CPU steal', 'other load'); a GPU's median SM
    clock during its peak probe, from NVML. Compare, history and the report show them."""
    out = {}
    for device, sec in by_device(doc):
        if device == "cpu":
            records = list(measurement_records(sec))
            got = {CPU_CLOCK: ((sec.get("peak_flops") or {}).get("fp32") or {}).get("implied_clock_hz"),
                   "CPU steal": _median_of(records, "steal_fraction"),
                   "other load": _median_of(records, "other_load_fraction")}
        else:
            got = {GPU_CLOCK: (((sec.get("telemetry") or {}).get("peak") or {}).get("sm_clock_hz") or {}).get("median")}
        got = {k: v for k, v in got.items() if profile_fields.is_finite_number(v)}
        if got:
            out[device] = got
    return out


def device_order(name):
    """Sort key of device names: cpu, then gpu0, gpu1, ... gpu9, gpu10 in CUDA's order (not gpu10 before gpu2)."""
    return (len(name), name) if name.startswith("gpu") else (0, name)


def device_names(devices):
    """The names of a profile's devices in device_order, comma-separated, for an error ('none' if none)."""
    return ", ".join(sorted(devices or {}, key=device_order)) or "none"


def by_device(doc):
    """[(device name, section)] of a profile, in device_order."""
    devices = doc.get("devices") if isinstance(doc, dict) else None
    return sorted((devices or {}).items(), key=lambda item: device_order(item[0]))


def default_device(devices):
    """The device a reader of one device takes unless told: the first GPU where the profile has one
    (an ML engineer on a GPU machine asks about the GPU), else the CPU."""
    return next((d for d in sorted(devices, key=device_order) if d.startswith("gpu")), "cpu")


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


def load_readable(paths):
    """([(path, doc)] of the profiles that load, [(path, error)] of those that do not): for readers
    of many stored profiles, where one bad file must not hide the others."""
    loaded, unreadable = [], []
    for path in paths:
        try:
            loaded.append((path, load_profile(path)))
        except HarnessError as e:
            unreadable.append((path, str(e)))
    return loaded, unreadable


def atomic_write_text(path, text):
    """Write text to path through a temporary file in the same folder and a rename; a path that
    cannot be written is a HarnessError naming it."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".yaml", dir=folder)
    except OSError as e:
        raise HarnessError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make profiles private to their writer
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # also Ctrl-C: never leave the temporary file behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):  # a full disk, or path is a directory
            raise HarnessError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def dump(doc):
    """The profile as YAML text (keys in insertion order)."""
    return yaml.dump(doc, Dumper=DUMPER, sort_keys=False, default_flow_style=None, width=100)


def history_path(path, previous):
    """Where the profile being replaced is kept: history/<machine.id>/<its created_utc>.yaml."""
    stamp = previous["created_utc"].replace(":", "").replace("-", "")
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), "history", previous["machine"]["id"])
    return os.path.join(folder, f"{stamp}.yaml")


def try_writing_in(folder):
    """Create `folder` where it is missing, and write and remove a file in it: OSError where either fails."""
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def check_writable(path, machine_id=None):
    """Fail early, before any probe runs, if `path` cannot be written or holds a malformed profile,
    or another machine's than `machine_id` (its name would then say one machine, its data another's).
    Returns the profile the write will replace, or None."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise HarnessError(f"--out {path} is a directory; give a file path such as {path}/machine.yaml")
    try:
        try_writing_in(folder)
    except OSError as e:
        raise HarnessError(f"cannot write the profile to {path}: {e.strerror or e}") from None
    if not os.path.exists(path):
        return None
    try:
        stored = load_profile(path)
    except HarnessError as e:
        raise HarnessError(f"{e}; refusing to overwrite it: move it aside or choose another --out") from None
    if machine_id is not None and stored["machine"]["id"] != machine_id:
        raise HarnessError(f"{path} holds a profile of machine {stored['machine']['id']!r}, and this machine is "
                           f"{machine_id!r}: refusing to replace it: move it aside or choose another --out")
    return stored


def save_profile(doc, path, keep_history=True):
    """Validate, keep the profile it replaces in history/ (unless `keep_history` is False: it is
    this run's own earlier write), then write atomically. A document that fails validation is
    written to `<path>.rejected` (outside the *.yaml the readers glob) before the error."""
    path = os.fspath(path)
    try:
        validate(doc, path)
    except HarnessError as e:  # a harness bug: the run's measurements must not be lost with it
        kept = f"{path}.rejected"
        try:
            atomic_write_text(kept, dump(doc))
        except (HarnessError, yaml.YAMLError):  # cannot be written either: the validation error is the news
            raise e from None
        raise HarnessError(f"{e}; this harness wrote it, so this is a bug in it (please report it): the "
                           f"measurements are kept in {kept}") from None
    if os.path.exists(path):
        previous = load_profile(path)  # a malformed file raises here and is left as it is
        if keep_history:
            with open(path, encoding="utf-8") as f:
                atomic_write_text(history_path(path, previous), f.read())
    atomic_write_text(path, dump(doc))
    return path
