"""`rlr reproduce`: the paper's ablation on this machine, from one command.

Stages (each cached in the output directory, so an interrupted run continues where it stopped):
data -> tokenizer -> SFT policy -> PRM and ORM -> one PPO run per reward variant with equal
budgets and seeds (success, orm, prm_raw, prm_clip, prm_delta, prm_clip_delta) -> greedy and
sampled evaluation on held-out problems -> results.json, results.md (beside the paper's table)
and curves.png (accuracy, steps per solution and PRM return against PPO iteration).

Every training stage is the rlr command a user would run (`rlr make-data`, `rlr sft`,
`rlr train-prm`, ...), run in this process through rlr.cli and written to OUT/commands.sh, so
any stage can be rerun or changed by hand. Presets are the shipped configs reproduce_cpu (the
main job of launch/local.sh, about 20 minutes per seed on 2 CPU cores) and reproduce_smoke (a few
minutes; the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from rlr.training.configs import (
    ALGORITHM_DEFAULTS,
    CRITIC_KEYS,
    GROUP_ONLY_VARIANTS,
    REPRODUCE_PRESETS,
    REWARD_VARIANTS,
    ReproduceConfig,
    StageSpec,
    resolve_ppo_key,
    sweep_name,
    sweep_value_name,
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


def critic_free_overrides(algorithm: str) -> list[str]:
    """Overrides that unset, for a critic-free algorithm, the keys it does not read (the
    critic's, and the reward's KL estimator when the KL is in the loss): one PPO stage config
    serves every algorithm of a reproduction, and a critic-free run refuses those keys."""
    defaults = ALGORITHM_DEFAULTS[algorithm]
    if defaults.critic:
        return []
    unset = [f"ppo.{key}" for key in CRITIC_KEYS]
    if defaults.kl_in_loss:
        unset.append("reward.kl_estimator")
    return [f"{key}=null" for key in unset]


def stage_overrides(stage: StageSpec) -> list[str]:
    """A stage's config overrides as key=value arguments."""
    return [_override(key, value) for key, value in stage.overrides.items()]


