"""The jitted heart of a PPO iteration: score a rollout, compute advantages, update.

A rollout row is the prompt (left-padded to P) followed by the response (right-padded to T):
`input_ids [B, S = P + T]`. Response token t sits at column P + t and is predicted by the
logits at column P + t - 1, so the policy's log-prob of token t and the critic's value V(s_t)
(the state before emitting token t) are read at column P + t - 1. A PRM scores the prefix that
ends at a step's last token, so its score for step k is read at column P + step_end[b, k].

Everything here is a pure function of (models, params, arrays), jitted with explicit
shardings by the caller (rlr.training.ppo); nothing reads configs or files.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import rlr
from rlr.training.step import TrainState, apply_gradients


class Rollout(NamedTuple):
    """One iteration's sampled batch, as arrays (B rows = prompts x samples)."""

    input_ids: jax.Array  # [B, S] int32 prompt (left-padded) ++ response (right-padded)
    attention_mask: jax.Array  # [B, S] 1 on real prompt and response tokens
    response_mask: jax.Array  # [B, T] float32, 1 on generated tokens (EOS included)
    success: jax.Array  # [B] float32, 1 when the final answer is right
    step_end: jax.Array  # [B, K] int32 response index of each step's last token
    step_mask: jax.Array  # [B, K] float32, 1 for real steps


class Scored(NamedTuple):
    """What the frozen and current networks say about a rollout, before any update."""

    old_logp: jax.Array  # [B, T] policy log-probs of the sampled tokens
    ref_logp: jax.Array  # [B, T] reference-policy log-probs
    old_values: jax.Array  # [B, T] critic V(s_t)
    step_scores: jax.Array  # [B, K] PRM probability that each step prefix is correct
    orm_score: jax.Array  # [B] ORM probability that the solution is correct


class Experience(NamedTuple):
    """A minibatch-able PPO training batch (all [B, ...])."""

    input_ids: jax.Array  # [B, S]
    attention_mask: jax.Array  # [B, S]
    response_mask: jax.Array  # [B, T]
    old_logp: jax.Array  # [B, T]
    old_values: jax.Array  # [B, T]
    advantages: jax.Array  # [B, T]
    returns: jax.Array  # [B, T]


@dataclasses.dataclass(frozen=True)
class RewardSettings:
    """The reward knobs of PAPER.md section 3 (hashable, so jit can close over them)."""

    use_prm: bool = False
    use_orm: bool = False
    method: str = "clip_delta"
    alpha: float = 1.0
    eta: float = 0.0
    orm_weight: float = 1.0
    kl_coef: float = 0.1
    kl_estimator: str = "k1"
    gamma: float = 1.0
    lam: float = 1.0
    whiten_advantages: bool = True


def response_slice(x: chex.Array, *, prompt_len: int, num_tokens: int) -> chex.Array:
    """Columns P-1 .. P+T-2 of a [B, S, ...] array: the predictions for response tokens 0..T-1."""
    return jax.lax.slice_in_dim(x, prompt_len - 1, prompt_len - 1 + num_tokens, axis=1)


def policy_logits(
    policy: nn.Module, params: Any, input_ids: chex.Array, attention_mask: chex.Array, *, T: int
) -> chex.Array:  # [B, T, V] f32
    """Logits that predict each response token.

    The LM head runs on the T response columns only ([B, T, V], not [B, S, V]): with a large
    vocabulary the head is most of the memory of a forward pass.
    """
    prompt_len = input_ids.shape[1] - T
    variables = {"params": params}
    hidden = policy.apply(
        variables, input_ids, attention_mask, method=lambda m, i, a: m.model(i, a)
    )
    hidden = response_slice(hidden, prompt_len=prompt_len, num_tokens=T)
    return policy.apply(variables, hidden, method=lambda m, h: m.logits(h))


def critic_values(
    critic: nn.Module, params: Any, input_ids: chex.Array, attention_mask: chex.Array, *, T: int
) -> chex.Array:  # [B, T] f32
    """V(s_t) for each response token t: the critic's score at the column before token t."""
    prompt_len = input_ids.shape[1] - T
    scores = critic.apply({"params": params}, input_ids, attention_mask)[..., 0]
    return response_slice(scores, prompt_len=prompt_len, num_tokens=T)


