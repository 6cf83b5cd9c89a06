"""rlr.training.reward_model: PRM / ORM losses read where PPO reads, AUC, learning, export."""

from __future__ import annotations

import itertools
import json

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from test_batching import tokenizer_dir

from rlr import readouts
from rlr.cli import main
from rlr.config_loading import ConfigError, from_dict, load_config
from rlr.data.readers import read_step_labelled
from rlr.data.records import StepLabelled
from rlr.data.synthetic import FILLER_STEPS, write_datasets
from rlr.models import (
    DecoderConfig,
    DecoderForSequenceClassification,
    DecoderForTokenClassification,
    init_params,
    load_pretrained,
)
from rlr.readouts import orm_scores, prm_step_scores
from rlr.training import reward_model as rm
from rlr.training.schemas import RewardModelConfig

P, T, K = 36, 40, 6
ARCH = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
    "max_position_embeddings": 128,
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """1-digit, one-step addition problems: correct, corrupted and filler-padded solutions."""
    root = tmp_path_factory.mktemp("rm")
    write_datasets(
        root / "data",
        num_train=2000,
        num_test=100,
        seed=0,
        min_operations=1,
        max_operations=1,
        max_digits=1,
        operations=("+",),
    )
    return root


def base_config(workdir, tmp_path, kind="prm", **changes):
    data = workdir / "data"
    config = {
        "kind": kind,
        "out_dir": str(tmp_path / kind),
        "tokenizer": str(tokenizer_dir()),
        "init": {"architecture": ARCH},
        "data": {"train": str(data / "prm_train.jsonl"), "test": str(data / "prm_test.jsonl")},
        "train": {
            "batch_size": 8,
            "steps": 2,
            "learning_rate": 3e-3,
            "warmup_steps": 1,
            "prompt_len": P,
            "response_len": T,
            "max_reasoning_steps": K,
        },
        "eval": {"max_examples": 16},
    }
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir())


@pytest.fixture(scope="module")
def scorer(tokenizer):
    config = DecoderConfig.from_hf({**ARCH, "vocab_size": len(tokenizer)})
    model = DecoderForTokenClassification(config, num_labels=1)
    return model, init_params(model, jax.random.key(0))


def reference_bce(logit, target):
    p = 1.0 / (1.0 + np.exp(-float(logit)))
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


class MaskedBCETest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_loop_reference(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(4, 5)).astype(np.float32) * 3
        targets = rng.random((4, 5)).astype(np.float32)
        mask = (rng.random((4, 5)) < 0.6).astype(np.float32)
        mask[0] = 1
        got = self.variant(rm.masked_bce)(logits, targets, mask)
        terms = [
            reference_bce(logits[b, k], targets[b, k])
            for b in range(4)
            for k in range(5)
            if mask[b, k]
        ]
        np.testing.assert_allclose(got, np.mean(terms), rtol=1e-5)


def _rows(workdir, tokenizer, kind, n=6):
    records = list(read_step_labelled(workdir / "data" / "prm_test.jsonl"))[:n]
    config = from_dict(RewardModelConfig, base_config(workdir, workdir, kind))
    return records, rm.encode_labelled(records, tokenizer, config)


def test_prm_loss_is_bce_at_step_end_tokens(workdir, tokenizer, scorer):
    model, params = scorer
    records, rows = _rows(workdir, tokenizer, "prm")
    batch = {k: jnp.asarray(rows[k]) for k in rm.PRM_KEYS}
    loss, aux = rm.prm_loss(model, params, batch, response_len=T)
    token_logits = np.asarray(
        model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
    )[..., 0]
    terms = []
    for b, record in enumerate(records):
        assert int(rows["step_mask"][b].sum()) == len(record.steps)
        for k, label in enumerate(record.labels):
            column = P + int(rows["step_end"][b, k])
            terms.append(reference_bce(token_logits[b, column], 1.0 if label > 0 else 0.0))
    np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)
    # sigmoid of the trained logit is exactly what PPO's PRM reading returns
    ppo = prm_step_scores(
        model, params, batch["input_ids"], batch["attention_mask"], batch["step_end"],
        batch["step_mask"], T=T,
    )  # fmt: skip
    mine = (
        jax.nn.sigmoid(
            readouts.token_logits_at(jnp.asarray(token_logits), batch["step_end"], prompt_len=P)
        )
        * batch["step_mask"]
    )
    np.testing.assert_allclose(mine, ppo, atol=1e-6)
    assert 0.0 <= float(aux["accuracy"]) <= 1.0


