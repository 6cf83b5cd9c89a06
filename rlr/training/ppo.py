"""PPO with dense step rewards: `rlr ppo --config FILE [key=value ...]`.

One iteration: sample G responses for each of the iteration's prompts (rlr.sampling) ->
grade final answers (rlr.grading pool) -> find step ends from the token ids (rlr.data.steps)
-> score with the frozen PRM / ORM / reference and the critic -> token rewards (PAPER.md
section 3 order) -> GAE -> whitening -> epochs x minibatches of PPO updates of policy and
critic (one jitted, donated step on the mesh of rlr.sharding).

Everything random derives from (seed, iteration), and the data order from (seed, epoch), so a
checkpoint holds the TrainState and the iteration number and a resumed run continues bitwise
as if never stopped. SIGTERM finishes the current iteration, saves and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlr import sharding
from rlr.config import dump_config, load_config
from rlr.data.prompts import build_prompt
from rlr.data.readers import READERS, read_problems
from rlr.data.steps import step_ends_from_ids
from rlr.models import (
    Qwen2ForTokenClassification,
    init_params,
    load_pretrained,
    save_pretrained,
)
from rlr.sampling import Sampler
from rlr.training import models_io, ppo_core
from rlr.training.batching import encode_prompts
from rlr.training.checkpoint import Checkpointer
from rlr.training.configs import ModelSpec, PPOConfig
from rlr.training.evaluation import (
    EvalResult,
    decode_responses,
    ended_without_eos,
    evaluate_policy,
    solution_stats,
)
from rlr.training.metrics import MetricsWriter
from rlr.training.preemption import PreemptionGuard
from rlr.training.step import TrainState, init_train_state, train_state_shardings

DTYPES = models_io.DTYPES


def load_problems(path: str, fmt: str) -> list[Any]:
    """Problems with gold answers from a JSONL file in one of rlr.data's formats."""
    reader = read_problems if fmt == "synthetic" else READERS[fmt]
    problems = [p for p in reader(path).records if p.answer is not None]
    if not problems:
        raise ValueError(f"{path}: no problems with a gold answer (format {fmt})")
    return problems


def load_scorer(spec: ModelSpec) -> tuple[Any, Any]:
    """A PRM / ORM from an HF directory as a token-classification module over its
    {"model", "score"} params (an ORM is read at the last token by rlr.training.ppo_core)."""
    if not spec.path:
        raise ValueError(
            "a reward model needs `path`: an HF directory written by rlr train-prm/orm"
        )
    model, params = load_pretrained(
        spec.path, dtype=DTYPES[spec.dtype], param_dtype=DTYPES[spec.param_dtype]
    )
    if "score" not in params:
        raise ValueError(
            f"{spec.path}: not a reward model (no 'score' head); export it as "
            "Qwen2ForTokenClassification or Qwen2ForSequenceClassification"
        )
    module = Qwen2ForTokenClassification(
        model.config,
        num_labels=1,
        dtype=DTYPES[spec.dtype],
        param_dtype=DTYPES[spec.param_dtype],
        remat=spec.remat,
    )
    return module, params


def _copy(tree: Any) -> Any:
    # Frozen copies must never share buffers with donated training state.
    return jax.tree.map(jnp.array, tree)


