"""`rlr reproduce`: the paper's ablation on this machine, from one command.

Stages (each cached in the output directory, so an interrupted run continues where it stopped):
data -> tokenizer -> SFT policy -> PRM and ORM -> one PPO run per reward variant with equal
budgets and seeds (success, orm, prm_raw, prm_clip, prm_delta, prm_clip_delta) -> greedy and
sampled evaluation on held-out problems -> results.json, results.md (beside the paper's table)
and curves.png (accuracy, steps per solution and PRM return against PPO iteration).

Every training stage is the rlr command a user would run (`rlr make-data`, `rlr sft`,
`rlr train-prm`, ...), run in this process through rlr.cli and written to OUT/commands.sh, so
any stage can be rerun or changed by hand. Presets are the shipped configs reproduce_cpu (the
main job of launch/local.sh, about half an hour on 2 CPU cores) and reproduce_smoke (a few
minutes; the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlr.training.configs import (
    ALGORITHM_DEFAULTS,
    GROUP_ONLY_VARIANTS,
    REWARD_VARIANTS,
    ReproduceConfig,
    StageSpec,
)

VARIANTS = REWARD_VARIANTS

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


# Commands that only write files (no device work): process 0 of a multi-process run runs them
HOST_ONLY_COMMANDS = frozenset({"make-data", "train-tokenizer"})


class StagePreempted(Exception):
    """A stage stopped before finishing (SIGTERM): its state is saved; rerun to continue."""


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


class _Timed:
    """Records how long a stage took in `stage_seconds.json` beside the stages."""

    def __init__(self, out: pathlib.Path, name: str):
        self.path, self.name = out / "stage_seconds.json", name

    def __enter__(self):
        self.start = time.time()

    def __exit__(self, *exc: Any) -> None:
        from rlr.training import distributed

        if exc[0] is None and distributed.is_main():
            times = _read_json(self.path)
            times[self.name] = times.get(self.name, 0.0) + time.time() - self.start
            self.path.write_text(json.dumps(times, indent=2))


def _log(message: str) -> None:
    print(f"[rlr reproduce] {message}", flush=True)


def _override(key: str, value: Any) -> str:
    """key=value with the value written so that YAML reads it back unchanged (JSON is YAML)."""
    import yaml

    if isinstance(value, str) and yaml.safe_load(value) == value:
        return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


def stage_overrides(stage: StageSpec) -> list[str]:
    """A stage's config overrides as key=value arguments."""
    return [_override(key, value) for key, value in stage.overrides.items()]


