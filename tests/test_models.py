"""rlr.models on Qwen2: parity with transformers' torch Qwen2, HF weight I/O, padding, heads,
errors (the other families: test_model_families.py)."""

from __future__ import annotations

import functools
import json

import chex
import flax.linen as nn
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlr import models

VOCAB = 96


def tiny_config(**overrides) -> models.DecoderConfig:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=10000.0,
    )
    fields.update(overrides)
    return models.DecoderConfig(**fields)


def random_params(model, seed: int):
    """Random params with non-trivial biases and norm scales (init leaves those at 0 / 1)."""

    def make(key):
        init_key, noise_key = jax.random.split(key)
        params = nn.meta.unbox(model.init(init_key, jnp.zeros((1, 4), jnp.int32)))["params"]
        leaves, treedef = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(noise_key, len(leaves))
        noisy = [
            leaf + 0.3 * jax.random.normal(k, leaf.shape) if leaf.ndim == 1 else leaf * 5.0
            for leaf, k in zip(leaves, keys)
        ]
        return jax.tree_util.tree_unflatten(treedef, noisy)

    return jax.jit(make)(jax.random.key(seed))


def random_ids(batch: int, length: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(1, VOCAB, size=(batch, length)).astype(np.int32)


@pytest.fixture(scope="module")
def torch_hf():
    torch = pytest.importorskip("torch", reason="torch is needed for HF parity tests")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return torch, transformers


def hf_random_model(torch, transformers, cls_name: str, **config):
    """A transformers model with random weights, biases and norm scales."""
    config.setdefault("num_attention_heads", 4)
    hf_config = transformers.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        **config,
    )
    model = getattr(transformers, cls_name)(hf_config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(0.3 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.1)
    return model


def hf_logits(torch, model, ids, mask=None, positions=None):
    kwargs = {}
    if mask is not None:
        kwargs["attention_mask"] = torch.tensor(np.asarray(mask), dtype=torch.long)
    if positions is not None:
        kwargs["position_ids"] = torch.tensor(np.asarray(positions), dtype=torch.long)
    with torch.no_grad():
        return model(torch.tensor(np.asarray(ids), dtype=torch.long), **kwargs).logits.numpy()


CAUSAL_CASES = {
    "mha_untied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
    "gqa_tied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "mqa_untied": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False),
    "gqa_wide_head_dim": dict(
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=500.0
    ),
}


@pytest.mark.parametrize("case", sorted(CAUSAL_CASES))
def test_causal_lm_matches_transformers(torch_hf, tmp_path, case):
    torch, transformers = torch_hf
    hf_model = hf_random_model(torch, transformers, "Qwen2ForCausalLM", **CAUSAL_CASES[case])
    hf_model.save_pretrained(tmp_path)
    model, params = models.load_pretrained(tmp_path)
    assert isinstance(model, models.DecoderForCausalLM)
    assert model.config.tie_word_embeddings == hf_model.config.tie_word_embeddings
    assert ("lm_head" in params) != model.config.tie_word_embeddings
    ids = random_ids(3, 11, seed=1)
    got = jax.jit(model.apply)({"params": params}, jnp.asarray(ids))
    chex.assert_shape(got, (3, 11, VOCAB))
    np.testing.assert_allclose(got, hf_logits(torch, hf_model, ids), atol=1e-4, rtol=1e-4)

    # And back: rlr's export loads in transformers with the same logits.
    out = tmp_path / "exported"
    models.save_pretrained(model, params, out)
    reloaded = transformers.Qwen2ForCausalLM.from_pretrained(out).eval()
    np.testing.assert_allclose(hf_logits(torch, reloaded, ids), got, atol=1e-4, rtol=1e-4)


def test_padded_rows_match_transformers_with_positions(torch_hf, tmp_path):
    torch, transformers = torch_hf
    hf_model = hf_random_model(torch, transformers, "Qwen2ForCausalLM", num_key_value_heads=2)
    hf_model.save_pretrained(tmp_path)
    model, params = models.load_pretrained(tmp_path)
    ids = random_ids(2, 9, seed=2)
    mask = np.ones_like(ids)
    mask[0, :3] = 0  # left padded
    mask[1, 6:] = 0  # right padded
    positions = np.asarray(models.default_positions(jnp.asarray(mask)))
    got = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(ids), jnp.asarray(mask)))
    want = hf_logits(torch, hf_model, ids, mask, positions)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_token_classification_matches_transformers(torch_hf, tmp_path, bias):
    torch, transformers = torch_hf
    hf_model = hf_random_model(
        torch,
        transformers,
        "Qwen2ForTokenClassification",
        num_labels=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        token_classification_bias=bias,
    )
    hf_model.save_pretrained(tmp_path)
    model, params = models.load_pretrained(tmp_path)
    assert isinstance(model, models.DecoderForTokenClassification)
    assert (model.num_labels, model.use_bias) == (3, bias)
    ids = random_ids(2, 7, seed=3)
    got = jax.jit(model.apply)({"params": params}, jnp.asarray(ids))
    chex.assert_shape(got, (2, 7, 3))
    np.testing.assert_allclose(got, hf_logits(torch, hf_model, ids), atol=1e-4, rtol=1e-4)
    models.save_pretrained(model, params, tmp_path / "exported")
    reloaded = transformers.AutoModelForTokenClassification.from_pretrained(
        tmp_path / "exported"
    ).eval()
    np.testing.assert_allclose(hf_logits(torch, reloaded, ids), got, atol=1e-4, rtol=1e-4)


