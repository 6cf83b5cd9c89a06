"""A tiny but complete PPO config over the toy assets of tests/toy_assets.py.

Used by tests/test_ppo.py in-process and by the subprocesses of the resume tests.
"""

from __future__ import annotations

import dataclasses
import pathlib

from toy_assets import make_toy_assets as make_assets  # noqa: F401  (re-exported for the tests)

from rlr.training.schemas import (
    ALGORITHM_DEFAULTS,
    DataSpec,
    EvalSpec,
    GradingSpec,
    ModelSpec,
    PPOConfig,
    PPOSpec,
    RewardSpec,
    RolloutSpec,
)


def tiny_config(root: pathlib.Path, out_dir: pathlib.Path, **changes) -> PPOConfig:
    """A 2-prompt x 2-sample PPO config over the assets in `root`; a critic-free `algorithm`
    leaves the critic's learning rate unset (it would be an error)."""
    critic = ALGORITHM_DEFAULTS[changes.get("algorithm", "ppo")].critic
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
        ),
        reward=RewardSpec(use_prm=True, method="clip_delta", alpha=1.0, eta=0.5, max_steps=8),
        rollout=RolloutSpec(
            prompts_per_iteration=2, samples_per_prompt=2, max_prompt_tokens=64, max_new_tokens=24
        ),
        ppo=PPOSpec(minibatches=2, policy_lr=1e-3, critic_lr=1e-3 if critic else None),
        grading=GradingSpec(num_workers=0),
        checkpoint_every=1,
        eval=EvalSpec(max_examples=4),
    )
    return dataclasses.replace(config, **changes)


def prime_config(root: pathlib.Path, out_dir: pathlib.Path, **changes) -> PPOConfig:
    """tiny_config under GRPO with PRIME's implicit PRM as the process reward."""
    from rlr.training.schemas import ImplicitPRMSpec

    config = tiny_config(
        root,
        out_dir,
        algorithm="grpo",
        reward=RewardSpec(use_prm=True, method="prime", alpha=1.0, max_steps=8),
        implicit_prm=ImplicitPRMSpec(beta=0.5, lr=1e-3),
    )
    return dataclasses.replace(config, **changes)
