"""The jitted heart of a PPO iteration: score a rollout, compute advantages, update.

A rollout row is the prompt (left-padded to P) followed by the response (right-padded to T):
`input_ids [B, S = P + T]`; rlr.readouts says at which column each network is read.
Everything here is a function of (models, params, arrays) plus static settings, jitted with
explicit shardings by rlr.training.ppo_build; nothing reads files.

Why one module (over 600 lines): scoring, experience, the group advantages, the loss and the
update are the stages of one jitted iteration; they share the Rollout / Scored / Experience
types and their private helpers, and rlr.training.ppo_build jits them together.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rlr.advantages import (
    ValueNormStats,
    denormalize_values,
    gae_advantages,
    group_outcome_advantages,
    group_process_advantages,
    masked_whiten,
    normalize_values,
    value_norm_mean_std,
    value_norm_update,
)
from rlr.losses import (
    aggregate_token_losses,
    masked_mean,
    masked_var,
    ppo_policy_loss,
    ppo_value_loss,
)
from rlr.models.lora import merge_adapters, split_adapters
from rlr.packing import PackedRows
from rlr.process_designs import (
    min_form_returns,
    prime_advantages,
    prime_implicit_prm_loss,
    prime_token_rewards,
    prof_keep_mask,
    pure_softmin_step_rewards,
)
from rlr.readouts import (
    critic_readout,
    critic_values,
    policy_readout,
    reward_model_scores,
)
from rlr.rewards import (
    TokenRewards,
    kl_penalty,
    last_token_onehot,
    place_at_tokens,
    shape_process_rewards,
    token_rewards,
)
from rlr.rewards import overlong_penalty as overlong_penalty_of
from rlr.training.schemas import ALGORITHM_DEFAULTS, PURE_SOFTMIN_TEMPERATURE, RewardSpec
from rlr.training.train_state import TrainState, apply_gradients


class Rollout(NamedTuple):
    """One iteration's sampled batch, as arrays (B rows = prompts x samples)."""

    input_ids: jax.Array  # [B, S] int32 prompt (left-padded) ++ response (right-padded)
    attention_mask: jax.Array  # [B, S] 1 on real prompt and response tokens
    response_mask: jax.Array  # [B, T] float32, 1 on generated tokens (EOS included)
    success: jax.Array  # [B] float32, 1 when the final answer is right
    step_end: jax.Array  # [B, K] int32 response index of each step's last token
    step_mask: jax.Array  # [B, K] float32, 1 for real steps
    # [B, T] f32 the sampler's log-probs of the response tokens, carried only when they are to
    # be the old log-probs (ppo.old_logprobs=rollout); None: scoring recomputes them
    sampled_logp: jax.Array | None = None
    # [B] float32, 1 for a response cut off by the token budget (no EOS); None: not known,
    # which only ppo.truncation=grade accepts
    truncated: jax.Array | None = None


class Scored(NamedTuple):
    """What the frozen and current networks say about a rollout, before any update."""

    old_logp: jax.Array  # [B, T] policy log-probs of the sampled tokens
    ref_logp: jax.Array  # [B, T] reference-policy log-probs
    old_values: jax.Array  # [B, T] critic V(s_t)
    step_scores: jax.Array  # [B, K] PRM probability that each step prefix is correct
    orm_score: jax.Array  # [B] ORM probability that the solution is correct
    # [B] critic V(s_L) after the last response token (GAE's bootstrap for a truncated row);
    # zeros without a critic
    final_value: jax.Array | None = None
    # [B, T] log-probs of the sampled tokens under PRIME's implicit PRM; None without one
    implicit_logp: jax.Array | None = None


class Experience(NamedTuple):
    """A minibatch-able training batch (all [B, ...]); without a critic, old_values and
    returns are zeros."""

    input_ids: jax.Array  # [B, S]
    attention_mask: jax.Array  # [B, S]
    response_mask: jax.Array  # [B, T]
    old_logp: jax.Array  # [B, T]
    ref_logp: jax.Array  # [B, T] the reference policy (for a KL term in the loss)
    old_values: jax.Array  # [B, T]
    advantages: jax.Array  # [B, T]
    returns: jax.Array  # [B, T]
    # [B] success after truncation: the implicit PRM's training label (PRIME); None without one
    labels: jax.Array | None = None
    # The minibatch's rows packed (ppo.pack; rlr.packing.pack_rows of input_ids and
    # attention_mask): the networks then read the packed rows. None: the padded rows.
    packing: PackedRows | None = None


@dataclasses.dataclass(frozen=True)
class PPOModels:
    """The Flax modules of a run (static; parameters travel separately). A group-relative
    algorithm (GRPO, Dr. GRPO, RLOO) has no critic."""

    policy: nn.Module  # DecoderForCausalLM
    critic: nn.Module | None  # DecoderForTokenClassification(num_labels=1), or None
    # With ppo.critic_lora: the frozen network whose trunk ("model") is the critic's base
    # ("reference", "prm" or "orm"); params["critic"] then holds the trunk's adapters and the
    # score head alone. None: the critic's params are whole.
    critic_base: str | None = None
    prm: nn.Module | None = None  # DecoderForTokenClassification(num_labels=1), read in-graph
    orm: nn.Module | None = None  # token-classification trunk read at the last token
    # With LoRA (policy.lora): the policy without its adapters, the reference network. The
    # trainable params["policy"] are then the adapters alone, and the frozen base weights,
    # frozen["reference"], serve both the reference and (with the adapters) the policy.
    # None: no adapters; the reference is the policy's module with its own frozen copy.
    reference: nn.Module | None = None
    # PRIME's implicit PRM (reward.method=prime): a causal LM trained beside the policy, its
    # params in params["implicit_prm"]; None: none
    implicit_prm: nn.Module | None = None


