"""Low-rank adapters (rlr.models.lora): the decoder's adapted projections, the base / adapter
split, the merged export and the PEFT directory, against transformers + peft."""

from __future__ import annotations

import dataclasses
import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlr import models, sharding
from rlr.models import lora as lora_lib
from rlr.models.architecture import LORA_TARGETS, LoraConfig
from tests.test_models import hf_logits, hf_random_model, random_ids, tiny_config

LORA = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "o_proj", "down_proj"))


def adapted(model: models.DecoderForCausalLM, lora: LoraConfig) -> models.DecoderForCausalLM:
    return model.clone(config=dataclasses.replace(model.config, lora=lora))


def random_adapters(model: models.DecoderForCausalLM, seed: int):
    """The adapters of `model` (a LoRA decoder) with random, non-zero A and B."""
    params = models.init_params(model, jax.random.key(seed))
    _, adapters = lora_lib.split_adapters(params)
    leaves, treedef = jax.tree.flatten(adapters)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [0.2 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


def test_lora_config_checks_its_fields():
    with pytest.raises(ValueError, match="rank must be a positive int"):
        LoraConfig(rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="targets must be distinct names"):
        LoraConfig(rank=2, alpha=1.0, targets=("q_proj", "qkv"))
    assert LoraConfig(rank=4, alpha=8.0).scaling == 2.0


@pytest.mark.parametrize("scan_layers", [True, False])
def test_split_gives_the_base_tree_and_adapters_start_at_zero(scan_layers):
    base_model = models.DecoderForCausalLM(tiny_config(), scan_layers=scan_layers)
    model = adapted(base_model, LORA)
    params = models.init_params(model, jax.random.key(0))
    base, adapters = lora_lib.split_adapters(params)
    want = jax.eval_shape(lambda: models.init_params(base_model, jax.random.key(0)))
    assert jax.tree.structure(base) == jax.tree.structure(want)
    layer = adapters["model"]["layers" if scan_layers else "layers_0"]
    assert set(layer["self_attn"]) == {"q_proj", "v_proj", "o_proj"}
    assert set(layer["mlp"]) == {"down_proj"}
    assert all(k in ("lora_a", "lora_b") for k in layer["self_attn"]["q_proj"])
    assert jax.tree.structure(lora_lib.merge_adapters(base, adapters)) == jax.tree.structure(params)
    # lora_b starts at zero: the adapted network is its base
    ids = jnp.asarray(random_ids(2, 7, seed=0))
    np.testing.assert_array_equal(
        model.apply({"params": params}, ids), base_model.apply({"params": base}, ids)
    )


def test_adapters_are_sharded_by_the_rules_table():
    every = LoraConfig(2, 4.0)
    assert every.targets == LORA_TARGETS
    model = adapted(models.DecoderForCausalLM(tiny_config()), every)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    specs = nn.get_partition_spec(boxed["params"])
    layer = specs["model"]["layers"]
    # [L, In, r] / [L, r, Out]: In and Out as the kernel's, r replicated
    assert tuple(layer["self_attn"]["q_proj"]["lora_a"]) == ("layers", "embed", "lora_rank")
    assert tuple(layer["self_attn"]["q_proj"]["lora_b"]) == ("layers", "lora_rank", "heads")
    assert tuple(layer["mlp"]["down_proj"]["lora_a"]) == ("layers", "mlp", "lora_rank")
    assert ("lora_rank", None) in sharding.LOGICAL_AXIS_RULES


def test_merged_kernels_give_the_adapted_logits():
    base_model = models.DecoderForCausalLM(tiny_config())
    model = adapted(base_model, LORA)
    base, _ = lora_lib.split_adapters(models.init_params(model, jax.random.key(0)))
    adapters = random_adapters(model, seed=3)
    full = lora_lib.merge_adapters(base, adapters)
    ids = jnp.asarray(random_ids(2, 9, seed=1))
    got = model.apply({"params": full}, ids)
    merged = lora_lib.merge_into_kernels(full, LORA)
    np.testing.assert_allclose(base_model.apply({"params": merged}, ids), got, atol=1e-5, rtol=1e-5)
    assert np.abs(np.asarray(got - base_model.apply({"params": base}, ids))).max() > 1e-3


def test_peft_adapter_and_merged_export_match_transformers(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is needed for the PEFT parity test")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft", reason="peft is needed for the PEFT parity test")
    torch.manual_seed(0)
    hf_model = hf_random_model(torch, transformers, "Qwen2ForCausalLM", num_key_value_heads=2)
    hf_model.save_pretrained(tmp_path / "base")
    base_model, base = models.load_pretrained(tmp_path / "base")
    lora = LoraConfig(rank=4, alpha=8.0)  # every projection
    model = adapted(base_model, lora)
    adapters = random_adapters(model, seed=5)
    ids = random_ids(3, 11, seed=2)
    got = np.asarray(jax.jit(model.apply)({"params": lora_lib.merge_adapters(base, adapters)}, ids))

    out = lora_lib.save_peft_adapter(adapters, lora, tmp_path / "adapter", base_model="base")
    config = json.loads((out / lora_lib.ADAPTER_CONFIG_NAME).read_text())
    assert (config["r"], config["lora_alpha"]) == (4, 8.0)
    tensors = lora_lib.peft_tensors(adapters)
    name = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"
    chex.assert_shape(tensors[name], (4, 32))
    chex.assert_shape(tensors[name.replace("lora_A", "lora_B")], (32, 4))
    plain = hf_logits(torch, hf_model, ids)
    peft_model = peft.PeftModel.from_pretrained(hf_model, out).eval()  # adapts hf_model in place
    want = hf_logits(torch, peft_model, ids)
    print(f"max |rlr - peft| logits: {np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert np.abs(want - plain).max() > 1e-2  # the adapters change the logits

    models.save_pretrained(
        base_model,
        lora_lib.merge_into_kernels(lora_lib.merge_adapters(base, adapters), lora),
        tmp_path / "merged",
    )
    merged = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "merged").eval()
    np.testing.assert_allclose(hf_logits(torch, merged, ids), got, atol=1e-4, rtol=1e-4)
