"""`rlr plan`: will a PPO config fit? Compile its steps for the target mesh and read XLA's
memory analysis, without allocating a single parameter.

The PPO update step (policy + critic forward/backward + AdamW) and the rollout-scoring step
(policy, reference, critic, PRM/ORM forward) are lowered with abstract, sharded inputs
(`jax.ShapeDtypeStruct`s) for a mesh of data x fsdp x tensor devices. When this machine has
fewer devices than the mesh, the command re-runs itself with that many fake CPU devices
(`--xla_force_host_platform_device_count`): XLA's SPMD partitioner then produces exactly the
per-device program, whose argument, output and temporary buffer sizes are reported.
The CPU compiler's temporaries approximate an accelerator's (fusion decisions differ), so
leave some headroom.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import pathlib
import subprocess
import sys
from typing import Any

GIB = 1024**3


def parse_mesh(text: str) -> dict[str, int]:
    """'data=8,fsdp=16,tensor=4' -> {'data': 8, 'fsdp': 16, 'tensor': 4}."""
    sizes = {"data": 1, "fsdp": 1, "tensor": 1}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in sizes or not value.isdigit() or int(value) < 1:
            raise ValueError(
                f"--mesh entry {part!r} must be data=N, fsdp=N or tensor=N with N >= 1"
            )
        sizes[name] = int(value)
    return sizes


def _architecture(spec: Any) -> dict[str, Any]:
    if spec.path and (pathlib.Path(spec.path) / "config.json").exists():
        return json.loads((pathlib.Path(spec.path) / "config.json").read_text())
    if spec.architecture is not None:
        return dict(spec.architecture)
    raise ValueError(
        f"cannot size model {spec.path!r}: no config.json there and no inline `architecture`"
    )


def _plan_at(config: Any, mesh_sizes: dict[str, int], *, layers: int | None) -> dict[str, Any]:
    """plan() at the config's depth (layers None), at `layers` layers, or shapes only (0)."""
    import jax
    import jax.numpy as jnp

    from rlr import sharding
    from rlr.models import Qwen2Config, Qwen2ForCausalLM, Qwen2ForTokenClassification
    from rlr.training import ppo_core
    from rlr.training.models_io import DTYPES
    from rlr.training.step import init_train_state, train_state_shardings

    mesh = sharding.make_mesh(**mesh_sizes)

    def build(spec, head, depth=None):
        hf = _architecture(spec)
        if depth:
            hf = {**hf, "num_hidden_layers": depth}
        arch = Qwen2Config.from_hf(hf)
        kw = dict(dtype=DTYPES[spec.dtype], param_dtype=DTYPES[spec.param_dtype], remat=spec.remat)
        return (
            Qwen2ForCausalLM(arch, **kw)
            if head == "lm"
            else Qwen2ForTokenClassification(arch, num_labels=1, **kw)
        )

    depth = layers or None
    policy = build(config.policy, "lm", depth)
    critic_spec = {"prm": config.prm, "orm": config.orm}.get(config.ppo.critic_init, config.policy)
    critic = build(critic_spec or config.policy, "score", depth)
    prm = build(config.prm, "score", depth) if config.reward.use_prm else None
    orm = build(config.orm, "score", depth) if config.reward.use_orm else None
    models = ppo_core.PPOModels(policy=policy, critic=critic, prm=prm, orm=orm)

    ids4 = jnp.zeros((1, 4), jnp.int32)

    def abstract(module):
        boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), ids4)["params"])
        shard = sharding.param_shardings(boxed, mesh)
        import flax.linen as nn

        plain = nn.unbox(boxed)
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), plain, shard
        ), shard

    trainable, frozen = {}, {}
    t_shard, f_shard = {}, {}
    trainable["policy"], t_shard["policy"] = abstract(policy)
    trainable["critic"], t_shard["critic"] = abstract(critic)
    frozen["reference"], f_shard["reference"] = abstract(policy)
    if prm is not None:
        frozen["prm"], f_shard["prm"] = abstract(prm)
    if orm is not None:
        frozen["orm"], f_shard["orm"] = abstract(orm)

    spec = config.ppo
    tx = ppo_core.make_ppo_optimizer(
        policy_lr=spec.policy_lr,
        critic_lr=spec.critic_lr,
        weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm,
    )
    state_shard = train_state_shardings(tx, trainable, t_shard, mesh)
    abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        jax.eval_shape(functools.partial(init_train_state, tx=tx), trainable),
        state_shard,
    )

    roll = config.rollout
    P, T, K = roll.max_prompt_tokens, roll.max_new_tokens, config.reward.max_steps
    B = roll.batch_size
    mb = B // spec.minibatches

    def arr(shape, dtype):
        return jax.ShapeDtypeStruct(
            shape, dtype, sharding=sharding.batch_sharding(mesh, len(shape))
        )

    experience = ppo_core.Experience(
        input_ids=arr((mb, P + T), jnp.int32),
        attention_mask=arr((mb, P + T), jnp.int32),
        response_mask=arr((mb, T), jnp.float32),
        old_logp=arr((mb, T), jnp.float32),
        old_values=arr((mb, T), jnp.float32),
        advantages=arr((mb, T), jnp.float32),
        returns=arr((mb, T), jnp.float32),
    )
    update = jax.jit(
        functools.partial(
            ppo_core.ppo_update,
            models,
            tx,
            clip_eps=spec.clip_eps,
            value_clip_eps=spec.value_clip_eps,
        ),
        in_shardings=(state_shard, None),
        out_shardings=(state_shard, None),
        donate_argnums=0,
    )
    C = roll.chunk_rows or B  # rows per scoring call
    rollout = ppo_core.Rollout(
        input_ids=arr((C, P + T), jnp.int32),
        attention_mask=arr((C, P + T), jnp.int32),
        response_mask=arr((C, T), jnp.float32),
        success=arr((C,), jnp.float32),
        step_end=arr((C, K), jnp.int32),
        step_mask=arr((C, K), jnp.float32),
    )
    score = jax.jit(functools.partial(ppo_core.score_rollout, models))

    def nbytes(tree):
        total = 0
        for leaf in jax.tree.leaves(tree):
            shards = leaf.sharding.shard_shape(leaf.shape)
            total += math.prod(shards) * jnp.dtype(leaf.dtype).itemsize
        return total

    result: dict[str, Any] = {
        "mesh": mesh_sizes,
        "devices": math.prod(mesh_sizes.values()),
        "parameters": {
            name: int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))
            for name, tree in {**trainable, **frozen}.items()
        },
        "per_device_bytes": {
            "trainable_params": nbytes(abstract_state.params),
            "optimizer_state": nbytes(abstract_state.opt_state),
            "frozen_params": nbytes(frozen),
        },
        "rows": {
            "rollout": B,
            "scoring_chunk": C,
            "update_minibatch": mb,
            "prompt_tokens": P,
            "response_tokens": T,
        },
    }
    if layers == 0:  # shapes only
        return result
    for name, fn, args in (
        ("update", update, (abstract_state, experience)),
        ("scoring", score, (trainable, frozen, rollout)),
    ):
        with jax.set_mesh(mesh):
            compiled = fn.lower(*args).compile()
        mem = compiled.memory_analysis()
        result[f"{name}_step"] = {
            "arguments": int(mem.argument_size_in_bytes),
            "outputs": int(mem.output_size_in_bytes),
            "temporaries": int(mem.temp_size_in_bytes),
            "aliased": int(mem.alias_size_in_bytes),
        }
    result["peak_bytes_per_device"] = _peak(result)
    return result


