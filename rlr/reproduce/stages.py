"""Runs a reproduction: every stage as the rlr command a user would run, each cached in its
folder under out_dir (a DONE file), in the planned order with a time estimate; then the results
of each algorithm (rlr.reproduce.report).
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from rlr.reproduce.arguments import StageArguments, seed_suffix
from rlr.reproduce.report import (
    PAPER_TABLE,
    aggregate_seeds,
    gain_over_sft,
    iterations_to_success,
    plot_curves,
    plot_name,
    plot_sweep,
    results_markdown,
    results_name,
    sft_curve,
    training_success,
)
from rlr.reproduce.schemas import REPRODUCE_PRESETS, ReproduceConfig, base_algorithm

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


class Reproduction(StageArguments):
    """Runs (or resumes) every stage of a reproduction config into its out_dir."""

    @classmethod
    def from_preset(cls, preset: str, *overrides: str) -> Reproduction:
        """The reproduction of a shipped preset (`cpu`, `cpu_sparse`, `smoke`), with key=value
        overrides."""
        from rlr import configs
        from rlr.config_loading import load_config

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

    def sft(self, seed: int = 0) -> dict[str, Any]:
        """Seed `seed`'s SFT policy (exported to sft[_seedN]/model)."""
        path = self.model_dir("sft", seed)
        argv = self.sft_arguments(seed)
        return self.stage(path, argv, produces=path / "model" / "config.json")

    def reward_model(self, kind: str, seed: int = 0) -> dict[str, Any]:
        """Seed `seed`'s PRM or ORM (exported to prm/model, orm_seed1/model, ...)."""
        path = self.model_dir(kind, seed)
        argv = self.reward_model_arguments(kind, seed)
        return self.stage(path, argv, produces=path / "model" / "config.json")

    def ppo(
        self, variant: str, seed: int, algorithm: str = "ppo", value: Any = None
    ) -> dict[str, Any]:
        """One RL run, then its exported policy evaluated greedily and at temperature 1 by
        `rlr evaluate` with the run's own config (both commands in commands.sh)."""
        path = self.variant_dir(variant, seed, algorithm, value)
        argv = self.ppo_arguments(variant, seed, algorithm, value)

        def train_and_evaluate() -> dict[str, Any]:
            self.command(argv)  # resumes from the run's checkpoints, if any
            summary = _read_json(path / "summary.json")
            if summary.get("preempted"):
                return summary
            results = path / "evaluation.json"
            self.command(evaluate_arguments(argv, path / "model", results))
            return _read_json(results)

        model = path / "model" / "config.json"
        return self.stage(path, argv, produces=model, action=train_and_evaluate)

    def evaluate_sft(self, seed: int = 0) -> dict[str, Any]:
        """Seed `seed`'s SFT policy on the same held-out problems with the same evaluation as
        PPO's."""
        policy = self.model_dir("sft", seed) / "model"
        directory = self.model_dir("sft_eval", seed)
        # The reward models and the run's folders play no part, so the command (the cache
        # key) leaves them out: the standard, filler-aware and sweep reproductions in one
        # folder share it.
        unused = ("prm.path=", "orm.path=", "orm=", "out_dir=")
        arguments = [a for a in self.ppo_arguments("success", seed) if not a.startswith(unused)]
        argv = evaluate_arguments(arguments, policy, directory / "summary.json")
        return self.stage(directory, argv)

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

    def run(self) -> dict[str, Any]:
        """Every stage (printing the expected time first and the time left after each), then
        results.json, results.md and curves.png (results_<algorithm>.* for each algorithm
        besides ppo; `_filler_aware` and `_sweep_KEY` suffixes for those reproductions).
        Returns the results of the last algorithm."""
        from rlr import sharding
        from rlr.config_loading import dump_config
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
        if self.recipe(algorithm):
            results["recipe"] = {"algorithm": base_algorithm(algorithm), **self.recipe(algorithm)}
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


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


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


def evaluate_arguments(
    ppo_argv: Sequence[str], policy: pathlib.Path, out: pathlib.Path
) -> list[str]:
    """`rlr evaluate` arguments that evaluate `policy` with an `rlr ppo` command line's config
    (its --config and overrides; --export dropped), writing the results to `out`."""
    config = list(ppo_argv[1 : ppo_argv.index("--export")])
    return ["evaluate", *config, "--policy", str(policy), "--out", str(out)]
