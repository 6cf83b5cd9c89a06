"""A reproduction's stages as rlr command lines: where each stage writes, which RL runs there
are (variants per algorithm, seeds, swept values) and the arguments of each.

Nothing here runs or writes anything; rlr.reproduce.stages runs these command lines, caches
them and reports on them.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from rlr.reproduce.schemas import (
    GROUP_ONLY_VARIANTS,
    RECIPES,
    REWARD_VARIANTS,
    ReproduceConfig,
    StageSpec,
    base_algorithm,
    recipe_overrides,
    resolve_ppo_key,
    sweep_name,
    sweep_value_name,
)
from rlr.training.schemas import ALGORITHM_DEFAULTS, CRITIC_KEYS

VARIANTS = REWARD_VARIANTS


def _override(key: str, value: Any) -> str:
    """key=value with the value written so that YAML reads it back unchanged (JSON is YAML)."""
    import yaml

    if isinstance(value, str) and yaml.safe_load(value) == value:
        return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


def critic_free_overrides(algorithm: str) -> list[str]:
    """Overrides that unset, for a critic-free algorithm (or a recipe on one: dapo, gspo), the
    keys it does not read (the critic's, and the reward's KL estimator when the KL is in the
    loss): one PPO stage config serves every algorithm of a reproduction, and a critic-free run
    refuses those keys."""
    defaults = ALGORITHM_DEFAULTS[base_algorithm(algorithm)]
    if defaults.critic:
        return []
    unset = [f"ppo.{key}" for key in CRITIC_KEYS]
    if defaults.kl_in_loss:
        unset.append("reward.kl_estimator")
    return [f"{key}=null" for key in unset]


def critic_lora_unset(algorithm: str, overrides: dict[str, Any]) -> list[str]:
    """`ppo.critic_lora=null` for a critic-free algorithm when the PPO stage's overrides give
    the critic adapters (a critic-free run refuses the key); nothing otherwise, so the command
    lines of reproductions without the key stay as they were."""
    if ALGORITHM_DEFAULTS[base_algorithm(algorithm)].critic:
        return []
    sets = any(key.split(".")[:2] == ["ppo", "critic_lora"] for key in overrides)
    return ["ppo.critic_lora=null"] if sets else []


def stage_overrides(stage: StageSpec) -> list[str]:
    """A stage's config overrides as key=value arguments."""
    return [_override(key, value) for key, value in stage.overrides.items()]


def seed_override(seed: int) -> list[str]:
    """A training stage's seed override: none for seed 0 (the config's own seed, so a one-seed
    reproduction keeps its cached stages), `seed=N` after it."""
    return [] if seed == 0 else [f"seed={seed}"]


def seed_suffix(seed: int) -> str:
    """ "" for seed 0, "_seedN" after it: the suffix of a seed's stage folders."""
    return "" if seed == 0 else f"_seed{seed}"


def variant_dir(runs_dir: pathlib.Path, variant: str, seed: int) -> pathlib.Path:
    """VARIANT (seed 0) or VARIANT_seedN under an algorithm's runs folder."""
    return runs_dir / f"{variant}{seed_suffix(seed)}"


def command_config(argv: list[str]) -> Any:
    """The config `rlr ARGV` would run with (validated), without running anything."""
    from rlr import cli
    from rlr.commands import BY_NAME

    return cli.load_run_config(BY_NAME[argv[0]], cli.build_parser().parse_args(argv))