class PPOTrainer:
    """Builds everything a PPO run needs from a PPOConfig, then `run()`s it."""

    def __init__(self, config: PPOConfig):
        self.config = config
        sharding.maybe_initialize_distributed()
        self.out_dir = pathlib.Path(config.out_dir)
        self.mesh = sharding.make_mesh(
            data=config.mesh.data, fsdp=config.mesh.fsdp, tensor=config.mesh.tensor
        )
        tokenizer_path = config.tokenizer or config.policy.path
        if not tokenizer_path:
            raise ValueError("set `tokenizer` (an HF tokenizer directory) or `policy.path`")
        self.tokenizer = models_io.load_tokenizer(tokenizer_path)
        policy, policy_params = models_io.load_or_init_policy(
            config.policy, self.tokenizer, seed=config.seed
        )
        frozen: dict[str, Any] = {"reference": _copy(policy_params)}
        prm = orm = None
        # A configured PRM / ORM always scores the rollouts (its return is a hacking diagnostic
        # for every variant); reward.use_prm / use_orm decide whether it enters the reward.
        if config.prm is not None:
            prm, frozen["prm"] = load_scorer(config.prm)
        if config.orm is not None:
            orm, frozen["orm"] = load_scorer(config.orm)
        if config.ppo.critic_init == "policy":
            critic = Qwen2ForTokenClassification(
                policy.config, num_labels=1, remat=config.policy.remat
            )
            # The policy's trunk and a zero score head (V = 0 everywhere at the start); the
            # head's shape comes from eval_shape, so no throw-away critic is initialised.
            abstract = jax.eval_shape(lambda: init_params(critic, jax.random.key(0)))
            critic_params = {
                "model": _copy(policy_params["model"]),
                "score": jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract["score"]),
            }
        else:
            critic = prm if config.ppo.critic_init == "prm" else orm
            critic_params = _copy(frozen[config.ppo.critic_init])
        self.models = ppo_core.PPOModels(policy=policy, critic=critic, prm=prm, orm=orm)
        self._build_steps({"policy": policy_params, "critic": critic_params}, frozen)
        self.train_problems = load_problems(config.data.train, config.data.format)
        self.test_problems = (
            load_problems(config.data.test, config.data.format) if config.data.test else []
        )
        if config.data.max_test_problems is not None:
            self.test_problems = self.test_problems[: config.data.max_test_problems]
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        roll = config.rollout
        self.sampler = Sampler(
            policy,
            max_new_tokens=roll.max_new_tokens,
            eos_id=eos,
            pad_id=pad,
            temperature=roll.temperature,
            top_k=roll.top_k,
            top_p=roll.top_p,
        )
        self._eval_samplers: dict[float, Sampler] = {}

    def _build_steps(self, trainable: dict[str, Any], frozen: dict[str, Any]) -> None:
        cfg, mesh = self.config, self.mesh
        spec = cfg.ppo
        self.tx = ppo_core.make_ppo_optimizer(
            policy_lr=spec.policy_lr,
            critic_lr=spec.critic_lr,
            weight_decay=spec.weight_decay,
            max_grad_norm=spec.max_grad_norm,
        )
        param_shard = self._shardings(trainable)
        frozen_shard = self._shardings(frozen)
        self.state_shardings = train_state_shardings(self.tx, trainable, param_shard, mesh)
        state = init_train_state(trainable, self.tx)
        self.state = jax.device_put(state, self.state_shardings)
        self.frozen = jax.device_put(frozen, frozen_shard)
        settings = ppo_core.RewardSettings(
            use_prm=cfg.reward.use_prm,
            use_orm=cfg.reward.use_orm,
            method=cfg.reward.method,
            alpha=cfg.reward.alpha,
            eta=cfg.reward.eta,
            orm_weight=cfg.reward.orm_weight,
            kl_coef=cfg.reward.kl_coef,
            kl_estimator=cfg.reward.kl_estimator,
            gamma=spec.gamma,
            lam=spec.lam,
            whiten_advantages=spec.whiten_advantages,
        )
        models = self.models

        self._batch_sharding = lambda x: sharding.batch_sharding(mesh, x.ndim)
        self._score = jax.jit(
            functools.partial(ppo_core.score_rollout, models),
            in_shardings=(param_shard, frozen_shard, None),
        )
        self._experience = jax.jit(functools.partial(ppo_core.build_experience, settings=settings))
        update = functools.partial(
            ppo_core.ppo_update,
            models,
            self.tx,
            clip_eps=spec.clip_eps,
            value_clip_eps=spec.value_clip_eps,
        )
        self._update = jax.jit(
            update,
            in_shardings=(self.state_shardings, None),
            out_shardings=(self.state_shardings, None),
            donate_argnums=0,
        )

    def _shardings(self, networks: dict[str, Any]) -> Any:
        """NamedShardings for a dict of networks, from each module's logical axis names."""
        modules = {
            "policy": self.models.policy,
            "reference": self.models.policy,
            "critic": self.models.critic,
            "prm": self.models.prm,
            "orm": self.models.orm,
        }
        ids = jnp.zeros((1, 4), jnp.int32)
        abstract = {
            name: jax.eval_shape(lambda m=modules[name]: m.init(jax.random.key(0), ids)["params"])
            for name in networks
        }
        return sharding.param_shardings(abstract, self.mesh)

    # ----------------------------------------------------------------- data

    def prompts_for(self, iteration: int) -> list[Any]:
        """The iteration's problems: a per-epoch permutation of the training set (by seed)."""
        n = len(self.train_problems)
        per = self.config.rollout.prompts_per_iteration
        chosen = []
        for g in range(iteration * per, (iteration + 1) * per):
            epoch, index = divmod(g, n)
            order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
            chosen.append(self.train_problems[order[index]])
        return chosen

    def prompt_text(self, problem: Any) -> str:
        return build_prompt(
            problem.question, style=self.config.data.prompt_style, tokenizer=self.tokenizer
        )

    # ------------------------------------------------------------- one iteration

    def rollout(self, iteration: int, grader: Any) -> tuple[ppo_core.Rollout, dict[str, Any]]:
        """Samples, grades and segments one iteration's batch."""
        cfg = self.config
        problems = self.prompts_for(iteration)
        G = cfg.rollout.samples_per_prompt
        prompts = [self.prompt_text(p) for p in problems for _ in range(G)]
        golds = [p.answer for p in problems for _ in range(G)]
        ids, mask, _ = encode_prompts(
            self.tokenizer, prompts, prompt_len=cfg.rollout.max_prompt_tokens
        )
        key = jax.random.fold_in(jax.random.key(cfg.seed), iteration)
        t0 = time.perf_counter()
        tokens, response_mask = [], []
        for start, stop in self._chunks():
            out = self.sampler(
                self.state.params["policy"],
                ids[start:stop],
                mask[start:stop],
                jax.random.fold_in(key, start),
            )
            tokens.append(np.asarray(out.tokens))
            response_mask.append(np.asarray(out.mask))
        tokens, response_mask = np.concatenate(tokens), np.concatenate(response_mask)
        t1 = time.perf_counter()
        step_end, step_mask, _ = step_ends_from_ids(
            tokens,
            response_mask,
            self.tokenizer,
            max_steps=cfg.reward.max_steps,
            separators=cfg.reward.separators,
        )
        texts = decode_responses(self.tokenizer, tokens, response_mask)
        success = np.asarray(grader.grade_responses(texts, golds), np.float32)
        t2 = time.perf_counter()
        rollout = ppo_core.Rollout(
            input_ids=np.concatenate([ids, tokens], axis=1).astype(np.int32),
            attention_mask=np.concatenate([mask, response_mask], axis=1).astype(np.int32),
            response_mask=response_mask.astype(np.float32),
            success=success,
            step_end=step_end.astype(np.int32),
            step_mask=step_mask.astype(np.float32),
        )
        rollout = jax.tree.map(lambda x: jax.device_put(x, self._batch_sharding(x)), rollout)
        lengths = response_mask.sum(axis=1)
        info = {
            "success_rate": float(success.mean()),
            "response_length": float(lengths.mean()),
            "truncated_fraction": float(
                ended_without_eos(tokens, response_mask, self.tokenizer.eos_token_id).mean()
            ),
            **solution_stats(texts, separators=cfg.reward.separators),
            "time/rollout": t1 - t0,
            "time/grading": t2 - t1,
            "tokens_per_second/rollout": float(lengths.sum()) / max(t1 - t0, 1e-9),
            "texts": texts,
        }
        return rollout, info

    def _chunks(self) -> list[tuple[int, int]]:
        B = self.config.rollout.batch_size
        size = self.config.rollout.chunk_rows or B
        return [(start, start + size) for start in range(0, B, size)]

    def iteration(self, iteration: int, grader: Any) -> dict[str, Any]:
        """One full PPO iteration; returns its metrics (and a few sample texts)."""
        cfg = self.config
        rollout, info = self.rollout(iteration, grader)
        t0 = time.perf_counter()
        scored = [
            self._score(
                self.state.params, self.frozen, ppo_core.take_rows(rollout, np.arange(a, b))
            )
            for a, b in self._chunks()
        ]
        scored = jax.tree.map(lambda *parts: jnp.concatenate(parts), *scored)
        experience, metrics = self._experience(rollout, scored)
        jax.block_until_ready(experience)
        t1 = time.perf_counter()
        B = cfg.rollout.batch_size
        size = B // cfg.ppo.minibatches
        key = jax.random.fold_in(jax.random.key(cfg.seed + 1), iteration)
        update_metrics = []
        for epoch in range(cfg.ppo.epochs):
            order = jax.random.permutation(jax.random.fold_in(key, epoch), B)
            for m in range(cfg.ppo.minibatches):
                batch = ppo_core.take_rows(experience, order[m * size : (m + 1) * size])
                self.state, step_metrics = self._update(self.state, batch)
                update_metrics.append(step_metrics)
        update_metrics = jax.device_get(update_metrics)
        t2 = time.perf_counter()
        averaged = {k: float(np.mean([m[k] for m in update_metrics])) for k in update_metrics[0]}
        texts = info.pop("texts")
        out = {
            **info,
            **{k: float(v) for k, v in jax.device_get(metrics).items()},
            **averaged,
            "update_skipped_total": float(self.state.skipped),
            "time/scoring": t1 - t0,
            "time/update": t2 - t1,
        }
        out["time/iteration"] = out["time/rollout"] + out["time/grading"] + t2 - t0
        out["_sample"] = texts[0]
        return out

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, grader: Any, *, temperature: float, key_offset: int = 0) -> EvalResult:
        """Accuracy and solution statistics on the held-out problems."""
        if not self.test_problems:
            raise ValueError("evaluation needs data.test")
        cfg = self.config
        if temperature not in self._eval_samplers:
            eos = self.tokenizer.eos_token_id
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
            self._eval_samplers[temperature] = Sampler(
                self.models.policy,
                max_new_tokens=cfg.rollout.max_new_tokens,
                eos_id=eos,
                pad_id=pad,
                temperature=temperature,
            )
        return evaluate_policy(
            self._eval_samplers[temperature],
            self.state.params["policy"],
            self.tokenizer,
            [self.prompt_text(p) for p in self.test_problems],
            [p.answer for p in self.test_problems],
            grader=grader,
            key=jax.random.fold_in(jax.random.key(cfg.seed + 2), key_offset),
            max_prompt_tokens=cfg.rollout.max_prompt_tokens,
            batch_size=cfg.rollout.batch_size,
            separators=cfg.reward.separators,
        )

    # ---------------------------------------------------------------------- run

    def run(self, *, stop_after: int | None = None) -> dict[str, Any]:
        """Trains until `iterations` (or `stop_after` more iterations, or SIGTERM).

        Resumes from the latest checkpoint in out_dir/checkpoints. Returns a summary dict.
        """
        from rlr.grading import Grader

        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, self.out_dir / "config.yaml")
        ckpt = Checkpointer(self.out_dir / "checkpoints", keep=cfg.keep_checkpoints)
        start = 0
        if ckpt.latest_step() is not None:
            restored, meta = ckpt.restore(self._abstract_state())
            self.state = restored
            start = int(meta["iteration"])
        end = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
        samples_path = self.out_dir / "samples.jsonl"
        summary: dict[str, Any] = {"start_iteration": start, "preempted": False}
        with (
            Grader(num_workers=cfg.grading.num_workers, timeout_s=cfg.grading.timeout_s) as grader,
            MetricsWriter(
                self.out_dir,
                total_steps=cfg.iterations,
                initial_step=start,
                show=("success_rate", "steps_per_solution", "reward/prm"),
                description=cfg.name,
            ) as writer,
            PreemptionGuard() as guard,
        ):
            it = start
            for it in range(start, end):
                metrics = self.iteration(it, grader)
                sample = metrics.pop("_sample")
                if cfg.eval_every and (it + 1) % cfg.eval_every == 0 and self.test_problems:
                    metrics.update(self.evaluate(grader, temperature=0.0).metrics("eval_greedy"))
                writer.write(it + 1, metrics)
                with open(samples_path, "a") as f:
                    f.write(json.dumps({"iteration": it + 1, "response": sample}) + "\n")
                done = it + 1
                if guard.requested or done % cfg.checkpoint_every == 0 or done == end:
                    position = done * cfg.rollout.prompts_per_iteration
                    ckpt.save(done, self.state, {"iteration": done, "data_position": position})
                if guard.requested:
                    summary["preempted"] = True
                    break
            ckpt.close()
        summary["end_iteration"] = it + 1 if end > start else start
        summary["updates_skipped"] = int(self.state.skipped)
        return summary

    def _abstract_state(self) -> TrainState:
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            self.state,
            self.state_shardings,
        )

    def export_policy(self, directory: str | pathlib.Path) -> pathlib.Path:
        """Writes the trained policy (and its tokenizer) as an HF directory."""
        directory = pathlib.Path(directory)
        params = jax.device_get(self.state.params["policy"])
        save_pretrained(self.models.policy, params, directory)
        self.tokenizer.save_pretrained(directory)
        return directory


def _is_box(x: Any) -> bool:
    import flax.linen as nn

    return isinstance(x, nn.Partitioned | nn.LogicallyPartitioned)


# -------------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> None:
    """Registers `rlr ppo`."""
    parser = subparsers.add_parser(
        "ppo",
        help="PPO with PRM step rewards (raw / clip / delta / clip_delta)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--config", required=True, help="YAML file (launch/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. reward.alpha=0.5")
    parser.add_argument("--export", default=None, help="write the final policy here (HF dir)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(PPOConfig, args.config, args.overrides)
    trainer = PPOTrainer(config)
    summary = trainer.run()
    if args.export and not summary["preempted"]:
        trainer.export_policy(args.export)
    print(json.dumps(summary))
    return 0
