"""Policy SFT on solution text: `rlr sft --config FILE|NAME [key=value ...]`.

The loss is the mean token NLL over response tokens only (prompt tokens carry no loss), on
PPO-layout rows (rlr.training.batching), so the policy learns exactly the text layout that PPO
will sample and score. Training runs in the shared supervised loop (rlr.training.fit: exact
resume, metrics, SIGTERM); held-out problems are evaluated greedily with the same evaluation
as PPO (rlr.training.evaluation), and the policy is exported as an HF directory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from rlr import sharding
from rlr.config_loading import dump_config
from rlr.data.prompts import build_prompt
from rlr.readouts import policy_readout
from rlr.training import batching, distributed, loading
from rlr.training.checkpoint import run_directory
from rlr.training.evaluation import evaluate_problems
from rlr.training.fit import (
    eval_prefixed,
    export_and_summarize,
    fit,
    supervised_mesh,
    supervised_optimizer,
)
from rlr.training.generation import SamplingSettings, sampler_for
from rlr.training.metrics import eval_curve, read_metrics
from rlr.training.schemas import SFTConfig
from rlr.training.train_state import init_train_state

TRAIN_KEYS = ("input_ids", "attention_mask", "response_mask")


def sft_loss(
    logprobs: chex.Array,  # [B, T] log p(response token)
    predicted: chex.Array,  # [B, T] the argmax token at each response position
    tokens: chex.Array,  # [B, T] response tokens
    response_mask: chex.Array,  # [B, T] 1 on response tokens (EOS included)
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean token NLL over response tokens: -sum(mask * log p(token)) / sum(mask).

    Also returns the token accuracy of the argmax prediction over the same tokens.
    """
    chex.assert_rank([logprobs, predicted, tokens, response_mask], 2)
    chex.assert_equal_shape([logprobs, predicted, tokens, response_mask])
    mask = response_mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    nll = -jnp.sum(logprobs * mask) / count
    hits = (predicted == tokens).astype(jnp.float32)
    return nll, {"nll": nll, "token_accuracy": jnp.sum(hits * mask) / count}


def make_sft_loss_fn(
    model: nn.Module, *, response_len: int
) -> Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]:
    """`loss_fn(params, batch)` for make_train_step over a batch of encode_rows arrays
    (input_ids [B, S], attention_mask [B, S], response_mask [B, T] with T = response_len;
    with train.pack also "packing", the rows packed, which the policy then reads)."""

    def loss_fn(params, batch):
        ids, attn = batch["input_ids"], batch["attention_mask"]
        packing = batch.get("packing")
        readout = policy_readout(model, params, ids, attn, T=response_len, packing=packing)
        tokens = ids[:, ids.shape[1] - response_len :]
        return sft_loss(readout.logprobs, readout.argmax, tokens, batch["response_mask"])

    return loss_fn


def make_evaluator(
    model: nn.Module, tokenizer: Any, config: SFTConfig, problems: list[Any]
) -> Callable[[Any], dict[str, float]]:
    """params -> greedy held-out metrics (accuracy, response length, steps, fillers, ...)."""
    from rlr.grading import Grader

    greedy = SamplingSettings(config.eval.max_new_tokens, temperature=0.0)
    sampler = sampler_for(model, tokenizer, greedy)

    def evaluate(params: Any) -> dict[str, float]:
        with Grader(num_workers=0) as grader:
            result = evaluate_problems(
                sampler,
                params,
                tokenizer,
                problems,
                prompt_style=config.data.prompt_style,
                grader=grader,
                key=jax.random.key(0),
                max_prompt_tokens=config.train.prompt_len,
                batch_size=min(config.eval.batch_size or 100, len(problems)),
                keep_samples=0,
            )
        return {k.split("/", 1)[1]: v for k, v in result.metrics("eval").items()}

    return evaluate


def run_sft(config: SFTConfig) -> dict[str, Any]:
    """Trains, evaluates and exports the policy of `config`; returns a summary dict."""
    data = config.data
    tokenizer = loading.load_tokenizer(config.tokenizer)
    train = loading.load_problems(data.train, data.format, what="data.train", need_solution=True)
    test = []
    if data.test:
        test = loading.load_problems(
            data.test, data.format, what="data.test", limit=config.eval.max_examples
        )
    mesh = supervised_mesh(config.train.batch_size)
    out_dir = run_directory(config.out_dir)
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_config(config, out_dir / "config.yaml")
    spec = config.train
    style = config.data.prompt_style
    rows = batching.encode_rows(
        tokenizer,
        [build_prompt(p.question, style=style, tokenizer=tokenizer) for p in train],
        [p.solution for p in train],
        prompt_len=spec.prompt_len,
        response_len=spec.response_len,
        max_steps=1,  # SFT reads no step ends
    )
    batching.warn_truncated(rows, config.data.train, prefix="train.")
    model, params = loading.load_or_init_policy(
        config.model, tokenizer, seed=config.seed, what="model"
    )
    print(f"policy: {loading.count_params(params) / 1e6:.2f}M parameters")
    tx = supervised_optimizer(spec)
    evaluate = make_evaluator(model, tokenizer, config, test) if test else None
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
        mesh=mesh,
        param_shardings=sharding.module_param_shardings(model, mesh),
    )
    if not result.interrupted and evaluate is not None and "eval/accuracy" not in result.metrics:
        result.metrics.update(eval_prefixed(evaluate(result.state.params)))  # resumed at the end
    evaluated = {k: v for k, v in result.metrics.items() if k.startswith("eval/")}
    if evaluate is not None and distributed.is_main():
        curve = eval_curve(read_metrics(out_dir))
        evaluated["eval_curve"] = curve
        print(
            "held-out greedy accuracy by step: "
            + ", ".join(f"{step}: {100 * acc:.1f}%" for step, acc in curve)
        )
    return export_and_summarize(
        result, model, out_dir, tokenizer_dir=config.tokenizer, extra=evaluated
    )