class Reproduction:
    """Runs (or resumes) every stage of a reproduction config into its out_dir."""

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

    @classmethod
    def from_preset(cls, preset: str, *overrides: str) -> Reproduction:
        """The reproduction of a shipped preset (`cpu`, `cpu_sparse`, `smoke`), with key=value
        overrides."""
        from rlr import configs
        from rlr.config import load_config

        if preset not in REPRODUCE_PRESETS:
            choices = ", ".join(REPRODUCE_PRESETS)
            raise ValueError(f"preset must be one of {choices}; got {preset!r}")
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
            f"--min-steps={task.min_steps}",
            f"--max-steps={task.max_steps}",
            f"--max-digits={task.max_digits}",
            f"--operations={''.join(task.operations)}",
            f"--sft-filler-fraction={task.sft_filler_fraction}",
            f"--sft-slip-fraction={task.sft_slip_fraction}",
            f"--sft-misread-fraction={task.sft_misread_fraction}",
            f"--prm-misread-fraction={task.prm_misread_fraction}",
        ]
        return argv + (["--prm-filler-labels=no_progress"] if filler_aware else [])

    def data(self, *, filler_aware: bool = False) -> dict[str, Any]:
        """The synthetic problems, SFT solutions and step-labelled data."""
        path = self.out / ("data_filler_aware" if filler_aware else "data")
        argv = self.data_arguments(filler_aware=filler_aware)
        info = self.stage(path, argv, produces=path / "manifest.json")
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

    def sft(self, seed: int = 0) -> dict[str, Any]:
        """Seed `seed`'s SFT policy (exported to sft[_seedN]/model)."""
        path = self.model_dir("sft", seed)
        argv = self.sft_arguments(seed)
        return self.stage(path, argv, produces=path / "model" / "config.json")

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

    def reward_model(self, kind: str, seed: int = 0) -> dict[str, Any]:
        """Seed `seed`'s PRM or ORM (exported to prm/model, orm_seed1/model, ...)."""
        path = self.model_dir(kind, seed)
        argv = self.reward_model_arguments(kind, seed)
        return self.stage(path, argv, produces=path / "model" / "config.json")

    @property
    def needs_orm(self) -> bool:
        """Whether a configured variant reads the ORM (otherwise none is trained)."""
        return any(VARIANTS[v].get("reward.use_orm") for v in self.variants)

    def ppo_arguments(
        self, variant: str, seed: int, algorithm: str = "ppo", value: Any = None
    ) -> list[str]:
        """`rlr ppo` arguments of one variant, seed, algorithm and swept value. The variant's
        reward settings come last (ReproduceConfig forbids them in ppo.overrides and as the
        swept key), so a variant is what it says."""
        stage = self.config.ppo
        directory = self.variant_dir(variant, seed, algorithm, value)
        orm = self.model_dir("orm", seed) / "model"
        return [
            "ppo",
            "--config",
            stage.config,
            f"name={variant if algorithm == 'ppo' else f'{algorithm}_{variant}'}",
            f"algorithm={algorithm}",
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
            *([] if value is None else [_override(self.sweep_key, value)]),
            *(_override(k, v) for k, v in VARIANTS[variant].items()),
            "--export",
            str(directory / "model"),
        ]

    def variants_for(self, algorithm: str) -> tuple[str, ...]:
        """The configured variants an algorithm runs (a critic skips the group-only ones)."""
        if not ALGORITHM_DEFAULTS[algorithm].critic:
            return self.variants
        return tuple(v for v in self.variants if v not in GROUP_ONLY_VARIANTS)

    def ppo_config(self, variant: str, seed: int, algorithm: str = "ppo", value: Any = None):
        """The resolved PPOConfig of one run (what `rlr ppo` runs with)."""
        return _command_config(self.ppo_arguments(variant, seed, algorithm, value))

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

    def ppo(
        self, variant: str, seed: int, algorithm: str = "ppo", value: Any = None
    ) -> dict[str, Any]:
        """One RL run, then its exported policy evaluated greedily and at temperature 1."""
        path = self.variant_dir(variant, seed, algorithm, value)
        argv = self.ppo_arguments(variant, seed, algorithm, value)
        config = self.ppo_config(variant, seed, algorithm, value)

        def train_and_evaluate() -> dict[str, Any]:
            self.command(argv)  # resumes from the run's checkpoints, if any
            summary = _read_json(path / "summary.json")
            if summary.get("preempted"):
                return summary
            return evaluate_policy_dir(path / "model", config)

        model = path / "model" / "config.json"
        return self.stage(path, argv, produces=model, action=train_and_evaluate)

    def evaluate_sft(self, seed: int = 0) -> dict[str, Any]:
        """Seed `seed`'s SFT policy on the same held-out problems with the same evaluation as
        PPO's."""
        policy = self.model_dir("sft", seed) / "model"
        arguments = self.ppo_arguments("success", seed)
        config = _command_config(arguments)
        # The reward models and the run's folders play no part, so the cache key leaves them
        # out: the standard, filler-aware and sweep reproductions in one folder share it.
        unused = ("prm.path=", "orm.path=", "orm=", "out_dir=")
        kept = arguments[: arguments.index("--export")]
        argv = ["evaluate", str(policy), *(a for a in kept if not a.startswith(unused))]
        evaluate = lambda: evaluate_policy_dir(policy, config)  # noqa: E731
        return self.stage(self.model_dir("sft_eval", seed), argv, action=evaluate)

    def validate(self) -> None:
        """Loads every stage's config as its command will, before anything trains: a typo in
        a late stage's overrides fails at once, not after an hour of earlier stages."""
        for seed in range(self.seeds):
            _command_config(self.sft_arguments(seed))
            for kind in ("prm", "orm") if self.needs_orm else ("prm",):
                _command_config(self.reward_model_arguments(kind, seed))
        for algorithm in self.config.algorithms:
            for variant in self.variants_for(algorithm):
                for seed in range(self.seeds):
                    for value in self.values:
                        self.ppo_config(variant, seed, algorithm, value)

    # --------------------------------------------------------------------- all

    def plan(self) -> list[PlannedStage]:
        """Every stage in the order `run` takes them: shared data and tokenizer, then per seed
        the SFT policy, its PRM (and ORM, if a variant reads one) and its evaluation, then the
        RL runs (per algorithm, variant, seed and swept value)."""
        stages = [
            PlannedStage("data", self.out / "data", "data", 1, self.data),
            PlannedStage("tokenizer", self.out / "tokenizer", "tokenizer", 1, self.tokenizer),
        ]
        if self.filler_aware:
            stages.append(
                PlannedStage(
                    "data_filler_aware",
                    self.out / "data_filler_aware",
                    "data",
                    1,
                    lambda: self.data(filler_aware=True),
                )
            )
        for seed in range(self.seeds):
            suffix = seed_suffix(seed)
            kinds = ("prm", "orm") if self.needs_orm else ("prm",)
            stages.append(
                PlannedStage(
                    f"sft{suffix}", self.model_dir("sft", seed), "sft", 1, partial(self.sft, seed)
                )
            )
            for kind in kinds:
                directory = self.model_dir(kind, seed)
                stages.append(
                    PlannedStage(
                        directory.name, directory, kind, 1, partial(self.reward_model, kind, seed)
                    )
                )
            directory = self.model_dir("sft_eval", seed)
            stages.append(
                PlannedStage(
                    directory.name, directory, "evaluation", 1, partial(self.evaluate_sft, seed)
                )
            )
        for algorithm in self.config.algorithms:
            for value, variant, seed in self.run_order(algorithm):
                directory = self.variant_dir(variant, seed, algorithm, value)
                iterations = self.ppo_config(variant, seed, algorithm, value).iterations
                stages.append(
                    PlannedStage(
                        str(directory.relative_to(self.out)),
                        directory,
                        "ppo_iteration",
                        iterations,
                        partial(self.ppo, variant, seed, algorithm, value),
                    )
                )
        return stages

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

    def run(self) -> dict[str, Any]:
        """Every stage (printing the expected time first and the time left after each), then
        results.json, results.md and curves.png (results_<algorithm>.* for each algorithm
        besides ppo; `_filler_aware` and `_sweep_KEY` suffixes for those reproductions).
        Returns the results of the last algorithm."""
        from rlr import sharding
        from rlr.config import dump_config
        from rlr.training import distributed

        start = time.time()
        self.validate()
        sharding.maybe_initialize_distributed()  # one of N processes: join them first
        if distributed.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            dump_config(self.config, self.out / f"config{self.suffix}.yaml")
        distributed.sync("reproduce start")
        enable_compilation_cache(self.out / "jax_cache")
        stages = self.plan()
        clock = StageClock(self.config.expected_seconds)
        todo = [stage for stage in stages if not (stage.directory / "DONE").exists()]
        _log(
            f"{len(stages)} stages, {len(stages) - len(todo)} already done; expected time "
            f"{_minutes(clock.remaining(todo))} ({clock.basis()})"
        )
        done: dict[str, dict[str, Any]] = {}
        for number, stage in enumerate(stages):
            cached = (stage.directory / "DONE").exists()
            began = time.time()
            with _Timed(self.out, stage.name):
                done[stage.name] = stage.run()
            if not cached:
                clock.record(stage, time.time() - began)
                left = [s for s in stages[number + 1 :] if not (s.directory / "DONE").exists()]
                if left:
                    _log(f"{stage.name} done; about {_minutes(clock.remaining(left))} left")
        results = {}
        for algorithm in self.config.algorithms:
            results[algorithm] = self.write_results(algorithm, done, start)
        return results[self.config.algorithms[-1]]

    def write_results(
        self, algorithm: str, done: dict[str, dict[str, Any]], start: float
    ) -> dict[str, Any]:
        """One algorithm's results file, table and curves (or sweep plot) from its runs."""
        sft = [done[self.model_dir("sft_eval", s).name] for s in range(self.seeds)]
        runs: dict[Any, dict[str, list[dict[str, Any]]]] = {}
        for value, variant, seed in self.run_order(algorithm):
            directory = self.variant_dir(variant, seed, algorithm, value)
            name = str(directory.relative_to(self.out))
            run = dict(done[name])
            reached = iterations_to_success(
                training_success(directory / "metrics.jsonl"), target=self.config.success_target
            )
            if reached is not None:
                run["iterations_to_target"] = reached
            runs.setdefault(value, {}).setdefault(variant, [None] * self.seeds)[seed] = run
        variants = self.variants_for(algorithm)
        runs = {value: {v: by_variant[v] for v in variants} for value, by_variant in runs.items()}
        results = self.collect(sft, runs, wall_time_s=time.time() - start)
        results["algorithm"] = algorithm
        name = results_name(algorithm, self.filler_aware, self.sweep_name)
        from rlr.training import distributed

        if distributed.is_main():
            (self.out / f"{name}.json").write_text(json.dumps(results, indent=2))
            (self.out / f"{name}.md").write_text(results_markdown(results))
            plot = self.out / f"{plot_name(name)}.png"
            if self.sweep_key:
                plot_sweep(results, plot)
            else:
                runs_dir = self.runs_dir(algorithm)
                plot_curves(runs_dir, variants, self.seeds, path=plot, algorithm=algorithm)
        _log(f"{algorithm} done after {results['wall_time_s'] / 60:.1f} min: {name}.md")
        return results

    def collect(
        self,
        sft: list[dict[str, Any]],
        runs: dict[Any, dict[str, list[dict[str, Any]]]],
        *,
        wall_time_s: float,
    ) -> dict[str, Any]:
        """results.json's content: the SFT row and every variant's mean and std over seeds
        (with each seed's numbers and the gain over that seed's SFT policy), per swept value
        with a sweep; the PRM report, stage times and the paper's table."""

        def variant_rows(by_variant: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
            rows = {}
            success = by_variant.get("success")
            for name, per_seed in by_variant.items():
                rows[name] = {
                    **aggregate_seeds(per_seed),
                    "gain_over_sft": gain_over_sft(per_seed, sft),
                    "sampling_gain_over_sft": gain_over_sft(per_seed, sft, key="sampling_accuracy"),
                    "iterations_to_target_per_seed": [
                        run.get("iterations_to_target") for run in per_seed
                    ],
                    "samples": per_seed[0]["samples"],
                }
                if success is not None and name != "success":
                    rows[name]["gain_over_success"] = gain_over_sft(per_seed, success)
            return rows

        stage_seconds = _read_json(self.out / "stage_seconds.json")
        results: dict[str, Any] = {
            "preset": self.config.name,
            "seeds": list(range(self.seeds)),
            "prm_labels": self.config.prm_labels,
            "wall_time_s": wall_time_s,
            "stage_seconds": stage_seconds,
            # This reproduction's stages only: others may share the out_dir's timings.
            "total_stage_seconds": sum(stage_seconds.get(stage.name, 0.0) for stage in self.plan()),
            "date": time.strftime("%Y-%m-%d"),
            "success_target": self.config.success_target,
            "sft": aggregate_seeds(sft),
            # Each seed's SFT held-out greedy accuracy by step ([[step, accuracy], ...]).
            "sft_curves": [sft_curve(self.model_dir("sft", seed)) for seed in range(self.seeds)],
            "prm": _read_json(self.model_dir("prm") / "DONE"),
            "paper": {k: {"greedy": g, "sampling": s} for k, (g, s) in PAPER_TABLE.items()},
        }
        if self.sweep_key:
            results["sweep"] = {
                "key": self.sweep_key,
                "values": [_jsonable(v) for v in self.values],
                "variants": [variant_rows(runs[value]) for value in self.values],
            }
        else:
            results["variants"] = variant_rows(runs[None])
        return results


class PlannedStage(NamedTuple):
    """One stage of a reproduction: its name (as in stage_seconds.json), directory (DONE
    marks it finished), kind and size in units of that kind (for the time estimate), and the
    call that runs or reads it."""

    name: str
    directory: pathlib.Path
    kind: str
    units: float
    run: Callable[[], dict[str, Any]]


class StageClock:
    """Expected seconds of stages: per unit of each kind (a PPO iteration, one SFT run, ...),
    the mean measured in this run where a stage of that kind has finished, else the preset's
    `expected_seconds`."""

    def __init__(self, expected: dict[str, float]):
        self.expected = dict(expected)
        self.measured: dict[str, list[float]] = {}

    def record(self, stage: PlannedStage, seconds: float) -> None:
        """A stage of `stage.kind` took `seconds`."""
        self.measured.setdefault(stage.kind, []).append(seconds / max(stage.units, 1e-9))

    def per_unit(self, kind: str) -> float:
        """Seconds per unit of `kind` (0 when neither measured nor expected)."""
        if kind in self.measured:
            return float(np.mean(self.measured[kind]))
        return float(self.expected.get(kind, 0.0))

    def remaining(self, stages: Sequence[PlannedStage]) -> float:
        """Expected seconds of `stages`."""
        return sum(self.per_unit(stage.kind) * stage.units for stage in stages)

    def basis(self) -> str:
        """What the estimate rests on, for the log."""
        if self.measured:
            return "from the stages measured in this run"
        if self.expected:
            return "from the preset's expected_seconds, measured on a 2-core machine"
        return "no expected_seconds in this config, so unknown"


def seed_suffix(seed: int) -> str:
    """ "" for seed 0, "_seedN" after it: the suffix of a seed's stage folders."""
    return "" if seed == 0 else f"_seed{seed}"


def seed_override(seed: int) -> list[str]:
    """A training stage's seed override: none for seed 0 (the config's own seed, so a one-seed
    reproduction keeps its cached stages), `seed=N` after it."""
    return [] if seed == 0 else [f"seed={seed}"]


def results_name(algorithm: str, filler_aware: bool, sweep_name: str = "") -> str:
    """results[_ALGORITHM][_filler_aware][_sweep_KEY] (no _ppo: PPO is the main table)."""
    name = "results" if algorithm == "ppo" else f"results_{algorithm}"
    if filler_aware:
        name += "_filler_aware"
    return name + (f"_sweep_{sweep_name}" if sweep_name else "")


def plot_name(results: str) -> str:
    """The picture beside a results file: curves[...] for a results[...] table (curves per
    PPO iteration), sweep[...]_KEY for a results[...]_sweep_KEY table."""
    rest = results.removeprefix("results")
    if "_sweep_" in rest:
        return "sweep" + rest.replace("_sweep_", "_", 1)
    return "curves" + rest


def variant_dir(runs_dir: pathlib.Path, variant: str, seed: int) -> pathlib.Path:
    """VARIANT (seed 0) or VARIANT_seedN under an algorithm's runs folder."""
    return runs_dir / f"{variant}{seed_suffix(seed)}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def aggregate_seeds(per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of every number in the per-seed results, KEY_std beside it (the sample
    standard deviation, ddof=1, when there are several seeds), and `per_seed`: each seed's
    numbers."""
    numbers = [
        {
            k: float(v)
            for k, v in run.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for run in per_seed
    ]
    summary: dict[str, Any] = {}
    for key in numbers[0]:
        values = [run[key] for run in numbers if key in run]
        summary[key] = float(np.mean(values))
        if len(values) > 1:
            summary[f"{key}_std"] = float(np.std(values, ddof=1))
    summary["per_seed"] = numbers
    return summary


def sft_curve(run_dir: pathlib.Path) -> list[list[float]]:
    """An SFT run's held-out greedy accuracy by step ([[step, accuracy], ...]), read from its
    metrics.jsonl ([] if the file is missing), so cached runs report it too."""
    from rlr.training.metrics import eval_curve, read_metrics

    if not (run_dir / "metrics.jsonl").is_file():
        return []
    return eval_curve(read_metrics(run_dir))


def training_success(metrics_path: pathlib.Path) -> list[float]:
    """The training success rate of every iteration of a run, from its metrics.jsonl ([] if
    the file is missing)."""
    from rlr.training.metrics import read_metrics

    if not metrics_path.is_file():
        return []
    rows = read_metrics(metrics_path)
    return [float(row["success_rate"]) for row in rows if "success_rate" in row]


def iterations_to_success(
    success: Sequence[float], *, target: float, window: int = 5
) -> int | None:
    """The first iteration (1-based) at which the mean success rate of the last `window`
    iterations reaches `target` (fewer at the start: the mean so far); None if none does.

    success: [I] training success rate per iteration.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    for i in range(len(success)):
        if np.mean(success[max(0, i + 1 - window) : i + 1]) >= target:
            return i + 1
    return None


