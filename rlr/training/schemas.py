"""Run-config schemas for rlr's jobs: frozen dataclasses, validated when built.

Load them with
`rlr.config_loading.load_config(PPOConfig, rlr.configs.resolve("ppo_cpu"), overrides)`
(or `rlr ppo --config ppo_cpu key=value ...`). Where the method leaves a choice open, each
algorithm's defaults follow its own paper (ALGORITHM_DEFAULTS, docs/method.md section 9): ppo
takes ReaLHF's fixed KL 0.1 in the reward, gamma 1, lambda 1, ratio clip 0.2, value clip 0.2,
whitened advantages and 4 minibatches. A key that the chosen algorithm or command does not read
has no default: setting it is an error that says why, rather than a setting that does nothing.
ppo's options from ReaLHF's PPO experiment defaults (PPOHyperparameters,
realhf/experiments/common/ppo_exp.py) that are off by default, so that the shipped CPU
reproductions keep their results: a response cut off by the token budget is graded like any
other (ppo.truncation=grade), where ReaLHF gives it no reward score and bootstraps its last
value (zero_and_bootstrap); no value normalisation (ReaLHF: value_norm=True, beta 0.99995); no
early stop on the importance ratio (ReaLHF: early_stop_imp_ratio=5). REALHF_PPO below turns all
three on. Two options come from verl and are off by default, as ReaLHF has neither: the dual
clip (ppo.dual_clip; verl's clip_ratio_c=3) and the clamp of the k3 KL (reward.kl_clamp; verl's
low_var_kl clamps at 10).

This module imports only the standard library and rlr.config_loading, so the CLI can load, validate
and print a config before anything heavy is imported. The config of `rlr reproduce` and its
reward variants are in rlr.reproduce.schemas.

Why one module (over 600 lines): PPOConfig's checks read the reward, rollout and PPO sections
and the algorithm defaults together (a key the algorithm ignores is an error here), and the SFT
and reward-model configs share the model, data, eval and LoRA sections; every key a YAML file
may hold is in this one file, which the light command layer imports alone.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Literal

from rlr.config_loading import require

# raw, clip, delta, clip_delta: Gao et al. 2024; pure_softmin, min_form: PURE (Cheng et al. 2025,
# rlr.process_designs; min_form is critic-free only: GAE sums rewards); prime: PRIME's implicit
# PRM (Cui et al. 2025), a trained network of its own (the `implicit_prm` section)
RewardMethod = Literal["raw", "clip", "delta", "clip_delta", "pure_softmin", "min_form", "prime"]
DType = Literal["float32", "bfloat16"]
# Problem files (prompts with gold answers): rlr's own Problem JSONL ("synthetic", as
# `rlr make-data` writes it) or a public dataset's format.
ProblemFormat = Literal["synthetic", "gsm8k", "math", "mathinstruct"]
PROBLEM_FORMATS: tuple[str, ...] = typing.get_args(ProblemFormat)
# Step-labelled solution files: rlr's own StepLabelled JSONL ("rlr", as `rlr make-data` and
# `rlr label-steps` write it), PRM800K or Math-Shepherd.
LabelledFormat = Literal["rlr", "prm800k", "math_shepherd"]
LABELLED_FORMATS: tuple[str, ...] = typing.get_args(LabelledFormat)
# How a PRM renders and reads steps (rlr.models.step_scorers; null: from its config.json)
StepFormat = Literal["rlr", "qwen_math_prm", "math_shepherd", "skywork", "rlhflow", "pure"]
STEP_FORMATS: tuple[str, ...] = typing.get_args(StepFormat)
Algorithm = Literal["ppo", "grpo", "dr_grpo", "rloo"]
LossAggregation = Literal["token_mean", "sequence_mean", "token_sum"]


@dataclasses.dataclass(frozen=True)
class AlgorithmDefaults:
    """What an `algorithm` means: a critic with GAE (ppo), or group-relative advantages of the
    G samples of each prompt, scaled by the group std or not, with a leave-one-out baseline or
    the group mean; how the policy loss aggregates tokens; where the KL penalty goes."""

    critic: bool
    group_scale: str  # "std" | "none" (group-relative algorithms only)
    leave_one_out: bool
    loss_aggregation: str
    kl_in_loss: bool
    kl_coef: float


ALGORITHM_DEFAULTS: dict[str, AlgorithmDefaults] = {
    # ReaLHF's PPO (the paper's framework): a fixed KL of 0.1 in the per-token reward.
    "ppo": AlgorithmDefaults(True, "none", False, "token_mean", False, 0.1),
    # DeepSeekMath (arXiv 2402.03300) section 4.1 and its GRPO experiments: a k3 KL in the
    # loss with beta = 0.04, advantages scaled by the group std, per-sequence token means.
    "grpo": AlgorithmDefaults(False, "std", False, "sequence_mean", True, 0.04),
    # Dr. GRPO (Liu et al. 2025, arXiv 2503.20783; their oat recipe): no std scaling, a token
    # sum, and beta = 0 (no KL term).
    "dr_grpo": AlgorithmDefaults(False, "none", False, "token_sum", True, 0.0),
    # RLOO (Ahmadian et al. 2024, arXiv 2402.14740): the KL is part of the sequence reward;
    # 0.05 is trl's RLOOConfig.kl_coef.
    "rloo": AlgorithmDefaults(False, "none", True, "token_mean", False, 0.05),
}
# The PPOSpec keys only a critic reads (GAE and the value loss): unset for grpo, dr_grpo, rloo.
CRITIC_KEYS = ("gamma", "lam", "whiten_advantages", "critic_lr", "value_clip_eps", "critic_init")
# What each critic key is for, in the error a critic-free run gives when one is set.
_CRITIC_KEY_USE = {
    "gamma": "no GAE",
    "lam": "no GAE",
    "whiten_advantages": "no GAE advantages to whiten (its group scale is the algorithm's)",
    "critic_lr": "no critic to train",
    "value_clip_eps": "no value loss",
    "critic_init": "no critic to initialise",
}
CRITIC_DEFAULTS: dict[str, Any] = {
    "gamma": 1.0,
    "lam": 1.0,
    "whiten_advantages": True,
    "critic_lr": 5e-6,
    "value_clip_eps": 0.2,
    "critic_init": "policy",
}
# Methods whose step reward is min(x - eta, 0): eta has no default for them.
CLIPPING_METHODS = ("clip", "clip_delta")
# PURE's softmin temperature (their make_experience calls it with 0.1)
PURE_SOFTMIN_TEMPERATURE = 0.1


# The projections a LoRA adapter can sit in (rlr.models.architecture.LORA_TARGETS; a test keeps the
# two equal: this module imports nothing heavy)
LORA_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclasses.dataclass(frozen=True)
class LoRASpec:
    """Low-rank adapters on the policy's projections (`policy.lora`): each targeted x @ W
    becomes x @ W + (alpha / rank) * (x @ A) @ B, A [In, rank], B [rank, Out] starting at 0.
    The base weights stay frozen (never in the optimizer state), and the reference policy is
    the base with the adapters off."""

    # the key errors name (CriticLoRASpec: ppo.critic_lora)
    where: typing.ClassVar[str] = "policy.lora"

    rank: int = 16
    alpha: float = 32.0
    # PEFT's lora_dropout. Only 0: the update's ratio exp(logp - old_logp) compares the policy
    # with itself on the same tokens, and dropout in one pass but not the other would move it
    # away from 1 before any step (verl and OpenRLHF run RL adapters without dropout too).
    dropout: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        require(
            isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank > 0,
            f"{self.where}.rank must be a positive int; got {self.rank!r}",
        )
        require(self.alpha > 0, f"{self.where}.alpha must be > 0; got {self.alpha!r}")
        require(
            self.dropout == 0,
            f"{self.where}.dropout={self.dropout}: PPO's importance ratio compares the policy "
            "with itself on the same tokens (and the value clip the critic), and dropout in one "
            "of the two passes would move them apart before any update; rlr runs adapters "
            "without dropout: remove the key",
        )
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        require(
            not unknown,
            f"{self.where}.targets: {unknown} are not projections; choose among {LORA_TARGETS}",
        )
        require(
            len(self.targets) > 0 and len(set(self.targets)) == len(self.targets),
            f"{self.where}.targets must name at least one projection, each once; got "
            f"{list(self.targets)}",
        )


@dataclasses.dataclass(frozen=True)
class CriticLoRASpec(LoRASpec):
    """Low-rank adapters on the critic's trunk (`ppo.critic_lora`, algorithm=ppo): the trunk's
    weights stay frozen and are those of a network the run already holds (the reference for
    critic_init=policy, else the PRM / ORM it starts from); the adapters and the score head
    train."""

    where: typing.ClassVar[str] = "ppo.critic_lora"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Where a network comes from: an HF directory, or an inline HF-style architecture.

    `path` wins when both are given; `architecture` (a config.json-style mapping) is used to
    initialise a fresh model, and by `rlr plan` to size a model without its weights.
    """

    path: str | None = None
    architecture: dict[str, Any] | None = None
    # a PRM's step format (STEP_FORMATS); null: read from config.json (rlr's own otherwise)
    format: StepFormat | None = None
    dtype: DType = "float32"
    param_dtype: DType = "float32"
    # what each layer keeps for backward: "none", "minimal" (projection outputs; recomputes
    # attention and elementwise work), "full" (only the residual stream; true = "full",
    # false = "none")
    remat: bool | Literal["none", "minimal", "full"] = "minimal"
    # one nn.scan over the decoder layers (compile time independent of depth); false unrolls
    # a Python loop over them (params layers_0 .. instead of one stacked "layers")
    scan_layers: bool = True
    # low-rank adapters (the PPO policy only): train them instead of the weights; null: none
    lora: LoRASpec | None = None

    def __post_init__(self):
        require(
            self.path is not None or self.architecture is not None,
            "a model needs `path` (an HF directory) or `architecture` (a config.json mapping)",
        )


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Prompts with gold answers: JSONL files in one of rlr.data's formats."""

    train: str = ""
    test: str | None = None
    format: ProblemFormat = "synthetic"
    prompt_style: Literal["plain", "chat"] = "plain"

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "max_test_problems": "eval.max_examples (every command's evaluation section)"
    }

    def __post_init__(self):
        require(bool(self.train), "data.train must name a JSONL file of training prompts")


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Held-out evaluation (`eval`), the same keys in every training command (sft, train-prm,
    train-orm, ppo and its critic-free algorithms)."""

    # Evaluate every this many optimizer steps (sft, reward models) or iterations (RL); 0:
    # only at the end of the run (sft, reward models) or never mid-run (RL, whose final policy
    # `rlr evaluate` scores).
    every: int = 0
    # At most this many held-out examples: problems of data.test (sft, RL), labelled
    # solutions (reward models); null: all.
    max_examples: int | None = None
    # Rows per evaluation batch; null: the command's own (sft and reward models 100, an RL
    # run its rollout's chunk_rows or whole batch).
    batch_size: int | None = None

    def __post_init__(self):
        require(self.every >= 0, f"eval.every must be >= 0 (0: not mid-run); got {self.every}")
        require(
            self.max_examples is None or self.max_examples >= 1,
            f"eval.max_examples must be >= 1 (or null: all); got {self.max_examples}",
        )
        require(
            self.batch_size is None or self.batch_size >= 1,
            f"eval.batch_size must be >= 1 (or null: the command's own); got {self.batch_size}",
        )


@dataclasses.dataclass(frozen=True)
class LabelledDataSpec:
    """Step-labelled solutions for reward-model training: JSONL files in one of
    LABELLED_FORMATS."""

    train: str = ""
    test: str | None = None
    format: LabelledFormat = "rlr"
    prompt_style: Literal["plain", "chat"] = "plain"

    def __post_init__(self):
        require(bool(self.train), "data.train must name a JSONL file of step-labelled solutions")


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    """Which rewards make up the per-token reward (docs/method.md section 2, in that order)."""

    use_prm: bool = False
    use_orm: bool = False
    method: RewardMethod = "clip_delta"
    alpha: float = 1.0
    # Clip's threshold: a step earns min(x - eta, 0). No default: for PRM probabilities in
    # [0, 1] any eta <= 0 makes every clipped reward 0, and the right value depends on the
    # PRM's scores (0.5 in the shipped presets; docs/method.md section 4). Required when
    # use_prm and the method clips; raw and delta do not read it.
    eta: float | None = None
    orm_weight: float = 1.0
    # The KL coefficient (beta), in the reward or in the loss; null: the algorithm's default
    # (ALGORITHM_DEFAULTS: ppo 0.1, grpo 0.04, dr_grpo 0, rloo 0.05).
    kl_coef: float | None = None
    # The per-token KL reward's estimator; only read when the KL is in the reward (the loss
    # term is always k3). null: k1.
    kl_estimator: Literal["k1", "k2", "k3"] | None = None
    # Clamp of the k3 estimate to [-kl_clamp, kl_clamp] (verl's low_var_kl uses 10), wherever
    # k3 is computed: the reward (kl_estimator=k3) or the loss term (kl_in_loss); null: none.
    kl_clamp: float | None = None
    # Where the KL penalty goes: false, a per-token reward (kl_estimator); true, a k3 term in
    # the policy loss, as GRPO does; null, the algorithm's default (ALGORITHM_DEFAULTS).
    kl_in_loss: bool | None = None
    # Critic-free process advantages only: "none" (the default) takes the shaped step rewards'
    # plain reward-to-go, which keeps Clip's and Delta's gamma = 1 bound; "group" normalises
    # them over the prompt's group (DeepSeekMath's process supervision), which breaks the
    # bound, so padding pays again (docs/method.md section 11). A ppo run does not read it.
    process_normalization: Literal["group", "none"] | None = None
    # method=pure_softmin only: the softmin's temperature T (step weights softmax(-PR / T));
    # null: 0.1, PURE's. Any other method does not read it, so setting it there is an error.
    softmin_temperature: float | None = None
    # PROF's consistency filter (critic-free only): drop this many samples of each prompt's
    # group before the update (rlr.prof_keep_mask; their runs drop 4 of 8), ranked by the PRM's
    # mean step score. The PRM only filters, so use_prm must be false and `prm` given; the
    # group statistics are those of the kept samples; null: no filter.
    prof_remove: int | None = None
    separators: tuple[str, ...] = ("\n\n", "\n")
    max_steps: int = 16
    # DAPO's overlong reward shaping (arXiv 2503.14476 eq. 13; verl's overlong_buffer.len):
    # a response longer than rollout.max_new_tokens - overlong_buffer tokens earns a penalty
    # falling linearly to -overlong_penalty at the budget, added to its outcome reward at its
    # last token (rlr.overlong_penalty); null (default): off.
    overlong_buffer: int | None = None
    # The penalty at the budget (verl's overlong_buffer.penalty_factor; DAPO: 1.0); read only
    # with overlong_buffer, null there: 1.0.
    overlong_penalty: float | None = None

    def __post_init__(self):
        require(self.alpha >= 0, f"reward.alpha must be >= 0; got {self.alpha}")
        require(
            self.overlong_buffer is None or self.overlong_buffer >= 1,
            f"reward.overlong_buffer must be >= 1 token (or null: off); got {self.overlong_buffer}",
        )
        require(
            self.overlong_penalty is None or self.overlong_buffer is not None,
            "reward.overlong_penalty scales the overlong penalty, which is off "
            "(reward.overlong_buffer is null); set reward.overlong_buffer or remove it",
        )
        require(
            self.overlong_penalty is None or self.overlong_penalty >= 0,
            f"reward.overlong_penalty must be >= 0; got {self.overlong_penalty}",
        )
        require(
            self.kl_coef is None or self.kl_coef >= 0,
            f"reward.kl_coef must be >= 0; got {self.kl_coef}",
        )
        require(
            not (self.use_prm and self.method in CLIPPING_METHODS and self.eta is None),
            f"reward.eta: method={self.method} clips each PRM step score x at eta (step reward "
            "min(x - eta, 0)) and eta has no default; set it, e.g. reward.eta=0.5 for a PRM "
            "whose scores are probabilities (eta <= 0 makes every clipped reward 0)",
        )
        require(
            self.kl_clamp is None or self.kl_clamp > 0,
            f"reward.kl_clamp must be > 0 (or null: no clamp); got {self.kl_clamp}",
        )
        require(self.max_steps >= 1, f"reward.max_steps must be >= 1; got {self.max_steps}")
        require(
            self.softmin_temperature is None or self.method == "pure_softmin",
            f"reward.softmin_temperature: only method=pure_softmin weighs steps by a softmin; "
            f"method={self.method} does not read it; remove it",
        )
        require(
            self.softmin_temperature is None or self.softmin_temperature > 0,
            f"reward.softmin_temperature must be > 0; got {self.softmin_temperature}",
        )
        require(
            self.prof_remove is None or self.prof_remove >= 1,
            f"reward.prof_remove must be >= 1 (or null: no filter); got {self.prof_remove}",
        )
        require(
            self.prof_remove is None or not self.use_prm,
            "reward.prof_remove: PROF uses the PRM only to choose which samples train, with no "
            "PRM term in the objective; reward.use_prm=true would add one; set it false (the "
            "filter reads the `prm` model's step scores all the same)",
        )
        require(len(self.separators) >= 1, "reward.separators must name at least one separator")


@dataclasses.dataclass(frozen=True)
class ImplicitPRMSpec:
    """PRIME's implicit PRM (`implicit_prm`, read with reward.method=prime): a causal LM pi_phi
    trained in the run beside the policy. Its token reward is r_t = beta log(pi_phi(y_t) /
    pi_ref(y_t)) against the run's reference policy, and each update step also trains it by
    the cross-entropy of sigmoid(sum_t r_t) against the sample's success
    (rlr.prime_token_rewards, rlr.prime_implicit_prm_loss)."""

    # Where pi_phi starts: an HF directory of the policy's architecture and tokenizer; null:
    # the policy's own initial weights (PRIME initialises it from the SFT policy).
    path: str | None = None
    # beta of the reward and of the cross-entropy (PRIME's beta_train: 0.05).
    beta: float = 0.05
    # Its AdamW learning rate; null: ppo.policy_lr (PRIME: 1e-6 beside the policy's 5e-7).
    lr: float | None = None
    # "none": r_t as the paper writes it; "batch_norm": r_t divided by the batch's largest
    # |return-to-go| (the authors' runs, prime_norm=batch_norm).
    normalization: Literal["none", "batch_norm"] = "none"

    def __post_init__(self):
        require(self.beta > 0, f"implicit_prm.beta must be > 0; got {self.beta}")
        require(
            self.lr is None or self.lr > 0,
            f"implicit_prm.lr must be > 0 (or null: ppo.policy_lr); got {self.lr}",
        )
        require(
            self.normalization in ("none", "batch_norm"),
            f"implicit_prm.normalization must be none or batch_norm; got {self.normalization!r}",
        )


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """Sampling settings: B = prompts_per_iteration * samples_per_prompt rows per iteration."""

    prompts_per_iteration: int = 8
    samples_per_prompt: int = 4
    max_prompt_tokens: int = 64
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    # Left-pad an iteration's prompts (and an evaluation's) only to the next power of two at
    # or above its longest prompt (at least 16; rlr.training.batching.prompt_width), at most
    # max_prompt_tokens, so that sampling, scoring and the update skip the padding columns no
    # prompt needs. The same tokens and losses to float rounding; each width compiles its
    # own sampler, scoring and update programs (at most log2(max_prompt_tokens / 16) + 1).
    # false: every prompt padded to max_prompt_tokens (one program of each).
    trim_prompts: bool = True
    # Rows per sampler / scoring call (None: the whole batch at once). Large runs chunk the
    # batch so that the KV cache and the [rows, T, V] logits fit in device memory.
    chunk_rows: int | None = None
    # Decode only the unfinished rows once they fit a smaller batch (rlr.sampling.sample's
    # `compact`); False runs every row until the longest response ends. null: true, unless
    # decode_slots is set (continuous batching refills rows instead of compacting them).
    compact_rows: bool | None = None
    # Continuous batching (rlr.continuous_sampling): a sampler call's C rows (chunk_rows, or
    # the batch) go through this many decode slots, each slot taking the next waiting prompt
    # as soon as its row ends; the same tokens as the batch sampler. null: off. One process.
    decode_slots: int | None = None
    # Decode a scanned policy with its layers unrolled (rlr.sampling.unrolled_for_decoding):
    # each sampler call slices the layer weights once, a copy of them for the call (rlr plan
    # counts it), instead of at every step inside the loop. The same tokens; false: no copy.
    unroll_layers: bool = True
    # DAPO's dynamic sampling (critic-free algorithms only): drop each prompt's group whose
    # successes are all equal (all right or all wrong: no advantage) and sample further rounds
    # of prompts_per_iteration prompts until the batch holds prompts_per_iteration informative
    # groups, or max_sampling_rounds rounds (the first included) are spent; slots still empty
    # then hold dropped groups with their response masks zeroed (no loss, no advantage).
    # Off by default.
    dynamic_sampling: bool = False
    # The cap on sampling rounds per iteration, the first included (verl's
    # filter_groups.max_num_gen_batches, 10 in the DAPO recipe); required with
    # dynamic_sampling, read only then.
    max_sampling_rounds: int | None = None

    @property
    def batch_size(self) -> int:
        return self.prompts_per_iteration * self.samples_per_prompt

    @property
    def compacting(self) -> bool:
        """Whether the batch sampler compacts finished rows (compact_rows, null: true)."""
        return self.compact_rows is not False and self.decode_slots is None

    def __post_init__(self):
        require(self.prompts_per_iteration >= 1, "rollout.prompts_per_iteration must be >= 1")
        rows = self.chunk_rows or self.batch_size
        require(
            self.decode_slots is None or 1 <= self.decode_slots <= rows,
            f"rollout.decode_slots must be in [1, {rows}] (the rows of one sampler call: "
            f"rollout.chunk_rows, or the batch); got {self.decode_slots}",
        )
        require(
            self.decode_slots is None or self.compact_rows is None,
            "rollout.compact_rows: continuous batching (rollout.decode_slots) refills the slots "
            "of ended rows instead of compacting them; remove compact_rows",
        )
        require(self.samples_per_prompt >= 1, "rollout.samples_per_prompt must be >= 1")
        require(self.max_new_tokens >= 1, "rollout.max_new_tokens must be >= 1")
        require(self.temperature > 0, "rollout.temperature must be > 0 for PPO sampling")
        require(0 < self.top_p <= 1, f"rollout.top_p must be in (0, 1]; got {self.top_p}")
        require(
            self.chunk_rows is None
            or (self.chunk_rows >= 1 and self.batch_size % self.chunk_rows == 0),
            f"rollout.chunk_rows must divide the batch of {self.batch_size} rows; "
            f"got {self.chunk_rows}",
        )
        require(
            not self.dynamic_sampling or self.max_sampling_rounds is not None,
            "rollout.max_sampling_rounds: dynamic sampling needs a cap on its sampling rounds "
            "per iteration (the first included; the DAPO recipe uses 10); set it",
        )
        require(
            self.dynamic_sampling or self.max_sampling_rounds is None,
            "rollout.max_sampling_rounds caps dynamic sampling, which is off; set "
            "rollout.dynamic_sampling=true or remove it",
        )
        require(
            self.max_sampling_rounds is None or self.max_sampling_rounds >= 1,
            f"rollout.max_sampling_rounds must be >= 1; got {self.max_sampling_rounds}",
        )


@dataclasses.dataclass(frozen=True)
class PPOSpec:
    """PPO and GAE hyper-parameters. Defaults are ReaLHF's except truncation, value_norm and
    early_stop_ratio, which stay off (REALHF_PPO turns them on; module docstring)."""

    # Critic keys (CRITIC_KEYS): null takes CRITIC_DEFAULTS under ppo; a critic-free
    # algorithm (grpo, dr_grpo, rloo) reads none of them, so setting one there is an error.
    gamma: float | None = None
    lam: float | None = None
    clip_eps: float = 0.2
    value_clip_eps: float | None = None
    epochs: int = 1
    minibatches: int = 4
    whiten_advantages: bool | None = None
    policy_lr: float = 1e-6
    critic_lr: float | None = None
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # Linear learning-rate warm-up from 0 over this many optimizer updates (minibatch steps).
    warmup_steps: int = 0
    # How the policy loss aggregates tokens; null: the algorithm's default (ALGORITHM_DEFAULTS).
    loss_aggregation: LossAggregation | None = None
    critic_init: Literal["prm", "orm", "policy"] | None = None
    # Where the ratio's old log-probs come from: "recompute" runs the policy over the rollout
    # once more; "rollout" keeps the sampler's (those of the same parameters, read from the
    # KV-cache decode: equal up to float rounding in float32, as trl and others use them).
    old_logprobs: Literal["recompute", "rollout"] = "recompute"
    # A response cut off by rollout.max_new_tokens (no EOS): "grade" grades its text like any
    # other; "zero" gives it success 0 and ORM reward 0 (its PRM step rewards and KL stay);
    # "zero_and_bootstrap" (algorithm=ppo only; ReaLHF's behaviour) also lets GAE bootstrap
    # from the critic's value after its last token instead of ending the episode with 0.
    truncation: Literal["grade", "zero", "zero_and_bootstrap"] = "grade"
    # ReaLHF's value normalisation (algorithm=ppo only): the critic learns returns normalised
    # by an EMA of their mean and std (decay value_norm_beta, ReaLHF's default), and its
    # outputs are de-normalised for GAE; the statistics are checkpointed with the state.
    # Off by default (ReaLHF's experiments turn it on; REALHF_PPO).
    value_norm: bool = False
    value_norm_beta: float = 0.99995
    # Skip the policy's optimizer step on a minibatch whose mean importance ratio
    # exp(logp - old_logp) exceeds this (ReaLHF's early_stop_imp_ratio, 5 in its experiment
    # defaults); must be > 1; null (default): off.
    early_stop_ratio: float | None = None
    # Dual clip (verl's clip_ratio_c, 3.0 there): tokens with A < 0 lose at most -A * dual_clip;
    # must be > 1; null: off.
    dual_clip: float | None = None
    # Decoupled clip range (DAPO's clip-higher, 0.2 / 0.28; verl's clip_ratio_low / high): the
    # ratio is clipped to [1 - clip_eps_low, 1 + clip_eps_high]; null: clip_eps for that side.
    clip_eps_low: float | None = None
    clip_eps_high: float | None = None
    # The importance ratio of the policy loss: "token" (PPO's, per token) or "sequence" (GSPO,
    # arXiv 2507.18071: the row's geometric-mean ratio on every token, needing
    # loss_aggregation=sequence_mean as verl's compute_policy_loss_gspo).
    importance_ratio: Literal["token", "sequence"] = "token"
    # Low-rank adapters on the critic's trunk (algorithm=ppo): the trunk stays frozen and is
    # the weights of a network the run already holds (frozen["reference"] for
    # critic_init=policy, the PRM / ORM for prm / orm), the adapters and the score head train
    # (docs/design.md, "LoRA"); null: the critic trains every weight of its own copy.
    critic_lora: CriticLoRASpec | None = None
    # Pack each minibatch's rows for the update (rlr.packing: the real tokens of several rows
    # side by side in one row, attention kept within each): the same update up to float
    # rounding, on fewer row-positions when responses vary in length. One process only.
    pack: bool = False

    def __post_init__(self):
        require(
            self.clip_eps_low is None or 0 < self.clip_eps_low < 1,
            f"ppo.clip_eps_low must be in (0, 1) (or null: ppo.clip_eps); got {self.clip_eps_low}",
        )
        require(
            self.clip_eps_high is None or self.clip_eps_high > 0,
            f"ppo.clip_eps_high must be > 0 (or null: ppo.clip_eps); got {self.clip_eps_high}",
        )
        require(
            0 < self.value_norm_beta < 1,
            f"ppo.value_norm_beta must be in (0, 1); got {self.value_norm_beta}",
        )
        require(
            self.early_stop_ratio is None or self.early_stop_ratio > 1,
            f"ppo.early_stop_ratio must be > 1 (or null: off); got {self.early_stop_ratio}",
        )
        require(
            self.dual_clip is None or self.dual_clip > 1,
            f"ppo.dual_clip must be > 1 (or null: off); got {self.dual_clip}",
        )
        require(
            self.gamma is None or 0 <= self.gamma <= 1,
            f"ppo.gamma must be in [0, 1]; got {self.gamma}",
        )
        require(self.warmup_steps >= 0, f"ppo.warmup_steps must be >= 0; got {self.warmup_steps}")
        require(
            self.lam is None or 0 <= self.lam <= 1, f"ppo.lam must be in [0, 1]; got {self.lam}"
        )
        require(self.epochs >= 1, "ppo.epochs must be >= 1")
        require(self.minibatches >= 1, "ppo.minibatches must be >= 1")
        require(self.policy_lr > 0, f"ppo.policy_lr must be > 0; got {self.policy_lr}")
        require(
            self.critic_lr is None or self.critic_lr > 0,
            f"ppo.critic_lr must be > 0; got {self.critic_lr}",
        )


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """Device mesh sizes; one may be -1 to take the remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class GradingSpec:
    """Answer-grading pool settings."""

    num_workers: int = 2
    timeout_s: float = 5.0


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """A whole RL run: `rlr ppo --config FILE key=value ...`. `algorithm` is PPO with a
    critic, or a critic-free group-relative algorithm (grpo, dr_grpo, rloo)."""

    name: str = "ppo"
    algorithm: Algorithm = "ppo"
    seed: int = 0
    out_dir: str = "runs/ppo"
    iterations: int = 100
    tokenizer: str = ""
    policy: ModelSpec = dataclasses.field(default_factory=lambda: ModelSpec(path=""))
    prm: ModelSpec | None = None
    orm: ModelSpec | None = None
    # PRIME's implicit PRM, a third trained network (reward.method=prime only)
    implicit_prm: ImplicitPRMSpec | None = None
    data: DataSpec = dataclasses.field(default_factory=lambda: DataSpec(train="-"))
    reward: RewardSpec = dataclasses.field(default_factory=RewardSpec)
    rollout: RolloutSpec = dataclasses.field(default_factory=RolloutSpec)
    ppo: PPOSpec = dataclasses.field(default_factory=PPOSpec)
    mesh: MeshSpec = dataclasses.field(default_factory=MeshSpec)
    grading: GradingSpec = dataclasses.field(default_factory=GradingSpec)
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)
    device_memory_gib: float | None = None

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"eval_every": "eval.every"}

    @property
    def tokenizer_dir(self) -> str:
        """The tokenizer's directory: `tokenizer`, else the policy's HF directory."""
        return self.tokenizer or self.policy.path or ""

    @property
    def defaults(self) -> AlgorithmDefaults:
        """What `algorithm` means (ALGORITHM_DEFAULTS)."""
        return ALGORITHM_DEFAULTS[self.algorithm]

    @property
    def uses_critic(self) -> bool:
        """Whether the run trains a critic (ppo) or is group-relative (grpo, dr_grpo, rloo)."""
        return self.defaults.critic

    @property
    def loss_aggregation(self) -> str:
        """ppo.loss_aggregation, or the algorithm's default."""
        return self.ppo.loss_aggregation or self.defaults.loss_aggregation

    @property
    def effective_reward(self) -> RewardSpec:
        """The reward section with the algorithm's defaults in place of its nulls: kl_coef,
        kl_in_loss, kl_estimator (k1 when the KL is in the reward, null when in the loss) and
        process_normalization ("none" without a critic, null with one)."""
        reward = self.reward
        return dataclasses.replace(
            reward,
            kl_coef=self.defaults.kl_coef if reward.kl_coef is None else reward.kl_coef,
            kl_in_loss=self.kl_in_loss,
            kl_estimator=None if self.kl_in_loss else (reward.kl_estimator or "k1"),
            process_normalization=None
            if self.uses_critic
            else (reward.process_normalization or "none"),
            softmin_temperature=reward.softmin_temperature
            if reward.method != "pure_softmin" or reward.softmin_temperature is not None
            else PURE_SOFTMIN_TEMPERATURE,
        )

    @property
    def effective_ppo(self) -> PPOSpec:
        """The ppo section with CRITIC_DEFAULTS in place of its nulls under a critic (a
        critic-free algorithm leaves the critic keys null: it reads none of them)."""
        if not self.uses_critic:
            return self.ppo
        unset = {k: v for k, v in CRITIC_DEFAULTS.items() if getattr(self.ppo, k) is None}
        return dataclasses.replace(self.ppo, **unset)

    def _check_algorithm_keys(self) -> None:
        """A key that the algorithm does not read is an error that says why."""
        if not self.uses_critic:
            for key in CRITIC_KEYS:
                require(
                    getattr(self.ppo, key) is None,
                    f"ppo.{key}: {self.algorithm} has no critic, so {_CRITIC_KEY_USE[key]}; "
                    f"remove it (or set ppo.{key}=null)",
                )
        else:
            require(
                self.reward.process_normalization is None,
                "reward.process_normalization: ppo's critic takes the step rewards through "
                "GAE; only grpo, dr_grpo and rloo normalise process advantages; remove it",
            )
            require(
                not (self.reward.use_prm and self.reward.method == "min_form"),
                "reward.method=min_form: PURE's min-form return is the minimum of the step "
                "rewards to go, and ppo's GAE sums rewards, so it has no GAE form; use grpo, "
                "dr_grpo or rloo, or method=pure_softmin (the softmin approximation, which sums)",
            )
            require(
                self.reward.prof_remove is None,
                "reward.prof_remove: PROF filters the samples of each prompt's group, and ppo "
                "has no groups (its critic scores each row alone); use grpo, dr_grpo or rloo",
            )
        require(
            not (
                self.reward.method == "min_form"
                and self.reward.use_prm
                and self.reward.process_normalization == "group"
            ),
            "reward.process_normalization=group normalises step rewards that are then summed; "
            "min_form's return is a minimum, not a sum; remove it (min_form takes the plain "
            "min-form return)",
        )
        require(
            not (self.kl_in_loss and self.reward.kl_estimator is not None),
            f"reward.kl_estimator: {self.algorithm} puts the KL in the loss (reward.kl_in_loss),"
            " where it is always the k3 estimator; the reward's estimator is unused; remove it",
        )

    @property
    def kl_in_loss(self) -> bool:
        """reward.kl_in_loss, or the algorithm's default."""
        if self.reward.kl_in_loss is None:
            return self.defaults.kl_in_loss
        return self.reward.kl_in_loss

    def __post_init__(self):
        require(self.iterations >= 1, "iterations must be >= 1")
        self._check_algorithm_keys()
        self._check_frozen_models()
        self._check_rollout_sampling()
        self._check_reward_models()
        self._check_critic_options()
        self._check_critic_lora()
        self._check_dependent_options()

    def _check_frozen_models(self) -> None:
        """The PRM and ORM are frozen in a PPO run: no adapters on them."""
        for name in ("prm", "orm"):
            spec = getattr(self, name)
            require(
                spec is None or spec.lora is None,
                f"{name}.lora: the {name.upper()} is frozen in a PPO run, so adapters on it "
                "would never train; LoRA applies to the policy (policy.lora): remove the key",
            )

    def _check_rollout_sampling(self) -> None:
        """The rollout samples from the distribution the loss reads, and enough samples per
        prompt for a group-relative algorithm."""
        roll = self.rollout
        require(
            roll.top_k == 0 and roll.top_p == 1.0,
            f"rollout.top_k={roll.top_k}, rollout.top_p={roll.top_p}: the policy is trained on "
            "the log-probs of softmax(logits / temperature); a top-k / top-p filter would sample "
            "from another distribution than the one the ratio and KL use; set top_k=0, top_p=1",
        )
        require(
            self.uses_critic or self.rollout.samples_per_prompt >= 2,
            f"algorithm={self.algorithm} compares the samples of each prompt: "
            f"rollout.samples_per_prompt must be >= 2; got {self.rollout.samples_per_prompt}",
        )

    def _check_reward_models(self) -> None:
        """Every reward option, PROF and the critic's initialisation have the PRM / ORM they
        read, and PROF leaves at least 2 samples of a group."""
        prime = self.reward.method == "prime"
        require(
            not self.reward.use_prm or prime or self.prm is not None,
            "reward.use_prm is true but no `prm` model is given",
        )
        require(
            not (prime and self.reward.use_prm) or self.implicit_prm is not None,
            "reward.method=prime rewards each token by PRIME's implicit PRM, a network trained in "
            "the run: give an `implicit_prm` section (implicit_prm: {} starts it from the policy)",
        )
        require(
            self.implicit_prm is None or (prime and self.reward.use_prm),
            "implicit_prm: only reward.method=prime with reward.use_prm=true trains and reads "
            f"PRIME's implicit PRM (this run: method={self.reward.method}, use_prm="
            f"{str(self.reward.use_prm).lower()}); remove the section",
        )
        require(
            not (self.implicit_prm is not None and self.policy.lora is not None),
            "implicit_prm with policy.lora: the implicit PRM is a full copy of the policy "
            "trained beside it, and rlr does not train it with adapters; remove one of them",
        )
        require(
            not self.reward.use_orm or self.orm is not None,
            "reward.use_orm is true but no `orm` model is given",
        )
        require(
            self.reward.prof_remove is None or self.prm is not None,
            "reward.prof_remove: PROF ranks samples by the PRM's step scores; give a `prm` model",
        )
        require(
            self.reward.prof_remove is None
            or self.reward.prof_remove <= self.rollout.samples_per_prompt - 2,
            f"reward.prof_remove={self.reward.prof_remove} must leave at least 2 of the "
            f"rollout.samples_per_prompt={self.rollout.samples_per_prompt} samples of a group "
            "to compare",
        )
        require(
            self.ppo.critic_init != "prm" or self.prm is not None,
            "ppo.critic_init=prm needs a `prm` model",
        )
        require(
            self.ppo.critic_init != "orm" or self.orm is not None,
            "ppo.critic_init=orm needs an `orm` model",
        )

    def _check_critic_options(self) -> None:
        """Truncation bootstrapping and value normalisation have a critic to read."""
        require(
            self.uses_critic or self.ppo.truncation != "zero_and_bootstrap",
            f"ppo.truncation=zero_and_bootstrap bootstraps from a critic, which "
            f"algorithm={self.algorithm} has not; use ppo.truncation=zero (success and ORM "
            "reward 0 for truncated responses) or grade",
        )
        require(
            self.uses_critic or not self.ppo.value_norm,
            f"ppo.value_norm normalises a critic's targets; algorithm={self.algorithm} has none",
        )

    def _check_critic_lora(self) -> None:
        """ppo.critic_lora has a critic to sit on (not a CRITIC_KEYS entry: a reproduction
        unsets those for every critic-free run, and this one is off by default)."""
        require(
            self.uses_critic or self.ppo.critic_lora is None,
            f"ppo.critic_lora: {self.algorithm} has no critic, so no critic to put adapters "
            "on; remove it (or set ppo.critic_lora=null)",
        )

    def _check_dependent_options(self) -> None:
        """Options that another setting must allow: the k3 clamp, dynamic sampling, GSPO's
        aggregation, the overlong buffer and the minibatch split."""
        require(
            self.reward.kl_clamp is None or self.reward.kl_estimator == "k3" or self.kl_in_loss,
            "reward.kl_clamp clamps the k3 KL estimate, which this run never computes: set "
            "reward.kl_estimator=k3, or put the KL in the loss (reward.kl_in_loss)",
        )
        require(
            not (self.uses_critic and self.rollout.dynamic_sampling),
            "rollout.dynamic_sampling drops groups of samples whose successes are all equal, "
            "which only a group-relative algorithm (grpo, dr_grpo, rloo) has; ppo's rows are "
            "not groups and its critic learns from every row",
        )
        require(
            self.ppo.importance_ratio != "sequence" or self.loss_aggregation == "sequence_mean",
            f"ppo.importance_ratio=sequence (GSPO) takes the mean of each row's loss and then "
            f"the mean over rows (verl forces seq-mean-token-mean for it); this run aggregates "
            f"with {self.loss_aggregation}: set ppo.loss_aggregation=sequence_mean",
        )
        require(
            self.reward.overlong_buffer is None
            or self.reward.overlong_buffer <= self.rollout.max_new_tokens,
            f"reward.overlong_buffer={self.reward.overlong_buffer} must be at most "
            f"rollout.max_new_tokens={self.rollout.max_new_tokens} (the budget it ends at)",
        )
        require(
            self.rollout.batch_size % self.ppo.minibatches == 0,
            f"rollout batch {self.rollout.batch_size} (prompts x samples) must divide into "
            f"ppo.minibatches={self.ppo.minibatches}",
        )


