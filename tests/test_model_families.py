"""One decoder for every family: Qwen3, Llama 3.x and Mistral against transformers (f32, 1e-4),
HF directories in and out, llama3 RoPE, and the sampler on each family (greedy = HF generate)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlr import models, sampling

VOCAB = 96
PAD, EOS = 0, 1

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
    "rope_theta": 500000.0,
}
# family -> {case: transformers config kwargs}; heads 4 with kv 4 (MHA), 2 (GQA) or 1 (MQA)
CASES = {
    "qwen3_gqa_untied": ("Qwen3", dict(num_key_value_heads=2, head_dim=16)),
    "qwen3_mha_tied_bias": (
        "Qwen3",
        dict(num_key_value_heads=4, tie_word_embeddings=True, attention_bias=True),
    ),
    "llama_gqa_tied_llama3_rope": (
        "Llama",
        dict(num_key_value_heads=2, tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE),
    ),
    "llama_mha_untied_biases": (
        "Llama",
        dict(num_key_value_heads=4, attention_bias=True, mlp_bias=True),
    ),
    "mistral_gqa_untied": ("Mistral", dict(num_key_value_heads=2, sliding_window=None)),
    "mistral_mqa_tied_window": (
        "Mistral",
        dict(num_key_value_heads=1, tie_word_embeddings=True, sliding_window=64),
    ),
}


@pytest.fixture(scope="module")
def torch_hf():
    torch = pytest.importorskip("torch", reason="torch is needed for HF parity tests")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return torch, transformers


def hf_random_model(torch, transformers, family: str, head: str = "ForCausalLM", **config):
    """A transformers `{family}{head}` with random weights, biases and norm scales."""
    hf_config = getattr(transformers, f"{family}Config")(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=2,
        **config,
    )
    model = getattr(transformers, f"{family}{head}")(hf_config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(0.3 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.1)
    return model


def hf_logits(torch, model, ids, mask):
    with torch.no_grad():
        out = model(
            torch.tensor(np.asarray(ids), dtype=torch.long),
            attention_mask=torch.tensor(np.asarray(mask), dtype=torch.long),
        )
    return out.logits.numpy()


def padded_batch(seed: int = 0, width: int = 12):
    """Three rows: full, left-padded and right-padded."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, VOCAB, size=(3, width)).astype(np.int32)
    mask = np.ones((3, width), np.int32)
    mask[1, :4] = 0
    mask[2, -5:] = 0
    ids[mask == 0] = PAD
    return ids, mask


@pytest.fixture(scope="module", params=sorted(CASES))
def family_case(request, torch_hf, tmp_path_factory):
    """(case, transformers model, its directory, rlr model, rlr params)."""
    torch, transformers = torch_hf
    family, kwargs = CASES[request.param]
    hf_model = hf_random_model(torch, transformers, family, **kwargs)
    directory = tmp_path_factory.mktemp(request.param)
    hf_model.save_pretrained(directory)
    model, params = models.load_pretrained(directory)
    return request.param, hf_model, directory, model, params


def test_config_reads_the_family_switches(family_case):
    case, hf_model, directory, model, _ = family_case
    cfg = model.config
    hf = json.loads((directory / "config.json").read_text())
    assert cfg.model_type == hf["model_type"]
    assert cfg.qk_norm == (hf["model_type"] == "qwen3")
    if hf["model_type"] == "mistral":
        assert not cfg.attention_bias and not cfg.attention_out_bias
        assert cfg.sliding_window == hf.get("sliding_window")
    else:
        assert cfg.attention_bias == cfg.attention_out_bias == hf["attention_bias"]
    assert (cfg.rope_scaling is not None) == ("llama3" in case)
    assert cfg.tie_word_embeddings == hf["tie_word_embeddings"]


def test_logits_match_transformers(torch_hf, family_case):
    torch, _ = torch_hf
    _, hf_model, _, model, params = family_case
    ids, mask = padded_batch()
    want = hf_logits(torch, hf_model, ids, mask)
    got = np.asarray(jax.jit(model.apply)({"params": params}, ids, mask))
    real = mask > 0
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-4)