def gain_over_sft(
    per_seed: Sequence[dict[str, Any]],
    sft_per_seed: Sequence[dict[str, Any]],
    *,
    key: str = "greedy_accuracy",
) -> dict[str, Any]:
    """A variant's gain over the SFT policy it started from, paired by seed: mean, standard
    deviation and standard error (std / sqrt(seeds); None with one seed) of
    run[key] - sft[key], and whether the mean exceeds twice the standard error."""
    diffs = np.asarray([run[key] - sft[key] for run, sft in zip(per_seed, sft_per_seed)])
    if len(diffs) < 2:
        return {
            "key": key,
            "mean": float(diffs.mean()),
            "std": None,
            "se": None,
            "seeds": 1,
            "beats_sft": None,
        }
    std = float(np.std(diffs, ddof=1))
    se = std / np.sqrt(len(diffs))
    return {
        "key": key,
        "mean": float(diffs.mean()),
        "std": std,
        "se": float(se),
        "seeds": len(diffs),
        "beats_sft": bool(diffs.mean() > 2 * se),
    }


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
    from rlr.training.generation import rollout_settings, sampler_for

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
            settings = rollout_settings(config.rollout, temperature=temperature)
            sampler = sampler_for(model, tokenizer, settings)
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


def _pct(entry: dict[str, Any], key: str) -> str:
    """A fraction as a percentage, with ± its std over seeds when there is one."""
    text = f"{100 * entry[key]:.1f}"
    if f"{key}_std" in entry:
        text += f" ± {100 * entry[f'{key}_std']:.1f}"
    return text


