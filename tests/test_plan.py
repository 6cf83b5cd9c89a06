import json
import os
import subprocess
import sys

import pytest

from rlr.plan import format_report, parse_mesh


def test_parse_mesh():
    assert parse_mesh("data=2,tensor=4") == {"data": 2, "fsdp": 1, "tensor": 4}
    with pytest.raises(ValueError, match="--mesh entry 'pipe=2'"):
        parse_mesh("pipe=2")
    with pytest.raises(ValueError, match="N >= 1"):
        parse_mesh("data=0")


@pytest.mark.sharding
def test_plan_on_the_7b_config_reports_memory_and_fails_when_too_small(tmp_path):
    out = tmp_path / "plan.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlr.cli",
            "plan",
            "--config",
            "qwen25_math_7b",  # a shipped config, by name
            "--mesh",
            "data=2,fsdp=2,tensor=2",
            "--device-memory-gib",
            "1",
            "--json",
            str(out),
            # the real widths and vocabulary, one layer and short rows to keep CI fast
            "policy.architecture.num_hidden_layers=1",
            "prm.architecture.num_hidden_layers=1",
            "rollout.prompts_per_iteration=8",
            "rollout.samples_per_prompt=2",
            "rollout.chunk_rows=16",
            "ppo.minibatches=2",
            "rollout.max_prompt_tokens=16",
            "rollout.max_new_tokens=16",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "DOES NOT FIT" in proc.stdout, proc.stdout
    result = json.loads(out.read_text())
    assert result["devices"] == 8
    # 7B widths, 1 layer: embeddings + lm_head dominate (152064 x 3584 each, untied)
    assert result["parameters"]["policy"] > 2 * 152064 * 3584
    per_device = result["per_device_bytes"]
    # f32 params sharded 8 ways (fsdp x tensor = 4 shards, data replicates) -> 1/4 per device
    total_param_bytes = 4 * (result["parameters"]["policy"] + result["parameters"]["critic"])
    assert per_device["trainable_params"] < 0.3 * total_param_bytes
    assert per_device["optimizer_state"] >= 1.9 * per_device["trainable_params"]
    assert result["update_step"]["temporaries"] > 0
    report = format_report(result, 1000.0)
    assert "fits" in report and "DOES NOT FIT" not in report


@pytest.mark.sharding
def test_plan_sizes_a_7b_released_prm_beside_a_1p5b_policy(tmp_path):
    """qwen2_1p5b_math_prm7b: Qwen2.5-Math-PRM-7B read as text beside a Qwen2-1.5B policy;
    the PRM's own scoring program is compiled and counted in the per-device peak."""
    out = tmp_path / "plan.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlr.cli",
            "plan",
            "--config",
            "qwen2_1p5b_math_prm7b",
            "--mesh",
            "data=2,fsdp=4,tensor=1",
            "--json",
            str(out),
            "policy.architecture.num_hidden_layers=1",
            "prm.architecture.num_hidden_layers=1",
            "rollout.prompts_per_iteration=8",
            "rollout.samples_per_prompt=2",
            "rollout.chunk_rows=16",
            "ppo.minibatches=2",
            "rollout.max_prompt_tokens=16",
            "rollout.max_new_tokens=16",
            "reward.max_steps=4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "text PRM (qwen_math_prm)" in proc.stdout, proc.stdout
    result = json.loads(out.read_text())
    # 7B widths at one layer: embeddings + trunk layer + the D x D and D x 2 score MLP
    assert result["parameters"]["prm"] > 152064 * 3584 + 3584 * 3584
    assert result["text_prm"] == {
        "format": "qwen_math_prm",
        "rows": 16,
        "tokens": 160,  # 16 + 16 + 16 * 4 + 64, already a bucket length
        "steps": 4,
        "param_bytes": result["text_prm"]["param_bytes"],
    }
    prm = result["prm_scoring_step"]
    assert prm["temporaries"] > 0 and prm["arguments"] >= result["text_prm"]["param_bytes"]
    resident = sum(result["per_device_bytes"].values()) - result["text_prm"]["param_bytes"]
    assert result["peak_bytes_per_device"] >= (
        prm["arguments"] + prm["outputs"] + prm["temporaries"] + resident
    )


