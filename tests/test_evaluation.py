import jax
import numpy as np
import pytest
from test_batching import tokenizer_dir

from rlr.data.records import Problem
from rlr.grading import Grader
from rlr.sampling import SampleOutput
from rlr.training import batching
from rlr.training.evaluation import evaluate_problems, is_filler_step, solution_stats
from rlr.training.generation import ended_without_eos


@pytest.mark.parametrize("eos", [2, (2, 3)])
def test_ended_without_eos_matches_a_loop(eos):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, size=(20, 7))
    lengths = rng.integers(0, 8, size=20)
    mask = (np.arange(7)[None] < lengths[:, None]).astype(np.int32)
    eos_ids = set(np.atleast_1d(eos).tolist())
    want = [int(t[max(n - 1, 0)]) not in eos_ids for t, n in zip(tokens, lengths)]
    np.testing.assert_array_equal(ended_without_eos(tokens, mask, eos), want)


def test_solution_stats_counts_filler_and_repeated_steps():
    texts = ["Tom has 1 + 2 = 3 pens.\nStep ready.\nStep ready.\nThe answer is 3.", "x = 4"]
    stats = solution_stats(texts, separators=("\n",))
    assert stats["steps_per_solution"] == 2.5
    assert stats["filler_step_fraction"] == pytest.approx(2 / 5)
    assert stats["repeated_step_fraction"] == pytest.approx(1 / 5)
    assert is_filler_step("Let me think.") and not is_filler_step("So 3 * 4 = 12.")


def test_custom_step_classifier_replaces_the_default():
    texts = ["Tom has 1 + 2 = 3 pens.\nNothing to add here, really.\nThe answer is 3."]
    assert solution_stats(texts, separators=("\n",))["filler_step_fraction"] == 0.0
    mine = solution_stats(texts, separators=("\n",), is_filler=lambda s: "Nothing" in s)
    assert mine["filler_step_fraction"] == pytest.approx(1 / 3)


class CannedSampler:
    """Returns canned responses in the call order, as a Sampler would (B rows of [B, T])."""

    eos_ids: tuple[int, ...] = ()

    def __init__(self, rows, calls, prompt_len):
        self.rows, self.calls, self.prompt_len = rows, list(calls), prompt_len

    def __call__(self, params, ids, mask, key):
        assert ids.shape == (4, self.prompt_len)
        chosen = self.calls.pop(0)
        return SampleOutput(
            self.rows["input_ids"][chosen, 2:],
            np.zeros((len(chosen), 40), np.float32),
            self.rows["response_mask"][chosen].astype(np.int32),
        )


@pytest.mark.parametrize("trim,width", [(True, 16), (False, 36)])
def test_evaluate_problems_grades_final_answers_in_fixed_batches(trim, width):
    """Prompts padded to max_prompt_tokens (36), or trimmed to the power-of-two width of the
    longest (16: the least prompt_width gives)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    problems = [Problem(f"p{i}", f"What is {i} + 1?", str(i + 1)) for i in range(5)]
    texts = [
        f"{i} + 1 = {i + 1}.\nThe answer is {i + 1}."
        if i % 2 == 0
        else "Step ready.\nThe answer is 99."
        for i in range(5)
    ]
    rows = batching.encode_rows(tokenizer, ["x"] * 5, texts, prompt_len=2, response_len=40)
    # the last batch is padded by repeating its last row
    sampler = CannedSampler(rows, [np.array([0, 1, 2, 3]), np.array([4, 4, 4, 4])], width)
    sampler.eos_ids = (tokenizer.eos_token_id,)
    with Grader(num_workers=0) as grader:
        got = evaluate_problems(
            sampler,
            None,
            tokenizer,
            problems,
            grader=grader,
            key=jax.random.key(0),
            max_prompt_tokens=36,
            trim_prompts=trim,
            batch_size=4,
        )
    assert got.accuracy == pytest.approx(3 / 5) and got.num_problems == 5
    steps = [len(t.split("\n")) for t in texts]
    assert got.steps_per_solution == pytest.approx(np.mean(steps))
    assert got.filler_step_fraction == pytest.approx(2 / sum(steps))
    assert got.truncated_fraction == 0.0  # every response ends with EOS
    assert got.samples[1]["response"].startswith("Step ready.") and not got.samples[1]["correct"]
