"""rlr: PPO for LLM math reasoning with step-level process rewards, Clip and Delta.

The public maths API (rewards, advantages, losses) is importable from here: `rlr.token_rewards`,
`from rlr import gae_advantages`. It loads on first use, so `import rlr` (and the `rlr`
command's help) does not pull in JAX.
"""

from __future__ import annotations

from rlr.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "gae_advantages": "rlr.advantages",
    "group_outcome_advantages": "rlr.advantages",
    "group_process_advantages": "rlr.advantages",
    "masked_whiten": "rlr.advantages",
    "ValueNormStats": "rlr.advantages",
    "denormalize_values": "rlr.advantages",
    "normalize_values": "rlr.advantages",
    "value_norm_init": "rlr.advantages",
    "value_norm_mean_std": "rlr.advantages",
    "value_norm_update": "rlr.advantages",
    "aggregate_token_losses": "rlr.losses",
    "entropy_from_logits": "rlr.losses",
    "masked_mean": "rlr.losses",
    "masked_sum": "rlr.losses",
    "masked_var": "rlr.losses",
    "ppo_policy_loss": "rlr.losses",
    "ppo_value_loss": "rlr.losses",
    "token_logprobs": "rlr.losses",
    "min_form_returns": "rlr.process_designs",
    "min_form_step_returns": "rlr.process_designs",
    "prime_advantages": "rlr.process_designs",
    "prime_implicit_prm_loss": "rlr.process_designs",
    "prime_token_rewards": "rlr.process_designs",
    "prof_keep_mask": "rlr.process_designs",
    "pure_advantages": "rlr.process_designs",
    "pure_softmin_step_rewards": "rlr.process_designs",
    "KL_ESTIMATORS": "rlr.rewards",
    "PROCESS_REWARD_METHODS": "rlr.rewards",
    "TokenRewards": "rlr.rewards",
    "clip_process_rewards": "rlr.rewards",
    "delta_process_rewards": "rlr.rewards",
    "kl_penalty": "rlr.rewards",
    "overlong_penalty": "rlr.rewards",
    "place_at_tokens": "rlr.rewards",
    "shape_process_rewards": "rlr.rewards",
    "token_rewards": "rlr.rewards",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("rlr", _EXPORTS, globals())