class Reproduction:
    """Runs (or resumes) every stage of a reproduction config into its out_dir."""

    def __init__(self, config: ReproduceConfig):
        self.config = config
        self.out = pathlib.Path(config.out_dir)
        self.seeds = config.seeds
        self.variants = tuple(config.variants)

    @classmethod
    def from_preset(cls, preset: str, *overrides: str) -> Reproduction:
        """The reproduction of a shipped preset (`cpu`, `smoke`), with key=value overrides."""
        from rlr import configs
        from rlr.config import load_config

        if preset not in ("cpu", "smoke"):
            raise ValueError(f"preset must be one of cpu, smoke; got {preset!r}")
        path = configs.resolve(f"reproduce_{preset}")
        return cls(load_config(ReproduceConfig, path, list(overrides)))

    # ---------------------------------------------------------------- commands

    def command(self, argv: Sequence[str]) -> None:
        """Runs `rlr ARGV` in this process (errors propagate) and records it in commands.sh."""
        from rlr import cli
        from rlr.training import distributed

        line = "rlr " + shlex.join(argv)
        main = distributed.is_main()
        if main:
            _log(f"$ {line}")
            script = self.out / "commands.sh"
            if not script.exists():
                script.write_text(
                    "#!/usr/bin/env bash\n# The commands rlr reproduce ran.\nset -e\n"
                )
            if line not in script.read_text().splitlines():
                with open(script, "a") as f:
                    f.write(line + "\n")
        # Commands that only write files run on process 0; the others wait for them.
        failure: Exception | None = None
        if main or argv[0] not in HOST_ONLY_COMMANDS:
            try:
                code = cli.run(list(argv))
                if code != 0:
                    failure = RuntimeError(f"`{line}` exited with status {code}")
            except Exception as err:  # shared below, so no process waits for a dead one
                failure = err
        # A barrier that also tells every process whether any of them failed; after it,
        # every process sees what process 0 wrote.
        if distributed.any_process(failure is not None):
            raise failure or RuntimeError(f"`{line}` failed on another process")

    def path(self, *parts: str) -> str:
        """A path under the output directory, as text for a command line."""
        return str(self.out.joinpath(*parts))

    def stage(
        self,
        directory: pathlib.Path,
        argv: list[str],
        *,
        produces: pathlib.Path | None = None,
        action: Any = None,
    ) -> dict[str, Any]:
        """Runs one cached stage: `rlr ARGV` (or `action()`, for a stage that is no command),
        unless `directory/DONE` says the same argv already finished there.

        DONE holds the argv (paths under the output directory written as $OUT) and the stage's
        summary. A DONE written by a different argv is an error (the cache would be stale); a
        stage that stops early (SIGTERM) or does not write `produces` raises StagePreempted and
        writes no DONE, so a rerun continues it.
        """
        done = directory / "DONE"
        # Paths inside the output directory are kept relative to it, so a moved or copied
        # reproduction still recognises its finished stages.
        key = [arg.replace(str(self.out), "$OUT") for arg in argv]
        if done.exists():
            info = json.loads(done.read_text())
            if info.get("argv") != key:
                raise ValueError(
                    f"{directory} was made by `{shlex.join(info.get('argv') or [])}`, not "
                    f"`{shlex.join(key)}`: delete it, or reproduce into another --out"
                )
            return info
        if action is None:
            self.command(argv)
            summary = _read_json(directory / "summary.json")
        else:
            summary = action()
        if summary.get("interrupted") or summary.get("preempted"):
            raise StagePreempted(f"`rlr {shlex.join(argv)}` stopped early")
        if produces is not None and not produces.exists():
            raise StagePreempted(f"`rlr {shlex.join(argv)}` did not write {produces}")
        info = {"argv": key, **_jsonable(summary)}
        from rlr.training import distributed

        if distributed.is_main():
            directory.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(info, indent=2))
        return info

    # ------------------------------------------------------------------ stages

    def data_arguments(self) -> list[str]:
        """`rlr make-data` arguments of the task."""
        task = self.config.task
        return [
            "make-data",
            "--out",
            self.path("data"),
            f"--num-train={task.num_train}",
            f"--num-test={task.num_test}",
            f"--seed={task.seed}",
            f"--min-steps={task.min_steps}",
            f"--max-steps={task.max_steps}",
            f"--max-digits={task.max_digits}",
            f"--operations={''.join(task.operations)}",
            f"--sft-filler-fraction={task.sft_filler_fraction}",
        ]

    def data(self) -> dict[str, Any]:
        """The synthetic problems, SFT solutions and step-labelled data."""
        path = self.out / "data"
        info = self.stage(path, self.data_arguments(), produces=path / "manifest.json")
        if "counts" not in info:
            info = {**info, **_read_json(path / "manifest.json")}
        return info

    def tokenizer(self) -> dict[str, Any]:
        """The byte-level BPE trained on the task's corpus."""
        task = self.config.task
        path = self.out / "tokenizer"
        argv = ["train-tokenizer", "--out", str(path), f"--vocab-size={task.vocab_size}"]
        argv.append(f"--num-problems={task.tokenizer_corpus_problems}")
        return self.stage(path, argv, produces=path / "tokenizer.json")

    def sft_arguments(self) -> list[str]:
        """`rlr sft` arguments: the stage's config, the chaining paths, its overrides."""
        stage = self.config.sft
        return [
            "sft",
            "--config",
            stage.config,
            f"out_dir={self.path('sft')}",
            f"tokenizer={self.path('tokenizer')}",
            f"data.train={self.path('data', 'sft_train.jsonl')}",
            f"data.test={self.path('data', 'problems_test.jsonl')}",
            *stage_overrides(stage),
        ]

    def sft(self) -> dict[str, Any]:
        """The SFT policy (exported to sft/model)."""
        path = self.out / "sft"
        return self.stage(path, self.sft_arguments(), produces=path / "model" / "config.json")

    def reward_model_arguments(self, kind: str) -> list[str]:
        """`rlr train-prm` / `train-orm` arguments on the SFT trunk."""
        stage = getattr(self.config, kind)
        return [
            f"train-{kind}",
            "--config",
            stage.config,
            f"out_dir={self.path(kind)}",
            f"tokenizer={self.path('tokenizer')}",
            f"init.path={self.path('sft', 'model')}",
            f"data.train={self.path('data', 'prm_train.jsonl')}",
            f"data.test={self.path('data', 'prm_test.jsonl')}",
            *stage_overrides(stage),
        ]

    def reward_model(self, kind: str) -> dict[str, Any]:
        """The PRM or ORM (exported to prm/model or orm/model)."""
        path = self.out / kind
        argv = self.reward_model_arguments(kind)
        return self.stage(path, argv, produces=path / "model" / "config.json")

    def ppo_arguments(self, variant: str, seed: int, algorithm: str = "ppo") -> list[str]:
        """`rlr ppo` arguments of one variant, seed and algorithm. The variant's reward
        settings come last (ReproduceConfig forbids them in ppo.overrides), so a variant is
        what it says."""
        stage = self.config.ppo
        directory = self.variant_dir(variant, seed, algorithm)
        return [
            "ppo",
            "--config",
            stage.config,
            f"name={variant if algorithm == 'ppo' else f'{algorithm}_{variant}'}",
            f"algorithm={algorithm}",
            f"seed={seed}",
            f"out_dir={directory}",
            f"tokenizer={self.path('tokenizer')}",
            f"policy.path={self.path('sft', 'model')}",
            f"prm.path={self.path('prm', 'model')}",
            f"orm.path={self.path('orm', 'model')}",
            f"data.train={self.path('data', 'problems_train.jsonl')}",
            f"data.test={self.path('data', 'problems_test.jsonl')}",
            *stage_overrides(stage),
            *(_override(k, v) for k, v in VARIANTS[variant].items()),
            "--export",
            str(directory / "model"),
        ]

    def variants_for(self, algorithm: str) -> tuple[str, ...]:
        """The configured variants an algorithm runs (a critic skips the group-only ones)."""
        if not ALGORITHM_DEFAULTS[algorithm].critic:
            return self.variants
        return tuple(v for v in self.variants if v not in GROUP_ONLY_VARIANTS)

    def ppo_config(self, variant: str, seed: int, algorithm: str = "ppo") -> Any:
        """The resolved PPOConfig of one run (what `rlr ppo` runs with)."""
        return _command_config(self.ppo_arguments(variant, seed, algorithm))

    def variant_dir(self, variant: str, seed: int, algorithm: str = "ppo") -> pathlib.Path:
        """Where one run trains: ALGORITHM/VARIANT (ALGORITHM/VARIANT_seedN with seeds)."""
        return variant_dir(self.out, variant, seed, self.seeds, algorithm)

    def ppo(self, variant: str, seed: int, algorithm: str = "ppo") -> dict[str, Any]:
        """One RL run, then its exported policy evaluated greedily and at temperature 1."""
        path = self.variant_dir(variant, seed, algorithm)
        argv = self.ppo_arguments(variant, seed, algorithm)

        def train_and_evaluate() -> dict[str, Any]:
            self.command(argv)  # resumes from the run's checkpoints, if any
            summary = _read_json(path / "summary.json")
            if summary.get("preempted"):
                return summary
            return evaluate_policy_dir(path / "model", self.ppo_config(variant, seed, algorithm))

        model = path / "model" / "config.json"
        return self.stage(path, argv, produces=model, action=train_and_evaluate)

    def evaluate_sft(self) -> dict[str, Any]:
        """The SFT policy on the same held-out problems with the same evaluation as PPO's."""
        argv = ["evaluate", self.path("sft", "model"), *self.ppo_arguments("success", 0)]
        policy = self.out / "sft" / "model"
        evaluate = lambda: evaluate_policy_dir(policy, self.ppo_config("success", 0))  # noqa: E731
        return self.stage(self.out / "sft_eval", argv, action=evaluate)

    def validate(self) -> None:
        """Loads every stage's config as its command will, before anything trains: a typo in
        a late stage's overrides fails at once, not after an hour of earlier stages."""
        _command_config(self.sft_arguments())
        for kind in ("prm", "orm"):
            _command_config(self.reward_model_arguments(kind))
        for algorithm in self.config.algorithms:
            for variant in self.variants_for(algorithm):
                for seed in range(self.seeds):
                    self.ppo_config(variant, seed, algorithm)

    # --------------------------------------------------------------------- all

    def run(self) -> dict[str, Any]:
        """Every stage, then results.json, results.md and curves.png (results_<algorithm>.*
        and curves_<algorithm>.png for each algorithm besides ppo). Returns the results of
        the last algorithm."""
        from rlr import sharding
        from rlr.config import dump_config
        from rlr.training import distributed

        start = time.time()
        self.validate()
        sharding.maybe_initialize_distributed()  # one of N processes: join them first
        if distributed.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            dump_config(self.config, self.out / "config.yaml")
        distributed.sync("reproduce start")
        enable_compilation_cache(self.out / "jax_cache")
        stages = [
            ("data", self.data),
            ("tokenizer", self.tokenizer),
            ("sft", self.sft),
            ("prm", lambda: self.reward_model("prm")),
            ("orm", lambda: self.reward_model("orm")),
            ("sft_eval", self.evaluate_sft),
        ]
        for name, stage in stages:
            with _Timed(self.out, name):
                result = stage()
        sft_result = result
        results = {}
        for algorithm in self.config.algorithms:
            results[algorithm] = self.run_algorithm(algorithm, sft_result, start)
        return results[self.config.algorithms[-1]]

    def run_algorithm(
        self, algorithm: str, sft_result: dict[str, Any], start: float
    ) -> dict[str, Any]:
        """Every variant and seed under one algorithm; writes its results files and curves."""
        # The raw PRM (where hacking shows) and Clip-Delta run first, so their curves can be
        # read while the other variants train; results keep the table order.
        variants = self.variants_for(algorithm)
        first = [v for v in ("prm_raw", "prm_clip_delta") if v in variants]
        runs = {}
        for variant in first + [v for v in variants if v not in first]:
            with _Timed(self.out, f"{algorithm}/{variant}"):
                runs[variant] = [self.ppo(variant, s, algorithm) for s in range(self.seeds)]
        runs = {v: runs[v] for v in variants}
        results = self.collect(sft_result, runs, wall_time_s=time.time() - start)
        results["algorithm"] = algorithm
        suffix = "" if algorithm == "ppo" else f"_{algorithm}"
        from rlr.training import distributed

        if distributed.is_main():
            (self.out / f"results{suffix}.json").write_text(json.dumps(results, indent=2))
            (self.out / f"results{suffix}.md").write_text(results_markdown(results))
            plot_curves(self.out, variants, self.seeds, algorithm=algorithm)
        _log(f"{algorithm} done after {results['wall_time_s'] / 60:.1f} min: results{suffix}.md")
        return results

    def collect(
        self,
        sft_result: dict[str, Any],
        runs: dict[str, list[dict[str, Any]]],
        *,
        wall_time_s: float,
    ) -> dict[str, Any]:
        """results.json's content: every variant's mean (and std over seeds), the SFT row,
        the PRM report, stage times and the paper's table."""
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
        stage_seconds = _read_json(self.out / "stage_seconds.json")
        return {
            "preset": self.config.name,
            "seeds": list(range(self.seeds)),
            "wall_time_s": wall_time_s,
            "stage_seconds": stage_seconds,
            "total_stage_seconds": sum(stage_seconds.values()),
            "date": time.strftime("%Y-%m-%d"),
            "sft": dict(sft_result),
            "variants": variants,
            "prm": _read_json(self.out / "prm" / "DONE"),
            "paper": {k: {"greedy": g, "sampling": s} for k, (g, s) in PAPER_TABLE.items()},
        }


