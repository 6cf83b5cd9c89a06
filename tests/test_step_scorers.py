"""rlr.models.load_step_scorer against a torch reference of each format's published recipe.

Each format gets a tiny random checkpoint written the way the released one is laid out
(config.json architectures, tensor names, head shapes) and a tokenizer with that format's
special tokens and chat template; the reference follows the model card / inference code of
the released PRM, in torch (tests/released_prms.py: one forward per solution, or per step for
RLHFlow).
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from rlr.models import STEP_FORMATS, load_step_scorer
from rlr.models.step_scorers import detect_format

torch = pytest.importorskip("torch", reason="torch is needed for the reference recipes")
pytest.importorskip("transformers")
from released_prms import (  # noqa: E402
    MAKERS,
    NAMED_FORMATS,
    QUESTIONS,
    SOLUTIONS,
    make_released_prm,
    skywork_last_lines,
    skywork_piece_rewards,
    skywork_prepare_input,
)
from toy_assets import shared_toy_assets  # noqa: E402


@pytest.fixture(scope="module", params=sorted(MAKERS))
def released(request, tmp_path_factory):
    """(format, torch model, tokenizer, checkpoint directory) of one released-PRM layout."""
    fmt = request.param
    directory = tmp_path_factory.mktemp(fmt)
    model, tok = make_released_prm(fmt, directory)
    return fmt, model, tok, directory


def named(fmt: str) -> str | None:
    """format= for a checkpoint: None (read from config.json) unless it is a causal LM."""
    return fmt if fmt in NAMED_FORMATS else None


def test_released_format_scores_equal_the_published_recipe(released):
    fmt, model, tok, directory = released
    scorer = load_step_scorer(directory, named(fmt), batch_size=2)  # format from config.json
    assert scorer.format.name == fmt
    got = scorer.score_steps(QUESTIONS, SOLUTIONS)
    _, reference = MAKERS[fmt]
    with torch.no_grad():
        want = [reference(model, tok, q, s) for q, s in zip(QUESTIONS, SOLUTIONS)]
    for g, w, steps in zip(got, want, SOLUTIONS):
        assert len(g) == len(w) == len(steps)
        np.testing.assert_allclose(g, w, atol=1e-4)
        assert all(0.0 <= p <= 1.0 for p in g)
    # batching, bucketing and order do not change a solution's scores
    alone = scorer.score_steps(QUESTIONS[1:2], SOLUTIONS[1:2])
    np.testing.assert_allclose(alone[0], got[1], atol=1e-5)


def test_rlr_format_scores_as_ppo_reads_the_prm():
    import jax

    from rlr import readouts
    from rlr.training import batching
    from rlr.training.loading import load_scorer, load_tokenizer
    from rlr.training.schemas import ModelSpec

    root = shared_toy_assets()
    scorer = load_step_scorer(root / "prm", tokenizer=load_tokenizer(root / "tokenizer"))
    assert scorer.format.name == "rlr"
    got = scorer.score_steps(QUESTIONS, SOLUTIONS)
    from rlr.data.prompts import build_prompt

    tok = scorer.tokenizer
    rows = batching.encode_rows(
        tok,
        [build_prompt(q) for q in QUESTIONS],
        ["\n".join(s) for s in SOLUTIONS],
        prompt_len=128,
        response_len=96,
        max_steps=8,
    )
    module, params = load_scorer(ModelSpec(path=str(root / "prm")))
    want = readouts.prm_step_scores(
        module,
        params,
        rows["input_ids"],
        rows["attention_mask"],
        rows["step_end"],
        rows["step_mask"],
        T=96,
    )
    want = np.asarray(jax.device_get(want))
    assert not rows["prompt_truncated"].any() and not rows["response_truncated"].any()
    for b, steps in enumerate(SOLUTIONS):
        np.testing.assert_allclose(got[b], want[b, : len(steps)], atol=1e-5)


def test_format_detection_and_errors(released, tmp_path):
    fmt, _, tok, directory = released
    hf = json.loads((directory / "config.json").read_text())
    if fmt in NAMED_FORMATS:
        with pytest.raises(ValueError, match="causal LM.*set format= one of"):
            detect_format(hf)
        with pytest.raises(ValueError, match="set format="):
            load_step_scorer(directory)
    else:
        assert detect_format(hf) == fmt
    with pytest.raises(ValueError, match="set format= one of"):
        detect_format({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"})
    with pytest.raises(ValueError, match="step format must be one of"):
        load_step_scorer(directory, format="prm800k")
    other = "skywork" if fmt != "skywork" else "qwen_math_prm"
    with pytest.raises(ValueError, match="reads a"):
        load_step_scorer(directory, format=other)
    scorer = load_step_scorer(directory, named(fmt))
    with pytest.raises(ValueError, match="list of step texts"):
        scorer.score_steps(["q"], ["a single string"])
    with pytest.raises(ValueError, match="2 questions but 1"):
        scorer.score_steps(["q", "r"], [["s"]])
    assert scorer.score_steps(["q"], [[]]) == [[]]
    assert set(STEP_FORMATS) == {"rlr", *MAKERS}


def test_a_mesh_places_the_prm_and_gives_the_same_scores(released):
    from rlr import sharding

    fmt, _, _, directory = released
    plain = load_step_scorer(directory, named(fmt), batch_size=2)
    mesh = sharding.make_mesh()
    sharded = load_step_scorer(directory, named(fmt), batch_size=2, mesh=mesh)
    leaf = next(iter(jax.tree.leaves(sharded.params)))
    assert leaf.sharding.mesh.shape == mesh.shape
    for a, b in zip(
        plain.score_steps(QUESTIONS, SOLUTIONS), sharded.score_steps(QUESTIONS, SOLUTIONS)
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_length_buckets_pad_at_most_a_quarter():
    from rlr.models.step_scorers import length_bucket

    buckets = [length_bucket(n) for n in range(1, 4097)]
    for n, b in enumerate(buckets, 1):
        assert b >= n and b % 16 == 0 and b <= max(1.25 * n, n + 15), (n, b)
    assert len({b for b in buckets if 1024 < b <= 2048}) == 4  # four programs per doubling


def test_the_rlr_format_reads_each_given_step_at_its_own_last_token():
    """Steps whose text holds separators (or custom ones) are still the steps given: a step
    with an inner blank line is read once, at its end (a token that also holds the "\\n"
    after it is the step's last token, as in training)."""
    from rlr.data.prompts import build_prompt
    from rlr.models.step_scorers import RlrFormat
    from rlr.training.loading import load_tokenizer

    tok = load_tokenizer(shared_toy_assets() / "tokenizer")
    question = "What is 3 + 4?"
    steps = ["First line\nstill step one.", "Step two\n\nhere.", "3 + 4 = 7"]
    rendered = RlrFormat().render(tok, question, steps)
    P = len(tok(build_prompt(question), add_special_tokens=False)["input_ids"])
    ids = list(rendered.ids)
    assert tok.decode(ids[P:], skip_special_tokens=True) == "\n".join(steps)
    assert len(rendered.read_at) == 3
    for k in range(3):
        upto = tok.decode(ids[P : rendered.read_at[k] + 1], skip_special_tokens=True)
        joined = "\n".join(steps[: k + 1])
        assert upto in (joined, joined + "\n"), (k, upto)


# ------------------------------------------------- what config.json can and cannot tell


def _classifier(arch, **fields):
    return {"architectures": [arch], "model_type": "qwen2", **fields}


def test_a_token_classifier_is_read_by_its_label_count():
    # transformers' reading: num_labels, else len(id2label), else 2 (save_pretrained leaves
    # PretrainedConfig's default out of config.json)
    assert detect_format(_classifier("Qwen2ForTokenClassification", num_labels=1)) == "rlr"
    one = _classifier("Qwen2ForTokenClassification", id2label={"0": "LABEL_0"})
    assert detect_format(one) == "rlr"
    assert detect_format(_classifier("Qwen2ForTokenClassification")) == "pure"
    two = _classifier("Qwen2ForTokenClassification", id2label={"0": "neg", "1": "pos"})
    assert detect_format(two) == "pure"
    assert detect_format(_classifier("Qwen2ForSequenceClassification", num_labels=1)) == "rlr"


@pytest.mark.parametrize(
    "hf",
    [
        _classifier("Qwen2ForTokenClassification", num_labels=3),
        _classifier("Qwen2ForTokenClassification", id2label={str(i): str(i) for i in range(3)}),
        _classifier("Qwen2ForSequenceClassification"),  # 2 labels: no step format reads it
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},  # RLHFlow's, or not
        {"architectures": ["MistralForCausalLM"], "model_type": "mistral"},
    ],
    ids=["3-labels", "3-id2label", "2-label-sequence", "llama-lm", "mistral-lm"],
)
def test_a_checkpoint_detection_cannot_place_asks_for_the_format(hf):
    from rlr.training.loading import scorer_format
    from rlr.training.schemas import ModelSpec

    with pytest.raises(ValueError, match="set format= one of rlr, .*pure") as err:
        detect_format(hf)
    assert "config.json" in str(err.value)
    # as each caller names the field
    with pytest.raises(ValueError, match="set prm.format one of "):
        scorer_format(ModelSpec(architecture=hf))
    with pytest.raises(ValueError, match="set --prm-format one of "):
        scorer_format(ModelSpec(architecture=hf), what="--prm")
    for fmt in ("rlr", "pure", "rlhflow"):  # a named format is taken as given
        assert scorer_format(ModelSpec(architecture=hf, format=fmt)) == fmt


