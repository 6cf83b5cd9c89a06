"""The held-out evaluation of a reproduction's policies: greedy and temperature-1 accuracy and
the solution statistics of an exported policy, as PPOTrainer.evaluate computes them."""

from __future__ import annotations

import os
from typing import Any


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
