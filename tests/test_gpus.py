"""GPU identification, theoretical peaks and telemetry against a fake NVML (no GPU needed)."""

import pytest

from fakes import FakeNVML
from harness import gpus


def h100(sm_count=132):
    return gpus.identify_gpu(FakeNVML(), 0, 0, sm_count=sm_count)


def test_identification_records_nvml_fields_and_survives_unsupported_ones():
    g = h100()
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["compute_capability"] == [9, 0]
    assert g["memory_bus_width_bits"] == 5120 and g["max_memory_clock_hz"] == 2619e6
    assert g["power_limit_w"] == 700 and g["cuda_driver_version"] == "13.0" and g["ecc_mode"] == 1
    assert g["mig_mode"] is None  # NotSupported is recorded as unknown, not a crash


def test_theoretical_peaks_of_an_h100_sxm():
    t = gpus.theoretical(h100())
    assert t["bytes_per_s"] == pytest.approx(3.35e12, rel=0.01)  # 2 x 2619 MHz x 5120 bits / 8
    assert t["flops_per_s"]["fp32"] == pytest.approx(66.9e12, rel=0.01)  # the datasheet's 67 TFLOPS
    assert t["flops_per_s"]["fp64"] == pytest.approx(33.5e12, rel=0.01)
    at_run_clock = gpus.theoretical(h100(), clock_hz=1755e6)
    assert at_run_clock["flops_per_s"]["fp32"] == pytest.approx(2 * 128 * 132 * 1755e6)
    assert "Programming Guide" in t["source"] and "bus width" in t["source"]
    assert "(64 fp64, 128 fp32, 256 fp16 for sm_90) x 132 SMs x 1.980 GHz" in t["source"]  # in words, not a dict


def test_blackwell_parts_have_theoretical_fma_rates_and_unknown_ones_say_why():
    rtx5090 = {"compute_capability": [12, 0], "sm_count": 170, "max_sm_clock_hz": 2.407e9}
    assert gpus.theoretical(rtx5090)["flops_per_s"]["fp32"] == pytest.approx(104.8e12, rel=0.01)  # its spec sheet
    b200 = gpus.theoretical({"compute_capability": [10, 0], "sm_count": 148, "max_sm_clock_hz": 1.965e9})
    assert b200["flops_per_s"]["fp64"] == pytest.approx(b200["flops_per_s"]["fp32"] / 2)  # a full-rate FP64 part
    unknown = gpus.theoretical({"compute_capability": [10, 3], "sm_count": 148, "max_sm_clock_hz": 2e9})
    assert unknown["flops_per_s"]["fp32"] is None and "compute capability 10.3 not in the table" in unknown["source"]


def test_a_gpus_memory_is_named_by_its_bus_width():
    assert gpus.memory_name(h100()) == "HBM"  # 5120 bits: five HBM3 stacks
    assert gpus.memory_name({"memory_bus_width_bits": 6144}) == "HBM"  # H200, GH200
    for gddr_bits in (128, 192, 384, 512):  # RTX 4060, L4, L40S and RTX 4090, RTX 5090
        assert gpus.memory_name({"memory_bus_width_bits": gddr_bits}) == "GDDR"
    assert gpus.memory_name({"memory_bus_width_bits": None}) == "DRAM"


def test_theoretical_without_sm_count_says_why():
    t = gpus.theoretical(h100(sm_count=None))
    assert t["flops_per_s"]["fp32"] is None and "not derivable" in t["source"]


def test_telemetry_summarises_and_flags_throttling():
    calm = gpus.Telemetry(FakeNVML(reasons=0x1), 0, interval_s=0.001)
    with calm:
        pass
    s = calm.summary()
    assert s["samples"] >= 2 and s["sm_clock_hz"]["median"] == 1755e6 and s["power_w"]["max"] == 350
    assert s["clocks_event_reasons"] == ["gpu idle"] and s["warnings"] == []
    hot = gpus.Telemetry(FakeNVML(reasons=0x4 | 0x40), 0, interval_s=0.001)
    with hot:
        pass
    assert hot.summary()["warnings"] == ["throttled while measuring: sw power cap, hw thermal slowdown"]