def test_a_two_label_classifier_loads_with_two_labels_and_refuses_rlr(tmp_path):
    from rlr.models.decoder import DecoderForTokenClassification
    from rlr.training.loading import load_scorer, scorer_module
    from rlr.training.schemas import ModelSpec

    make_released_prm("pure", tmp_path / "pure")
    spec = ModelSpec(path=str(tmp_path / "pure"))
    module, params = load_scorer(spec)
    assert isinstance(module, DecoderForTokenClassification) and module.num_labels == 2
    assert params["score"]["kernel"].shape[-1] == 2
    sized = scorer_module(spec, "pure")
    assert sized.num_labels == 2 and sized.use_bias
    with pytest.raises(ValueError, match="1 label.*has 2; set prm.format"):
        load_scorer(ModelSpec(path=str(tmp_path / "pure"), format="rlr"))
    with pytest.raises(ValueError, match="1 label"):
        load_step_scorer(tmp_path / "pure", format="rlr")
    make_released_prm("rlr", tmp_path / "rlr")
    with pytest.raises(ValueError, match="2 label.*has 1"):
        load_step_scorer(tmp_path / "rlr", format="pure")


def test_pure_score_is_p_plus_and_pure_reward_is_two_p_minus_one(tmp_path):
    """PURE's process reward p(+) - p(-) is 2 * (rlr's score) - 1."""
    from released_prms import pure_reference

    model, tok = make_released_prm("pure", tmp_path / "pure")
    scorer = load_step_scorer(tmp_path / "pure")
    assert scorer.format.name == "pure"
    got = scorer.score_steps(QUESTIONS[:1], SOLUTIONS[:1])[0]
    with torch.no_grad():
        p_plus = pure_reference(model, tok, QUESTIONS[0], SOLUTIONS[0])
    np.testing.assert_allclose(got, p_plus, atol=1e-4)
    rendered = scorer.render(QUESTIONS[0], SOLUTIONS[0])
    ids = torch.tensor([rendered.ids])
    with torch.no_grad():
        probs = model(ids).logits.softmax(-1)[0, list(rendered.read_at)]
    np.testing.assert_allclose(
        2 * np.asarray(got) - 1, (probs[:, 1] - probs[:, 0]).numpy(), atol=1e-4
    )
    for column in rendered.read_at:  # read at each step's "\n"
        assert tok.decode([rendered.ids[column]]) == "\n"


