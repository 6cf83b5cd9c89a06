"""Building, initialising and exporting the networks that rlr's trainers start from.

A policy comes from an HF directory or a fresh inline architecture. A PRM / ORM / critic takes
the policy's trunk (`params["model"]`) and a fresh `score` head. Exports are complete HF model
directories: weights and config.json (rlr.models.save_pretrained) plus the tokenizer files.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlr.models import (
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2ForTokenClassification,
    init_params,
    load_pretrained,
    save_pretrained,
)
from rlr.training.configs import ModelSpec

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
# ModelSpec.dtype / param_dtype names -> JAX dtypes
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def load_tokenizer(path: str | pathlib.Path):
    """An HF fast tokenizer from a local directory, with a clear error if it is missing."""
    from transformers import AutoTokenizer

    directory = pathlib.Path(path)
    if not path or not (directory / "tokenizer.json").is_file():
        raise ValueError(
            f"tokenizer {str(path)!r} is not a directory holding tokenizer.json; "
            "make one with `rlr train-tokenizer --out DIR` and set tokenizer: DIR"
        )
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if not tokenizer.is_fast:
        raise ValueError(f"tokenizer {directory} must be a fast tokenizer (tokenizer.json)")
    return tokenizer


def architecture_config(spec: ModelSpec, tokenizer) -> Qwen2Config:
    """The Qwen2Config of an inline `architecture`, with vocab size and special ids filled in
    from the tokenizer when the mapping leaves them out."""
    hf = dict(spec.architecture or {})
    hf.setdefault("vocab_size", len(tokenizer))
    if hf["vocab_size"] < len(tokenizer):
        raise ValueError(
            f"architecture.vocab_size={hf['vocab_size']} is smaller than the tokenizer's "
            f"{len(tokenizer)} tokens; drop the key to use the tokenizer's size"
        )
    hf.setdefault("pad_token_id", tokenizer.pad_token_id)
    hf.setdefault("eos_token_id", tokenizer.eos_token_id)
    try:
        return Qwen2Config.from_hf(hf)
    except (ValueError, TypeError) as err:
        raise ValueError(f"model.architecture is invalid: {err}") from None


def load_or_init_policy(spec: ModelSpec, tokenizer, *, seed: int) -> tuple[nn.Module, Any]:
    """(Qwen2ForCausalLM, params) from `spec.path`, or freshly initialised from `architecture`."""
    dtype, param_dtype = DTYPES[spec.dtype], DTYPES[spec.param_dtype]
    if spec.path:
        model, params = load_pretrained(spec.path, dtype=dtype, param_dtype=param_dtype)
        if not isinstance(model, Qwen2ForCausalLM):
            raise ValueError(f"{spec.path} holds a {type(model).__name__}, not a causal LM")
        return model.clone(remat=spec.remat), params
    config = architecture_config(spec, tokenizer)
    model = Qwen2ForCausalLM(config, dtype=dtype, param_dtype=param_dtype, remat=spec.remat)
    return model, init_params(model, jax.random.key(seed))


def init_scorer(
    spec: ModelSpec,
    tokenizer,
    *,
    seed: int,
    head: Literal["token", "sequence"],
) -> tuple[nn.Module, nn.Module, Any]:
    """A one-label scorer: (token model, export model, params) with a fresh `score` head.

    The trunk comes from `spec` (an SFT policy directory, or a fresh architecture). Training
    and PPO read scores through the token-classification model (ppo_core.prm_step_scores /
    orm_scores); the export model is Qwen2ForTokenClassification for a PRM and
    Qwen2ForSequenceClassification for an ORM. Both have the same params. The ORM's config has
    no pad_token_id, so the sequence head reads the last attended token, as orm_scores does.
    """
    policy, policy_params = load_or_init_policy(spec, tokenizer, seed=seed)
    config = policy.config
    if head == "sequence":
        config = dataclasses.replace(config, pad_token_id=None)
    kwargs = dict(num_labels=1, dtype=policy.dtype, param_dtype=policy.param_dtype)
    token_model = Qwen2ForTokenClassification(config, **kwargs)
    fresh = init_params(token_model, jax.random.key(seed + 1))
    params = {"model": policy_params["model"], "score": fresh["score"]}
    if head == "token":
        return token_model, token_model, params
    if head == "sequence":
        return token_model, Qwen2ForSequenceClassification(config, **kwargs), params
    raise ValueError(f"head must be 'token' or 'sequence'; got {head!r}")


def export_model(
    model: nn.Module, params: Any, out_dir: str | pathlib.Path, *, tokenizer_dir: str | None
) -> pathlib.Path:
    """save_pretrained + the tokenizer files beside it: a complete HF model directory."""
    out_dir = pathlib.Path(out_dir)
    save_pretrained(model, jax.device_get(params), out_dir)
    if tokenizer_dir:
        for name in TOKENIZER_FILES:
            source = pathlib.Path(tokenizer_dir) / name
            if source.is_file():
                shutil.copy2(source, out_dir / name)
    return out_dir


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(x.size for x in jax.tree.leaves(params)))