def test_saved_directory_loads_in_transformers(torch_hf, family_case, tmp_path):
    torch, transformers = torch_hf
    _, hf_model, _, model, params = family_case
    models.save_pretrained(model, params, tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["architectures"] == [type(hf_model).__name__]
    reloaded = getattr(transformers, type(hf_model).__name__).from_pretrained(tmp_path).eval()
    ids, mask = padded_batch(seed=1)
    np.testing.assert_allclose(
        hf_logits(torch, reloaded, ids, mask)[mask > 0],
        hf_logits(torch, hf_model, ids, mask)[mask > 0],
        atol=1e-5,
    )
    again, _ = models.load_pretrained(tmp_path)
    assert again.config == model.config


def test_greedy_sampling_equals_transformers_generate(torch_hf, family_case):
    torch, _ = torch_hf
    _, hf_model, _, model, params = family_case
    steps = 6
    sampler = sampling.Sampler(model, max_new_tokens=steps, eos_id=EOS, pad_id=PAD, temperature=0.0)
    ids = np.random.RandomState(3).randint(3, VOCAB, size=(2, 5)).astype(np.int32)
    out = sampler(params, ids, np.ones_like(ids), jax.random.key(0))
    with torch.no_grad():
        generated = hf_model.generate(
            torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.ones(ids.shape, dtype=torch.long),
            max_new_tokens=steps,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=EOS,
        ).numpy()[:, ids.shape[1] :]
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        np.testing.assert_array_equal(tokens[b, :n], generated[b, :n])


@pytest.mark.parametrize("family", ["Qwen3", "Llama", "Mistral"])
def test_score_heads_match_transformers(torch_hf, tmp_path, family):
    torch, transformers = torch_hf
    hf_model = hf_random_model(
        torch, transformers, family, "ForTokenClassification", num_labels=1, num_key_value_heads=2
    )
    hf_model.save_pretrained(tmp_path)
    model, params = models.load_pretrained(tmp_path)
    assert isinstance(model, models.DecoderForTokenClassification)
    ids, mask = padded_batch(seed=2)
    got = np.asarray(jax.jit(model.apply)({"params": params}, ids, mask))
    np.testing.assert_allclose(
        got[mask > 0], hf_logits(torch, hf_model, ids, mask)[mask > 0], atol=1e-4
    )


def test_llama3_frequencies_match_transformers(torch_hf):
    torch, transformers = torch_hf
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.LlamaConfig(
        hidden_size=256,
        num_attention_heads=2,
        max_position_embeddings=1024,
        rope_parameters=dict(LLAMA3_ROPE, original_max_position_embeddings=512),
    )
    want, scale = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    scaling = models.DecoderConfig.from_hf(
        {**config.to_dict(), "intermediate_size": 8, "vocab_size": 8}
    ).rope_scaling
    got = models.rope_frequencies(128, theta=500000.0, scaling=scaling)
    assert scale == 1.0
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-6)
    # the three bands all occur at this size: kept, divided by the factor, interpolated
    plain = np.asarray(models.rope_frequencies(128, theta=500000.0))
    ratio = plain / np.asarray(got)
    assert np.isclose(ratio, 1.0).any() and np.isclose(ratio, 8.0).any()
    assert ((ratio > 1.01) & (ratio < 7.99)).any()


BASE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(model_type="llama", rope_scaling={"rope_type": "yarn", "factor": 4.0}), "'yarn'"),
        (dict(model_type="llama", rope_parameters={"rope_type": "dynamic"}), "'dynamic'"),
        (dict(model_type="llama", rope_parameters={"rope_type": "llama3", "factor": 8.0}), "lacks"),
        (dict(model_type="gemma2"), "model_type"),
    ],
)
def test_unsupported_family_features_raise(overrides, field):
    with pytest.raises(ValueError, match=field):
        models.DecoderConfig.from_hf({**BASE, **overrides})


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "llama", "mistral"])
def test_configs_round_trip_per_family(model_type):
    cfg = models.DecoderConfig.from_hf(
        {**BASE, "model_type": model_type, "rope_parameters": LLAMA3_ROPE, "sliding_window": 32}
    )
    assert models.DecoderConfig.from_hf(cfg.to_hf()) == cfg
    assert cfg.rope_scaling.factor == 8.0 and cfg.rope_theta == 500000.0
    assert cfg.sliding_window == (32 if model_type == "mistral" else None)


def test_qwen3_norms_and_biases_are_parameters():
    cfg = models.DecoderConfig.from_hf({**BASE, "model_type": "qwen3", "attention_bias": False})
    params = jax.eval_shape(
        lambda: models.init_params(models.DecoderForCausalLM(cfg), jax.random.key(0))
    )
    attn = params["model"]["layers"]["self_attn"]  # stacked: a leading [L] axis
    assert attn["q_norm"]["scale"].shape == (cfg.num_hidden_layers, cfg.head_dim)
    assert "bias" not in attn["q_proj"] and "bias" not in attn["o_proj"]
    qwen2 = models.DecoderConfig.from_hf({**BASE, "model_type": "qwen2"})
    attn = jax.eval_shape(
        lambda: models.init_params(models.DecoderForCausalLM(qwen2), jax.random.key(0))
    )["model"]["layers"]["self_attn"]
    assert "bias" in attn["q_proj"] and "bias" not in attn["o_proj"] and "q_norm" not in attn
    assert jnp.dtype(attn["q_proj"]["kernel"].dtype) == jnp.float32


@pytest.mark.parametrize("model_type", ["qwen3", "llama", "mistral"])
def test_one_ppo_iteration_trains_each_family(tmp_path, model_type):
    """A fresh policy of each family (inline architecture) samples, scores and updates; the
    export is that family's HF directory."""
    import dataclasses

    from ppo_setup import tiny_config
    from toy_assets import shared_toy_assets

    from rlr.training.ppo import PPOTrainer
    from rlr.training.schemas import ModelSpec

    assets = shared_toy_assets(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    architecture = dict(
        model_type=model_type,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=model_type == "llama",
    )
    if model_type == "llama":
        architecture["rope_parameters"] = dict(LLAMA3_ROPE, original_max_position_embeddings=32)
    config = tiny_config(
        assets,
        tmp_path / "run",
        iterations=1,
        policy=ModelSpec(architecture=architecture),
    )
    config = dataclasses.replace(
        config,
        ppo=dataclasses.replace(config.ppo, minibatches=1),
        reward=dataclasses.replace(config.reward, method="raw"),  # a nonzero reward to learn
    )
    trainer = PPOTrainer(config)
    assert trainer.models.policy.config.model_type == model_type
    before = jax.tree.map(np.asarray, trainer.state.params["policy"])
    summary = trainer.run()
    assert summary["end_iteration"] == 1
    after = jax.tree.map(np.asarray, trainer.state.params["policy"])
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after))
    assert any(changed)
    out = trainer.export_policy(tmp_path / "export")
    hf = json.loads((out / "config.json").read_text())
    assert hf["model_type"] == model_type
    assert hf["architectures"] == [f"{models.FAMILIES[model_type]}ForCausalLM"]
