"""The config of `rlr reproduce` and the reproduction's policy: ReproduceConfig (the synthetic
task, each stage's config and overrides, the PRM's labels, the sweep), the shipped presets, the
reward variants of the paper's ablation (name -> PPO config overrides) with the opt-in process
designs, and the helpers that resolve and name a swept PPO config key.

Like rlr.training.schemas, this module imports only the standard library, rlr.config_loading and the
PPO schema, so the CLI can load, validate and print a reproduction's config before anything
heavy is imported.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, ClassVar, Literal

from rlr.config_loading import require
from rlr.training.schemas import GSPO, PPOConfig, dapo_overrides

# Shipped reproductions: `rlr reproduce --preset P` reads rlr/configs/reproduce_P.yaml.
REPRODUCE_PRESETS = ("cpu", "cpu_sparse", "smoke")

# The algorithms a reproduction runs every variant under: rlr's own (`algorithm=` of a PPO
# config) and two recipes on top of grpo, DAPO and GSPO (RECIPES).
ReproduceAlgorithm = Literal["ppo", "grpo", "dr_grpo", "rloo", "dapo", "gspo"]


def _gspo_overrides(max_new_tokens: int) -> dict[str, Any]:
    """GSPO's overrides (its settings do not depend on the token budget)."""
    return dict(GSPO)


# Recipe name -> its PPO config overrides for a budget of rollout.max_new_tokens, each with
# the algorithm it runs as (rlr.training.schemas.dapo_overrides, GSPO).
RECIPES = {"dapo": dapo_overrides, "gspo": _gspo_overrides}


def recipe_overrides(algorithm: str, max_new_tokens: int) -> dict[str, Any]:
    """A reproduction algorithm's PPO config overrides besides `algorithm=` itself: a recipe's
    (DAPO with an overlong buffer of a fifth of `max_new_tokens`, GSPO), none for ppo, grpo,
    dr_grpo, rloo."""
    if algorithm not in RECIPES:
        return {}
    overrides = RECIPES[algorithm](max_new_tokens)
    return {k: v for k, v in overrides.items() if k != "algorithm"}


def base_algorithm(algorithm: str) -> str:
    """The `algorithm=` a reproduction algorithm runs as: a recipe's (dapo, gspo -> grpo), the
    name itself otherwise."""
    if algorithm not in RECIPES:
        return algorithm
    return RECIPES[algorithm](1)["algorithm"]


# The reward variants of the paper's ablation: name -> PPO config overrides.
REWARD_VARIANTS: dict[str, dict[str, Any]] = {
    "success": {"reward.use_prm": False, "reward.use_orm": False},
    "orm": {"reward.use_prm": False, "reward.use_orm": True},
    "prm_raw": {"reward.use_prm": True, "reward.method": "raw"},
    "prm_clip": {"reward.use_prm": True, "reward.method": "clip"},
    "prm_delta": {"reward.use_prm": True, "reward.method": "delta"},
    "prm_clip_delta": {"reward.use_prm": True, "reward.method": "clip_delta"},
    # Critic-free only: the process advantages normalised over the prompt's group (opt-in;
    # it breaks the gamma = 1 bound, docs/method.md section 11).
    "prm_clip_group": {
        "reward.use_prm": True,
        "reward.method": "clip",
        "reward.process_normalization": "group",
    },
    "prm_clip_delta_group": {
        "reward.use_prm": True,
        "reward.method": "clip_delta",
        "reward.process_normalization": "group",
    },
}
# The presets' variants: the paper's ablation and the group-normalised forms. The process
# designs below are opt-in (`rlr reproduce --variants prm_pure_softmin,...`): listing them by
# default would change every reproduction's runtime.
DEFAULT_VARIANTS = tuple(REWARD_VARIANTS)
# Other process-reward designs (rlr.process_designs, docs/method.md section 13).
PROCESS_DESIGN_VARIANTS: dict[str, dict[str, Any]] = {
    # PURE's softmin step rewards (temperature 0.1): with a critic through GAE, without one
    # as the plain reward-to-go beside the outcome advantage
    "prm_pure_softmin": {"reward.use_prm": True, "reward.method": "pure_softmin"},
    # PURE's exact min-form return: critic-free only
    "prm_min_form": {"reward.use_prm": True, "reward.method": "min_form"},
    # PROF's filter: half of each group dropped (2 of the presets' 4 samples; 4 of 8 in
    # PROF's runs), the PRM only ranking; critic-free only
    "prof": {"reward.use_prm": False, "reward.prof_remove": 2},
    # PRIME's implicit PRM: a copy of the SFT policy trained in the run on the successes
    # (beta 0.05, the policy's learning rate); the `prm` only scores, as a diagnostic
    "prime": {"reward.use_prm": True, "reward.method": "prime", "implicit_prm": {}},
}
REWARD_VARIANTS.update(PROCESS_DESIGN_VARIANTS)
GROUP_ONLY_VARIANTS = ("prm_clip_group", "prm_clip_delta_group", "prm_min_form", "prof")
# Variant names of earlier releases: the plain reward-to-go is now every critic-free run's
# default, and the group-normalised form is the variant that names it.
RENAMED_VARIANTS = {
    "prm_clip_unnormalized": "prm_clip (critic-free runs now default to the unnormalised form; "
    "the group-normalised one is prm_clip_group)",
    "prm_clip_delta_unnormalized": "prm_clip_delta (critic-free runs now default to the "
    "unnormalised form; the group-normalised one is prm_clip_delta_group)",
}


