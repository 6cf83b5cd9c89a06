"""`rlr reproduce`: the paper's ablation on this machine, from one command.

Stages (each cached in --out, so an interrupted run continues where it stopped):
data -> tokenizer -> SFT policy -> PRM and ORM -> six PPO runs with equal budgets and seeds
(success, orm, prm_raw, prm_clip, prm_delta, prm_clip_delta) -> greedy and sampled
evaluation on held-out problems -> results.json, results.md (beside the paper's table) and
curves.png (accuracy, steps per solution and PRM return against PPO iteration).

Presets: `cpu` (the main job of launch/local.sh, about half an hour on 2 CPU cores) and
`smoke` (a few minutes; run by the test suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

VARIANTS: dict[str, dict[str, Any]] = {
    "success": {"reward.use_prm": False, "reward.use_orm": False},
    "orm": {"reward.use_prm": False, "reward.use_orm": True},
    "prm_raw": {"reward.use_prm": True, "reward.method": "raw"},
    "prm_clip": {"reward.use_prm": True, "reward.method": "clip"},
    "prm_delta": {"reward.use_prm": True, "reward.method": "delta"},
    "prm_clip_delta": {"reward.use_prm": True, "reward.method": "clip_delta"},
}

# Gao et al. 2024, Table 1: Qwen2-1.5B-Instruct on MATH, greedy (sampling) accuracy %.
PAPER_TABLE = {
    "sft": (24.90, 16.79),
    "success": (30.58, 27.05),
    "orm": (30.57, 27.12),
    "prm_raw": (11.16, 14.68),
    "prm_clip": (30.30, 28.40),
    "prm_delta": (30.68, 27.96),
    "prm_clip_delta": (31.44, 28.20),
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of every stage of a reproduction."""

    num_train: int
    num_test: int
    sft_filler_fraction: float
    max_digits: int
    max_steps: int
    operations: tuple[str, ...]
    vocab_size: int
    sft: tuple[str, ...]
    prm: tuple[str, ...]
    orm: tuple[str, ...]
    ppo: tuple[str, ...]


PRESETS = {
    "cpu": Preset(
        num_train=20000,
        num_test=200,
        sft_filler_fraction=0.1,
        max_digits=1,
        max_steps=3,
        operations=("+", "-"),
        vocab_size=512,
        sft=(),
        prm=(),
        orm=(),
        ppo=(),
    ),
    "smoke": Preset(
        num_train=400,
        num_test=16,
        sft_filler_fraction=0.1,
        max_digits=1,
        max_steps=3,
        operations=("+", "-"),
        vocab_size=320,
        sft=(
            "train.steps=30",
            "train.checkpoint_every=30",
            "eval.every=0",
            "eval.num_problems=16",
            "eval.batch_size=16",
        ),
        prm=("train.steps=20", "train.checkpoint_every=20", "max_eval_records=32"),
        orm=("train.steps=20", "train.checkpoint_every=20", "max_eval_records=32"),
        ppo=(
            "iterations=2",
            "rollout.prompts_per_iteration=4",
            "rollout.samples_per_prompt=2",
            "ppo.minibatches=2",
            "data.max_test_problems=16",
        ),
    ),
}


def config_dir() -> pathlib.Path:
    """launch/configs of the rlr checkout (the presets' YAML files)."""
    path = pathlib.Path(__file__).resolve().parent.parent / "launch" / "configs"
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} not found: `rlr reproduce` runs from a checkout of rlr (pip install -e .)"
        )
    return path


def _done(path: pathlib.Path) -> bool:
    return (path / "DONE").exists()


def _mark_done(path: pathlib.Path, info: dict[str, Any] | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "DONE").write_text(json.dumps(info or {}, indent=2))


class _Timed:
    """Records how long a stage took in `stage_seconds.json` beside the stages."""

    def __init__(self, out: pathlib.Path, name: str):
        self.path, self.name = out / "stage_seconds.json", name

    def __enter__(self):
        self.start = time.time()

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            times = json.loads(self.path.read_text()) if self.path.exists() else {}
            times[self.name] = times.get(self.name, 0.0) + time.time() - self.start
            self.path.write_text(json.dumps(times, indent=2))


def _log(message: str) -> None:
    print(f"[rlr reproduce] {message}", flush=True)