def test_no_gpu_here_is_a_reason_not_a_crash():
    found, reason = gpus.detect_gpus()
    if found:
        pytest.skip("this machine has a GPU")
    assert reason and ("NVML" in reason or "pynvml" in reason)


def test_every_clocks_event_reason_nvml_defines_is_named():
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    words = {}  # bit -> the words of pynvml's names for it (two generations of names: Throttle, Event)
    for n in dir(pynvml):
        if n.startswith(("nvmlClocksEventReason", "nvmlClocksThrottleReason")) and not n.endswith(("All", "None")):
            words.setdefault(getattr(pynvml, n), set()).add(n.split("Reason", 1)[1].lower())
    assert set(words) <= set(gpus.THROTTLE_NAMES), {hex(b): w for b, w in words.items() if b not in gpus.THROTTLE_NAMES}
    for bit, name in gpus.THROTTLE_NAMES.items():  # each name says what pynvml's constant says
        assert name.replace(" ", "") in words[bit], (name, words[bit])


def test_a_throttle_reason_this_table_does_not_know_is_reported():
    assert gpus.decode_reasons(0x200 | 0x1000) == ["board limit", "unknown reason 0x1000"]
    newer = gpus.Telemetry(FakeNVML(reasons=0x1 | 0x4000), 0, interval_s=0.001)
    with newer:
        pass
    assert newer.summary()["warnings"] == ["throttled while measuring: unknown reason 0x4000"]


def test_cuda_visible_devices_renumbers_and_selects_gpus_as_cuda_does():
    listed = [{"index": i, "name": "H100", "uuid": f"GPU-{i:08x}-5a5a"} for i in range(4)]
    pairs = lambda visible: [(g["index"], g["nvml_index"]) for g in gpus.visible_to_cuda(listed, visible)]  # noqa: E731
    assert pairs(None) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert pairs("2,0") == [(0, 2), (1, 0)]  # CUDA ordinal 0 is the third GPU NVML lists
    assert pairs("GPU-00000003") == [(0, 3)]  # a UUID prefix
    assert pairs("1,7,0") == [(0, 1)]  # CUDA stops at the first entry that names no GPU
    assert pairs("GPU-0000000") == []  # a prefix that names four GPUs names none
    assert pairs("") == pairs("-1") == pairs("MIG-1234") == [] and pairs("1,1") == [(0, 1)]


def test_a_cuda_visible_devices_that_hides_every_gpu_is_the_reason(monkeypatch):
    monkeypatch.setattr(gpus, "_nvml", lambda: FakeNVML(count=2))
    found, reason = gpus.detect_gpus(visible="")
    assert found == [] and "CUDA_VISIBLE_DEVICES=''" in reason and "2 GPUs" in reason
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    found, reason = gpus.detect_gpus()
    assert reason is None and [(g["index"], g["nvml_index"], g["uuid"]) for g in found] == [(0, 1, "GPU-00000001-5a5a")]


def test_a_cuda_pci_bus_id_finds_its_nvml_gpu_even_where_nvml_s_lookup_refuses_it():
    nvml = FakeNVML(count=3)
    assert gpus.pci_key("0000:1a:00.0") == gpus.pci_key("00000000:1A:00.0") == (0, 0x1A, 0, 0)
    assert gpus.nvml_handle(nvml, FakeNVML.pci_bus_id(2)) == 2

    def refuses(bus_id):
        raise nvml.NVMLError("Invalid Argument")  # a driver that wants its own padding
    nvml.nvmlDeviceGetHandleByPciBusId = refuses
    assert gpus.nvml_handle(nvml, FakeNVML.pci_bus_id(1)) == 1  # found among NVML's GPUs by their PCI ids
    with pytest.raises(Exception, match="NVML lists no GPU at PCI bus id 0000:30:00.0"):
        gpus.nvml_handle(nvml, "0000:30:00.0")