def variant_dir(
    out: pathlib.Path, variant: str, seed: int, seeds: int, algorithm: str = "ppo"
) -> pathlib.Path:
    """ALGORITHM/VARIANT under `out` (ppo/prm_raw, grpo/prm_raw, ...), or
    ALGORITHM/VARIANT_seedN when a reproduction runs several seeds."""
    return out / algorithm / (variant if seeds == 1 else f"{variant}_seed{seed}")


def _command_config(argv: list[str]) -> Any:
    """The config `rlr ARGV` would run with (validated), without running anything."""
    from rlr import cli
    from rlr.commands import BY_NAME

    return cli.load_run_config(BY_NAME[argv[0]], cli.build_parser().parse_args(argv))


def evaluate_policy_dir(policy_dir: str | os.PathLike, config: Any) -> dict[str, Any]:
    """Greedy and temperature-1 evaluation of an exported policy on the held-out problems of
    a PPO config (its data.test, prompt style, token budgets, batch size, grader and seed, as
    PPOTrainer.evaluate uses them): accuracies, solution shape and a few greedy samples."""
    from rlr.grading import Grader
    from rlr.training import loading
    from rlr.training.evaluation import evaluate_ppo_policy
    from rlr.training.generation import make_sampler

    model, params, tokenizer = loading.load_policy_dir(str(policy_dir), config.tokenizer or None)
    data = config.data
    problems = loading.load_problems(
        data.test, data.format, what="data.test", limit=data.max_test_problems
    )
    results = {}
    with Grader(
        num_workers=config.grading.num_workers, timeout_s=config.grading.timeout_s
    ) as grader:
        for offset, temperature in enumerate((0.0, 1.0)):
            sampler = make_sampler(
                model,
                tokenizer,
                max_new_tokens=config.rollout.max_new_tokens,
                temperature=temperature,
            )
            results[temperature] = evaluate_ppo_policy(
                sampler, params, tokenizer, problems, config, grader=grader, key_offset=offset
            )
    greedy, sampled = results[0.0], results[1.0]
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
        f"rlr reproduction, preset `{results['preset']}`, "
        f"algorithm {results.get('algorithm', 'ppo')}, seeds {results['seeds']}, "
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


