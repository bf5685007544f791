"""The analytic model of the seed page: decode-attention FLOPs and bytes, intensity, roofline,
predicted time and regime, and the weight-read companion (per-token latency lower bound), with
weights counted from a preset's architecture where it gives one, else the page's 12*L*d^2.

Units are in the names: *_bytes, *_flops, *_per_s, *_s. Per layer and step, for batch B:
attention FLOPs 4*B*S*d (d = H*d_h), cache bytes 2*B*S*H_kv*d_h*s, where a sliding window W
replaces S by min(S, W) and GQA shrinks the cache by H_kv/H.
"""

import math
import os
from dataclasses import dataclass

from harness.errors import HarnessError, read_yaml, refuse_unknown_keys
from harness.profile_fields import is_count
from harness.shipped import shipped_folder

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int4": 0.5}
# int8/int4 caches carry one fp32 scale per token and kv head, for K and for V (per-token quantisation)
SCALE_BYTES = {"int8": 4, "int4": 4}
# int4 weights carry an fp16 scale and a 4-bit zero point per group of 128 (GPTQ's and AWQ's default
# group size): 2.5 bytes per 128 weights, 3.9% over the 0.5 bytes of the weights themselves; int8
# weights' per-channel scales (one per output row) are under 0.1% and left out
WEIGHT_GROUP_SIZE = 128
WEIGHT_GROUP_BYTES = {"int4": 2.5}
# the matmul dtypes a decode step's weight products can run in, per weight dtype: int4 weights are
# widened to 16 bits in the kernel (W4A16, as GPTQ's and AWQ's kernels do), int8 ones multiply as int8
MATMUL_DTYPES = {"fp32": ("fp32",), "fp16": ("fp16",), "bf16": ("bf16",), "int8": ("int8",), "int4": ("fp16", "bf16")}
SOFTMAX_FLOPS_PER_SCORE = 5  # max, subtract, exp, sum, divide: reported apart from the 4*S*d
PRESET_DIR = shipped_folder("profiles/models", "presets")


def check_dtype(dtype, what="cache"):
    """`dtype` if the model knows it, else an error naming `what` it was given for."""
    if dtype not in BYTES_PER_ELEMENT:
        raise HarnessError(f"unknown {what} dtype {dtype!r}: valid are {', '.join(BYTES_PER_ELEMENT)}")
    return dtype


def activation_bytes(dtype):
    """Bytes per element of q, the output and new k/v rows: 16-bit caches use 16-bit activations."""
    return 2 if dtype in ("fp16", "bf16") else 4


@dataclass(frozen=True)
class DecodeShape:
    """One decode step of attention: B sequences, H query heads, H_kv kv heads, cache length S."""

    seq_len: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    batch: int = 1
    layers: int = 1
    window: int | None = None

    def __post_init__(self):
        for name in ("seq_len", "heads", "kv_heads", "head_dim", "batch", "layers"):
            value = getattr(self, name)
            if not is_count(value):
                raise HarnessError(f"{name.replace('_', '-')} must be a positive whole number, got {value!r}")
        if self.window is not None and not is_count(self.window):
            raise HarnessError(f"window must be a positive whole number or none, got {self.window!r}")
        if self.heads % self.kv_heads:
            raise HarnessError(f"heads ({self.heads}) must be divisible by kv-heads ({self.kv_heads})")
        check_dtype(self.dtype)

    @property
    def group(self):
        return self.heads // self.kv_heads

    @property
    def effective_seq_len(self):
        return min(self.seq_len, self.window) if self.window else self.seq_len

    @property
    def d_model(self):
        return self.heads * self.head_dim


def attention_flops(shape):
    """4*B*L*S_eff*d: q.K^T and weights.V, a multiply and an add per element of each."""
    return 4 * shape.batch * shape.layers * shape.effective_seq_len * shape.d_model


def softmax_flops(shape):
    """About 5 FLOPs per score, B*L*H*S_eff scores (the page ignores them asymptotically)."""
    return SOFTMAX_FLOPS_PER_SCORE * shape.batch * shape.layers * shape.heads * shape.effective_seq_len


def cache_bytes(shape, include_scales=True):
    """K and V read once: 2*B*L*S_eff*H_kv*d_h*s, plus per-token scales for quantised caches."""
    rows = 2 * shape.batch * shape.layers * shape.effective_seq_len * shape.kv_heads
    total = rows * shape.head_dim * BYTES_PER_ELEMENT[shape.dtype]
    if include_scales:
        total += rows * SCALE_BYTES.get(shape.dtype, 0)
    return total


