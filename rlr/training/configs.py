"""Run-config schemas for rlr's jobs: frozen dataclasses, validated when built.

Load them with `rlr.config.load_config(PPOConfig, "launch/configs/cpu_tiny.yaml", overrides)`.
Defaults follow ReaLHF's PPO where the paper is silent (../shared/PAPER.md section 5):
fixed KL 0.1, gamma 1, lambda 1, ratio clip 0.2, value clip 0.2, whitened advantages,
4 minibatches.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from rlr.config import require

RewardMethod = Literal["raw", "clip", "delta", "clip_delta"]
DType = Literal["float32", "bfloat16"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Where a network comes from: an HF directory, or an inline HF-style architecture.

    `path` wins when both are given; `architecture` (a config.json-style mapping) is used to
    initialise a fresh model, and by `rlr plan` to size a model without its weights.
    """

    path: str | None = None
    architecture: dict[str, Any] | None = None
    dtype: DType = "float32"
    param_dtype: DType = "float32"

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
    format: Literal["synthetic", "gsm8k", "math", "mathinstruct"] = "synthetic"
    prompt_style: Literal["plain", "chat"] = "plain"
    max_test_problems: int | None = None

    def __post_init__(self):
        require(bool(self.train), "data.train must name a JSONL file of training prompts")


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    """Which rewards make up the per-token reward (PAPER.md section 3, in that order)."""

    use_prm: bool = False
    use_orm: bool = False
    method: RewardMethod = "clip_delta"
    alpha: float = 1.0
    eta: float = 0.0
    orm_weight: float = 1.0
    kl_coef: float = 0.1
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    separators: tuple[str, ...] = ("\n\n", "\n")
    max_steps: int = 16

    def __post_init__(self):
        require(self.alpha >= 0, f"reward.alpha must be >= 0; got {self.alpha}")
        require(self.kl_coef >= 0, f"reward.kl_coef must be >= 0; got {self.kl_coef}")
        require(self.max_steps >= 1, f"reward.max_steps must be >= 1; got {self.max_steps}")
        require(len(self.separators) >= 1, "reward.separators must name at least one separator")


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
    # Rows per sampler / scoring call (None: the whole batch at once). Large runs chunk the
    # batch so that the KV cache and the [rows, T, V] logits fit in device memory.
    chunk_rows: int | None = None

    @property
    def batch_size(self) -> int:
        return self.prompts_per_iteration * self.samples_per_prompt

    def __post_init__(self):
        require(self.prompts_per_iteration >= 1, "rollout.prompts_per_iteration must be >= 1")
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


@dataclasses.dataclass(frozen=True)
class PPOSpec:
    """PPO and GAE hyper-parameters."""

    gamma: float = 1.0
    lam: float = 1.0
    clip_eps: float = 0.2
    value_clip_eps: float = 0.2
    epochs: int = 1
    minibatches: int = 4
    whiten_advantages: bool = True
    policy_lr: float = 1e-6
    critic_lr: float = 5e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    critic_init: Literal["prm", "orm", "policy"] = "policy"

    def __post_init__(self):
        require(0 <= self.gamma <= 1, f"ppo.gamma must be in [0, 1]; got {self.gamma}")
        require(0 <= self.lam <= 1, f"ppo.lam must be in [0, 1]; got {self.lam}")
        require(self.epochs >= 1, "ppo.epochs must be >= 1")
        require(self.minibatches >= 1, "ppo.minibatches must be >= 1")
        require(self.policy_lr > 0 and self.critic_lr > 0, "ppo learning rates must be > 0")


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
    """A whole PPO run: `rlr ppo --config FILE key=value ...`."""

    name: str = "ppo"
    seed: int = 0
    out_dir: str = "runs/ppo"
    iterations: int = 100
    tokenizer: str = ""
    policy: ModelSpec = dataclasses.field(default_factory=lambda: ModelSpec(path=""))
    prm: ModelSpec | None = None
    orm: ModelSpec | None = None
    data: DataSpec = dataclasses.field(default_factory=lambda: DataSpec(train="-"))
    reward: RewardSpec = dataclasses.field(default_factory=RewardSpec)
    rollout: RolloutSpec = dataclasses.field(default_factory=RolloutSpec)
    ppo: PPOSpec = dataclasses.field(default_factory=PPOSpec)
    mesh: MeshSpec = dataclasses.field(default_factory=MeshSpec)
    grading: GradingSpec = dataclasses.field(default_factory=GradingSpec)
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    eval_every: int = 0
    device_memory_gib: float | None = None

    def __post_init__(self):
        require(self.iterations >= 1, "iterations must be >= 1")
        require(
            not self.reward.use_prm or self.prm is not None,
            "reward.use_prm is true but no `prm` model is given",
        )
        require(
            not self.reward.use_orm or self.orm is not None,
            "reward.use_orm is true but no `orm` model is given",
        )
        require(
            self.ppo.critic_init != "prm" or self.prm is not None,
            "ppo.critic_init=prm needs a `prm` model",
        )
        require(
            self.ppo.critic_init != "orm" or self.orm is not None,
            "ppo.critic_init=orm needs an `orm` model",
        )
        require(
            self.rollout.batch_size % self.ppo.minibatches == 0,
            f"rollout batch {self.rollout.batch_size} (prompts x samples) must divide into "
            f"ppo.minibatches={self.ppo.minibatches}",
        )