def token_logits_at(
    token_logits: chex.Array,  # [B, S] per-column score logits
    positions: chex.Array,  # [B, K] response indices
    *,
    prompt_len: int,
) -> chex.Array:  # [B, K] logits
    """Score logits read at response positions (column P + position, clipped into the row).

    The one place where PRM / ORM scores are read: PPO reads sigmoid of this, and reward-model
    training puts its loss on exactly these logits.
    """
    chex.assert_rank([token_logits, positions], 2)
    columns = jnp.clip(positions + prompt_len, 0, token_logits.shape[1] - 1)
    return jnp.take_along_axis(token_logits, columns, axis=1)


def token_scores_at(
    token_scores: chex.Array,  # [B, S] per-column score logits
    positions: chex.Array,  # [B, K] response indices
    *,
    prompt_len: int,
) -> chex.Array:  # [B, K] probabilities
    """sigmoid(score) read at response positions (column P + position)."""
    return jax.nn.sigmoid(token_logits_at(token_scores, positions, prompt_len=prompt_len))


def last_response_index(response_mask: chex.Array) -> chex.Array:  # [B, T] -> [B] int32
    """Index of each row's last response token (its EOS when present): where an ORM is read."""
    return jnp.maximum(jnp.sum(response_mask, axis=1).astype(jnp.int32) - 1, 0)


def prm_step_scores(
    prm: nn.Module,
    params: Any,
    input_ids: chex.Array,  # [B, S]
    attention_mask: chex.Array,  # [B, S]
    step_end: chex.Array,  # [B, K]
    step_mask: chex.Array,  # [B, K]
    *,
    T: int,
) -> chex.Array:  # [B, K] in (0, 1), 0 on padded steps
    """A token-classification PRM's probability that each step prefix p(k) is correct."""
    prompt_len = input_ids.shape[1] - T
    logits = prm.apply({"params": params}, input_ids, attention_mask)[..., 0]
    return token_scores_at(logits, step_end, prompt_len=prompt_len) * step_mask


def orm_scores(
    orm: nn.Module,
    params: Any,
    input_ids: chex.Array,  # [B, S]
    attention_mask: chex.Array,  # [B, S]
    response_mask: chex.Array,  # [B, T]
    *,
    T: int,
) -> chex.Array:  # [B] in (0, 1)
    """An ORM's probability that the whole solution is correct, read at its last token."""
    prompt_len = input_ids.shape[1] - T
    logits = orm.apply({"params": params}, input_ids, attention_mask)[..., 0]
    last = last_response_index(response_mask)
    return token_scores_at(logits, last[:, None], prompt_len=prompt_len)[:, 0]


@dataclasses.dataclass(frozen=True)
class PPOModels:
    """The Flax modules of a PPO run (static; parameters travel separately)."""

    policy: nn.Module  # Qwen2ForCausalLM
    critic: nn.Module  # Qwen2ForTokenClassification(num_labels=1)
    prm: nn.Module | None = None  # Qwen2ForTokenClassification(num_labels=1)
    orm: nn.Module | None = None  # token-classification trunk read at the last token


def score_rollout(
    models: PPOModels,
    params: dict[str, Any],  # {"policy", "critic"}
    frozen: dict[str, Any],  # {"reference", "prm"?, "orm"?}
    rollout: Rollout,
) -> Scored:
    """Runs every network over the rollout once (no gradients)."""
    T = rollout.response_mask.shape[1]
    ids, attn = rollout.input_ids, rollout.attention_mask
    tokens = ids[:, ids.shape[1] - T :]
    old_logp = rlr.token_logprobs(
        policy_logits(models.policy, params["policy"], ids, attn, T=T), tokens
    )
    ref_logp = rlr.token_logprobs(
        policy_logits(models.policy, frozen["reference"], ids, attn, T=T), tokens
    )
    values = critic_values(models.critic, params["critic"], ids, attn, T=T)
    if models.prm is not None:
        step_scores = prm_step_scores(
            models.prm, frozen["prm"], ids, attn, rollout.step_end, rollout.step_mask, T=T
        )
    else:
        step_scores = jnp.zeros(rollout.step_end.shape, jnp.float32)
    if models.orm is not None:
        orm = orm_scores(models.orm, frozen["orm"], ids, attn, rollout.response_mask, T=T)
    else:
        orm = jnp.zeros(rollout.success.shape, jnp.float32)
    mask = rollout.response_mask
    return Scored(old_logp * mask, ref_logp * mask, values * mask, step_scores, orm)


