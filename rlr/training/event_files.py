"""TensorBoard event files of scalars, written without a TensorBoard or torch import.

An event file is a TFRecord stream of `Event` protocol buffers; TensorBoard reads scalars
from `Event{wall_time, step, summary{value{tag, simple_value}}}` records after a first
`Event{wall_time, file_version}`. Scalars are all rlr logs, so the few fields are encoded here
by hand (tensorboardX, the usual writer, imports torch when it is installed: a second or more of
every run's start). tests/test_training_infra.py parses the files with the protobuf classes.
"""

from __future__ import annotations

import io
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

from rlr.training.checkpoint import URI_PREFIXES, storage_path

FILE_VERSION = b"brain.Event:2"
# an object store has no append: its event file is rewritten at most this often (and on close)
URI_FLUSH_SECONDS = 120.0


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, the checksum TFRecord framing uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, the bytes, masked CRC of the bytes."""
    length = struct.pack("<Q", len(data))
    return length + _masked_crc(length) + data + _masked_crc(data)


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 fields encode negatives as ten-byte two's complement
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _wall_time_field(wall_time: float) -> bytes:
    return b"\x09" + struct.pack("<d", wall_time)  # Event.wall_time: field 1, a double


def scalar_event(step: int, scalars: Mapping[str, float], *, wall_time: float) -> bytes:
    """An `Event` proto holding one `Summary` with a `simple_value` per (tag, value)."""
    values = b"".join(
        _field_bytes(1, _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
        for tag, value in scalars.items()
    )
    step_field = b"\x10" + _varint(int(step))  # Event.step: field 2, a varint
    return _wall_time_field(wall_time) + step_field + _field_bytes(5, values)


def version_event(*, wall_time: float) -> bytes:
    """The `Event` that opens every event file: its wall time and `brain.Event:2`."""
    return _wall_time_field(wall_time) + _field_bytes(3, FILE_VERSION)


class ScalarEventWriter:
    """Appends scalar events to `directory/events.out.tfevents.<time>.<host>`.

    A local file is appended to and flushed on every write; under a URI (gs://, s3://, ...)
    the events are kept in memory and the whole file rewritten every URI_FLUSH_SECONDS and on
    close, since an object store cannot append.
    """

    def __init__(self, directory: Any):
        now = time.time()
        folder = storage_path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}"
        self._remote = str(self.path).startswith(URI_PREFIXES)
        self._buffer = io.BytesIO()
        self._file = None if self._remote else open(self.path, "ab")
        self._flushed = now
        self._write(version_event(wall_time=now))

    def add_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """One event at `step` holding every (tag, value) of `scalars`."""
        if scalars:
            self._write(scalar_event(step, scalars, wall_time=time.time()))

    def _write(self, event: bytes) -> None:
        record = tfrecord(event)
        if self._file is not None:
            self._file.write(record)
            self._file.flush()
            return
        self._buffer.write(record)
        if time.time() - self._flushed >= URI_FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Writes what is buffered (under a URI, the whole file)."""
        if self._remote:
            self.path.write_bytes(self._buffer.getvalue())
            self._flushed = time.time()
        elif self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flushes and closes the file."""
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