def plot_curves(
    out: pathlib.Path, variants: Sequence[str], seeds: int, *, algorithm: str = "ppo"
) -> pathlib.Path:
    """curves.png (curves_<algorithm>.png besides ppo): rollout accuracy, steps per solution
    and PRM return per iteration of every variant, with a band over seeds."""
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
            directory = variant_dir(out, variant, seed, seeds, algorithm)
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
            ax.set_xlabel(f"{algorithm.upper()} iteration")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / ("curves.png" if algorithm == "ppo" else f"curves_{algorithm}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    """`rlr reproduce`: every stage (cached), then print the table and where results are.
    A stage stopped by SIGTERM has saved its state: exit 0, and the same command continues."""
    reproduction = Reproduction(args.run_config)
    try:
        results = reproduction.run()
    except StagePreempted as stop:
        print(f"[rlr reproduce] {stop}; run the same command again to continue", flush=True)
        return 0
    print(results_markdown(results))
    out = reproduction.out
    for algorithm in reproduction.config.algorithms:
        suffix = "" if algorithm == "ppo" else f"_{algorithm}"
        files = [f"results{suffix}.json", f"results{suffix}.md", f"curves{suffix}.png"]
        print(f"{algorithm} results: " + ", ".join(str(out / name) for name in files))
    return 0
