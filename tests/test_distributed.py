"""rlr.training.distributed with one process (every helper the identity), the metrics rows a
resumed run supersedes, and run directories given as URIs (gs://...) staying URIs."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest
from etils.epath import testing as epath_testing

from rlr import sharding
from rlr.training import distributed
from rlr.training.checkpoint import Checkpointer, storage_path
from rlr.training.metrics import MetricsWriter, drop_rows_after, read_metrics


def test_one_process_helpers_are_the_identity():
    mesh = sharding.make_mesh()
    assert distributed.is_main()
    assert distributed.process_rows(mesh, 6) == slice(0, 6)
    local = np.arange(12, dtype=np.int32).reshape(6, 2)
    array = distributed.global_rows(mesh, local, 6)
    assert array.sharding == sharding.batch_sharding(mesh, 2)
    np.testing.assert_array_equal(distributed.local_rows(mesh, array), local)
    np.testing.assert_array_equal(distributed.gather_rows(local), local)
    assert distributed.any_process(True) and not distributed.any_process(False)
    np.testing.assert_array_equal(distributed.fetch({"a": array})["a"], local)
    distributed.sync("test")


def test_rows_must_split_over_the_batch_shards():
    class FakeMesh:
        shape = {"data": 4, "fsdp": 2, "tensor": 1}
        axis_names = ("data", "fsdp", "tensor")

    with pytest.raises(ValueError, match="does not split over the mesh's 8 batch shards"):
        distributed.process_rows(FakeMesh(), 12)


def test_rows_past_the_restored_step_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": float(s)} for s in (1, 2, 3, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')
    assert drop_rows_after(path, 2) == 3  # steps 3 and 4, and the row cut short by a kill
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert drop_rows_after(tmp_path / "missing.jsonl", 2) == 0
    # a resumed writer supersedes on its own
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with MetricsWriter(tmp_path, initial_step=3, tensorboard=False) as writer:
        writer.write(4, {"loss": 40.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 40.0),
    ]


def test_a_disabled_writer_writes_nothing(tmp_path):
    with MetricsWriter(tmp_path / "run", enabled=False, total_steps=3) as writer:
        assert writer.write(1, {"loss": np.float32(2.0)}) == {"loss": 2.0}
    assert not (tmp_path / "run").exists()


def _store(root: pathlib.Path):
    """An offline stand-in for gs://: epath's file operations on gs:// paths go to `root`."""

    def redirect(original, path, *args, **kwargs):
        return original(str(root / str(path).removeprefix("gs://")), *args, **kwargs)

    names = ("exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove")
    names += ("rename", "replace", "rmtree", "stat", "walk")
    return epath_testing.mock_epath(**dict.fromkeys(names, redirect))


def test_a_uri_run_directory_stays_a_uri(tmp_path, monkeypatch):
    assert str(storage_path("gs://bucket/run")) == "gs://bucket/run"
    assert str(storage_path("relative/dir")) == str(pathlib.Path("relative/dir").absolute())
    seen = {}

    class Manager:  # orbax's manager, recording the directory it is handed
        def __init__(self, directory, **kwargs):
            seen["directory"] = directory

    import orbax.checkpoint as ocp

    monkeypatch.setattr(ocp, "CheckpointManager", Manager)
    monkeypatch.chdir(tmp_path)
    with _store(tmp_path / "store"):
        ckpt = Checkpointer("gs://bucket/run/checkpoints")
        with MetricsWriter("gs://bucket/run") as writer:
            writer.write(1, {"loss": 1.0})
        drop_rows_after("gs://bucket/run/metrics.jsonl", 0)
    assert str(ckpt.directory) == str(seen["directory"]) == "gs://bucket/run/checkpoints"
    assert (tmp_path / "store" / "bucket" / "run" / "checkpoints").is_dir()
    assert (tmp_path / "store" / "bucket" / "run" / "metrics.jsonl").read_text() == ""
    # TensorBoard's events went to the store too, rewritten whole on close
    (events,) = (tmp_path / "store" / "bucket" / "run" / "tb").iterdir()
    assert events.name.startswith("events.out.tfevents.") and events.stat().st_size > 50
    assert not (tmp_path / "gs:").exists()