def policy_params(models: PPOModels, adapters_or_params: Any, base: Any) -> Any:
    """The policy's whole params tree: params["policy"] itself without LoRA; under LoRA the
    frozen base (frozen["reference"]) with the trainable adapters put in (no array copied)."""
    if models.reference is None:
        return adapters_or_params
    return merge_adapters(base, adapters_or_params)


def critic_trainable(tree: Any) -> Any:
    """The trainable part of a critic with adapters on its trunk: {"model": the trunk's
    lora_a / lora_b leaves, "score": the head}, from its whole params tree (or a tree of
    shardings / shapes of the same structure); no array is copied."""
    return {"model": split_adapters(tree["model"])[1], "score": tree["score"]}


def critic_base_trunk(models: PPOModels, frozen: dict[str, Any]) -> Any:
    """The frozen trunk the critic's adapters sit on (ppo.critic_lora): the "model" params of
    frozen[models.critic_base], shared with that network, not copied; None without adapters."""
    if models.critic_base is None:
        return None
    return frozen[models.critic_base]["model"]


def critic_params(models: PPOModels, critic: Any, trunk: Any) -> Any:
    """The critic's whole params tree: params["critic"] itself without ppo.critic_lora; with
    it the frozen `trunk` (critic_base_trunk) with the trainable adapters put in, and the
    trainable head (no array copied)."""
    if models.critic_base is None:
        return critic
    return {"model": merge_adapters(trunk, critic["model"]), "score": critic["score"]}


def score_rollout(
    models: PPOModels,
    params: dict[str, Any],  # {"policy", "critic"?, "implicit_prm"?}
    frozen: dict[str, Any],  # {"reference", "prm"?, "orm"?}
    rollout: Rollout,
    step_scores: jax.Array | None = None,  # [B, K] from a PRM read outside the graph
    *,
    temperature: float = 1.0,
) -> Scored:
    """Runs every network over the rollout once (no gradients); the policy not at all when the
    rollout carries the sampler's log-probs (`sampled_logp`). A PRM that reads text (a
    released PRM, or one with its own tokenizer) is scored outside (rlr.training.step_scoring)
    and its [B, K] probabilities come in as `step_scores`. Policy and reference log-probs are
    those of softmax(logits / temperature), the rollout's sampling distribution, and so are
    the implicit PRM's (PRIME), so that pi_phi = pi_ref gives it reward 0."""
    T = rollout.response_mask.shape[1]
    ids, attn = rollout.input_ids, rollout.attention_mask
    tokens = ids[:, ids.shape[1] - T :]
    if rollout.sampled_logp is not None:
        chex.assert_equal_shape([rollout.sampled_logp, rollout.response_mask])
        old_logp = rollout.sampled_logp.astype(jnp.float32)
    else:
        policy = policy_params(models, params["policy"], frozen["reference"])
        old_logp = policy_readout(
            models.policy, policy, ids, attn, T=T, temperature=temperature
        ).logprobs
    ref_logp = policy_readout(
        models.reference or models.policy,
        frozen["reference"],
        ids,
        attn,
        T=T,
        temperature=temperature,
    ).logprobs
    if models.critic is not None:
        critic = critic_params(models, params["critic"], critic_base_trunk(models, frozen))
        values, final_value = critic_readout(
            models.critic, critic, ids, attn, rollout.response_mask
        )
    else:
        values = jnp.zeros(tokens.shape, jnp.float32)
        final_value = jnp.zeros(tokens.shape[:1], jnp.float32)
    step_scores, orm = reward_model_scores(
        models.prm,
        models.orm,
        frozen,
        ids,
        attn,
        rollout.response_mask,
        rollout.step_end,
        rollout.step_mask,
        step_scores,
    )
    mask = rollout.response_mask
    implicit_logp = None
    if models.implicit_prm is not None:
        implicit_logp = (
            policy_readout(
                models.implicit_prm, params["implicit_prm"], ids, attn, T=T, temperature=temperature
            ).logprobs
            * mask
        )
    return Scored(
        old_logp * mask,
        ref_logp * mask,
        values * mask,
        step_scores,
        orm,
        final_value,
        implicit_logp,
    )