def small_bytes(shape):
    """q read and output written (H rows), new k and v written (H_kv rows each), per layer."""
    act = activation_bytes(shape.dtype)
    per_layer = 2 * shape.heads * shape.head_dim * act + 2 * shape.kv_heads * shape.head_dim * BYTES_PER_ELEMENT[shape.dtype]
    return shape.batch * shape.layers * per_layer


def decode_bytes(shape):
    return cache_bytes(shape) + small_bytes(shape)


def record_figures(shape):
    """The model's figures for one decode shape, as every decode record (CPU or GPU) stores them."""
    flops, nbytes = attention_flops(shape), decode_bytes(shape)
    return {"flops": flops, "softmax_flops": softmax_flops(shape), "bytes": nbytes,
            "cache_bytes": cache_bytes(shape), "intensity": intensity(flops, nbytes)}


def intensity(flops, nbytes):
    """FLOP per byte."""
    return flops / nbytes


def mha_intensity(dtype):
    """Decode attention's FLOP per cache byte with one KV head per query head: 4*S*d / (2*S*d*s) = 2/s
    (0.5 fp32, 1 fp16/bf16, 2 int8; scales left out). A GQA group of g multiplies it by g."""
    return 2 / BYTES_PER_ELEMENT[check_dtype(dtype)]


def compute_bound_group(balance_flop_per_byte, dtype):
    """The smallest GQA group (query heads per KV head) at which decode attention on a `dtype` cache
    passes the balance and turns compute-bound."""
    return math.floor(balance_flop_per_byte / mha_intensity(dtype)) + 1


def machine_balance(peak_flops_per_s, bandwidth_bytes_per_s):
    """The ridge point of the roofline, FLOP per byte."""
    return peak_flops_per_s / bandwidth_bytes_per_s


def attainable_flops_per_s(intensity_flop_per_byte, peak_flops_per_s, bandwidth_bytes_per_s):
    """The roofline: min(pi, I * beta)."""
    return min(peak_flops_per_s, intensity_flop_per_byte * bandwidth_bytes_per_s)


def fraction_of_peak(intensity_flop_per_byte, peak_flops_per_s, bandwidth_bytes_per_s):
    return attainable_flops_per_s(intensity_flop_per_byte, peak_flops_per_s, bandwidth_bytes_per_s) / peak_flops_per_s


def predicted_time_s(flops, nbytes, peak_flops_per_s, bandwidth_bytes_per_s):
    """max(FLOPs / pi, bytes / beta)."""
    return max(flops / peak_flops_per_s, nbytes / bandwidth_bytes_per_s)


def regime(flops, nbytes, peak_flops_per_s, bandwidth_bytes_per_s):
    memory_s, compute_s = nbytes / bandwidth_bytes_per_s, flops / peak_flops_per_s
    return "memory-bound" if memory_s >= compute_s else "compute-bound"


def seed_weight_params(layers, d_model):
    """The seed page's 12*L*d^2: QKV (3d^2), FFN (8d^2) and output projection (d^2) per layer."""
    return 12 * layers * d_model ** 2


def bytes_per_weight(dtype):
    """s of a weight: its element, and for int4 its share of its group's scale and zero point."""
    return BYTES_PER_ELEMENT[check_dtype(dtype, "weight")] + WEIGHT_GROUP_BYTES.get(dtype, 0) / WEIGHT_GROUP_SIZE


def weight_bytes(params, dtype):
    """Weight bytes read once per step: every matrix a decode step multiplies by, at s bytes each."""
    return params * bytes_per_weight(dtype)


def weight_flops(params, batch):
    """2*B FLOPs per weight read (a multiply and an add per sequence): 24*L*B*d^2 on the seed's count."""
    return 2 * batch * params


def weight_intensity(batch, dtype):
    """2*B/s FLOP per weight byte: batching shares one weight read among B sequences."""
    return 2 * batch / bytes_per_weight(dtype)


def crossover_batch(balance_flop_per_byte, dtype):
    """The batch at which the FFN's weight intensity 2B/s reaches the machine's balance."""
    return balance_flop_per_byte * bytes_per_weight(dtype) / 2


