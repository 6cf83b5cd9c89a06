"""`rlr plan`: will a PPO config fit? Compile its steps for the target mesh and read XLA's
memory analysis, without allocating a single parameter.

The PPO update step (policy + critic forward/backward + AdamW), the rollout's decoding (the
sampler build_ppo makes: prefill and decode of a chunk of rows with its KV cache) and the
rollout-scoring step (policy, reference, critic, PRM/ORM forward) are lowered with abstract,
sharded inputs (`jax.ShapeDtypeStruct`s) for a mesh of data x fsdp x tensor devices. When this
machine has fewer devices than the mesh, the command re-runs itself with that many fake CPU
devices (`--xla_force_host_platform_device_count`): XLA's SPMD partitioner then produces
exactly the per-device program, whose argument, output and temporary buffer sizes are reported.
The CPU compiler's temporaries approximate an accelerator's (fusion decisions differ), so
leave some headroom. The decoder layers are one `nn.scan`, so the program is the same size at
any depth and the steps are compiled at the config's full depth (the 7B config on 128 fake
devices in about a minute); `--extrapolate` compiles 1 and 2 layers and extrapolates instead,
for configs that unroll their layers (`scan_layers: false`).
"""

from __future__ import annotations

import math
import pathlib
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


def _plan_at(config: Any, mesh_sizes: dict[str, int], *, layers: int | None) -> dict[str, Any]:
    """plan() at the config's depth (layers None), at `layers` layers, or shapes only (0).

    The networks, optimizer, shardings and jitted steps come from rlr.training.ppo_build,
    the same builder PPOTrainer uses, in its abstract mode.
    """
    import jax
    import jax.numpy as jnp

    from rlr import sharding
    from rlr.training.ppo_build import abstract_batches, abstract_prompts, build_ppo

    mesh = sharding.make_mesh(**mesh_sizes)
    setup = build_ppo(
        config, mesh=mesh, tokenizer=_tokenizer(config), abstract=True, num_layers=layers or None
    )
    rollout, experience = abstract_batches(config, mesh)

    roll = config.rollout
    result: dict[str, Any] = {
        "mesh": mesh_sizes,
        "devices": math.prod(mesh_sizes.values()),
        "parameters": setup.parameter_counts(),
        "per_device_bytes": {
            "trainable_params": _per_device_bytes(setup.state.params),
            "optimizer_state": _per_device_bytes(setup.state.opt_state),
            "frozen_params": _per_device_bytes(setup.frozen),
        },
        # under LoRA the update reads the policy's frozen base as an argument, and with
        # ppo.critic_lora the critic's frozen trunk
        "update_frozen_argument_bytes": _per_device_bytes(setup.update_bases(setup.frozen)),
        "lora": setup.lora,
        "critic_lora": setup.models.critic_base,
        "rows": {
            "rollout": roll.batch_size,
            "scoring_chunk": rollout.input_ids.shape[0],
            "update_minibatch": experience.input_ids.shape[0],
            "prompt_tokens": roll.max_prompt_tokens,
            "response_tokens": roll.max_new_tokens,
        },
    }
    prompts = abstract_prompts(config, mesh)
    policy = setup.policy_params(setup.state.params, setup.frozen)  # base + adapters under LoRA
    result["sampling"] = {
        "rows": prompts[0].shape[0],
        "prompt_tokens": roll.max_prompt_tokens,
        "new_tokens": roll.max_new_tokens,
        "policy_param_bytes": _per_device_bytes(policy),
    }
    steps = [
        ("update", setup.update, (setup.state, experience, *setup.update_bases(setup.frozen))),
        ("sampling", setup.sampler, (policy, *prompts)),
        ("scoring", setup.score, (setup.state.params, setup.frozen, rollout, None)),
    ]
    if setup.read_prm_steps is not None:  # a PRM that reads the steps as text
        from rlr.training.ppo_build import prm_read_shapes

        C, S, K = prm_read_shapes(config)
        rows = sharding.batch_sharding(mesh, 2)
        row = lambda width: jax.ShapeDtypeStruct((C, width), jnp.int32, sharding=rows)  # noqa: E731
        result["text_prm"] = {
            "format": setup.prm_format,
            "rows": C,
            "tokens": S,
            "steps": K,
            "param_bytes": _per_device_bytes(setup.frozen["prm"]),
        }
        steps.append(
            ("prm_scoring", setup.read_prm_steps, (setup.frozen["prm"], row(S), row(S), row(K)))
        )
    if layers == 0:  # shapes only
        return result
    for name, fn, args in steps:
        result[f"{name}_step"] = _compiled_memory(fn, args, mesh)
    result["peak_bytes_per_device"] = _peak(result)
    return result


