"""One builder for a PPO run's networks, optimizer, shardings, sampler and jitted steps.

`build_ppo(config, mesh=...)` loads real weights and places them on the mesh (what
`rlr ppo` trains with); `build_ppo(config, mesh=..., abstract=True)` builds the same thing
from shapes alone, every array a `jax.ShapeDtypeStruct` carrying its sharding (what
`rlr plan` compiles to read XLA's memory analysis, decoding included). Both go through the
same code, so the plan sizes exactly the networks the trainer loads (the policy, its frozen
reference, the critic, and every configured PRM / ORM: they score every variant, as a
diagnostic, even when the reward does not use them) and the sampler it decodes with.

Why one module (over 600 lines): the real and the abstract build share every helper below;
split apart, what `rlr plan` sizes and what `rlr ppo` loads could drift, which is what this
module exists to prevent.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

import rlr
from rlr import sharding
from rlr.continuous_sampling import ContinuousSampler
from rlr.models import DecoderForTokenClassification, init_params
from rlr.models.architecture import LoraConfig
from rlr.models.lora import count_adapter_params, split_adapters
from rlr.sampling import Sampler
from rlr.training import loading, ppo_core
from rlr.training.generation import rollout_settings, sampler_for
from rlr.training.ppo_core import (
    Experience,
    PPOModels,
    Rollout,
    build_experience,
    make_ppo_optimizer,
    ppo_update,
    score_rollout,
)
from rlr.training.schemas import ALGORITHM_DEFAULTS, ModelSpec, PPOConfig
from rlr.training.train_state import TrainState, init_train_state, train_state_shardings


def trainable_networks(config: PPOConfig) -> tuple[str, ...]:
    """The networks a run trains: the policy, the critic unless the algorithm is
    group-relative (GRPO, Dr. GRPO, RLOO build, shard and checkpoint no critic), and PRIME's
    implicit PRM when the run has an `implicit_prm` section."""
    names = ("policy", "critic") if config.uses_critic else ("policy",)
    return names + (("implicit_prm",) if config.implicit_prm is not None else ())


def checkpointed_networks(config: dict[str, Any]) -> list[str]:
    """The trainable networks a saved config.yaml's run checkpoints, each with what of it
    trains: the policy (its adapters under policy.lora), the critic unless its algorithm has
    none (its adapters and head under ppo.critic_lora), and PRIME's implicit PRM when it has
    that section."""
    critic = ALGORITHM_DEFAULTS.get(config.get("algorithm", "ppo"), ALGORITHM_DEFAULTS["ppo"])
    lora = (config.get("policy") or {}).get("lora") is not None
    names = ["policy adapters" if lora else "policy"]
    if critic.critic:
        critic_lora = (config.get("ppo") or {}).get("critic_lora") is not None
        names.append("critic adapters and head" if critic_lora else "critic")
    return names + (["implicit_prm"] if config.get("implicit_prm") is not None else [])


@dataclasses.dataclass(frozen=True)
class PPOSetup:
    """What a PPO run computes with. Arrays are real (on the mesh) or abstract
    (ShapeDtypeStructs with shardings), as `build_ppo` was asked.

    sampler(params["policy"], prompt_ids, prompt_mask, key) -> SampleOutput (the rollout's
    decoding); score(params, frozen, rollout) -> Scored; experience(rollout, scored) -> (Experience,
    metrics); update(state, experience minibatch, *update_bases(frozen)) -> (state,
    metrics). `state` is the initial state: update donates its argument, so after the first
    update the caller (PPOTrainer) holds the live state and this one's buffers are gone. With
    ppo.value_norm, `value_stats` holds the initial statistics, experience(rollout, scored,
    value_stats=...) also returns the updated ones, and the trainer checkpoints them with the
    state.
    """

    config: PPOConfig
    mesh: Mesh
    models: PPOModels
    tx: optax.GradientTransformation
    state: TrainState  # params {"policy", "critic"?, "implicit_prm"?}, optimizer state, counters
    frozen: dict[str, Any]  # {"reference", "prm"?, "orm"?}
    state_shardings: TrainState
    frozen_shardings: dict[str, Any]
    sampler: Sampler | ContinuousSampler  # rollout_settings(config.rollout), the policy's module
    score: Callable[..., Any]
    experience: Callable[..., Any]
    update: Callable[..., Any]
    # A PRM that reads text (released format or its own tokenizer): its step format, the
    # jitted read of rendered rows (ids [C, S], mask [C, S], read_at [C, K]) -> [C, K], and in
    # real mode the StepScorer that renders and scores the policy's steps.
    prm_format: str | None = None
    read_prm_steps: Callable[..., Any] | None = None
    step_scorer: Any = None
    value_stats: Any = None  # rlr.ValueNormStats when ppo.value_norm, else None

    @property
    def lora(self) -> bool:
        """Whether the policy trains low-rank adapters (policy.lora): state.params["policy"]
        then holds only the adapters, and frozen["reference"], the base weights, is both the
        reference and the policy's base (one copy)."""
        return self.models.reference is not None

    def update_base(self, frozen: dict[str, Any]) -> Any:
        """The third argument of `update`: the policy's frozen base under LoRA, else None."""
        return frozen["reference"] if self.lora else None

    def update_bases(self, frozen: dict[str, Any]) -> tuple[Any, Any]:
        """The frozen arguments of `update` after the state and the minibatch: the policy's
        base (update_base) and, with ppo.critic_lora, the critic's frozen trunk (a network the
        run already holds: ppo_core.critic_base_trunk), each None without adapters."""
        return _update_bases(self.models, frozen)

    def policy_params(self, params: dict[str, Any], frozen: dict[str, Any]) -> Any:
        """The policy's whole params tree (base and adapters under LoRA), for sampling and
        export; no array is copied."""
        return ppo_core.policy_params(self.models, params["policy"], frozen["reference"])

    def parameter_counts(self) -> dict[str, int]:
        """Scalars per network: policy, critic, reference and each configured PRM / ORM."""
        networks = {**self.state.params, **self.frozen}
        counts = {name: loading.count_params(tree) for name, tree in networks.items()}
        if self.lora:  # the policy's trainable scalars are its adapters'
            counts["policy"] = count_adapter_params(self.state.params["policy"])
        return counts


