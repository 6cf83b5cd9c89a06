import pytest

from rlr import configs
from rlr.config_loading import load_config
from rlr.reproduce.schemas import (
    DEFAULT_VARIANTS,
    PROCESS_DESIGN_VARIANTS,
    REWARD_VARIANTS,
    ReproduceConfig,
)
from rlr.training.schemas import PPOConfig, RewardModelConfig, SFTConfig

SCHEMAS = {"ppo": PPOConfig, "qwen": PPOConfig, "sft": SFTConfig, "prm": RewardModelConfig}
SCHEMAS |= {"orm": RewardModelConfig, "reproduce": ReproduceConfig}


@pytest.mark.parametrize("name", configs.available())
def test_every_shipped_config_loads_and_validates(name):
    prefix = next((p for p in SCHEMAS if name.startswith(p)), name)
    assert prefix in SCHEMAS, f"{name}.yaml: no schema for configs named {prefix}_*"
    config = load_config(SCHEMAS[prefix], configs.resolve(name))
    if isinstance(config, PPOConfig):
        assert config.rollout.batch_size % config.ppo.minibatches == 0
        assert config.effective_ppo.gamma == 1.0  # the Clip/Delta return bound needs gamma = 1
    if isinstance(config, ReproduceConfig):
        # every preset variant exists; the main and smoke presets run every variant but the
        # process designs, which are opt-in (--variants) so that the shipped runs keep their
        # runtime; cpu_sparse compares success-only with the bounded PRM variants only
        assert set(config.variants) <= set(REWARD_VARIANTS)
        if config.name in ("reproduce_cpu", "reproduce_smoke"):
            assert set(config.variants) == set(DEFAULT_VARIANTS)
        assert not set(config.variants) & set(PROCESS_DESIGN_VARIANTS)
        for stage in (config.sft, config.prm, config.orm, config.ppo):
            configs.resolve(stage.config)  # every stage names a shipped config


def test_paper_configs_follow_the_paper():
    config = load_config(PPOConfig, configs.resolve("qwen2_1p5b_math"))
    assert config.rollout.prompts_per_iteration == 1024 and config.rollout.samples_per_prompt == 8
    assert config.reward.method == "clip_delta" and config.reward.kl_coef == 0.1
    assert config.policy.architecture["hidden_size"] == 1536
    big = load_config(PPOConfig, configs.resolve("qwen25_math_7b"))
    assert big.rollout.prompts_per_iteration == 4096
    assert big.policy.architecture["num_hidden_layers"] == 28
