"""Released PRMs (and PRMs with their own tokenizer) in training and evaluation: steps cut
from the policy's tokens score as text and land on the policy token where each step ends;
one PPO iteration, `rlr eval-bon` and `rlr label-steps --prm` with every format; model ids
from the local Hugging Face cache."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

import rlr
from rlr import cli
from rlr.models import STEP_FORMATS, load_step_scorer
from rlr.training import batching, loading
from rlr.training.schemas import STEP_FORMATS as CONFIG_FORMATS
from rlr.training.schemas import ModelSpec
from rlr.training.step_scoring import policy_step_texts, score_policy_steps

pytest.importorskip("torch", reason="torch writes the released-layout checkpoints")
pytest.importorskip("transformers")
from ppo_setup import tiny_config  # noqa: E402
from released_prms import MAKERS, NAMED_FORMATS, make_released_prm  # noqa: E402
from toy_assets import shared_toy_assets  # noqa: E402

TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


@pytest.fixture(scope="module")
def assets():
    return shared_toy_assets(**TINY)


@pytest.fixture(scope="module")
def released_dirs(tmp_path_factory):
    """format -> a released-layout PRM directory (its tokenizer is not the policy's)."""
    root = tmp_path_factory.mktemp("released")
    dirs = {}
    for fmt in sorted(MAKERS):
        make_released_prm(fmt, root / fmt)
        dirs[fmt] = root / fmt
    return dirs


def test_format_lists_agree():
    from rlr.commands import STEP_FORMATS as COMMAND_FORMATS

    assert tuple(STEP_FORMATS) == tuple(CONFIG_FORMATS) == tuple(COMMAND_FORMATS)
    from rlr.config_loading import from_dict

    assert from_dict(ModelSpec, {"path": "x", "format": "skywork"}).format == "skywork"
    with pytest.raises(ValueError, match="format"):
        from_dict(ModelSpec, {"path": "x", "format": "prm800k"}, source="prm")


def test_step_scores_land_on_the_policy_token_where_each_step_ends(assets, released_dirs):
    """A Mistral-format PRM whose tokenizer differs from the policy's: steps are cut from the
    policy's tokens, scored as text, and each score becomes the reward at step_end."""
    policy_tok = loading.load_tokenizer(assets / "tokenizer")
    scorer = load_step_scorer(released_dirs["math_shepherd"], "math_shepherd")
    assert scorer.tokenizer.get_vocab() != policy_tok.get_vocab()
    questions = ["Tom has 3 apples and buys 4 more. How many?", "What is 6 * 7?"]
    solutions = [["3 + 4 = 7", "Tom has 7 apples.", "The answer is 7"], ["6 * 7 = 42"]]
    rows = batching.encode_rows(
        policy_tok,
        ["Question: q\nAnswer:\n"] * 2,
        ["\n".join(s) for s in solutions],
        prompt_len=16,
        response_len=48,
        max_steps=6,
    )
    P = 16
    tokens = rows["input_ids"][:, P:]
    step_end, step_mask = rows["step_end"], rows["step_mask"]
    assert policy_step_texts(policy_tok, tokens, step_end, step_mask) == solutions
    scores = score_policy_steps(scorer, questions, policy_tok, tokens, step_end, step_mask)
    want = scorer.score_steps(questions, solutions)
    for b, row in enumerate(want):
        np.testing.assert_allclose(scores[b, : len(row)], row, atol=1e-6)
        assert np.all(scores[b, len(row) :] == 0)
    # the policy token at each step end is the step's last token (the separator after it
    # belongs to the next column or to no step)
    for b, steps in enumerate(solutions):
        for k, step in enumerate(steps):
            last = policy_tok.decode([int(tokens[b, step_end[b, k]])])
            assert step.endswith(last.strip()) and last.strip(), (b, k, last)
    rewards = rlr.token_rewards(
        np.zeros(2, np.float32),
        rows["response_mask"],
        scores,
        step_end,
        step_mask,
        None,
        np.zeros(tokens.shape, np.float32),
        np.zeros(tokens.shape, np.float32),
        method="raw",
        alpha=1.0,
        eta=0.0,
        orm_weight=0.0,
        kl_coef=0.0,
    )
    process = np.asarray(rewards.process)
    for b, steps in enumerate(solutions):
        columns = np.flatnonzero(process[b])
        np.testing.assert_array_equal(columns, step_end[b, : len(steps)])
        np.testing.assert_allclose(process[b, columns], scores[b, : len(steps)], atol=1e-6)


@pytest.mark.parametrize("fmt", sorted(MAKERS))
def test_one_ppo_iteration_with_each_released_format(assets, released_dirs, tmp_path, fmt):
    config = tiny_config(
        assets,
        tmp_path / "run",
        iterations=1,
        # the format from config.json; a causal-LM PRM's must be named
        prm=ModelSpec(path=str(released_dirs[fmt]), format=fmt if fmt in NAMED_FORMATS else None),
    )
    config = dataclasses.replace(
        config, ppo=dataclasses.replace(config.ppo, critic_init="policy", minibatches=1)
    )
    from rlr.training.ppo import PPOTrainer

    trainer = PPOTrainer(config)
    assert trainer.setup.prm_format == fmt and trainer.models.prm is None
    assert trainer.setup.step_scorer.format.name == fmt
    summary = trainer.run()
    assert summary["end_iteration"] == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    metrics = rows[-1]
    assert metrics["time/prm_text_scoring"] > 0
    assert metrics["return/prm_raw_sum"] > 0  # the PRM's step scores reached the reward
    assert np.isfinite(metrics["loss/total"])


def test_the_rlr_format_with_the_policy_tokenizer_stays_in_the_graph(assets, tmp_path):
    config = tiny_config(assets, tmp_path / "run", iterations=1)
    from rlr.training.ppo_build import external_prm_format

    assert external_prm_format(config) is None
    forced = dataclasses.replace(config, prm=ModelSpec(path=str(assets / "prm"), format="rlr"))
    assert external_prm_format(forced) is None
    with pytest.raises(ValueError, match="orm.format"):
        from rlr.training.ppo_build import build_ppo

        build_ppo(
            dataclasses.replace(config, orm=ModelSpec(path=str(assets / "orm"), format="skywork")),
            mesh=None,
        )


@pytest.mark.parametrize("fmt", sorted(MAKERS))
def test_eval_bon_with_each_released_format(assets, released_dirs, tmp_path, fmt, capsys):
    out = tmp_path / "bon.json"
    code = cli.run(
        [
            "eval-bon",
            "--policy",
            str(assets / "policy"),
            "--prm",
            str(released_dirs[fmt]),
            "--prm-format",
            fmt,
            "--problems",
            str(assets / "data" / "problems_test.jsonl"),
            "--num-problems",
            "2",
            "--n",
            "2",
            "--max-new-tokens",
            "16",
            "--batch-size",
            "4",
            "--grader-workers",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["config"]["prm_format"] == fmt
    assert any(name.startswith("prm_") for name in result["accuracy"]), result.keys()


def test_eval_bon_refuses_a_two_label_classifier_as_the_orm(released_dirs):
    from rlr.training import loading

    with pytest.raises(ValueError, match=r"--orm-format: .* reads as 'pure'.*rlr's format only"):
        loading.check_orm_format(ModelSpec(path=str(released_dirs["pure"])), what="--orm")


def test_label_steps_with_a_released_prm(assets, released_dirs, tmp_path):
    out = tmp_path / "labels.jsonl"
    code = cli.run(
        [
            "label-steps",
            "--policy",
            str(assets / "policy"),
            "--problems",
            str(assets / "data" / "problems_test.jsonl"),
            "--given-solutions",
            "--num-problems",
            "3",
            "--prm",
            str(released_dirs["skywork"]),
            "--prm-threshold",
            "0.5",
            "--grader-workers",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    records = loading.load_labelled(str(out))
    scorer = load_step_scorer(released_dirs["skywork"])
    for record in records:
        soft = record.meta["soft_labels"]
        assert record.meta["labeller"] == "prm:skywork"
        assert list(record.labels) == [1 if p >= 0.5 else -1 for p in soft]
        want = scorer.score_steps([record.question], [[s.strip() for s in record.steps]])[0]
        np.testing.assert_allclose(soft, want, atol=1e-5)


def test_a_model_id_resolves_through_the_local_hub_cache(released_dirs, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = cache / "models--Skywork--Skywork-o1-Open-PRM-Qwen-2.5-1.5B" / "snapshots" / "abc"
    shutil.copytree(released_dirs["skywork"], snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    scorer = load_step_scorer("Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B")
    assert scorer.format.name == "skywork"
    spec = ModelSpec(path="Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B")
    assert loading.scorer_format(spec) == "skywork"
    with pytest.raises(ValueError, match="download"):
        loading.scorer_format(ModelSpec(path="Qwen/Qwen2.5-Math-PRM-7B"))
