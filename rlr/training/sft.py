"""Policy SFT on solution text, and the small supervised loop that reward-model training shares.

The SFT loss is the mean token NLL over response tokens only (prompt tokens carry no loss),
on PPO-layout rows (rlr.training.batching), so the policy learns exactly the text layout that
PPO will sample and score. `fit` runs any `loss_fn(params, batch)` with the jitted donated step
of rlr.training.step, orbax checkpoints with the data position (exact resume), metrics to
JSONL / TensorBoard with a progress bar, and SIGTERM -> checkpoint -> clean exit.

    rlr sft --config launch/configs/sft_cpu.yaml [key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlr.config import dump_config, load_config
from rlr.data.prompts import build_prompt
from rlr.data.records import Problem
from rlr.losses import token_logprobs
from rlr.sampling import Sampler
from rlr.training import batching, evaluation, models_io
from rlr.training.checkpoint import Checkpointer
from rlr.training.configs import SFTConfig, SupervisedSpec
from rlr.training.metrics import MetricsWriter
from rlr.training.ppo_core import policy_logits
from rlr.training.preemption import PreemptionGuard
from rlr.training.step import TrainState, init_train_state, make_optimizer, make_train_step

TRAIN_KEYS = ("input_ids", "attention_mask", "response_mask")


def sft_loss(
    logits: chex.Array,  # [B, T, V] logits predicting each response token
    tokens: chex.Array,  # [B, T] response tokens
    response_mask: chex.Array,  # [B, T] 1 on response tokens (EOS included)
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean token NLL over response tokens: -sum(mask * log p(token)) / sum(mask).

    Also returns the token accuracy of the argmax prediction over the same tokens.
    """
    chex.assert_rank([logits, tokens, response_mask], [3, 2, 2])
    chex.assert_equal_shape([tokens, response_mask])
    chex.assert_equal_shape_prefix([logits, tokens], 2)
    mask = response_mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    nll = -jnp.sum(token_logprobs(logits, tokens) * mask) / count
    hits = (jnp.argmax(logits, axis=-1) == tokens).astype(jnp.float32)
    return nll, {"nll": nll, "token_accuracy": jnp.sum(hits * mask) / count}


def make_sft_loss_fn(
    model: nn.Module, *, response_len: int
) -> Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]:
    """`loss_fn(params, batch)` for make_train_step over a batch of encode_rows arrays."""

    def loss_fn(params, batch):
        ids, attn = batch["input_ids"], batch["attention_mask"]
        logits = policy_logits(model, params, ids, attn, T=response_len)
        return sft_loss(logits, ids[:, ids.shape[1] - response_len :], batch["response_mask"])

    return loss_fn


@dataclasses.dataclass
class FitResult:
    """What `fit` ends with: the state, whether it stopped on SIGTERM, the last metrics."""

    state: TrainState
    iteration: int
    interrupted: bool
    metrics: dict[str, float]
    wall_s: float