def test_sequence_classification_matches_transformers(torch_hf, tmp_path):
    torch, transformers = torch_hf
    pad = 0
    hf_model = hf_random_model(
        torch,
        transformers,
        "Qwen2ForSequenceClassification",
        num_labels=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=pad,
    )
    hf_model.save_pretrained(tmp_path)
    model, params = models.load_pretrained(tmp_path)
    assert isinstance(model, models.DecoderForSequenceClassification)
    ids = random_ids(3, 8, seed=4)
    mask = np.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = pad, 0  # right padded
    ids[2, 2:], mask[2, 2:] = pad, 0
    got = jax.jit(model.apply)({"params": params}, jnp.asarray(ids), jnp.asarray(mask))
    chex.assert_shape(got, (3, 2))
    np.testing.assert_allclose(got, hf_logits(torch, hf_model, ids, mask), atol=1e-4, rtol=1e-4)
    models.save_pretrained(model, params, tmp_path / "exported")
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "exported"
    ).eval()
    np.testing.assert_allclose(hf_logits(torch, reloaded, ids, mask), got, atol=1e-4, rtol=1e-4)


def test_sharded_checkpoints_round_trip(torch_hf, tmp_path):
    torch, transformers = torch_hf
    hf_model = hf_random_model(torch, transformers, "Qwen2ForCausalLM", num_key_value_heads=2)
    hf_model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "hf").glob("*.safetensors"))) > 1
    model, params = models.load_pretrained(tmp_path / "hf")
    ids = random_ids(2, 6, seed=5)
    want = hf_logits(torch, hf_model, ids)
    np.testing.assert_allclose(
        jax.jit(model.apply)({"params": params}, jnp.asarray(ids)), want, atol=1e-4, rtol=1e-4
    )
    models.save_pretrained(model, params, tmp_path / "rlr", max_shard_bytes=30_000)
    assert len(list((tmp_path / "rlr").glob("*.safetensors"))) > 1
    reloaded = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "rlr").eval()
    np.testing.assert_allclose(hf_logits(torch, reloaded, ids), want, atol=1e-4, rtol=1e-4)
    _, params_again = models.load_pretrained(tmp_path / "rlr")
    chex.assert_trees_all_equal(params, params_again)


@pytest.fixture(scope="module")
def causal():
    model = models.DecoderForCausalLM(tiny_config())
    params = random_params(model, seed=0)
    return model, params, jax.jit(model.apply)


