"""The analytic model reproduces the seed page's figures and drill problems."""

import json

import pytest

from conftest import hf_config
from harness import model
from harness.errors import HarnessError
from harness.summary import model_lines

A100 = {"peak": 312e12, "bw": 2e12}
H100 = {"peak": 989e12, "bw": 3.35e12}
I5 = {"peak": 200e9, "bw": 20e9}


@pytest.mark.parametrize("dtype,expected", [("fp32", 0.5), ("fp16", 1.0), ("bf16", 1.0), ("int8", 2.0), ("int4", 4.0)])
@pytest.mark.parametrize("seq_len,layers,heads,head_dim", [(1, 1, 1, 64), (4096, 32, 32, 128), (777, 7, 12, 80)])
def test_decode_intensity_is_set_by_the_cache_dtype_alone(dtype, expected, seq_len, layers, heads, head_dim):
    shape = model.DecodeShape(seq_len=seq_len, heads=heads, kv_heads=heads, head_dim=head_dim, dtype=dtype, layers=layers)
    got = model.intensity(model.attention_flops(shape), model.cache_bytes(shape, include_scales=False))
    assert got == pytest.approx(expected)


def test_flops_and_bytes_formulas():
    s = model.DecodeShape(seq_len=1000, heads=32, kv_heads=32, head_dim=128, dtype="fp16", layers=2, batch=3)
    assert model.attention_flops(s) == 4 * 3 * 2 * 1000 * 4096
    assert model.cache_bytes(s) == 2 * 3 * 2 * 1000 * 4096 * 2
    assert model.softmax_flops(s) == 5 * 3 * 2 * 32 * 1000
    assert model.small_bytes(s) == 3 * 2 * (2 * 32 * 128 * 2 + 2 * 32 * 128 * 2)
    assert model.decode_bytes(s) == model.cache_bytes(s) + model.small_bytes(s)


def test_gqa_window_batch_and_scales():
    mha = model.DecodeShape(seq_len=8192, heads=32, kv_heads=32, head_dim=128, dtype="fp16")
    gqa = model.DecodeShape(seq_len=8192, heads=32, kv_heads=8, head_dim=128, dtype="fp16")
    assert model.cache_bytes(gqa) == model.cache_bytes(mha) * 8 / 32
    assert model.attention_flops(gqa) == model.attention_flops(mha)  # every query head still attends
    win = model.DecodeShape(seq_len=8192, heads=32, kv_heads=8, head_dim=128, dtype="fp16", window=4096)
    assert model.cache_bytes(win) == model.cache_bytes(gqa) / 2
    short = model.DecodeShape(seq_len=1000, heads=32, kv_heads=8, head_dim=128, dtype="fp16", window=4096)
    assert short.effective_seq_len == 1000
    b8 = model.DecodeShape(seq_len=8192, heads=32, kv_heads=32, head_dim=128, dtype="fp16", batch=8)
    assert model.cache_bytes(b8) == 8 * model.cache_bytes(mha)
    assert model.intensity(model.attention_flops(b8), model.cache_bytes(b8)) == pytest.approx(1.0)  # batching does not help
    i8 = model.DecodeShape(seq_len=10, heads=1, kv_heads=1, head_dim=128, dtype="int8")
    assert model.cache_bytes(i8) == 2 * 10 * (128 + 4)


def test_llama2_7b_weight_read_and_a100_latency():
    w = model.weight_bytes(model.seed_weight_params(32, 4096), "fp16")
    assert w == 12 * 32 * 4096 ** 2 * 2 and w == pytest.approx(12.9e9, rel=0.01)
    assert w / A100["bw"] == pytest.approx(6.5e-3, rel=0.01)
    assert model.weight_flops(model.seed_weight_params(32, 4096), 8) == 24 * 32 * 8 * 4096 ** 2  # the page's 24*L*B*d^2


# parameter counts as published (Hugging Face config.json models); the decode step reads all but the
# embedding table (one row per token) and the norm vectors (2 per layer and a final one)
PUBLISHED_PARAMS = {"llama-2-7b": 6_738_415_616, "llama-3-8b": 8_030_261_248, "mistral-7b": 7_241_732_096}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_preset_weights_add_up_to_the_published_parameter_count(name):
    p = model.load_preset(name)
    embedding, norms = p.vocab * p.d_model, (2 * p.layers + 1) * p.d_model
    assert p.weight_params + embedding + norms == PUBLISHED_PARAMS[name]