def fit(
    state: TrainState,
    loss_fn: Callable[[Any, Any], tuple[jax.Array, dict[str, jax.Array]]],
    tx: optax.GradientTransformation,
    *,
    make_batch: Callable[[np.ndarray], dict[str, np.ndarray]],
    dataset_size: int,
    spec: SupervisedSpec,
    seed: int,
    out_dir: str | pathlib.Path,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
    eval_every: int = 0,
    description: str = "train",
    show: Sequence[str] = ("loss",),
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]] | None = None,
) -> FitResult:
    """Runs `spec.steps` updates of `loss_fn`, resuming from `out_dir/checkpoints` if present.

    Batches are `make_batch(indices)` for index batches of an EpochIterator (seeded by `seed`);
    the checkpoint holds the TrainState and the data position, so an interrupted run resumed
    with the same arguments ends with the same parameters as an uninterrupted one. `evaluate`
    (params -> metrics) runs every `eval_every` steps (0: never mid-run) and after the last
    step; its metrics are logged with an "eval/" prefix. SIGTERM saves and returns early with
    `interrupted=True`. `train_step` replaces `make_train_step(loss_fn, tx)` (e.g. a step
    jitted with shardings, or one compiled once and shared by several runs).
    """
    out_dir = pathlib.Path(out_dir)
    train_step = train_step or make_train_step(loss_fn, tx)
    checkpointer = Checkpointer(out_dir / "checkpoints", keep=spec.keep_checkpoints)
    iteration = 0
    iterator = batching.EpochIterator(dataset_size, batch_size=spec.batch_size, seed=seed)
    if checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(state)
        iteration = int(meta["iteration"])
        iterator = batching.EpochIterator.resume(
            dataset_size, meta["data"], batch_size=spec.batch_size, seed=seed
        )
        print(f"resumed from {checkpointer.directory} at step {iteration}")

    def save() -> None:
        checkpointer.save(iteration, state, {"iteration": iteration, "data": iterator.position})

    start = time.time()
    scalars: dict[str, float] = {}
    interrupted = False
    writer = MetricsWriter(
        out_dir,
        total_steps=spec.steps,
        initial_step=iteration,
        show=tuple(show),
        description=description,
    )
    try:
        with PreemptionGuard() as guard:
            while iteration < spec.steps:
                batch = make_batch(next(iterator))
                state, metrics = train_step(state, jax.tree.map(jnp.asarray, batch))
                iteration += 1
                last = iteration == spec.steps
                if evaluate is not None and (last or (eval_every and iteration % eval_every == 0)):
                    metrics = {**metrics, **_prefixed(evaluate(state.params))}
                scalars = writer.write(iteration, metrics)
                if last or iteration % spec.checkpoint_every == 0 or guard.requested:
                    save()
                if guard.requested and not last:
                    interrupted = True
                    print(f"\nsignal {guard.received}: saved step {iteration}; exiting")
                    break
    finally:
        writer.close()
        checkpointer.close()
    return FitResult(state, iteration, interrupted, scalars, time.time() - start)


def _prefixed(metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"eval/{k}": v for k, v in metrics.items()}


def evaluate_policy(
    sampler: Sampler,
    params: Any,
    tokenizer,
    problems: Sequence[Problem],
    *,
    prompt_len: int,
    batch_size: int,
    prompt_style: str = "plain",
) -> dict[str, float]:
    """Accuracy (graded final answers) on held-out problems, plus length diagnostics.

    `sampler` is a greedy (temperature 0) Sampler over the policy; this is
    rlr.training.evaluation.evaluate_policy with in-process grading. Returns accuracy, mean
    response tokens, mean steps, the fraction of filler steps and the fraction of responses
    that ended without EOS (hit the token limit).
    """
    from rlr.grading import Grader

    if not problems:
        raise ValueError("evaluate_policy needs at least one problem")
    prompts = [build_prompt(p.question, style=prompt_style, tokenizer=tokenizer) for p in problems]
    with Grader(num_workers=0) as grader:
        result = evaluation.evaluate_policy(
            sampler,
            params,
            tokenizer,
            prompts,
            [p.answer for p in problems],
            grader=grader,
            key=jax.random.key(0),
            max_prompt_tokens=prompt_len,
            batch_size=batch_size,
            keep_samples=0,
        )
    return {
        "accuracy": result.accuracy,
        "response_tokens": result.response_length,
        "steps_per_solution": result.steps_per_solution,
        "filler_step_fraction": result.filler_step_fraction,
        "hit_token_limit": result.truncated_fraction,
    }


def read_problems_for(path: str, *, what: str, need_solution: bool) -> list[Problem]:
    """rlr Problem JSONL (as `rlr make-data` writes it), with errors that name the file."""
    from rlr.data.readers import read_problems

    file = pathlib.Path(path)
    if not file.is_file():
        raise ValueError(f"{what} file {path!r} does not exist; run `rlr make-data --out DIR`")
    problems = list(read_problems(file))
    if not problems:
        raise ValueError(f"{what} file {path} holds no records")
    if need_solution:
        for number, problem in enumerate(problems, 1):
            if not problem.solution:
                raise ValueError(f"{path}: record {number} ({problem.id}) has no solution text")
    return problems