def _mean_std(entry: dict[str, Any], key: str, digits: int) -> str:
    text = f"{entry[key]:.{digits}f}"
    if f"{key}_std" in entry:
        text += f" ± {entry[f'{key}_std']:.{digits}f}"
    return text


def results_markdown(results: dict[str, Any]) -> str:
    """The results table (accuracy %, solution shape; mean ± std over seeds) beside the
    paper's Table 1, the RL gain over SFT per variant, and the PRM's scores by step kind; a
    sweep's table has one row per variant and swept value."""
    total = results.get("total_stage_seconds", results["wall_time_s"])
    seeds = results["seeds"]
    prm_labels = results.get("prm_labels", "standard")
    lines = [
        f"rlr reproduction, preset `{results['preset']}`, "
        f"algorithm {results.get('algorithm', 'ppo')}, seeds {seeds}"
        + (f" (mean ± std over {len(seeds)} seeds)" if len(seeds) > 1 else "")
        + (", filler-aware PRM" if prm_labels == "filler_aware" else "")
        + f", {results['date']}, wall time {total / 60:.1f} min (all stages)",
        "",
    ]
    if "sweep" in results:
        lines += _sweep_table(results)
    else:
        lines += _variant_table(results)
    curves = [c for c in results.get("sft_curves", []) if c]
    if curves:
        lines += [
            "",
            "SFT held-out greedy accuracy by step (per seed): "
            + "; ".join(
                ", ".join(f"{int(step)}: {100 * acc:.1f}%" for step, acc in curve)
                for curve in curves
            )
            + ".",
        ]
    prm = results.get("prm", {}).get("eval", {})
    if "mean_score_filler" in prm:
        label = "no progress" if prm_labels == "filler_aware" else "correct"
        premise = f"filler steps labelled {label}; filler scores " + (
            "below correct steps"
            if prm["mean_score_filler"] < prm["mean_score_correct"]
            else "at least as high as correct steps: the premise of the hacking"
        )
        lines += [
            "",
            f"Seed 0's PRM on held-out steps: AUC {prm['step_auc']:.3f}; mean score of filler "
            f"steps {prm['mean_score_filler']:.3f}, correct steps {prm['mean_score_correct']:.3f}, "
            f"wrong steps {prm['mean_score_wrong']:.3f} ({premise}).",
        ]
    return "\n".join(lines) + "\n"


