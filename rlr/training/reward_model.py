"""PRM and ORM training on step-labelled solutions, read exactly as PPO reads them.

PRM: binary cross-entropy on the score logit at each step's last response token (column
P + step_end), the logit whose sigmoid `readouts.prm_step_scores` returns; hard targets
(+1 -> 1, -1 -> 0) or soft ones (Math-Shepherd completion rates in [0, 1]). ORM: binary
cross-entropy on the score logit at the last response token (EOS included), the one
`readouts.orm_scores` reads, against the solution's correctness (its final answer graded
against the record's gold answer; without one, all steps labelled good). Both start from the
SFT policy's trunk with a fresh score head and run in the shared loop of rlr.training.fit.

Evaluation on held-out data: step accuracy, ROC AUC, and the hackability report, the PRM's
mean score on filler steps vs correct vs wrong steps (a raw PRM that scores useless steps high
is what the policy learns to exploit; docs/method.md). What counts as a filler step is a
StepClassifier (rlr.training.evaluation), so any dataset plugs in.

    rlr train-prm --config prm_cpu [key=value ...]
    rlr train-orm --config orm_cpu [key=value ...]
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlr import readouts, sharding
from rlr.config_loading import dump_config
from rlr.data.prompts import build_prompt
from rlr.data.records import StepLabelled
from rlr.training import batching, distributed, loading
from rlr.training.checkpoint import run_directory
from rlr.training.evaluation import StepClassifier, is_filler_step
from rlr.training.fit import export_and_summarize, fit, supervised_mesh, supervised_optimizer
from rlr.training.schemas import RewardModelConfig
from rlr.training.train_state import init_train_state

STEP_JOIN = "\n"
PRM_KEYS = ("input_ids", "attention_mask", "step_end", "step_mask", "targets")
ORM_KEYS = ("input_ids", "attention_mask", "response_mask", "targets")


def masked_bce(
    logits: chex.Array,  # [B, K] score logits
    targets: chex.Array,  # [B, K] targets in [0, 1]
    mask: chex.Array,  # [B, K] 1 where a target exists
) -> chex.Array:  # []
    """Mean binary cross-entropy of sigmoid(logits) against targets over masked entries
    (sum / count): -[y log s + (1 - y) log(1 - s)]."""
    chex.assert_equal_shape([logits, targets, mask])
    mask = mask.astype(jnp.float32)
    losses = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _binary_metrics(logits, targets, mask) -> dict[str, jax.Array]:
    mask = mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    hits = ((logits > 0) == (targets >= 0.5)).astype(jnp.float32)
    return {
        "accuracy": jnp.sum(hits * mask) / count,
        "mean_score": jnp.sum(jax.nn.sigmoid(logits) * mask) / count,
    }


def prm_loss(
    model: nn.Module,
    params: Any,
    batch: dict[str, chex.Array],
    *,
    response_len: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Step-level BCE at each step's last token (the reading of readouts.prm_step_scores).

    batch: input_ids [B, S], attention_mask [B, S], step_end [B, K], step_mask [B, K],
    targets [B, K] in [0, 1]; S = P + T with T = response_len; with train.pack also
    "packing", the rows packed (rlr.packing), which the model then reads.
    """
    token_logits = readouts.score_logits(
        model, params, batch["input_ids"], batch["attention_mask"], packing=batch.get("packing")
    )
    logits = readouts.step_logits(token_logits, batch["step_end"], T=response_len)
    loss = masked_bce(logits, batch["targets"], batch["step_mask"])
    return loss, {"bce": loss, **_binary_metrics(logits, batch["targets"], batch["step_mask"])}


