"""Every command's run directory is decided by rlr.training.checkpoint.run_directory: a local
path, or a URI (gs://bucket/run) that stays a URI for everything the command writes (config,
checkpoints, metrics, TensorBoard, the exported model, summaries), here on an offline fake
bucket (tests/fake_store.py) instead of a local folder named `gs:`."""

from __future__ import annotations

import json
import pathlib

import pytest
import yaml
from fake_store import fake_gcs
from toy_assets import make_toy_assets

from rlr.cli import main
from rlr.training.checkpoint import run_directory

ARCH = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
    "max_position_embeddings": 128,
}
P, T, K = 40, 32, 4
TRAIN = {"batch_size": 4, "steps": 2, "prompt_len": P, "response_len": T}
REWARD_MODEL_TRAIN = {**TRAIN, "max_reasoning_steps": K}  # SFT reads no reasoning steps


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_toy_assets(tmp_path_factory.mktemp("uri_assets"))


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """The fake gs:// store under tmp_path/store, run from tmp_path (where a command that
    mangled the URI into a path would make a folder named `gs:`)."""
    monkeypatch.chdir(tmp_path)
    with fake_gcs(tmp_path / "store", monkeypatch) as root:
        yield root
    assert not (tmp_path / "gs:").exists(), "a URI became a local folder"


def _config(tmp_path: pathlib.Path, name: str, config: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _assert_run_files(run: pathlib.Path, step: int) -> None:
    """What a finished supervised / PPO run writes, all under the bucket."""
    assert (run / "config.yaml").is_file()
    # commit_success.txt: orbax took its gs:// path (no atomic rename on a bucket)
    assert (run / "checkpoints" / str(step) / "commit_success.txt").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, step + 1))
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert json.loads((run / "summary.json").read_text())


def test_sft_writes_and_resumes_under_a_uri(assets, tmp_path, bucket, capsys):
    config = {
        "out_dir": "gs://bucket/sft",
        "tokenizer": str(assets / "tokenizer"),
        "model": {"architecture": ARCH},
        "data": {
            "train": str(assets / "data" / "sft_train.jsonl"),
            "test": str(assets / "data" / "problems_test.jsonl"),
        },
        "train": TRAIN,
        "eval": {"max_examples": 2, "batch_size": 2, "max_new_tokens": 4},
    }
    path = _config(tmp_path, "sft", config)
    assert main(["sft", "--config", path]) == 0
    run = bucket / "bucket" / "sft"
    _assert_run_files(run, 2)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (run / "model" / name).is_file(), name
    assert json.loads((run / "summary.json").read_text())["model_dir"] == "gs://bucket/sft/model"
    capsys.readouterr()
    # a rerun resumes from the checkpoint in the bucket
    assert main(["sft", "--config", path]) == 0
    assert "resumed from gs://bucket/sft/checkpoints at step 2" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["prm", "orm"])
def test_reward_models_write_under_a_uri(assets, tmp_path, bucket, kind):
    config = {
        "out_dir": f"gs://bucket/{kind}",
        "tokenizer": str(assets / "tokenizer"),
        "init": {"architecture": ARCH},
        "data": {
            "train": str(assets / "data" / "prm_train.jsonl"),
            "test": str(assets / "data" / "prm_test.jsonl"),
        },
        "train": REWARD_MODEL_TRAIN,
        "eval": {"max_examples": 4},
    }
    assert main([f"train-{kind}", "--config", _config(tmp_path, kind, config)]) == 0
    run = bucket / "bucket" / kind
    _assert_run_files(run, 2)
    assert json.loads((run / "eval.json").read_text())
    assert (run / "model" / "config.json").is_file()
    assert (
        json.loads((run / "summary.json").read_text())["model_dir"] == f"gs://bucket/{kind}/model"
    )


def test_ppo_writes_and_exports_under_a_uri(assets, tmp_path, bucket):
    import dataclasses

    from ppo_setup import tiny_config

    from rlr.config_loading import to_dict

    config = to_dict(dataclasses.replace(tiny_config(assets, "gs://bucket/ppo"), iterations=1))
    path = _config(tmp_path, "ppo", config)
    assert main(["ppo", "--config", path, "--export", "gs://bucket/policy"]) == 0
    run = bucket / "bucket" / "ppo"
    _assert_run_files(run, 1)
    assert (run / "samples.jsonl").read_text()
    assert (bucket / "bucket" / "policy" / "config.json").is_file()


def test_reproduce_decides_its_stage_directories_with_the_same_helper(tmp_path, monkeypatch):
    """reproduce's stages read back what earlier stages wrote with local-only readers, so its
    run directory is a local one, decided by run_directory like every other command's."""
    from rlr import reproduce
    from rlr.training import checkpoint

    seen = []

    def spy(value, **kwargs):
        seen.append((value, kwargs))
        return run_directory(value, **kwargs)

    monkeypatch.setattr(checkpoint, "run_directory", spy)
    monkeypatch.chdir(tmp_path)
    reproduction = reproduce.Reproduction.from_preset("smoke", "out_dir=runs/r")
    assert seen == [("runs/r", {"field": "out_dir (--out)", "uri": False})]
    assert str(reproduction.out) == str(tmp_path / "runs" / "r")
    for stage in reproduction.plan():
        assert str(stage.directory).startswith(str(reproduction.out) + "/"), stage
    with pytest.raises(ValueError, match=r"out_dir \(--out\)='gs://bucket/r': .*local folder"):
        reproduce.Reproduction.from_preset("smoke", "out_dir=gs://bucket/r")
    assert main(["reproduce", "--preset", "smoke", "--out", "gs://bucket/r"]) != 0
    assert not (tmp_path / "gs:").exists()


def test_run_directory_keeps_uris_and_names_the_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(run_directory("gs://bucket/run")) == "gs://bucket/run"
    assert str(run_directory("runs/x")) == str(tmp_path / "runs" / "x")
    with pytest.raises(ValueError, match="out_dir is empty"):
        run_directory("")
    # one slash: what pathlib makes of a URI; another scheme: nothing rlr can write to
    with pytest.raises(ValueError, match=r"--export='gs:/bucket/run'.*gs:/ is neither"):
        run_directory("gs:/bucket/run", field="--export")
    with pytest.raises(ValueError, match=r"out_dir='gcs://bucket'.*gcs:/ is neither"):
        run_directory("gcs://bucket")
