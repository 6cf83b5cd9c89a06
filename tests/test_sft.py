"""rlr.training.sft and the shared loop of rlr.training.fit: the SFT loss, the loop (loss
falls, exact resume after SIGTERM), the `rlr sft` command and its export."""

from __future__ import annotations

import functools
import json
import os
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from test_batching import tokenizer_dir

import rlr
from rlr.cli import main
from rlr.config_loading import ConfigError, from_dict, load_config
from rlr.data.prompts import build_prompt
from rlr.data.readers import MalformedRecordError, read_problems
from rlr.data.synthetic import write_datasets
from rlr.models import DecoderConfig, DecoderForCausalLM, init_params, load_pretrained
from rlr.training import batching, sft
from rlr.training.fit import fit
from rlr.training.schemas import SFTConfig, SupervisedSpec
from rlr.training.train_state import init_train_state, make_optimizer, make_train_step

P, T = 36, 28
ARCH = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
    "max_position_embeddings": 128,
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Tiny synthetic data (1-digit, one + step) and a tokenizer, shared by this module."""
    root = tmp_path_factory.mktemp("sft")
    write_datasets(
        root / "data",
        num_train=300,
        num_test=8,
        seed=0,
        min_operations=1,
        max_operations=1,
        max_digits=1,
        operations=("+",),
        sft_filler_fraction=0.1,
    )
    return root


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir())


@pytest.fixture(scope="module")
def rows(workdir, tokenizer):
    problems = list(read_problems(workdir / "data" / "sft_train.jsonl"))
    return batching.encode_rows(
        tokenizer,
        [build_prompt(p.question) for p in problems],
        [p.solution for p in problems],
        prompt_len=P,
        response_len=T,
    )


@pytest.fixture(scope="module")
def model(tokenizer):
    config = DecoderConfig.from_hf({**ARCH, "vocab_size": len(tokenizer)})
    return DecoderForCausalLM(config)


def reference_sft_loss(logits, tokens, mask):
    """Plain loop: mean over masked tokens of -log softmax(logits)[token]."""
    total, count = 0.0, 0.0
    for b in range(tokens.shape[0]):
        for t in range(tokens.shape[1]):
            if mask[b, t]:
                row = logits[b, t].astype(np.float64)
                logz = np.log(np.sum(np.exp(row - row.max()))) + row.max()
                total += logz - row[tokens[b, t]]
                count += 1
    return total / max(count, 1)


def _sft_loss_of_logits(logits, tokens, mask):
    return sft.sft_loss(
        rlr.token_logprobs(logits, tokens), jnp.argmax(logits, axis=-1), tokens, mask
    )


class SFTLossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_loop_reference(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(3, 5, 7)).astype(np.float32) * 3
        tokens = rng.integers(0, 7, size=(3, 5))
        mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], np.float32)
        loss, aux = self.variant(_sft_loss_of_logits)(logits, tokens, mask)
        np.testing.assert_allclose(loss, reference_sft_loss(logits, tokens, mask), rtol=1e-5)
        hits = (logits.argmax(-1) == tokens) * mask
        np.testing.assert_allclose(aux["token_accuracy"], hits.sum() / mask.sum(), rtol=1e-6)

    def test_padding_tokens_do_not_count(self):
        rng = np.random.default_rng(1)
        logits = rng.normal(size=(2, 4, 6)).astype(np.float32)
        tokens = rng.integers(0, 6, size=(2, 4))
        mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
        changed = logits.copy()
        changed[:, 2:] += 100.0 * rng.normal(size=(2, 2, 6)).astype(np.float32)
        changed[1, 1:] -= 50.0
        a, _ = _sft_loss_of_logits(logits, tokens, mask)
        b, _ = _sft_loss_of_logits(changed, tokens, mask)
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_loss_fn_reads_response_tokens(model, rows):
    params = init_params(model, jax.random.key(0))
    batch = {k: jnp.asarray(rows[k][:4]) for k in sft.TRAIN_KEYS}
    loss, _ = jax.jit(sft.make_sft_loss_fn(model, response_len=T))(params, batch)
    apply = jax.jit(lambda p, i, a: model.apply({"params": p}, i, a))
    logits = np.asarray(apply(params, batch["input_ids"], batch["attention_mask"]))
    ids = rows["input_ids"][:4]
    # response token t at column P + t is predicted by column P + t - 1
    expected = reference_sft_loss(
        logits[:, P - 1 : P + T - 1], ids[:, P:], rows["response_mask"][:4]
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@functools.cache
def _step(model, lr, steps):
    """One compiled train step per (model, lr, steps), shared by the runs below."""
    tx = make_optimizer(learning_rate=lr, warmup_steps=2, total_steps=steps)
    return tx, make_train_step(sft.make_sft_loss_fn(model, response_len=T), tx)


def _fit(model, rows, out_dir, *, steps, make_batch=None, lr=3e-3):
    spec = SupervisedSpec(
        batch_size=8,
        steps=steps,
        learning_rate=lr,
        warmup_steps=2,
        prompt_len=P,
        response_len=T,
        checkpoint_every=100,
    )
    tx, train_step = _step(model, lr, steps)
    state = init_train_state(init_params(model, jax.random.key(0)), tx)
    return fit(
        state,
        None,
        tx,
        train_step=train_step,
        make_batch=make_batch or (lambda idx: {k: rows[k][idx] for k in sft.TRAIN_KEYS}),
        dataset_size=len(rows["input_ids"]),
        spec=spec,
        seed=0,
        out_dir=out_dir,
    )


def test_sft_loss_falls(model, rows, tmp_path):
    result = _fit(model, rows, tmp_path, steps=20, lr=1e-2)
    from rlr.training.metrics import read_metrics

    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert len(losses) == 20 and not result.interrupted
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])


def test_resume_after_sigterm_equals_uninterrupted_run(model, rows, tmp_path):
    straight = _fit(model, rows, tmp_path / "straight", steps=4)
    calls = []

    def make_batch(idx):
        calls.append(len(calls))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # preemption arrives during step 2
        return {k: rows[k][idx] for k in sft.TRAIN_KEYS}

    first = _fit(model, rows, tmp_path / "cut", steps=4, make_batch=make_batch)
    assert first.interrupted and first.iteration == 2
    resumed = _fit(model, rows, tmp_path / "cut", steps=4)
    assert not resumed.interrupted and resumed.iteration == 4
    chex.assert_trees_all_close(resumed.state.params, straight.state.params, atol=0, rtol=0)
    assert int(resumed.state.step) == int(straight.state.step) == 4


def _write_config(workdir, tmp_path, **changes):
    config = {
        "out_dir": str(tmp_path / "run"),
        "tokenizer": str(tokenizer_dir()),
        "model": {"architecture": ARCH},
        "data": {
            "train": str(workdir / "data" / "sft_train.jsonl"),
            "test": str(workdir / "data" / "problems_test.jsonl"),
        },
        "train": {"batch_size": 8, "steps": 3, "prompt_len": P, "response_len": T},
        "eval": {"max_examples": 4, "batch_size": 4, "max_new_tokens": 8},
    }
    config.update(changes)
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_trains_evaluates_and_exports_a_complete_hf_dir(workdir, tmp_path, capsys):
    path = _write_config(workdir, tmp_path)
    assert main(["sft", "--config", str(path), "train.steps=2", "eval.every=1"]) == 0
    out = capsys.readouterr().out
    assert '"eval/accuracy"' in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    curve = summary["eval_curve"]
    assert [step for step, _ in curve] == [1, 2]  # one point per evaluation
    assert curve[-1][1] == summary["eval/accuracy"]
    assert "held-out greedy accuracy by step: 1: " in out

    export = tmp_path / "run" / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (export / name).is_file(), name
    loaded, params = load_pretrained(export)
    assert isinstance(loaded, DecoderForCausalLM)
    # the exported params are the final training state's
    from rlr.training.checkpoint import Checkpointer

    with Checkpointer(tmp_path / "run" / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 2
        state, meta = ckpt.restore(jax.eval_shape(lambda: _abstract_state(loaded)))
    assert meta["iteration"] == 2
    chex.assert_trees_all_close(params, state.params)
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(export)) == loaded.config.vocab_size
    torch = pytest.importorskip("torch")
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(export).eval()
    ids = np.array([[5, 17, 42, 9, 3]])
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    got = np.asarray(loaded.apply({"params": params}, jnp.asarray(ids)))
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_eval_curve_keeps_the_last_row_of_each_step():
    from rlr.training.metrics import eval_curve

    rows = [{"step": 2, "eval/accuracy": 0.1}, {"step": 1, "loss": 3.0}]
    rows += [{"step": 4, "eval/accuracy": 0.3}, {"step": 2, "eval/accuracy": 0.2}]
    assert eval_curve(rows) == [[2, 0.2], [4, 0.3]]


def _abstract_state(model):
    params = init_params(model, jax.random.key(0))
    tx = make_optimizer(learning_rate=1e-3, warmup_steps=20, total_steps=2)
    return init_train_state(params, tx)


def test_config_and_data_errors_are_clear(workdir, tmp_path):
    path = _write_config(workdir, tmp_path)
    with pytest.raises(ConfigError, match="unknown key 'stesp'.*did you mean 'steps'"):
        load_config(SFTConfig, path, ["train.stesp=3"])
    with pytest.raises(ConfigError, match="train.batch_size must be >= 1"):
        load_config(SFTConfig, path, ["train.batch_size=0"])
    with pytest.raises(ValueError, match="rlr train-tokenizer"):
        sft.run_sft(load_config(SFTConfig, path, [f"tokenizer={tmp_path / 'none'}"]))
    with pytest.raises(ValueError, match="data.train .*none.jsonl' is not a file"):
        sft.run_sft(load_config(SFTConfig, path, [f"data.train={tmp_path / 'none.jsonl'}"]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "1", "solution": "s"}\n{"question": 3}\n')
    with pytest.raises(MalformedRecordError, match="bad.jsonl:2"):
        sft.run_sft(load_config(SFTConfig, path, [f"data.train={bad}"]))
    bad.write_text('{"question": "q", "answer": "1"}\n')
    with pytest.raises(ValueError, match="record 1 .* has no solution"):
        sft.run_sft(load_config(SFTConfig, path, [f"data.train={bad}"]))
    with pytest.raises(ValueError, match="model.architecture is invalid"):
        sft.run_sft(load_config(SFTConfig, path, ["model.architecture={hidden_size: 8}"]))
    # keys of earlier releases name their new place
    with pytest.raises(ConfigError, match="'max_test_problems': it is now eval.max_examples"):
        load_config(SFTConfig, path, ["data.max_test_problems=3"])
    with pytest.raises(ConfigError, match="'num_problems': it is now eval.max_examples"):
        load_config(SFTConfig, path, ["eval.num_problems=3"])
    with pytest.raises(ConfigError, match="model needs path or architecture"):
        from_dict(SFTConfig, {"tokenizer": "t", "data": {"train": "x"}})


def test_a_packed_run_equals_the_padded_run(model, workdir, tokenizer, tmp_path):
    """train.pack: fit packs every batch's rows (rlr.packing); the loss reads the packed rows
    and the parameters after 3 steps equal the padded run's to 1e-5."""
    from rlr.packing import pack_minibatch

    problems = list(read_problems(workdir / "data" / "sft_train.jsonl"))[:64]
    wide = 2 * T  # room for longer solutions: most of each row is padding
    rows = batching.encode_rows(
        tokenizer,
        [build_prompt(p.question) for p in problems],
        [p.solution for p in problems],
        prompt_len=P,
        response_len=wide,
    )
    packing = pack_minibatch(rows["input_ids"][:8], rows["attention_mask"][:8])
    assert packing.input_ids.shape[0] < 8  # the solutions' rows share packed rows

    def run(pack, out_dir):
        spec = SupervisedSpec(
            batch_size=8, steps=3, learning_rate=3e-3, warmup_steps=2, prompt_len=P,
            response_len=wide, pack=pack,
        )  # fmt: skip
        tx = make_optimizer(learning_rate=3e-3, warmup_steps=2, total_steps=3)
        return fit(
            init_train_state(init_params(model, jax.random.key(0)), tx),
            sft.make_sft_loss_fn(model, response_len=wide),
            tx,
            make_batch=lambda idx: {k: rows[k][idx] for k in sft.TRAIN_KEYS},
            dataset_size=len(rows["input_ids"]),
            spec=spec,
            seed=0,
            out_dir=out_dir,
        )

    padded, packed = run(False, tmp_path / "padded"), run(True, tmp_path / "packed")
    chex.assert_trees_all_close(packed.state.params, padded.state.params, atol=1e-5)
    np.testing.assert_allclose(packed.metrics["loss"], padded.metrics["loss"], rtol=1e-5)
