"""No default changes the method in silence: each algorithm's defaults, the keys an algorithm
or command does not read, and Clip's threshold."""

import jax.numpy as jnp
import numpy as np
import pytest

import rlr
from rlr import configs
from rlr.config_loading import ConfigError, load_config
from rlr.reproduce import critic_free_overrides
from rlr.reproduce.schemas import ReproduceConfig
from rlr.training.schemas import (
    ALGORITHM_DEFAULTS,
    CRITIC_DEFAULTS,
    CRITIC_KEYS,
    PPOConfig,
    RewardModelConfig,
    SFTConfig,
)

PPO_CPU = configs.resolve("ppo_cpu")
CRITIC_FREE = ("grpo", "dr_grpo", "rloo")


def ppo(*overrides: str) -> PPOConfig:
    return load_config(PPOConfig, PPO_CPU, list(overrides))


def test_clipping_without_eta_is_an_error_that_names_reward_eta():
    for method in ("clip", "clip_delta"):
        with pytest.raises(ConfigError, match=r"reward\.eta: method=" + method):
            ppo("reward.eta=null", f"reward.method={method}")
    # raw and delta do not read eta, and without a PRM nothing is clipped
    assert ppo("reward.eta=null", "reward.method=delta").reward.eta is None
    assert ppo("reward.eta=null", "reward.use_prm=false").reward.eta is None


def test_shape_process_rewards_clipping_needs_eta():
    scores, mask = jnp.full((1, 3), 0.7), jnp.ones((1, 3))
    for method in ("clip", "clip_delta"):
        with pytest.raises(ValueError, match="needs eta="):
            rlr.shape_process_rewards(scores, mask, method=method)
    np.testing.assert_allclose(rlr.shape_process_rewards(scores, mask, method="raw"), scores)


def test_the_shipped_ppo_config_shapes_prm_rewards_that_are_not_zero():
    """`rlr ppo --config ppo_cpu reward.use_prm=true`: Clip-Delta's rewards at the PRM scores
    of a typical rollout are not all 0 (eta=0 would make them so)."""
    cfg = ppo("reward.use_prm=true")
    scores = jnp.asarray([[0.9, 0.4, 0.2, 0.7], [0.3, 0.1, 0.8, 0.0]])
    mask = jnp.asarray([[1, 1, 1, 1], [1, 1, 1, 0]])
    shaped = rlr.shape_process_rewards(scores, mask, method=cfg.reward.method, eta=cfg.reward.eta)
    assert np.count_nonzero(np.asarray(shaped)) >= 3
    zero = rlr.shape_process_rewards(scores, mask, method=cfg.reward.method, eta=0.0)
    assert np.count_nonzero(np.asarray(zero)) == 0


@pytest.mark.parametrize("algorithm", ["ppo", *CRITIC_FREE])
def test_each_algorithm_takes_its_own_kl_default(algorithm):
    cfg = ppo(f"algorithm={algorithm}", "reward.kl_coef=null", *critic_free_overrides(algorithm))
    want = {"ppo": 0.1, "grpo": 0.04, "dr_grpo": 0.0, "rloo": 0.05}[algorithm]
    assert cfg.effective_reward.kl_coef == want == ALGORITHM_DEFAULTS[algorithm].kl_coef
    assert cfg.kl_in_loss == (algorithm in ("grpo", "dr_grpo"))
    # an explicit coefficient wins
    explicit = ppo(f"algorithm={algorithm}", *critic_free_overrides(algorithm))
    assert explicit.effective_reward.kl_coef == 0.02


@pytest.mark.parametrize("algorithm", CRITIC_FREE)
def test_critic_free_prm_runs_keep_the_bound_by_default(algorithm):
    cfg = ppo(f"algorithm={algorithm}", *critic_free_overrides(algorithm))
    assert cfg.effective_reward.process_normalization == "none"
    opt_in = ppo(
        f"algorithm={algorithm}",
        "reward.process_normalization=group",
        *critic_free_overrides(algorithm),
    )
    assert opt_in.effective_reward.process_normalization == "group"