def test_weights_fall_back_to_the_seed_count_without_an_ffn_dim(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("name: m\nlayers: 2\nd_model: 64\nheads: 4\nkv_heads: 2\nsource: s\n")
    p = model.load_preset(str(f))
    assert p.weight_params == 12 * 2 * 64 ** 2
    step = model.decode_step(p, "fp16", 1, 8, 1e9, 1e12)
    assert step["weights_counted"] == "seed 12*L*d^2" and step["weight_bytes"] == step["seed_weight_bytes"]
    # with the architecture: q and o 64x64, k and v 64x32 (GQA), a 2-matrix FFN 64x256, a 100-word head
    f.write_text("name: m\nlayers: 2\nd_model: 64\nheads: 4\nkv_heads: 2\nffn_dim: 256\nffn_matrices: 2\n"
                 "vocab: 100\nsource: s\n")
    p = model.load_preset(str(f))
    assert p.weight_params == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 2 * 64 * 256) + 100 * 64
    step = model.decode_step(p, "int8", 3, 8, 1e9, 1e12)
    assert step["weights_counted"] == "architecture" and step["weight_bytes"] == p.weight_params
    assert step["flops"] == 2 * 3 * p.weight_params + step["attention_flops"]


def test_machine_balances():
    assert model.machine_balance(A100["peak"], A100["bw"]) == pytest.approx(156)
    assert model.machine_balance(H100["peak"], H100["bw"]) == pytest.approx(295, rel=0.01)
    assert model.machine_balance(I5["peak"], I5["bw"]) == pytest.approx(10)


def test_drill_i5_8250u_attainable_decode():
    assert model.attainable_flops_per_s(0.5, I5["peak"], I5["bw"]) == pytest.approx(10e9)
    assert model.attainable_flops_per_s(1.0, I5["peak"], I5["bw"]) == pytest.approx(20e9)
    assert model.fraction_of_peak(0.5, I5["peak"], I5["bw"]) == pytest.approx(0.05)  # "maybe 5% of peak"


def test_drill_h100_fp16_decode_fraction_of_peak():
    frac = model.fraction_of_peak(1.0, H100["peak"], H100["bw"])
    assert frac == pytest.approx(3.35 / 989)
    assert 0.003 <= frac <= 0.01  # "0.3-1% of peak"


def test_predicted_time_and_regime():
    assert model.predicted_time_s(1e9, 1e9, 1e12, 1e10) == pytest.approx(0.1)
    assert model.regime(1e9, 1e9, 1e12, 1e10) == "memory-bound"
    assert model.regime(1e12, 1e6, 1e12, 1e10) == "compute-bound"


def test_weight_intensity_and_crossover():
    assert model.weight_intensity(16, "fp16") == 16 and model.weight_intensity(64, "fp16") == 64
    assert model.crossover_batch(295, "fp16") == pytest.approx(295)
    assert model.weight_intensity(model.crossover_batch(156, "fp16"), "fp16") == pytest.approx(156)


def test_int4_weights_carry_their_groups_scale_and_zero_point():
    """GPTQ/AWQ int4: an fp16 scale and a 4-bit zero per 128 weights, 0.5195 bytes a weight, where
    0.5 undercounted Llama-2-7B's weights by 3.9%; int8 and 16-bit weights are their elements."""
    assert model.bytes_per_weight("int4") == pytest.approx(0.5 + 2.5 / 128)
    assert [model.bytes_per_weight(d) for d in ("fp32", "fp16", "bf16", "int8")] == [4, 2, 2, 1]
    preset = model.load_preset("llama-2-7b")
    step = model.decode_step(preset, "int4", 1, 4096, 1e12, 1e14)
    assert step["weight_bytes"] == pytest.approx(preset.weight_params * 0.51953125)
    assert step["weight_bytes"] / (preset.weight_params * 0.5) - 1 == pytest.approx(0.039, abs=0.001)
    assert model.weight_intensity(1, "int4") == pytest.approx(2 / 0.51953125)
    assert model.weight_intensity(model.crossover_batch(100, "int4"), "int4") == pytest.approx(100)