def plan(
    config: Any,
    mesh_sizes: dict[str, int],
    *,
    exact: bool = False,
) -> dict[str, Any]:
    """Per-device memory (bytes) of the PPO update and scoring steps of `config` on the mesh.

    Parameter, optimizer and frozen-network bytes come from the full-depth shapes. The
    compiled steps' buffers (arguments, outputs, temporaries) are measured at full depth when
    `exact`; otherwise at depths 1 and 2 and extrapolated linearly per layer (XLA's CPU
    backend compiles a deep unrolled model very slowly, and every Qwen2 layer adds the same
    buffers).
    """
    depth = int(_architecture(config.policy)["num_hidden_layers"])
    if exact or depth <= 2:
        return _plan_at(config, mesh_sizes, layers=None)
    one = _plan_at(config, mesh_sizes, layers=1)
    two = _plan_at(config, mesh_sizes, layers=2)
    full = _plan_at(config, mesh_sizes, layers=0)
    for step in ("update_step", "scoring_step"):
        full[step] = {
            k: one[step][k] + (depth - 1) * (two[step][k] - one[step][k]) for k in one[step]
        }
    full["compiled_at_layers"] = [1, 2]
    full["extrapolated_to_layers"] = depth
    full["peak_bytes_per_device"] = _peak(full)
    return full