def test_layer_extrapolation_matches_an_exact_compile():
    """`--extrapolate` (1 and 2 layers) against the default full-depth compile, for unrolled
    layers (what it is for: a scanned program reuses one layer's buffers, so its temporaries
    are not linear in depth, and its full depth compiles as fast anyway)."""
    from rlr.plan import plan
    from rlr.training.schemas import DataSpec, ModelSpec, PPOConfig, PPOSpec, RolloutSpec

    arch = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        max_position_embeddings=128,
    )
    config = PPOConfig(
        tokenizer="-",
        policy=ModelSpec(architecture=arch, scan_layers=False),
        data=DataSpec(train="-"),
        rollout=RolloutSpec(
            prompts_per_iteration=4, samples_per_prompt=2, max_prompt_tokens=16, max_new_tokens=16
        ),
        ppo=PPOSpec(minibatches=2),
    )
    mesh = {"data": 1, "fsdp": 1, "tensor": 1}
    exact = plan(config, mesh)
    estimate = plan(config, mesh, extrapolate=True)
    assert estimate["extrapolated_to_layers"] == 4 and "extrapolated_to_layers" not in exact
    assert estimate["per_device_bytes"] == exact["per_device_bytes"]
    for step in ("update_step", "scoring_step"):
        for key in ("arguments", "outputs"):
            assert estimate[step][key] == exact[step][key], (step, key)
        got, want = estimate[step]["temporaries"], exact[step]["temporaries"]
        assert abs(got - want) <= 0.25 * want, (step, got, want)


def test_plan_compiles_decoding_and_its_peak_grows_with_max_new_tokens():
    """build_ppo makes the rollout sampler, so plan compiles decoding: its KV cache
    [L, C, Hkv, P + T, Dh] (keys and values) is among the decode program's temporaries, and
    the planned peak grows with rollout.max_new_tokens."""
    import dataclasses

    from rlr.plan import compiled_steps, format_report, plan
    from rlr.training.schemas import DataSpec, ModelSpec, PPOConfig, PPOSpec, RolloutSpec

    # as many KV heads as query heads and a small vocabulary: a large cache per row
    arch = dict(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        max_position_embeddings=1024,
    )
    rollout = RolloutSpec(
        prompts_per_iteration=8, samples_per_prompt=2, max_prompt_tokens=16, max_new_tokens=32
    )
    config = PPOConfig(
        tokenizer="-",
        policy=ModelSpec(architecture=arch),
        data=DataSpec(train="-"),
        rollout=rollout,
        ppo=PPOSpec(minibatches=2),
    )
    mesh = {"data": 1, "fsdp": 1, "tensor": 1}
    short = plan(config, mesh)
    longer = dataclasses.replace(rollout, max_new_tokens=512)
    long = plan(dataclasses.replace(config, rollout=longer), mesh)
    assert compiled_steps(long) == ["update_step", "sampling_step", "scoring_step"]
    assert long["sampling"]["rows"] == 16 and long["sampling"]["new_tokens"] == 512
    assert "decoding: 16 rows of 16 prompt + 512 new tokens" in format_report(long, None)
    f32 = 4
    for result, T in ((short, 32), (long, 512)):
        cache = 2 * 2 * 16 * 8 * (16 + T) * (64 // 8) * f32  # keys + values, L=2, C=16
        assert result["sampling_step"]["temporaries"] >= cache, (T, result["sampling_step"])
        smp = result["sampling_step"]
        resident = sum(result["per_device_bytes"].values())
        resident -= result["sampling"]["policy_param_bytes"]
        assert result["peak_bytes_per_device"] >= (
            smp["arguments"] + smp["outputs"] + smp["temporaries"] + resident
        )
    # the decode program's cache grows with T as 16 + T does
    grown = long["sampling_step"]["temporaries"] - short["sampling_step"]["temporaries"]
    assert grown >= 2 * 2 * 16 * 8 * (512 - 32) * 8 * f32
    assert long["peak_bytes_per_device"] > short["peak_bytes_per_device"]
