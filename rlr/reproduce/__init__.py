"""`rlr reproduce`: the paper's ablation on this machine, from one command.

Stages (each cached in the output directory, so an interrupted run continues where it stopped):
data -> tokenizer -> SFT policy -> PRM and ORM -> one PPO run per reward variant with equal
budgets and seeds (success, orm, prm_raw, prm_clip, prm_delta, prm_clip_delta) -> greedy and
sampled evaluation on held-out problems -> results.json, results.md (beside the paper's table)
and curves.png (accuracy, steps per solution and PRM return against PPO iteration).

Every training stage is the rlr command a user would run (`rlr make-data`, `rlr sft`,
`rlr train-prm`, ...), run in this process through rlr.cli and written to OUT/commands.sh, so
any stage can be rerun or changed by hand. Presets are the shipped configs reproduce_cpu (the
main job of launch/local.sh, about 21 minutes per seed on 2 CPU cores), reproduce_cpu_sparse
(longer problems where success is sparse: what a process reward adds) and reproduce_smoke (a
few minutes; the test suite runs it).

The package's modules: config (ReproduceConfig, the presets and the reward variants), arguments
(each stage's folder and rlr command line), stages (running and caching them: Reproduction)
and report (aggregation over seeds, gains, the results table and plots). Policies are
evaluated by `rlr evaluate`, a stage like the others. Their public names are importable from
here and load on first use, so reading a reproduction's config (as the CLI does) loads no
numpy.
"""

from __future__ import annotations

from rlr.lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "DEFAULT_VARIANTS": "rlr.reproduce.schemas",
    "GROUP_ONLY_VARIANTS": "rlr.reproduce.schemas",
    "PROCESS_DESIGN_VARIANTS": "rlr.reproduce.schemas",
    "RECIPES": "rlr.reproduce.schemas",
    "RENAMED_VARIANTS": "rlr.reproduce.schemas",
    "REPRODUCE_PRESETS": "rlr.reproduce.schemas",
    "REWARD_VARIANTS": "rlr.reproduce.schemas",
    "ReproduceAlgorithm": "rlr.reproduce.schemas",
    "ReproduceConfig": "rlr.reproduce.schemas",
    "StageSpec": "rlr.reproduce.schemas",
    "SweepSpec": "rlr.reproduce.schemas",
    "SyntheticTaskSpec": "rlr.reproduce.schemas",
    "base_algorithm": "rlr.reproduce.schemas",
    "recipe_overrides": "rlr.reproduce.schemas",
    "resolve_ppo_key": "rlr.reproduce.schemas",
    "sweep_name": "rlr.reproduce.schemas",
    "sweep_value_name": "rlr.reproduce.schemas",
    "VARIANTS": "rlr.reproduce.arguments",
    "StageArguments": "rlr.reproduce.arguments",
    "command_config": "rlr.reproduce.arguments",
    "critic_free_overrides": "rlr.reproduce.arguments",
    "seed_override": "rlr.reproduce.arguments",
    "seed_suffix": "rlr.reproduce.arguments",
    "stage_overrides": "rlr.reproduce.arguments",
    "variant_dir": "rlr.reproduce.arguments",
    "HOST_ONLY_COMMANDS": "rlr.reproduce.stages",
    "PlannedStage": "rlr.reproduce.stages",
    "Reproduction": "rlr.reproduce.stages",
    "StageClock": "rlr.reproduce.stages",
    "StagePreempted": "rlr.reproduce.stages",
    "enable_compilation_cache": "rlr.reproduce.stages",
    "PAPER_TABLE": "rlr.reproduce.report",
    "aggregate_seeds": "rlr.reproduce.report",
    "gain_over_sft": "rlr.reproduce.report",
    "iterations_to_success": "rlr.reproduce.report",
    "plot_curves": "rlr.reproduce.report",
    "plot_name": "rlr.reproduce.report",
    "plot_sweep": "rlr.reproduce.report",
    "results_markdown": "rlr.reproduce.report",
    "results_name": "rlr.reproduce.report",
    "sft_curve": "rlr.reproduce.report",
    "training_success": "rlr.reproduce.report",
}

__all__ = sorted([*_EXPORTS, "run"])


__getattr__, __dir__ = lazy_exports("rlr.reproduce", _EXPORTS, globals())