@dataclass(frozen=True)
class ModelPreset:
    name: str
    layers: int
    d_model: int
    heads: int
    kv_heads: int
    head_dim: int
    window: int | None
    source: str
    ffn_dim: int | None = None
    ffn_matrices: int = 2
    vocab: int | None = None
    context_tokens: int | None = None  # the context length the model was trained for

    @property
    def weight_params(self):
        """Weights one decode step reads: per layer the q, k, v, o projections (k and v shrunk by GQA)
        and the FFN's matrices (three for a gated FFN such as SwiGLU), then the LM head; norm vectors
        (<0.01%), biases and the embedding rows looked up are left out. Without ffn_dim: the seed's
        12*L*d^2."""
        if self.ffn_dim is None:
            return seed_weight_params(self.layers, self.d_model)
        d, inner, kv = self.d_model, self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = 2 * d * inner + 2 * d * kv + self.ffn_matrices * d * self.ffn_dim
        return self.layers * per_layer + (self.vocab or 0) * d

    def shape(self, seq_len, dtype, batch=1):
        return DecodeShape(seq_len=seq_len, heads=self.heads, kv_heads=self.kv_heads, head_dim=self.head_dim,
                           dtype=dtype, batch=batch, layers=self.layers, window=self.window)


# Hugging Face architectures whose config.json keys map onto a preset: decoder-only, dense, a gated
# FFN (gate, up and down projections) of intermediate_size, one LM head of vocab_size rows
HF_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
HF_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
HF_OPTIONAL_KEYS = ("num_key_value_heads", "head_dim", "sliding_window", "max_position_embeddings")
# a preset YAML's keys (profiles/models/)
PRESET_COUNTS = ("layers", "d_model", "heads")  # required positive whole numbers
PRESET_OPTIONAL_COUNTS = ("kv_heads", "head_dim", "ffn_dim", "vocab", "context_tokens", "window")  # or null
PRESET_KEYS = {"name", "source", "ffn_matrices", *PRESET_COUNTS, *PRESET_OPTIONAL_COUNTS}


def preset_names():
    return sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".yaml")) if os.path.isdir(PRESET_DIR) else []


def hf_config_preset_doc(doc, path):
    """A Hugging Face config.json (one of HF_ARCHITECTURES) as a preset mapping."""
    archs = doc.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise HarnessError(f"model config {path} is malformed: architectures must be a list of names, got {archs!r}")
    if not set(archs) & set(HF_ARCHITECTURES):
        raise HarnessError(f"model config {path}: architecture {', '.join(archs) or '(none named)'} is not modelled: "
                           f"valid are {', '.join(HF_ARCHITECTURES)} (or write a preset YAML: see profiles/models/)")
    missing = [k for k in HF_KEYS if doc.get(k) is None]
    if missing:
        raise HarnessError(f"model config {path} is malformed: missing {', '.join(missing)}")
    for key in HF_KEYS + HF_OPTIONAL_KEYS:
        if doc.get(key) is not None and not is_count(doc[key]):
            raise HarnessError(f"model config {path} is malformed: {key} must be a positive whole number, got {doc[key]!r}")
    stem = os.path.splitext(os.path.basename(path))[0]
    name = doc.get("_name_or_path") or (os.path.basename(os.path.dirname(os.path.abspath(path))) if stem == "config" else stem)
    # Qwen's configs name a window they do not use (use_sliding_window: false)
    window = doc.get("sliding_window") if doc.get("use_sliding_window", True) else None
    return {"name": name, "layers": doc["num_hidden_layers"], "d_model": doc["hidden_size"],
            "heads": doc["num_attention_heads"], "kv_heads": doc.get("num_key_value_heads") or doc["num_attention_heads"],
            "head_dim": doc.get("head_dim"), "ffn_dim": doc["intermediate_size"], "ffn_matrices": 3,
            "vocab": doc["vocab_size"], "window": window, "context_tokens": doc.get("max_position_embeddings"),
            "source": f"Hugging Face config {path} ({archs[0]})"}


def load_preset(name_or_path):
    """A model preset by name (profiles/models/NAME.yaml), by path to a preset YAML, or a Hugging Face
    config.json (see HF_ARCHITECTURES); clear error if bad."""
    path = (name_or_path if name_or_path.endswith((".yaml", ".yml", ".json"))
            else os.path.join(PRESET_DIR, f"{name_or_path}.yaml"))
    if not os.path.exists(path):
        raise HarnessError(f"unknown model preset {name_or_path!r}: valid presets are {', '.join(preset_names())} "
                           "(or a path to a preset YAML or a Hugging Face config.json)")
    doc = read_yaml(path, "model preset")  # JSON is YAML too
    if not isinstance(doc, dict):
        raise HarnessError(f"model preset {path} is malformed: expected a mapping")
    if path.endswith(".json"):
        doc = hf_config_preset_doc(doc, path)
    # a misspelt kv_heads would silently give multi-head attention
    refuse_unknown_keys(doc, PRESET_KEYS, f"model preset {path} is malformed")
    return preset_from_doc(doc, path)