def build_ppo(
    config: PPOConfig,
    *,
    mesh: Mesh,
    tokenizer: Any = None,
    abstract: bool = False,
    num_layers: int | None = None,
) -> PPOSetup:
    """Builds the networks, optimizer, shardings, sampler and jitted steps of a PPO run on
    `mesh`.

    Real mode loads the policy (or initialises it from an inline architecture, which needs
    `tokenizer` for the vocabulary), the PRM / ORM, and the critic (the policy's trunk with a
    zero score head, or a copy of the PRM / ORM). Every array goes straight to its shards
    (shardings come from eval_shape and the rules of rlr.sharding; copies and the optimizer
    state are made by jitted functions with those shardings), so no device holds more than its
    share. Abstract mode reads only config.json / `architecture` shapes; `num_layers` then
    overrides every network's depth (rlr plan compiles 1 and 2 layers and extrapolates).
    The rollout sampler is `rollout_settings(config.rollout)`'s, for the policy's module (in
    real mode with the checkpoint's EOS ids); without a tokenizer its pad and EOS ids are 0.
    """
    if num_layers is not None and not abstract:
        raise ValueError("num_layers only applies to an abstract build (rlr plan)")
    external = external_prm_format(config)  # a PRM read as text: its format
    modules = _modules(config, tokenizer, num_layers=num_layers, text_format=external)
    modules = _with_critic_adapters(config, modules)
    shardings = _trainable_parts(config, _param_shardings(modules, mesh))
    lora, critic_base = config.policy.lora is not None, critic_lora_base(config)
    trainable_names = trainable_networks(config)
    tx = _optimizer(config)
    param_shard = {name: shardings[name] for name in trainable_names}
    frozen_shard = {name: shardings[name] for name in modules if name not in trainable_names}
    if abstract:
        params = _trainable_parts(
            config, {name: abstract_params(module) for name, module in modules.items()}
        )
    else:
        modules, params = _load(config, tokenizer, modules, shardings)
    trainable = {name: params[name] for name in trainable_names}
    frozen = {name: params[name] for name in frozen_shard}
    state_shard = train_state_shardings(tx, trainable, param_shard, mesh)
    state, frozen = _initial_state(
        tx, trainable, frozen, state_shard, frozen_shard, mesh, abstract=abstract
    )
    models = _ppo_models(modules, text_prm=bool(external), lora=lora, critic_base=critic_base)
    read_prm_steps = step_scorer = None
    if external:
        read_prm_steps, step_scorer = _text_prm(
            config,
            external,
            modules["prm"],
            frozen.get("prm"),
            frozen_shard["prm"],
            mesh,
            abstract=abstract,
        )
    return PPOSetup(
        config=config,
        mesh=mesh,
        models=models,
        tx=tx,
        state=state,
        frozen=frozen,
        state_shardings=state_shard,
        frozen_shardings=frozen_shard,
        sampler=sampler_for(models.policy, tokenizer, rollout_settings(config.rollout)),
        score=jax.jit(
            functools.partial(score_rollout, models, temperature=config.rollout.temperature),
            in_shardings=(param_shard, frozen_shard, None, None),
        ),
        experience=_experience_step(config),
        update=_update_step(config, models, tx, state_shard, frozen_shard),
        prm_format=external,
        read_prm_steps=read_prm_steps,
        step_scorer=step_scorer,
        value_stats=_value_stats(config, mesh, abstract=abstract),
    )


