"""The hand-written scalar records are the bytes tensorboard's own protos and framing produce."""

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from savegame.log.records import frame, masked_crc32c, read_records, scalar_record, scalar_value_entry


class _Sink:
    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data

    def flush(self):
        pass


def proto_event(wall_time, step, values):
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in values])
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary).SerializeToString()


def tensorboard_frame(data):
    sink = _Sink()
    RecordWriter(sink).write(data)
    return sink.data


tags = st.text(min_size=0, max_size=40)
floats32 = st.floats(width=32, allow_nan=False)
steps = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(wall_time=st.floats(allow_nan=False), step=steps,
       values=st.lists(st.tuples(tags, floats32), min_size=1, max_size=5))
def test_scalar_records_are_byte_identical_to_tensorboards_protos_and_framing(wall_time, step, values):
    ours = scalar_record(wall_time, step, [scalar_value_entry(t, v) for t, v in values])
    assert ours == tensorboard_frame(proto_event(wall_time, step, values))


def test_nan_and_infinities_survive_and_huge_values_become_infinity():
    data = read_records(scalar_record(1.0, 3, [scalar_value_entry("x", v)
                                                for v in (math.nan, math.inf, -math.inf, 1e300)]))[0]
    values = [v.simple_value for v in event_pb2.Event.FromString(data).summary.value]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf, math.inf]


def test_unicode_spaces_and_slashes_in_tags_round_trip():
    tag = "train/lösš with spaces/日本"
    data = read_records(scalar_record(1.0, 1, [scalar_value_entry(tag, 0.5)]))[0]
    assert event_pb2.Event.FromString(data).summary.value[0].tag == tag


def test_the_checksum_matches_the_tfrecord_definition():
    # CRC32C("123456789") is 0xE3069283 (RFC 3720); TFRecord masks it
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("cut", [1, 5, 11, 13, 20])
def test_a_torn_last_record_hides_only_itself(cut):
    first, second = frame(b"complete"), frame(b"torn by a kill")
    assert read_records(first + second[:-cut]) == [b"complete"]


def test_a_flipped_bit_stops_reading_at_that_record():
    blob = bytearray(frame(b"good") + frame(b"damaged"))
    blob[-6] ^= 0x01
    assert read_records(bytes(blob)) == [b"good"]
    assert struct.unpack("<Q", bytes(blob[:8]))[0] == 4
