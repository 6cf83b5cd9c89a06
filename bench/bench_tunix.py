"""rlr against google-tunix (JAX) in one process: sampling, a GRPO and a PPO iteration.

tunix gets its own virtualenv, rlr comes from this checkout on PYTHONPATH with the setup.cfg
requirements tunix lacks; both resolve to jax 0.10.2, flax 0.12.8, optax 0.2.8 (no conflict):

    python3 -m venv .venv-tunix
    .venv-tunix/bin/pip install google-tunix==0.1.7
    .venv-tunix/bin/pip install chex==0.1.92 math-verify==0.9.0 matplotlib==3.11.2 \\
        tensorboardX==2.6.5 array-record==0.8.6
    PYTHONPATH=. JAX_PLATFORMS=cpu .venv-tunix/bin/python bench/bench_tunix.py \\
        [--only sampler|grpo|ppo] [--batch-sizes 16,64] [--new-tokens 128] [--repeats 5] \\
        [--rlr ppo.pack=true ...]

Model: bench_train_step.py's random Qwen2 (d=256, 4 layers, ffn 512, tied, f32) initialised by
rlr, exported as an HF directory and read by tunix's safetensors loader.
sampler: rlr.sampling.Sampler vs tunix.generate.sampler.Sampler, vocabulary 8192: B prompts of
  `--prompt` (32) random ids (tunix gets text spelling the ids), `--new-tokens` (128) at
  temperature 1, no EOS; tokens/s of one call (tunix's includes its host-side tokenizing).
  First both decode 16 prompts greedily: the fraction of equal tokens checks the weight copy.
grpo / ppo: one iteration of rlr's PPOTrainer (ppo_cpu.yaml, algorithm=grpo / ppo) vs one global
  step of tunix's GRPOLearner / PPOLearner on tests/toy_assets.py's assets, this trunk with the
  toy tokenizer's ~420 ids (rlr grades decoded text and refuses ids its tokenizer lacks). Both:
  `--prompts` (16) problems in the same order, 4 rows each (tunix's PPO, which has no groups,
  gets each prompt 4 times) of at most `--rl-prompt` (160: none is cut) tokens, left-padded by
  rlr to the power of two above each iteration's longest (rollout.trim_prompts; the printed
  widths) and by tunix to `--tunix-prompt` (default 160, its max_prompt_length; 1: the next
  power of two above each of its rollouts' longest, rlr's rule), `--new-tokens` at
  temperature 1, stop at EOS, reward = the graded answer (rlr's Grader), KL coefficient 0.04,
  AdamW at rlr's rates clipped at norm 1, `--minibatches` (4) optimizer steps. GRPO: KL in the
  loss, no old-log-prob pass (tunix skips it at num_iterations=1; rlr ppo.old_logprobs=rollout).
  PPO: k1 KL in the reward, GAE (gamma = lambda = 1), value loss clipped at 0.2, old log-probs
  recomputed, critic = policy trunk + zeroed head (tunix ships none: built from its modules).
  tunix's train() runs all steps in one call: its `_run_global_step` is wrapped to run one rlr
  iteration after each tunix step; its rollout / scoring / update are clocked around
  rl_cluster.generate / get_ref_per_token_logps, get_old_per_token_logps, get_values (blocked
  until their arrays are ready: tunix dispatches them unread) / update_actor (+ critic); rlr's
  from PPOTrainer.iteration's own timers (scoring: the frozen networks' and critic's passes and
  the advantages); "other" is the rest (grading, the reward, advantages on tunix's side).
  rlr runs without a PRM or ORM (prm=null orm=null): tunix has none to score rollouts with.
  `--rlr KEY=VALUE ...` adds overrides to rlr's run (e.g. ppo.pack=true: the update on packed
  rows, which tunix does not have; the same update to float rounding).
  tunix samples each minibatch's prompts on their own (a global step is `--minibatches`
  rollouts of 1 / minibatches of the rows, then an update on each); rlr samples all rows once.
Not run on CPU: tunix's vLLM and SGLang-JAX rollout engines and Pallas splash attention
(use_flash_attention) need a TPU or GPU; its "vanilla" rollout and XLA attention run here.

Protocol (bench/protocol.py): load average before and after (a warning above 1.0); one warm-up
(compiling) call or iteration of each side, printed on its own, then `--repeats` (5) interleaved
rounds; medians, spread (min-max), ratios of medians tunix / rlr (above 1: rlr is faster).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import os
import pathlib
import sys
import tempfile
import types
from functools import partial

import jax
import numpy as np
from bench_train_step import SHAPE  # the model of the train-step bench
from protocol import interleaved, load_line, median, runs_line, spread, summary, timed

PAD = 0  # never drawn as a prompt id: tunix masks prompt positions equal to its pad id
NO_EOS = -1  # never sampled, so every row runs to the budget
GROUP = 4  # rows per prompt (GRPO's G)
BETA = 0.04  # KL coefficient of both algorithms (GRPO's in DeepSeekMath, tunix's default)
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # toy_assets


# The tokenizer interface tunix's sampler asks for, over text spelling ids: [17, 5] <-> "17 5".
ID_TOKENIZER = types.SimpleNamespace(
    encode=lambda text, **_: [int(t) for t in text.split()],
    decode=lambda ids, **_: " ".join(str(int(i)) for i in ids),
    bos_id=lambda: None,
    eos_id=lambda: NO_EOS,
    pad_id=lambda: PAD,
)


def load_tunix(model_dir: pathlib.Path, vocab_size: int):
    """tunix's Qwen2 (SHAPE with this vocabulary; rlr's default RoPE theta and RMSNorm eps) read
    from an HF directory by tunix's own safetensors loader."""
    from tunix.models.qwen2 import model as tunix_qwen2
    from tunix.models.qwen2 import params as tunix_params

    shape = [SHAPE[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size")]
    heads, kv, tied = (
        SHAPE[k] for k in ("num_attention_heads", "num_key_value_heads", "tie_word_embeddings")
    )
    # positional: layers, vocab, D, FFN, heads, head dim, kv heads, RoPE theta, eps, tied
    config = tunix_qwen2.ModelConfig(
        shape[0], vocab_size, *shape[1:], heads, shape[1] // heads, kv, 10000, 1e-6, tied
    )
    return tunix_params.create_model_from_safe_tensors(str(model_dir), config)


def make_sampler_models(root: pathlib.Path):
    """(rlr model, its params, tunix's copy): SHAPE initialised by rlr, exported as an HF
    directory and read back by tunix."""
    from rlr import models
    from rlr.training.loading import export_model

    model = models.DecoderForCausalLM(models.DecoderConfig(**SHAPE, pad_token_id=PAD))
    params = models.init_params(model, jax.random.key(0))
    export_model(model, params, root / "sampler", tokenizer_dir=None)
    return model, params, load_tunix(root / "sampler", SHAPE["vocab_size"])


def tunix_generate(sampler, ids: np.ndarray, args, *, greedy: bool, seed: int = 0) -> np.ndarray:
    """[B, new_tokens] ids tunix samples after `ids`, greedy or at temperature 1 (top_p 1 and
    no top-k: tunix's plain categorical draw over the full vocabulary)."""
    sampling = {} if greedy else dict(temperature=1.0, top_p=1.0, top_k=None, seed=seed)
    out = sampler(
        [ID_TOKENIZER.decode(row) for row in ids],
        max_generation_steps=args.new_tokens,
        max_prompt_length=args.prompt,
        eos_tokens=[NO_EOS],
        **sampling,
    )
    tokens = np.stack([np.asarray(t) for t in out.tokens])
    assert tokens.shape == (len(ids), args.new_tokens), tokens.shape
    return tokens


def bench_sampler(model, params, tunix_model, args) -> None:
    """Greedy agreement on 16 prompts, then tokens/s of both samplers at each batch size."""
    from tunix.generate import sampler as tunix_sampling

    from rlr import sampling

    config = tunix_model.config
    cache = tunix_sampling.CacheConfig(
        args.prompt + args.new_tokens, config.num_layers, config.num_kv_heads, config.head_dim
    )
    theirs = tunix_sampling.Sampler(tunix_model, ID_TOKENIZER, cache)
    settings = dict(max_new_tokens=args.new_tokens, eos_id=NO_EOS, pad_id=PAD)
    ids = random_prompts(16, args.prompt)
    greedy = sampling.Sampler(model, temperature=0.0, **settings)
    a = np.asarray(greedy(params, ids, np.ones_like(ids), jax.random.key(0)).tokens)
    b = tunix_generate(theirs, ids, args, greedy=True)
    same = np.all(a == b, axis=1)
    print(
        f"greedy check (16 prompts, {args.new_tokens} tokens): equal tokens "
        f"{np.mean(a == b):.4f}, identical rows {int(same.sum())}/16",
        flush=True,
    )
    ours = sampling.Sampler(model, temperature=1.0, **settings)
    for batch in args.batch_sizes:
        time_sampling(batch, ours, params, theirs, args)


def random_prompts(batch: int, length: int) -> np.ndarray:
    """[batch, length] int32 ids in 1..V-1 (never PAD), the same for every call of a batch."""
    rng = np.random.RandomState(batch)
    return rng.randint(1, SHAPE["vocab_size"], size=(batch, length)).astype(np.int32)


def time_sampling(batch: int, sampler, params, tunix_sampler, args) -> None:
    """Times both samplers (temperature 1) at one batch size; prints tokens/s and the ratio."""
    ids = random_prompts(batch, args.prompt)
    mask = np.ones_like(ids)
    tokens = batch * args.new_tokens
    seeds = itertools.count(1)  # a new draw each call

    def run_rlr():
        jax.block_until_ready(sampler(params, ids, mask, jax.random.key(next(seeds))))

    def run_tunix():
        tunix_generate(tunix_sampler, ids, args, greedy=False, seed=next(seeds))

    compile_rlr, compile_tunix = timed(run_rlr)[0], timed(run_tunix)[0]
    times = interleaved({"rlr": run_rlr, "tunix": run_tunix}, repeats=args.repeats, warmup=0)
    rlr_s, tunix_s = median(times["rlr"]), median(times["tunix"])
    print(
        f"B={batch:3d}: rlr {tokens / rlr_s:9.0f} tok/s, call {summary(times['rlr'], unit='s')}, "
        f"first {compile_rlr:.1f} s | tunix {tokens / tunix_s:9.0f} tok/s, call "
        f"{summary(times['tunix'], unit='s')}, first {compile_tunix:.1f} s | tunix / rlr "
        f"{tunix_s / rlr_s:.2f}x",
        flush=True,
    )


def rlr_trainer(root: pathlib.Path, args, algorithm: str):
    """rlr's PPOTrainer on ppo_cpu.yaml with the assets under root, outcome reward only."""
    from rlr.config_loading import load_config
    from rlr.training.ppo import PPOTrainer
    from rlr.training.schemas import PPOConfig

    paths = dict(tokenizer="tokenizer", **{f"{m}.path": m for m in ("policy", "prm", "orm")})
    overrides = [f"{key}={root / name}" for key, name in paths.items()] + [
        f"out_dir={root / 'run'}",
        f"data.train={root / 'data' / 'problems_train.jsonl'}",
        f"data.test={root / 'data' / 'problems_test.jsonl'}",
        f"algorithm={algorithm}",
        "reward.use_prm=false",  # the graded answer only, as tunix's reward function
        "prm=null",  # and no PRM / ORM scoring the rollout as a diagnostic: tunix has none
        "orm=null",
        f"reward.kl_coef={BETA}",
        f"rollout.prompts_per_iteration={args.prompts}",
        f"rollout.samples_per_prompt={GROUP}",
        f"rollout.max_prompt_tokens={args.rl_prompt}",
        f"rollout.max_new_tokens={args.new_tokens}",
        f"ppo.minibatches={args.minibatches}",
    ]
    if algorithm == "grpo":  # no critic; tunix (num_iterations=1) re-runs no policy pass
        overrides += ["ppo.critic_lr=null", "ppo.old_logprobs=rollout"]
    else:  # tunix's PPO recomputes the old log-probs and clips the value loss at 0.2
        overrides += ["ppo.old_logprobs=recompute", "ppo.value_clip_eps=0.2"]
    overrides += args.rlr  # after the bench's own, so they win
    config = load_config(PPOConfig, REPO / "rlr" / "configs" / "ppo_cpu.yaml", overrides)
    return PPOTrainer(config), config


def tunix_critic(model_dir: pathlib.Path, vocab_size: int):
    """A value network for tunix's PPO: the policy's trunk (read from model_dir) and a zeroed
    [D, 1] head over its final norm (rlr's critic_init=policy); tunix ships no value model."""
    from flax import nnx
    from tunix.models.qwen2 import model as tunix_qwen2

    class Critic(nnx.Module):
        def __init__(self, trunk):
            self.trunk, self.config = trunk, trunk.config
            width = trunk.config.embed_dim
            self.head = nnx.Linear(width, 1, kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0))

        def __call__(self, tokens, positions, cache=None, attention_mask=None, **_):
            x, config = self.trunk.embedder.encode(tokens), self.config
            sin, cos = tunix_qwen2._generate_pos_embeddings(
                positions, config.head_dim, config.rope_theta
            )
            for layer in self.trunk.layers:  # as tunix's Qwen2.__call__, without a cache
                x = layer(x, None, attention_mask, sin, cos)[1]
            return self.head(self.trunk.final_norm(x)), None

    return Critic(load_tunix(model_dir, vocab_size))


def tunix_learner(
    root: pathlib.Path, config, grader, steps: int, algorithm: str, prompt_width: int | None
):
    """tunix's GRPOLearner or PPOLearner: actor, reference (and critic trunk) read from
    root/policy, the toy tokenizer, rlr's grader as the reward function. Its rollouts pad
    prompts to `prompt_width` (None: rlr's rollout.max_prompt_tokens); a rollout whose longest
    prompt is longer pads to the next power of two of it (tunix's Sampler)."""
    import optax
    from transformers import AutoTokenizer
    from tunix.rl import rl_cluster as rl
    from tunix.rl.grpo import grpo_learner
    from tunix.rl.ppo import ppo_learner
    from tunix.rl.rollout import base_rollout

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))
    spec, rollout = config.effective_ppo, config.rollout
    # a tunix batch holds prompts (GRPO samples G of each; PPO is given each one G times)
    prompts = rollout.prompts_per_iteration * (1 if algorithm == "grpo" else GROUP)
    clip = optax.clip_by_global_norm(spec.max_grad_norm)
    adamw = lambda lr: optax.chain(clip, optax.adamw(lr, weight_decay=spec.weight_decay))  # noqa: E731
    training = rl.RLTrainingConfig(
        actor_optimizer=adamw(spec.policy_lr),
        critic_optimizer=adamw(spec.critic_lr) if algorithm == "ppo" else None,
        eval_every_n_steps=10**9,
        max_steps=steps * spec.minibatches,
        mini_batch_size=prompts // spec.minibatches,
        rollout_micro_batch_size=prompts,  # the whole batch at once, as rlr samples it
        compute_logps_micro_batch_size=prompts,
    )
    sampling = base_rollout.RolloutConfig(
        max_tokens_to_generate=rollout.max_new_tokens,
        max_prompt_length=prompt_width or rollout.max_prompt_tokens,
        kv_cache_size=rollout.max_prompt_tokens + rollout.max_new_tokens,
        temperature=rollout.temperature,
        top_p=1.0,
        top_k=None,
    )
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    policy, vocab = root / "policy", len(tokenizer)
    cluster = rl.RLCluster(
        actor=load_tunix(policy, vocab),
        reference=load_tunix(policy, vocab),
        critic=tunix_critic(policy, vocab) if algorithm == "ppo" else None,
        tokenizer=tokenizer,
        cluster_config=rl.ClusterConfig(
            role_to_mesh=dict.fromkeys(rl.Role, mesh),
            training_config=training,
            rollout_config=sampling,
        ),
    )

    def graded(prompts, completions, answer, **_):
        return [float(v) for v in grader.grade_responses(list(completions), list(answer))]

    if algorithm == "grpo":
        algo = grpo_learner.GRPOConfig(num_generations=GROUP, beta=BETA, epsilon=spec.clip_eps)
        return grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=algo, reward_fns=graded)
    algo = ppo_learner.PPOConfig(
        num_iterations=spec.epochs,
        gamma=spec.gamma,
        gae_lambda=spec.lam,
        beta=BETA,
        kl_method="kl",  # k1 in the reward, as rlr's ppo
        epsilon=spec.clip_eps,
        clip_range_value=spec.value_clip_eps,
    )
    return ppo_learner.PPOLearner(rl_cluster=cluster, ppo_config=algo, reward_fns=graded)