def _per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of an abstract tree: each leaf's shard shape (from its
    sharding) times its item size."""
    import jax
    import jax.numpy as jnp

    total = 0
    for leaf in jax.tree.leaves(tree):
        shards = leaf.sharding.shard_shape(leaf.shape)
        total += math.prod(shards) * jnp.dtype(leaf.dtype).itemsize
    return total


def _compiled_memory(fn: Any, args: tuple[Any, ...], mesh: Any) -> dict[str, int]:
    """Per-device argument, output, temporary and aliased bytes of `fn` (anything with
    `.lower`: a jitted step or the Sampler) compiled for abstract `args` on `mesh`."""
    import jax

    with jax.set_mesh(mesh):
        compiled = fn.lower(*args).compile()
    mem = compiled.memory_analysis()
    return {
        "arguments": int(mem.argument_size_in_bytes),
        "outputs": int(mem.output_size_in_bytes),
        "temporaries": int(mem.temp_size_in_bytes),
        "aliased": int(mem.alias_size_in_bytes),
    }


def _tokenizer(config: Any) -> Any:
    """The run's tokenizer when its directory is here (an inline architecture may take its
    vocabulary size from it, as `rlr ppo` does); None when the plan runs without it."""

    path = config.tokenizer_dir
    if path and (pathlib.Path(path) / "tokenizer.json").is_file():
        from rlr.training.loading import load_tokenizer

        return load_tokenizer(path)
    return None


def network_depths(config: Any) -> dict[str, int]:
    """Layers of each configured network (policy, prm, orm), from config.json / architecture."""
    from rlr.training.loading import hf_config_of

    specs = {"policy": config.policy, "prm": config.prm, "orm": config.orm}
    return {
        name: int(hf_config_of(spec, what=name).get("num_hidden_layers", 0))
        for name, spec in specs.items()
        if spec is not None
    }


def plan_shapes(config: Any, mesh_sizes: dict[str, int]) -> dict[str, Any]:
    """plan() without compiling: parameter counts per network and the per-device bytes of the
    trainable parameters, optimizer state and frozen networks at the config's full depth."""
    return _plan_at(config, mesh_sizes, layers=0)


def plan(
    config: Any,
    mesh_sizes: dict[str, int],
    *,
    extrapolate: bool = False,
) -> dict[str, Any]:
    """Per-device memory (bytes) of the PPO update, decoding and scoring steps of `config` on
    the mesh; the peak is the largest of the three with everything else resident beside it.

    Parameter, optimizer and frozen-network bytes come from the full-depth shapes. The
    compiled steps' buffers (arguments, outputs, temporaries) are measured at full depth
    (scanned layers compile as fast at any depth); with `extrapolate`, at depths 1 and 2 and
    extrapolated linearly per layer (every unrolled layer adds the same buffers), which keeps
    the compile short for networks with `scan_layers: false`, whose programs grow with depth.
    A scanned program reuses one layer's buffers, so its temporaries are not linear in depth
    and extrapolating them is not meaningful.
    """
    depths = network_depths(config)
    depth = depths["policy"]
    if not extrapolate or depth <= 2:
        return _plan_at(config, mesh_sizes, layers=None)
    one = _plan_at(config, mesh_sizes, layers=1)
    two = _plan_at(config, mesh_sizes, layers=2)
    full = plan_shapes(config, mesh_sizes)
    for step in compiled_steps(one):
        full[step] = {
            k: one[step][k] + (depth - 1) * (two[step][k] - one[step][k]) for k in one[step]
        }
    full["compiled_at_layers"] = [1, 2]
    full["extrapolated_to_layers"] = depth
    if len(set(depths.values())) > 1:
        full["warning"] = (
            f"networks differ in depth ({depths}); the extrapolation scales all of them to the "
            f"policy's {depth} layers: drop --extrapolate for a measured figure"
        )
    full["peak_bytes_per_device"] = _peak(full)
    return full


