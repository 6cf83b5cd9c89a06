import pathlib

import pytest

from rlr.config import load_config
from rlr.training.configs import PPOConfig

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "launch" / "configs"
PPO_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name.startswith(("ppo", "qwen")))


@pytest.mark.parametrize("path", PPO_CONFIGS, ids=lambda p: p.name)
def test_ppo_configs_load_and_validate(path):
    config = load_config(PPOConfig, path)
    assert config.rollout.batch_size % config.ppo.minibatches == 0
    assert config.ppo.gamma == 1.0  # the Clip/Delta return bound needs gamma = 1


def test_paper_configs_follow_the_paper():
    config = load_config(PPOConfig, CONFIGS / "qwen2_1p5b_math.yaml")
    assert config.rollout.prompts_per_iteration == 1024 and config.rollout.samples_per_prompt == 8
    assert config.reward.method == "clip_delta" and config.reward.kl_coef == 0.1
    assert config.policy.architecture["hidden_size"] == 1536
    big = load_config(PPOConfig, CONFIGS / "qwen25_math_7b.yaml")
    assert big.rollout.prompts_per_iteration == 4096
    assert big.policy.architecture["num_hidden_layers"] == 28