def orm_loss(
    model: nn.Module,
    params: Any,
    batch: dict[str, chex.Array],
    *,
    response_len: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Solution-level BCE at the last response token (the reading of readouts.orm_scores).

    batch: input_ids [B, S], attention_mask [B, S], response_mask [B, T], targets [B] in
    [0, 1] (1: the solution is correct); S = P + T with T = response_len; "packing" as
    prm_loss.
    """
    chex.assert_axis_dimension(batch["response_mask"], 1, response_len)
    token_logits = readouts.score_logits(
        model, params, batch["input_ids"], batch["attention_mask"], packing=batch.get("packing")
    )
    logits = readouts.outcome_logits(token_logits, batch["response_mask"])
    ones = jnp.ones_like(logits)
    loss = masked_bce(logits, batch["targets"], ones)
    return loss, {"bce": loss, **_binary_metrics(logits, batch["targets"], ones)}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    Computed from average ranks (Mann-Whitney U). NaN when only one class is present.
    """
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in size: {scores.shape} vs {labels.shape}")
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = 0.5 * (start + end - 1) + 1.0
            start = end
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def step_targets_of(record: StepLabelled, *, label_mode: str, neutral_target: float) -> list[float]:
    """A record's per-step targets in [0, 1] (see RewardModelConfig)."""
    if label_mode == "hard":
        table = {1: 1.0, -1: 0.0, 0: neutral_target}
        return [table[label] for label in record.labels]
    soft = record.meta.get("soft_labels")
    if not isinstance(soft, list) or len(soft) != len(record.steps):
        raise ValueError(
            f"record {record.id!r}: label_mode=soft needs meta.soft_labels, one fraction in "
            f"[0, 1] per step ({len(record.steps)}); use label_mode=hard for +1/-1 labels"
        )
    return [float(x) for x in soft]


def solutions_correct(
    records: Sequence[StepLabelled], step_targets: Sequence[Sequence[float]]
) -> np.ndarray:  # [B] bool
    """Whether each labelled solution is right: its final answer (rlr.grading.extract_answer
    of the joined steps) graded against the record's gold answer; a record without a gold
    answer is right when every one of its step targets (step_targets_of) is >= 0.5."""
    from rlr.grading import Grader

    if len(records) != len(step_targets):
        raise ValueError(f"{len(records)} records but {len(step_targets)} rows of step targets")
    graded = [i for i, r in enumerate(records) if r.gold_answer is not None]
    out = np.asarray([all(t >= 0.5 for t in row) for row in step_targets], bool)
    if graded:
        with Grader(num_workers=0) as grader:
            verdicts = grader.grade_responses(
                [STEP_JOIN.join(records[i].steps) for i in graded],
                [records[i].gold_answer for i in graded],
            )
        out[graded] = verdicts
    return out


def encode_labelled(
    records: Sequence[StepLabelled],
    tokenizer,
    config: RewardModelConfig,
    *,
    source: str = "",
    is_filler: StepClassifier = is_filler_step,
) -> dict[str, np.ndarray]:
    """PPO rows for labelled solutions plus `targets`: [B, K] step targets for a PRM, [B]
    correctness for an ORM, and `step_kind` [B, K] (0 pad, 1 correct, 2 wrong, 3 filler, as
    `is_filler` judges a step's text)."""
    spec = config.train
    style = config.data.prompt_style
    rows = batching.encode_rows(
        tokenizer,
        [build_prompt(r.question, style=style, tokenizer=tokenizer) for r in records],
        [STEP_JOIN.join(r.steps) for r in records],
        prompt_len=spec.prompt_len,
        response_len=spec.response_len,
        max_steps=spec.max_reasoning_steps,
    )
    per_step = [
        step_targets_of(r, label_mode=config.label_mode, neutral_target=config.neutral_target)
        for r in records
    ]
    try:
        step_targets = batching.step_targets(per_step, rows["step_mask"])
    except ValueError as err:
        raise ValueError(f"{source or 'records'}: {err}") from None
    kind = np.zeros(rows["step_mask"].shape, np.int32)
    for b, record in enumerate(records):
        for k in range(int(rows["step_mask"][b].sum())):
            kind[b, k] = 3 if is_filler(record.steps[k]) else 1 if record.labels[k] > 0 else 2
    rows["step_kind"] = kind
    if config.kind == "prm":
        rows["targets"] = step_targets
    else:
        rows["targets"] = solutions_correct(records, per_step).astype(np.float32)
    return rows


def score_rows(
    scorer: Callable[..., jax.Array],
    params: Any,
    rows: dict[str, np.ndarray],
    keys: Sequence[str],
    *,
    batch_size: int,
) -> np.ndarray:  # [R, ...]
    """A jitted `scorer(params, *arrays)` over all R rows (rows[k] for k in keys), in
    fixed-size batches (rlr.training.batching.map_in_batches)."""
    return batching.map_in_batches(
        lambda *arrays: scorer(params, *arrays),
        [rows[k] for k in keys],
        batch_size=min(batch_size, len(rows[keys[0]])),
    )


def evaluate_prm(scores: np.ndarray, rows: dict[str, np.ndarray]) -> dict[str, float]:
    """Step accuracy, AUC and the hackability report from PRM step scores [B, K]."""
    mask = rows["step_mask"] > 0
    labels = rows["targets"][mask] >= 0.5
    flat = scores[mask]
    kind = rows["step_kind"][mask]
    report = {
        "step_accuracy": float(np.mean((flat >= 0.5) == labels)),
        "step_auc": roc_auc(flat, labels),
        "num_steps": int(mask.sum()),
    }
    for name, code in (("correct", 1), ("wrong", 2), ("filler", 3)):
        chosen = flat[kind == code]
        report[f"mean_score_{name}"] = float(chosen.mean()) if chosen.size else float("nan")
        report[f"num_{name}"] = int(chosen.size)
    good_fillers = flat[(kind == 3) & labels]
    report["mean_score_filler_in_correct_prefix"] = (
        float(good_fillers.mean()) if good_fillers.size else float("nan")
    )
    return report


def evaluate_orm(scores: np.ndarray, rows: dict[str, np.ndarray]) -> dict[str, float]:
    """Solution accuracy, AUC and mean scores of right and wrong solutions from ORM scores [B]."""
    labels = rows["targets"] >= 0.5
    return {
        "accuracy": float(np.mean((scores >= 0.5) == labels)),
        "auc": roc_auc(scores, labels),
        "mean_score_correct": float(scores[labels].mean()) if labels.any() else float("nan"),
        "mean_score_wrong": float(scores[~labels].mean()) if (~labels).any() else float("nan"),
        "num_solutions": len(scores),
    }


def make_evaluator(
    model: nn.Module, rows: dict[str, np.ndarray], *, kind: str, response_len: int, batch_size: int
) -> Callable[[Any], dict[str, float]]:
    """params -> held-out metrics, scoring with readouts.prm_step_scores / orm_scores."""
    if kind == "prm":
        prm = jax.jit(functools.partial(readouts.prm_step_scores, model, T=response_len))
        keys = ("input_ids", "attention_mask", "step_end", "step_mask")
        return lambda p: evaluate_prm(score_rows(prm, p, rows, keys, batch_size=batch_size), rows)
    orm = jax.jit(functools.partial(readouts.orm_scores, model))
    keys = ("input_ids", "attention_mask", "response_mask")
    return lambda p: evaluate_orm(score_rows(orm, p, rows, keys, batch_size=batch_size), rows)


def run_reward_model(config: RewardModelConfig) -> dict[str, Any]:
    """Trains, evaluates and exports the PRM or ORM of `config`; returns a summary dict."""
    mesh = supervised_mesh(config.train.batch_size)
    out_dir = run_directory(config.out_dir)
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, out_dir / "config.yaml")
    tokenizer = loading.load_tokenizer(config.tokenizer)
    spec = config.train
    train_rows = encode_labelled(
        loading.load_labelled(config.data.train, config.data.format, what="data.train"),
        tokenizer,
        config,
        source=config.data.train,
    )
    batching.warn_truncated(train_rows, config.data.train, prefix="train.")
    test_rows = None
    if config.data.test:
        test = loading.load_labelled(config.data.test, config.data.format, what="data.test")
        test_rows = encode_labelled(
            test[: config.eval.max_examples], tokenizer, config, source=config.data.test
        )
    head = "token" if config.kind == "prm" else "sequence"
    model, export_model, params = loading.init_scorer(
        config.init, tokenizer, seed=config.seed, head=head
    )
    loss = prm_loss if config.kind == "prm" else orm_loss
    keys = PRM_KEYS if config.kind == "prm" else ORM_KEYS
    tx = supervised_optimizer(spec)
    evaluate = None
    if test_rows is not None:
        evaluate = make_evaluator(
            model,
            test_rows,
            kind=config.kind,
            response_len=spec.response_len,
            batch_size=config.eval.batch_size or 100,
        )
    show = ("loss", "accuracy", "eval/step_auc" if config.kind == "prm" else "eval/auc")
    result = fit(
        init_train_state(params, tx),
        functools.partial(loss, model, response_len=spec.response_len),
        tx,
        make_batch=lambda idx: {k: train_rows[k][idx] for k in keys},
        dataset_size=len(train_rows["input_ids"]),
        spec=spec,
        seed=config.seed,
        out_dir=out_dir,
        evaluate=evaluate,
        eval_every=config.eval.every,
        description=config.kind,
        show=show,
        mesh=mesh,
        param_shardings=sharding.module_param_shardings(model, mesh),
    )
    report = {k[len("eval/") :]: v for k, v in result.metrics.items() if k.startswith("eval/")}
    if evaluate is not None and not result.interrupted:
        report = report or evaluate(result.state.params)  # empty when resumed after the end
        if distributed.is_main():
            (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return export_and_summarize(
        result, export_model, out_dir, tokenizer_dir=config.tokenizer, extra={"eval": report}
    )