def test_left_and_right_padding_leave_real_logits_unchanged(causal):
    model, params, apply = causal
    ids = random_ids(1, 6, seed=6)
    alone = apply({"params": params}, jnp.asarray(ids))[0]
    left = np.concatenate([np.zeros((1, 3), np.int32), ids], axis=1)
    right = np.concatenate([ids, np.zeros((1, 3), np.int32)], axis=1)
    mask_left = np.concatenate([np.zeros((1, 3)), np.ones((1, 6))], axis=1).astype(np.int32)
    batch = jnp.asarray(np.concatenate([left, right]))
    mask = jnp.asarray(np.concatenate([mask_left, mask_left[:, ::-1]]))
    padded = apply({"params": params}, batch, mask)
    assert np.all(np.isfinite(padded))
    np.testing.assert_allclose(padded[0, 3:], alone, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(padded[1, :6], alone, atol=1e-5, rtol=1e-5)


def test_cache_take_rows_continues_like_a_smaller_batch(causal):
    model, params, _ = causal
    ids = jnp.asarray(random_ids(3, 5, seed=3))
    positions = jnp.broadcast_to(jnp.arange(5), (3, 5))

    def prefill_then_step(rows_ids, take=None):
        cache = models.init_cache(model.config, jnp.ones((rows_ids.shape[0], 6), jnp.int32))
        _, cache = model.apply(
            {"params": params}, rows_ids, positions=positions[: len(rows_ids)], cache=cache
        )
        if take is not None:
            cache = cache.take_rows(jnp.asarray(take))
            rows_ids = rows_ids[jnp.asarray(take)]
        step = jnp.full((rows_ids.shape[0], 1), 5)
        logits, cache = model.apply(
            {"params": params}, rows_ids[:, -1:], positions=step, cache=cache
        )
        return logits, cache

    kept, cache = prefill_then_step(ids, take=[2, 0])
    alone, _ = prefill_then_step(ids[jnp.asarray([2, 0])])
    assert cache.key_mask.shape == (2, 6) and int(cache.index) == 6
    np.testing.assert_allclose(kept, alone, atol=1e-5, rtol=1e-5)


def test_logits_are_causal(causal):
    model, params, apply = causal
    ids = random_ids(1, 8, seed=7)
    changed = ids.copy()
    changed[0, 5:] = (changed[0, 5:] + 1) % VOCAB
    a = apply({"params": params}, jnp.asarray(ids))
    b = apply({"params": params}, jnp.asarray(changed))
    np.testing.assert_allclose(a[0, :5], b[0, :5], atol=1e-6)
    assert np.abs(a[0, 5:] - b[0, 5:]).max() > 1e-3


def test_bf16_params_with_f32_compute_stay_close(causal):
    model, params, apply = causal
    model16 = models.DecoderForCausalLM(model.config, dtype=jnp.float32, param_dtype=jnp.bfloat16)
    params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    ids = jnp.asarray(random_ids(2, 5, seed=8))
    want = apply({"params": params}, ids)
    got = jax.jit(model16.apply)({"params": params16}, ids)
    assert got.dtype == jnp.float32
    assert np.abs(np.asarray(got) - np.asarray(want)).max() < 0.05 * np.abs(want).max()
    shapes = jax.eval_shape(lambda: models.init_params(model16, jax.random.key(0)))
    assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.bfloat16)}


def test_bf16_compute_stays_close(causal):
    model, params, apply = causal
    model16 = models.DecoderForCausalLM(model.config, dtype=jnp.bfloat16)
    ids = jnp.asarray(random_ids(2, 5, seed=10))
    want = np.asarray(apply({"params": params}, ids))
    got = jax.jit(model16.apply)({"params": params}, ids)
    assert got.dtype == jnp.float32  # logits come back in f32 whatever the compute dtype
    assert np.abs(np.asarray(got) - want).max() < 0.05 * np.abs(want).max()


def test_bf16_checkpoint_round_trip(causal, tmp_path):
    model, params, _ = causal
    params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    models.save_pretrained(model, params16, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    _, loaded = models.load_pretrained(tmp_path, param_dtype=jnp.bfloat16)
    chex.assert_trees_all_equal(loaded, params16)
    placement = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: placement, params16)
    _, placed = models.load_pretrained(tmp_path, param_dtype=jnp.bfloat16, shardings=shardings)
    chex.assert_trees_all_equal(placed, params16)
    assert all(leaf.sharding == placement for leaf in jax.tree.leaves(placed))