# ------------------------------------------------- Skywork's tokenisation, exactly

SKYWORK_SOLUTIONS = [
    ["Step 1: 3 + 4 = 7", "Step 2: The answer is 7"],
    ["First we count.\nThere are 12 pens.", "5 are red,\nso 7 are not.", "The answer is 7"],
    ["6 * 7 = 42"],
]


@pytest.mark.parametrize("separator", ["\n\n", "\n"])
def test_skywork_renders_the_reference_tokens_and_scores(tmp_path, separator):
    """rlr's skywork rendering of steps joined by `separator` is Skywork's prepare_input of that
    response, token for token (its tokenizer has a "\\n\\n" token, which prepare_input never
    emits), and each step's score is the reference's score of the step's last line."""
    from rlr.models.step_scorers import SkyworkFormat, StepScorer

    model, tok = make_released_prm("skywork", tmp_path / "skywork")
    blank_line = tok.convert_tokens_to_ids("\n\n")  # one token, as in Qwen2.5's vocabulary
    assert tok.encode("a\n\nb") == tok.encode("a") + [blank_line] + tok.encode("b")
    loaded = load_step_scorer(tmp_path / "skywork")
    scorer = StepScorer(
        SkyworkFormat(separator), loaded.model, loaded.params, loaded.tokenizer, batch_size=2
    )
    got = scorer.score_steps(QUESTIONS, SKYWORK_SOLUTIONS)
    for question, steps, scores in zip(QUESTIONS, SKYWORK_SOLUTIONS, got):
        response = separator.join(steps)
        input_ids, _, flags = skywork_prepare_input(question, response, tok)
        rendered = scorer.render(question, steps)
        assert list(rendered.ids) == input_ids
        flagged = [i for i, f in enumerate(flags) if f == 1]
        lines = skywork_last_lines(steps, separator)
        assert list(rendered.read_at) == [flagged[i] for i in lines]
        with torch.no_grad():
            rewards = skywork_piece_rewards(model, tok, question, response)
        assert len(rewards) == response.count("\n") + 1
        np.testing.assert_allclose(scores, [rewards[i] for i in lines], atol=1e-4)
    with pytest.raises(ValueError, match="must start with"):
        SkyworkFormat(" ")