def test_orm_loss_is_bce_at_the_last_response_token(workdir, tokenizer, scorer):
    model, params = scorer
    records, rows = _rows(workdir, tokenizer, "orm")
    batch = {k: jnp.asarray(rows[k]) for k in rm.ORM_KEYS}
    loss, _ = rm.orm_loss(model, params, batch, response_len=T)
    token_logits = np.asarray(
        model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
    )[..., 0]
    terms = []
    for b, record in enumerate(records):
        last = P + int(rows["response_mask"][b].sum()) - 1  # the EOS token
        assert rows["input_ids"][b, last] == tokenizer.eos_token_id
        correct = record.meta["kind"] == "correct"
        assert rows["targets"][b] == float(correct)
        terms.append(reference_bce(token_logits[b, last], float(correct)))
    np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)
    ppo = orm_scores(
        model, params, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    )
    last = readouts.last_response_index(batch["response_mask"])[:, None]
    picked = readouts.token_logits_at(jnp.asarray(token_logits), last, prompt_len=P)
    mine = jax.nn.sigmoid(picked)[:, 0]
    np.testing.assert_allclose(mine, ppo, atol=1e-6)


def reference_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    data=st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=30)
)
def test_roc_auc_matches_pairwise_reference(data):
    scores = np.array([s for s, _ in data], np.float64) / 5
    labels = np.array([y for _, y in data])
    got = rm.roc_auc(scores, labels)
    if labels.all() or not labels.any():
        assert np.isnan(got)
    else:
        assert got == pytest.approx(reference_auc(scores, labels))


def test_roc_auc_extremes():
    assert rm.roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert rm.roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert rm.roc_auc([0.5] * 4, [0, 1, 0, 1]) == 0.5


def test_labels_hard_soft_and_correctness():
    record = StepLabelled(
        "r", "q", ("Tom has 1 + 1 = 2 apples.", "The answer is 2."), (1, -1), "2", "synthetic",
        {"soft_labels": [0.75, 0.0]},
    )  # fmt: skip
    assert rm.step_targets_of(record, label_mode="hard", neutral_target=1.0) == [1.0, 0.0]
    assert rm.step_targets_of(record, label_mode="soft", neutral_target=1.0) == [0.75, 0.0]
    neutral = StepLabelled("n", "q", ("a", "b"), (1, 0), None, "prm800k")
    wrong = StepLabelled("w", "q", ("1 + 1 = 3.", "The answer is 3."), (1, 1), "2", "gsm8k")
    good = StepLabelled("g", "q", ("x", "y"), (1, 1), None, "prm800k")
    # graded against the gold answer when there is one (whatever the labels say), else the
    # labels decide: right when every step is labelled good
    records = [record, neutral, wrong, good]
    targets = [rm.step_targets_of(r, label_mode="hard", neutral_target=0.0) for r in records]
    assert rm.solutions_correct(records, targets).tolist() == [1, 0, 0, 1]
    # without a gold answer the step targets decide, so neutral_target matters for an ORM too
    lenient = [rm.step_targets_of(r, label_mode="hard", neutral_target=1.0) for r in records]
    assert rm.solutions_correct(records, lenient).tolist() == [1, 1, 0, 1]
    assert rm.step_targets_of(neutral, label_mode="hard", neutral_target=0.5) == [1.0, 0.5]
    with pytest.raises(ValueError, match="label_mode=soft needs meta.soft_labels"):
        rm.step_targets_of(neutral, label_mode="soft", neutral_target=1.0)


LEARN = {
    "batch_size": 64,
    "steps": 70,
    "learning_rate": 4e-3,
    "warmup_steps": 5,
    "prompt_len": P,
    "response_len": T,
    "max_reasoning_steps": K,
    "checkpoint_every": 1000,
}