def build_experience(
    rollout: Rollout,
    scored: Scored,
    reward: RewardSpec,
    *,
    algorithm: str = "ppo",
    group_size: int = 1,
    kl_in_loss: bool = False,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten_advantages: bool = True,
    truncation: str = "grade",
    value_stats: ValueNormStats | None = None,
    value_norm_beta: float = 0.99995,
    overlong_buffer: int | None = None,
    overlong_penalty: float = 1.0,
    implicit_prm_beta: float = 0.05,
    implicit_prm_normalization: str = "none",
) -> tuple[Any, ...]:  # (Experience, metrics) or (Experience, metrics, ValueNormStats)
    """Advantages of a rollout, plus metrics: (experience, metrics), with the updated value
    statistics third when `value_stats` is given.

    `reward` is the run's `reward` config section as it is: which rewards enter (use_prm,
    use_orm), the shaping method, alpha, eta, the ORM weight, the KL coefficient (0 in the
    reward when `kl_in_loss`: the loss carries it) and the k3 clamp. ppo: token rewards (the
    order of docs/method.md section 2) -> GAE with the critic -> optional whitening
    (_critic_advantages, which also applies `value_stats`, ppo.value_norm). grpo, dr_grpo,
    rloo: rows are `group_size` samples of each prompt (group_advantages, docs/method.md
    section 11). truncation (ppo.truncation): _graded_outcomes, and for "zero_and_bootstrap"
    GAE's bootstrap. reward.prof_remove (critic-free only): _prof_kept_rows; a dropped row
    gets advantage 0 and a zeroed response_mask, so the loss gives it no gradient and no
    weight (token_sum still divides by the constant B * T). overlong_buffer (DAPO):
    _with_overlong_penalty. reward.method=prime: PRIME's token rewards from
    scored.implicit_logp (_rollout_token_rewards, with implicit_prm_beta and
    implicit_prm_normalization), and the experience carries the success labels that train
    the implicit PRM.
    """
    _check_experience_options(rollout, scored, reward, algorithm, truncation, value_stats)
    mask = rollout.response_mask
    success, orm_score = _graded_outcomes(rollout, scored, truncation)
    prime = dict(
        implicit_prm_beta=implicit_prm_beta, implicit_prm_normalization=implicit_prm_normalization
    )
    rewards = _rollout_token_rewards(
        rollout, scored, reward, success, orm_score, kl_in_loss, **prime
    )
    overlong = None
    if overlong_buffer is not None:  # DAPO: a length penalty joins the outcome reward
        rewards, overlong = _with_overlong_penalty(
            rewards, mask, buffer=overlong_buffer, factor=overlong_penalty
        )
    gae, keep = None, None
    if ALGORITHM_DEFAULTS[algorithm].critic:
        critic_settings = dict(gamma=gamma, lam=lam, whiten=whiten_advantages)
        critic_settings.update(value_stats=value_stats, value_norm_beta=value_norm_beta)
        gae = _critic_advantages(
            rollout, scored, rewards.total, truncation=truncation, **critic_settings
        )
        advantages, targets = gae.advantages, gae.targets
    else:
        advantages, keep = _critic_free_advantages(
            rollout, scored, rewards, reward, success, algorithm=algorithm, group_size=group_size
        )
        targets = jnp.zeros_like(advantages)
    # PROF's dropped rows leave the loss: no tokens, so no gradient and no weight
    loss_mask = mask if keep is None else mask * keep[:, None].astype(mask.dtype)
    metrics = _experience_metrics(
        rollout, scored, rewards, advantages, loss_mask, success, keep, overlong, gae
    )
    experience = Experience(
        *(rollout.input_ids, rollout.attention_mask, loss_mask),
        *(scored.old_logp, scored.ref_logp, scored.old_values),
        *(advantages * loss_mask, targets * loss_mask),
        labels=success if _uses_prime(reward) else None,
    )
    if value_stats is not None:
        return experience, metrics, gae.value_stats
    return experience, metrics


def _critic_free_advantages(
    rollout: Rollout,
    scored: Scored,
    rewards: TokenRewards,
    reward: RewardSpec,
    success: jax.Array,  # [B] after truncation
    *,
    algorithm: str,
    group_size: int,
) -> tuple[jax.Array, jax.Array | None]:  # advantages [B, T], PROF's kept rows [B] or None
    """group_advantages of a critic-free algorithm, after PROF's filter (reward.prof_remove)
    when the run has one."""
    keep = None
    if reward.prof_remove is not None:
        keep = _prof_kept_rows(rollout, scored, success, reward.prof_remove, group_size)
    advantages = group_advantages(
        rollout, scored, rewards, reward, algorithm=algorithm, group_size=group_size, keep=keep
    )
    return advantages, keep


def _uses_prime(reward: RewardSpec) -> bool:
    """Whether the process reward is PRIME's implicit PRM (reward.method=prime, use_prm)."""
    return reward.use_prm and reward.method == "prime"


def _with_prime_rewards(
    rewards: TokenRewards,
    scored: Scored,
    mask: jax.Array,  # [B, T]
    *,
    alpha: float,
    beta: float,
    normalization: str,
) -> TokenRewards:  # each [B, T]
    """PRIME's process reward alpha * beta log(pi_phi / pi_ref) on every response token
    (rlr.prime_token_rewards) joins rewards.process and rewards.total."""
    process = alpha * prime_token_rewards(
        scored.implicit_logp, scored.ref_logp, mask, beta=beta, normalization=normalization
    )
    return rewards._replace(process=rewards.process + process, total=rewards.total + process)


