"""rlr: PPO for LLM math reasoning with step-level process rewards, Clip and Delta."""

from rlr.advantages import gae_advantages, masked_whiten
from rlr.losses import (
    entropy_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    ppo_policy_loss,
    ppo_value_loss,
    token_logprobs,
)
from rlr.rewards import (
    KL_ESTIMATORS,
    PROCESS_REWARD_METHODS,
    TokenRewards,
    clip_process_rewards,
    delta_process_rewards,
    kl_penalty,
    place_at_tokens,
    shape_process_rewards,
    token_rewards,
)

__version__ = "0.1.0"

__all__ = [
    "KL_ESTIMATORS",
    "PROCESS_REWARD_METHODS",
    "TokenRewards",
    "clip_process_rewards",
    "delta_process_rewards",
    "entropy_from_logits",
    "gae_advantages",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "place_at_tokens",
    "ppo_policy_loss",
    "ppo_value_loss",
    "shape_process_rewards",
    "token_logprobs",
    "token_rewards",
]