def build_experience(
    rollout: Rollout, scored: Scored, settings: RewardSettings
) -> tuple[Experience, dict[str, jax.Array]]:
    """Token rewards (PAPER.md section 3 order) -> GAE -> optional whitening, plus metrics."""
    mask = rollout.response_mask
    rewards = rlr.token_rewards(
        rollout.success,
        mask,
        scored.step_scores if settings.use_prm else None,
        rollout.step_end if settings.use_prm else None,
        rollout.step_mask if settings.use_prm else None,
        scored.orm_score if settings.use_orm else None,
        scored.old_logp,
        scored.ref_logp,
        method=settings.method,
        alpha=settings.alpha,
        eta=settings.eta,
        orm_weight=settings.orm_weight,
        beta=settings.kl_coef,
        kl_estimator=settings.kl_estimator,
    )
    advantages, returns = rlr.gae_advantages(
        rewards.total, scored.old_values, mask, gamma=settings.gamma, lam=settings.lam
    )
    if settings.whiten_advantages:
        advantages = rlr.masked_whiten(advantages, mask)
    rows = jnp.maximum(jnp.sum(jnp.any(mask > 0, axis=1)), 1)
    per_row = lambda x: jnp.sum(x) / rows  # noqa: E731  (a row's summed reward, batch mean)
    explained = 1.0 - rlr.masked_var(returns - scored.old_values, mask) / jnp.maximum(
        rlr.masked_var(returns, mask), 1e-8
    )
    metrics = {
        "reward/total": per_row(rewards.total),
        "reward/success": per_row(rewards.success),
        "reward/prm": per_row(rewards.process),
        "reward/orm": per_row(rewards.outcome),
        "reward/kl": per_row(rewards.kl),
        "return/prm_raw_sum": per_row(scored.step_scores * rollout.step_mask),
        "kl/k1_per_token": rlr.masked_mean(scored.old_logp - scored.ref_logp, mask),
        "value/mean": rlr.masked_mean(scored.old_values, mask),
        "value/explained_variance": explained,
        "advantage/mean": rlr.masked_mean(advantages, mask),
        "return/mean_first_token": jnp.sum(returns[:, 0]) / rows,
    }
    experience = Experience(
        rollout.input_ids,
        rollout.attention_mask,
        mask,
        scored.old_logp,
        scored.old_values,
        advantages * mask,
        returns * mask,
    )
    return experience, metrics


def ppo_loss(
    models: PPOModels,
    params: dict[str, Any],
    batch: Experience,
    *,
    clip_eps: float,
    value_clip_eps: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Policy surrogate + clipped value loss on one minibatch (separate networks)."""
    mask = batch.response_mask
    T = mask.shape[1]
    ids, attn = batch.input_ids, batch.attention_mask
    logits = policy_logits(models.policy, params["policy"], ids, attn, T=T)
    logp = rlr.token_logprobs(logits, ids[:, ids.shape[1] - T :])
    policy_loss, policy_metrics = rlr.ppo_policy_loss(
        logp, batch.old_logp, batch.advantages, mask, clip_eps=clip_eps
    )
    values = critic_values(models.critic, params["critic"], ids, attn, T=T)
    value_loss, value_metrics = rlr.ppo_value_loss(
        values, batch.old_values, batch.returns, mask, clip_eps=value_clip_eps
    )
    entropy = rlr.masked_mean(jax.lax.stop_gradient(rlr.entropy_from_logits(logits)), mask)
    metrics = {
        "loss/policy": policy_loss,
        "loss/value": value_loss,
        "policy/entropy": entropy,
        **{f"policy/{k}": v for k, v in policy_metrics.items()},
        **{f"value/{k}": v for k, v in value_metrics.items()},
    }
    return policy_loss + value_loss, metrics


def make_ppo_optimizer(
    *, policy_lr: float, critic_lr: float, weight_decay: float, max_grad_norm: float
) -> optax.GradientTransformation:
    """AdamW per network (own learning rate), each clipped by its own global norm."""

    def one(lr: float) -> optax.GradientTransformation:
        return optax.chain(
            optax.clip_by_global_norm(max_grad_norm),
            optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=weight_decay),
        )

    return per_network_optimizer({"policy": one(policy_lr), "critic": one(critic_lr)})


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
    *,
    clip_eps: float,
    value_clip_eps: float,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step of policy and critic on a minibatch; non-finite updates are skipped."""
    loss_fn = lambda p: ppo_loss(  # noqa: E731
        models, p, batch, clip_eps=clip_eps, value_clip_eps=value_clip_eps
    )
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state, update_metrics = apply_gradients(state, grads, loss, tx)
    return state, {"loss/total": loss, **metrics, **update_metrics}


def take_rows(batch: Any, rows: chex.Array) -> Any:
    """Selects rows (the leading axis) of every array in a batch pytree."""
    return jax.tree.map(lambda x: jnp.take(x, rows, axis=0), batch)