@dataclasses.dataclass(frozen=True)
class SupervisedSpec:
    """Optimisation and row shapes shared by SFT and PRM / ORM training (P, T, K of the rows)."""

    batch_size: int = 32
    steps: int = 300
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    prompt_len: int = 64
    response_len: int = 80
    # K, the reasoning steps a PRM / ORM row holds (its step targets); null: 16 for reward
    # models. SFT trains on whole solutions and does not read it. (`steps` above counts
    # optimizer steps.)
    max_reasoning_steps: int | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    # Pack each batch's rows (rlr.packing: the real tokens of several rows side by side in
    # one row, attention kept within each): the same step up to float rounding, on fewer
    # row-positions when solutions vary in length. One process only.
    pack: bool = False

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "max_steps": "train.max_reasoning_steps (train.steps counts optimizer steps)"
    }

    def __post_init__(self):
        require(self.batch_size >= 1, f"train.batch_size must be >= 1; got {self.batch_size}")
        require(self.steps >= 1, f"train.steps must be >= 1; got {self.steps}")
        require(
            self.learning_rate > 0, f"train.learning_rate must be > 0; got {self.learning_rate}"
        )
        require(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        require(self.prompt_len >= 1, "train.prompt_len must be >= 1")
        require(self.response_len >= 1, "train.response_len must be >= 1")
        require(
            self.max_reasoning_steps is None or self.max_reasoning_steps >= 1,
            f"train.max_reasoning_steps must be >= 1; got {self.max_reasoning_steps}",
        )
        require(self.checkpoint_every >= 1, "train.checkpoint_every must be >= 1")
        require(self.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1")


@dataclasses.dataclass(frozen=True)
class SFTEvalSpec(EvalSpec):
    """SFT's `eval`: greedy accuracy on held-out problems (exact final answer), with the keys
    of every command's EvalSpec and the greedy decoding's token budget (an RL run decodes
    with its rollout's)."""

    max_examples: int | None = 200
    max_new_tokens: int = 80

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"num_problems": "eval.max_examples"}

    def __post_init__(self):
        super().__post_init__()
        require(self.max_new_tokens >= 1, "eval.max_new_tokens must be >= 1")


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """Policy SFT on solution text: `rlr sft --config FILE key=value ...`.

    `data.train` holds problems with solution text (`rlr make-data`'s sft_train.jsonl, or a
    dataset such as GSM8K or MATH in `data.format`), `data.test` problems with gold answers for
    greedy evaluation (problems_test.jsonl); `eval.max_examples` of them are evaluated.
    """

    # Not read: an SFT run is named by its out_dir (kept so that an old file's key gets an
    # error that says so).
    name: str | None = None
    seed: int = 0
    out_dir: str = "runs/sft"
    tokenizer: str = ""
    model: ModelSpec = dataclasses.field(default_factory=lambda: ModelSpec(path=""))
    data: DataSpec = dataclasses.field(default_factory=lambda: DataSpec(train="-"))
    train: SupervisedSpec = dataclasses.field(default_factory=SupervisedSpec)
    eval: SFTEvalSpec = dataclasses.field(default_factory=SFTEvalSpec)

    def __post_init__(self):
        require(
            self.name is None,
            "name: rlr sft does not name its runs (out_dir does); remove the key",
        )
        require(
            self.train.max_reasoning_steps is None,
            "train.max_reasoning_steps: rlr sft trains on whole solutions and does not cut them "
            "into reasoning steps; remove the key (PRM / ORM training reads it)",
        )
        require(bool(self.tokenizer), "tokenizer must name a tokenizer directory")
        require(
            bool(self.model.path or self.model.architecture), "model needs path or architecture"
        )
        require(
            self.model.lora is None,
            "model.lora: rlr sft trains every weight and exports a full model; adapters are "
            "for rlr ppo's policy (policy.lora): remove the key",
        )


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
    """PRM or ORM training: `rlr train-prm` / `rlr train-orm --config FILE key=value ...`.

    `data.train` / `data.test` are step-labelled solutions (`rlr make-data`'s prm_train /
    prm_test, `rlr label-steps` output, PRM800K or Math-Shepherd files, as `data.format` says).
    `init` is usually the SFT policy directory: its trunk is kept, the score head is fresh.
    Step targets: `label_mode=hard` maps +1 -> 1, -1 -> 0 and a neutral 0 -> `neutral_target`;
    `soft` reads per-step fractions in [0, 1] from each record's meta["soft_labels"]
    (Math-Shepherd-style completion rates). PRM targets are the step targets. ORM targets: 1
    when the solution is correct: its final answer graded against the record's gold answer,
    or, for a record without one, every step target >= 0.5.
    """

    # Not read: a reward-model run is named by its out_dir.
    name: str | None = None
    kind: Literal["prm", "orm"] = "prm"
    seed: int = 0
    out_dir: str = "runs/prm"
    tokenizer: str = ""
    init: ModelSpec = dataclasses.field(default_factory=lambda: ModelSpec(path=""))
    data: LabelledDataSpec = dataclasses.field(default_factory=lambda: LabelledDataSpec("-"))
    label_mode: Literal["hard", "soft"] = "hard"
    neutral_target: float = 1.0
    train: SupervisedSpec = dataclasses.field(default_factory=SupervisedSpec)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "eval_every": "eval.every",
        "eval_batch_size": "eval.batch_size",
        "max_eval_records": "eval.max_examples",
    }

    def __post_init__(self):
        require(
            self.name is None,
            f"name: rlr train-{self.kind} does not name its runs (out_dir does); remove the key",
        )
        if self.train.max_reasoning_steps is None:
            train = dataclasses.replace(self.train, max_reasoning_steps=16)
            object.__setattr__(self, "train", train)
        require(bool(self.tokenizer), "tokenizer must name a tokenizer directory")
        require(bool(self.init.path or self.init.architecture), "init needs path or architecture")
        require(
            self.init.lora is None,
            f"init.lora: rlr train-{self.kind} trains every weight of the reward model; "
            "adapters are for rlr ppo's policy (policy.lora): remove the key",
        )
        require(0.0 <= self.neutral_target <= 1.0, "neutral_target must be in [0, 1]")