class Reproduction:
    """Runs (or resumes) every stage of a reproduction into `out`."""

    def __init__(
        self, out: str | os.PathLike, *, preset: str, seeds: int = 1, variants: Sequence[str] = ()
    ):
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1; got {seeds}")
        self.out = pathlib.Path(out)
        self.preset_name = preset
        self.preset = PRESETS[preset]
        self.seeds = seeds
        self.variants = tuple(variants) or tuple(VARIANTS)

    # ------------------------------------------------------------------ stages

    def data(self) -> pathlib.Path:
        from rlr.data.synthetic import write_datasets

        path = self.out / "data"
        if not _done(path):
            _log(f"writing synthetic data to {path}")
            counts = write_datasets(
                path,
                num_train=self.preset.num_train,
                num_test=self.preset.num_test,
                seed=0,
                sft_filler_fraction=self.preset.sft_filler_fraction,
                max_digits=self.preset.max_digits,
                max_steps=self.preset.max_steps,
                operations=self.preset.operations,
            )
            _mark_done(path, counts)
        return path

    def tokenizer(self) -> pathlib.Path:
        from rlr.data.synthetic import training_corpus
        from rlr.tokenizer import train_tokenizer

        path = self.out / "tokenizer"
        if not _done(path):
            _log(f"training the tokenizer into {path}")
            train_tokenizer(
                training_corpus(num_problems=5000, seed=0),
                vocab_size=self.preset.vocab_size,
                out_dir=path,
            )
            _mark_done(path)
        return path

    def sft(self) -> pathlib.Path:
        from rlr.config import load_config
        from rlr.training.configs import SFTConfig
        from rlr.training.sft import run_sft

        path = self.out / "sft"
        if not _done(path):
            _log("SFT of the policy")
            config = load_config(
                SFTConfig,
                config_dir() / "sft_cpu.yaml",
                [
                    f"out_dir={path}",
                    f"tokenizer={self.out / 'tokenizer'}",
                    f"data.train={self.out / 'data' / 'sft_train.jsonl'}",
                    f"data.test={self.out / 'data' / 'problems_test.jsonl'}",
                    *self.preset.sft,
                ],
            )
            _mark_done(path, _jsonable(run_sft(config)))
        return path / "model"

    def reward_model(self, kind: str) -> pathlib.Path:
        from rlr.config import load_config
        from rlr.training.configs import RewardModelConfig
        from rlr.training.reward_model import run_reward_model

        path = self.out / kind
        if not _done(path):
            _log(f"training the {kind.upper()}")
            config = load_config(
                RewardModelConfig,
                config_dir() / f"{kind}_cpu.yaml",
                [
                    f"out_dir={path}",
                    f"tokenizer={self.out / 'tokenizer'}",
                    f"init.path={self.out / 'sft' / 'model'}",
                    f"data.train={self.out / 'data' / 'prm_train.jsonl'}",
                    f"data.test={self.out / 'data' / 'prm_test.jsonl'}",
                    *getattr(self.preset, kind),
                ],
            )
            _mark_done(path, _jsonable(run_reward_model(config)))
        return path / "model"

    def ppo_config(self, variant: str, seed: int) -> Any:
        from rlr.config import load_config
        from rlr.training.configs import PPOConfig

        overrides = [
            f"name={variant}",
            f"seed={seed}",
            f"out_dir={self.variant_dir(variant, seed)}",
            f"tokenizer={self.out / 'tokenizer'}",
            f"policy.path={self.out / 'sft' / 'model'}",
            f"prm.path={self.out / 'prm' / 'model'}",
            f"orm.path={self.out / 'orm' / 'model'}",
            f"data.train={self.out / 'data' / 'problems_train.jsonl'}",
            f"data.test={self.out / 'data' / 'problems_test.jsonl'}",
            *(f"{k}={json.dumps(v)}" for k, v in VARIANTS[variant].items()),
            *self.preset.ppo,
        ]
        return load_config(PPOConfig, config_dir() / "ppo_cpu.yaml", overrides)

    def variant_dir(self, variant: str, seed: int) -> pathlib.Path:
        return self.out / "ppo" / (variant if self.seeds == 1 else f"{variant}_seed{seed}")

    def ppo(self, variant: str, seed: int) -> dict[str, Any]:
        from rlr.training.ppo import PPOTrainer

        path = self.variant_dir(variant, seed)
        if _done(path):
            return json.loads((path / "DONE").read_text())
        _log(f"PPO {variant} (seed {seed})")
        config = self.ppo_config(variant, seed)
        trainer = PPOTrainer(config)
        summary = trainer.run()
        if summary["preempted"]:
            raise KeyboardInterrupt("preempted; run the same command again to continue")
        result = evaluate_trainer(trainer)
        _mark_done(path, result)
        return result

    def evaluate_sft(self) -> dict[str, Any]:
        """The SFT policy on the same held-out problems with the same evaluation as PPO."""
        from rlr.training.ppo import PPOTrainer

        path = self.out / "sft_eval"
        if _done(path):
            return json.loads((path / "DONE").read_text())
        path.mkdir(parents=True, exist_ok=True)
        config = dataclasses.replace(self.ppo_config("success", 0), out_dir=str(path))
        trainer = PPOTrainer(config)
        result = evaluate_trainer(trainer)
        _mark_done(path, result)
        return result

    # --------------------------------------------------------------------- all

    def run(self) -> dict[str, Any]:
        """Every stage, then results.json, results.md and curves.png. Returns the results."""
        start = time.time()
        self.out.mkdir(parents=True, exist_ok=True)
        enable_compilation_cache(self.out / "jax_cache")
        stages = [
            ("data", self.data),
            ("tokenizer", self.tokenizer),
            ("sft", self.sft),
            ("prm", lambda: self.reward_model("prm")),
            ("orm", lambda: self.reward_model("orm")),
        ]
        for name, stage in stages:
            with _Timed(self.out, name):
                stage()
        with _Timed(self.out, "sft_eval"):
            sft_result = self.evaluate_sft()
        # The raw PRM (where hacking shows) and Clip-Delta run first, so their curves can be
        # read while the other variants train; results keep the table order.
        first = [v for v in ("prm_raw", "prm_clip_delta") if v in self.variants]
        runs = {}
        for variant in first + [v for v in self.variants if v not in first]:
            with _Timed(self.out, f"ppo/{variant}"):
                runs[variant] = [self.ppo(variant, seed) for seed in range(self.seeds)]
        runs = {v: runs[v] for v in self.variants}
        results = self.collect(sft_result, runs, wall_time_s=time.time() - start)
        (self.out / "results.json").write_text(json.dumps(results, indent=2))
        (self.out / "results.md").write_text(results_markdown(results))
        plot_curves(self.out, self.variants, self.seeds)
        _log(f"done in {results['wall_time_s'] / 60:.1f} min: {self.out / 'results.md'}")
        return results

    def collect(
        self,
        sft_result: dict[str, Any],
        runs: dict[str, list[dict[str, Any]]],
        *,
        wall_time_s: float,
    ) -> dict[str, Any]:
        variants = {}
        for name, per_seed in runs.items():
            summary: dict[str, Any] = {}
            for key, value in per_seed[0].items():
                if isinstance(value, int | float):
                    values = [run[key] for run in per_seed]
                    summary[key] = float(np.mean(values))
                    if len(values) > 1:
                        summary[f"{key}_std"] = float(np.std(values))
            summary["samples"] = per_seed[0]["samples"]
            variants[name] = summary
        prm_report = {}
        prm_done = self.out / "prm" / "DONE"
        if prm_done.exists():
            prm_report = json.loads(prm_done.read_text())
        stage_file = self.out / "stage_seconds.json"
        stage_seconds = json.loads(stage_file.read_text()) if stage_file.exists() else {}
        return {
            "preset": self.preset_name,
            "seeds": list(range(self.seeds)),
            "wall_time_s": wall_time_s,
            "stage_seconds": stage_seconds,
            "total_stage_seconds": sum(stage_seconds.values()),
            "date": time.strftime("%Y-%m-%d"),
            "sft": dict(sft_result),
            "variants": variants,
            "prm": prm_report,
            "paper": {k: {"greedy": g, "sampling": s} for k, (g, s) in PAPER_TABLE.items()},
        }