def test_weights_and_cache_take_their_own_dtypes():
    """int4 weights beside an fp16 cache (AWQ, GPTQ serving), or fp16 weights beside an int8 cache:
    each side's bytes from its own dtype, the FFN's crossover from the weights', the attention's
    intensity from the cache's."""
    preset = model.load_preset("llama-3-8b")
    mixed = model.decode_step(preset, "int4", 1, 4096, 1e12, 1e14, cache_dtype="fp16")
    int4, fp16 = (model.decode_step(preset, d, 1, 4096, 1e12, 1e14) for d in ("int4", "fp16"))
    assert (mixed["weight_dtype"], mixed["cache_dtype"]) == ("int4", "fp16")
    assert mixed["weight_bytes"] == int4["weight_bytes"] and mixed["cache_bytes"] == fp16["cache_bytes"]
    assert mixed["crossover_batch"] == int4["crossover_batch"]
    assert mixed["attention_intensity"] == fp16["attention_intensity"]
    assert (fp16["weight_dtype"], fp16["cache_dtype"]) == ("fp16", "fp16")  # one dtype for both by default
    assert model.MATMUL_DTYPES["int4"] == ("fp16", "bf16") and set(model.MATMUL_DTYPES) == set(model.BYTES_PER_ELEMENT)
    with pytest.raises(HarnessError, match="unknown weight dtype 'fp8'"):
        model.bytes_per_weight("fp8")


def test_gqa_multiplies_attention_intensity_and_sets_where_it_turns_compute_bound():
    assert [model.mha_intensity(d) for d in ("fp32", "fp16", "bf16", "int8")] == [0.5, 1, 1, 2]
    shape = model.DecodeShape(seq_len=4096, heads=32, kv_heads=4, head_dim=128, dtype="fp16")  # group 8
    no_scales = model.attention_flops(shape) / model.cache_bytes(shape, include_scales=False)
    assert no_scales == pytest.approx(8 * model.mha_intensity("fp16"))
    assert model.compute_bound_group(12.1, "fp16") == 13 and model.compute_bound_group(12.0, "fp16") == 13
    assert model.compute_bound_group(1.5, "int8") == 1  # MHA itself is past the ridge


def test_a_step_whose_weights_and_cache_exceed_the_memory_says_so():
    preset = model.load_preset("llama-3-8b")
    small = model.decode_step(preset, "fp16", 1, 4096, 1e12, 1e14, memory_bytes=80e9)
    big = model.decode_step(preset, "fp16", 64, 8192, 1e12, 1e14, memory_bytes=80e9)
    assert small["fits_in_memory"] is True and big["fits_in_memory"] is False
    assert big["weight_bytes"] + big["cache_bytes"] > 80e9
    assert model.decode_step(preset, "fp16", 64, 8192, 1e12, 1e14)["fits_in_memory"] is None  # memory unknown
    lines = model_lines(dict(big, machine="m"))
    assert lines[-1] == ("  note: weights and KV cache (83.7 GB) exceed the device's 80.0 GB of memory: this batch and "
                         "length cannot be held on it at once")
    assert not any("exceed" in line for line in model_lines(dict(small, machine="m")))


@pytest.mark.parametrize("name,kv_heads,window,context", [("llama-2-7b", 32, None, 4096), ("llama-3-8b", 8, None, 8192),
                                                          ("mistral-7b", 8, 4096, 8192)])
def test_presets_load_with_sources(name, kv_heads, window, context):
    p = model.load_preset(name)
    assert (p.layers, p.d_model, p.heads, p.kv_heads, p.window) == (32, 4096, 32, kv_heads, window)
    assert p.head_dim == 128 and p.source and p.context_tokens == context