def _peak(result: dict[str, Any]) -> int:
    upd, scr = result["update_step"], result["scoring_step"]
    # Frozen networks stay resident during updates; the update's own arguments are the state
    # and the minibatch (donated outputs reuse the state's buffers).
    peak_update = upd["arguments"] + upd["outputs"] - upd["aliased"] + upd["temporaries"]
    peak_update += result["per_device_bytes"]["frozen_params"]
    peak_scoring = scr["arguments"] + scr["outputs"] + scr["temporaries"]
    peak_scoring += result["per_device_bytes"]["optimizer_state"]
    return max(peak_update, peak_scoring)


def format_report(result: dict[str, Any], device_memory_gib: float | None) -> str:
    """A human-readable table of a plan() result."""
    gib = lambda b: f"{b / GIB:8.2f} GiB"  # noqa: E731
    lines = [
        f"mesh {result['mesh']} ({result['devices']} devices)",
        "parameters: " + ", ".join(f"{k} {v / 1e9:.2f}B" for k, v in result["parameters"].items()),
        f"rows: {result['rows']}",
        "per device:",
    ]
    for k, v in result["per_device_bytes"].items():
        lines.append(f"  {k:<28}{gib(v)}")
    for step in ("update_step", "scoring_step"):
        for k, v in result[step].items():
            lines.append(f"  {step + ' ' + k:<28}{gib(v)}")
    lines.append(f"  {'peak (estimate)':<28}{gib(result['peak_bytes_per_device'])}")
    if "extrapolated_to_layers" in result:
        lines.append(
            f"(steps compiled at 1 and 2 layers, extrapolated to "
            f"{result['extrapolated_to_layers']}; --exact compiles the full depth)"
        )
    if device_memory_gib is not None:
        fits = result["peak_bytes_per_device"] <= device_memory_gib * GIB
        lines.append(
            f"device memory {device_memory_gib:.1f} GiB: " + ("fits" if fits else "DOES NOT FIT")
        )
    return "\n".join(lines)


def add_parser(subparsers: Any) -> None:
    """Registers `rlr plan`."""
    parser = subparsers.add_parser(
        "plan",
        help="compile a PPO config for a target mesh and report per-device memory",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--config", required=True, help="PPO YAML config")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument(
        "--mesh", default=None, help="data=N,fsdp=N,tensor=N (default: the config's mesh)"
    )
    parser.add_argument(
        "--device-memory-gib",
        type=float,
        default=None,
        help="memory of one device; exit 1 when the estimate exceeds it "
        "(default: the config's device_memory_gib)",
    )
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument(
        "--exact",
        action="store_true",
        help="compile the full depth instead of extrapolating from 1 and 2 layers (slow on CPU)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rlr.config import load_config
    from rlr.training.configs import PPOConfig

    config = load_config(PPOConfig, args.config, args.overrides)
    if args.mesh:
        sizes = parse_mesh(args.mesh)
    else:
        sizes = {"data": config.mesh.data, "fsdp": config.mesh.fsdp, "tensor": config.mesh.tensor}
        if -1 in sizes.values():
            raise ValueError("give --mesh explicitly: the config's mesh has a -1 (fill) axis")
    devices = math.prod(sizes.values())
    import jax

    if jax.device_count() != devices:
        if os.environ.get("RLR_PLAN_CHILD"):
            raise RuntimeError(f"expected {devices} fake devices, got {jax.device_count()}")
        env = dict(os.environ)
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        )
        env["JAX_PLATFORMS"] = "cpu"
        env["RLR_PLAN_CHILD"] = "1"
        cmd = [sys.executable, "-m", "rlr.cli", "plan", "--config", args.config, *args.overrides]
        cmd += ["--mesh", ",".join(f"{k}={v}" for k, v in sizes.items())]
        if args.device_memory_gib is not None:
            cmd += ["--device-memory-gib", str(args.device_memory_gib)]
        if args.json:
            cmd += ["--json", args.json]
        if args.exact:
            cmd += ["--exact"]
        return subprocess.run(cmd, env=env).returncode
    result = plan(config, sizes, exact=args.exact)
    limit = (
        args.device_memory_gib if args.device_memory_gib is not None else (config.device_memory_gib)
    )
    print(format_report(result, limit))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    if limit is not None and result["peak_bytes_per_device"] > limit * GIB:
        return 1
    return 0