def preset_from_doc(doc, path):
    """A ModelPreset from a preset mapping, every field type-checked: one error naming the file and field."""
    def malformed(message):
        return HarnessError(f"model preset {path} is malformed: {message}")

    missing = [k for k in ("name", *PRESET_COUNTS, "source") if k not in doc]
    if doc.get("ffn_dim") is None and ("ffn_matrices" in doc or doc.get("vocab") is not None):
        missing.append("ffn_dim (ffn_matrices and vocab describe the architecture only beside it)")
    if missing:
        raise malformed(f"missing {', '.join(missing)}")
    for key in ("name", "source"):
        if not isinstance(doc[key], str) or not doc[key].strip():
            raise malformed(f"{key} must be text, got {doc[key]!r}")
    for key in PRESET_COUNTS + PRESET_OPTIONAL_COUNTS:
        value = doc.get(key)
        if not (is_count(value) or (value is None and key in PRESET_OPTIONAL_COUNTS)):
            optional = " or null" if key in PRESET_OPTIONAL_COUNTS else ""
            raise malformed(f"{key} must be a positive whole number{optional}, got {value!r}")
    ffn_matrices = doc.get("ffn_matrices", 2)
    if isinstance(ffn_matrices, bool) or ffn_matrices not in (2, 3):
        raise malformed(f"ffn_matrices must be 2 (up, down) or 3 (gated: gate, up, down), got {ffn_matrices!r}")
    heads, d_model = doc["heads"], doc["d_model"]
    if doc.get("head_dim") is None and d_model % heads:
        raise malformed(f"d_model {d_model} is not a multiple of heads (give head_dim)")
    preset = ModelPreset(name=doc["name"], layers=doc["layers"], d_model=d_model, heads=heads,
                         kv_heads=doc.get("kv_heads") or heads, head_dim=doc.get("head_dim") or d_model // heads,
                         window=doc.get("window"), source=doc["source"], ffn_dim=doc.get("ffn_dim"),
                         ffn_matrices=ffn_matrices, vocab=doc.get("vocab"), context_tokens=doc.get("context_tokens"))
    try:
        preset.shape(1, "fp16")  # heads divisible by kv_heads
    except HarnessError as e:
        raise malformed(str(e)) from None
    return preset


def decode_step(preset, dtype, batch, seq_len, bandwidth_bytes_per_s, peak_flops_per_s, cache_dtype=None,
                memory_bytes=None):
    """Predicted per-token decode on a machine: weights (in `dtype`) and cache (in `cache_dtype`,
    by default the weights'), time, regime, crossover, and whether both fit in the device's
    `memory_bytes` where it is known."""
    cache_dtype = cache_dtype or dtype
    shape = preset.shape(seq_len, cache_dtype, batch)
    params = preset.weight_params
    w_bytes = weight_bytes(params, dtype)
    c_bytes = cache_bytes(shape)
    attn_flops = attention_flops(shape)
    flops = attn_flops + weight_flops(params, batch)
    total_bytes = w_bytes + c_bytes
    balance = machine_balance(peak_flops_per_s, bandwidth_bytes_per_s)
    time_s = predicted_time_s(flops, total_bytes, peak_flops_per_s, bandwidth_bytes_per_s)
    return {
        "model": preset.name, "weight_dtype": dtype, "cache_dtype": cache_dtype, "batch": batch, "seq_len": seq_len,
        "layers": preset.layers, "d_model": preset.d_model, "heads": preset.heads, "kv_heads": preset.kv_heads,
        "window": preset.window, "context_tokens": preset.context_tokens,
        "weight_bytes": w_bytes, "weights_counted": "architecture" if preset.ffn_dim else "seed 12*L*d^2",
        "seed_weight_bytes": weight_bytes(seed_weight_params(preset.layers, preset.d_model), dtype),
        "cache_bytes": c_bytes, "bytes": total_bytes,
        "flops": flops, "attention_flops": attn_flops, "intensity": intensity(flops, total_bytes),
        "attention_intensity": intensity(attn_flops, c_bytes),
        "weight_intensity": weight_intensity(batch, dtype),
        "bandwidth_bytes_per_s": bandwidth_bytes_per_s, "peak_flops_per_s": peak_flops_per_s,
        "balance": balance,
        "weights_time_s": w_bytes / bandwidth_bytes_per_s, "cache_time_s": c_bytes / bandwidth_bytes_per_s,
        "compute_time_s": flops / peak_flops_per_s,
        "predicted_time_s": time_s, "tokens_per_s": batch / time_s,
        "regime": regime(flops, total_bytes, peak_flops_per_s, bandwidth_bytes_per_s),
        "crossover_batch": crossover_batch(balance, dtype),
        "memory_bytes": memory_bytes,
        "fits_in_memory": None if memory_bytes is None else w_bytes + c_bytes <= memory_bytes,
        "source": preset.source,
    }