def _check_experience_options(
    rollout: Rollout,
    scored: Scored,
    reward: RewardSpec,
    algorithm: str,
    truncation: str,
    value_stats: ValueNormStats | None,
) -> None:
    """Refuses the build_experience options that the algorithm cannot apply."""
    critic = ALGORITHM_DEFAULTS[algorithm].critic
    if _uses_prime(reward) and scored.implicit_logp is None:
        raise ValueError("reward.method=prime needs the implicit PRM's log-probs in scored")
    if critic and reward.use_prm and reward.method == "min_form":
        raise ValueError("reward.method=min_form is critic-free only: GAE sums rewards")
    if critic and reward.prof_remove is not None:
        raise ValueError("reward.prof_remove is critic-free only: ppo has no groups to filter")
    if truncation != "grade":
        if rollout.truncated is None:
            raise ValueError(f"ppo.truncation={truncation} needs rollout.truncated")
        if truncation == "zero_and_bootstrap" and not critic:
            raise ValueError(f"ppo.truncation=zero_and_bootstrap needs a critic, not {algorithm}")
    if value_stats is not None and not critic:
        raise ValueError(f"value normalisation needs a critic, not {algorithm}")


def _graded_outcomes(
    rollout: Rollout, scored: Scored, truncation: str
) -> tuple[jax.Array, jax.Array]:  # success [B], orm_score [B]
    """Success and ORM score as the rewards read them: as graded under truncation "grade";
    "zero" and "zero_and_bootstrap" (needs rollout.truncated) give a truncated row success 0
    and ORM score 0."""
    success, orm_score = rollout.success, scored.orm_score
    if truncation == "grade":
        return success, orm_score
    ended = 1.0 - rollout.truncated.astype(jnp.float32)
    return success * ended, orm_score * ended


def _rollout_token_rewards(
    rollout: Rollout,
    scored: Scored,
    reward: RewardSpec,
    success: jax.Array,  # [B] after truncation
    orm_score: jax.Array,  # [B] after truncation
    kl_in_loss: bool,
    *,
    implicit_prm_beta: float,
    implicit_prm_normalization: str,
) -> TokenRewards:  # each [B, T]
    """The token rewards of the `reward` section: reward.method's step rewards
    (process_step_rewards; pure_softmin's replace the shaped ones) with use_prm, or PRIME's
    token rewards (_with_prime_rewards) with method=prime, the ORM term with use_orm, and the
    KL reward unless the loss carries the KL."""
    step_rewards = None
    steps = reward.use_prm and not _uses_prime(reward)  # PRIME rewards tokens, not steps
    if steps:
        step_rewards = process_step_rewards(scored.step_scores, rollout.step_mask, reward)
    rewards = token_rewards(
        success,
        rollout.response_mask,
        step_rewards,
        rollout.step_end if steps else None,
        rollout.step_mask if steps else None,
        orm_score if reward.use_orm else None,
        scored.old_logp,
        scored.ref_logp,
        method="raw",  # the step rewards are shaped already (process_step_rewards)
        alpha=reward.alpha,
        eta=reward.eta,
        orm_weight=reward.orm_weight,
        kl_coef=0.0 if kl_in_loss else reward.kl_coef,
        kl_estimator=reward.kl_estimator or "k1",  # unset (and unused) when the KL is in the loss
        kl_clamp=reward.kl_clamp if reward.kl_estimator == "k3" else None,
    )
    if not _uses_prime(reward):
        return rewards
    return _with_prime_rewards(
        rewards,
        scored,
        rollout.response_mask,
        alpha=reward.alpha,
        beta=implicit_prm_beta,
        normalization=implicit_prm_normalization,
    )


def _with_overlong_penalty(
    rewards: TokenRewards,
    mask: jax.Array,  # [B, T] response tokens
    *,
    buffer: int,
    factor: float,
) -> tuple[TokenRewards, jax.Array]:  # rewards, the penalty [B, T]
    """DAPO's overlong shaping: rlr.overlong_penalty of each row's length (budget T, the
    response width) joins the outcome reward at the row's last token (rewards.outcome and
    total): through GAE with a critic, into the group's outcome reward without one."""
    lengths = jnp.sum(mask, axis=1)
    penalty = overlong_penalty_of(lengths, max_length=mask.shape[1], buffer=buffer, factor=factor)
    overlong = last_token_onehot(mask) * penalty[:, None]
    rewards = rewards._replace(total=rewards.total + overlong, outcome=rewards.outcome + overlong)
    return rewards, overlong


class _CriticAdvantages(NamedTuple):
    """GAE's results with a critic (all [B, T] but value_stats)."""

    advantages: jax.Array  # whitened when asked
    returns: jax.Array  # in value units
    targets: jax.Array  # the critic's targets: returns, normalised under value normalisation
    values: jax.Array  # the critic's values in value units (de-normalised)
    value_stats: ValueNormStats | None  # the updated statistics, or None