def evaluate_trainer(trainer: Any) -> dict[str, Any]:
    """Greedy and temperature-1 evaluation of a PPO trainer's current policy on its held-out
    problems: accuracies, solution shape and a few greedy samples."""
    from rlr.grading import Grader

    config = trainer.config
    with Grader(
        num_workers=config.grading.num_workers, timeout_s=config.grading.timeout_s
    ) as grader:
        greedy = trainer.evaluate(grader, temperature=0.0)
        sampled = trainer.evaluate(grader, temperature=1.0, key_offset=1)
    return {
        "greedy_accuracy": greedy.accuracy,
        "sampling_accuracy": sampled.accuracy,
        "steps_per_solution": greedy.steps_per_solution,
        "filler_step_fraction": greedy.filler_step_fraction,
        "repeated_step_fraction": greedy.repeated_step_fraction,
        "response_length": greedy.response_length,
        "truncated_fraction": greedy.truncated_fraction,
        "sampled_steps_per_solution": sampled.steps_per_solution,
        "sampled_filler_step_fraction": sampled.filler_step_fraction,
        "samples": list(greedy.samples),
    }


def enable_compilation_cache(directory: pathlib.Path) -> None:
    """Caches compiled programs on disk: the six PPO variants run the same programs, and a
    resumed reproduction skips compilation (unless JAX_COMPILATION_CACHE_DIR is set)."""
    import jax

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, int | float | str | bool) or x is None:
        return x
    return str(x)


