"""The CPU and memory limits of this process's control group (a container's --cpus and --memory,
a Kubernetes pod's limits, a systemd slice's CPUQuota), cgroup v1 or v2: /proc/meminfo and the
CPU affinity show the host's, and threads beyond the CPU quota, or buffers beyond the memory
limit, would be throttled or killed."""

import math
import os

from harness.sysfs import read_text

UNLIMITED_V1 = 1 << 62  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1


def _mounts(root):
    """(fstype, mount root, mount point, super options) of every cgroup mount (mountinfo(5))."""
    out = []
    for line in (read_text(f"{root}/proc/self/mountinfo") or "").splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if fields[sep + 1] in ("cgroup", "cgroup2") and len(fields) > sep + 3:
            out.append((fields[sep + 1], fields[3], fields[4], set(fields[sep + 3].split(","))))
    return out


def cgroup_dirs(controller, root=""):
    """(version, [directories]) of this process's cgroup for `controller` ('cpu' or 'memory'), the
    process's own first and then each ancestor up to the hierarchy's mount (every one of them may
    hold a limit); (None, []) where no hierarchy has the controller."""
    lines = (read_text(f"{root}/proc/self/cgroup") or "").splitlines()
    entries = [line.split(":", 2) for line in lines if line.count(":") >= 2]  # hierarchy id, controllers, path
    for fstype, mount_root, mount_point, options in _mounts(root):
        if fstype == "cgroup" and controller in options:
            path = next((p for _, names, p in entries if controller in names.split(",")), None)
            version = 1
        elif fstype == "cgroup2" and controller in (read_text(f"{root}{mount_point}/cgroup.controllers") or "").split():
            path = next((p for hid, names, p in entries if hid == "0" and not names), None)
            version = 2
        else:
            continue
        if path is None:
            continue
        relative = path[len(mount_root):] if mount_root != "/" and path.startswith(mount_root) else path
        top = f"{root}{mount_point}"
        leaf = os.path.normpath(top + "/" + relative)
        if os.path.commonpath([leaf, top]) != top or not os.path.isdir(leaf):
            leaf = top  # a path outside this mount's view (another namespace's): the mount's own limits
        dirs = [leaf]
        while dirs[-1] != top:
            dirs.append(os.path.dirname(dirs[-1]))
        return version, dirs
    return None, []


def _share(quota_us, period_us):
    """quota / period where both are positive whole microseconds; None for "max", v1's -1 (no
    limit) or anything unreadable."""
    if not (quota_us and period_us and quota_us.isdigit() and period_us.isdigit()):
        return None
    quota, period = int(quota_us), int(period_us)
    return quota / period if quota > 0 and period > 0 else None


def cpu_quota(root=""):
    """CPUs' worth of time per period the cgroup may use (1.5 for --cpus=1.5), or None."""
    version, dirs = cgroup_dirs("cpu", root)
    quotas = []
    for d in dirs:
        if version == 2:
            fields = (read_text(f"{d}/cpu.max") or "").split()
            share = _share(*fields) if len(fields) == 2 else None
        else:
            share = _share(read_text(f"{d}/cpu.cfs_quota_us"), read_text(f"{d}/cpu.cfs_period_us"))
        if share is not None:
            quotas.append(share)
    return min(quotas, default=None)


def memory_limit(root=""):
    """(limit, used) bytes of the cgroup's memory, or (None, None) where it has no limit. Used is
    the working set, as docker stats counts it: the usage less the inactive page cache, which the
    kernel reclaims before it kills anything (a container that installed torch holds GBs of it)."""
    version, dirs = cgroup_dirs("memory", root)
    limit_file, used_file, inactive = (("memory.max", "memory.current", "inactive_file") if version == 2 else
                                       ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
    limits = [int(v) for v in (read_text(f"{d}/{limit_file}") for d in dirs) if v and v.isdigit() and int(v) < UNLIMITED_V1]
    if not limits:
        return None, None
    used = read_text(f"{dirs[0]}/{used_file}")
    if not (used and used.isdigit()):
        return min(limits), None
    stat = dict(line.split() for line in (read_text(f"{dirs[0]}/memory.stat") or "").splitlines() if len(line.split()) == 2)
    reclaimable = stat.get(inactive, "0")
    return min(limits), max(0, int(used) - (int(reclaimable) if reclaimable.isdigit() else 0))


def limits(root=""):
    """What the profile records: the cgroup's CPU quota and memory limit (None where unlimited)."""
    quota = cpu_quota(root)
    limit, used = memory_limit(root)
    return {"cpu_quota": quota, "memory_limit_bytes": limit, "memory_used_bytes": used}


def cpus_within(quota, cpus):
    """The threads `cpus` CPUs can run without the quota throttling them: whole CPUs of it, at least 1."""
    return cpus if quota is None else max(1, min(cpus, math.floor(quota)))