def _critic_advantages(
    rollout: Rollout,
    scored: Scored,
    total_rewards: jax.Array,  # [B, T]
    *,
    truncation: str,
    gamma: float,
    lam: float,
    whiten: bool,
    value_stats: ValueNormStats | None,
    value_norm_beta: float,
) -> _CriticAdvantages:
    """GAE with the critic, then optional whitening. "zero_and_bootstrap" truncation makes a
    truncated row's next value after its last token the critic's V(s_L) (scored.final_value)
    instead of 0, as ReaLHF. value_stats (ppo.value_norm): the critic's outputs are normalised
    values; they (and the bootstrap) are de-normalised with these statistics for GAE, the
    statistics take one EMA step (decay value_norm_beta) with the batch's returns, and the
    critic's targets are the returns normalised by the updated statistics, in ReaLHF's order
    (PPOCriticInterface.train_step)."""
    mask = rollout.response_mask
    values, final_value = scored.old_values, scored.final_value
    if value_stats is not None:  # the critic speaks in normalised units
        values = denormalize_values(values, value_stats) * mask
        final_value = denormalize_values(final_value, value_stats)
    bootstrap = None
    if truncation == "zero_and_bootstrap":
        bootstrap = final_value * rollout.truncated.astype(jnp.float32)
    advantages, returns = gae_advantages(
        total_rewards, values, mask, gamma=gamma, lam=lam, bootstrap_value=bootstrap
    )
    targets = returns
    if value_stats is not None:
        value_stats = value_norm_update(value_stats, returns, mask, beta=value_norm_beta)
        targets = normalize_values(returns, value_stats) * mask
    if whiten:
        advantages = masked_whiten(advantages, mask)
    return _CriticAdvantages(advantages, returns, targets, values, value_stats)