def _initial_state(
    tx: optax.GradientTransformation,
    trainable: dict[str, Any],
    frozen: dict[str, Any],
    state_shard: TrainState,
    frozen_shard: dict[str, Any],
    mesh: Mesh,
    *,
    abstract: bool,
) -> tuple[TrainState, dict[str, Any]]:
    """The initial TrainState of the trainable params, and the frozen params: in real mode
    the state built on its shards (the frozen params as loaded), in abstract mode both as
    ShapeDtypeStructs carrying their shardings."""
    init = functools.partial(init_train_state, tx=tx)
    if abstract:
        state = _with_shardings(jax.eval_shape(init, trainable), state_shard)
        return state, _with_shardings(frozen, frozen_shard)
    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=state_shard)(trainable)
    return state, frozen


def _ppo_models(
    modules: dict[str, nn.Module], *, text_prm: bool, lora: bool, critic_base: str | None = None
) -> PPOModels:
    """The run's PPOModels: no in-graph PRM when the PRM reads text (it is scored outside),
    the reference module only under LoRA, the critic's base network with ppo.critic_lora."""
    return PPOModels(
        policy=modules["policy"],
        critic=modules.get("critic"),
        critic_base=critic_base,
        prm=None if text_prm else modules.get("prm"),
        orm=modules.get("orm"),
        reference=modules["reference"] if lora else None,
        implicit_prm=modules.get("implicit_prm"),
    )


def _param_shardings(modules: dict[str, nn.Module], mesh: Mesh) -> dict[str, Any]:
    """name -> parameter shardings of each network, computed once per module (the reference,
    and a critic from a PRM, share one)."""
    by_module: dict[int, Any] = {}
    for module in modules.values():
        if id(module) not in by_module:
            by_module[id(module)] = sharding.module_param_shardings(module, mesh)
    return {name: by_module[id(module)] for name, module in modules.items()}


def _optimizer(config: PPOConfig) -> optax.GradientTransformation:
    """AdamW for the policy and, when the run has them, the critic and the implicit PRM
    (ppo's settings; implicit_prm.lr, null there: the policy's)."""
    spec = config.effective_ppo  # the algorithm's defaults in place of nulls
    implicit = config.implicit_prm
    return make_ppo_optimizer(
        policy_lr=spec.policy_lr,
        critic_lr=spec.critic_lr if config.uses_critic else None,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
        warmup_steps=spec.warmup_steps,
        implicit_prm_lr=None if implicit is None else (implicit.lr or spec.policy_lr),
    )


def _experience_step(config: PPOConfig) -> Callable[..., Any]:
    """build_experience jitted with the run's reward, algorithm and advantage settings."""
    spec = config.effective_ppo
    return jax.jit(
        functools.partial(
            build_experience,
            reward=config.effective_reward,
            algorithm=config.algorithm,
            group_size=config.rollout.samples_per_prompt,
            kl_in_loss=config.kl_in_loss,
            gamma=spec.gamma if config.uses_critic else 1.0,
            lam=spec.lam if config.uses_critic else 1.0,
            whiten_advantages=bool(spec.whiten_advantages),
            truncation=spec.truncation,
            value_norm_beta=spec.value_norm_beta,
            overlong_buffer=config.reward.overlong_buffer,
            overlong_penalty=1.0
            if config.reward.overlong_penalty is None
            else config.reward.overlong_penalty,
            **_implicit_prm_settings(config, "beta", "normalization"),
        )
    )