def _variant_table(results: dict[str, Any]) -> list[str]:
    lines = [
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
            f"| {label} | {_pct(entry, 'greedy_accuracy')} | {_pct(entry, 'sampling_accuracy')} "
            f"| {_mean_std(entry, 'steps_per_solution', 2)} "
            f"| {_mean_std(entry, 'filler_step_fraction', 3)} "
            f"| {_mean_std(entry, 'response_length', 1)} | {paper_text} |"
        )
    target = results.get("success_target")
    lines += [
        "",
        "Gains in points, paired by seed (mean ± standard error over seeds; **bold** when the "
        "mean exceeds twice its standard error); speed: the iteration at which the training "
        f"success rate (mean of the last 5 iterations) first reached {target}, per seed "
        "(- : never):",
        "",
        "| reward | greedy gain over SFT | sampling gain over SFT | greedy gain over success "
        "| iterations to target |",
        "|---|---|---|---|---|",
    ]
    for name, entry in results["variants"].items():
        speed = ", ".join(
            "-" if x is None else str(x) for x in entry.get("iterations_to_target_per_seed", [])
        )
        lines.append(
            f"| {name} | {_gain(entry.get('gain_over_sft'))} "
            f"| {_gain(entry.get('sampling_gain_over_sft'))} "
            f"| {_gain(entry.get('gain_over_success'))} | {speed} |"
        )
    return lines