@dataclasses.dataclass(frozen=True)
class SyntheticTaskSpec:
    """The synthetic task of a reproduction: `rlr make-data` and `rlr train-tokenizer` knobs."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "min_steps": "task.min_operations (computations per problem)",
        "max_steps": "task.max_operations (computations per problem)",
    }

    num_train: int = 20000
    num_test: int = 200
    seed: int = 0
    # computations per problem (one reasoning step of the solution each)
    min_operations: int = 2
    max_operations: int = 3
    max_digits: int = 1
    operations: tuple[str, ...] = ("+", "-")
    sft_filler_fraction: float = 0.1
    # SFT demonstrations holding one slip (a wrong intermediate result carried through to a
    # wrong answer), as model-written SFT data does: something for a checked reward to remove
    sft_slip_fraction: float = 0.0
    # SFT / PRM solutions that read "<name> gives <b> <obj> to <other>." as a gift received:
    # one systematic error that greedy decoding copies above one half (synthetic.misread_solution)
    sft_misread_fraction: float = 0.0
    prm_misread_fraction: float = 0.0
    vocab_size: int = 512
    tokenizer_corpus_problems: int = 5000

    def __post_init__(self):
        require(self.num_train >= 1 and self.num_test >= 1, "task.num_train/num_test must be >= 1")
        require(
            1 <= self.min_operations <= self.max_operations,
            f"task.min_operations must be in 1..max_operations; got {self.min_operations}, "
            f"{self.max_operations}",
        )
        require(
            set(self.operations) <= {"+", "-", "*"} and bool(self.operations),
            f"task.operations must be a non-empty subset of +, -, *; got {self.operations}",
        )
        require(self.vocab_size >= 260, f"task.vocab_size must be >= 260; got {self.vocab_size}")
        for name in (
            "sft_filler_fraction",
            "sft_slip_fraction",
            "sft_misread_fraction",
            "prm_misread_fraction",
        ):
            value = getattr(self, name)
            require(0 <= value <= 1, f"task.{name} must be in [0, 1]; got {value}")


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage of a reproduction: a config (file or shipped name) and overrides on top."""

    config: str
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A sweep of one PPO config key over values (`rlr reproduce --sweep KEY=V1,V2,...`): every
    variant and seed runs once per value. `key` is a dotted PPO config key (reward.eta) or a
    field name that names one key alone (eta); empty means no sweep."""

    key: str = ""
    values: tuple[Any, ...] = ()

    def __post_init__(self):
        require(
            not self.key or len(self.values) >= 1,
            f"sweep.values must list at least one value for sweep.key={self.key!r}",
        )
        require(bool(self.key) or not self.values, "sweep.values are set but sweep.key is empty")
        require(
            all(v is not None for v in self.values),
            f"sweep.values: null is not a value a sweep can run (it means 'no override'); "
            f"got {list(self.values)}",
        )
        require(
            all(isinstance(v, str | int | float | bool) for v in self.values),
            f"sweep.values must be numbers, booleans or strings; got {list(self.values)}",
        )
        # Two values clash when they share a folder name, or when Python counts them as one
        # value (1 and 1.0, 0 and false): they would share a results row.
        for i, value in enumerate(self.values):
            for earlier in self.values[:i]:
                a, b = sweep_value_name(earlier), sweep_value_name(value)
                require(
                    a != b and earlier != value,
                    f"sweep.values lists a value twice: {a}"
                    + ("" if a == b else f" and {b} are equal numbers"),
                )


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config dataclass (PPOConfig -> reward.eta, ppo.policy_lr,
    ...); a nested dataclass is a section, anything else a leaf."""
    keys = []
    for field in dataclasses.fields(cls):
        annotation = typing.get_type_hints(cls)[field.name]
        sections = [a for a in typing.get_args(annotation) if dataclasses.is_dataclass(a)]
        if sections and type(None) in typing.get_args(annotation):
            annotation = sections[0]  # an optional section
        if dataclasses.is_dataclass(annotation):
            keys += config_keys(annotation, f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


def sweep_value_name(value: Any) -> str:
    """A swept value as a folder name (0.3, 1e-4, true, raw)."""
    text = json.dumps(value) if not isinstance(value, str) else value
    return "".join(c if c.isalnum() or c in ".-+_" else "_" for c in text)


def _ppo_keys_ending_in(name: str) -> list[str]:
    """The PPO config keys whose last part is `name` (eta -> [reward.eta])."""
    return [key for key in config_keys(PPOConfig) if key.rsplit(".", 1)[-1] == name]


def sweep_name(key: str) -> str:
    """The name a swept PPO key's folders and files carry: its last part (reward.eta -> eta)
    where no other PPO key ends the same way, else the dotted key (policy.dtype)."""
    last = key.rsplit(".", 1)[-1]
    return last if len(_ppo_keys_ending_in(last)) == 1 else key


def resolve_ppo_key(name: str) -> str:
    """A PPO config key from its dotted form (reward.eta) or from a field name that names one
    key alone (eta -> reward.eta); anything else is an error that lists the candidates."""
    keys = config_keys(PPOConfig)
    if name in keys:
        return name
    matches = _ppo_keys_ending_in(name)
    require(bool(matches), f"sweep.key: {name!r} is not a PPO config key{_close(name, keys)}")
    require(
        len(matches) == 1,
        f"sweep.key: {name!r} names several PPO config keys ({', '.join(matches)}); "
        "write the dotted one",
    )
    return matches[0]


def _close(name: str, keys: list[str]) -> str:
    import difflib

    leaves = {key.rsplit(".", 1)[-1]: key for key in keys}
    close = difflib.get_close_matches(name, list(leaves) + keys, n=1, cutoff=0.6)
    return f"; did you mean '{leaves.get(close[0], close[0])}'?" if close else ""


# The PRM a reproduction trains: "standard" labels filler steps correct (so the PRM rewards
# padding, the premise of the hacking); "filler_aware" labels them as no progress (-1).
PRMLabels = Literal["standard", "filler_aware"]
# PPO keys `rlr reproduce` sets for every run (a sweep of one would be silently overridden).
REPRODUCTION_KEYS = (
    "seed",
    "out_dir",
    "name",
    "algorithm",
    "tokenizer",
    "policy.path",
    "prm.path",
    "orm.path",
    "data.train",
    "data.test",
)
# Sections the held-out evaluation reads (problems, budgets, grader): one SFT baseline serves
# every swept value, so a sweep may not change them.
EVALUATION_SECTIONS = (
    "data.",
    "rollout.max_new_tokens",
    "rollout.max_prompt_tokens",
    "rollout.trim_prompts",
    "grading.",
    "reward.separators",
)
EXPECTED_STAGES = ("data", "tokenizer", "sft", "prm", "orm", "evaluation", "ppo_iteration")


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """`rlr reproduce`: data -> tokenizer -> SFT -> PRM and ORM -> PPO per reward variant.

    Each stage runs the rlr command a user would run, with `<stage>.config` and
    `<stage>.overrides` plus the paths that chain the stages; every variant's PPO run gets the
    same budget and seeds.
    """

    name: str = "reproduce"
    out_dir: str = "runs/reproduce"
    seeds: int = 1
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    # The RL algorithms every variant runs under, each with the same budget and seeds:
    # ppo (results.json) and any of grpo, dr_grpo, rloo, and the recipes dapo and gspo (grpo
    # with RECIPES' overrides) (results_<algorithm>.json).
    algorithms: tuple[ReproduceAlgorithm, ...] = ("ppo",)
    task: SyntheticTaskSpec = dataclasses.field(default_factory=SyntheticTaskSpec)
    sft: StageSpec = dataclasses.field(default_factory=lambda: StageSpec("sft_cpu"))
    prm: StageSpec = dataclasses.field(default_factory=lambda: StageSpec("prm_cpu"))
    orm: StageSpec = dataclasses.field(default_factory=lambda: StageSpec("orm_cpu"))
    ppo: StageSpec = dataclasses.field(default_factory=lambda: StageSpec("ppo_cpu"))
    prm_labels: PRMLabels = "standard"
    sweep: SweepSpec = dataclasses.field(default_factory=SweepSpec)
    # Seconds per stage measured on a 2-core machine (JAX matmul about 200 GFLOP/s), for the
    # estimate printed before a run starts; a stage's measured time replaces its estimate.
    # Keys: data, tokenizer, sft, prm, orm, evaluation (one policy), ppo_iteration.
    expected_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    # The report's speed column: the first iteration at which a run's training success rate,
    # averaged over the last 5 iterations, reaches this value.
    success_target: float = 0.9

    def __post_init__(self):
        require(self.seeds >= 1, f"seeds must be >= 1; got {self.seeds}")
        require(
            0 < self.success_target <= 1,
            f"success_target must be in (0, 1]; got {self.success_target}",
        )
        variant_keys = {key for overrides in REWARD_VARIANTS.values() for key in overrides}
        clash = sorted(variant_keys & set(self.ppo.overrides))
        require(
            not clash,
            f"ppo.overrides sets {', '.join(clash)}, which every reward variant sets itself; "
            "choose the variants instead",
        )
        require(bool(self.variants), "variants must name at least one reward variant")
        require(
            bool(self.algorithms) and len(set(self.algorithms)) == len(self.algorithms),
            f"algorithms must name each algorithm once; got {list(self.algorithms)}",
        )
        for recipe in set(self.algorithms) & set(RECIPES):
            clash = sorted(set(recipe_overrides(recipe, 1)) & set(self.ppo.overrides))
            require(
                not clash,
                f"ppo.overrides sets {', '.join(clash)}, which the {recipe} recipe of "
                f"algorithms sets itself for its runs; remove {recipe} from algorithms, or "
                "sweep the key (a swept value overrides the recipe's)",
            )
        for variant in self.variants:
            require(
                variant not in RENAMED_VARIANTS,
                f"variants: {variant} is now {RENAMED_VARIANTS.get(variant)}",
            )
            require(
                variant in REWARD_VARIANTS,
                f"variants: unknown variant {variant!r}; choose from {', '.join(REWARD_VARIANTS)}",
            )
        if self.sweep.key:
            key = resolve_ppo_key(self.sweep.key)
            require(
                key not in variant_keys,
                f"sweep.key: {key} is what the reward variants differ in; choose --variants "
                "instead of sweeping it",
            )
            require(
                key not in REPRODUCTION_KEYS,
                f"sweep.key: {key} is set by the reproduction itself (seeds with --seeds, "
                "algorithms with --algorithm, paths by the stages)",
            )
            require(
                not key.startswith(EVALUATION_SECTIONS),
                f"sweep.key: {key} changes the held-out evaluation, which the SFT baseline "
                "shares with every swept value; run one reproduction per value with "
                f"ppo.overrides.{key}=VALUE and a separate --out instead",
            )
        for name, seconds in self.expected_seconds.items():
            require(
                name in EXPECTED_STAGES and seconds >= 0,
                f"expected_seconds.{name}: must be one of {', '.join(EXPECTED_STAGES)} with a "
                f"time >= 0; got {seconds!r}",
            )
