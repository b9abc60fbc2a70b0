"""Loki's push.proto as Google protobuf classes, built at run time (no protoc, no generated code):
an independent reference for the hand-written encoder (test_lokiproto) and a C-speed decoder for
the benchmark's receiver (bench/receiver_proc.py --fast)."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def push_request_class() -> type:
    """Loki's push.proto, built at run time (no protoc): PushRequest, StreamAdapter, EntryAdapter."""
    pool = descriptor_pool.DescriptorPool()
    ts = descriptor_pb2.FileDescriptorProto(name="google/protobuf/timestamp.proto", package="google.protobuf", syntax="proto3")
    msg = ts.message_type.add(name="Timestamp")
    msg.field.add(name="seconds", number=1, type=3, label=1)
    msg.field.add(name="nanos", number=2, type=5, label=1)
    pool.Add(ts)
    push = descriptor_pb2.FileDescriptorProto(name="push.proto", package="logproto", syntax="proto3",
                                              dependency=["google/protobuf/timestamp.proto"])
    req = push.message_type.add(name="PushRequest")
    req.field.add(name="streams", number=1, type=11, label=3, type_name=".logproto.StreamAdapter")
    stream = push.message_type.add(name="StreamAdapter")
    stream.field.add(name="labels", number=1, type=9, label=1)
    stream.field.add(name="entries", number=2, type=11, label=3, type_name=".logproto.EntryAdapter")
    stream.field.add(name="hash", number=3, type=4, label=1)
    entry = push.message_type.add(name="EntryAdapter")
    entry.field.add(name="timestamp", number=1, type=11, label=1, type_name=".google.protobuf.Timestamp")
    entry.field.add(name="line", number=2, type=9, label=1)
    entry.field.add(name="structuredMetadata", number=3, type=11, label=3, type_name=".logproto.LabelPairAdapter")
    pair = push.message_type.add(name="LabelPairAdapter")
    pair.field.add(name="name", number=1, type=9, label=1)
    pair.field.add(name="value", number=2, type=9, label=1)
    pool.Add(push)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))