def run_sft(config: SFTConfig) -> dict[str, Any]:
    """Trains, evaluates and exports the policy of `config`; returns a summary dict."""
    out_dir = pathlib.Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, out_dir / "config.yaml")
    if config.data.format != "synthetic":
        raise ValueError(
            f"data.format={config.data.format!r}: rlr sft trains on rlr Problem JSONL "
            "(format: synthetic), as written by `rlr make-data`"
        )
    tokenizer = models_io.load_tokenizer(config.tokenizer)
    train = read_problems_for(config.data.train, what="data.train", need_solution=True)
    test = []
    if config.data.test and config.eval.num_problems:
        test = read_problems_for(config.data.test, what="data.test", need_solution=False)
        test = test[: config.eval.num_problems]
    spec = config.train
    style = config.data.prompt_style
    rows = batching.encode_rows(
        tokenizer,
        [build_prompt(p.question, style=style, tokenizer=tokenizer) for p in train],
        [p.solution for p in train],
        prompt_len=spec.prompt_len,
        response_len=spec.response_len,
        max_steps=spec.max_steps,
    )
    _report_truncation(rows, config.data.train)
    model, params = models_io.load_or_init_policy(config.model, tokenizer, seed=config.seed)
    print(f"policy: {models_io.count_params(params) / 1e6:.2f}M parameters")
    tx = make_optimizer(
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        warmup_steps=spec.warmup_steps,
        total_steps=spec.steps,
        max_grad_norm=spec.max_grad_norm,
    )
    evaluate = None
    if test:
        sampler = Sampler(
            model,
            max_new_tokens=config.eval.max_new_tokens,
            eos_id=tokenizer.eos_token_id,
            pad_id=batching.pad_id_of(tokenizer),
            temperature=0.0,
        )
        evaluate = lambda p: evaluate_policy(  # noqa: E731
            sampler,
            p,
            tokenizer,
            test,
            prompt_len=spec.prompt_len,
            batch_size=min(config.eval.batch_size, len(test)),
            prompt_style=style,
        )
    result = fit(
        init_train_state(params, tx),
        make_sft_loss_fn(model, response_len=spec.response_len),
        tx,
        make_batch=lambda idx: {k: rows[k][idx] for k in TRAIN_KEYS},
        dataset_size=len(train),
        spec=spec,
        seed=config.seed,
        out_dir=out_dir,
        evaluate=evaluate,
        eval_every=config.eval.every,
        description="sft",
        show=("loss", "token_accuracy", "eval/accuracy"),
    )
    summary: dict[str, Any] = {"step": result.iteration, "interrupted": result.interrupted}
    if result.interrupted:
        return summary
    if evaluate is not None and "eval/accuracy" not in result.metrics:
        result.metrics.update(_prefixed(evaluate(result.state.params)))  # resumed at the end
    export = models_io.export_model(
        model, result.state.params, out_dir / "model", tokenizer_dir=config.tokenizer
    )
    summary.update(
        {
            "model_dir": str(export),
            "wall_s": round(result.wall_s, 1),
            "train_loss": result.metrics.get("loss"),
            **{k: v for k, v in result.metrics.items() if k.startswith("eval/")},
        }
    )
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _report_truncation(rows: dict[str, np.ndarray], source: str) -> None:
    for part in ("prompt", "response"):
        cut = int(np.sum(rows[f"{part}_truncated"]))
        if cut:
            print(
                f"warning: {cut} of {len(rows[f'{part}_truncated'])} {part}s in {source} were "
                f"truncated; raise train.{part}_len to keep them whole"
            )


def add_parser(subparsers) -> None:
    """Register `rlr sft`."""
    parser = subparsers.add_parser("sft", help="supervised fine-tuning of the policy on solutions")
    parser.add_argument("--config", required=True, help="YAML config (launch/configs/sft_cpu.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=50")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`rlr sft`: train, evaluate, export; exit 0 also when stopped by SIGTERM (resumable)."""
    summary = run_sft(load_config(SFTConfig, args.config, args.overrides))
    print(json.dumps(summary, indent=2))
    return 0