def as_tuples(specs):
    return jax.tree.map(tuple, specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def test_parameters_carry_logical_axis_names():
    cfg = tiny_config(tie_word_embeddings=False)
    boxed = jax.eval_shape(
        lambda: models.DecoderForCausalLM(cfg).init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
    )
    specs = as_tuples(nn.get_partition_spec(boxed))["params"]
    layer = specs["model"]["layers"]  # the scanned layers' params, stacked on a "layers" axis
    assert specs["model"]["embed_tokens"]["embedding"] == ("vocab", "embed")
    assert layer["self_attn"]["q_proj"]["kernel"] == ("layers", "embed", "heads")
    assert layer["self_attn"]["q_proj"]["bias"] == ("layers", "heads")
    assert layer["self_attn"]["k_proj"]["kernel"] == ("layers", "embed", "kv_heads")
    assert layer["self_attn"]["v_proj"]["bias"] == ("layers", "kv_heads")
    assert layer["self_attn"]["o_proj"] == {"kernel": ("layers", "heads", "embed")}
    assert layer["mlp"]["gate_proj"]["kernel"] == ("layers", "embed", "mlp")
    assert layer["mlp"]["down_proj"]["kernel"] == ("layers", "mlp", "embed")
    assert layer["input_layernorm"]["scale"] == ("layers", "norm")
    assert specs["lm_head"]["kernel"] == ("embed", "vocab")
    score = jax.eval_shape(
        lambda: models.DecoderForTokenClassification(cfg, num_labels=1).init(
            jax.random.key(0), jnp.zeros((1, 2), jnp.int32)
        )
    )
    assert as_tuples(nn.get_partition_spec(score))["params"]["score"]["kernel"] == ("embed", None)


def test_heads_share_a_trunk(causal):
    model, params, apply = causal
    critic = models.DecoderForTokenClassification(model.config, num_labels=1)
    head = models.ScoreHead(1)
    head_params = head.init(jax.random.key(3), jnp.zeros((1, model.config.hidden_size)))
    ids = jnp.asarray(random_ids(2, 5, seed=9))
    logits, hidden = jax.jit(functools.partial(model.apply, return_hidden=True))(
        {"params": params}, ids
    )
    chex.assert_shape(hidden, (2, 5, model.config.hidden_size))
    values = head.apply(nn.meta.unbox(head_params), hidden)
    shared = {"model": params["model"], "score": nn.meta.unbox(head_params)["params"]}
    np.testing.assert_allclose(jax.jit(critic.apply)({"params": shared}, ids), values, atol=1e-5)
    np.testing.assert_allclose(logits, apply({"params": params}, ids), atol=1e-5)


def reference_last_index(ids, mask, pad):
    out = []
    for row_ids, row_mask in zip(ids, mask):
        last = len(row_ids) - 1 if pad is None else 0
        for i, token in enumerate(row_ids):
            if (token != pad) if pad is not None else row_mask[i]:
                last = i
        out.append(last)
    return np.array(out)


@hypothesis.settings(deadline=None, max_examples=30)
@hypothesis.given(
    starts=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    lengths=st.lists(st.integers(1, 6), min_size=4, max_size=4),
    use_pad=st.booleans(),
)
def test_last_token_index_matches_loop(starts, lengths, use_pad):
    width, pad = 12, 0
    ids = np.zeros((len(starts), width), np.int32)
    mask = np.zeros_like(ids)
    for b, start in enumerate(starts):
        ids[b, start : start + lengths[b]] = 5 + b
        mask[b, start : start + lengths[b]] = 1
    got = models.last_token_index(
        jnp.asarray(ids), jnp.asarray(mask), pad_token_id=pad if use_pad else None
    )
    want = reference_last_index(ids, mask, pad if use_pad else None)
    np.testing.assert_array_equal(got, want)


def reference_math_shepherd(logits, positions, plus_id, minus_id):
    out = np.zeros(positions.shape)
    for b in range(positions.shape[0]):
        for k in range(positions.shape[1]):
            plus = logits[b, positions[b, k], plus_id]
            minus = logits[b, positions[b, k], minus_id]
            out[b, k] = np.exp(plus) / (np.exp(plus) + np.exp(minus))
    return out


class MathShepherdTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_loop_reference(self):
        rng = np.random.RandomState(0)
        logits = rng.normal(size=(3, 10, 16)).astype(np.float32) * 3
        positions = rng.randint(0, 10, size=(3, 4))
        fn = self.variant(
            functools.partial(models.math_shepherd_step_scores, plus_id=7, minus_id=2)
        )
        got = fn(jnp.asarray(logits), jnp.asarray(positions))
        np.testing.assert_allclose(got, reference_math_shepherd(logits, positions, 7, 2), atol=1e-6)

    def test_bad_token_id_raises(self):
        with pytest.raises(ValueError, match="plus_id"):
            models.math_shepherd_step_scores(
                jnp.zeros((1, 3, 8)), jnp.zeros((1, 2), jnp.int32), plus_id=8, minus_id=0
            )


def base_hf_config(**overrides):
    hf = tiny_config().to_hf()
    hf.update(overrides)
    return hf


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling"),
        (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0}), "rope_type"),
        (dict(num_key_value_heads=3), "num_key_value_heads"),
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(model_type="gemma"), "model_type"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(head_dim=7), "head_dim"),
    ],
)
def test_bad_configs_raise(overrides, field):
    with pytest.raises(ValueError, match=field):
        models.DecoderConfig.from_hf(base_hf_config(**overrides))


