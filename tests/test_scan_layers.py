"""Scanned decoder layers (`scan_layers=True`, the default) against the unrolled loop: the same
logits, gradients and cached decoding once params are converted between the two layouts; HF
checkpoints in either layout; a program whose size does not grow with depth."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rlr import models, sharding
from rlr.models.decoder import remat_policy, stack_layer_params, unstack_layer_params
from rlr.models.hf_io import hf_name

VOCAB = 64


def tiny_config(**overrides) -> models.DecoderConfig:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        model_type="qwen3",  # per-head q/k norms inside the scanned layer too
        attention_out_bias=True,  # Qwen3's attention_bias covers o_proj too
        qk_norm=True,
    )
    fields.update(overrides)
    return models.DecoderConfig(**fields)


@pytest.fixture(scope="module")
def pair():
    """(config, scanned model, looped model, scanned params, the same params looped)."""
    config = tiny_config()
    scan = models.DecoderForCausalLM(config)
    loop = models.DecoderForCausalLM(config, scan_layers=False)
    params = models.init_params(scan, jax.random.key(0))
    # noise on every leaf (norm scales and biases start equal in every layer), so that a
    # layer mix-up shows
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    params = jax.tree.unflatten(treedef, noisy)
    return config, scan, loop, params, unstack_layer_params(params)


def ids_of(batch: int, length: int, seed: int) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (batch, length), 1, VOCAB)


def mean_cross_entropy(model, params, ids):  # ids [B, S] -> [] next-token loss
    logits = model.apply({"params": params}, ids)[:, :-1]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1))


def test_layouts_convert_both_ways(pair):
    config, scan, loop, params, looped = pair
    layers = params["model"]["layers"]
    assert set(looped["model"]) == {"embed_tokens", "norm", "layers_0", "layers_1", "layers_2"}
    assert layers["mlp"]["up_proj"]["kernel"].shape == (3, 32, 64)
    np.testing.assert_array_equal(
        looped["model"]["layers_1"]["mlp"]["up_proj"]["kernel"],
        layers["mlp"]["up_proj"]["kernel"][1],
    )
    chex.assert_trees_all_equal(stack_layer_params(looped), params)
    shapes = jax.eval_shape(lambda: models.init_params(loop, jax.random.key(0)))
    chex.assert_trees_all_equal_shapes_and_dtypes(looped, shapes)
    # several networks at once, and host arrays stay NumPy
    both = stack_layer_params({"policy": jax.tree.map(np.asarray, looped), "step": 3})
    assert both["step"] == 3 and isinstance(
        both["policy"]["model"]["layers"]["mlp"]["up_proj"]["kernel"], np.ndarray
    )
    with pytest.raises(ValueError, match="layers_0 .. layers_"):
        stack_layer_params({"layers_0": {"w": 1.0}, "layers_2": {"w": 2.0}})


def test_scan_and_loop_give_the_same_logits_and_gradients(pair):
    config, scan, loop, params, looped = pair
    ids = ids_of(2, 9, seed=1)
    mask = jnp.ones_like(ids).at[0, :3].set(0)  # a left-padded row too
    np.testing.assert_allclose(
        jax.jit(scan.apply)({"params": params}, ids, mask),
        jax.jit(loop.apply)({"params": looped}, ids, mask),
        atol=1e-5,
        rtol=1e-5,
    )
    grad = jax.jit(jax.grad(mean_cross_entropy, argnums=1), static_argnums=0)
    g_scan = grad(scan, params, ids)
    g_loop = grad(loop, looped, ids)
    chex.assert_trees_all_close(unstack_layer_params(g_scan), g_loop, atol=1e-6, rtol=1e-5)
    assert float(jnp.abs(g_scan["model"]["layers"]["mlp"]["up_proj"]["kernel"][2]).max()) > 0


@pytest.mark.parametrize("policy", ["full", "none", True, False])
def test_every_remat_policy_inside_the_scan_keeps_gradients(pair, policy):
    config, scan, _, params, _ = pair  # scan: the default policy ("minimal")
    assert scan.remat == "minimal"
    remat = models.DecoderForCausalLM(config, remat=policy)
    ids = ids_of(2, 9, seed=2)
    grad = jax.jit(jax.grad(mean_cross_entropy, argnums=1), static_argnums=0)
    chex.assert_trees_all_close(
        grad(remat, params, ids), grad(scan, params, ids), atol=1e-6, rtol=1e-5
    )


def test_remat_policy_names():
    assert [remat_policy(v) for v in (True, False, "minimal")] == ["full", "none", "minimal"]
    with pytest.raises(ValueError, match="remat must be a bool or one of"):
        remat_policy("some")


@functools.partial(jax.jit, static_argnums=0)
@chex.assert_max_traces(n=2)  # once for each of the two models, never once per step
def decode_step(model, params, token, position, cache):  # [B, 1] each -> ([B, 1, V], cache)
    return model.apply({"params": params}, token, positions=position, cache=cache)


def test_cached_decoding_is_the_same_in_both_modes_and_never_retraces(pair):
    config, scan, loop, params, looped = pair
    ids = ids_of(2, 5, seed=3)
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    full = jax.jit(scan.apply)({"params": params}, jnp.concatenate([ids, ids[:, :2]], axis=1))

    def decode(model, p):
        cache = models.init_cache(config, jnp.ones((2, 8), jnp.int32))
        assert cache.keys.shape == (3, 2, 2, 8, 8)  # [L, B, Hkv, S, Dh]
        prefill, cache = jax.jit(model.apply)({"params": p}, ids, positions=positions, cache=cache)
        logits = [prefill]
        for t in range(2):
            out, cache = decode_step(model, p, ids[:, t : t + 1], jnp.full((2, 1), 5 + t), cache)
            logits.append(out)
        return jnp.concatenate(logits, axis=1), cache

    got_scan, cache_scan = decode(scan, params)
    got_loop, cache_loop = decode(loop, looped)
    np.testing.assert_allclose(got_scan, got_loop, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(cache_scan.keys, cache_loop.keys, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got_scan, full, atol=1e-4, rtol=1e-4)  # cache == no cache
    assert int(cache_scan.index) == 7
    kept = cache_scan.take_rows(jnp.asarray([1]))
    assert kept.keys.shape == (3, 1, 2, 8, 8) and kept.key_mask.shape == (1, 8)
    np.testing.assert_array_equal(kept.values[:, 0], cache_scan.values[:, 1])


def test_checkpoints_round_trip_in_either_layout(pair, tmp_path):
    config, scan, loop, params, looped = pair
    models.save_pretrained(scan, params, tmp_path / "scan")
    models.save_pretrained(loop, looped, tmp_path / "loop")
    a = load_file(tmp_path / "scan" / "model.safetensors")
    b = load_file(tmp_path / "loop" / "model.safetensors")
    assert sorted(a) == sorted(b) and "model.layers.2.self_attn.q_norm.weight" in a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    model, loaded = models.load_pretrained(tmp_path / "loop")
    assert model.scan_layers
    chex.assert_trees_all_equal(loaded, params)
    model, loaded = models.load_pretrained(tmp_path / "scan", scan_layers=False)
    assert not model.scan_layers
    chex.assert_trees_all_equal(loaded, looped)
    assert not models.pretrained_module(tmp_path / "scan", scan_layers=False).scan_layers


def test_a_missing_or_misshapen_layer_tensor_is_named_with_its_file(pair, tmp_path):
    config, scan, _, params, _ = pair
    models.save_pretrained(scan, params, tmp_path)
    weights = tmp_path / "model.safetensors"
    tensors = load_file(weights)
    name = "model.layers.1.mlp.up_proj.weight"
    up = tensors.pop(name)
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight'.*missing"):
        models.load_pretrained(tmp_path)
    tensors[name] = up[:, :16].copy()
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(
        ValueError, match=r"layers\.1\.mlp\.up_proj\.weight' in .*model\.safetensors"
    ):
        models.load_pretrained(tmp_path)
    assert hf_name(("model", "layers", "mlp", "up_proj", "kernel"), 1) == (name, True)
    assert hf_name(("model", "layers_1", "input_layernorm", "scale")) == (
        "model.layers.1.input_layernorm.weight",
        False,
    )
    with pytest.raises(ValueError, match="every layer"):
        hf_name(("model", "layers", "mlp", "up_proj", "kernel"))


def test_stacked_params_are_replicated_along_layers():
    assert ("layers", None) in sharding.LOGICAL_AXIS_RULES
    axes = jax.sharding.PartitionSpec("layers", "embed", "mlp")
    mesh_axes = sharding.logical_to_sharding(axes, sharding.make_mesh(data=-1))
    assert mesh_axes.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")


def test_the_scanned_program_does_not_grow_with_depth():
    def equations(layers: int, scan_layers: bool) -> int:
        model = models.DecoderForCausalLM(
            tiny_config(num_hidden_layers=layers), scan_layers=scan_layers, remat=True
        )
        params = jax.eval_shape(lambda: models.init_params(model, jax.random.key(0)))
        ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
        loss = jax.value_and_grad(lambda p, i: mean_cross_entropy(model, p, i))
        return len(jax.make_jaxpr(loss)(params, ids).eqns)

    assert equations(2, True) == equations(6, True)
    assert equations(6, False) > 2 * equations(2, False)


def test_a_model_spec_turns_the_scan_off():
    from rlr.training.loading import network_config, network_module
    from rlr.training.schemas import ModelSpec

    spec = ModelSpec(architecture=tiny_config().to_hf(), scan_layers=False)
    assert ModelSpec(architecture={"a": 1}).scan_layers
    for head in ("lm", "score"):
        module = network_module(spec, network_config(spec), head=head)
        assert not module.scan_layers
        params = jax.eval_shape(lambda m=module: models.init_params(m, jax.random.key(0)))
        assert "layers_2" in params["model"] and "layers" not in params["model"]