def test_a_seq_len_beyond_the_trained_context_is_noted_not_refused():
    preset = model.load_preset("llama-2-7b")
    within = model.decode_step(preset, "fp16", 1, 4096, A100["bw"], A100["peak"])
    beyond = model.decode_step(preset, "fp16", 1, 4097, A100["bw"], A100["peak"])
    assert within["context_tokens"] == beyond["context_tokens"] == 4096
    assert not any("note:" in line for line in model_lines(dict(within, machine="m")))
    assert "seq_len 4097 is beyond llama-2-7b's 4096-token context" in model_lines(dict(beyond, machine="m"))[-1]
    assert beyond["cache_bytes"] == 2 * 32 * 4097 * 4096 * 2  # still the arithmetic


def test_decode_step_on_a100_for_llama2():
    step = model.decode_step(model.load_preset("llama-2-7b"), "fp16", 1, 4096, A100["bw"], A100["peak"])
    assert step["regime"] == "memory-bound"
    assert step["cache_bytes"] == 2 * 32 * 4096 * 4096 * 2
    assert step["predicted_time_s"] == pytest.approx((step["weight_bytes"] + step["cache_bytes"]) / A100["bw"])
    assert step["crossover_batch"] == pytest.approx(156)
    assert step["tokens_per_s"] == pytest.approx(1 / step["predicted_time_s"])
    batch8 = model.decode_step(model.load_preset("llama-2-7b"), "fp16", 8, 4096, A100["bw"], A100["peak"])
    assert batch8["tokens_per_s"] == pytest.approx(8 / batch8["predicted_time_s"])


def test_a_hugging_face_config_reads_as_its_preset(tmp_path):
    folder = tmp_path / "Meta-Llama-3-8B"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(hf_config("llama-3-8b")))
    p = model.load_preset(str(folder / "config.json"))
    ref = model.load_preset("llama-3-8b")
    assert p.name == "Meta-Llama-3-8B" and "LlamaForCausalLM" in p.source
    assert (p.layers, p.d_model, p.heads, p.kv_heads, p.head_dim, p.window, p.weight_params) == \
        (ref.layers, ref.d_model, ref.heads, ref.kv_heads, ref.head_dim, ref.window, ref.weight_params)


def test_a_config_head_dim_and_unused_window_are_honoured(tmp_path):
    f = tmp_path / "qwen3.json"
    f.write_text(json.dumps(hf_config("qwen3-0.6b")))
    p = model.load_preset(str(f))
    assert p.head_dim == 128 and p.head_dim != p.d_model // p.heads and p.window is None
    non_embedding = p.weight_params - p.vocab * p.d_model  # the tied LM head is read each step all the same
    assert non_embedding == pytest.approx(0.44e9, rel=0.01)  # Qwen3-0.6B's published non-embedding count
    assert model.cache_bytes(p.shape(1000, "fp16")) == 2 * 28 * 1000 * 8 * 128 * 2


@pytest.mark.parametrize("change,needle", [
    ({"architectures": ["MixtralForCausalLM"]}, "MixtralForCausalLM is not modelled: valid are LlamaForCausalLM"),
    ({"architectures": []}, r"\(none named\) is not modelled"),
    ({"intermediate_size": None}, "missing intermediate_size"),
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive whole number, got 0"),
    ({"architectures": "LlamaForCausalLM"}, "architectures must be a list of names"),
    ({"num_hidden_layers": 32.5}, "num_hidden_layers must be a positive whole number, got 32.5"),
    ({"max_position_embeddings": "8k"}, "max_position_embeddings must be a positive whole number, got '8k'"),
    ({"num_key_value_heads": 5}, "heads \\(32\\) must be divisible by kv-heads \\(5\\)"),
])
def test_bad_hugging_face_configs(tmp_path, change, needle):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({**hf_config("llama-3-8b"), **change}))
    with pytest.raises(HarnessError, match=needle):
        model.load_preset(str(f))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(heads=32, kv_heads=5), "divisible"),
    (dict(seq_len=0), "seq-len must be a positive"),
    (dict(head_dim=-1), "head-dim"),
    (dict(dtype="fp8"), "unknown cache dtype 'fp8': valid are fp32, fp16, bf16, int8, int4"),
])
def test_bad_shapes(kwargs, needle):
    args = dict(seq_len=10, heads=4, kv_heads=4, head_dim=8, dtype="fp32")
    args.update(kwargs)
    with pytest.raises(HarnessError, match=needle):
        model.DecodeShape(**args)