@pytest.mark.parametrize("key", CRITIC_KEYS)
@pytest.mark.parametrize("algorithm", CRITIC_FREE)
def test_critic_keys_under_a_critic_free_algorithm_are_errors(algorithm, key):
    value = {"critic_init": "policy", "whiten_advantages": "true"}.get(key, "0.5")
    overrides = [f"algorithm={algorithm}", *critic_free_overrides(algorithm)]
    with pytest.raises(ConfigError, match=rf"ppo\.{key}: {algorithm} has no critic, so "):
        ppo(*overrides, f"ppo.{key}={value}")


def test_the_critic_keys_take_their_defaults_under_ppo():
    cfg = ppo()
    for key in CRITIC_KEYS:
        want = 2.0e-4 if key == "critic_lr" else CRITIC_DEFAULTS[key]  # ppo_cpu sets critic_lr
        assert getattr(cfg.effective_ppo, key) == want, key
    reward = cfg.effective_reward
    assert reward.kl_estimator == "k1" and reward.process_normalization is None


def test_keys_the_chosen_algorithm_ignores_are_errors():
    with pytest.raises(ConfigError, match=r"reward\.process_normalization: ppo's critic"):
        ppo("reward.process_normalization=none")
    grpo = ["algorithm=grpo", *critic_free_overrides("grpo")]
    with pytest.raises(ConfigError, match=r"reward\.kl_estimator: grpo puts the KL in the loss"):
        ppo(*grpo, "reward.kl_estimator=k2")
    # rloo keeps the KL in the reward, so its estimator is read
    rloo = ppo("algorithm=rloo", "reward.kl_estimator=k2", *critic_free_overrides("rloo"))
    assert rloo.effective_reward.kl_estimator == "k2"


def test_replacing_the_algorithm_does_not_carry_the_old_one_s_defaults():
    """Defaults are resolved when read, not stored: a config made for ppo and switched to grpo
    takes grpo's KL placement and coefficient, not ppo's."""
    import dataclasses

    base = ppo("reward.kl_coef=null", "ppo.critic_lr=null")
    grpo = dataclasses.replace(base, algorithm="grpo")
    assert grpo.kl_in_loss and grpo.effective_reward.kl_coef == 0.04
    assert grpo.effective_reward.kl_estimator is None


def test_a_saved_config_loads_again_as_it_ran(tmp_path):
    from rlr.config_loading import dump_config

    for algorithm in ("ppo", "grpo"):
        cfg = ppo(f"algorithm={algorithm}", *critic_free_overrides(algorithm))
        dump_config(cfg, tmp_path / "config.yaml")
        assert load_config(PPOConfig, tmp_path / "config.yaml") == cfg


def test_sft_and_reward_model_configs_refuse_keys_they_do_not_read():
    with pytest.raises(ConfigError, match=r"train\.max_reasoning_steps: rlr sft trains on whole"):
        load_config(SFTConfig, configs.resolve("sft_cpu"), ["train.max_reasoning_steps=8"])
    with pytest.raises(ConfigError, match="name: rlr sft does not name its runs"):
        load_config(SFTConfig, configs.resolve("sft_cpu"), ["name=my_sft"])
    with pytest.raises(ConfigError, match="name: rlr train-prm does not name its runs"):
        load_config(RewardModelConfig, configs.resolve("prm_cpu"), ["name=my_prm"])
    prm = load_config(
        RewardModelConfig, configs.resolve("prm_cpu"), ["train.max_reasoning_steps=null"]
    )
    assert prm.train.max_reasoning_steps == 16


def test_renamed_variants_name_their_successor():
    with pytest.raises(ConfigError, match="prm_clip_unnormalized is now prm_clip"):
        ReproduceConfig(variants=("success", "prm_clip_unnormalized"))
    with pytest.raises(ConfigError, match="prm_clip_delta_group"):
        ReproduceConfig(variants=("prm_clip_delta_unnormalized",))


def test_the_config_module_names_a_real_key_in_its_examples():
    from rlr import config_loading as config

    assert "ppo.lr=" not in config.__doc__
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        ppo("ppo.lr=1e-6")


def test_method_md_gives_delta_s_telescoped_sum_as_the_first_step_s_score():
    import pathlib

    text = (pathlib.Path(__file__).parent.parent / "docs" / "method.md").read_text()
    assert "r_1 - r_K" not in text and "sum from step 1 is r_1" in text