def results_markdown(results: dict[str, Any]) -> str:
    """The results table (accuracy %, solution shape) beside the paper's Table 1."""

    def pct(entry: dict[str, Any], key: str) -> str:
        text = f"{100 * entry[key]:.1f}"
        if f"{key}_std" in entry:
            text += f" ± {100 * entry[f'{key}_std']:.1f}"
        return text

    total = results.get("total_stage_seconds", results["wall_time_s"])
    lines = [
        f"rlr reproduction, preset `{results['preset']}`, seeds {results['seeds']}, "
        f"{results['date']}, wall time {total / 60:.1f} min (all stages)",
        "",
        "| reward | greedy acc. % | sampling acc. % | steps / solution | filler-step fraction "
        "| response tokens | paper MATH greedy (sampling) |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [("sft", results["sft"])] + list(results["variants"].items())
    for name, entry in rows:
        paper = results["paper"].get(name)
        paper_text = f"{paper['greedy']:.2f} ({paper['sampling']:.2f})" if paper else ""
        label = "SFT policy (before RL)" if name == "sft" else name
        lines.append(
            f"| {label} | {pct(entry, 'greedy_accuracy')} | {pct(entry, 'sampling_accuracy')} "
            f"| {entry['steps_per_solution']:.2f} | {entry['filler_step_fraction']:.3f} "
            f"| {entry['response_length']:.1f} | {paper_text} |"
        )
    prm = results.get("prm", {}).get("eval", {})
    if "mean_score_filler" in prm:
        lines += [
            "",
            f"PRM on held-out steps: AUC {prm['step_auc']:.3f}; mean score of filler steps "
            f"{prm['mean_score_filler']:.3f}, correct steps {prm['mean_score_correct']:.3f}, "
            f"wrong steps {prm['mean_score_wrong']:.3f} (useless steps score high: the premise "
            "of the hacking).",
        ]
    return "\n".join(lines) + "\n"


def plot_curves(out: pathlib.Path, variants: Sequence[str], seeds: int) -> pathlib.Path:
    """curves.png: rollout accuracy, steps per solution and PRM return per PPO iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlr.training.metrics import read_metrics

    panels = (
        ("success_rate", "rollout accuracy"),
        ("steps_per_solution", "steps per solution"),
        ("return/prm_raw_sum", "PRM return (sum of step scores)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    for variant in variants:
        curves = []
        for seed in range(seeds):
            directory = out / "ppo" / (variant if seeds == 1 else f"{variant}_seed{seed}")
            if (directory / "metrics.jsonl").exists():
                curves.append(read_metrics(directory))
        if not curves:
            continue
        for ax, (key, title) in zip(axes, panels):
            steps = [row["step"] for row in curves[0]]
            values = np.asarray([[row.get(key, np.nan) for row in c[: len(steps)]] for c in curves])
            mean = np.nanmean(values, axis=0)
            (line,) = ax.plot(steps, mean, label=variant)
            if len(curves) > 1:
                std = np.nanstd(values, axis=0)
                ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel("PPO iteration")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def add_parser(subparsers: Any) -> None:
    """Registers `rlr reproduce`."""
    parser = subparsers.add_parser(
        "reproduce",
        help="the paper's ablation end to end (data -> SFT -> PRM/ORM -> 6 PPO runs -> table)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--out", default="runs/reproduce", help="results directory (cached)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per variant (error bars)")
    parser.add_argument(
        "--variants",
        default="",
        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    variants = [v for v in args.variants.split(",") if v]
    reproduction = Reproduction(args.out, preset=args.preset, seeds=args.seeds, variants=variants)
    results = reproduction.run()
    print(results_markdown(results))
    print(
        f"results: {reproduction.out / 'results.json'}, {reproduction.out / 'results.md'}, "
        f"{reproduction.out / 'curves.png'}"
    )
    return 0