def compiled_steps(result: dict[str, Any]) -> list[str]:
    """The compiled programs a plan() result reports, in order."""
    names = ("update_step", "sampling_step", "scoring_step", "prm_scoring_step")
    return [s for s in names if s in result]


def _peak(result: dict[str, Any]) -> int:
    upd, scr = result["update_step"], result["scoring_step"]
    # Frozen networks stay resident during updates; the update's own arguments are the state
    # and the minibatch (donated outputs reuse the state's buffers), and under LoRA the
    # policy's frozen base (counted once).
    peak_update = upd["arguments"] + upd["outputs"] - upd["aliased"] + upd["temporaries"]
    peak_update += result["per_device_bytes"]["frozen_params"]
    peak_update -= result.get("update_frozen_argument_bytes", 0)
    peak_scoring = scr["arguments"] + scr["outputs"] + scr["temporaries"]
    peak_scoring += result["per_device_bytes"]["optimizer_state"]
    peaks = [peak_update, peak_scoring]
    if "sampling_step" in result:
        # decoding (the KV cache among its temporaries) with everything else resident beside
        # the policy's parameters, which are among its arguments
        smp = result["sampling_step"]
        resident = sum(result["per_device_bytes"].values())
        resident -= result["sampling"]["policy_param_bytes"]
        peaks.append(smp["arguments"] + smp["outputs"] + smp["temporaries"] + resident)
    if "prm_scoring_step" in result:
        # the text PRM's program, with everything else resident beside it
        prm = result["prm_scoring_step"]
        resident = sum(result["per_device_bytes"].values()) - result["text_prm"]["param_bytes"]
        peaks.append(prm["arguments"] + prm["outputs"] + prm["temporaries"] + resident)
    return max(peaks)


def format_report(result: dict[str, Any], device_memory_gib: float | None) -> str:
    """A human-readable table of a plan() result."""
    gib = lambda b: f"{b / GIB:8.2f} GiB"  # noqa: E731
    lines = [
        f"mesh {result['mesh']} ({result['devices']} devices)",
        "parameters: " + ", ".join(f"{k} {v / 1e9:.2f}B" for k, v in result["parameters"].items()),
        f"rows: {result['rows']}",
    ]
    if result.get("lora"):
        lines.append(
            "policy.lora: the policy's count is its adapters; the reference is the frozen base "
            "they sit on (one copy)"
        )
    if result.get("critic_lora"):
        lines.append(
            "ppo.critic_lora: the critic's count is its adapters and score head; its trunk is "
            f"the frozen {result['critic_lora']}'s (no copy)"
        )
    lines += [
        "per device:",
    ]
    for k, v in result["per_device_bytes"].items():
        lines.append(f"  {k:<28}{gib(v)}")
    if "sampling" in result:
        smp = result["sampling"]
        lines.append(
            f"decoding: {smp['rows']} rows of {smp['prompt_tokens']} prompt + "
            f"{smp['new_tokens']} new tokens"
        )
    if "text_prm" in result:
        prm = result["text_prm"]
        lines.append(
            f"text PRM ({prm['format']}): rows of {prm['rows']} x {prm['tokens']} tokens, "
            f"{prm['steps']} steps"
        )
    for step in compiled_steps(result):
        for k, v in result[step].items():
            lines.append(f"  {step + ' ' + k:<28}{gib(v)}")
    lines.append(f"  {'peak (estimate)':<28}{gib(result['peak_bytes_per_device'])}")
    if "extrapolated_to_layers" in result:
        lines.append(
            f"(steps compiled at 1 and 2 layers, extrapolated to "
            f"{result['extrapolated_to_layers']}; without --extrapolate the full depth is "
            "compiled)"
        )
    if "warning" in result:
        lines.append(f"warning: {result['warning']}")
    if device_memory_gib is not None:
        fits = result["peak_bytes_per_device"] <= device_memory_gib * GIB
        lines.append(
            f"device memory {device_memory_gib:.1f} GiB: " + ("fits" if fits else "DOES NOT FIT")
        )
    return "\n".join(lines)
