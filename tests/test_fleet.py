"""Fleet: a real two-rank mpirun on this machine, the outlier rule on synthetic fleets, a failed
rank named, a fleet of one without MPI, and exit codes."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, run_cli, timed
from harness import fleet
from harness.errors import HarnessError
from harness.profile import dump, load_profile, save_profile

try:
    import mpi4py  # noqa: F401

    MPI_REASON = None if shutil.which("mpirun") else "mpirun is not installed (Debian: openmpi-bin)"
except ImportError:
    MPI_REASON = "mpi4py is not installed"


def node(triad, read=50e9, peak=500e9, numba="0.68.1"):
    rec = lambda rate: {"dtype": "fp64", "threads": 2, "working_set_bytes": 1,  # noqa: E731
                        **timed("bytes", 1e9, [1e9 / (rate * 1.01), 1e9 / rate, 1e9 / rate]),
                        "validated": True, "warnings": []}
    return {"schema_version": 1, "created_utc": "2026-11-25T08:00:00Z", "machine": {"id": "n-2c", "cpu": {"model": "X"}},
            "software": {"python": "3.11.7", "kernel": "6.1", "packages": {"numba": numba}},
            "devices": {"cpu": {"bandwidth": {"triad": rec(triad), "read": rec(read)},
                                "peak_flops": {"fp32": {"threads": 2, **timed("flops", 1e9, [1e9 / peak] * 3),
                                                        "validated": True, "warnings": []}}}}}


def write_fleet(folder, docs, failed=()):
    os.makedirs(folder, exist_ok=True)
    for name, doc in docs.items():
        save_profile(doc, os.path.join(folder, f"{name}.yaml"))
    with open(os.path.join(folder, "summary.yaml"), "w") as f:
        f.write(dump({"fleet": "t", "nodes": [{"name": n} for n in docs], "failed": list(failed)}))
    return str(folder)


def jitter(i):
    return 1 + 0.01 * ((i * 7) % 5 - 2)  # +-2%: a healthy fleet's spread


def test_one_planted_slow_node_is_flagged_and_only_it(tmp_path):
    docs = {f"node{i}": node(80e9 * jitter(i)) for i in range(8)}
    docs["node5"] = node(80e9 * 0.85)
    result = fleet.analyse(docs)
    assert fleet.outliers(result) == ["node5"]
    triad = next(r for r in result["rows"] if r["metric"] == "cpu.bandwidth.triad")
    assert triad["nodes"]["node5"]["ratio"] == pytest.approx(0.85, abs=0.02)


def test_nodes_are_listed_in_number_order_not_string_order(tmp_path):
    docs = {f"node{i}": node(80e9 * jitter(i)) for i in (10, 11, 3, 2, 1)}
    docs["node10"] = node(80e9 * 0.8)
    docs["node2"] = node(80e9 * 0.8)
    result = fleet.analyse(docs)
    assert fleet.outliers(result) == ["node2", "node10"]
    text = fleet.markdown(result, None, "f", fleet.DEFAULT_THRESHOLD)
    row = next(line for line in text.splitlines() if line.startswith("| cpu.bandwidth.triad"))
    assert row.index("node1 ") < row.index("node2 ") < row.index("node3 ") < row.index("node10 ") < row.index("node11 ")


def test_a_node_whose_kernel_computed_a_wrong_answer_is_named_and_flagged():
    docs = {f"node{i}": node(80e9 * jitter(i)) for i in range(4)}
    bad = docs["node2"]["devices"]["cpu"]["bandwidth"]["triad"]
    bad.update(validated=False, error="triad: 3 of 1000 elements differ", bytes_per_s=None, median_bytes_per_s=None)
    result = fleet.analyse(docs)
    assert fleet.outliers(result) == ["node2"]  # not merely absent from the triad's row
    assert result["wrong_output"] == {"node2": {"bandwidth.triad": "triad: 3 of 1000 elements differ"}}
    text = fleet.markdown(result, None, "f", fleet.DEFAULT_THRESHOLD)
    assert "- node2: bandwidth.triad: triad: 3 of 1000 elements differ" in text and "**Outliers: node2**" in text


def test_identical_nodes_have_no_outliers():
    assert fleet.outliers(fleet.analyse({f"n{i}": node(80e9) for i in range(8)})) == []


def test_outlier_rule_needs_both_threshold_and_mads():
    assert fleet.is_outlier(85, 100, 1, True, 0.10)  # 15% worse, 10 robust sd away
    assert not fleet.is_outlier(95, 100, 1, True, 0.10)  # only 5% worse
    assert not fleet.is_outlier(85, 100, 10, True, 0.10)  # 15% worse, but within a noisy fleet's spread
    assert not fleet.is_outlier(120, 100, 1, True, 0.10)  # faster is not an outlier


def test_of_two_nodes_the_one_far_behind_the_other_is_named():
    # the MAD of two values is half their gap: the MAD rule alone never flagged a node at half speed
    result = fleet.analyse({"a": node(80e9), "b": node(40e9)})
    assert fleet.outliers(result) == ["b"]
    assert fleet.outliers(fleet.analyse({"a": node(80e9), "b": node(80e9 * 0.97)})) == []  # within 5%
    assert "of two nodes, the one more than 5% worse than the other" in fleet.markdown(result, None, "f", 0.05)
    assert not fleet.pair_outlier(120, 100, True, 0.05) and fleet.pair_outlier(120, 100, False, 0.05)


def test_configuration_differences_are_listed():
    docs = {f"n{i}": node(80e9) for i in range(3)}
    docs["n2"] = node(80e9, numba="0.69.0")
    result = fleet.analyse(docs)
    assert result["differences"]["package numba"] == {"n0": "0.68.1", "n1": "0.68.1", "n2": "0.69.0"}
    for i, memory in enumerate((25_294_000_000, 25_294_400_000, 25_294_900_000)):  # MemTotal moves between boots
        docs[f"n{i}"]["machine"]["cpu"]["memory_bytes"] = memory
    docs["n0"]["devices"]["gpu0"] = {"gpu": {"ecc_mode": 1, "max_sm_clock_hz": 1.98e9, "power_limit_w": 700.0}}
    docs["n1"]["devices"]["gpu0"] = {"gpu": {"ecc_mode": 0, "max_sm_clock_hz": 1.755e9, "power_limit_w": 500.0}}
    differences = fleet.analyse(docs)["differences"]
    assert "memory" not in differences  # the same 25.3 GB
    assert differences["gpu0 ecc"] == {"n0": "on", "n1": "off", "n2": None}
    assert differences["gpu0 max SM clock"]["n0"] == "1980 MHz" and differences["gpu0 power limit"]["n1"] == "500 W"
    docs["n1"]["machine"]["cpu"]["clock_settings"] = {"governor": "powersave", "turbo": False, "scaling_max_hz": 2e9}
    docs["n0"]["machine"]["cpu"]["clock_settings"] = {"governor": "performance", "turbo": True, "scaling_max_hz": None}
    differences = fleet.analyse(docs)["differences"]
    assert differences["cpu governor"] == {"n0": "performance", "n1": "powersave", "n2": None}
    assert differences["cpu turbo"]["n1"] == "off" and differences["cpu OS clock cap"]["n1"] == "2.00 GHz"


def test_fleet_report_cli_exit_codes_and_pngs(tmp_path):
    healthy = write_fleet(tmp_path / "ok", {f"n{i}": node(80e9 * jitter(i)) for i in range(8)})
    proc = run_cli("fleet", "report", healthy)
    assert proc.returncode == 0 and "No outliers" in proc.stdout
    assert os.path.exists(os.path.join(healthy, "cpu.bandwidth.triad.png"))
    docs = {f"n{i}": node(80e9 * jitter(i)) for i in range(8)}
    docs["n3"] = node(80e9 * 0.85)
    slow = write_fleet(tmp_path / "slow", docs)
    proc = run_cli("fleet", "report", slow)
    assert proc.returncode == 1 and "Outliers: n3" in proc.stdout
    broken = write_fleet(tmp_path / "broken", {"n0": node(80e9)}, failed=[{"rank": 1, "host": "gpu-7", "error": "CUDA error"}])
    proc = run_cli("fleet", "report", broken)
    assert proc.returncode == 1 and "rank 1 on gpu-7: CUDA error" in proc.stdout
    assert run_cli("fleet", "report", str(tmp_path / "nothing")).returncode == 2
    with pytest.raises(HarnessError, match="is a file: give the folder `harness fleet run` wrote"):
        fleet.load_fleet(os.path.join(healthy, "summary.yaml"))  # one of its files, not the folder
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "n0.yaml").write_text("schema_version: 1\nmachine: [")
    proc = run_cli("fleet", "report", str(tmp_path / "bad"))  # nothing readable: nothing to compare
    assert proc.returncode == 2 and "holds no readable profiles" in proc.stderr and "not valid YAML" in proc.stderr
    one_bad = write_fleet(tmp_path / "one-bad", {f"n{i}": node(80e9 * jitter(i)) for i in range(4)})
    pathlib.Path(one_bad, "n9.yaml").write_text("schema_version: 1\nmachine: [")  # one node's file cut short
    proc = run_cli("fleet", "report", one_bad)
    assert proc.returncode == 1 and "No outliers" in proc.stdout and "4 nodes" in proc.stdout
    assert "## Profiles that could not be read" in proc.stdout and "- n9.yaml: profile" in proc.stdout
    assert "left out: profile" in proc.stderr and "n9.yaml is not valid YAML" in proc.stderr
    for summary in ("- a list\n", "fleet: t\nfailed: [rank 3]\n"):
        pathlib.Path(one_bad, "summary.yaml").write_text(summary)
        proc = run_cli("fleet", "report", one_bad)
        assert proc.returncode == 2 and "summary.yaml is malformed" in proc.stderr
    pathlib.Path(one_bad, "summary.yaml").write_bytes(b"\xff\xfe fleet")  # no text at all
    proc = run_cli("fleet", "report", one_bad)
    assert proc.returncode == 2 and "summary.yaml cannot be read: 'utf-8' codec can't decode" in proc.stderr


def test_rank_from_launcher_environment():
    info = fleet.rank_info({"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}, use_mpi=False)
    assert (info["rank"], info["size"], info["local_rank"], info["via"]) == (3, 8, 1, "slurm")
    info = fleet.rank_info({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}, use_mpi=False)
    assert (info["rank"], info["size"], info["via"]) == (1, 2, "ompi")
    assert fleet.rank_info({}, use_mpi=False)["via"] == "single process"
    for env, needle in (({"SLURM_PROCID": "x", "SLURM_NTASKS": "8"}, "SLURM_PROCID='x' is not a whole number"),
                        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "8", "SLURM_LOCALID": "-1"}, "SLURM_LOCALID='-1'"),
                        ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "2"}, "outside 0 to 1")):
        with pytest.raises(HarnessError, match=needle):
            fleet.rank_info(env, use_mpi=False)


def test_without_mpi_a_single_process_is_a_fleet_of_one(tmp_path):
    env = dict(os.environ, HARNESS_TINY="1", PYTHONPATH=ROOT)
    code = ("import sys, builtins; real = builtins.__import__\n"
            "def fake(name, *a, **k):\n"
            "    if name.startswith('mpi4py'): raise ImportError('no mpi4py')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = fake\n"
            "from harness.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "fleet", "run", "--name", "one", "--out", str(tmp_path), "--quick"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "a fleet of one" in proc.stdout and "mpirun -np N" in proc.stdout
    summary = yaml.safe_load((tmp_path / "one" / "summary.yaml").read_text())
    assert summary["launched_via"] == "single process" and len(summary["nodes"]) == 1


@pytest.mark.skipif(MPI_REASON is not None, reason=MPI_REASON or "")
def test_mpirun_two_ranks_each_pinned_to_a_core(tmp_path):
    env = dict(os.environ, HARNESS_TINY="1", PYTHONPATH=ROOT)
    proc = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "core", "-np", "2",
                           sys.executable, "-m", "harness", "fleet", "run", "--name", "pair", "--out", str(tmp_path),
                           "--quick"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = tmp_path / "pair"
    profiles = sorted(p for p in os.listdir(folder) if p != "summary.yaml")
    assert len(profiles) == 2
    docs = [load_profile(folder / p) for p in profiles]
    assert sorted(d["fleet"]["rank"] for d in docs) == [0, 1]
    if os.cpu_count() >= 2:
        assert all(len(d["fleet"]["cpus"]) == 1 for d in docs)  # bound to one core each
        assert docs[0]["fleet"]["cpus"] != docs[1]["fleet"]["cpus"]
    summary = yaml.safe_load((folder / "summary.yaml").read_text())
    assert summary["ranks"] == 2 and summary["launched_via"] == "mpi4py" and summary["failed"] == []


def test_a_rank_profiles_the_gpu_its_launcher_gave_it_or_its_local_ranks():
    node_gpus = [{"index": i, "nvml_index": i} for i in range(4)]
    assert fleet.rank_gpu(2, node_gpus, "n1")["nvml_index"] == 2
    given = [{"index": 0, "nvml_index": 3}]  # srun --gpus-per-task=1: each task sees its own GPU as gpu0
    assert fleet.rank_gpu(3, given, "n1")["nvml_index"] == 3
    with pytest.raises(Exception, match="local rank 4 has no GPU of its own"):
        fleet.rank_gpu(4, node_gpus, "n1")


def test_metric_units():
    assert [fleet.metric_unit(m) for m in ("cpu.bandwidth.triad", "gpu0.hierarchy.L2", "cpu.peak_flops.fp32",
                                           "gpu0.tensor_flops.int8", "gpu0.tensor_flops.bf16",
                                           "gpu0.sm_clock_hz.stream", "cpu.decode.fraction_of_read")] == \
        ["B/s", "B/s", "FLOP/s", "OP/s", "FLOP/s", "Hz", ""]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_ranks_without_mpi4py_stop_before_profiling(tmp_path, monkeypatch, rank):
    monkeypatch.setattr(fleet, "profile_this_rank", lambda *a: pytest.fail("profiled a result it could not gather"))
    env = {"OMPI_COMM_WORLD_RANK": rank, "OMPI_COMM_WORLD_SIZE": "2"}
    real = fleet.rank_info
    monkeypatch.setattr(fleet, "rank_info", lambda environ: real(environ, use_mpi=False))
    with pytest.raises(HarnessError, match=f"rank {rank} of 2 \\(ompi\\) but mpi4py is not installed"):
        fleet.fleet_run("x", str(tmp_path), environ=env)


@pytest.mark.parametrize("rank", [0, 1])
def test_an_output_folder_rank_0_cannot_write_stops_every_rank_before_profiling(tmp_path, monkeypatch, rank):
    # found after the whole fleet had profiled, it lost every result in a NotADirectoryError
    (tmp_path / "taken").write_text("a file where the folder would go\n")
    told = []  # rank 0's finding, as broadcast: rank 1 stops on it too

    def bcast(self, problem, root):
        told.append(problem)
        return problem if rank == 0 else fleet.output_problem(str(tmp_path / "taken" / "f"))
    monkeypatch.setattr(fleet, "rank_info", lambda environ: {"rank": rank, "size": 2, "local_rank": rank, "via": "test",
                                                             "comm": type("C", (), {"bcast": bcast})()})
    monkeypatch.setattr(fleet, "profile_this_rank", lambda *a: pytest.fail("profiled with nowhere to write"))
    with pytest.raises(HarnessError, match="cannot write the fleet's results to .*taken/f: Not a directory"):
        fleet.fleet_run("f", str(tmp_path / "taken"))
    assert told == ["cannot write the fleet's results to " + str(tmp_path / "taken" / "f") + ": Not a directory"
                    if rank == 0 else None]


def test_two_ranks_on_one_device_keep_the_first_and_name_the_second(tmp_path, monkeypatch):
    results = [{"rank": r, "host": "n1", "local_rank": r, "name": "n1-gpu0", "doc": node(50e9)} for r in (0, 1)]
    monkeypatch.setattr(fleet, "rank_info", lambda environ: {"rank": 0, "size": 2, "local_rank": 0, "via": "test",
                                                             "comm": type("C", (), {"gather": lambda self, x, root: results,
                                                                                     "bcast": lambda self, x, root: x})()})
    monkeypatch.setattr(fleet, "profile_this_rank", lambda *a: results[0])
    summary = fleet.fleet_run("dup", str(tmp_path))
    assert [n["rank"] for n in summary["nodes"]] == [0]
    assert summary["failed"][0]["rank"] == 1 and "same device as rank 0 (n1-gpu0)" in summary["failed"][0]["error"]