def test_bad_presets(tmp_path):
    with pytest.raises(HarnessError, match="valid presets are llama-2-7b"):
        model.load_preset("gpt-5")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlayers: 2\n")
    with pytest.raises(HarnessError, match="missing d_model"):
        model.load_preset(str(bad))
    bad.write_text("name: x\nlayers: 2\nd_model: 100\nheads: 3\nsource: s\n")
    with pytest.raises(HarnessError, match="not a multiple"):
        model.load_preset(str(bad))
    for extra, needle in (("ffn_dim: 256\nffn_matrices: 4\n", "ffn_matrices must be 2"),
                          ("ffn_dim: 0\n", "ffn_dim must be a positive"), ("vocab: 100\n", "missing ffn_dim"),
                          ("context_tokens: 0\n", "context_tokens must be a positive whole number or null, got 0"),
                          ("context_tokens: long\n", "got 'long'"), ("layers: 2.5\n", "layers must be a positive"),
                          ("heads: true\n", "heads must be a positive whole number, got True"),
                          ("kv_heads: '4'\n", "got '4'"), ("window: 0\n", "window must be"),
                          ("name: [x]\n", "name must be text"), ("ffn_dim: 256\nffn_matrices: true\n", "got True"),
                          ("ffn_dim: null\nvocab: 100\n", "missing ffn_dim"),
                          ("kv_head: 1\n", "unknown key 'kv_head': valid keys are context_tokens, d_model"),
                          ("ffn_dim: wide\n", "malformed")):
        bad.write_text("name: x\nlayers: 2\nd_model: 64\nheads: 4\nsource: s\n" + extra)
        with pytest.raises(HarnessError, match=needle):
            model.load_preset(str(bad))
    bad.write_text("name: [x\n")
    with pytest.raises(HarnessError, match="cannot be read"):
        model.load_preset(str(bad))


def test_the_compute_roof_is_the_fastest_measured_way_to_compute_on_the_data():
    from harness.validation import compute_roof

    def matmul(rate, validated=True):
        return {"flops_per_s": rate, "validated": validated}

    sec = {"peak_flops": {"fp32": {"flops_per_s": 480e9}}, "bandwidth": {"read": {"bytes_per_s": 43e9}},
           "tensor_flops": {"fp16": matmul(2.5e9), "bf16": matmul(800e9), "int8": matmul(9e12, validated=False)}}
    # torch's fp16 fallback on a CPU without fp16 arithmetic is no roof: widened to fp32 it runs at the FMA peak
    assert compute_roof(sec, ("fp16",)) == (480e9, "fp32 FMA peak")
    assert compute_roof(sec, ("bf16",)) == (800e9, "torch bf16 matmul peak")
    assert compute_roof(sec, ("int8",)) == (480e9, "fp32 FMA peak")  # a wrong product is no roof either
    assert compute_roof(sec, ("bf16", "fp16"), "tensor-core") == (800e9, "tensor-core bf16 matmul peak")
    assert compute_roof({}, ("fp16",))[0] is None
    # a GPU without torch: its half2 chains compute fp16 at twice the fp32 rate, and are its fp16 roof
    gpu = {"peak_flops": {"fp32": {"flops_per_s": 60e12}, "fp16": {"flops_per_s": 120e12}},
           "tensor_flops": {"reason": "torch is not installed"}}
    assert compute_roof(gpu, ("fp16",), "tensor-core") == (120e12, "fp16 FMA peak")
    assert compute_roof(gpu, ("bf16",), "tensor-core") == (60e12, "fp32 FMA peak")


def test_the_ffn_crossover_is_the_first_whole_batch_past_the_balance():
    from harness.summary import crossover_phrase

    assert crossover_phrase(11.2) == "turns compute-bound at batch >= 12"  # batch 11: 2 x 11 / 2 < 11.2
    assert crossover_phrase(156.0) == "turns compute-bound at batch >= 156"
    assert crossover_phrase(0.1) == "is compute-bound at every batch"
    assert crossover_phrase(float("inf")) == "stays memory-bound at every batch"  # a balance past float's range