def _prof_kept_rows(
    rollout: Rollout,
    scored: Scored,
    success: jax.Array,  # [B] after truncation
    num_remove: int,
    group_size: int,
) -> jax.Array:  # [B] bool
    """PROF's filter (reward.prof_remove): drops `num_remove` rows of each group of
    `group_size` (prof_keep_mask on the success and the PRM's mean step score)."""
    B = rollout.response_mask.shape[0]
    return prof_keep_mask(
        (success > 0.5).reshape(B // group_size, group_size),
        masked_mean(scored.step_scores, rollout.step_mask, axis=1).reshape(
            B // group_size, group_size
        ),
        num_remove=num_remove,
        score_kind="probability",
    ).reshape(B)


def _experience_metrics(
    rollout: Rollout,
    scored: Scored,
    rewards: TokenRewards,
    advantages: jax.Array,  # [B, T]
    loss_mask: jax.Array,  # [B, T] response_mask less PROF's dropped rows
    success: jax.Array,  # [B] after truncation
    keep: jax.Array | None,  # [B] PROF's kept rows
    overlong: jax.Array | None,  # [B, T] DAPO's penalty
    gae: _CriticAdvantages | None,
) -> dict[str, jax.Array]:
    """build_experience's metrics: per-row reward terms, KL, advantages; PROF's
    prof/dropped_rows and prof/kept_success_rate; reward/overlong (reward/orm then stays the
    ORM's term alone); the critic's value metrics and the value statistics."""
    mask = rollout.response_mask
    rows = jnp.maximum(jnp.sum(jnp.any(mask > 0, axis=1)), 1)
    per_row = lambda x: jnp.sum(x) / rows  # noqa: E731  (a row's summed reward, batch mean)
    metrics = {
        "reward/total": per_row(rewards.total),
        "reward/success": per_row(rewards.success),
        "reward/prm": per_row(rewards.process),
        "reward/orm": per_row(rewards.outcome),
        "reward/kl": per_row(rewards.kl),
        "return/prm_raw_sum": per_row(scored.step_scores * rollout.step_mask),
        # steps whose shaped PRM reward is not 0, per valid step: 0 with use_prm means the
        # process reward vanished (eta <= 0 clipping probabilities, alpha = 0)
        "reward/prm_nonzero_fraction": jnp.sum((rewards.process != 0) & (mask > 0))
        / jnp.maximum(jnp.sum(rollout.step_mask), 1),
        "kl/k1_per_token": masked_mean(scored.old_logp - scored.ref_logp, mask),
        "advantage/mean": masked_mean(advantages, loss_mask),
        "advantage/first_token_mean": jnp.sum(advantages[:, 0]) / rows,
    }
    if keep is not None:
        metrics["prof/dropped_rows"] = jnp.sum(~keep).astype(jnp.float32)
        metrics["prof/kept_success_rate"] = masked_mean(success, keep)
    if overlong is not None:
        metrics["reward/overlong"] = per_row(overlong)
        metrics["reward/orm"] = per_row(rewards.outcome - overlong)
    if gae is not None:
        returns, values = gae.returns, gae.values
        explained = 1.0 - masked_var(returns - values, mask) / jnp.maximum(
            masked_var(returns, mask), 1e-8
        )
        metrics["value/mean"] = masked_mean(values, mask)
        metrics["value/explained_variance"] = explained
        metrics["return/mean_first_token"] = jnp.sum(returns[:, 0]) / rows
    if gae is not None and gae.value_stats is not None:
        norm_mean, norm_std = value_norm_mean_std(gae.value_stats)
        metrics["value_norm/mean"] = norm_mean
        metrics["value_norm/std"] = norm_std
    return metrics


def group_advantages(
    rollout: Rollout,
    scored: Scored,
    rewards: TokenRewards,
    reward: RewardSpec,
    *,
    algorithm: str,
    group_size: int,
    keep: jax.Array | None = None,  # [B] bool, PROF's kept rows
) -> jax.Array:  # [B, T]
    """Critic-free token advantages of B = P x G rows (G consecutive samples per prompt).

    Outcome: each sample's reward (success + ORM term + summed KL reward) relative to its
    group (group_outcome_advantages), on every token. Process (use_prm): the step rewards of
    process_step_rewards (raw, clip, delta, clip_delta or pure_softmin) through
    group_process_advantages, normalised over the group (reward.process_normalization="group")
    or as their plain reward-to-go ("none"), times alpha.

    pure_softmin enters like the other methods: PURE's step rewards, with the algorithm's own
    outcome advantage beside them. rlr.pure_advantages is the authors' whole estimator (RLOO
    with a per-token leave-one-out baseline on the step rewards, the verifiable reward as
    success - 1 against the others', step-end tokens zeroed); it fixes the estimator to their
    RLOO, so using it would make `algorithm` say one thing and run another; it is not wired.
    min_form: the exact min-form return R_k = min_{j >= k} PR_j of the signed step scores
    PR = 2 x - 1 (min_form_returns with the step ends marked), on each token of step k,
    0 after the last step; times alpha, with no group normalisation (a minimum is not a sum
    of step rewards, so "group" is refused).

    prime: PRIME's process half (rlr.prime_advantages with no outcome and no whitening): each
    token reward of rewards.process (alpha beta log(pi_phi / pi_ref)) less its leave-one-out
    baseline over the group's mean token rewards, summed to go; the outcome half is the
    algorithm's own. rlr.prime_advantages whole, with the two halves summed and whitened over
    the batch, is the authors' RLOO estimator; like pure_advantages it is not wired.

    keep (PROF): the outcome advantages are relative to the kept samples of each group
    (group_outcome_advantages' keep) and a dropped row's advantages are 0.
    """
    defaults = ALGORITHM_DEFAULTS[algorithm]
    mask = rollout.response_mask
    B, T = mask.shape
    if B % group_size:
        raise ValueError(f"{B} rows do not split into groups of G={group_size}")
    P, G = B // group_size, group_size
    outcome = jnp.sum((rewards.success + rewards.outcome + rewards.kl) * mask, axis=1)
    per_sample = group_outcome_advantages(
        outcome.reshape(P, G),
        scale=defaults.group_scale,
        leave_one_out=defaults.leave_one_out,
        keep=None if keep is None else keep.reshape(P, G),
    )
    advantages = per_sample.reshape(B)[:, None] * mask
    if reward.use_prm and reward.method == "min_form":
        if reward.process_normalization == "group":
            raise ValueError("reward.method=min_form takes no group normalisation")
        signed = process_step_rewards(scored.step_scores, rollout.step_mask, reward)
        ends = place_at_tokens(
            jnp.ones_like(signed), rollout.step_end, rollout.step_mask, num_tokens=T
        )
        placed = place_at_tokens(signed, rollout.step_end, rollout.step_mask, num_tokens=T)
        process = min_form_returns(placed, mask, reward_mask=ends > 0)
        advantages = advantages + reward.alpha * process
    elif _uses_prime(reward):  # rewards.process holds alpha times PRIME's token rewards
        advantages = advantages + _prime_process_returns(rewards.process, mask, group_size)
    elif reward.use_prm:
        K = rollout.step_end.shape[1]
        shaped = process_step_rewards(scored.step_scores, rollout.step_mask, reward)
        process = group_process_advantages(
            shaped.reshape(P, G, K),
            rollout.step_mask.reshape(P, G, K),
            rollout.step_end.reshape(P, G, K),
            mask.reshape(P, G, T),
            scale=defaults.group_scale if reward.process_normalization == "group" else "none",
            center=reward.process_normalization == "group",
        )
        advantages = advantages + reward.alpha * process.reshape(B, T)
    if keep is not None:
        advantages = advantages * keep[:, None].astype(advantages.dtype)
    return advantages


def _prime_process_returns(
    token_rewards: jax.Array,  # [B, T] PRIME's token rewards (times alpha)
    mask: jax.Array,  # [B, T]
    group_size: int,
) -> jax.Array:  # [B, T]
    """PRIME's process half of its RLOO returns (rlr.prime_advantages with no outcome and no
    whitening) over groups of `group_size` consecutive rows."""
    B, T = mask.shape
    P, G = B // group_size, group_size
    zeros = jnp.zeros((P, G), jnp.float32)
    _, returns = prime_advantages(
        token_rewards.reshape(P, G, T), zeros, mask.reshape(P, G, T), whiten=False
    )
    return returns.reshape(B, T)


def process_step_rewards(
    step_scores: jax.Array,  # [B, K] PRM probability of each step prefix
    step_mask: jax.Array,  # [B, K]
    reward: RewardSpec,
) -> jax.Array:  # [B, K] float32, 0 on padding
    """The step rewards of reward.method, before alpha: Gao et al.'s raw / clip / delta /
    clip_delta (shape_process_rewards); pure_softmin, PURE's w_k PR_k with
    w = softmax(-PR / softmin_temperature) and PR = 2 x - 1 (pure_softmin_step_rewards;
    null temperature: 0.1); min_form, the signed score PR_k = 2 x - 1 itself, whose minimum to
    go is the min-form return (group_advantages)."""
    if reward.method == "pure_softmin":
        temperature = reward.softmin_temperature
        return pure_softmin_step_rewards(
            step_scores,
            step_mask,
            temperature=PURE_SOFTMIN_TEMPERATURE if temperature is None else temperature,
            score_kind="probability",
        )
    if reward.method == "min_form":
        signed = 2.0 * step_scores.astype(jnp.float32) - 1.0
        return jnp.where(step_mask.astype(bool), signed, 0.0)
    return shape_process_rewards(step_scores, step_mask, method=reward.method, eta=reward.eta)


def ppo_loss(
    models: PPOModels,
    params: dict[str, Any],
    batch: Experience,
    *,
    clip_eps: float,
    value_clip_eps: float,
    aggregation: str = "token_mean",
    kl_coef: float = 0.0,
    dual_clip: float | None = None,
    kl_clamp: float | None = None,
    temperature: float = 1.0,
    critic_base: Any = None,
    clip_eps_low: float | None = None,
    clip_eps_high: float | None = None,
    importance_ratio: str = "token",
    base: Any = None,
    implicit_prm_beta: float = 0.05,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Policy surrogate (tokens aggregated as `aggregation` says, dual-clipped when
    `dual_clip` is set; clip range and ratio as ppo_policy_loss's keywords), plus the
    clipped value loss when there is a critic, plus kl_coef times the k3 KL to the reference
    (clamped to +-kl_clamp when set) aggregated the same way
    (GRPO's KL in the loss; 0 leaves it out). Under LoRA, params["policy"] are the adapters
    and `base` the frozen base weights they sit on (not differentiated); with
    ppo.critic_lora, `critic_base` is the frozen trunk the critic's adapters sit on
    (critic_base_trunk). With PRIME's implicit PRM (models.implicit_prm), plus its
    cross-entropy against batch.labels (rlr.prime_implicit_prm_loss with implicit_prm_beta):
    its parameters are disjoint from the policy's and the critic's, so the sum trains each
    network on its own loss."""
    mask = batch.response_mask
    T = mask.shape[1]
    ids, attn = batch.input_ids, batch.attention_mask
    readout = policy_readout(
        models.policy,
        policy_params(models, params["policy"], base),
        ids,
        attn,
        T=T,
        temperature=temperature,
        packing=batch.packing,
    )
    logp = readout.logprobs
    policy_loss, policy_metrics = ppo_policy_loss(
        logp,
        batch.old_logp,
        batch.advantages,
        mask,
        clip_eps=clip_eps,
        aggregation=aggregation,
        dual_clip=dual_clip,
        clip_eps_low=clip_eps_low,
        clip_eps_high=clip_eps_high,
        importance_ratio=importance_ratio,
    )
    entropy = masked_mean(readout.entropy, mask)
    metrics = {
        "loss/policy": policy_loss,
        "policy/entropy": entropy,
        **{f"policy/{k}": v for k, v in policy_metrics.items()},
    }
    total = policy_loss
    if models.critic is not None:
        critic = critic_params(models, params["critic"], critic_base)
        value_loss, value_metrics = _value_loss(models.critic, critic, batch, value_clip_eps)
        metrics.update(value_metrics)
        total = total + value_loss
    if kl_coef:
        kl = kl_penalty(logp, batch.ref_logp, estimator="k3", clamp=kl_clamp)
        kl_loss = aggregate_token_losses(kl, mask, aggregation=aggregation)
        metrics["loss/kl"] = kl_loss
        total = total + kl_coef * kl_loss
    if models.implicit_prm is not None:
        prm_loss, prm_metrics = _implicit_prm_loss(
            models.implicit_prm, params["implicit_prm"], batch, temperature, implicit_prm_beta
        )
        metrics.update(prm_metrics)
        total = total + prm_loss
    return total, metrics


def _value_loss(
    module: nn.Module, params: Any, batch: Experience, clip_eps: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The critic's clipped value loss on a minibatch (ppo_value_loss) and its metrics."""
    values = critic_values(
        module,
        params,
        batch.input_ids,
        batch.attention_mask,
        T=batch.response_mask.shape[1],
        packing=batch.packing,
    )
    loss, metrics = ppo_value_loss(
        values, batch.old_values, batch.returns, batch.response_mask, clip_eps=clip_eps
    )
    return loss, {"loss/value": loss, **{f"value/{k}": v for k, v in metrics.items()}}


def _implicit_prm_loss(
    module: nn.Module, params: Any, batch: Experience, temperature: float, beta: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PRIME's cross-entropy of the implicit PRM on a minibatch, and its accuracy: the
    fraction of rows (with a response token) whose sigmoid(beta sum_t log(pi_phi / pi_ref))
    falls on the side of 0.5 that their label is."""
    mask = batch.response_mask
    logp = policy_readout(
        module,
        params,
        batch.input_ids,
        batch.attention_mask,
        T=mask.shape[1],
        temperature=temperature,
        packing=batch.packing,
    ).logprobs
    loss = prime_implicit_prm_loss(logp, batch.ref_logp, mask, batch.labels, beta=beta)
    z = jnp.sum((logp - batch.ref_logp) * mask, axis=1)
    right = (z > 0) == (batch.labels > 0.5)
    rows = jnp.any(mask > 0, axis=1)
    return loss, {"loss/implicit_prm": loss, "implicit_prm/accuracy": masked_mean(right, rows)}


def make_ppo_optimizer(
    *,
    policy_lr: float,
    critic_lr: float | None,
    weight_decay: float,
    max_grad_norm: float,
    warmup_steps: int = 0,
    implicit_prm_lr: float | None = None,
) -> optax.GradientTransformation:
    """AdamW per network (own learning rate), each clipped by its own global norm; a
    critic_lr of None means there is no critic (the state holds the policy alone), an
    implicit_prm_lr of None that there is no implicit PRM (PRIME).

    With `warmup_steps` > 0 each learning rate rises linearly from 0 over that many updates,
    then stays constant.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0; got {warmup_steps}")

    def one(lr: float) -> optax.GradientTransformation:
        schedule = optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps else lr
        return optax.chain(
            optax.clip_by_global_norm(max_grad_norm),
            optax.adamw(schedule, b1=0.9, b2=0.95, eps=1e-8, weight_decay=weight_decay),
        )

    transforms = {"policy": one(policy_lr)}
    if critic_lr is not None:
        transforms["critic"] = one(critic_lr)
    if implicit_prm_lr is not None:
        transforms["implicit_prm"] = one(implicit_prm_lr)
    return per_network_optimizer(transforms)


def per_network_optimizer(
    transforms: dict[str, optax.GradientTransformation],
) -> optax.GradientTransformation:
    """Applies transforms[name] to params[name]; each network keeps its own state subtree.

    Unlike optax.multi_transform, each state subtree mirrors its network's parameters
    exactly, so rlr.sharding.optimizer_shardings can lay it out like the parameters.
    """

    def init(params):
        return {name: tx.init(params[name]) for name, tx in transforms.items()}

    def update(updates, state, params=None):
        new_updates, new_state = {}, {}
        for name, tx in transforms.items():
            sub_params = None if params is None else params[name]
            new_updates[name], new_state[name] = tx.update(updates[name], state[name], sub_params)
        return new_updates, new_state

    return optax.GradientTransformation(init, update)


def ppo_update(
    models: PPOModels,
    tx: optax.GradientTransformation,
    state: TrainState,
    batch: Experience,
    base: Any = None,
    critic_base: Any = None,
    *,
    clip_eps: float,
    value_clip_eps: float,
    aggregation: str = "token_mean",
    kl_coef: float = 0.0,
    dual_clip: float | None = None,
    kl_clamp: float | None = None,
    early_stop_ratio: float | None = None,
    temperature: float = 1.0,
    clip_eps_low: float | None = None,
    clip_eps_high: float | None = None,
    importance_ratio: str = "token",
    implicit_prm_beta: float = 0.05,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step of the policy (and the critic and implicit PRM, when the run has
    them) on a minibatch; non-finite updates are
    skipped. Other keywords as ppo_loss. Under LoRA (models.reference set) `base` is the
    policy's frozen base (frozen["reference"]): gradients and optimizer state cover only the
    adapters in state.params["policy"]. With ppo.critic_lora `critic_base` is the critic's
    frozen trunk (critic_base_trunk), and the critic's state holds its adapters and head.

    early_stop_ratio (ppo.early_stop_ratio): when the minibatch's mean importance ratio
    exp(logp - old_logp) over its valid tokens (policy/ratio_mean, read before the step)
    exceeds it, the policy's step is skipped: its parameters and optimizer state stay as they
    were, and metric policy/early_stopped is 1. The critic still steps. ReaLHF abandons the
    actor's minibatch the same way (early_stop_imp_ratio in _ppo_actor_loss_from_model_outputs,
    realhf/impl/model/interface/ppo_interface.py), by zeroing its loss, while its critic,
    a separate model, trains on; rlr skips the step outright, so AdamW's moments do not decay
    and its momentum does not move the policy either.
    """
    loss_fn = lambda p: ppo_loss(  # noqa: E731
        models,
        p,
        batch,
        clip_eps=clip_eps,
        value_clip_eps=value_clip_eps,
        aggregation=aggregation,
        kl_coef=kl_coef,
        dual_clip=dual_clip,
        kl_clamp=kl_clamp,
        temperature=temperature,
        critic_base=critic_base,
        clip_eps_low=clip_eps_low,
        clip_eps_high=clip_eps_high,
        importance_ratio=importance_ratio,
        base=base,
        implicit_prm_beta=implicit_prm_beta,
    )
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state, update_metrics = apply_gradients(state, grads, loss, tx)
    if early_stop_ratio is not None:
        stop = metrics["policy/ratio_mean"] > early_stop_ratio

        def keep_policy(new: Any, old: Any) -> Any:
            policy = jax.tree.map(lambda n, o: jnp.where(stop, o, n), new["policy"], old["policy"])
            return {**new, "policy": policy}

        new_state = new_state._replace(
            params=keep_policy(new_state.params, state.params),
            opt_state=keep_policy(new_state.opt_state, state.opt_state),
        )
        update_metrics["policy/early_stopped"] = stop.astype(jnp.float32)
    return new_state, {"loss/total": loss, **metrics, **update_metrics}


def take_rows(batch: Any, rows: chex.Array) -> Any:
    """Selects rows (the leading axis) of every array in a batch pytree."""
    return jax.tree.map(lambda x: jnp.take(x, rows, axis=0), batch)
