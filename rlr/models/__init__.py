"""Decoder-only networks in Flax for the Qwen2/2.5, Qwen3, Llama 3.x and Mistral families:
one decoder, its heads (LM, token / sequence scores, released PRM heads), HF weight I/O."""

from rlr.models.architecture import FAMILIES, DecoderConfig, RopeScaling
from rlr.models.decoder import (
    DecoderForCausalLM,
    DecoderForProcessReward,
    DecoderForSequenceClassification,
    DecoderForTokenClassification,
    DecoderModel,
    DecoderWithValueHead,
    KVCache,
    MLPScoreHead,
    ScoreHead,
    ValueHead,
    default_positions,
    init_cache,
    init_params,
    last_token_index,
    math_shepherd_step_scores,
    rope_frequencies,
    stack_layer_params,
    unstack_layer_params,
)
from rlr.models.hf_io import load_pretrained, pretrained_module, save_pretrained
from rlr.models.step_scorers import STEP_FORMATS, StepScorer, load_step_scorer

__all__ = [
    "FAMILIES",
    "DecoderConfig",
    "DecoderForCausalLM",
    "DecoderForProcessReward",
    "DecoderForSequenceClassification",
    "DecoderForTokenClassification",
    "DecoderModel",
    "DecoderWithValueHead",
    "KVCache",
    "MLPScoreHead",
    "RopeScaling",
    "ScoreHead",
    "ValueHead",
    "default_positions",
    "init_cache",
    "init_params",
    "last_token_index",
    "load_pretrained",
    "math_shepherd_step_scores",
    "rope_frequencies",
    "pretrained_module",
    "save_pretrained",
    "stack_layer_params",
    "unstack_layer_params",
    "STEP_FORMATS",
    "StepScorer",
    "load_step_scorer",
]
