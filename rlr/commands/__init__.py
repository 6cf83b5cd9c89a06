"""The command-line surface of every `rlr` subcommand: name, help, arguments, and where it runs.

This module imports nothing but the standard library, so `rlr --help` and `rlr CMD --help`
print without loading JAX. Each command runs from its own module, rlr.commands.<name> (the
name with "-" as "_"), imported only when the command runs; it exposes
`run(args: argparse.Namespace) -> int` and holds no logic of its own beyond reading the
arguments, calling the library and printing. Config-driven commands (`config` set below)
take `--config FILE|NAME`, `key=value` overrides and `--print-config`; the CLI loads and
validates their config before importing anything heavy and hands it over as
`args.run_config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from rlr.reproduce.schemas import REPRODUCE_PRESETS, REWARD_VARIANTS

FILE_FORMATS = ("synthetic", "gsm8k", "math", "mathinstruct")


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: `module.run(args)` runs it; `add_arguments(parser)` declares its flags.

    `module` is rlr.commands.<name> (the name with "-" as "_"): a thin module that reads the
    arguments, calls the library and prints; no command module imports another.
    `config` is "module:Class" of the frozen config dataclass of a config-driven command, and
    `overrides` are key=value overrides the command always applies (e.g. kind=prm).
    """

    name: str
    module: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    config: str | None = None
    overrides: tuple[str, ...] = ()
    # args -> (config file or shipped name, overrides); None: --config and the overrides
    config_from_args: Callable[[argparse.Namespace], tuple[str, list[str]]] | None = None

    def config_source(self, args: argparse.Namespace) -> tuple[str, list[str]]:
        """(config file or shipped name, key=value overrides) named by parsed arguments."""
        if self.config_from_args is not None:
            name, overrides = self.config_from_args(args)
        else:
            name, overrides = args.config, list(args.overrides)
        return name, [*overrides, *self.overrides]


# ------------------------------------------------------------------- argument types