class StageArguments:
    """The stages of a reproduction config as rlr command lines: their folders under out_dir,
    their arguments and the RL runs in running order (rlr.reproduce.stages.Reproduction runs
    them)."""

    def __init__(self, config: ReproduceConfig):
        from rlr.training.checkpoint import run_directory

        self.config = config
        # Decided where every command's run directory is; local only: later stages read what
        # earlier ones wrote (data, tokenizer, models) with readers that take local paths.
        self.out = run_directory(config.out_dir, field="out_dir (--out)", uri=False)
        self.seeds = config.seeds
        self.variants = tuple(config.variants)
        self.filler_aware = config.prm_labels == "filler_aware"
        # A sweep runs every variant and seed once per value of one PPO config key.
        self.sweep_key = resolve_ppo_key(config.sweep.key) if config.sweep.key else ""
        self.sweep_name = sweep_name(self.sweep_key) if self.sweep_key else ""
        self.values: tuple[Any, ...] = tuple(config.sweep.values) if self.sweep_key else (None,)
        # Set apart the files of a filler-aware or sweep reproduction sharing this out_dir.
        self.suffix = ("_filler_aware" if self.filler_aware else "") + (
            f"_sweep_{self.sweep_name}" if self.sweep_key else ""
        )

    def path(self, *parts: str) -> str:
        """A path under the output directory, as text for a command line."""
        return str(self.out.joinpath(*parts))

    def data_arguments(self, *, filler_aware: bool = False) -> list[str]:
        """`rlr make-data` arguments of the task (the filler-aware PRM's data: the same
        problems and solutions, fillers labelled as no progress)."""
        task = self.config.task
        argv = [
            "make-data",
            "--out",
            self.path("data_filler_aware" if filler_aware else "data"),
            f"--num-train={task.num_train}",
            f"--num-test={task.num_test}",
            f"--seed={task.seed}",
            f"--min-operations={task.min_operations}",
            f"--max-operations={task.max_operations}",
            f"--max-digits={task.max_digits}",
            f"--operations={''.join(task.operations)}",
            f"--sft-filler-fraction={task.sft_filler_fraction}",
            f"--sft-slip-fraction={task.sft_slip_fraction}",
            f"--sft-misread-fraction={task.sft_misread_fraction}",
            f"--prm-misread-fraction={task.prm_misread_fraction}",
        ]
        return argv + (["--prm-filler-labels=no_progress"] if filler_aware else [])

    def model_dir(self, kind: str, seed: int = 0) -> pathlib.Path:
        """Where seed `seed`'s sft / prm / orm / sft_eval stage writes: KIND for seed 0 (so a
        one-seed reproduction is the first seed of a longer one), KIND_seedN after it; the
        filler-aware PRM is prm_filler_aware[_seedN]."""
        if kind == "prm" and self.filler_aware:
            kind = "prm_filler_aware"
        return self.out / f"{kind}{seed_suffix(seed)}"

    def sft_arguments(self, seed: int = 0) -> list[str]:
        """`rlr sft` arguments: the stage's config, the chaining paths, its overrides."""
        stage = self.config.sft
        return [
            "sft",
            "--config",
            stage.config,
            f"out_dir={self.model_dir('sft', seed)}",
            f"tokenizer={self.path('tokenizer')}",
            f"data.train={self.path('data', 'sft_train.jsonl')}",
            f"data.test={self.path('data', 'problems_test.jsonl')}",
            *stage_overrides(stage),
            *seed_override(seed),
        ]

    def reward_model_arguments(self, kind: str, seed: int = 0) -> list[str]:
        """`rlr train-prm` / `train-orm` arguments on seed `seed`'s SFT trunk."""
        stage = getattr(self.config, kind)
        data = "data_filler_aware" if kind == "prm" and self.filler_aware else "data"
        return [
            f"train-{kind}",
            "--config",
            stage.config,
            f"out_dir={self.model_dir(kind, seed)}",
            f"tokenizer={self.path('tokenizer')}",
            f"init.path={self.model_dir('sft', seed) / 'model'}",
            f"data.train={self.path(data, 'prm_train.jsonl')}",
            f"data.test={self.path(data, 'prm_test.jsonl')}",
            *stage_overrides(stage),
            *seed_override(seed),
        ]

    @property
    def needs_orm(self) -> bool:
        """Whether a configured variant reads the ORM (otherwise none is trained)."""
        return any(VARIANTS[v].get("reward.use_orm") for v in self.variants)

    def ppo_arguments(
        self, variant: str, seed: int, algorithm: str = "ppo", value: Any = None
    ) -> list[str]:
        """`rlr ppo` arguments of one variant, seed, algorithm and swept value. A recipe
        (dapo, gspo) runs as its base algorithm with its overrides after the stage's (the swept
        value may override them). The variant's reward settings come last (ReproduceConfig
        forbids them in ppo.overrides and as the swept key), so a variant is what it says."""
        stage = self.config.ppo
        directory = self.variant_dir(variant, seed, algorithm, value)
        orm = self.model_dir("orm", seed) / "model"
        recipe = self.recipe(algorithm)
        return [
            "ppo",
            "--config",
            stage.config,
            f"name={variant if algorithm == 'ppo' else f'{algorithm}_{variant}'}",
            f"algorithm={base_algorithm(algorithm)}",
            f"seed={seed}",
            f"out_dir={directory}",
            f"tokenizer={self.path('tokenizer')}",
            f"policy.path={self.model_dir('sft', seed) / 'model'}",
            f"prm.path={self.model_dir('prm', seed) / 'model'}",
            # Only the variant that reads the ORM loads it (the others would score every
            # rollout with a network they ignore), so the runs do not depend on --variants.
            f"orm.path={orm}" if VARIANTS[variant].get("reward.use_orm") else "orm=null",
            f"data.train={self.path('data', 'problems_train.jsonl')}",
            f"data.test={self.path('data', 'problems_test.jsonl')}",
            *stage_overrides(stage),
            *critic_free_overrides(algorithm),
            *critic_lora_unset(algorithm, stage.overrides),
            *(_override(k, v) for k, v in recipe.items()),
            *([] if value is None else [_override(self.sweep_key, value)]),
            *(_override(k, v) for k, v in VARIANTS[variant].items()),
            "--export",
            str(directory / "model"),
        ]

    def recipe(self, algorithm: str) -> dict[str, Any]:
        """A recipe's PPO config overrides for this reproduction's budget (DAPO's overlong
        buffer is a fifth of rollout.max_new_tokens); {} for ppo, grpo, dr_grpo, rloo."""
        return recipe_overrides(algorithm, self.max_new_tokens) if algorithm in RECIPES else {}

    @property
    def max_new_tokens(self) -> int:
        """The RL runs' rollout.max_new_tokens (the budget DAPO's overlong buffer is a fifth
        of): the PPO stage's, which no sweep may change (EVALUATION_SECTIONS)."""
        if not hasattr(self, "_max_new_tokens"):
            config = self.ppo_config("success", 0, "grpo")
            self._max_new_tokens = int(config.rollout.max_new_tokens)
        return self._max_new_tokens

    def variants_for(self, algorithm: str) -> tuple[str, ...]:
        """The configured variants an algorithm runs (a critic skips the group-only ones)."""
        if not ALGORITHM_DEFAULTS[base_algorithm(algorithm)].critic:
            return self.variants
        return tuple(v for v in self.variants if v not in GROUP_ONLY_VARIANTS)

    def ppo_config(self, variant: str, seed: int, algorithm: str = "ppo", value: Any = None):
        """The resolved PPOConfig of one run (what `rlr ppo` runs with)."""
        return command_config(self.ppo_arguments(variant, seed, algorithm, value))

    def variant_dir(
        self, variant: str, seed: int, algorithm: str = "ppo", value: Any = None
    ) -> pathlib.Path:
        """Where one run trains: ALGORITHM/[filler_aware/][sweep_KEY/VALUE/]VARIANT[_seedN]."""
        return variant_dir(self.runs_dir(algorithm, value), variant, seed)

    def runs_dir(self, algorithm: str, value: Any = None) -> pathlib.Path:
        """The folder of one algorithm's runs (of one swept value, with a sweep)."""
        path = self.out / algorithm
        if self.filler_aware:
            path = path / "filler_aware"
        if value is not None:
            path = path / f"sweep_{self.sweep_name}" / sweep_value_name(value)
        return path

    def validate(self) -> None:
        """Loads every stage's config as its command will, before anything trains: a typo in
        a late stage's overrides fails at once, not after an hour of earlier stages."""
        for seed in range(self.seeds):
            command_config(self.sft_arguments(seed))
            for kind in ("prm", "orm") if self.needs_orm else ("prm",):
                command_config(self.reward_model_arguments(kind, seed))
        for algorithm in self.config.algorithms:
            for variant in self.variants_for(algorithm):
                for seed in range(self.seeds):
                    for value in self.values:
                        self.ppo_config(variant, seed, algorithm, value)

    def run_order(self, algorithm: str) -> list[tuple[Any, str, int]]:
        """(swept value, variant, seed) of every RL run of an algorithm, in running order: the
        raw PRM (where hacking shows) and Clip-Delta first, so their curves can be read while
        the other variants train."""
        variants = self.variants_for(algorithm)
        first = [v for v in ("prm_raw", "prm_clip_delta") if v in variants]
        ordered = first + [v for v in variants if v not in first]
        return [
            (value, variant, seed)
            for seed in range(self.seeds)
            for value in self.values
            for variant in ordered
        ]