def _implicit_prm_settings(config: PPOConfig, *names: str) -> dict[str, Any]:
    """implicit_prm_<name> keywords of the `implicit_prm` section's values (none without
    one: the functions' defaults are then unread)."""
    if config.implicit_prm is None:
        return {}
    return {f"implicit_prm_{name}": getattr(config.implicit_prm, name) for name in names}


def _update_step(
    config: PPOConfig,
    models: PPOModels,
    tx: optax.GradientTransformation,
    state_shard: Any,
    frozen_shard: dict[str, Any],
) -> Callable[..., Any]:
    """ppo_update jitted with the run's loss settings, the state donated and kept sharded.
    Its frozen arguments (PPOSetup.update_bases) are sharded as the networks they belong to:
    under LoRA the policy's base as the reference, with ppo.critic_lora the critic's trunk as
    that of frozen[models.critic_base]."""
    spec = config.effective_ppo
    return jax.jit(
        functools.partial(
            ppo_update,
            models,
            tx,
            clip_eps=spec.clip_eps,
            value_clip_eps=spec.value_clip_eps or 0.0,  # read only with a critic
            aggregation=config.loss_aggregation,
            kl_coef=config.effective_reward.kl_coef if config.kl_in_loss else 0.0,
            dual_clip=spec.dual_clip,
            kl_clamp=config.reward.kl_clamp,
            early_stop_ratio=spec.early_stop_ratio,
            temperature=config.rollout.temperature,
            clip_eps_low=spec.clip_eps_low,
            clip_eps_high=spec.clip_eps_high,
            importance_ratio=spec.importance_ratio,
            **_implicit_prm_settings(config, "beta"),
        ),
        in_shardings=(
            state_shard,
            None,
            *_update_bases(models, frozen_shard),
        ),
        out_shardings=(state_shard, None),
        donate_argnums=0,
    )


def _trainable_parts(config: PPOConfig, tree: dict[str, Any]) -> dict[str, Any]:
    """name -> the trainable part of each network's params (or shardings, or shapes): under
    policy.lora the policy's adapters (its base is the reference's), under ppo.critic_lora the
    critic's trunk adapters and head (ppo_core.critic_trainable); the rest as they are."""
    tree = dict(tree)
    if config.policy.lora is not None:
        tree["policy"] = split_adapters(tree["policy"])[1]
    if critic_lora_base(config):
        tree["critic"] = ppo_core.critic_trainable(tree["critic"])
    return tree


def _update_bases(models: PPOModels, frozen: dict[str, Any]) -> tuple[Any, Any]:
    """PPOSetup.update_bases of a frozen tree (arrays or shardings): the reference under
    LoRA, the critic's base network's trunk under ppo.critic_lora, else None."""
    return (
        frozen["reference"] if models.reference is not None else None,
        ppo_core.critic_base_trunk(models, frozen),
    )


def _value_stats(config: PPOConfig, mesh: Mesh, *, abstract: bool) -> Any:
    """ppo.value_norm's initial statistics, replicated on the mesh (None when it is off)."""
    if not config.ppo.value_norm:
        return None
    stats = rlr.value_norm_init()
    if abstract:
        return _with_shardings(stats, jax.tree.map(lambda _: sharding.replicated(mesh), stats))
    return jax.device_put(stats, sharding.replicated(mesh))


def external_prm_format(config: PPOConfig) -> str | None:
    """The step format of a PRM that must be read from text, or None when the PRM (if any) is
    an rlr PRM sharing the policy's tokenizer, read inside the scoring graph."""
    if config.prm is None:
        return None
    return loading.text_prm_format(config.prm, config.tokenizer_dir, what="prm")


def prm_read_shapes(config: PPOConfig) -> tuple[int, int, int]:
    """(rows C, tokens S, steps K) a text-reading PRM's scoring program is sized for: a chunk
    of rollout rows, each the prompt and response plus an allowance for the format (16 tokens
    per step for tags and chat turns, 64 for a system turn), rounded up to the length bucket
    the StepScorer pads to. A PRM tokenizer that needs many more tokens than the policy's
    for the same text needs more."""
    from rlr.models.step_scorers import length_bucket

    roll, K = config.rollout, config.reward.max_steps
    tokens = roll.max_prompt_tokens + roll.max_new_tokens + 16 * K + 64
    return roll.chunk_rows or roll.batch_size, length_bucket(tokens), K


