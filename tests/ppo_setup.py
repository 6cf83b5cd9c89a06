"""A tiny but complete PPO setup on disk: tokenizer, synthetic data, random policy and PRM.

Used by tests/test_ppo.py in-process and by the subprocesses of the resume tests.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax

from rlr.data.synthetic import training_corpus, write_datasets
from rlr.models import (
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForTokenClassification,
    init_params,
    save_pretrained,
)
from rlr.tokenizer import train_tokenizer
from rlr.training.configs import (
    DataSpec,
    GradingSpec,
    ModelSpec,
    PPOConfig,
    PPOSpec,
    RewardSpec,
    RolloutSpec,
)


def make_assets(root: pathlib.Path) -> pathlib.Path:
    """Writes tokenizer/, data/, policy/ and prm/ under root (once) and returns root."""
    root = pathlib.Path(root)
    if (root / "prm" / "config.json").exists():
        return root
    tokenizer = train_tokenizer(
        training_corpus(num_problems=300, seed=0), vocab_size=300, out_dir=root / "tokenizer"
    )
    write_datasets(root / "data", num_train=64, num_test=8, seed=0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    policy = Qwen2ForCausalLM(config)
    save_pretrained(policy, init_params(policy, jax.random.key(0)), root / "policy")
    prm = Qwen2ForTokenClassification(config, num_labels=1)
    save_pretrained(prm, init_params(prm, jax.random.key(1)), root / "prm")
    return root


def tiny_config(root: pathlib.Path, out_dir: pathlib.Path, **changes) -> PPOConfig:
    """A 2-prompt x 2-sample PPO config over the assets in `root`."""
    config = PPOConfig(
        name="tiny",
        seed=0,
        out_dir=str(out_dir),
        iterations=2,
        tokenizer=str(root / "tokenizer"),
        policy=ModelSpec(path=str(root / "policy")),
        prm=ModelSpec(path=str(root / "prm")),
        data=DataSpec(
            train=str(root / "data" / "problems_train.jsonl"),
            test=str(root / "data" / "problems_test.jsonl"),
            max_test_problems=4,
        ),
        reward=RewardSpec(use_prm=True, method="clip_delta", alpha=1.0, eta=0.5, max_steps=8),
        rollout=RolloutSpec(
            prompts_per_iteration=2, samples_per_prompt=2, max_prompt_tokens=64, max_new_tokens=24
        ),
        ppo=PPOSpec(minibatches=2, policy_lr=1e-3, critic_lr=1e-3),
        grading=GradingSpec(num_workers=0),
        checkpoint_every=1,
    )
    return dataclasses.replace(config, **changes)