def renamed_flag(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Declares `old`, hidden from --help, as an error that names `new`."""

    class Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"{old} is now {new}; rename it")

    parser.add_argument(old, action=Renamed, nargs="?", help=argparse.SUPPRESS)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def score_list(text: str) -> list[float]:
    """argparse type: comma-separated floats such as 0.9,0.7,0.8."""
    try:
        scores = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--scores must be comma-separated numbers such as 0.9,0.7,0.8; got {text!r}"
        ) from None
    if not scores:
        raise argparse.ArgumentTypeError("--scores needs at least one score")
    return scores


# ------------------------------------------------------------------ arguments


def add_config_arguments(
    parser: argparse.ArgumentParser, *, example: str, override: str = "train.steps=50"
) -> None:
    """--config, --print-config and key=value overrides (every config-driven command)."""
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE|NAME",
        help=f"YAML config: a file, or the name of a config shipped with rlr (e.g. {example}; "
        "`rlr configs` lists them)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved config (every key with its value) as YAML and exit",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help=f"config overrides, e.g. {override}"
    )


def _sft(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, example="sft_cpu")


def _reward_model(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, example="prm_cpu")


def _ppo(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, example="ppo_cpu", override="reward.method=raw")
    parser.add_argument("--export", default=None, help="write the final policy here (HF dir)")


def _evaluate(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, example="ppo_cpu", override="eval.max_examples=1000")
    parser.add_argument(
        "--policy",
        default=None,
        help="the policy's HF directory (default: the config's policy.path)",
    )
    parser.add_argument("--out", default=None, help="write the results here as JSON")


def _plan(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, example="qwen25_math_7b", override="rollout.chunk_rows=128")
    parser.add_argument(
        "--mesh", default=None, help="data=N,fsdp=N,tensor=N (default: the config's mesh)"
    )
    parser.add_argument(
        "--device-memory-gib",
        type=float,
        default=None,
        help="memory of one device; exit 1 when the estimate exceeds it "
        "(default: the config's device_memory_gib)",
    )
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument(
        "--extrapolate",
        action="store_true",
        help="compile 1 and 2 layers and extrapolate to the full depth instead of compiling it "
        "(for networks with scan_layers: false, whose compile time grows with depth)",
    )


def _reproduce(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="cpu",
        choices=REPRODUCE_PRESETS,
        help="cpu: the main job (about 21 minutes per seed on 2 cores); cpu_sparse: longer "
        "problems where success is sparse, success-only against PRM-Clip and Clip-Delta under "
        "PPO and GRPO (about 40 minutes per seed); smoke: a few minutes",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE|NAME",
        help="a reproduction config instead of a preset (--preset P means --config reproduce_P)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    parser.add_argument(
        "--out", default=None, help="results directory, a local folder (default runs/reproduce)"
    )
    parser.add_argument("--seeds", type=positive_int, default=None, help="seeds per variant")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated reward variants (default: the preset's): "
        + ", ".join(REWARD_VARIANTS)
        + "; the critic-free-only ones are skipped under ppo",
    )
    parser.add_argument(
        "--algorithm",
        default=None,
        help="comma-separated RL algorithms to run every variant under: ppo (default), grpo, "
        "dr_grpo, rloo, or the recipes dapo and gspo (grpo with DAPO's / GSPO's settings: "
        "rlr.training.schemas.dapo_overrides for the PPO stage's rollout.max_new_tokens, "
        "GSPO); results_<algorithm>.md for each one but ppo",
    )
    parser.add_argument(
        "--sweep",
        default=None,
        metavar="KEY=V1,V2,...",
        help="run every variant and seed once per value of a PPO config key, e.g. "
        "eta=0.3,0.5,0.7,0.9 or ppo.policy_lr=1e-5,5e-5: results_sweep_KEY.md and sweep_KEY.png",
    )
    parser.add_argument(
        "--prm",
        default=None,
        choices=("standard", "filler_aware"),
        help="the PRM the variants use: standard (filler steps labelled correct, so the PRM "
        "rewards padding) or filler_aware (filler labelled no progress): "
        "results_filler_aware.md",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="overrides, e.g. task.num_test=100"
    )


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """`--sweep KEY=V1,V2,...` -> (KEY, [V1, V2, ...]), each value read as YAML (0.5 is a
    number, abc a string)."""
    import yaml

    from rlr.config_loading import ConfigError

    key, sep, values = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--sweep {text!r} must look like KEY=V1,V2,... (e.g. eta=0.3,0.5)")
    items = [v.strip() for v in values.split(",")]
    if not values.strip() or not all(items):
        raise ConfigError(f"--sweep {text!r} needs comma-separated values after '=', none empty")
    parsed = []
    for item in items:
        try:
            parsed.append(yaml.safe_load(item))
        except yaml.YAMLError:
            raise ConfigError(f"--sweep {text!r}: value {item!r} is not valid YAML") from None
    return key.strip(), parsed


def reproduce_config_source(args: argparse.Namespace) -> tuple[str, list[str]]:
    """`--preset P` means `--config reproduce_P`; --out, --seeds, --variants and --algorithm
    are overrides."""
    overrides = list(args.overrides)
    if args.out is not None:
        overrides.append(f"out_dir={json.dumps(args.out)}")  # quoted: a path is a string
    if args.seeds is not None:
        overrides.append(f"seeds={args.seeds}")
    if args.variants:
        chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
        overrides.append(f"variants=[{','.join(chosen)}]")
    if args.algorithm:
        chosen = [a.strip() for a in args.algorithm.split(",") if a.strip()]
        overrides.append(f"algorithms=[{','.join(chosen)}]")
    if args.sweep:
        key, values = parse_sweep(args.sweep)
        overrides.append(f"sweep={json.dumps({'key': key, 'values': values})}")
    if args.prm:
        overrides.append(f"prm_labels={args.prm}")
    return args.config or f"reproduce_{args.preset}", overrides


def add_sampling_arguments(parser: argparse.ArgumentParser, *, max_new_tokens: int) -> None:
    """Problem-file, tokenizer, sampling and grading flags of label-steps and eval-bon."""
    parser.add_argument(
        "--format",
        default="synthetic",
        choices=FILE_FORMATS,
        help="format of --problems (default synthetic: rlr's own Problem JSONL)",
    )
    parser.add_argument("--tokenizer", default=None, help="HF tokenizer dir (default: --policy)")
    parser.add_argument("--num-problems", type=positive_int, default=None, help="first n only")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens, help="T")
    parser.add_argument("--max-steps", type=positive_int, default=16, help="K, steps per solution")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="sampler rows per call")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--prompt-style", default="plain", choices=("plain", "chat"))
    parser.add_argument(
        "--grader-workers",
        type=non_negative_int,
        default=2,
        help="grading processes (0: in-process)",
    )


STEP_FORMATS = ("rlr", "qwen_math_prm", "math_shepherd", "skywork", "rlhflow", "pure")


def add_prm_arguments(parser: argparse.ArgumentParser, *, help: str) -> None:  # noqa: A002
    """--prm PATH and --prm-format FORMAT (default: read from the PRM's config.json)."""
    parser.add_argument("--prm", default=None, help=help)
    parser.add_argument(
        "--prm-format",
        default=None,
        choices=STEP_FORMATS,
        help="how the PRM renders and scores steps (default: read from its config.json; "
        "rlr is what `rlr train-prm` writes)",
    )


def _label_steps(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="completer policy (HF directory)")
    parser.add_argument("--problems", required=True, help="JSONL of problems with gold answers")
    parser.add_argument("--out", required=True, help="output StepLabelled JSONL file")
    parser.add_argument(
        "--solutions-per-problem", type=positive_int, default=4, help="sampled solutions M"
    )
    parser.add_argument(
        "--given-solutions",
        action="store_true",
        help="label each problem's own `solution` instead of sampling M solutions",
    )
    parser.add_argument(
        "--completions", type=positive_int, default=8, help="continuations N per step prefix"
    )
    add_prm_arguments(
        parser,
        help="label with this PRM's step scores instead of Monte-Carlo completions (an HF "
        "directory or cached org/name id; e.g. a released PRM, to distil it into rlr's)",
    )
    parser.add_argument(
        "--prm-threshold",
        type=float,
        default=0.5,
        help="with --prm: a step scored at least this is labelled +1, else -1 (default 0.5)",
    )
    add_sampling_arguments(parser, max_new_tokens=128)


def _eval_bon(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, help="policy (HF directory)")
    add_prm_arguments(parser, help="PRM: an HF directory or cached org/name id")
    parser.add_argument("--orm", default=None, help="ORM (HF sequence/token-classification dir)")
    parser.add_argument("--problems", required=True, help="JSONL of held-out problems")
    parser.add_argument("--n", type=positive_int, default=8, help="samples per problem G")
    add_sampling_arguments(parser, max_new_tokens=256)
    parser.add_argument(
        "--out", default="runs/bon.json", help="result JSON; the plot goes beside it (.png)"
    )


def _probe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scores",
        type=score_list,
        default=[0.9, 0.7, 0.8, 0.6],
        help="PRM score of each step, comma-separated; the last is the final-answer step"
        " (default: 0.9,0.7,0.8,0.6)",
    )
    parser.add_argument("--filler-score", type=float, default=0.95, help="PRM score of a filler")
    parser.add_argument(
        "--max-filler", type=non_negative_int, default=8, help="largest m (default 8)"
    )
    parser.add_argument("--alpha", type=float, default=1.0, help="process reward weight")
    parser.add_argument("--eta", type=float, default=0.75, help="Clip threshold (default 0.75)")
    parser.add_argument(
        "--tokens-per-step", type=positive_int, default=4, help="tokens in each step"
    )
    outcome = parser.add_mutually_exclusive_group()
    outcome.add_argument(
        "--correct", dest="correct", action="store_true", default=True, help="answer is right"
    )
    outcome.add_argument("--wrong", dest="correct", action="store_false", help="answer is wrong")
    parser.add_argument("--out", default="runs/probe", help="folder for probe.json and probe.png")


def _make_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-train", type=positive_int, default=20000, help="train problems")
    parser.add_argument("--num-test", type=positive_int, default=500, help="test problems")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument(
        "--min-operations", type=positive_int, default=2, help="fewest computations per problem"
    )
    parser.add_argument(
        "--max-operations", type=positive_int, default=4, help="most computations per problem"
    )
    renamed_flag(parser, "--min-steps", "--min-operations")
    renamed_flag(parser, "--max-steps", "--max-operations")
    parser.add_argument("--max-digits", type=positive_int, default=2, help="digits of every value")
    parser.add_argument("--operations", default="+-*", help="operators to use, e.g. '+-'")
    parser.add_argument(
        "--sft-filler-fraction", type=float, default=0.0, help="SFT solutions given one filler step"
    )
    parser.add_argument(
        "--sft-slip-fraction",
        type=float,
        default=0.0,
        help="SFT solutions holding one slip (a wrong intermediate result carried through)",
    )
    parser.add_argument(
        "--sft-misread-fraction",
        type=float,
        default=0.0,
        help="SFT solutions that read '<name> gives <b> <obj> to <other>' as a gift received"
        " (one systematic error; above 0.5 greedy decoding copies it)",
    )
    parser.add_argument(
        "--prm-misread-fraction",
        type=float,
        default=0.0,
        help="PRM solutions that hold the same misreading (labelled wrong from that step)",
    )
    parser.add_argument(
        "--prm-corrupt-fraction", type=float, default=0.5, help="PRM solutions with an error"
    )
    parser.add_argument(
        "--prm-filler-fraction", type=float, default=0.3, help="PRM solutions given 1-2 fillers"
    )
    parser.add_argument(
        "--prm-filler-labels",
        choices=("correct", "no_progress"),
        default="correct",
        help="PRM labels of filler steps: correct (+1 before the first error; the PRM then "
        "rewards padding) or no_progress (-1 without ending the correct prefix: a filler-aware "
        "PRM)",
    )


def _prepare_prm_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        required=True,
        choices=("prm800k", "math-shepherd"),
        help="format of --input: prm800k (phase-1/phase-2 JSONL) or math-shepherd",
    )
    parser.add_argument("--input", required=True, help="the public step-labelled JSONL file")
    parser.add_argument("--out", required=True, help="output StepLabelled JSONL file")
    parser.add_argument(
        "--skip-malformed",
        action="store_true",
        help="skip malformed lines and count them instead of stopping at the first",
    )