def test_config_round_trips_and_reads_rope_forms():
    cfg = tiny_config(head_dim=16, rope_theta=1e6, eos_token_id=(3, 4))
    assert models.DecoderConfig.from_hf(cfg.to_hf()) == cfg
    hf = base_hf_config(rope_parameters=None, rope_theta=123.0)
    assert models.DecoderConfig.from_hf(hf).rope_theta == 123.0
    hf = base_hf_config(rope_parameters={"rope_type": "default", "rope_theta": 77.0})
    del hf["rope_theta"]
    assert models.DecoderConfig.from_hf(hf).rope_theta == 77.0
    assert models.DecoderConfig.from_hf(base_hf_config(head_dim=None)).head_dim == 8
    with pytest.raises(ValueError, match="num_hidden_layers"):
        hf = base_hf_config()
        del hf["num_hidden_layers"]
        models.DecoderConfig.from_hf(hf)


def test_sliding_window_shorter_than_sequence_raises():
    hf = base_hf_config(use_sliding_window=True, sliding_window=4, max_window_layers=0)
    cfg = models.DecoderConfig.from_hf(hf)
    assert cfg.sliding_window == 4
    model = models.DecoderForCausalLM(cfg)
    params = jax.eval_shape(lambda: models.init_params(model, jax.random.key(0)))
    apply = functools.partial(jax.eval_shape, model.apply, {"params": params})
    apply(jnp.zeros((1, 4), jnp.int32))  # fits in the window
    with pytest.raises(ValueError, match="sliding_window"):
        apply(jnp.zeros((1, 5), jnp.int32))
    # A window that no layer uses (all layers below max_window_layers) is no restriction.
    hf = base_hf_config(use_sliding_window=True, sliding_window=4, max_window_layers=2)
    assert models.DecoderConfig.from_hf(hf).sliding_window is None


def test_load_errors_name_the_problem(causal, tmp_path):
    model, params, _ = causal
    with pytest.raises(ValueError, match="config.json"):
        models.load_pretrained(tmp_path)
    models.save_pretrained(model, params, tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="model.safetensors"):
        models.load_pretrained(tmp_path)

    broken = dict(params, model=dict(params["model"]))
    del broken["model"]["norm"]
    models.save_pretrained(model, broken, tmp_path / "missing")
    with pytest.raises(ValueError, match=r"'model\.norm\.weight'.*model\.safetensors"):
        models.load_pretrained(tmp_path / "missing")

    models.save_pretrained(model, params, tmp_path / "shape")
    hf = json.loads((tmp_path / "shape" / "config.json").read_text())
    hf["intermediate_size"] = 48
    (tmp_path / "shape" / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match=r"mlp\.\w+_proj\.weight.*has shape"):
        models.load_pretrained(tmp_path / "shape")

    hf["intermediate_size"] = 64
    hf["architectures"] = ["Qwen2ForQuestionAnswering"]
    (tmp_path / "shape" / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="architectures"):
        models.load_pretrained(tmp_path / "shape")


def test_remat_keeps_parameters_and_gradients():
    config = models.DecoderConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    plain = models.DecoderForCausalLM(config)
    remat = models.DecoderForCausalLM(config, remat=True)
    params = models.init_params(plain, jax.random.key(0))
    assert jax.tree.structure(models.init_params(remat, jax.random.key(0))) == (
        jax.tree.structure(params)
    )
    ids = jax.random.randint(jax.random.key(1), (2, 9), 0, 64)

    def loss(model, p):
        return jnp.mean(jax.nn.log_softmax(model.apply({"params": p}, ids))[..., 0])

    g_plain = jax.grad(lambda p: loss(plain, p))(params)
    g_remat = jax.grad(lambda p: loss(remat, p))(params)
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
