import json
import os
import signal
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlr.training.checkpoint import Checkpointer, NonFiniteStateError
from rlr.training.metrics import MetricsWriter, read_metrics
from rlr.training.preemption import PreemptionGuard
from rlr.training.train_state import init_train_state, make_optimizer, make_train_step


def quadratic_loss(params, batch):
    pred = batch["x"] @ params["w"] + params["b"]
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, {"mse": loss}


def make_state():
    params = {"w": jnp.ones((3, 1)), "b": jnp.zeros((1,))}
    tx = make_optimizer(learning_rate=0.1, max_grad_norm=1.0)
    return init_train_state(params, tx), tx


def batch(scale=1.0):
    x = jnp.arange(12.0).reshape(4, 3) / 10
    return {"x": x * scale, "y": jnp.ones((4, 1))}


def test_train_step_reduces_loss_and_counts_steps():
    state, tx = make_state()
    step = make_train_step(quadratic_loss, tx)
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch())
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.2 * losses[0]
    assert int(state.step) == 20 and int(state.skipped) == 0


def test_non_finite_batch_is_skipped_and_counted():
    state, tx = make_state()
    step = make_train_step(quadratic_loss, tx, donate=False)
    before = jax.tree.map(np.asarray, state.params)
    state, metrics = step(state, batch(scale=jnp.nan))
    assert float(metrics["update_skipped"]) == 1.0
    assert int(state.skipped) == 1 and int(state.step) == 0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before)):
        np.testing.assert_array_equal(np.asarray(a), b)
    state, metrics = step(state, batch())
    assert float(metrics["update_skipped"]) == 0.0 and int(state.step) == 1


def test_optimizer_rejects_bad_learning_rate():
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        make_optimizer(learning_rate=0.0)


def test_checkpoint_round_trip_keep_and_nan_refusal(tmp_path):
    state, _ = make_state()
    with Checkpointer(tmp_path / "ckpt", keep=2) as ckpt:
        for s in (1, 2, 3):
            ckpt.save(s, state._replace(step=jnp.asarray(s, jnp.int32)), {"data_position": s * 10})
        ckpt.wait()
        assert ckpt.latest_step() == 3
        restored, meta = ckpt.restore(state)
        assert int(restored.step) == 3 and meta == {"data_position": 30}
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state._replace(step=3))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        bad = state._replace(
            params={"w": state.params["w"].at[0, 0].set(jnp.nan), "b": state.params["b"]}
        )
        with pytest.raises(NonFiniteStateError, match=r"step 4.*\['w'\]"):
            ckpt.save(4, bad)
    steps = sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit())
    assert steps == [2, 3]


def test_restore_without_checkpoint_is_a_clear_error(tmp_path):
    with Checkpointer(tmp_path / "none") as ckpt:
        with pytest.raises(FileNotFoundError, match="no checkpoint in"):
            ckpt.restore({"a": jnp.zeros(2)})


def read_event_file(path):
    """The Event protos of a TensorBoard event file, each TFRecord's CRCs checked with
    tensorboardX's own CRC-32C and each record parsed by its protobuf classes."""
    from tensorboardX.crc32c import crc32c as reference_crc
    from tensorboardX.proto.event_pb2 import Event

    def masked(data):
        crc = reference_crc(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    data, events = path.read_bytes(), []
    while data:
        header, (length_crc,) = data[:8], struct.unpack("<I", data[8:12])
        (length,) = struct.unpack("<Q", header)
        assert length_crc == masked(header)
        record, (record_crc,) = (
            data[12 : 12 + length],
            struct.unpack("<I", data[12 + length : 16 + length]),
        )
        assert record_crc == masked(record)
        events.append(Event.FromString(record))
        data = data[16 + length :]
    return events


def test_metrics_writer_jsonl_and_tensorboard(tmp_path):
    with MetricsWriter(tmp_path, total_steps=2, show=("loss",)) as writer:
        writer.write(1, {"loss": jnp.asarray(0.5), "vector": jnp.ones(3), "ok": True})
        writer.write(2, {"loss": np.float32(0.25), "nan": float("nan"), "big": 3e9})
        writer.write(3, {"nan": float("nan")})  # nothing finite: no event
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["loss"] == 0.5 and rows[0]["ok"] == 1.0 and "vector" not in rows[0]
    (event_file,) = (tmp_path / "tb").iterdir()
    assert event_file.name.startswith("events.out.tfevents.")
    first, *scalars = read_event_file(event_file)
    assert first.file_version == "brain.Event:2" and first.wall_time > 0
    got = [(e.step, {v.tag: v.simple_value for v in e.summary.value}) for e in scalars]
    assert got == [(1, {"loss": 0.5, "ok": 1.0}), (2, {"loss": 0.25, "big": 3e9})]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"step": 1}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        read_metrics(tmp_path / "bad.jsonl")


def test_event_records_encode_large_steps_and_negative_values(tmp_path):
    from rlr.training.event_files import ScalarEventWriter, crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    writer = ScalarEventWriter(tmp_path)
    writer.add_scalars(2**40 + 3, {"a/b": -1.5, "é": 2.0})
    writer.close()
    (_, event) = read_event_file(writer.path)
    assert event.step == 2**40 + 3
    assert [(v.tag, v.simple_value) for v in event.summary.value] == [("a/b", -1.5), ("é", 2.0)]


def test_preemption_guard_turns_sigterm_into_a_flag():
    previous = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested and guard.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous
