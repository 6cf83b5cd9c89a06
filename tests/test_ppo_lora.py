"""PPO with low-rank adapters on the policy (policy.lora) and on the critic (ppo.critic_lora):
config errors, what the state and the frozen networks hold, training, exact resume, exports
and the plan."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from ppo_setup import make_assets, tiny_config

from rlr import configs
from rlr.config_loading import ConfigError, load_config
from rlr.models import load_pretrained
from rlr.models import lora as lora_lib
from rlr.models.architecture import LORA_TARGETS as MODEL_TARGETS
from rlr.training import loading
from rlr.training.metrics import read_metrics
from rlr.training.ppo import PPOTrainer
from rlr.training.schemas import (
    LORA_TARGETS,
    CriticLoRASpec,
    LoRASpec,
    ModelSpec,
    PPOConfig,
    PPOSpec,
    RewardSpec,
    SFTConfig,
)

LORA = LoRASpec(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "gate_proj", "down_proj"))
# raw PRM scores: a reward that is not zero on random weights, so the update has a gradient
REWARD = RewardSpec(use_prm=True, method="raw", alpha=1.0, max_steps=8)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("ppo_lora_assets"))


def lora_config(assets, out, **changes):
    base = tiny_config(assets, out, reward=REWARD)
    return dataclasses.replace(base, policy=dataclasses.replace(base.policy, lora=LORA), **changes)


@pytest.fixture(scope="module")
def straight(assets, tmp_path_factory):
    """A 2-iteration LoRA run, uninterrupted; returns (trainer, out_dir)."""
    out = tmp_path_factory.mktemp("lora_straight")
    trainer = PPOTrainer(lora_config(assets, out))
    trainer.run()
    return trainer, out


def test_lora_keys_are_checked_and_name_their_field():
    assert LORA_TARGETS == MODEL_TARGETS
    with pytest.raises(ConfigError, match=r"policy.lora.rank must be a positive int"):
        LoRASpec(rank=0)
    with pytest.raises(ConfigError, match=r"policy.lora.targets: \['qkv'\] are not projections"):
        LoRASpec(targets=("q_proj", "qkv"))
    with pytest.raises(ConfigError, match=r"policy.lora.dropout=0.1: PPO's importance ratio"):
        LoRASpec(dropout=0.1)


def test_lora_on_a_network_that_does_not_train_is_an_error(assets, tmp_path):
    config = tiny_config(assets, tmp_path)
    with pytest.raises(ConfigError, match=r"prm.lora: the PRM is frozen in a PPO run"):
        dataclasses.replace(config, prm=dataclasses.replace(config.prm, lora=LoRASpec()))
    with pytest.raises(ConfigError, match=r"model.lora: rlr sft trains every weight"):
        SFTConfig(tokenizer="t", model=ModelSpec(path="p", lora=LoRASpec()))


def test_state_holds_only_adapters_and_the_reference_is_the_base(straight, assets):
    trainer, _ = straight
    adapters = trainer.state.params["policy"]
    leaves = jax.tree_util.tree_flatten_with_path(adapters)[0]
    assert leaves and all(str(path[-1].key) in ("lora_a", "lora_b") for path, _ in leaves)
    layer = adapters["model"]["layers"]
    assert set(layer["self_attn"]) == {"q_proj", "v_proj"}
    assert set(layer["mlp"]) == {"gate_proj", "down_proj"}
    # AdamW's moments mirror the adapters: the base weights are not in the optimizer state
    mu = trainer.state.opt_state["policy"][1][0].mu
    assert jax.tree.structure(mu) == jax.tree.structure(adapters)
    # the reference is the checkpoint's weights, untouched by training, and the only copy
    _, on_disk = load_pretrained(assets / "policy")
    reference = trainer.frozen["reference"]
    assert jax.tree.structure(reference) == jax.tree.structure(on_disk)
    for x, y in zip(jax.tree.leaves(reference), jax.tree.leaves(on_disk)):
        np.testing.assert_array_equal(np.asarray(x), y)
    full = trainer.setup.policy_params(trainer.state.params, trainer.frozen)
    kernel = lambda p: p["model"]["layers"]["self_attn"]["q_proj"]["kernel"]  # noqa: E731
    assert kernel(full) is kernel(reference)
    assert trainer.models.reference.config.lora is None
    assert trainer.models.policy.config.lora.rank == 4


def test_a_lora_run_trains_the_adapters(straight):
    trainer, out = straight
    rows = read_metrics(out)
    assert len(rows) == 2
    # B starts at zero: the first rollout's policy is its reference exactly
    assert rows[0]["kl/k1_per_token"] == 0.0
    assert rows[0]["reward/prm"] != 0.0 and rows[0]["loss/policy"] != 0.0
    # after one iteration's updates the adapters have moved the policy off the base
    assert abs(rows[1]["kl/k1_per_token"]) > 0.0
    lora_b = trainer.state.params["policy"]["model"]["layers"]["self_attn"]["q_proj"]["lora_b"]
    assert float(np.abs(np.asarray(lora_b)).max()) > 0
    assert int(trainer.state.step) > 0 and int(trainer.state.skipped) == 0


def test_lora_resume_is_bitwise_equal_to_an_uninterrupted_run(straight, assets, tmp_path):
    trainer, _ = straight
    PPOTrainer(lora_config(assets, tmp_path, iterations=1)).run()
    resumed = PPOTrainer(lora_config(assets, tmp_path))
    summary = resumed.run()
    assert summary["start_iteration"] == 1 and summary["end_iteration"] == 2
    pairs = zip(jax.tree.leaves(resumed.state), jax.tree.leaves(trainer.state))
    for x, y in pairs:
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_lora_export_is_merged_with_a_peft_adapter_beside_it(straight, tmp_path):
    trainer, _ = straight
    out = trainer.export_policy(tmp_path / "export")
    model, merged = load_pretrained(out)
    ids = np.asarray([[5, 9, 13, 2, 7]], np.int32)
    full = trainer.setup.policy_params(trainer.state.params, trainer.frozen)
    want = trainer.models.policy.apply({"params": full}, ids)
    np.testing.assert_allclose(model.apply({"params": merged}, ids), want, atol=1e-5, rtol=1e-5)
    config = json.loads((out / "adapter" / lora_lib.ADAPTER_CONFIG_NAME).read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0
    assert config["base_model_name_or_path"] == trainer.config.policy.path
    assert sorted(config["target_modules"]) == sorted(LORA.targets)
    assert (out / "adapter" / lora_lib.ADAPTER_WEIGHTS_NAME).is_file()


def test_plan_counts_adapters_and_one_base(assets, tmp_path):
    from rlr.plan import plan_shapes

    mesh = {"data": 1, "fsdp": 1, "tensor": 1}
    full = plan_shapes(tiny_config(assets, tmp_path, reward=REWARD), mesh)
    lora = plan_shapes(lora_config(assets, tmp_path), mesh)
    assert lora["lora"] and not full["lora"]
    assert lora["parameters"]["reference"] == full["parameters"]["reference"]
    assert 0 < lora["parameters"]["policy"] < full["parameters"]["policy"] // 10
    held, base = lora["per_device_bytes"], full["per_device_bytes"]
    assert held["optimizer_state"] < base["optimizer_state"]
    assert held["frozen_params"] == base["frozen_params"]  # the base is the reference
    assert held["trainable_params"] < base["trainable_params"]
    # the update reads the base as an argument under LoRA (counted once in the peak)
    assert full["update_frozen_argument_bytes"] == 0
    assert 0 < lora["update_frozen_argument_bytes"] < held["frozen_params"]


# ------------------------------------------------------------------ the critic's adapters

CRITIC_LORA = CriticLoRASpec(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "up_proj"))


def critic_lora_config(assets, out, *, policy_lora=True, critic_init=None, **changes):
    config = lora_config(assets, out) if policy_lora else tiny_config(assets, out, reward=REWARD)
    ppo = dataclasses.replace(config.ppo, critic_lora=CRITIC_LORA, critic_init=critic_init)
    return dataclasses.replace(config, ppo=ppo, **changes)


@pytest.fixture(scope="module")
def critic_straight(assets, tmp_path_factory):
    """A 2-iteration run with adapters on the policy and on the critic (critic_init=policy),
    uninterrupted; returns (trainer, out_dir)."""
    out = tmp_path_factory.mktemp("critic_lora_straight")
    trainer = PPOTrainer(critic_lora_config(assets, out))
    trainer.run()
    return trainer, out


def kernel(tree, projection="q_proj"):
    return tree["layers"]["self_attn"][projection]["kernel"]


def test_critic_lora_keys_are_checked_and_name_their_field(assets, tmp_path):
    with pytest.raises(ConfigError, match=r"ppo.critic_lora.rank must be a positive int"):
        CriticLoRASpec(rank=0)
    with pytest.raises(ConfigError, match=r"ppo.critic_lora.targets: \['score'\] are not"):
        CriticLoRASpec(targets=("score",))
    with pytest.raises(ConfigError, match=r"ppo.critic_lora.dropout=0.1: .*value clip"):
        CriticLoRASpec(dropout=0.1)
    with pytest.raises(ConfigError, match=r"ppo.critic_lora: grpo has no critic, so no critic"):
        dataclasses.replace(
            tiny_config(assets, tmp_path, algorithm="grpo"),
            ppo=PPOSpec(minibatches=2, critic_lora=CRITIC_LORA),
        )
    with pytest.raises(ConfigError, match=r"ppo.critic_lora.alpha must be > 0"):
        load_config(PPOConfig, configs.resolve("ppo_cpu"), ["ppo.critic_lora.alpha=0"])
    loaded = load_config(PPOConfig, configs.resolve("ppo_cpu"), ["ppo.critic_lora.rank=8"])
    assert loaded.ppo.critic_lora == CriticLoRASpec(rank=8)


def test_critic_state_holds_its_adapters_and_head_on_the_reference_trunk(critic_straight):
    trainer, _ = critic_straight
    critic = trainer.state.params["critic"]
    assert set(critic) == {"model", "score"}
    leaves = jax.tree_util.tree_flatten_with_path(critic["model"])[0]
    assert leaves and all(str(path[-1].key) in ("lora_a", "lora_b") for path, _ in leaves)
    assert set(critic["model"]["layers"]["self_attn"]) == {"q_proj", "v_proj"}
    assert set(critic["model"]["layers"]["mlp"]) == {"up_proj"}
    # AdamW's moments mirror the adapters and the head: no trunk weight is in the state
    mu = trainer.state.opt_state["critic"][1][0].mu
    assert jax.tree.structure(mu) == jax.tree.structure(critic)
    # the trunk is the reference's (itself the policy's base under policy.lora): one copy
    assert set(trainer.frozen) == {"reference", "prm"}
    trunk = trainer.setup.update_bases(trainer.frozen)[1]
    assert kernel(trunk) is kernel(trainer.frozen["reference"]["model"])
    policy = trainer.setup.policy_params(trainer.state.params, trainer.frozen)
    assert kernel(policy["model"]) is kernel(trunk)
    assert trainer.models.critic_base == "reference"
    assert trainer.models.critic.config.lora.targets == CRITIC_LORA.targets
    assert trainer.setup.parameter_counts()["critic"] == loading.count_params(critic)


def test_a_critic_lora_run_trains_the_adapters_and_the_head(critic_straight):
    trainer, out = critic_straight
    rows = read_metrics(out)
    assert len(rows) == 2
    assert rows[0]["value/mean"] == 0.0  # a zero head and B = 0: V = 0 before any update
    assert rows[1]["value/mean"] != 0.0 and rows[1]["loss/value"] > 0.0
    critic = trainer.state.params["critic"]
    assert float(np.abs(np.asarray(critic["score"]["kernel"])).max()) > 0
    lora_b = critic["model"]["layers"]["mlp"]["up_proj"]["lora_b"]
    assert float(np.abs(np.asarray(lora_b)).max()) > 0
    assert int(trainer.state.skipped) == 0


def test_critic_lora_resume_is_bitwise_equal_to_an_uninterrupted_run(
    critic_straight, assets, tmp_path
):
    trainer, _ = critic_straight
    PPOTrainer(critic_lora_config(assets, tmp_path, iterations=1)).run()
    resumed = PPOTrainer(critic_lora_config(assets, tmp_path))
    summary = resumed.run()
    assert summary["start_iteration"] == 1 and summary["end_iteration"] == 2
    assert jax.tree.structure(resumed.state) == jax.tree.structure(trainer.state)
    for x, y in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(trainer.state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("init", ["prm", "policy"])
def test_critic_lora_without_policy_lora_shares_a_frozen_trunk(assets, tmp_path, init):
    """critic_init=prm: the trunk is the PRM's and the head starts as a copy of its head;
    critic_init=policy without policy.lora: the trunk is the reference's. Either way the
    frozen network stays as loaded while the critic trains."""
    config = critic_lora_config(assets, tmp_path, policy_lora=False, critic_init=init, iterations=1)
    trainer = PPOTrainer(config)
    source = "prm" if init == "prm" else "reference"
    assert trainer.models.critic_base == source and set(trainer.frozen) == {"reference", "prm"}
    trunk = trainer.setup.update_bases(trainer.frozen)[1]
    assert kernel(trunk, "v_proj") is kernel(trainer.frozen[source]["model"], "v_proj")
    head = np.asarray(trainer.state.params["critic"]["score"]["kernel"])
    if init == "prm":
        np.testing.assert_array_equal(head, trainer.frozen["prm"]["score"]["kernel"])
    else:
        assert not head.any()
    trainer.run()
    _, on_disk = load_pretrained(assets / ("prm" if init == "prm" else "policy"))
    for x, y in zip(jax.tree.leaves(trainer.frozen[source]), jax.tree.leaves(on_disk)):
        np.testing.assert_array_equal(np.asarray(x), y)
    assert not np.array_equal(np.asarray(trainer.state.params["critic"]["score"]["kernel"]), head)


def test_plan_counts_the_critic_adapters_and_no_second_trunk(assets, tmp_path):
    from rlr.plan import plan_shapes

    mesh = {"data": 1, "fsdp": 1, "tensor": 1}
    full = plan_shapes(lora_config(assets, tmp_path), mesh)
    both = plan_shapes(critic_lora_config(assets, tmp_path), mesh)
    assert both["critic_lora"] == "reference" and not full["critic_lora"]
    assert 0 < both["parameters"]["critic"] < full["parameters"]["critic"] // 5
    held, base = both["per_device_bytes"], full["per_device_bytes"]
    assert held["frozen_params"] == base["frozen_params"]  # the trunk is the reference's
    assert held["optimizer_state"] < base["optimizer_state"]
    assert held["trainable_params"] < base["trainable_params"]
    # the update reads the critic's trunk as an argument beside the policy's base
    trunk = both["update_frozen_argument_bytes"] - full["update_frozen_argument_bytes"]
    assert 0 < trunk < held["frozen_params"]


# ------------------------------------------------------------------- sharded adapters

SHARDED_LORA = textwrap.dedent(
    """
    import dataclasses, os, sys, pathlib
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"  # after the suite's
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, sys.argv[1])
    import jax, numpy as np
    from ppo_setup import tiny_config
    from rlr import sharding
    from rlr.training.schemas import CriticLoRASpec, LoRASpec, RewardSpec, RolloutSpec
    from rlr.training.loading import load_tokenizer
    from rlr.training.ppo_build import build_ppo
    from rlr.training.ppo_core import Rollout

    root, out = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    B, P, T, K = 8, 16, 12, 8
    config = tiny_config(root, out, reward=RewardSpec(use_prm=True, method="raw", max_steps=K))
    config = dataclasses.replace(
        config,
        policy=dataclasses.replace(config.policy, lora=LoRASpec(rank=4, alpha=8.0)),
        rollout=RolloutSpec(prompts_per_iteration=4, samples_per_prompt=2,
                            max_prompt_tokens=P, max_new_tokens=T),
        ppo=dataclasses.replace(config.ppo, minibatches=1,
                                critic_lora=CriticLoRASpec(rank=4, alpha=8.0)),
    )
    tokenizer = load_tokenizer(config.tokenizer)
    rng = np.random.default_rng(0)

    def fake_rollout(vocab):
        prompt_len, resp_len = rng.integers(2, P + 1, B), rng.integers(1, T + 1, B)
        attn = np.zeros((B, P + T), np.int32)
        for b in range(B):
            attn[b, P - prompt_len[b] : P + resp_len[b]] = 1
        ids = np.where(attn > 0, rng.integers(1, vocab, (B, P + T)), 0).astype(np.int32)
        return Rollout(
            input_ids=ids, attention_mask=attn, response_mask=attn[:, P:].astype(np.float32),
            success=(rng.random(B) < 0.5).astype(np.float32),
            step_end=np.sort(rng.integers(0, T, (B, K)), axis=1).astype(np.int32),
            step_mask=(rng.random((B, K)) < 0.6).astype(np.float32), sampled_logp=None,
            truncated=np.zeros(B, np.float32))

    def one_update(mesh, rollout, start):
        # score, experience and one update: the jitted steps of build_ppo on `mesh`
        setup = build_ppo(config, mesh=mesh, tokenizer=tokenizer)
        state = setup.state._replace(params=jax.device_put(start, setup.state_shardings.params))
        put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh, x.ndim))
        batch = jax.tree.map(put, rollout)
        scored = setup.score(state.params, setup.frozen, batch, None)
        experience, _ = setup.experience(batch, scored)
        state, metrics = setup.update(state, experience, *setup.update_bases(setup.frozen))
        return setup, state, metrics

    def name(path):
        return "/".join(str(getattr(k, "key", k)) for k in path)

    def spec(leaf):
        s = tuple(leaf.sharding.spec)
        return s + (None,) * (leaf.ndim - len(s))

    one = sharding.make_mesh(data=1, devices=jax.devices()[:1])
    setup = build_ppo(config, mesh=one, tokenizer=tokenizer)
    rollout = fake_rollout(setup.models.policy.config.vocab_size)
    # adapters and head away from their start (B = 0 would leave A without a gradient)
    start = jax.tree.map(lambda x: (0.05 * rng.standard_normal(x.shape)).astype(x.dtype),
                         jax.device_get(setup.state.params))
    _, want, want_metrics = one_update(one, rollout, start)
    shape = dict(data=1, fsdp=4, tensor=2)  # data=8 splits rows only: test_ppo_core
    setup, state, metrics = one_update(sharding.make_mesh(**shape), rollout, start)
    # parameters, AdamW's moments (the gradients) and the update's metrics
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(state)[0],
                            jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5,
                                   err_msg=f"{shape} {name(path)}")
    for key in want_metrics:
        np.testing.assert_allclose(np.asarray(metrics[key]), np.asarray(want_metrics[key]),
                                   rtol=1e-5, atol=1e-6, err_msg=f"{shape} {key}")
    # every adapter is split as its frozen kernel is (rules table), the rank replicated,
    # and its AdamW moment as the adapter
    base = {"policy": setup.frozen["reference"],
            "critic": {"model": setup.frozen["reference"]["model"]}}
    mu = {k: state.opt_state[k][1][0].mu for k in ("policy", "critic")}
    adapters = [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(
        state.params)[0] if name(path).endswith(("lora_a", "lora_b"))]
    assert len(adapters) == 2 * 2 * 7, len(adapters)  # policy, critic: A, B of 7 targets
    for path, leaf in adapters:
        keys = [str(getattr(k, "key", k)) for k in path]
        kernel = base[keys[0]]
        for k in keys[1:-1]:
            kernel = kernel[k]
        kernel = kernel["kernel"]
        s = spec(kernel)
        expect = s[:-1] + (None,) if keys[-1] == "lora_a" else s[:-2] + (None, s[-1])
        assert spec(leaf) == expect, (shape, name(path), spec(leaf), s)
        moment = mu[keys[0]]
        for k in keys[1:]:
            moment = moment[k]
        assert spec(moment) == expect, (shape, name(path), spec(moment))
        # the kernel's In axis over fsdp, its Out axis over tensor
        split = leaf.addressable_shards[0].data.shape
        assert split != leaf.shape, (name(path), split)
    print("ok", shape)
    """
)


@pytest.mark.sharding
def test_sharded_lora_update_matches_unsharded_on_eight_fake_devices(assets, tmp_path):
    """A PPO update with adapters on the policy and the critic, on a mesh of fsdp=4 x tensor=2,
    equals the one-device update (parameters, AdamW moments and metrics to
    1e-5), and every adapter carries its kernel's shardings from the rules table."""
    here = str(pathlib.Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED_LORA, here, str(assets), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("ok") == 1, proc.stdout


def test_a_run_without_adapters_cannot_resume_a_lora_run(straight, assets):
    _, out = straight
    with pytest.raises(ValueError, match="trains policy adapters and critic"):
        PPOTrainer(tiny_config(assets, out, reward=REWARD, iterations=3)).run()
