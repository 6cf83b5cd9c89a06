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
from released_prms import MAKERS, QUESTIONS, SOLUTIONS, make_released_prm  # noqa: E402
from toy_assets import shared_toy_assets  # noqa: E402


@pytest.fixture(scope="module", params=sorted(MAKERS))
def released(request, tmp_path_factory):
    """(format, torch model, tokenizer, checkpoint directory) of one released-PRM layout."""
    fmt = request.param
    directory = tmp_path_factory.mktemp(fmt)
    model, tok = make_released_prm(fmt, directory)
    return fmt, model, tok, directory


def test_released_format_scores_equal_the_published_recipe(released):
    fmt, model, tok, directory = released
    scorer = load_step_scorer(directory, batch_size=2)  # format from config.json
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

    from rlr.training import batching, readouts
    from rlr.training.configs import ModelSpec
    from rlr.training.loading import load_scorer, load_tokenizer

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
    assert detect_format(hf) == fmt
    with pytest.raises(ValueError, match="pass format="):
        detect_format({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"})
    with pytest.raises(ValueError, match="step format must be one of"):
        load_step_scorer(directory, format="prm800k")
    other = "skywork" if fmt != "skywork" else "qwen_math_prm"
    with pytest.raises(ValueError, match="reads a"):
        load_step_scorer(directory, format=other)
    scorer = load_step_scorer(directory)
    with pytest.raises(ValueError, match="list of step texts"):
        scorer.score_steps(["q"], ["a single string"])
    with pytest.raises(ValueError, match="2 questions but 1"):
        scorer.score_steps(["q", "r"], [["s"]])
    assert scorer.score_steps(["q"], [[]]) == [[]]
    assert set(STEP_FORMATS) == {"rlr", *MAKERS}


def test_a_mesh_places_the_prm_and_gives_the_same_scores(released):
    from rlr import sharding

    fmt, _, _, directory = released
    plain = load_step_scorer(directory, batch_size=2)
    mesh = sharding.make_mesh()
    sharded = load_step_scorer(directory, batch_size=2, mesh=mesh)
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
