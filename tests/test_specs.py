"""Datasheet specs: sourced numbers, dense and sparse apart, matching and flags."""

import pytest

from harness import specs
from harness.errors import HarnessError

REQUIRED = ("A100-SXM4-80GB", "H100 80GB HBM3", "H100 PCIe", "H200", "NVIDIA L4", "RTX 4090", "i5-8250U")


def test_every_required_spec_is_there_with_sources():
    loaded = specs.load_specs()
    for name in REQUIRED:
        assert specs.match_spec(name, loaded), name
    for spec in loaded:
        assert spec["bandwidth_bytes_per_s"]["source"]
        for group in ("flops_per_s", "sparse_flops_per_s"):
            for rate in spec[group].values():
                assert rate["value"] > 0 and rate["source"].strip()


def test_sparse_rates_are_kept_apart_and_double_the_dense_ones():
    for spec in specs.load_specs():
        for dtype, sparse in spec["sparse_flops_per_s"].items():
            assert sparse["value"] == pytest.approx(2 * spec["flops_per_s"][dtype]["value"], rel=0.01), (spec["name"], dtype)


@pytest.mark.parametrize("nvml_name,spec_name", [
    ("NVIDIA L40S", "NVIDIA L40S"),  # not the L4: "NVIDIA L4" is in its name, not as a word
    ("NVIDIA L4", "NVIDIA L4"),
    ("NVIDIA GH200 480GB", "NVIDIA GH200 (96 GB HBM3)"),  # not the H200: 4.0 TB/s, not 4.8
    ("NVIDIA GH200 144G HBM3e", "NVIDIA GH200 (144 GB HBM3e)"),
    ("NVIDIA H200", "NVIDIA H200 (SXM)"),
    ("NVIDIA H200 NVL", "NVIDIA H200 NVL"),  # the longer pattern wins: 60 TFLOP/s fp32, not 67
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3 (SXM5)"),
    ("NVIDIA H100 NVL", None),  # no spec for it: none, rather than another H100's
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"),
])
def test_gpus_match_their_own_spec_and_no_other(nvml_name, spec_name):
    spec = specs.match_spec(nvml_name, [s for s in specs.load_specs() if s["kind"] == "gpu"])
    assert (spec and spec["name"]) == spec_name


def test_h100_dense_bf16_is_not_the_sparse_figure():
    h100 = specs.match_spec("NVIDIA H100 80GB HBM3", specs.load_specs())
    assert h100["flops_per_s"]["bf16_tensor"]["value"] == pytest.approx(989.4e12)
    assert h100["bandwidth_bytes_per_s"]["value"] == pytest.approx(3.35e12)  # not 3.07


def test_flags():
    assert specs.spec_flag(3.4e12, 3.35e12) == "above its spec"
    assert specs.spec_flag(1.0e12, 3.35e12) == "under half its spec"
    assert specs.spec_flag(3.0e12, 3.35e12) is None
    assert specs.spec_flag(None, 1.0) is None


@pytest.mark.parametrize("text,needle", [
    ("name: x\nkind: tpu\n", "kind"),
    ("name: x\nkind: gpu\nmatch: [x]\nbandwidth_bytes_per_s: {value: 1.0}\n", "needs a positive, finite value and a source"),
    ("name: x\nkind: gpu\nmatch: [x]\nbandwidth_bytes_per_s: {value: .inf, source: s}\n", "bandwidth_bytes_per_s needs a positive, finite"),
    ("name: x\nkind: gpu\nmatch: [x]\nbandwidth_bytes_per_s: {value: true, source: s}\n", "bandwidth_bytes_per_s needs a positive, finite"),
    ("name: x\nkind: gpu\nmatch: [3]\nbandwidth_bytes_per_s: {value: 1.0, source: s}\n", "a list of names to match"),
    ("name: x\nkind: gpu\nmatch: [x]\nbandwidth_bytes_per_s: {value: 1.0, source: s}\nflops_per_s: {fp32: 5}\n",
     "flops_per_s.fp32"),
    ("name: x\nkind: gpu\nmatch: [x]\nbandwidth_bytes_per_s: {value: 1.0, source: s}\n"
     "flops_per_s: {bf16_tensr: {value: 1.0, source: s}}\n", "flops_per_s.bf16_tensr is not a rate the harness reads"),
    ("name: x\nkind: gpu\nmatch: [x]\nbandwith_bytes_per_s: {value: 1.0, source: s}\n",
     "unknown key 'bandwith_bytes_per_s'"),
    ("name: x\nkind: gpu\nmatch: [x]\nmemory_bytes: 80 GB\n", "memory_bytes must be a positive number"),
])
def test_malformed_specs_are_rejected(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(HarnessError, match=needle):
        specs.load_spec(str(p))
