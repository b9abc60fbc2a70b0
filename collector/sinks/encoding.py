"""A push's request body: protobuf + block snappy (Loki's push.proto) or JSON (optionally gzip),
with structured metadata while Loki accepts it. Also what the pacer needs: an entry's size as
Loki's rate limiter counts it."""

from __future__ import annotations

import gzip

from collector.config import LokiConfig
from collector.pipeline.entry import Entry, Origin
from collector.sinks.batch import ATTRS, LINE, Push
from collector.sinks.lokiproto import PushStream, encode_json, encode_push_request, label_string, snappy_block

# Structured metadata sent only when `loki.structured_metadata` names it; any other key of an
# origin's metadata (a container's log attributes) is always sent.
OPTIONAL_METADATA = frozenset({"container_id", "image"})


class PushEncoder:
    def __init__(self, config: LokiConfig) -> None:
        self._config = config
        self._metadata_keys = frozenset(config.structured_metadata)
        self.send_metadata = True  # until Loki says it refuses structured metadata

    def encode_into(self, push: Push) -> None:
        push.with_metadata = self.send_metadata
        push.body, push.headers = self.encode(push)

    def metadata(self, origin: Origin) -> tuple[tuple[str, str], ...]:
        if not self.send_metadata:
            return ()
        return tuple((name, value) for name, value in origin.metadata.items()
                     if value and (name in self._metadata_keys or name not in OPTIONAL_METADATA))

    def loki_size(self, origin: Origin, entries: list[Entry]) -> int:
        """Bytes as Loki's rate limiter counts them: each line and its structured metadata."""
        per_entry = sum(len(name) + len(value) for name, value in self.metadata(origin))
        size = sum(map(len, map(LINE, entries))) + per_entry * len(entries)
        if self.send_metadata and any(map(ATTRS, entries)):
            size += sum(len(name) + len(value) for entry in entries if entry.attrs for name, value in entry.attrs.items())
        return size

    def encode(self, push: Push) -> tuple[bytes, dict[str, str]]:
        """The body and its content headers, with or without structured metadata as Loki allows."""
        labels_of: dict[str, dict[str, str]] = {}
        groups: dict[str, list[PushStream]] = {}  # by label string, in read order
        for key, entries in push.streams.items():
            origin = push.origins[key]
            labels = {**origin.labels, "stream": key[1]}
            text = label_string(labels)
            labels_of[text] = labels
            per_entry = self.send_metadata and any(map(ATTRS, entries))
            groups.setdefault(text, []).append(PushStream(text, entries, self.metadata(origin), per_entry))
        # Largest stream last: Loki's ingester reports only the last stream's failure, and the
        # largest is the one most likely to hit its per-stream rate limit. Parts of one Loki stream
        # (two sources with the same labels, e.g. a restarted one) stay together, in read order.
        streams = [stream for group in sorted(groups.values(), key=lambda group: sum(
            sum(map(len, map(LINE, stream.entries))) for stream in group)) for stream in group]
        if self._config.encoding == "json":
            body = encode_json(streams, labels_of)
            headers = {"Content-Type": "application/json"}
            if self._config.gzip:
                body = gzip.compress(body, compresslevel=5)
                headers["Content-Encoding"] = "gzip"
            return body, headers
        return snappy_block(encode_push_request(streams)), {"Content-Type": "application/x-protobuf"}