def _text_prm(
    config: PPOConfig,
    fmt: str,
    module: nn.Module,
    params: Any,
    shardings: Any,
    mesh: Mesh,
    *,
    abstract: bool,
) -> tuple[Callable[..., Any], Any]:
    """(jitted read of rendered rows, StepScorer or None in abstract mode) of a text PRM."""
    from rlr.models.step_scorers import StepScorer, make_format, read_step_outputs

    # skywork renders a response as its steps joined by the first of reward.separators, the one
    # PPO cuts at when it can (a response cut at a later one is rendered with the first too)
    separator = config.reward.separators[0]
    try:
        step_format = make_format(fmt, prompt_style=config.data.prompt_style, separator=separator)
    except ValueError as err:
        raise ValueError(f"{err} (reward.separators[0]; prm.format {fmt!r})") from None
    rows = sharding.batch_sharding(mesh, 2)
    if abstract:
        candidates = (0, 1) if step_format.reads_lm else None
        read = jax.jit(
            functools.partial(read_step_outputs, module, step_format, candidates=candidates),
            in_shardings=(shardings, rows, rows, rows),
        )
        return read, None
    tokenizer = loading.load_tokenizer(
        loading.model_dir(config.prm.path, "prm"), what="the PRM's tokenizer (prm.path)"
    )
    C = config.rollout.chunk_rows or config.rollout.batch_size
    scorer = StepScorer(step_format, module, params, tokenizer, batch_size=C, mesh=mesh)
    return scorer.read_rows, scorer


def abstract_params(module: nn.Module) -> Any:
    """A network's params as ShapeDtypeStructs (no memory allocated)."""
    return jax.eval_shape(lambda: init_params(module, jax.random.key(0)))


def abstract_prompts(
    config: PPOConfig, mesh: Mesh
) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    """(prompt_ids [C, P], prompt_mask [C, P], key) of one sampler call of `config` as
    ShapeDtypeStructs, the prompts batch-sharded: C = rollout.chunk_rows (or the whole batch),
    P = rollout.max_prompt_tokens, as PPOTrainer samples a chunk."""
    roll = config.rollout
    shape = (roll.chunk_rows or roll.batch_size, roll.max_prompt_tokens)
    rows = sharding.batch_sharding(mesh, 2)
    prompt = jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows)
    return prompt, prompt, jax.eval_shape(lambda: jax.random.key(0))