def _gain(gain: dict[str, Any] | None) -> str:
    """A paired gain in points: mean ± se (bold when mean > 2 se), the mean alone for one seed."""
    if not gain:
        return ""
    if gain["se"] is None:
        return f"{100 * gain['mean']:+.1f}"
    text = f"{100 * gain['mean']:+.1f} ± {100 * gain['se']:.1f}"
    return f"**{text}**" if gain["mean"] > 2 * gain["se"] else text


def _sweep_table(results: dict[str, Any]) -> list[str]:
    sweep = results["sweep"]
    lines = [
        f"Sweep of `{sweep['key']}`; SFT policy before RL: greedy "
        f"{_pct(results['sft'], 'greedy_accuracy')} %, "
        f"{_mean_std(results['sft'], 'steps_per_solution', 2)} steps per solution.",
        "",
        f"| reward | {sweep['key']} | greedy acc. % | sampling acc. % | steps / solution "
        "| filler-step fraction | response tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    names = list(sweep["variants"][0])
    for name in names:
        for value, rows in zip(sweep["values"], sweep["variants"]):
            entry = rows[name]
            lines.append(
                f"| {name} | {value} | {_pct(entry, 'greedy_accuracy')} "
                f"| {_pct(entry, 'sampling_accuracy')} "
                f"| {_mean_std(entry, 'steps_per_solution', 2)} "
                f"| {_mean_std(entry, 'filler_step_fraction', 3)} "
                f"| {_mean_std(entry, 'response_length', 1)} |"
            )
    return lines


def plot_sweep(results: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    """sweep_KEY.png: greedy accuracy, steps per solution and response length against the
    swept value, a line per variant with a band of ± one std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = results["sweep"]
    numeric = all(isinstance(v, int | float) for v in sweep["values"])
    xs = sweep["values"] if numeric else list(range(len(sweep["values"])))
    panels = (
        ("greedy_accuracy", "greedy accuracy"),
        ("steps_per_solution", "steps per solution"),
        ("response_length", "response tokens"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    for name in sweep["variants"][0]:
        for ax, (key, title) in zip(axes, panels):
            mean = np.asarray([rows[name][key] for rows in sweep["variants"]])
            (line,) = ax.plot(xs, mean, marker="o", label=name)
            if f"{key}_std" in sweep["variants"][0][name]:
                std = np.asarray([rows[name][f"{key}_std"] for rows in sweep["variants"]])
                ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel(sweep["key"])
            if not numeric:
                ax.set_xticks(xs, [str(v) for v in sweep["values"]])
    sft = results["sft"]
    for ax, (key, _) in zip(axes, panels):
        ax.axhline(sft[key], color="gray", linestyle="--", linewidth=1, label="SFT")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(
    runs_dir: pathlib.Path,
    variants: Sequence[str],
    seeds: int,
    *,
    path: pathlib.Path,
    algorithm: str = "ppo",
) -> pathlib.Path:
    """Rollout accuracy, steps per solution and PRM return per iteration of every variant
    whose runs are under `runs_dir` (VARIANT, VARIANT_seedN), with a band of ± one std over
    seeds; written to `path`."""
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
            directory = variant_dir(runs_dir, variant, seed)
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
                std = np.nanstd(values, axis=0, ddof=1)
                ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel(f"{algorithm.upper()} iteration")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
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
        name = results_name(algorithm, reproduction.filler_aware, reproduction.sweep_name)
        files = [f"{name}.json", f"{name}.md", f"{plot_name(name)}.png"]
        print(f"{algorithm} results: " + ", ".join(str(out / file) for file in files))
    return 0