# ReaLHF's PPO experiment defaults that rlr leaves off by default (module docstring): these
# overrides on top of rlr's defaults make a ppo run follow ReaLHF in them too.
REALHF_PPO: dict[str, Any] = {
    "ppo.truncation": "zero_and_bootstrap",
    "ppo.value_norm": True,
    "ppo.value_norm_beta": 0.99995,
    "ppo.early_stop_ratio": 5.0,
}


def dapo_overrides(max_new_tokens: int) -> dict[str, Any]:
    """DAPO (Yu et al. 2025, arXiv 2503.14476) as overrides on grpo: clip-higher 0.2 / 0.28,
    a token-mean loss, no KL term, dynamic sampling (at most 10 rounds, the DAPO recipe's
    max_num_gen_batches) and overlong reward shaping with a buffer of a fifth of the budget
    (the paper's 4096 of 20480 tokens), penalty 1. rlr's defaults leave all of it off."""
    return {
        "algorithm": "grpo",
        "ppo.clip_eps_low": 0.2,
        "ppo.clip_eps_high": 0.28,
        "ppo.loss_aggregation": "token_mean",
        "reward.kl_coef": 0.0,
        "rollout.dynamic_sampling": True,
        "rollout.max_sampling_rounds": 10,
        "reward.overlong_buffer": max(1, max_new_tokens // 5),
        "reward.overlong_penalty": 1.0,
    }


# DAPO for the default budget (rollout.max_new_tokens = 96: an overlong buffer of 19 tokens);
# dapo_overrides(max_new_tokens) for another budget.
DAPO: dict[str, Any] = dapo_overrides(96)

# GSPO (Zheng et al. 2025, arXiv 2507.18071) as overrides on grpo: the sequence-level
# importance ratio with a sequence-mean loss, clip range 3e-4 / 4e-4 and no KL term, as verl's
# examples/gspo_trainer scripts. rlr's defaults leave it off.
GSPO: dict[str, Any] = {
    "algorithm": "grpo",
    "ppo.importance_ratio": "sequence",
    "ppo.loss_aggregation": "sequence_mean",
    "ppo.clip_eps_low": 3e-4,
    "ppo.clip_eps_high": 4e-4,
    "reward.kl_coef": 0.0,
}
