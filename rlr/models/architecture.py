"""`DecoderConfig`: the validated, hashable description of a decoder-only transformer.

One config covers the families rlr loads (Qwen2 / Qwen2.5, Qwen3, Llama 3.x, Mistral): they
share the pre-norm SwiGLU decoder with grouped-query attention and RoPE, and differ only in
the switches below (which projections carry a bias, RMSNorm on q and k, the RoPE frequency
rule, the sliding window). `from_hf` reads each family's config.json; `to_hf` writes it back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# model_type -> the HF class-name prefix (Qwen2ForCausalLM, LlamaForTokenClassification, ...)
FAMILIES = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama", "mistral": "Mistral"}
ROPE_TYPES = ("default", "llama3")
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
# The projections a low-rank adapter can sit in (HF's module names, as PEFT's target_modules)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1's RoPE frequency rule ("llama3"): long wavelengths divided by `factor`, short
    ones kept, and a smooth interpolation between the two bands."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int
    rope_type: str = "llama3"

    def __post_init__(self):
        if self.rope_type != "llama3":
            raise ValueError(f"RopeScaling.rope_type must be 'llama3'; got {self.rope_type!r}")
        if not self.factor > 0 or not self.high_freq_factor > self.low_freq_factor > 0:
            raise ValueError(
                "llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0; "
                f"got factor={self.factor}, low_freq_factor={self.low_freq_factor}, "
                f"high_freq_factor={self.high_freq_factor}"
            )
        if self.original_max_position_embeddings <= 0:
            raise ValueError(
                "llama3 rope scaling needs original_max_position_embeddings > 0; got "
                f"{self.original_max_position_embeddings}"
            )

    def to_hf(self) -> dict[str, Any]:
        """The rope_parameters entries (without rope_theta) of config.json."""
        return {"rope_type": self.rope_type, **{k: getattr(self, k) for k in _LLAMA3_KEYS}}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on the projections named in `targets` (LORA_TARGETS): a projection
    x @ W [In, Out] becomes x @ W + (alpha / rank) * (x @ A) @ B with A [In, r] and B [r, Out]
    (PEFT's LoRA; B starts at zero, so an adapted network starts equal to its base)."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank <= 0:
            raise ValueError(f"LoraConfig.rank must be a positive int; got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoraConfig.alpha must be > 0; got {self.alpha!r}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(
                f"LoraConfig.targets must be distinct names among {LORA_TARGETS}; "
                f"got {self.targets!r}"
            )

    @property
    def scaling(self) -> float:
        """alpha / rank, the factor on the adapter's output (PEFT's `scaling`)."""
        return self.alpha / self.rank


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Shape and numerics of a decoder (D = hidden_size, H = heads, Dh = head_dim).

    Frozen and hashable, so it can be a Flax module attribute and a jit static argument.
    Family switches: `attention_bias` (q/k/v projections), `attention_out_bias` (o
    projection), `mlp_bias`, `qk_norm` (RMSNorm over Dh on each q and k head, before RoPE),
    `rope_scaling` (None: default RoPE). `sliding_window` is the effective window (None when
    no layer uses one); sequences longer than it are refused at trace time because rlr
    implements full attention only.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    model_type: str = "qwen2"
    attention_bias: bool = True
    attention_out_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    sliding_window: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    # Low-rank adapters on some projections (rlr's, not HF's: `to_hf` leaves them out); None:
    # none. The base network is the same config with lora=None.
    lora: LoraConfig | None = None

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"DecoderConfig.{name} must be a positive int; got {value!r}")
        if self.model_type not in FAMILIES:
            raise ValueError(
                f"DecoderConfig.model_type must be one of {', '.join(FAMILIES)}; "
                f"got {self.model_type!r}"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    "DecoderConfig.hidden_size must be divisible by num_attention_heads when "
                    f"head_dim is not given; got {self.hidden_size} and {self.num_attention_heads}"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if not isinstance(self.head_dim, int) or self.head_dim <= 0 or self.head_dim % 2:
            raise ValueError(
                f"DecoderConfig.head_dim must be a positive even int (RoPE rotates halves); "
                f"got {self.head_dim!r}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                "DecoderConfig.num_attention_heads must be a multiple of num_key_value_heads "
                f"(grouped-query attention); got {self.num_attention_heads} and "
                f"{self.num_key_value_heads}"
            )
        if not self.rms_norm_eps > 0:
            raise ValueError(f"DecoderConfig.rms_norm_eps must be > 0; got {self.rms_norm_eps!r}")
        if not self.rope_theta > 0:
            raise ValueError(f"DecoderConfig.rope_theta must be > 0; got {self.rope_theta!r}")
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise ValueError(
                f"DecoderConfig.rope_scaling must be a RopeScaling or None; "
                f"got {self.rope_scaling!r}"
            )
        if self.sliding_window is not None and (
            not isinstance(self.sliding_window, int) or self.sliding_window <= 0
        ):
            raise ValueError(
                f"DecoderConfig.sliding_window must be None or a positive int; "
                f"got {self.sliding_window!r}"
            )
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))

    @property
    def num_queries_per_kv(self) -> int:
        """G = H / Hkv, the number of query heads that share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def family(self) -> str:
        """The HF class-name prefix of this model_type: Qwen2, Qwen3, Llama or Mistral."""
        return FAMILIES[self.model_type]

    def check_sequence_length(self, length: int) -> None:
        """Raises ValueError when `length` tokens would need the (unsupported) sliding window."""
        if self.sliding_window is not None and length > self.sliding_window:
            raise ValueError(
                f"sequence length {length} exceeds DecoderConfig.sliding_window="
                f"{self.sliding_window}; rlr implements full attention only, so use shorter "
                "sequences or a checkpoint without a sliding window"
            )

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> DecoderConfig:
        """Builds a config from an HF `config.json` dict of a Qwen2, Qwen3, Llama or Mistral
        model; unsupported features raise ValueError naming the field."""
        hf = dict(hf)
        for required in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        ):
            if required not in hf:
                raise ValueError(f"config.json lacks the required field {required!r}")
        model_type = hf.get("model_type", "qwen2")
        if model_type not in FAMILIES:
            raise ValueError(
                f"config.json model_type must be one of {', '.join(FAMILIES)}; got {model_type!r}"
            )
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"config.json hidden_act must be 'silu' (SwiGLU); got {act!r}")
        num_layers = hf["num_hidden_layers"]
        heads = hf["num_attention_heads"]
        kv_heads = hf.get("num_key_value_heads")
        rope_theta, rope_scaling = _rope_of(hf)
        if model_type == "qwen2":
            biases = dict(attention_bias=True, attention_out_bias=False, mlp_bias=False)
        elif model_type == "mistral":
            biases = dict(attention_bias=False, attention_out_bias=False, mlp_bias=False)
        else:  # llama, qwen3: one attention_bias for q/k/v/o
            bias = bool(hf.get("attention_bias", False))
            biases = dict(
                attention_bias=bias,
                attention_out_bias=bias,
                mlp_bias=bool(hf.get("mlp_bias", False)) if model_type == "llama" else False,
            )
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            num_key_value_heads=heads if kv_heads is None else kv_heads,
            head_dim=hf.get("head_dim"),
            model_type=model_type,
            qk_norm=model_type == "qwen3",
            **biases,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=hf.get("max_position_embeddings", 32768),
            sliding_window=_sliding_window_of(hf, model_type, num_layers),
            pad_token_id=hf.get("pad_token_id"),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
        )

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` dict (this model_type) that `from_hf` maps back to this config."""
        eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
        rope = {"rope_type": "default"} if self.rope_scaling is None else self.rope_scaling.to_hf()
        hf = {
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {**rope, "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "sliding_window": self.sliding_window,
            "attention_dropout": 0.0,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
        }
        if self.model_type in ("qwen2", "qwen3"):
            window_layers = 0 if self.sliding_window is not None else self.num_hidden_layers
            hf.update(use_sliding_window=self.sliding_window is not None)
            hf.update(max_window_layers=window_layers)
        if self.model_type in ("llama", "qwen3"):
            hf["attention_bias"] = self.attention_bias
        if self.model_type == "llama":
            hf["mlp_bias"] = self.mlp_bias
        return hf


def _rope_of(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from `rope_parameters` (transformers 5) or `rope_theta` +
    `rope_scaling` (older files)."""
    rope_theta = float(hf.get("rope_theta") or 10000.0)
    field, params, rope_type = "rope_parameters", {}, "default"
    for name in ("rope_scaling", "rope_parameters"):  # the newer field wins when both scale
        entry = dict(hf.get(name) or {})
        kind = entry.get("rope_type", entry.get("type", "default"))
        if kind not in ROPE_TYPES:
            raise ValueError(
                f"config.json {name}.rope_type={kind!r} is not supported; rlr implements "
                f"RoPE types {', '.join(ROPE_TYPES)}"
            )
        if entry and (kind != "default" or rope_type == "default"):
            field, params, rope_type = name, entry, kind
    rope_theta = float(params.get("rope_theta", rope_theta))
    if rope_type == "default":
        extra = set(params) - {"rope_type", "type", "rope_theta"}
        if extra:
            raise ValueError(
                f"config.json {field} has keys {sorted(extra)} that rope_type 'default' "
                "does not use; remove them or name the rope_type they belong to"
            )
        return rope_theta, None
    # transformers falls back to max_position_embeddings for the original context length
    params.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    missing = [k for k in _LLAMA3_KEYS if params.get(k) is None]
    if missing:
        raise ValueError(f"config.json {field} (rope_type 'llama3') lacks {missing}")
    return rope_theta, RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )


def _sliding_window_of(hf: dict[str, Any], model_type: str, num_layers: int) -> int | None:
    """The window any layer uses, or None. Mistral uses `sliding_window` whenever it is set;
    Qwen2 / Qwen3 only with use_sliding_window, on the layers layer_types (or
    max_window_layers) names; Llama has none."""
    window = hf.get("sliding_window")
    if window is None or model_type == "llama":
        return None
    if model_type == "mistral":
        return int(window)
    if not hf.get("use_sliding_window", False):
        return None
    layer_types = hf.get("layer_types")
    if layer_types is None:
        max_window_layers = hf.get("max_window_layers", 28)
        uses_window = any(i >= max_window_layers for i in range(num_layers))
    else:
        uses_window = "sliding_attention" in layer_types
    return int(window) if uses_window else None