def _train_tokenizer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (HF tokenizer files)")
    parser.add_argument("--vocab-size", type=positive_int, default=512, help="vocabulary size")
    parser.add_argument(
        "--num-problems", type=positive_int, default=5000, help="synthetic problems in the corpus"
    )
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")


def _configs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None, help="print this config's YAML")


COMMANDS: tuple[Command, ...] = (
    Command(
        "probe",
        "rlr.commands.probe",
        "returns of raw/clip/delta/clip_delta PRM rewards as filler steps are added",
        "The reward-hacking probe: a solution gets m = 0..N high-scoring filler steps before "
        "its answer, and the gamma = 1 return of each process-reward method is computed "
        "through rlr.token_rewards and rlr.gae_advantages. Raw grows with m; Clip, Delta and "
        "Clip-Delta stay bounded. Writes probe.json and probe.png to --out.",
        _probe,
    ),
    Command(
        "make-data",
        "rlr.commands.make_data",
        "write the synthetic arithmetic task: problems, SFT and PRM data (JSONL)",
        "GSM8K-shaped synthetic word problems with exact step checking: problems with gold "
        "answers, SFT solutions (optionally with filler steps) and step-labelled PRM data.",
        _make_data,
    ),
    Command(
        "prepare-prm-data",
        "rlr.commands.prepare_prm_data",
        "convert PRM800K or Math-Shepherd JSONL into the StepLabelled JSONL of train-prm",
        "Reads public step-labelled data and writes rlr's StepLabelled JSONL (data.format: "
        "rlr). PRM800K ratings are kept: +1 -> correct (1), 0 -> neutral (0), -1 -> wrong "
        "(-1) (train-prm's label_mode=hard trains a neutral step toward neutral_target, "
        "default 1.0); Math-Shepherd step tags become '+' -> 1, '-' -> -1. A malformed line "
        "stops it with FILE:LINE unless --skip-malformed. Prints a one-line JSON summary.",
        _prepare_prm_data,
    ),
    Command(
        "train-tokenizer",
        "rlr.commands.train_tokenizer",
        "train the small byte-level BPE tokenizer on the synthetic arithmetic corpus",
        "A Qwen2-style byte-level BPE (digits split, ChatML template, <|step|> tag) in HF "
        "format, loadable offline with transformers.AutoTokenizer.",
        _train_tokenizer,
    ),
    Command(
        "sft",
        "rlr.commands.sft",
        "supervised fine-tuning of the policy on solutions",
        "Policy SFT: mean token NLL over response tokens on the PPO row layout, with greedy "
        "held-out evaluation, exact resume and an HF export in OUT_DIR/model.",
        _sft,
        config="rlr.training.schemas:SFTConfig",
    ),
    Command(
        "train-prm",
        "rlr.commands.train_prm",
        "train a process reward model (per-step BCE at step-end tokens)",
        "PRM training: binary cross-entropy on the score logit at each step's last token, "
        "where PPO reads it; held-out step AUC and the filler / correct / wrong score report.",
        _reward_model,
        config="rlr.training.schemas:RewardModelConfig",
        overrides=("kind=prm",),
    ),
    Command(
        "train-orm",
        "rlr.commands.train_orm",
        "train an outcome reward model (BCE at the last response token)",
        "ORM training: binary cross-entropy on the score logit at the last response token "
        "against the solution's correctness; held-out AUC.",
        _reward_model,
        config="rlr.training.schemas:RewardModelConfig",
        overrides=("kind=orm",),
    ),
    Command(
        "label-steps",
        "rlr.commands.label_steps",
        "Math-Shepherd step labels by Monte-Carlo completion (StepLabelled JSONL)",
        "For every step prefix of a solution a completer policy writes N continuations; the "
        "fraction that reach the gold answer is the step's soft label, any-correct its hard "
        "label.",
        _label_steps,
    ),
    Command(
        "eval-bon",
        "rlr.commands.eval_bon",
        "best-of-N accuracy of PRM (min/last/prod), ORM, majority vote and pass@N",
        "Samples G solutions per held-out problem once, then reports the accuracy of picking "
        "one of the first n by PRM, ORM or majority vote, against pass@n, with a plot.",
        _eval_bon,
    ),
    Command(
        "ppo",
        "rlr.commands.ppo",
        "PPO with PRM step rewards (raw / clip / delta / clip_delta)",
        "PPO with dense step rewards on a device mesh: sample, grade, score with the frozen "
        "PRM / ORM / reference and the critic, token rewards, GAE, clipped updates. Resumes "
        "from OUT_DIR/checkpoints; SIGTERM saves and exits 0.",
        _ppo,
        config="rlr.training.schemas:PPOConfig",
    ),
    Command(
        "evaluate",
        "rlr.commands.evaluate",
        "greedy and sampled accuracy of a policy on an RL config's held-out problems",
        "Evaluates a policy (an HF directory, e.g. an `rlr sft` or `rlr ppo --export` output) "
        "exactly as an RL run with this config evaluates: its data.test (eval.max_examples"
        " of them), prompt style, token budgets, batch size and seed, greedy and at "
        "temperature 1, with the solution statistics (steps, filler and repeated steps).",
        _evaluate,
        config="rlr.training.schemas:PPOConfig",
    ),
    Command(
        "plan",
        "rlr.commands.plan",
        "compile a PPO config for a target mesh and report per-device memory",
        "Will a PPO config fit? Its update and scoring steps are compiled for the target mesh "
        "(on fake CPU devices when this machine has fewer) and XLA's memory analysis is "
        "reported, without allocating a parameter.",
        _plan,
        config="rlr.training.schemas:PPOConfig",
    ),
    Command(
        "reproduce",
        "rlr.commands.reproduce",
        "the paper's ablation end to end (data -> SFT -> PRM/ORM -> 6 PPO runs -> table)",
        "Runs data -> tokenizer -> SFT -> PRM and ORM -> PPO with each reward variant -> "
        "held-out evaluation, as the rlr commands a user would run (each logged to "
        "OUT/commands.sh); every stage is cached, so a rerun continues where it stopped.",
        _reproduce,
        config="rlr.reproduce.schemas:ReproduceConfig",
        config_from_args=reproduce_config_source,
    ),
    Command(
        "configs",
        "rlr.commands.configs",
        "list the YAML configs shipped with rlr, or print one",
        "Configs shipped with rlr can be named instead of a path: `--config ppo_cpu`.",
        _configs,
    ),
)

BY_NAME = {command.name: command for command in COMMANDS}
