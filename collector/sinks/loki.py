"""The Loki sink, shaped like aiokafka's producer: an accumulator task closes batches (by size or by
the age of their oldest chunk) and encodes them; one sender task pushes them in order, retrying
with backoff. A batch is acknowledged (positions advance) when Loki stored it: 2xx, or a 400 whose
valid entries Loki kept.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import logging
import random
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from collector import __version__
from collector.config import LokiConfig
from collector.pipeline.entry import Chunk, Entry, Origin
from collector.pipeline.queue import ChunkQueue, QueueClosed
from collector.sinks.base import Acknowledge
from collector.sinks.lokiproto import PushStream, encode_json, encode_push_request, label_string, snappy_block

log = logging.getLogger(__name__)

# Loki's 400 texts, one per rejected entry (or grouped "N errors like: ..."), by its reason names.
_REJECTION_PATTERNS = (
    ("greater_than_max_sample_age", re.compile(r"timestamp too old")),
    ("too_far_in_future", re.compile(r"timestamp too new")),
    ("line_too_long", re.compile(r"Max entry size .* exceeded")),
    ("out_of_order", re.compile(r"out of order|too far behind")),
    ("per_stream_rate_limit", re.compile(r"Per stream rate limit exceeded")),
    ("rate_limited", re.compile(r"Ingestion rate limit exceeded")),
    ("invalid_labels", re.compile(r"error parsing labels|invalid label|parse error", re.I)),
)
_SUMMARY = re.compile(r"^\s*total ignored: \d+ out of \d+")  # the ingester's tally after its lines
_GROUPED = re.compile(r"^\s*(\d+) errors like: (.*)$")
_METADATA_DISABLED = re.compile(r"structured metadata is disabled|structured metadata.*not allowed|disallowed.structured.metadata", re.I)


def rejections_in(body: str) -> Counter[str]:
    """Count rejected entries by reason from a Loki 400 body."""
    counts: Counter[str] = Counter()
    for line in body.splitlines():
        if not line.strip() or _SUMMARY.match(line):
            continue
        times = 1
        grouped = _GROUPED.match(line)
        if grouped:
            times, line = int(grouped.group(1)), grouped.group(2)
        reason = next((name for name, pattern in _REJECTION_PATTERNS if pattern.search(line)), "other")
        counts[reason] += times
    return counts


@dataclass(slots=True)
class PushStats:
    entries_sent: int = 0
    bytes_sent: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # by status code or "error"
    retries: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by Loki's reason
    dropped: Counter[str] = field(default_factory=Counter)  # batches dropped, by reason
    last_push_ok: bool = True
    last_error: str = ""


@dataclass(slots=True)
class Batch:
    chunks: list[Chunk] = field(default_factory=list)
    # One stream per (origin, stream name): its entries, labels and metadata.
    streams: dict[tuple[int, str], list[Entry]] = field(default_factory=dict)
    stream_origin: dict[tuple[int, str], Origin] = field(default_factory=dict)
    line_bytes: int = 0  # what batch_max_bytes bounds
    entries: int = 0
    oldest: float = 0.0  # monotonic time its first chunk was taken from the queue
    # Encoded when the batch closes (in the accumulator, while the sender waits on the network).
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    with_metadata: bool = False


class PushObserver(Protocol):
    def pushed(self, entries: int, line_bytes: int, duration: float, entry_times_ns: list[int]) -> None: ...


# Structured metadata the sink sends only when `loki.structured_metadata` names it; any other key
# of an origin's metadata (a container's log attributes) is always sent.
OPTIONAL_METADATA = frozenset({"container_id", "image"})


class LokiSink:
    def __init__(self, config: LokiConfig, observer: PushObserver | None = None) -> None:
        self.config = config
        self._observer = observer
        self.stats = PushStats()
        self.send_metadata = True  # until Loki says it refuses structured metadata
        self._metadata_keys = frozenset(config.structured_metadata)
        self._pending = 0  # batches closed but not yet acknowledged

    @property
    def pending(self) -> int:
        return self._pending

    # -- the two tasks -------------------------------------------------------------------------
    async def run(self, queue: ChunkQueue, acknowledge: Acknowledge) -> None:
        ready: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=1)  # one batch ready while one is sent
        async with self._session() as session:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._accumulate(queue, ready), name="loki-accumulator")
                group.create_task(self._send_all(session, ready, acknowledge), name="loki-sender")

    async def _accumulate(self, queue: ChunkQueue, ready: asyncio.Queue[Batch | None]) -> None:
        max_bytes = self.config.batch_max_bytes
        max_wait = self.config.batch_max_wait
        batch = Batch()
        closed = False
        while not closed:
            if batch.chunks:
                timeout = batch.oldest + max_wait - time.monotonic()
                chunk = None
                if timeout > 0:
                    try:
                        async with asyncio.timeout(timeout):
                            chunk = await queue.get()
                    except TimeoutError:
                        pass
                    except QueueClosed:
                        closed = True
            else:
                try:
                    chunk = await queue.get()
                except QueueClosed:
                    break
            if chunk is not None:
                self._add(batch, chunk)
                if batch.line_bytes < max_bytes:
                    continue
            await self._close_batch(batch, ready)
            batch = Batch()
        await self._close_batch(batch, ready)
        await ready.put(None)

    async def _close_batch(self, batch: Batch, ready: asyncio.Queue[Batch | None]) -> None:
        if batch.chunks:
            self._pending += 1
            if batch.entries:
                self._encode_into(batch)
            await ready.put(batch)

    async def _send_all(self, session: aiohttp.ClientSession, ready: asyncio.Queue[Batch | None], acknowledge: Acknowledge) -> None:
        while (batch := await ready.get()) is not None:
            if batch.entries:
                duration = await self._send(session, batch)
                if self._observer is not None and duration is not None:
                    newest = [chunk.entries[-1].ts_ns for chunk in batch.chunks if chunk.entries]
                    self._observer.pushed(batch.entries, batch.line_bytes, duration, newest)
            self._pending -= 1
            acknowledge(batch.chunks)

    # -- batching --------------------------------------------------------------------------------
    def _add(self, batch: Batch, chunk: Chunk) -> None:
        if not batch.chunks:
            batch.oldest = time.monotonic()
        batch.chunks.append(chunk)
        if not chunk.entries:
            return
        batch.entries += len(chunk.entries)
        origin = chunk.origin
        streams = batch.streams
        line_bytes = 0
        current_name = ""
        current: list[Entry] = []
        for entry in chunk.entries:
            line_bytes += len(entry[1])
            if entry[2] != current_name:  # chunks are mostly one stream: look up only on a switch
                current_name = entry[2]
                key = (id(origin), current_name)
                current = streams.get(key)  # type: ignore[assignment]
                if current is None:
                    current = streams[key] = []
                    batch.stream_origin[key] = origin
            current.append(entry)
        batch.line_bytes += line_bytes

    def _encode_into(self, batch: Batch) -> None:
        batch.with_metadata = self.send_metadata
        batch.body, batch.headers = self.encode(batch)

    def encode(self, batch: Batch) -> tuple[bytes, dict[str, str]]:
        """The body and its content headers, with or without structured metadata as Loki allows."""
        streams = []
        labels_of: dict[str, dict[str, str]] = {}
        for key, entries in batch.streams.items():
            origin = batch.stream_origin[key]
            labels = {**origin.labels, "stream": key[1]}
            text = label_string(labels)
            labels_of[text] = labels
            metadata = (
                tuple((name, value) for name, value in origin.metadata.items()
                      if value and (name in self._metadata_keys or name not in OPTIONAL_METADATA))
                if self.send_metadata else ()
            )
            per_entry = self.send_metadata and any(entry.attrs for entry in entries)
            streams.append(PushStream(text, entries, metadata, per_entry))
        if self.config.encoding == "json":
            body = encode_json(streams, labels_of)
            headers = {"Content-Type": "application/json"}
            if self.config.gzip:
                body = gzip.compress(body, compresslevel=5)
                headers["Content-Encoding"] = "gzip"
            return body, headers
        return snappy_block(encode_push_request(streams)), {"Content-Type": "application/x-protobuf"}

    # -- sending -----------------------------------------------------------------------------------
    def _session(self) -> aiohttp.ClientSession:
        config = self.config
        headers = {"User-Agent": f"docker-loki-collector/{__version__}", **config.headers}
        if config.tenant:
            headers["X-Scope-OrgID"] = config.tenant
        if config.bearer_token:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        auth = aiohttp.BasicAuth(config.username, config.password) if config.username else None
        connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=4)
        return aiohttp.ClientSession(
            headers=headers, auth=auth, connector=connector,
            timeout=aiohttp.ClientTimeout(total=config.timeout),
        )

    def _ssl_context(self) -> ssl.SSLContext | bool:
        tls = self.config.tls
        if not self.config.url.startswith("https://"):
            return True
        context = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file or None)
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _send(self, session: aiohttp.ClientSession, batch: Batch) -> float | None:
        """Push until Loki has it; the duration of the request that succeeded, None if dropped.

        Retries connection errors, 429 and 5xx forever: the log file is the buffer, and shutdown's
        flush deadline is what ends a hopeless wait."""
        if batch.with_metadata and not self.send_metadata:
            self._encode_into(batch)  # encoded before Loki told us it refuses metadata
        attempt = 0
        while True:
            retry_after: float | None = None
            started = time.monotonic()
            try:
                async with session.post(self.config.url, data=batch.body, headers=batch.headers) as response:
                    status = response.status
                    text = await response.text(errors="replace")
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                status, text = 0, repr(err)
            self.stats.requests[str(status) if status else "error"] += 1
            duration = time.monotonic() - started
            if 200 <= status < 300:
                self._delivered(batch, len(batch.body))
                return duration
            if status == 400 and batch.with_metadata and _METADATA_DISABLED.search(text):
                if self.send_metadata:
                    self.send_metadata = False
                    log.warning("Loki does not accept structured metadata; sending without it from now on", extra={"response": text[:500]})
                self._encode_into(batch)
                continue
            if status == 400:
                # Loki stored the valid entries; the named ones are rejected for good: never resend.
                rejected = rejections_in(text)
                self.stats.rejected.update(rejected)
                log.warning("Loki rejected entries", extra={"rejected": dict(rejected), "response": text[:1000]})
                self._delivered(batch, len(batch.body), rejected=sum(rejected.values()))
                return duration
            if status and status != 429 and 400 <= status < 500:
                self.stats.dropped[f"http_{status}"] += batch.entries
                self.stats.last_push_ok = False
                self.stats.last_error = f"HTTP {status}: {text[:200]}"
                log.error("Loki refused the batch; dropping it", extra={"status": status, "entries": batch.entries, "response": text[:1000]})
                return None
            self.stats.last_push_ok = False
            self.stats.last_error = f"HTTP {status}: {text[:200]}" if status else text[:200]
            delay = self._backoff(attempt, retry_after)
            attempt += 1
            self.stats.retries += 1
            log.warning("push failed; retrying", extra={"status": status, "error": text[:300], "attempt": attempt, "retry_in_s": round(delay, 3)})
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        ceiling = min(self.config.max_backoff, self.config.min_backoff * (2**attempt))
        return ceiling * (0.5 + random.random() / 2)  # jitter: clients that failed together spread out

    def _delivered(self, batch: Batch, body_bytes: int, rejected: int = 0) -> None:
        self.stats.entries_sent += batch.entries - rejected
        self.stats.bytes_sent += body_bytes
        self.stats.last_push_ok = True


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds or as an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
