"""cgroup CPU quota and memory limit: this machine's recorded cgroup v1 layout (with the limits a
container would set written into a copy of it), a cgroup v2 pod, and the cases that hold none."""

import os
import shutil

import pytest

from conftest import FIXTURES
from harness import cgroups, machine, report, run
from harness.errors import HarnessError


def write(root, path, text):
    full = os.path.join(str(root), path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)


def kvm_v1(tmp_path, cpu_path="/", memory_path="/"):
    """This dev VM's cgroup mounts (v1 controllers, a controller-less v2 'unified'), recorded."""
    os.makedirs(tmp_path / "proc/self")
    shutil.copy(os.path.join(FIXTURES, "mountinfo-kvm-cgroup-v1.txt"), tmp_path / "proc/self/mountinfo")
    with open(os.path.join(FIXTURES, "proc-cgroup-kvm-v1.txt")) as f:
        text = f.read().replace("1:cpu:/", f"1:cpu:{cpu_path}").replace(
            "4:memory:/process_api/f5b1f14dd56491e366c07968a3adcf11", f"4:memory:{memory_path}")
    write(tmp_path, "/proc/self/cgroup", text)
    write(tmp_path, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, "/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    write(tmp_path, "/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")
    write(tmp_path, "/sys/fs/cgroup/unified/cgroup.controllers", "")
    return str(tmp_path)


def test_this_vms_cgroups_hold_no_limit(tmp_path):
    root = kvm_v1(tmp_path, memory_path="/process_api/f5b")
    write(root, "/sys/fs/cgroup/memory/process_api/f5b/memory.limit_in_bytes", "9223372036854771712\n")
    write(root, "/sys/fs/cgroup/memory/process_api/f5b/memory.usage_in_bytes", "1600712704\n")
    assert cgroups.cgroup_dirs("memory", root)[0] == 1
    assert [os.path.relpath(d, root) for d in cgroups.cgroup_dirs("memory", root)[1]] == [
        "sys/fs/cgroup/memory/process_api/f5b", "sys/fs/cgroup/memory/process_api", "sys/fs/cgroup/memory"]
    assert cgroups.limits(root) == {"cpu_quota": None, "memory_limit_bytes": None, "memory_used_bytes": None}


def test_v1_limits_of_the_process_cgroup_as_measured_on_this_vm(tmp_path):
    # as set by hand on the dev VM (cpu.cfs_quota_us 150000, memory.limit_in_bytes 3 GiB): the harness
    # then ran one thread, not two, and sized its buffers within 2.98 GiB
    root = kvm_v1(tmp_path, cpu_path="/hx", memory_path="/hx")
    write(root, "/sys/fs/cgroup/cpu/hx/cpu.cfs_quota_us", "150000\n")
    write(root, "/sys/fs/cgroup/cpu/hx/cpu.cfs_period_us", "100000\n")
    write(root, "/sys/fs/cgroup/memory/hx/memory.limit_in_bytes", str(3 << 30))
    write(root, "/sys/fs/cgroup/memory/hx/memory.usage_in_bytes", "17113088")
    assert cgroups.limits(root) == {"cpu_quota": 1.5, "memory_limit_bytes": 3 << 30, "memory_used_bytes": 17113088}
    # page cache the kernel would reclaim is not counted as used (this VM's memory.stat, recorded)
    write(root, "/sys/fs/cgroup/memory/hx/memory.usage_in_bytes", "1600712704")
    write(root, "/sys/fs/cgroup/memory/hx/memory.stat", "cache 1531281408\ninactive_file 860311552\n"
                                                           "total_inactive_file 860311552\n")
    assert cgroups.memory_limit(root) == (3 << 30, 1600712704 - 860311552)


def v2_pod(tmp_path, controllers="cpuset cpu io memory pids"):
    root = str(tmp_path)
    write(root, "/proc/self/mountinfo", "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - "
                                        "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")
    write(root, "/proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
    write(root, "/sys/fs/cgroup/cgroup.controllers", controllers)
    write(root, "/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n")
    write(root, "/sys/fs/cgroup/kubepods/pod1/cpu.max", "250000 100000\n")  # the pod's limit binds its container
    write(root, "/sys/fs/cgroup/kubepods/pod1/ctr/memory.max", str(8 << 30))
    write(root, "/sys/fs/cgroup/kubepods/pod1/memory.max", "max\n")
    write(root, "/sys/fs/cgroup/kubepods/pod1/ctr/memory.current", str(3 << 30))
    write(root, "/sys/fs/cgroup/kubepods/pod1/ctr/memory.stat", f"anon {1 << 30}\nfile {2 << 30}\ninactive_file {2 << 30}\n")
    return root


def test_v2_limits_are_the_tightest_of_the_cgroup_and_its_ancestors(tmp_path):
    assert cgroups.limits(v2_pod(tmp_path)) == {"cpu_quota": 2.5, "memory_limit_bytes": 8 << 30,
                                                "memory_used_bytes": 1 << 30}


def test_v2_without_the_controllers_or_outside_the_mounts_view(tmp_path):
    assert cgroups.limits(v2_pod(tmp_path / "a", controllers="pids")) == {
        "cpu_quota": None, "memory_limit_bytes": None, "memory_used_bytes": None}
    root = v2_pod(tmp_path / "b")
    write(root, "/proc/self/cgroup", "0::/../../elsewhere\n")  # another namespace's path: the mount's own files
    write(root, "/sys/fs/cgroup/cpu.max", "50000 100000\n")
    assert cgroups.cpu_quota(root) == 0.5
    assert cgroups.limits(str(tmp_path / "nothing")) == {"cpu_quota": None, "memory_limit_bytes": None,
                                                         "memory_used_bytes": None}


def test_unreadable_limits_count_as_none(tmp_path):
    # a zero period, a word where a number belongs, a v1 quota beside garbage: no limit read, no crash
    root = v2_pod(tmp_path / "v2")
    write(root, "/sys/fs/cgroup/kubepods/pod1/cpu.max", "250000 0\n")
    write(root, "/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "lots 100000\n")
    write(root, "/sys/fs/cgroup/kubepods/pod1/ctr/memory.stat", "inactive_file many\n")
    assert cgroups.limits(root) == {"cpu_quota": None, "memory_limit_bytes": 8 << 30, "memory_used_bytes": 3 << 30}
    root = kvm_v1(tmp_path / "v1", cpu_path="/hx")
    write(root, "/sys/fs/cgroup/cpu/hx/cpu.cfs_quota_us", "150000\n")
    write(root, "/sys/fs/cgroup/cpu/hx/cpu.cfs_period_us", "?\n")
    assert cgroups.cpu_quota(root) is None
    write(root, "/sys/fs/cgroup/cpu/hx/cpu.cfs_period_us", "100000\n")
    assert cgroups.cpu_quota(root) == 1.5


def test_threads_stay_within_whole_cpus_of_the_quota():
    assert cgroups.cpus_within(None, 4) == 4
    assert cgroups.cpus_within(1.5, 2) == 1
    assert cgroups.cpus_within(0.5, 2) == 1
    assert cgroups.cpus_within(8, 2) == 2


def test_the_profile_sizes_threads_and_memory_within_the_limits(monkeypatch):
    monkeypatch.setattr(cgroups, "limits", lambda root="": {"cpu_quota": 1.5, "memory_limit_bytes": 3 << 30,
                                                            "memory_used_bytes": 1 << 30})
    found = machine.identify_cpu()
    assert found["usable_cpus"] == 1 and found["memory_available_bytes"] <= 2 << 30
    assert found["cgroup"]["cpu_quota"] == 1.5
    with pytest.raises(HarnessError, match=r"choose 1 to 1 \(CPUs usable here; the cgroup's CPU quota is 1.5 CPUs\)"):
        run.check_threads(2, found)
    assert report.cgroup_limits(found["cgroup"]) == "CPU quota 1.5 CPUs, memory 3.2 GB"
    assert report.cgroup_limits({"cpu_quota": None, "memory_limit_bytes": None}) == "none"
    assert report.cgroup_limits(None) == "not recorded"
