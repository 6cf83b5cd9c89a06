"""A reproduction's results: aggregation over seeds, gains over the SFT policy, the speed to a
success target, the markdown table beside the paper's, the curves and sweep plots, and the
names of the results files.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlr.reproduce.arguments import variant_dir

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
    if "recipe" in results:
        settings = ", ".join(f"`{key}={value}`" for key, value in results["recipe"].items())
        lines += [f"Every run: {settings}.", ""]
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