def abstract_batches(config: PPOConfig, mesh: Mesh) -> tuple[Rollout, Experience]:
    """(scoring chunk, update minibatch) of `config` as batch-sharded ShapeDtypeStructs.

    Shapes: a chunk is [C, ...] with C = rollout.chunk_rows (or the whole batch), a minibatch
    [B / ppo.minibatches, ...]; rows are P + T tokens and K = reward.max_steps steps.
    """
    roll = config.rollout
    P, T, K = roll.max_prompt_tokens, roll.max_new_tokens, config.reward.max_steps
    C, M = roll.chunk_rows or roll.batch_size, roll.batch_size // config.ppo.minibatches

    def arr(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(
            shape, dtype, sharding=sharding.batch_sharding(mesh, len(shape))
        )

    rollout = Rollout(
        input_ids=arr((C, P + T), jnp.int32),
        attention_mask=arr((C, P + T), jnp.int32),
        response_mask=arr((C, T), jnp.float32),
        success=arr((C,), jnp.float32),
        step_end=arr((C, K), jnp.int32),
        step_mask=arr((C, K), jnp.float32),
        sampled_logp=arr((C, T), jnp.float32) if config.ppo.old_logprobs == "rollout" else None,
        truncated=arr((C,), jnp.float32),
    )
    experience = Experience(
        input_ids=arr((M, P + T), jnp.int32),
        attention_mask=arr((M, P + T), jnp.int32),
        response_mask=arr((M, T), jnp.float32),
        old_logp=arr((M, T), jnp.float32),
        ref_logp=arr((M, T), jnp.float32),
        old_values=arr((M, T), jnp.float32),
        advantages=arr((M, T), jnp.float32),
        returns=arr((M, T), jnp.float32),
        labels=arr((M,), jnp.float32) if config.implicit_prm is not None else None,
    )
    return rollout, experience


def _modules(
    config: PPOConfig, tokenizer: Any, *, num_layers: int | None, text_format: str | None
) -> dict[str, nn.Module]:
    """name -> Flax module for policy, reference, each configured PRM / ORM and, when the
    algorithm has one, the critic, from config.json / `architecture` alone (no weights are
    read). A PRM read as text (`text_format`) keeps its own network."""

    def module(spec: ModelSpec, what: str, head: str) -> nn.Module:
        network = loading.network_config(spec, tokenizer, what=what, num_layers=num_layers)
        return loading.network_module(spec, network, head=head)

    modules = {"policy": module(config.policy, "policy", "lm")}
    modules["reference"] = modules["policy"]
    # with policy.lora the policy is the reference (its base) with adapters
    modules["policy"] = loading.with_lora(modules["reference"], config.policy)
    if config.prm is not None and text_format is None:
        modules["prm"] = module(config.prm, "prm", "score")
    elif config.prm is not None:
        modules["prm"] = loading.scorer_module(
            config.prm, text_format, what="prm", num_layers=num_layers
        )
        if config.uses_critic and config.effective_ppo.critic_init == "prm":
            raise ValueError(
                f"ppo.critic_init=prm needs a PRM read in-graph (rlr's format with the "
                f"policy's tokenizer); this PRM is read as {text_format!r}: use "
                "critic_init=policy"
            )
    if config.orm is not None:
        loading.check_orm_format(config.orm, what="orm")
        modules["orm"] = module(config.orm, "orm", "score")
    if config.uses_critic and config.effective_ppo.critic_init == "policy":
        policy = modules["reference"]  # the policy's trunk, without adapters
        modules["critic"] = DecoderForTokenClassification(
            policy.config,
            num_labels=1,
            dtype=policy.dtype,
            param_dtype=policy.param_dtype,
            remat=config.policy.remat,
            scan_layers=config.policy.scan_layers,
        )
    elif config.uses_critic:
        modules["critic"] = modules[config.effective_ppo.critic_init]
    if config.implicit_prm is not None:  # PRIME: a causal LM of the policy's architecture
        modules["implicit_prm"] = modules["reference"]
    return modules


def _load(
    config: PPOConfig, tokenizer: Any, modules: dict[str, nn.Module], shardings: dict[str, Any]
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """Real parameters of every network, each written straight into its shards."""
    modules = dict(modules)
    policy, policy_params = loading.load_or_init_policy(
        config.policy, tokenizer, seed=config.seed, shardings=shardings["reference"]
    )
    modules["policy"] = modules["reference"] = policy  # with the checkpoint's EOS ids
    params = {"policy": policy_params}
    if config.policy.lora is not None:
        # the base is frozen and serves as the reference as it is: no second copy
        modules["policy"] = loading.with_lora(policy, config.policy)
        params["reference"] = policy_params
        params["policy"] = _init_adapters(modules["policy"], config.seed, shardings["policy"])
    else:
        params["reference"] = _sharded_copy(policy_params, shardings["reference"])
    for name in ("prm", "orm"):
        if name in modules:
            modules[name], params[name] = loading.load_scorer(
                getattr(config, name), what=name, shardings=shardings[name]
            )
    init = config.effective_ppo.critic_init
    if critic_lora_base(config):
        modules, params["critic"] = _critic_adapter_params(config, modules, params, shardings)
    elif config.uses_critic and init == "policy":
        # The policy's trunk and a zero score head: V = 0 everywhere at the start.
        head = jax.jit(
            lambda: jax.tree.map(
                lambda x: jnp.zeros(x.shape, x.dtype), abstract_params(modules["critic"])["score"]
            ),
            out_shardings=shardings["critic"]["score"],
        )()
        trunk = _sharded_copy(policy_params["model"], shardings["critic"]["model"])
        params["critic"] = {"model": trunk, "score": head}
    elif config.uses_critic:
        modules["critic"] = modules[init]
        params["critic"] = _sharded_copy(params[init], shardings["critic"])
    if config.implicit_prm is not None:
        modules["implicit_prm"] = policy
        params["implicit_prm"] = _implicit_prm_params(
            config, tokenizer, policy_params, shardings["implicit_prm"]
        )
    return modules, params


def _implicit_prm_params(
    config: PPOConfig, tokenizer: Any, policy_params: Any, shardings: Any
) -> Any:
    """PRIME's implicit PRM's starting weights, in their own buffers: a copy of the policy's,
    or implicit_prm.path's, which must have the policy's parameter shapes."""
    path = config.implicit_prm.path
    if path is None:
        return _sharded_copy(policy_params, shardings)
    spec = dataclasses.replace(config.policy, path=path, architecture=None, lora=None)
    _, params = loading.load_or_init_policy(
        spec, tokenizer, seed=config.seed, what="implicit_prm", shardings=shardings
    )
    want = jax.tree.map(lambda x: x.shape, policy_params)
    got = jax.tree.map(lambda x: x.shape, params)
    if got != want:
        raise ValueError(
            f"implicit_prm.path: {path} is not of the policy's architecture (its parameter "
            "shapes differ); PRIME's implicit PRM reads the policy's tokens against its "
            "reference: give a checkpoint of the same architecture, or remove the key"
        )
    return params


def critic_lora_base(config: PPOConfig) -> str | None:
    """The frozen network whose trunk the critic's adapters sit on (ppo.critic_lora): the
    reference for critic_init=policy (the policy's starting weights, which the run holds
    frozen with or without policy.lora), else the PRM / ORM the critic starts from; None
    without critic adapters."""
    if not config.uses_critic or config.ppo.critic_lora is None:
        return None
    init = config.effective_ppo.critic_init
    return "reference" if init == "policy" else init


def _with_critic_adapters(config: PPOConfig, modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """`modules` with the critic's module given ppo.critic_lora's adapters on its trunk (a new
    module: the PRM / ORM it may start from keeps its own); as they are without the key."""
    spec = config.ppo.critic_lora
    if not critic_lora_base(config):
        return modules
    lora = LoraConfig(rank=spec.rank, alpha=spec.alpha, targets=spec.targets)
    critic = modules["critic"]
    return {**modules, "critic": critic.clone(config=dataclasses.replace(critic.config, lora=lora))}


def _critic_adapter_params(
    config: PPOConfig, modules: dict[str, nn.Module], params: dict[str, Any], shardings: Any
) -> tuple[dict[str, nn.Module], Any]:
    """(modules, the critic's trainable params) under ppo.critic_lora: fresh adapters on its
    trunk (A drawn from the run's seed folded with 1, B zero) and its head (zero from the
    policy, a copy of the PRM's / ORM's), each written into its shards. Its trunk is no copy:
    the update reads frozen[critic_lora_base(config)]["model"]."""
    init = config.effective_ppo.critic_init
    if init != "policy":  # the loaded scorer's module (its EOS ids), with the adapters
        modules = _with_critic_adapters(config, {**modules, "critic": modules[init]})
    module, sharded = modules["critic"], shardings["critic"]
    key = jax.random.fold_in(jax.random.key(config.seed), 1)
    adapters = jax.jit(
        lambda: split_adapters(init_params(module, key)["model"])[1],
        out_shardings=sharded["model"],
    )()
    if init == "policy":  # a zero score head: V = 0 everywhere at the start
        head = jax.jit(
            lambda: jax.tree.map(
                lambda x: jnp.zeros(x.shape, x.dtype), abstract_params(module)["score"]
            ),
            out_shardings=sharded["score"],
        )()
    else:
        head = _sharded_copy(params[init]["score"], sharded["score"])
    return modules, {"model": adapters, "score": head}


def _init_adapters(module: nn.Module, seed: int, shardings: Any) -> Any:
    """Fresh adapters of a LoRA policy (A as PEFT draws it, B zero), written into their shards;
    XLA drops the unused base weights of the init."""
    init = lambda: split_adapters(init_params(module, jax.random.key(seed)))[1]  # noqa: E731
    return jax.jit(init, out_shardings=shardings)()


def _sharded_copy(tree: Any, shardings: Any) -> Any:
    # Frozen and trainable copies must never share buffers: the train state is donated.
    return jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=shardings)(tree)


def _with_shardings(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
