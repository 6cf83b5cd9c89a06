"""`Qwen2Config`: the validated, hashable description of a Qwen2-family decoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Qwen2Config:
    """Shape and numerics of a Qwen2-family decoder (D = hidden_size, H = heads, Dh = head_dim).

    Frozen and hashable, so it can be a Flax module attribute and a jit static argument.
    `sliding_window` is the effective window (None when no layer uses one); sequences longer
    than it are refused at trace time because rlr implements full attention only.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    sliding_window: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None

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
                raise ValueError(f"Qwen2Config.{name} must be a positive int; got {value!r}")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    "Qwen2Config.hidden_size must be divisible by num_attention_heads when "
                    f"head_dim is not given; got {self.hidden_size} and {self.num_attention_heads}"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if not isinstance(self.head_dim, int) or self.head_dim <= 0 or self.head_dim % 2:
            raise ValueError(
                f"Qwen2Config.head_dim must be a positive even int (RoPE rotates halves); "
                f"got {self.head_dim!r}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                "Qwen2Config.num_attention_heads must be a multiple of num_key_value_heads "
                f"(grouped-query attention); got {self.num_attention_heads} and "
                f"{self.num_key_value_heads}"
            )
        if not self.rms_norm_eps > 0:
            raise ValueError(f"Qwen2Config.rms_norm_eps must be > 0; got {self.rms_norm_eps!r}")
        if not self.rope_theta > 0:
            raise ValueError(f"Qwen2Config.rope_theta must be > 0; got {self.rope_theta!r}")
        if self.sliding_window is not None and (
            not isinstance(self.sliding_window, int) or self.sliding_window <= 0
        ):
            raise ValueError(
                f"Qwen2Config.sliding_window must be None or a positive int; "
                f"got {self.sliding_window!r}"
            )
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))

    @property
    def num_queries_per_kv(self) -> int:
        """G = H / Hkv, the number of query heads that share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def check_sequence_length(self, length: int) -> None:
        """Raises ValueError when `length` tokens would need the (unsupported) sliding window."""
        if self.sliding_window is not None and length > self.sliding_window:
            raise ValueError(
                f"sequence length {length} exceeds Qwen2Config.sliding_window="
                f"{self.sliding_window}; rlr implements full attention only, so use shorter "
                "sequences or a checkpoint with use_sliding_window=false"
            )

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> Qwen2Config:
        """Builds a config from an HF `config.json` dict; unsupported features raise ValueError."""
        hf = dict(hf)
        for required in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"):
            if required not in hf:
                raise ValueError(f"config.json lacks the required field {required!r}")
        if "num_attention_heads" not in hf:
            raise ValueError("config.json lacks the required field 'num_attention_heads'")
        model_type = hf.get("model_type", "qwen2")
        if model_type != "qwen2":
            raise ValueError(f"config.json model_type must be 'qwen2'; got {model_type!r}")
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"config.json hidden_act must be 'silu' (SwiGLU); got {act!r}")
        if hf.get("rope_scaling"):
            raise ValueError(
                f"config.json rope_scaling={hf['rope_scaling']!r} is not supported; rlr implements "
                "default RoPE only (remove rope_scaling or set it to null)"
            )
        rope_theta = hf.get("rope_theta", 10000.0)
        rope_parameters = hf.get("rope_parameters")
        if rope_parameters:
            rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
            if rope_type != "default":
                raise ValueError(
                    f"config.json rope_parameters.rope_type={rope_type!r} is not supported; "
                    "rlr implements rope_type 'default' only"
                )
            extra = set(rope_parameters) - {"rope_type", "type", "rope_theta"}
            if extra:
                raise ValueError(
                    f"config.json rope_parameters has unsupported keys {sorted(extra)}; "
                    "only rope_theta and rope_type='default' are supported"
                )
            rope_theta = rope_parameters.get("rope_theta", rope_theta)
        num_layers = hf["num_hidden_layers"]
        sliding_window = None
        if hf.get("use_sliding_window", False) and hf.get("sliding_window") is not None:
            layer_types = hf.get("layer_types")
            if layer_types is None:
                max_window_layers = hf.get("max_window_layers", 28)
                uses_window = any(i >= max_window_layers for i in range(num_layers))
            else:
                uses_window = "sliding_attention" in layer_types
            if uses_window:
                sliding_window = int(hf["sliding_window"])
        heads = hf["num_attention_heads"]
        kv_heads = hf.get("num_key_value_heads")
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            num_key_value_heads=heads if kv_heads is None else kv_heads,
            head_dim=hf.get("head_dim"),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=hf.get("max_position_embeddings", 32768),
            sliding_window=sliding_window,
            pad_token_id=hf.get("pad_token_id"),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
        )

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` dict (model_type qwen2) that `from_hf` maps back to this config."""
        eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
        return {
            "model_type": "qwen2",
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
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "use_sliding_window": self.sliding_window is not None,
            "sliding_window": self.sliding_window,
            "max_window_layers": 0 if self.sliding_window is not None else self.num_hidden_layers,
            "attention_dropout": 0.0,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
        }