def test_checkpoints_of_a_local_path_still_work(tmp_path):
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(1, {"w": jax.numpy.ones(3)}, {"iteration": 1})
        state, meta = ckpt.restore({"w": jax.numpy.zeros(3)})
    np.testing.assert_array_equal(state["w"], np.ones(3))
    assert meta == {"iteration": 1}


def test_configs_and_exports_reach_a_uri(tmp_path, monkeypatch):
    from rlr.config_loading import dump_config
    from rlr.models import DecoderConfig, DecoderForCausalLM, init_params
    from rlr.training.loading import export_model
    from rlr.training.schemas import ModelSpec

    model = DecoderForCausalLM(
        DecoderConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    params = init_params(model, jax.random.key(0))
    monkeypatch.chdir(tmp_path)
    with _store(tmp_path / "store"):
        run = storage_path("gs://bucket/run")
        run.mkdir(parents=True, exist_ok=True)
        dump_config(ModelSpec(path="p"), run / "config.yaml")
        out = export_model(model, params, "gs://bucket/run/model", tokenizer_dir=None)
    assert str(out) == "gs://bucket/run/model"
    store = tmp_path / "store" / "bucket" / "run"
    assert "path: p" in (store / "config.yaml").read_text()
    assert {"config.json", "model.safetensors"} <= {p.name for p in (store / "model").iterdir()}
    assert not (tmp_path / "gs:").exists() and not pathlib.Path("/gs/bucket").exists()


LAUNCHES = [
    # launch/local_multiprocess.sh and launch/gpu.sh's several nodes
    {"RLR_COORDINATOR_ADDRESS": "localhost:1234", "RLR_NUM_PROCESSES": "2", "RLR_PROCESS_ID": "1"},
    {"TPU_WORKER_HOSTNAMES": "10.0.0.1,10.0.0.2"},  # a TPU pod slice (launch/tpu_pod.sh)
    {"JAX_COORDINATOR_ADDRESS": "localhost:1234"},
]
LAUNCH_VARIABLES = ("RLR_COORDINATOR_ADDRESS", "RLR_NUM_PROCESSES", "RLR_PROCESS_ID")
LAUNCH_VARIABLES += ("TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES")


@pytest.fixture
def one_process(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_multi_process_launch_is_recognised(one_process):
    assert distributed.multi_process_launch() is None
    with one_process.context() as env:  # one process of one: not a multi-process launch
        env.setenv("RLR_COORDINATOR_ADDRESS", "localhost:1")
        env.setenv("RLR_NUM_PROCESSES", "1")
        env.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.1")
        assert distributed.multi_process_launch() is None
    for variables, why in zip(LAUNCHES, ("RLR_NUM_PROCESSES=2", "2 hosts", "JAX_COORD")):
        with one_process.context() as env:
            for name, value in variables.items():
                env.setenv(name, value)
            assert why in distributed.multi_process_launch()


@pytest.mark.parametrize("command", ["eval-bon", "label-steps"])
@pytest.mark.parametrize("variables", LAUNCHES, ids=["rlr", "tpu", "jax"])
def test_single_process_commands_refuse_a_multi_process_launch(
    command, variables, one_process, tmp_path, capsys
):
    """eval-bon and label-steps neither join the runtime nor split their work: launched N
    times they would race on --out, so they refuse before reading anything."""
    from rlr.cli import USAGE_ERROR, main

    for name, value in variables.items():
        one_process.setenv(name, value)
    out = tmp_path / "out.json"
    argv = [command, "--policy", str(tmp_path / "none"), "--problems", str(tmp_path / "none")]
    assert main([*argv, "--out", str(out)]) == USAGE_ERROR
    error = capsys.readouterr().err
    assert f"rlr {command}: error: rlr {command} runs as a single process" in error
    assert "write the same --out" in error and not out.exists()
