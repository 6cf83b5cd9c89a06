import numpy as np
import pytest

from rlr.training.evaluation import ended_without_eos, is_filler_step, solution_stats


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
