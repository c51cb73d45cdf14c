"""TensorBoard scalars without the tensorboard package: the event-file format written by hand.

`torch.utils.tensorboard` needs the `tensorboard` package, which is often missing; scalars are simple
enough to write directly (a TFRecord stream of `Event` protobufs), and TensorBoard reads the result.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)  # TFRecord masking
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        bits, n = n & 0x7F, n >> 7
        out.append(bits | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str | None = None, scalars: dict | None = None) -> bytes:
    msg = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step & 0xFFFFFFFFFFFFFFFF)
    if file_version is not None:
        msg += _field_bytes(3, file_version.encode())
    if scalars:
        values = b"".join(_field_bytes(1, _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", float(v)))
                          for tag, v in scalars.items())
        msg += _field_bytes(5, values)  # Event.summary = Summary{repeated Value{tag, simple_value}}
    return msg


class ScalarWriter:
    """Appends scalars to `events.out.tfevents.*` in `log_dir`; `add_scalars({"tag": value}, step)`."""

    def __init__(self, log_dir: str | Path) -> None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._file = open(log_dir / name, "ab")
        self._write(_event(time.time(), 0, file_version="brain.Event:2"))

    def _write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data)))
        self._file.flush()

    def add_scalars(self, scalars: dict[str, float], step: int) -> None:
        if scalars:
            self._write(_event(time.time(), step, scalars=scalars))

    def close(self) -> None:
        self._file.close()


def read_scalars(path: str | Path) -> list[tuple[int, str, float]]:
    """Reads back (step, tag, value) from an event file written by `ScalarWriter` (checks every CRC)."""
    data, out, i = Path(path).read_bytes(), [], 0
    while i < len(data):
        (length,) = struct.unpack_from("<Q", data, i)
        if struct.unpack_from("<I", data, i + 8)[0] != _masked_crc(data[i:i + 8]):
            raise ValueError(f"{path}: corrupt record header at byte {i}")
        record = data[i + 12:i + 12 + length]
        if struct.unpack_from("<I", data, i + 12 + length)[0] != _masked_crc(record):
            raise ValueError(f"{path}: corrupt record at byte {i}")
        i += 16 + length
        step = _decode_step(record)
        for tag, value in _decode_scalars(record):
            out.append((step, tag, value))
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        n |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return n, i


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            length, i = _read_varint(buf, i)
            value, i = buf[i:i + length], i + length
        yield number, value


def _decode_step(record: bytes) -> int:
    return next((v for n, v in _fields(record) if n == 2), 0)


def _decode_scalars(record: bytes):
    for n, summary in _fields(record):
        if n == 5:
            for _, value in _fields(summary):
                parts = dict(_fields(value))
                yield parts[1].decode(), struct.unpack("<f", parts[2])[0]
