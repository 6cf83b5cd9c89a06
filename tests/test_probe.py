"""`rlr probe`: the table, probe.json and probe.png, and the returns the paper predicts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlr import cli, probe


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    code = cli.main(["probe", "--out", str(out), "--max-filler", "5", "--eta", "0.75"])
    return code, out


def test_writes_json_and_png(probe_run):
    code, out = probe_run
    assert code == 0
    result = json.loads((out / "probe.json").read_text())
    assert result["num_filler"] == [0, 1, 2, 3, 4, 5]
    assert result["num_steps"] == [4, 5, 6, 7, 8, 9]
    assert set(result["returns"]) == {
        "raw", "clip", "delta", "clip_delta", "pure_softmin", "min_form"
    }  # fmt: skip
    assert result["config"]["scores"] == [0.9, 0.7, 0.8, 0.6]
    png = (out / "probe.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_returns_match_the_closed_forms(probe_run):
    _, out = probe_run
    returns = json.loads((out / "probe.json").read_text())["returns"]
    scores, filler, eta = [0.9, 0.7, 0.8, 0.6], 0.95, 0.75
    for m in range(6):
        np.testing.assert_allclose(returns["raw"][m], sum(scores) + m * filler + 1.0, atol=1e-5)
    clip = sum(min(s - eta, 0.0) for s in scores) + 1.0
    np.testing.assert_allclose(returns["clip"], [clip] * 6, atol=1e-5)
    np.testing.assert_allclose(returns["delta"], [scores[0] + 1.0] * 6, atol=1e-5)
    np.testing.assert_allclose(
        returns["clip_delta"], [min(scores[0] - eta, 0.0) + 1.0] * 6, atol=1e-5
    )
    assert all(np.diff(returns["raw"]) > 0.9)


def test_wrong_answer_and_low_filler_keep_refined_returns_bounded():
    # Same shapes as the module run (4 scores, up to 5 fillers), so nothing recompiles.
    result = probe.probe_returns(
        [0.3, 0.9, 0.8, 0.9], correct=False, filler_score=0.2, max_filler=5, alpha=2.0, eta=0.5
    )
    returns = result["returns"]
    assert np.all(np.diff(returns["raw"]) > 0)
    assert max(returns["clip_delta"]) <= 0.0
    assert np.all(np.diff(returns["clip"]) < 0)  # fillers below eta are penalised
    # With fillers before the last step, x_1 stays the first step's score.
    np.testing.assert_allclose(returns["delta"], [2.0 * 0.3] * 6, atol=1e-5)


def test_table_lists_every_m(probe_run):
    _, out = probe_run
    table = probe.format_table(json.loads((out / "probe.json").read_text()))
    lines = table.splitlines()
    assert lines[0].split() == [
        "m", "steps", "raw", "clip", "delta", "clip_delta", "pure_softmin", "min_form"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["0", "1", "2", "3", "4", "5"]
    assert lines[1].split()[2] == "4.0000"  # raw return at m = 0: 0.9+0.7+0.8+0.6 + 1


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["probe", "--scores", "0.9,high", "--out", str(tmp_path)])
    assert "--scores must be comma-separated numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["probe", "--correct", "--wrong"])
    with pytest.raises(ValueError, match="at least one step score"):
        probe.probe_returns([])


def test_group_normalization_lets_padding_pay_and_the_plain_reward_to_go_does_not():
    result = probe.group_probe([0.9, 0.7, 0.8, 0.6], filler_score=0.95, max_filler=4, eta=0.75)
    adv = result["advantages"]
    assert result["num_filler"] == [0, 1, 2, 3, 4]
    # Clip under the group mean and std: every added filler raises the padded sample's advantage
    assert all(b > a for a, b in zip(adv["clip/group"], adv["clip/group"][1:]))
    # the plain reward-to-go keeps the bounds: Clip's sum of c_k, Delta's x_1, Clip-Delta's c_1
    assert adv["clip/none"] == pytest.approx([-0.2] * 5)
    assert adv["delta/none"] == pytest.approx([0.9] * 5)
    assert adv["clip_delta/none"] == pytest.approx([0.0] * 5)
    assert adv["raw/none"] == pytest.approx([3.0 + 0.95 * m for m in range(5)])


def test_the_probe_command_writes_the_group_table(probe_run):
    _, out = probe_run
    group = json.loads((out / "probe.json").read_text())["group"]
    assert set(group["advantages"]) == {
        f"{m}/{n}" for m in ("raw", "clip", "delta", "clip_delta") for n in ("group", "none")
    }


def test_pure_softmin_and_min_form_columns(probe_run):
    _, out = probe_run
    result = json.loads((out / "probe.json").read_text())
    returns, temperature = result["returns"], result["config"]["temperature"]
    signed = [2 * s - 1 for s in [0.9, 0.7, 0.8, 0.6]]
    # the exact min-form is the lowest signed score (+ success); a filler at 0.95 is above it
    np.testing.assert_allclose(returns["min_form"], [min(signed) + 1.0] * 6, atol=1e-5)
    # PURE's softmin sits between the min and the min + T log K, for K = 4 + m steps
    for m, value in enumerate(returns["pure_softmin"]):
        assert min(signed) + 1.0 - 1e-5 <= value <= min(signed) + 1.0 + temperature * np.log(4 + m)
    assert returns["pure_softmin"][0] < returns["raw"][0]


def test_min_form_column_falls_with_low_fillers():
    result = probe.probe_returns(
        [0.3, 0.9, 0.8, 0.9], correct=False, filler_score=0.2, max_filler=5, alpha=2.0, eta=0.5
    )
    returns = result["returns"]
    np.testing.assert_allclose(returns["min_form"][0], 2.0 * (2 * 0.3 - 1), atol=1e-5)
    np.testing.assert_allclose(returns["min_form"][1:], [2.0 * (2 * 0.2 - 1)] * 5, atol=1e-5)
    assert all(b <= a + 1e-6 for a, b in zip(returns["pure_softmin"], returns["pure_softmin"][1:]))