def bench_rl(root: pathlib.Path, args, algorithm: str) -> None:
    """Rounds of one tunix global step then one rlr iteration on the same prompts; round 0
    (both compile) is the warm-up."""
    from toy_assets import make_toy_assets

    from rlr.grading import Grader

    sizes = {k: SHAPE[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers")}
    make_toy_assets(root, **sizes, vocab_size=SHAPE["vocab_size"], num_train=512, num_test=16)
    trainer, config = rlr_trainer(root, args, algorithm)
    steps, repeat = 1 + args.repeats, 1 if algorithm == "grpo" else GROUP
    batches = [trainer.prompts_for(i) for i in range(steps)]
    dataset = [
        {
            "prompts": np.repeat([trainer.prompt_text(p) for p in batch], repeat),
            "answer": np.repeat([p.answer for p in batch], repeat),
        }
        for batch in batches
    ]
    times: dict[str, list[dict[str, float]]] = {"tunix": [], "rlr": []}
    widths: list[int] = []  # rlr's prompt width of each iteration (rollout.trim_prompts)
    phase: dict[str, float] = {}
    with Grader(num_workers=config.grading.num_workers, timeout_s=5.0) as grader:
        learner = tunix_learner(root, config, grader, steps, algorithm, args.tunix_prompt)
        cluster, global_step = learner.rl_cluster, learner._run_global_step

        def clocked(name, fn):
            def wrapper(*a, **kw):  # blocks: tunix returns the scoring passes' arrays unread
                seconds, out = timed(lambda: jax.block_until_ready(fn(*a, **kw)))
                phase[name] += seconds
                if name == "rollout":
                    phase["tokens"] += sum(len(t) for t in out.tokens)
                return out

            return wrapper

        cluster.generate = clocked("rollout", cluster.generate)
        cluster.update_actor = clocked("update", cluster.update_actor)
        for name in ("get_ref_per_token_logps", "get_old_per_token_logps", "get_values"):
            setattr(cluster, name, clocked("scoring", getattr(cluster, name)))
        if algorithm == "ppo":
            cluster.update_critic = clocked("update", cluster.update_critic)

        def step_then_rlr(*a, **kw):
            phase.update(rollout=0.0, scoring=0.0, update=0.0, tokens=0.0)
            phase["iteration"] = timed(lambda: global_step(*a, **kw))[0]
            times["tunix"].append(dict(phase))
            seconds, out = timed(lambda: trainer.iteration(len(times["rlr"]), grader))
            ours = {k: float(out[f"time/{k}"]) for k in ("rollout", "scoring", "update")}
            tokens = float(out["response_length"]) * config.rollout.batch_size
            times["rlr"].append({"iteration": seconds, "tokens": tokens, **ours})
            widths.append(int(out["prompt_width"]))
            print(f"round {len(times['rlr']) - 1}/{args.repeats} done", file=sys.stderr, flush=True)

        learner._run_global_step = step_then_rlr
        learner.train(dataset)
    if len(times["tunix"]) != steps:
        raise RuntimeError(f"tunix ran {len(times['tunix'])} global steps, expected {steps}")
    print(
        f"{algorithm}: {config.rollout.batch_size} rows ({args.prompts} prompts x {GROUP}), "
        f"prompts of at most {args.rl_prompt} tokens left-padded to {widths} by rlr (per "
        f"iteration), by tunix to max_prompt_length {args.tunix_prompt or args.rl_prompt} "
        "(or the power of two above a rollout's longest prompt, if longer); up to "
        f"{args.new_tokens} new tokens; "
        f"{args.minibatches} minibatch steps; first (compiling) iteration: rlr "
        f"{times['rlr'][0]['iteration']:.1f} s, tunix {times['tunix'][0]['iteration']:.1f} s; "
        f"{runs_line(args.repeats)}\n| phase | rlr | tunix | tunix / rlr |\n|---|---|---|---|"
    )
    for t in times["rlr"] + times["tunix"]:
        t["other"] = t["iteration"] - t["rollout"] - t["scoring"] - t["update"]
    for name in ("rollout", "scoring", "update", "other", "iteration", "tokens"):
        ours, theirs = ([t[name] for t in times[k][1:]] for k in ("rlr", "tunix"))
        show = (lambda v: spread(v, digits=0)) if name == "tokens" else partial(summary, unit="s")
        print(f"| {name} | {show(ours)} | {show(theirs)} | {median(theirs) / median(ours):.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["sampler", "grpo", "ppo"], default=None)
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=[16, 64]
    )
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens (sampler)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=16, help="RL prompts per iteration")
    parser.add_argument(
        "--rl-prompt", type=int, default=160, help="RL prompt tokens (longest: 158)"
    )
    parser.add_argument(
        "--tunix-prompt",
        type=int,
        default=None,
        help="tunix's max_prompt_length (default: --rl-prompt). rlr pads each iteration's "
        "prompts to the power of two above its longest (rollout.trim_prompts); tunix pads to "
        "this, or to the next power of two above a longer prompt: 1 gives it rlr's rule",
    )
    parser.add_argument("--minibatches", type=int, default=4, help="RL optimizer steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median of these)")
    parser.add_argument(
        "--rlr",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="further overrides of rlr's run (grpo / ppo), e.g. ppo.pack=true",
    )
    args = parser.parse_args()
    print(
        f"tunix {importlib.metadata.version('google-tunix')}, jax {jax.__version__} "
        f"({jax.devices()[0].platform}, {os.cpu_count()} CPUs); {runs_line(args.repeats)}"
        + (f"; rlr overrides: {' '.join(args.rlr)}" if args.rlr else "")
    )
    print(load_line("before"), flush=True)
    with tempfile.TemporaryDirectory(prefix="rlr_bench_tunix_") as tmp:
        root = pathlib.Path(tmp)
        if args.only in (None, "sampler"):
            bench_sampler(*make_sampler_models(root), args)
        for algorithm in ("grpo", "ppo"):
            if args.only in (None, algorithm):
                bench_rl(root, args, algorithm)
    print(load_line("after"))


if __name__ == "__main__":
    main()