@pytest.mark.parametrize("kind", ["prm", "orm"])
def test_cli_trains_and_exports_with_equal_scores(workdir, tmp_path, tokenizer, kind, capsys):
    """The PRM run is long enough to learn: held-out step AUC clearly above chance."""
    changes = {"train": LEARN, "eval": {"max_examples": 100}} if kind == "prm" else {}
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(base_config(workdir, tmp_path, kind, **changes)))
    assert main([f"train-{kind}", "--config", str(path)]) == 0
    summary = json.loads((tmp_path / kind / "summary.json").read_text())
    report = json.loads((tmp_path / kind / "eval.json").read_text())
    assert summary["eval"] == report and '"eval"' in capsys.readouterr().out
    if kind == "prm":
        assert report["step_auc"] > 0.75, report
        assert report["mean_score_correct"] > report["mean_score_wrong"] + 0.15, report
        # the paper's premise: fillers labelled correct score like correct steps, above wrong ones
        assert report["mean_score_filler_in_correct_prefix"] > report["mean_score_wrong"], report
    else:
        assert 0.0 <= report["auc"] <= 1.0 and report["num_solutions"] == 16
    export = tmp_path / kind / "model"
    loaded, params = load_pretrained(export)
    want_cls = DecoderForTokenClassification if kind == "prm" else DecoderForSequenceClassification
    assert type(loaded) is want_cls
    assert (export / "tokenizer.json").is_file()
    records, rows = _rows(workdir, tokenizer, kind, n=4)
    ids, attn = jnp.asarray(rows["input_ids"]), jnp.asarray(rows["attention_mask"])
    token_model = DecoderForTokenClassification(loaded.config, num_labels=1)
    if kind == "prm":
        step_end, step_mask = jnp.asarray(rows["step_end"]), jnp.asarray(rows["step_mask"])
        ppo = prm_step_scores(token_model, params, ids, attn, step_end, step_mask, T=T)
        direct = loaded.apply({"params": params}, ids, attn)[..., 0]
        picked = readouts.token_logits_at(direct, step_end, prompt_len=P)
        np.testing.assert_allclose(jax.nn.sigmoid(picked) * step_mask, ppo, atol=1e-6)
    else:
        ppo = orm_scores(token_model, params, ids, attn, jnp.asarray(rows["response_mask"]))
        seq = jax.nn.sigmoid(loaded.apply({"params": params}, ids, attn)[:, 0])
        np.testing.assert_allclose(seq, ppo, atol=1e-6)
    torch = pytest.importorskip("torch")
    import transformers

    auto = (
        transformers.AutoModelForTokenClassification
        if kind == "prm"
        else transformers.AutoModelForSequenceClassification
    )
    hf = auto.from_pretrained(export).eval()
    row = rows["input_ids"][0][rows["attention_mask"][0] > 0][None]  # one unpadded row
    with torch.no_grad():
        hf_out = hf(torch.tensor(row.astype(np.int64))).logits.numpy()
    mine = np.asarray(loaded.apply({"params": params}, jnp.asarray(row)))
    np.testing.assert_allclose(mine, hf_out, atol=2e-4)


def test_config_and_data_errors_are_clear(workdir, tmp_path):
    path = tmp_path / "prm.yaml"
    path.write_text(yaml.safe_dump(base_config(workdir, tmp_path)))
    with pytest.raises(ConfigError, match="label_mode: must be one of 'hard', 'soft'"):
        load_config(RewardModelConfig, path, ["label_mode=fuzzy"])
    with pytest.raises(ConfigError, match="needs `path`"):
        load_config(RewardModelConfig, path, ["init.architecture=null"])
    with pytest.raises(ValueError, match="data.train 'missing.jsonl' is not a file"):
        rm.run_reward_model(load_config(RewardModelConfig, path, ["data.train=missing.jsonl"]))
    with pytest.raises(ValueError, match="label_mode=soft needs meta.soft_labels"):
        rm.run_reward_model(load_config(RewardModelConfig, path, ["label_mode=soft"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "steps": ["a\nb", "c"], "labels": [1, 1]}) + "\n")
    with pytest.raises(
        ValueError, match=r"bad.jsonl: row 0: the response splits into 3 steps but has 2 labels"
    ):
        rm.run_reward_model(load_config(RewardModelConfig, path, [f"data.train={bad}"]))


def test_filler_steps_are_what_the_step_classifier_says(workdir, tokenizer):
    records = list(read_step_labelled(workdir / "data" / "prm_test.jsonl"))[:8]
    config = from_dict(RewardModelConfig, base_config(workdir, workdir, "prm"))
    default = rm.encode_labelled(records, tokenizer, config)
    for b, record in enumerate(records):
        for k, step in enumerate(record.steps):
            is_filler = record.meta["fillers"] and step in FILLER_STEPS
            assert (default["step_kind"][b, k] == 3) == bool(is_filler), (step, record.meta)
    everything = rm.encode_labelled(records, tokenizer, config, is_filler=lambda step: True)
    np.testing.assert_array_equal(everything["step_kind"], 3 * (default["step_mask"] > 0))


@pytest.mark.parametrize("kind", ["prm", "orm"])
def test_packed_rows_give_the_padded_loss_and_gradient(workdir, tokenizer, scorer, kind):
    from rlr.packing import pack_rows

    model, params = scorer
    _, rows = _rows(workdir, tokenizer, kind)
    keys, loss_fn = (rm.PRM_KEYS, rm.prm_loss) if kind == "prm" else (rm.ORM_KEYS, rm.orm_loss)
    batch = {k: jnp.asarray(rows[k]) for k in keys}
    width = rows["input_ids"].shape[1]  # packed rows twice as wide: two solutions each
    packing = pack_rows(rows["input_ids"], rows["attention_mask"], length=2 * width)
    assert packing.input_ids.shape[0] < len(rows["input_ids"])
    grad = jax.jit(
        jax.value_and_grad(lambda p, b: loss_fn(model, p, b, response_len=T), has_aux=True)
    )
    (want, _), want_grad = grad(params, batch)
    (got, _), got_grad = grad(params, {**batch, "packing": jax.tree.map(jnp.asarray, packing)})
    np.testing.assert_allclose(got, want, rtol=1e-5)
    chex.assert_trees_all_close(got_grad, want_grad, atol=1e-5)
