"""The push encoder: byte-exact against Google's protobuf runtime, and round-trips through the
receiver's own hand-written decoder."""

from __future__ import annotations

import json

import cramjam
import pytest
from loki_receiver import decode_push_request, parse_label_string
from lokipb import push_request_class

from collector.sinks.lokiproto import PushEntry, PushStream, encode_json, encode_push_request, label_string, snappy_block

PushRequest = push_request_class()

STREAMS = [
    PushStream('{container_name="web", stream="stdout"}', [
        PushEntry(1795351032709634378, "GET / 200"),
        PushEntry(1795351033000000000, ""),  # empty line, whole-second timestamp
        PushEntry(1795351033000000001, "ünïcødé ✓ " + "x" * 300),  # long: 2-byte lengths
        PushEntry(5, "x" * 20000),  # 3-byte lengths, tiny timestamp
    ], (("container_id", "abc123"), ("image", "nginx:1"))),
    PushStream('{a="quote \\" and \\\\ back"}', [PushEntry(0, "epoch")]),
    PushStream('{b="2"}', [PushEntry(-1_500_000_000, "before 1970"), PushEntry(10**19, "far future")], (("k", ""),)),
]


def _reference_bytes(streams: list[PushStream]) -> bytes:
    request = PushRequest()
    for stream in streams:
        adapter = request.streams.add(labels=stream.labels)
        for entry in stream.entries:
            message = adapter.entries.add(line=entry.line)
            message.timestamp.SetInParent()  # gogoproto non-nullable: always on the wire
            message.timestamp.seconds, message.timestamp.nanos = divmod(entry.ts_ns, 10**9)
            for name, value in stream.metadata:
                message.structuredMetadata.add(name=name, value=value)
    return request.SerializeToString()


def test_protobuf_is_byte_identical_to_the_reference_encoder() -> None:
    assert encode_push_request(STREAMS) == _reference_bytes(STREAMS)


def test_one_known_message_byte_by_byte() -> None:
    body = encode_push_request([PushStream('{a="b"}', [PushEntry(1_000_000_002, "hi")])])
    assert body.hex() == "0a15" "0a07" + b'{a="b"}'.hex() + "120a" "0a04" "0801" "1002" "1202" + b"hi".hex()


def test_round_trip_through_the_receivers_decoder() -> None:
    decoded = decode_push_request(bytes(cramjam.snappy.decompress_raw(snappy_block(encode_push_request(STREAMS)))))
    assert [s.labels for s in decoded] == [s.labels for s in STREAMS]
    got = [[(e.ts_ns, e.line, tuple(e.metadata)) for e in s.entries] for s in decoded]
    assert got == [[(e.ts_ns, e.line, tuple(s.metadata)) for e in s.entries] for s in STREAMS]


@pytest.mark.parametrize("labels", [
    {"b": "2", "a": "1"},
    {"x": 'he said "hi"\n', "path": "C:\\temp", "tab": "a\tb"},
])
def test_label_strings_are_sorted_escaped_and_parse_back(labels: dict[str, str]) -> None:
    text = label_string(labels)
    assert list(dict(parse_label_string(text))) == sorted(labels)
    assert dict(parse_label_string(text)) == labels


def test_label_string_form() -> None:
    assert label_string({"stream": "stdout", "container_name": "web"}) == '{container_name="web", stream="stdout"}'


def test_json_body() -> None:
    labels_of = {STREAMS[0].labels: {"container_name": "web", "stream": "stdout"},
                 STREAMS[1].labels: {"a": 'quote " and \\ back'}, STREAMS[2].labels: {"b": "2"}}
    body = json.loads(encode_json(STREAMS, labels_of))
    first = body["streams"][0]
    assert first["stream"] == {"container_name": "web", "stream": "stdout"}
    assert first["values"][0] == ["1795351032709634378", "GET / 200", {"container_id": "abc123", "image": "nginx:1"}]
    assert first["values"][1] == ["1795351033000000000", "", {"container_id": "abc123", "image": "nginx:1"}]
    assert body["streams"][1] == {"stream": {"a": 'quote " and \\ back'}, "values": [["0", "epoch"]]}


def test_varint_fast_paths_match_the_plain_algorithm() -> None:
    import random

    from collector.sinks.lokiproto import _varint

    def plain(value: int) -> bytes:
        value += (1 << 64) if value < 0 else 0
        out = bytearray()
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    rng = random.Random(7)
    edges = [v + d for e in (7, 14, 21, 28, 35, 63) for v in (1 << e,) for d in (-1, 0, 1)]
    values = edges + [0, -1, -(1 << 63)] + [rng.randrange(-(1 << 63), 1 << 63) for _ in range(20000)] + [
        rng.randrange(0, 1 << 36) for _ in range(20000)]
    assert [_varint(v) for v in values if v < (1 << 64)] == [plain(v) for v in values if v < (1 << 64)]


def test_per_entry_metadata_is_byte_identical_and_the_streams_wins() -> None:
    from collector.pipeline.entry import Entry

    stream = PushStream('{a="b"}', [
        Entry(1_795_351_032_709_634_378, "with fields", "stdout", {"level": "error", "container_id": "ignored"}),
        Entry(1_795_351_032_709_634_379, "without", "stdout", None),
    ], (("container_id", "abc123"),), True)
    request = PushRequest()
    adapter = request.streams.add(labels=stream.labels)
    for entry, pairs in zip(stream.entries, ([("container_id", "abc123"), ("level", "error")], [("container_id", "abc123")]), strict=True):
        message = adapter.entries.add(line=entry.line)
        message.timestamp.seconds, message.timestamp.nanos = divmod(entry.ts_ns, 10**9)
        for name, value in pairs:
            message.structuredMetadata.add(name=name, value=value)
    assert encode_push_request([stream]) == request.SerializeToString()
    body = json.loads(encode_json([stream], {stream.labels: {"a": "b"}}))
    assert [value[2] for value in body["streams"][0]["values"]] == [{"level": "error", "container_id": "abc123"},
                                                                     {"container_id": "abc123"}]


def test_every_size_of_nanos_field_is_byte_identical() -> None:
    """The hot loop builds nanosecond fields from tables by their size (1-5 bytes): every boundary."""
    edges = sorted({max(0, min(999_999_999, (1 << bits) + delta)) for bits in (7, 14, 21, 28) for delta in (-1, 0, 1)}
                   | {0, 1, 999_999_999})
    base = 1795351032 * 10**9
    entries = [PushEntry(base + nanos, "x" * size) for nanos in edges for size in (1, 127, 128, 16000)]
    streams = [PushStream('{a="b"}', entries, (("container_id", "abc"),))]
    assert encode_push_request(streams) == _reference_bytes(streams)
