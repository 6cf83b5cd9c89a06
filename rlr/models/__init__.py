"""Qwen2-family networks in Flax: decoder, heads (LM, token/sequence scores), HF weight I/O."""

from rlr.models.config import Qwen2Config
from rlr.models.hf_io import load_pretrained, save_pretrained
from rlr.models.qwen2 import (
    KVCache,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2ForTokenClassification,
    Qwen2Model,
    ScoreHead,
    default_positions,
    init_cache,
    init_params,
    last_token_index,
    math_shepherd_step_scores,
)

__all__ = [
    "KVCache",
    "Qwen2Config",
    "Qwen2ForCausalLM",
    "Qwen2ForSequenceClassification",
    "Qwen2ForTokenClassification",
    "Qwen2Model",
    "ScoreHead",
    "default_positions",
    "init_cache",
    "init_params",
    "last_token_index",
    "load_pretrained",
    "math_shepherd_step_scores",
    "save_pretrained",
]
