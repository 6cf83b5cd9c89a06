"""PPO with dense step rewards: `rlr ppo --config FILE|NAME [key=value ...]`.

One iteration: sample G responses for each of the iteration's prompts (rlr.training.generation)
-> grade final answers (rlr.grading pool) -> find step ends from the token ids
(rlr.data.segmentation) -> score with the frozen PRM / ORM / reference and the critic -> token
rewards (the order of docs/method.md) -> GAE -> whitening -> epochs x minibatches of PPO
updates of policy and critic (one jitted, donated step on the mesh; rlr.training.ppo_build
builds all of it).

Everything random derives from (seed, iteration), and the data order from (seed, epoch), so a
checkpoint holds the TrainState and the iteration number and a resumed run continues bitwise
as if never stopped. SIGTERM finishes the current iteration, saves and exits 0.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlr import sharding
from rlr.config_loading import dump_config, to_dict
from rlr.data.prompts import build_prompt
from rlr.packing import PackedRows, packing_ratio
from rlr.training import distributed, loading, ppo_core
from rlr.training.batching import EpochIterator, encode_prompts, prompt_width
from rlr.training.checkpoint import Checkpointer, run_directory
from rlr.training.evaluation import (
    EvalResult,
    evaluate_ppo_policy,
    solution_step_counts,
    stats_from_counts,
)
from rlr.training.generation import SampledBatch, rollout_settings, sampler_for
from rlr.training.metrics import MetricsWriter, append_line, drop_rows_after
from rlr.training.pipeline import judge
from rlr.training.ppo_build import build_ppo, checkpointed_networks
from rlr.training.preemption import PreemptionGuard
from rlr.training.schemas import PPOConfig
from rlr.training.step_scoring import score_policy_steps


class PPOTrainer:
    """Builds everything a PPO run needs from a PPOConfig, then `run()`s it."""

    def __init__(self, config: PPOConfig):
        self.config = config
        sharding.maybe_initialize_distributed()
        self.out_dir = run_directory(config.out_dir)
        self.mesh = sharding.make_mesh(
            data=config.mesh.data, fsdp=config.mesh.fsdp, tensor=config.mesh.tensor
        )
        if config.rollout.decode_slots and jax.process_count() > 1:
            raise ValueError(
                "rollout.decode_slots (continuous batching) runs on one host; unset it for this "
                f"{jax.process_count()}-process run"
            )
        data = config.data  # read first: a bad data file fails before any network loads
        self.train_problems = loading.load_problems(data.train, data.format, what="data.train")
        self.test_problems = []
        if data.test:
            self.test_problems = loading.load_problems(
                data.test, data.format, what="data.test", limit=config.eval.max_examples
            )
        if not config.tokenizer_dir:
            raise ValueError("set `tokenizer` (an HF tokenizer directory) or `policy.path`")
        self.tokenizer = loading.load_tokenizer(config.tokenizer_dir)
        self.setup = build_ppo(config, mesh=self.mesh, tokenizer=self.tokenizer)
        self.models = self.setup.models
        self.state = self.setup.state
        self.frozen = self.setup.frozen
        self.value_stats = self.setup.value_stats  # ppo.value_norm's running statistics
        self.sampler = self.setup.sampler  # rollout_settings(config.rollout)
        self._eval_samplers: dict[float, Any] = {}
        self._warned_zero_prm = False  # the vanished-PRM-reward warning is printed once

    # ----------------------------------------------------------------- data

    def prompts_for(self, iteration: int) -> list[Any]:
        """The iteration's problems: the next prompts_per_iteration indices of an EpochIterator
        over the training set (a permutation per epoch, drawn from (seed, epoch))."""
        n = len(self.train_problems)
        per = self.config.rollout.prompts_per_iteration
        epoch, index = divmod(iteration * per, n)
        order = EpochIterator(n, batch_size=per, seed=self.config.seed, epoch=epoch, index=index)
        return [self.train_problems[i] for i in next(order)]

    def prompt_text(self, problem: Any) -> str:
        """The policy's prompt for a problem (data.prompt_style)."""
        return build_prompt(
            problem.question, style=self.config.data.prompt_style, tokenizer=self.tokenizer
        )

    # ------------------------------------------------------------- one iteration

    def rollout(self, iteration: int, grader: Any) -> tuple[ppo_core.Rollout, dict[str, Any]]:
        """Samples, grades and segments one iteration's batch.

        The batch is sampled in chunks of C rows (fold_in(key, c) for chunk c); of each chunk
        this process encodes, grades and scores only its block of rows
        (rlr.training.distributed), and the global [B, ...] arrays are assembled on the mesh
        in chunk order, so the rollout does not depend on the number of processes.
        With rollout.dynamic_sampling, further rounds follow (dynamic_rollout). Every chunk
        and round of the iteration shares one prompt width (prompt_width_for).
        """
        key = jax.random.fold_in(jax.random.key(self.config.seed), iteration)
        width = self.prompt_width_for(iteration)
        first = self._sample(self.prompts_for(iteration), key, grader, width)
        first[1]["prompt_width"] = float(width)
        if not self.config.rollout.dynamic_sampling:
            return first[:2]
        return self.dynamic_rollout(iteration, grader, first, width)

    def prompt_width_for(self, iteration: int) -> int:
        """P, the width an iteration's prompts are left-padded to: rollout.max_prompt_tokens,
        or with rollout.trim_prompts the power-of-two width of the longest prompt any of its
        sampling rounds can draw (rlr.training.batching.prompt_width). Every process reads
        the same problems, so every process finds the same P."""
        roll = self.config.rollout
        if not roll.trim_prompts:
            return roll.max_prompt_tokens
        problems = self.prompts_for(iteration)
        if roll.dynamic_sampling:
            for round_ in range(1, roll.max_sampling_rounds):
                problems += self.extra_prompts(iteration, round_)
        texts = [self.prompt_text(p) for p in problems]
        return prompt_width(self.tokenizer, texts, limit=roll.max_prompt_tokens)

    def extra_prompts(self, iteration: int, round_: int) -> list[Any]:
        """Dynamic sampling's prompts for round `round_` >= 1 of an iteration:
        prompts_per_iteration problems drawn without replacement (with, if the training set is
        smaller) by a generator seeded with (seed, iteration, round). The epoch order of
        prompts_for is untouched, and everything follows from (seed, iteration), so a resumed
        run draws the same prompts."""
        n = len(self.train_problems)
        per = self.config.rollout.prompts_per_iteration
        rng = np.random.default_rng([self.config.seed, iteration, round_])
        return [self.train_problems[i] for i in rng.choice(n, size=per, replace=per > n)]

    def dynamic_rollout(
        self, iteration: int, grader: Any, first: tuple[Any, ...], width: int
    ) -> tuple[ppo_core.Rollout, dict[str, Any]]:
        """DAPO's dynamic sampling (arXiv 2503.14476 section 3.2; verl's filter_groups).

        A group (the G samples of a prompt) is informative unless its successes are all equal
        (after ppo.truncation's zeroing): all right or all wrong, its outcome advantage is 0.
        Round r >= 1 samples extra_prompts(iteration, r) with key fold_in(key, 2**20 + r),
        until prompts_per_iteration informative groups are kept (in round order; the first
        that many) or rollout.max_sampling_rounds rounds are spent. Shapes stay static: the
        batch is always B rows. Where the cap leaves slots empty, they hold the earliest
        dropped groups with response_mask, step_mask, success (and truncated, sampled_logp)
        zeroed, so they carry no advantage and no loss; verl's recipe raises an error there
        instead. Rate metrics (success_rate, response_length, ...) are the first round's, as
        without dynamic sampling; time/* sums the rounds. Metrics dynamic_sampling/rounds,
        /groups_dropped (over every round sampled) and /groups_padded.
        """
        cfg, roll = self.config, self.config.rollout
        P, G, B = roll.prompts_per_iteration, roll.samples_per_prompt, roll.batch_size
        key = jax.random.fold_in(jax.random.key(cfg.seed), iteration)
        rounds = [first]
        kept: list[tuple[int, int]] = []
        dropped: list[tuple[int, int]] = []
        for r in range(roll.max_sampling_rounds):
            if r > 0:
                extra = self._sample(
                    self.extra_prompts(iteration, r),
                    jax.random.fold_in(key, 2**20 + r),
                    grader,
                    width,
                )
                rounds.append(extra)
            gathered = rounds[r][2]
            success = gathered["success"]
            if cfg.ppo.truncation != "grade":
                success = success * (1.0 - gathered["truncated"])
            groups = success.reshape(P, G)
            informative = groups.max(axis=1) != groups.min(axis=1)
            for g in range(P):
                (kept if informative[g] else dropped).append((r, g))
            if len(kept) >= P:
                break
        padded = max(P - len(kept), 0)
        chosen = kept[:P] + dropped[:padded]
        rows = np.array([r * B + g * G + j for r, g in chosen for j in range(G)], np.int32)
        weight = np.repeat(np.arange(P) < P - padded, G).astype(np.float32)

        def joined(tree_of_round: Any) -> Any:
            trees = [tree_of_round(x) for x in rounds]
            if trees[0] is None:
                return None
            tree = jax.tree.map(
                lambda *xs: distributed.concatenate_rows(self.mesh, list(xs)), *trees
            )
            return _select_rows(self.mesh, tree, rows, weight)

        rollout = joined(lambda x: x[0])
        info = dict(first[1])
        info["text_step_scores"] = joined(lambda x: x[1]["text_step_scores"])
        for name in ("time/rollout", "time/grading", "time/prm_text_scoring"):
            info[name] = float(sum(x[1][name] for x in rounds))
        info["dynamic_sampling/rounds"] = float(len(rounds))
        info["dynamic_sampling/groups_dropped"] = float(len(dropped))
        info["dynamic_sampling/groups_padded"] = float(padded)
        return rollout, info

    def _sample(
        self, problems: list[Any], key: jax.Array, grader: Any, width: int
    ) -> tuple[ppo_core.Rollout, dict[str, Any], dict[str, np.ndarray]]:
        """Samples G responses to each of `problems` (prompts left-padded to `width`), grades
        and segments them: (rollout on the mesh, info, the global per-row success /
        response_mask / truncated / steps)."""
        cfg = self.config
        G = cfg.rollout.samples_per_prompt
        rows = [p for p in problems for _ in range(G)]
        B, C = cfg.rollout.batch_size, cfg.rollout.chunk_rows or cfg.rollout.batch_size
        parts: list[dict[str, np.ndarray]] = []
        texts: list[str] = []
        seconds = {"rollout": 0.0, "grading": 0.0, "prm_text_scoring": 0.0}
        for chunk, first in enumerate(range(0, B, C)):
            part, chunk_texts, chunk_seconds = self._sample_chunk(
                rows[first : first + C], jax.random.fold_in(key, chunk), grader, width
            )
            parts.append(part)
            texts += chunk_texts
            for name, value in chunk_seconds.items():
                seconds[name] += value
        return self._assemble(parts, texts, seconds)

    def _sample_chunk(
        self, chunk: list[Any], key: jax.Array, grader: Any, width: int
    ) -> tuple[dict[str, np.ndarray], list[str], dict[str, float]]:
        """One chunk of C rows through the pipeline: sampled on the mesh, then this process's
        block judged (rlr.training.pipeline.judge: steps, texts, grades) and, with a PRM that
        reads text, scored. Returns the block's Rollout fields and statistics, its texts and
        the seconds of each stage."""
        cfg = self.config
        C = len(chunk)
        block = distributed.process_rows(
            self.mesh, C, what="a rollout chunk (rollout.chunk_rows, or the batch)"
        )
        mine = chunk[block]
        t0 = time.perf_counter()
        ids, mask, _ = encode_prompts(
            self.tokenizer,
            [self.prompt_text(p) for p in mine],
            prompt_len=width,
        )
        out = self.sampler(
            self.setup.policy_params(self.state.params, self.frozen),
            distributed.global_rows(self.mesh, ids, C),
            distributed.global_rows(self.mesh, mask, C),
            key,
        )
        tokens = distributed.local_rows(self.mesh, out.tokens).astype(np.int32)
        response_mask = distributed.local_rows(self.mesh, out.mask).astype(np.int32)
        t1 = time.perf_counter()
        judged = judge(
            self.tokenizer,
            SampledBatch(ids, mask, tokens, response_mask),
            [p.answer for p in mine],
            grader=grader,
            eos_ids=self.sampler.eos_ids,
            max_steps=cfg.reward.max_steps,
            separators=cfg.reward.separators,
        )
        t2 = time.perf_counter()
        input_ids, attention_mask = judged.rows()
        part = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "response_mask": response_mask.astype(np.float32),
            "success": judged.correct.astype(np.float32),
            "step_end": judged.step_end,
            "step_mask": judged.step_mask,
            "truncated": judged.truncated.astype(np.float32),
        }
        if cfg.ppo.old_logprobs == "rollout":
            sampled_logp = distributed.local_rows(self.mesh, out.logprobs)
            part["sampled_logp"] = sampled_logp.astype(np.float32) * response_mask
        if self.setup.step_scorer is not None:  # a PRM that reads the steps as text
            # Its program runs on the whole mesh: every process scores the whole chunk
            # (the same batches on every process) and keeps its block.
            scores = score_policy_steps(
                self.setup.step_scorer,
                [p.question for p in chunk],
                self.tokenizer,
                distributed.gather_rows(tokens),
                distributed.gather_rows(judged.step_end),
                distributed.gather_rows(judged.step_mask),
            )
            part["text_step_scores"] = scores[block]
        t3 = time.perf_counter()
        part["steps"] = solution_step_counts(judged.texts, separators=cfg.reward.separators)
        seconds = {"rollout": t1 - t0, "grading": t2 - t1, "prm_text_scoring": t3 - t2}
        return part, judged.texts, seconds

    def _assemble(
        self, parts: list[dict[str, np.ndarray]], texts: list[str], seconds: dict[str, float]
    ) -> tuple[ppo_core.Rollout, dict[str, Any], dict[str, np.ndarray]]:
        """The chunks' blocks joined into the global rollout on the mesh (chunk order), the
        rollout's info, and the per-row statistics gathered from every process."""
        C = self.config.rollout.chunk_rows or self.config.rollout.batch_size

        def on_mesh(name: str) -> jax.Array:
            chunks = [distributed.global_rows(self.mesh, part[name], C) for part in parts]
            return distributed.concatenate_rows(self.mesh, chunks)

        rollout = ppo_core.Rollout(
            *(on_mesh(name) if name in parts[0] else None for name in ppo_core.Rollout._fields)
        )
        text_step_scores = on_mesh("text_step_scores") if "text_step_scores" in parts[0] else None
        gathered = {
            name: distributed.gather_rows(np.concatenate([part[name] for part in parts]))
            for name in ("success", "response_mask", "truncated", "steps")
        }
        lengths = gathered["response_mask"].sum(axis=1)
        info = {
            "success_rate": float(gathered["success"].mean()),
            "response_length": float(lengths.mean()),
            "truncated_fraction": float(gathered["truncated"].mean()),
            **stats_from_counts(gathered["steps"]),
            **{f"time/{name}": value for name, value in seconds.items()},
            "tokens_per_second/rollout": float(lengths.sum()) / max(seconds["rollout"], 1e-9),
            "texts": texts,
            "text_step_scores": text_step_scores,
        }
        return rollout, info, gathered

    def _chunks(self) -> list[tuple[int, int]]:
        # Exact row slices of the device-resident, sharded rollout (chunk_rows divides B), so
        # scoring stays on the mesh; host-side batching (map_in_batches) would gather it.
        B = self.config.rollout.batch_size
        size = self.config.rollout.chunk_rows or B
        return [(start, start + size) for start in range(0, B, size)]

    def _packed(self, batch: ppo_core.Experience) -> PackedRows:
        """The minibatch's rows packed (ppo.pack), each process packing its own block
        (distributed.packed_rows), batch-sharded."""
        ids, mask = (
            distributed.local_rows(self.mesh, a) for a in (batch.input_ids, batch.attention_mask)
        )
        return distributed.packed_rows(self.mesh, ids, mask, batch.input_ids.shape[0])

    def iteration(self, iteration: int, grader: Any) -> dict[str, Any]:
        """One full PPO iteration; returns its metrics (and a few sample texts)."""
        cfg = self.config
        rollout, info = self.rollout(iteration, grader)
        text_scores = info.pop("text_step_scores")
        t0 = time.perf_counter()
        scored = [
            self.setup.score(
                self.state.params,
                self.frozen,
                ppo_core.take_rows(rollout, np.arange(a, b)),
                None if text_scores is None else text_scores[a:b],
            )
            for a, b in self._chunks()
        ]
        scored = jax.tree.map(lambda *parts: jnp.concatenate(parts), *scored)
        if self.value_stats is not None:
            experience, metrics, self.value_stats = self.setup.experience(
                rollout, scored, value_stats=self.value_stats
            )
        else:
            experience, metrics = self.setup.experience(rollout, scored)
        jax.block_until_ready(experience)
        t1 = time.perf_counter()
        B = cfg.rollout.batch_size
        size = B // cfg.ppo.minibatches
        key = jax.random.fold_in(jax.random.key(cfg.seed + 1), iteration)
        update_metrics, packing_ratios = [], []
        for epoch in range(cfg.ppo.epochs):
            order = jax.random.permutation(jax.random.fold_in(key, epoch), B)
            for m in range(cfg.ppo.minibatches):
                batch = ppo_core.take_rows(experience, order[m * size : (m + 1) * size])
                if cfg.ppo.pack:
                    batch = batch._replace(packing=self._packed(batch))
                    packing_ratios.append(packing_ratio(batch.attention_mask, batch.packing))
                self.state, step_metrics = self.setup.update(
                    self.state, batch, *self.setup.update_bases(self.frozen)
                )
                update_metrics.append(step_metrics)
        update_metrics = jax.device_get(update_metrics)
        t2 = time.perf_counter()
        averaged = {k: float(np.mean([m[k] for m in update_metrics])) for k in update_metrics[0]}
        if "policy/early_stopped" in averaged:  # ppo.early_stop_ratio: a count, not a fraction
            averaged["policy/early_stopped"] = float(
                sum(m["policy/early_stopped"] for m in update_metrics)
            )
        texts = info.pop("texts")
        out = {
            **info,
            **{k: float(v) for k, v in jax.device_get(metrics).items()},
            **averaged,
            "update_skipped_total": float(self.state.skipped),
            "time/scoring": t1 - t0,
            "time/update": t2 - t1,
            **({"update/packing_ratio": float(np.mean(packing_ratios))} if packing_ratios else {}),
        }
        out["time/iteration"] = (
            out["time/rollout"] + out["time/grading"] + out["time/prm_text_scoring"] + t2 - t0
        )
        # PRIME's implicit PRM starts as the reference (reward 0) and earns its reward by
        # training: a zero reward is its first iteration, not a misconfiguration
        if cfg.reward.use_prm and cfg.reward.method != "prime":
            vanished = out["reward/prm_nonzero_fraction"] == 0.0
            out["warning/prm_rewards_all_zero"] = float(vanished)
            if vanished and not self._warned_zero_prm:
                self._warned_zero_prm = True
                print(
                    f"warning: iteration {iteration}: every shaped PRM step reward is 0 "
                    f"(reward.method={cfg.reward.method}, eta={cfg.reward.eta}, "
                    f"alpha={cfg.reward.alpha}): the process reward adds nothing; clipping "
                    "probabilities at eta <= 0 does this (metric warning/prm_rewards_all_zero)",
                    flush=True,
                )
        out["_sample"] = texts[0]
        return out

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, grader: Any, *, temperature: float, key_offset: int = 0) -> EvalResult:
        """Accuracy and solution statistics on the held-out problems."""
        if not self.test_problems:
            raise ValueError("evaluation needs data.test")
        cfg = self.config
        if temperature not in self._eval_samplers:
            self._eval_samplers[temperature] = sampler_for(
                self.models.policy,
                self.tokenizer,
                rollout_settings(cfg.rollout, temperature=temperature),
            )
        return evaluate_ppo_policy(
            self._eval_samplers[temperature],
            self.setup.policy_params(self.state.params, self.frozen),
            self.tokenizer,
            self.test_problems,
            cfg,
            grader=grader,
            key_offset=key_offset,
        )

    # ---------------------------------------------------------------------- run

    def _check_resumable(self) -> None:
        """A run resumes only the checkpoints of its own kind: an out_dir whose saved config
        trains other networks (ppo's critic or none, PRIME's implicit PRM or none) or other
        parts of them (adapters or whole weights) is an error that names it, not an orbax
        tree mismatch."""
        import yaml

        saved_path = self.out_dir / "config.yaml"
        if not saved_path.exists():
            return
        saved = yaml.safe_load(saved_path.read_text()) or {}
        ours = to_dict(self.config)
        theirs, mine = checkpointed_networks(saved), checkpointed_networks(ours)
        if theirs != mine:
            raise ValueError(
                f"out_dir: {self.out_dir} holds checkpoints of an algorithm="
                f"{saved.get('algorithm')} run, which trains {' and '.join(theirs)}; this run "
                f"(algorithm={self.config.algorithm}) trains {' and '.join(mine)} and cannot "
                "resume them: choose another out_dir"
            )

    def run(self, *, stop_after: int | None = None) -> dict[str, Any]:
        """Trains until `iterations` (or `stop_after` more iterations, or SIGTERM).

        Resumes from the latest checkpoint in out_dir/checkpoints. Returns a summary dict.
        """
        from rlr.grading import Grader

        cfg = self.config
        main = distributed.is_main()  # process 0 writes the files; every process checkpoints
        ckpt = Checkpointer(self.out_dir / "checkpoints", keep=cfg.keep_checkpoints)
        if ckpt.latest_step() is not None:
            self._check_resumable()
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.out_dir / "config.yaml")
            reward = cfg.effective_reward
            kl_place = "k3 in the loss" if reward.kl_in_loss else f"{reward.kl_estimator} reward"
            print(
                f"{cfg.algorithm}: KL {reward.kl_coef} ({kl_place})"
                + (
                    f", process advantages normalised: {reward.process_normalization}"
                    if reward.use_prm and not cfg.uses_critic
                    else ""
                ),
                flush=True,
            )
        start = 0
        if ckpt.latest_step() is not None:
            # the live state's arrays give the restore its shapes and shardings
            restored, meta = ckpt.restore(self._checkpointed())
            self._restore(restored)
            start = int(meta["iteration"])
        end = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
        samples_path = self.out_dir / "samples.jsonl"
        if main:  # rows past the restored checkpoint were logged by an interrupted run
            drop_rows_after(samples_path, start, key="iteration")
        summary: dict[str, Any] = {"start_iteration": start, "preempted": False}
        with (
            Grader(num_workers=cfg.grading.num_workers, timeout_s=cfg.grading.timeout_s) as grader,
            MetricsWriter(
                self.out_dir,
                total_steps=cfg.iterations,
                initial_step=start,
                show=("success_rate", "steps_per_solution", "reward/prm"),
                description=cfg.name,
                enabled=main,
            ) as writer,
            PreemptionGuard() as guard,
        ):
            it = start
            for it in range(start, end):
                metrics = self.iteration(it, grader)
                sample = metrics.pop("_sample")
                if cfg.eval.every and (it + 1) % cfg.eval.every == 0 and self.test_problems:
                    metrics.update(self.evaluate(grader, temperature=0.0).metrics("eval_greedy"))
                writer.write(it + 1, metrics)
                if main:
                    append_line(samples_path, json.dumps({"iteration": it + 1, "response": sample}))
                done = it + 1
                # a signal on any process stops every process after the same iteration
                stop = distributed.any_process(guard.requested)
                if stop or done % cfg.checkpoint_every == 0 or done == end:
                    # the data order follows from the iteration alone (prompts_for)
                    ckpt.save(done, self._checkpointed(), {"iteration": done})
                if stop:
                    summary["preempted"] = True
                    break
            ckpt.close()
        summary["end_iteration"] = it + 1 if end > start else start
        summary["updates_skipped"] = int(self.state.skipped)
        if main:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _checkpointed(self) -> Any:
        """What a checkpoint holds: the TrainState, and with ppo.value_norm the running
        statistics next to it (a run without value normalisation keeps the bare state)."""
        if self.value_stats is None:
            return self.state
        return {"train_state": self.state, "value_norm": self.value_stats}

    def _restore(self, restored: Any) -> None:
        if self.value_stats is None:
            self.state = restored
        else:
            self.state = restored["train_state"]
            self.value_stats = restored["value_norm"]

    def export_policy(self, directory: str | pathlib.Path) -> pathlib.Path:
        """Writes the trained policy (and its tokenizer) as an HF directory; under LoRA the
        adapters merged into the weights, and the adapters alone as a PEFT directory in
        `adapter/` (base_model_name_or_path: policy.path)."""
        return loading.export_model(
            self.models.policy,
            self.setup.policy_params(self.state.params, self.frozen),
            directory,
            tokenizer_dir=self.config.tokenizer_dir,
            base_model=self.config.policy.path or None,
        )


def _select_rows(mesh: Any, tree: Any, rows: np.ndarray, weight: np.ndarray) -> Any:
    """Rows `rows` of every array in a batch pytree, on the mesh; a Rollout's per-row masks
    and rewards (response_mask, step_mask, success, truncated, sampled_logp) are multiplied by
    `weight` [len(rows)] (0: a row that carries no loss)."""
    masked = {"response_mask", "step_mask", "success", "truncated", "sampled_logp"}

    def select(tree: Any, rows: jax.Array, weight: jax.Array) -> Any:
        picked = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), tree)
        if not isinstance(picked, ppo_core.Rollout):
            return picked

        def scale(x: jax.Array | None) -> jax.Array | None:
            if x is None:
                return None
            return x * weight.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)

        return picked._replace(**{name: scale(getattr(picked, name)) for name in masked})

    shardings = jax.tree.map(lambda x: sharding.batch_sharding(mesh, x.ndim), tree)
    return jax.jit(select, out_shardings=shardings)(tree, rows, weight)
