"""TFRecord framing and the scalar fast path of the TensorBoard event format.

An event file is a sequence of records: ``len (u64 LE) | masked crc32c(len) | data | masked
crc32c(data)``, each ``data`` a serialized ``tensorboard.compat.proto.event_pb2.Event``. Everything
except plain scalars is built with tensorboard's own protos. Plain scalars are the hot path (a
training loop logs thousands per second): building an ``Event`` proto costs ~7 µs here, which caps
a writer thread near 100k scalars/s while it also takes the GIL from the training thread; writing the
same bytes by hand costs well under 1 µs per value. ``tests/log/test_records.py`` checks the bytes
against ``event_pb2`` (byte for byte and through tensorboard's reader).

>>> from tensorboard.compat.proto import event_pb2
>>> record = scalar_record(1.5, 7, [scalar_value_entry("loss", 0.25)])
>>> [data] = read_records(record)
>>> event = event_pb2.Event.FromString(data)
>>> (event.step, event.wall_time, event.summary.value[0].tag, event.summary.value[0].simple_value)
(7, 1.5, 'loss', 0.25)
>>> torn = record + frame(b"cut short")[:-3]   # a writer killed mid-record
>>> read_records(torn) == [data]
True
"""

from __future__ import annotations

import math
import struct

import google_crc32c  # compiled CRC32C: a pure-Python one would cost more than the encoding

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_MASK_DELTA = 0xA282EAD8

# protobuf wire tags: (field number << 3) | wire type
_EVENT_WALL_TIME = b"\x09"   # Event.wall_time = 1, fixed64
_EVENT_STEP = b"\x10"        # Event.step = 2, varint
_EVENT_SUMMARY = b"\x2a"     # Event.summary = 5, length-delimited
_SUMMARY_VALUE = b"\x0a"     # Summary.value = 1, length-delimited
_VALUE_TAG = b"\x0a"         # Summary.Value.tag = 1, length-delimited
_VALUE_SIMPLE = b"\x15"      # Summary.Value.simple_value = 2, fixed32


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC32C rotated right by 15 bits plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord holding ``data``."""
    header = _U64.pack(len(data))
    return b"".join((header, _U32.pack(masked_crc32c(header)), data, _U32.pack(masked_crc32c(data))))


def read_records(blob: bytes) -> list[bytes]:
    """The complete, checksum-valid records at the start of ``blob``; stops at the first torn or
    damaged one (what a reader sees of a file whose writer was killed mid-record)."""
    records, pos = [], 0
    while pos + 12 <= len(blob):
        header = blob[pos:pos + 8]
        if _U32.unpack_from(blob, pos + 8)[0] != masked_crc32c(header):
            break
        (length,) = _U64.unpack(header)
        end = pos + 12 + length + 4
        if end > len(blob):
            break
        data = blob[pos + 12:pos + 12 + length]
        if _U32.unpack_from(blob, end - 4)[0] != masked_crc32c(data):
            break
        records.append(data)
        pos = end
    return records


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL_VARINTS[n]
    if 0 <= n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if 0 <= n < 0x200000:  # steps up to 2 million: unrolled, the common case of a long run
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    if n < 0:
        n += 1 << 64  # int64 on the wire: two's complement, ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]
_headers: dict[int, bytes] = {}


def _record_header(length: int) -> bytes:
    """``len | masked crc(len)``; scalar records have few distinct lengths, so it is cached."""
    header = _headers.get(length)
    if header is None:
        if len(_headers) > 4096:
            _headers.clear()
        raw = _U64.pack(length)
        header = _headers[length] = raw + _U32.pack(masked_crc32c(raw))
    return header


def scalar_record(wall_time: float, step: int, entries: list[bytes]) -> bytes:
    """One framed record of ``Event(wall_time, step, summary=Summary(value=entries))``, with the
    field order and omitted defaults of protobuf's own serializer (the test compares bytes)."""
    summary = b"".join(entries)
    time_field = (_EVENT_WALL_TIME + _F64.pack(wall_time)
                  if wall_time or math.copysign(1.0, wall_time) < 0 else b"")  # proto3 omits +0.0
    data = b"".join((time_field, _EVENT_STEP if step else b"",
                     _varint(step) if step else b"", _EVENT_SUMMARY, _varint(len(summary)), summary))
    return b"".join((_record_header(len(data)), data, _U32.pack(masked_crc32c(data))))


def scalar_value_prefix(tag: str) -> bytes:
    """The bytes of one ``Summary.value`` entry for ``tag`` up to its value: the entry is complete
    with the 4 bytes of ``float32_bytes(value)``. Computed once per tag and cached by the writer."""
    encoded = tag.encode("utf-8")
    value = (_VALUE_TAG + _varint(len(encoded)) + encoded if encoded else b"") + _VALUE_SIMPLE
    return _SUMMARY_VALUE + _varint(len(value) + 4) + value


def float32_bytes(value: float) -> bytes:
    """``value`` as protobuf's float field stores it; out-of-range finite values become ±inf
    (as protobuf's own conversion does), NaN stays NaN."""
    try:
        return _F32.pack(value)
    except OverflowError:
        return _F32.pack(math.copysign(math.inf, value))


def scalar_value_entry(tag: str, value: float) -> bytes:
    """One encoded ``Summary.value`` entry (tag, simple_value)."""
    return scalar_value_prefix(tag) + float32_bytes(value)
