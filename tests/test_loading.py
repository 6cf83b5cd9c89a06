"""rlr.training.loading: what the commands start from, and errors that name the key or flag."""

from __future__ import annotations

import json
import pathlib
import shutil
import typing

import pytest
from test_labelling import TINY
from toy_assets import shared_toy_assets

from rlr.commands import FILE_FORMATS
from rlr.training import loading
from rlr.training.generation import eos_ids_of
from rlr.training.schemas import PROBLEM_FORMATS, DataSpec, ModelSpec

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "data"


def test_problem_formats_have_one_source():
    assert FILE_FORMATS == PROBLEM_FORMATS
    hints = typing.get_type_hints(DataSpec)
    assert typing.get_args(hints["format"]) == PROBLEM_FORMATS


def test_problems_in_every_format_and_clear_errors(tmp_path):
    gsm8k = loading.load_problems(str(FIXTURES / "gsm8k.jsonl"), "gsm8k", need_solution=True)
    assert gsm8k and all(p.solution and p.answer for p in gsm8k)
    assert len(loading.load_problems(str(FIXTURES / "math.jsonl"), "math", limit=1)) == 1
    with pytest.raises(ValueError, match="data.test 'missing.jsonl' is not a file"):
        loading.load_problems("missing.jsonl", what="data.test")
    with pytest.raises(ValueError, match="format must be one of synthetic, gsm8k"):
        loading.load_problems(str(FIXTURES / "gsm8k.jsonl"), "gsm9k")
    with pytest.raises(ValueError, match="must be >= 1; got 0"):
        loading.load_problems(str(FIXTURES / "gsm8k.jsonl"), "gsm8k", limit=0)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"id": "a", "question": "q", "answer": null, "solution": "s"}\n'
        '{"id": "b", "question": "q", "answer": "1"}\n'
    )
    # the record number counts every record of the file, answerless ones included
    with pytest.raises(ValueError, match=r"rows.jsonl: record 2 \(b\) has no solution text"):
        loading.load_problems(str(rows), need_solution=True)


def test_step_labelled_formats():
    prm800k = loading.load_labelled(str(FIXTURES / "prm800k.jsonl"), "prm800k")
    shepherd = loading.load_labelled(str(FIXTURES / "math_shepherd.jsonl"), "math_shepherd")
    assert prm800k and shepherd and all(len(r.steps) == len(r.labels) for r in shepherd)
    with pytest.raises(ValueError, match="format must be one of rlr, prm800k, math_shepherd"):
        loading.load_labelled(str(FIXTURES / "prm800k.jsonl"), "prm900k")


def test_tokenizer_and_network_errors_name_the_setting(tmp_path):
    with pytest.raises(ValueError, match="tokenizer 'None' is not a directory holding"):
        loading.load_tokenizer(None)
    with pytest.raises(ValueError, match="--tokenizer '.*nowhere' is not a directory"):
        loading.load_tokenizer(str(tmp_path / "nowhere"), what="--tokenizer")
    with pytest.raises(ValueError, match="policy.path .* does not exist"):
        loading.load_or_init_policy(ModelSpec(path=str(tmp_path / "none")), None, seed=0)
    with pytest.raises(ValueError, match="prm.path .* holds no config.json and prm.architecture"):
        loading.hf_config_of(ModelSpec(path=str(tmp_path)), what="prm")


def test_config_json_wins_and_an_inline_architecture_sizes_without_weights(tmp_path):
    assets = shared_toy_assets(**TINY)
    from_dir = loading.hf_config_of(ModelSpec(path=str(assets / "policy")))
    assert from_dir["num_hidden_layers"] == 1
    arch = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3}
    arch["num_attention_heads"] = 2
    spec = ModelSpec(path=str(tmp_path / "weights_elsewhere"), architecture=arch)
    tokenizer = loading.load_tokenizer(str(assets / "tokenizer"))
    filled = loading.hf_config_of(spec, tokenizer)
    assert filled["vocab_size"] == len(tokenizer) and filled["num_hidden_layers"] == 3
    assert loading.network_config(spec, tokenizer, num_layers=1).num_hidden_layers == 1
    small = ModelSpec(architecture={**arch, "vocab_size": 10})
    with pytest.raises(ValueError, match="vocab_size=10 is smaller than the tokenizer's"):
        loading.hf_config_of(small, tokenizer, what="policy")


def test_generation_config_eos_ids_stop_sampling(tmp_path):
    assets = shared_toy_assets(**TINY)
    policy = tmp_path / "policy"
    shutil.copytree(assets / "policy", policy)
    tokenizer = loading.load_tokenizer(str(policy))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    (policy / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [im_end, tokenizer.eos_token_id]})
    )
    model, _ = loading.load_or_init_policy(ModelSpec(path=str(policy)), tokenizer, seed=0)
    assert model.config.eos_token_id == (tokenizer.eos_token_id, im_end)
    assert eos_ids_of(tokenizer, model) == (tokenizer.eos_token_id, im_end)
    (policy / "generation_config.json").write_text("{")
    with pytest.raises(ValueError, match="generation_config.json: not valid JSON"):
        loading.load_or_init_policy(ModelSpec(path=str(policy)), tokenizer, seed=0)
