"""`rlr probe`: how each process-reward method pays for filler steps.

A solution with K steps and PRM scores gets m = 0..N filler steps (each with a high PRM score)
inserted before its final-answer step, as a policy hacking a raw PRM would. For each method
(raw, clip, delta, clip_delta) the trajectory return with gamma = 1 is computed through the real
reward path, `rlr.token_rewards` then `rlr.gae_advantages` with a zero critic, so the return is
the return-to-go at the first token. Raw grows with m; Clip, Delta and Clip-Delta stay bounded.
Two more columns come from rlr.process_designs: PURE's softmin credit assignment
("pure_softmin", at most T log K above the lowest signed score) and the exact min-form
("min_form", the lowest signed score 2x - 1, which an added step can only lower).

Without a critic (GRPO and its kin) the same padded solution sits in a group beside the
unpadded one, and its first-token process advantage is computed with
`rlr.group_process_advantages`, with the step rewards normalised over the group or taken as
their plain reward-to-go: centring on the group mean lets padding pay again under every method,
the plain reward-to-go keeps the bounds. Writes probe.json and probe.png to --out and prints
both tables.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlr.advantages import gae_advantages, group_process_advantages
from rlr.process_designs import min_form_step_returns, pure_softmin_step_rewards
from rlr.rewards import (
    PROCESS_REWARD_METHODS,
    last_token_onehot,
    place_at_tokens,
    shape_process_rewards,
    token_rewards,
)

GROUP_NORMALIZATIONS = ("group", "none")
# Other designs (rlr.process_designs) in the same table: PURE's softmin credit assignment and
# the exact min-form, both on the signed score 2x - 1.
DESIGN_COLUMNS = ("pure_softmin", "min_form")

DEFAULT_SCORES = (0.9, 0.7, 0.8, 0.6)


@jax.jit
def _trajectory_returns(success, mask, scores, step_end, step_mask, alpha, eta, temperature):
    """{method: [B]} return-to-go at the first token, for every method in one compiled call.

    pure_softmin: alpha times PURE's softmin step rewards at the step ends plus success at the
    last token, through the same GAE; min_form: alpha times the exact min-form return of the
    signed scores min_k (2 x_k - 1), plus success (the success reward summed apart from the
    min, as PURE's main branch adds its verifiable reward's return to the process one)."""
    out = {}
    zero_critic = jnp.zeros_like(mask)
    for method in PROCESS_REWARD_METHODS:
        rewards = token_rewards(
            success, mask, scores, step_end, step_mask, method=method, alpha=alpha, eta=eta
        )
        _, returns = gae_advantages(rewards.total, zero_critic, mask, gamma=1.0, lam=1.0)
        out[method] = returns[:, 0]
    softmin = pure_softmin_step_rewards(scores, step_mask, temperature=temperature)
    placed = place_at_tokens(alpha * softmin, step_end, step_mask, num_tokens=mask.shape[1])
    total = placed * mask + last_token_onehot(mask) * success[:, None]
    _, returns = gae_advantages(total, zero_critic, mask, gamma=1.0, lam=1.0)
    out["pure_softmin"] = returns[:, 0]
    out["min_form"] = alpha * min_form_step_returns(2.0 * scores - 1.0, step_mask)[:, 0] + success
    return out


def probe_batch(
    scores: tuple[float, ...] | list[float],
    *,
    filler_score: float,
    max_filler: int,
    tokens_per_step: int,
) -> dict[str, np.ndarray]:
    """Rows m = 0..max_filler: the K steps with m filler steps inserted before the last one.

    Returns mask [B, T], scores/step_end/step_mask [B, K] with B = max_filler + 1,
    K = len(scores) + max_filler and T = K * tokens_per_step; each step is tokens_per_step
    tokens long and its reward sits on its last token.
    """
    scores = [float(s) for s in scores]
    if not scores:
        raise ValueError("scores must hold at least one step score (the final-answer step)")
    if max_filler < 0:
        raise ValueError(f"max_filler must be >= 0, got {max_filler}")
    if tokens_per_step < 1:
        raise ValueError(f"tokens_per_step must be >= 1, got {tokens_per_step}")
    batch = max_filler + 1
    max_steps = len(scores) + max_filler
    num_tokens = max_steps * tokens_per_step
    step_scores = np.zeros((batch, max_steps), np.float32)
    step_mask = np.zeros((batch, max_steps), np.float32)
    mask = np.zeros((batch, num_tokens), np.float32)
    for m in range(batch):
        row = scores[:-1] + [float(filler_score)] * m + scores[-1:]
        step_scores[m, : len(row)] = row
        step_mask[m, : len(row)] = 1.0
        mask[m, : len(row) * tokens_per_step] = 1.0
    step_end = np.broadcast_to(
        (np.arange(max_steps, dtype=np.int32) + 1) * tokens_per_step - 1, (batch, max_steps)
    ).copy()
    return {"mask": mask, "scores": step_scores, "step_end": step_end, "step_mask": step_mask}


def probe_returns(
    scores: tuple[float, ...] | list[float] = DEFAULT_SCORES,
    *,
    correct: bool = True,
    filler_score: float = 0.95,
    max_filler: int = 8,
    alpha: float = 1.0,
    eta: float = 0.75,
    tokens_per_step: int = 4,
    temperature: float = 0.1,
) -> dict[str, Any]:
    """Trajectory return (gamma = 1) per method for m = 0..max_filler filler steps.

    Returns a JSON-ready dict: "config", "num_filler" [m...], "num_steps" [K + m...] and
    "returns" {method: [return at m...]}, the methods being raw, clip, delta, clip_delta and
    the designs of DESIGN_COLUMNS (PURE's softmin with this temperature, the exact min-form).
    """
    batch = probe_batch(
        scores, filler_score=filler_score, max_filler=max_filler, tokens_per_step=tokens_per_step
    )
    success = np.full(max_filler + 1, 1.0 if correct else 0.0, np.float32)
    got = _trajectory_returns(
        success,
        batch["mask"],
        batch["scores"],
        batch["step_end"],
        batch["step_mask"],
        np.float32(alpha),
        np.float32(eta),
        np.float32(temperature),
    )
    columns = PROCESS_REWARD_METHODS + DESIGN_COLUMNS
    returns = {m: [float(v) for v in np.asarray(got[m])] for m in columns}
    return {
        "config": {
            "scores": [float(s) for s in scores],
            "correct": bool(correct),
            "filler_score": float(filler_score),
            "max_filler": int(max_filler),
            "alpha": float(alpha),
            "eta": float(eta),
            "tokens_per_step": int(tokens_per_step),
            "temperature": float(temperature),
            "gamma": 1.0,
        },
        "num_filler": list(range(max_filler + 1)),
        "num_steps": [len(scores) + m for m in range(max_filler + 1)],
        "returns": returns,
    }


def group_probe(
    scores: tuple[float, ...] | list[float] = DEFAULT_SCORES,
    *,
    filler_score: float = 0.95,
    max_filler: int = 8,
    eta: float = 0.75,
    tokens_per_step: int = 4,
) -> dict[str, Any]:
    """First-token process advantage of a padded solution in a GRPO group, m = 0..max_filler.

    The group holds two samples of one prompt: the solution with m fillers before its answer,
    and the same solution without them. Step rewards are shaped by each method and turned into
    advantages by group_process_advantages: "group" normalises them over the group (mean and
    std, as GRPO with process supervision does), "none" takes their plain reward-to-go.
    Returns {"num_filler", "advantages": {"<method>/<normalization>": [advantage at m...]}}.
    """
    batch = probe_batch(
        scores, filler_score=filler_score, max_filler=max_filler, tokens_per_step=tokens_per_step
    )
    out: dict[str, list[float]] = {}
    for method in PROCESS_REWARD_METHODS:
        shaped = np.asarray(
            shape_process_rewards(batch["scores"], batch["step_mask"], method=method, eta=eta)
        )
        for normalization in GROUP_NORMALIZATIONS:
            values = []
            for m in range(max_filler + 1):
                rows = [m, 0]  # the padded solution and the unpadded one, one group
                advantages = group_process_advantages(
                    shaped[rows][None],
                    batch["step_mask"][rows][None],
                    batch["step_end"][rows][None],
                    batch["mask"][rows][None],
                    scale="std" if normalization == "group" else "none",
                    center=normalization == "group",
                )
                values.append(float(advantages[0, 0, 0]))
            out[f"{method}/{normalization}"] = values
    return {"num_filler": list(range(max_filler + 1)), "advantages": out}


def _columns(keys: dict[str, list[int]], values: dict[str, list[float]], width: int) -> str:
    """A plain-text table: integer key columns, then one column of floats per name."""
    head = " ".join(f"{k:>5}" for k in keys) + " " + " ".join(f"{n:>{width}}" for n in values)
    lines = [head]
    for i in range(len(next(iter(keys.values())))):
        cells = " ".join(f"{column[i]:>{width}.4f}" for column in values.values())
        lines.append(" ".join(f"{column[i]:>5}" for column in keys.values()) + " " + cells)
    return "\n".join(lines)


def format_table(result: dict[str, Any]) -> str:
    """The probe result as a plain-text table: one row per m, one column per method."""
    keys = {"m": result["num_filler"], "steps": result["num_steps"]}
    return _columns(keys, result["returns"], 12)


def format_group_table(result: dict[str, Any]) -> str:
    """group_probe's result as text: one row per m, one column per method / normalization."""
    return _columns({"m": result["num_filler"]}, result["advantages"], 18)


def probe_figure(result: dict[str, Any]):
    """A matplotlib Figure of return vs number of filler steps, one line per method."""
    from matplotlib.figure import Figure  # no pyplot: works under any backend, Agg included

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for name, values in result["returns"].items():
        ax.plot(result["num_filler"], values, marker="o", label=name)
    cfg = result["config"]
    ax.set_xlabel("filler steps m")
    ax.set_ylabel("trajectory return (gamma = 1)")
    ax.set_title(
        f"PRM reward hacking probe (alpha={cfg['alpha']}, eta={cfg['eta']},"
        f" filler score={cfg['filler_score']}, correct={int(cfg['correct'])})",
        fontsize=9,
    )
    ax.axhline(1.0 if cfg["correct"] else 0.0, color="grey", lw=0.8, ls="--")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
