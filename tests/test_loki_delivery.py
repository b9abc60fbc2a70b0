"""Step 2 through the real path: containers -> json-file -> collector -> Loki push -> test receiver."""

from __future__ import annotations

import json
import statistics
import time

import aiohttp
import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from loki_receiver import LokiReceiver
from polling import wait_until

pytestmark = pytest.mark.docker

ENCODINGS = {
    "protobuf": {},
    "json": {"COLLECTOR_LOKI__ENCODING": "json"},
    "json-gzip": {"COLLECTOR_LOKI__ENCODING": "json", "COLLECTOR_LOKI__GZIP": "true"},
}


def lines_of(receiver: LokiReceiver, name: str) -> list[str]:
    return receiver.lines({"container_name": name})


async def wait_lines(receiver: LokiReceiver, name: str, count: int, timeout: float = 60) -> list[str]:
    await wait_until(lambda: len(lines_of(receiver, name)) >= count, timeout,
                     what=f"{count} lines of {name} at the receiver ({receiver.summary()})")
    return lines_of(receiver, name)


async def start_collector(engine: DockerEngine, receiver: LokiReceiver, **env: str) -> CollectorProcess:
    return await CollectorProcess(engine, env={"COLLECTOR_LOKI__URL": receiver.push_url, **env}).start()


@pytest.fixture
async def receiver():
    async with LokiReceiver() as running:
        yield running


async def test_thirty_thousand_lines_protobuf_with_metadata_and_latency(receiver: LokiReceiver, containers: DockerEngine) -> None:
    proc = await start_collector(containers, receiver)
    try:
        names = [f"lk-{i}-{time.monotonic_ns()}" for i in range(3)]
        started = time.monotonic()
        ids = [containers.run(f"awk 'BEGIN{{for(i=1;i<=10000;i++) print \"{n}\", i}}'", name=n) for n in names]
        for name in names:
            await wait_lines(receiver, name, 10000, timeout=120)
        elapsed = time.monotonic() - started
        host = containers.docker("info", "--format", "{{.Name}}")
        for name, cid in zip(names, ids, strict=True):
            entries = receiver.entries({"container_name": name})
            assert [e.line for e in entries] == [f"{name} {i}" for i in range(1, 10001)]
            assert all(e.labels == {"container_name": name, "host": host, "stream": "stdout", "service_name": name} for e in entries)
            assert all(e.metadata == {"container_id": cid, "image": containers.image} for e in entries)
        assert receiver.unsorted_label_strings == 0 and receiver.noncanonical_label_strings == 0
        assert {r.content_type for r in receiver.requests} == {"application/x-protobuf"}
        # Write-to-receiver latency: Docker's timestamp of the line -> the push that carried it arrived.
        latencies = sorted(_latencies(receiver, names))
        p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99)]
        print(f"\n30,000 lines via Loki protobuf in {elapsed:.2f}s ({30000 / elapsed:,.0f} lines/s); "
              f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms over {len(receiver.requests)} pushes")
    finally:
        assert await proc.stop() == 0


def _latencies(receiver: LokiReceiver, names: list[str]) -> list[float]:
    """Per entry: the receiving request's wall-clock time minus the entry's Docker timestamp."""
    result = []
    wanted = set(names)
    for entry in receiver.received:
        if entry.labels.get("container_name") in wanted:
            result.append(entry.received_at - entry.ts_ns / 1e9)
    return result


@pytest.mark.parametrize("encoding", list(ENCODINGS))
async def test_step_one_cases_arrive_in_every_encoding(encoding: str, receiver: LokiReceiver, containers: DockerEngine) -> None:
    proc = await start_collector(containers, receiver, **ENCODINGS[encoding])
    try:
        seq, rm, mixed, tty = (f"{kind}-{encoding}-{time.monotonic_ns()}" for kind in ("seq", "rm", "mixed", "tty"))
        containers.run("awk 'BEGIN{for(i=1;i<=2000;i++) print \"n\", i}'", name=seq)
        containers.run("echo one; echo two; echo three", "--rm", name=rm)
        containers.run("awk 'BEGIN{s=\"\"; for(i=0;i<40960;i++) s=s \"y\"; print s}'; echo oops >&2; sleep 0.2; printf 'tail'", name=mixed)
        containers.run("echo first; echo second", "-t", name=tty)
        assert await wait_lines(receiver, seq, 2000) == [f"n {i}" for i in range(1, 2001)]
        assert await wait_lines(receiver, rm, 3) == ["one", "two", "three"]
        assert await wait_lines(receiver, tty, 2) == ["first", "second"]
        await wait_lines(receiver, mixed, 3)
        assert receiver.lines({"container_name": mixed, "stream": "stdout"}) == ["y" * 40960, "tail"]
        assert receiver.lines({"container_name": mixed, "stream": "stderr"}) == ["oops"]
        expected_type = "application/x-protobuf" if encoding == "protobuf" else "application/json"
        assert {r.content_type for r in receiver.requests} == {expected_type}
        assert {r.content_encoding for r in receiver.requests} == ({"gzip"} if encoding == "json-gzip" else {None})
    finally:
        assert await proc.stop() == 0


async def test_429_with_retry_after_delays_then_delivers(receiver: LokiReceiver, containers: DockerEngine) -> None:
    proc = await start_collector(containers, receiver)
    try:
        receiver.fail_next(1, status=429, headers={"Retry-After": "2"}, body="Ingestion rate limit exceeded")
        name = f"429-{time.monotonic_ns()}"
        containers.run("echo a; echo b", name=name)
        assert await wait_lines(receiver, name, 2) == ["a", "b"]
        statuses = receiver.statuses()
        assert statuses[:2] == [429, 204]
        gap = receiver.requests[1].received_at - receiver.requests[0].received_at
        assert gap >= 1.9, f"retried after {gap:.2f}s, Retry-After said 2"
    finally:
        assert await proc.stop() == 0


async def test_5xx_and_dropped_connections_then_recovery_deliver_everything_once(receiver: LokiReceiver, containers: DockerEngine) -> None:
    proc = await start_collector(containers, receiver, COLLECTOR_LOKI__MIN_BACKOFF="50ms", COLLECTOR_LOKI__MAX_BACKOFF="200ms")
    try:
        receiver.script(("status", 500), ("drop",), ("status", 503), ("delay", 0.5), ("status", 502))
        name = f"5xx-{time.monotonic_ns()}"
        # Five bursts, so the five faults meet five different pushes.
        containers.run("i=1; while [ $i -le 5000 ]; do echo r $i; [ $((i % 1000)) = 0 ] && sleep 0.5; i=$((i+1)); done", name=name)
        await wait_lines(receiver, name, 5000)
        await _settle(receiver)
        assert lines_of(receiver, name) == [f"r {i}" for i in range(1, 5001)]  # once each, in order
        assert receiver.counters["faults_injected"] == 5
    finally:
        assert await proc.stop() == 0


async def _settle(receiver: LokiReceiver, quiet: float = 1.0) -> None:
    """Wait until no push has arrived for `quiet` seconds (so late duplicates would show)."""
    await wait_until(lambda: not receiver.requests or time.time() - receiver.requests[-1].received_at > quiet, 30)


async def test_400_for_one_too_old_entry_keeps_the_others_and_does_not_loop(receiver: LokiReceiver, containers: DockerEngine) -> None:
    proc = await start_collector(containers, receiver)
    try:
        name = f"old-{time.monotonic_ns()}"
        cid = containers.run("sleep 60", name=name)
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        records = [
            {"log": "recent 1\n", "stream": "stdout", "time": f"{now}.100000000Z"},
            {"log": "ancient\n", "stream": "stdout", "time": "2020-01-01T00:00:00.5Z"},
            {"log": "recent 2\n", "stream": "stdout", "time": f"{now}.200000000Z"},
        ]
        # Appending to the json-file log is exactly what Docker does; the old timestamp is ours.
        with open(containers.log_path(cid), "a") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in records))
        assert await wait_lines(receiver, name, 2) == ["recent 1", "recent 2"]
        await _settle(receiver)
        assert receiver.rejected_by_reason["greater_than_max_sample_age"] == 1
        assert [r.status for r in receiver.requests if r.rejected] == [400]  # sent once, never again
    finally:
        assert await proc.stop() == 0


async def test_structured_metadata_rejection_falls_back_and_delivers(containers: DockerEngine) -> None:
    async with LokiReceiver(allow_structured_metadata=False) as receiver:
        proc = await start_collector(containers, receiver)
        try:
            name = f"nometa-{time.monotonic_ns()}"
            containers.run("echo x; echo y", name=name)
            await wait_lines(receiver, name, 2)
            entries = receiver.entries({"container_name": name})
            assert [(e.line, e.metadata) for e in entries] == [("x", {}), ("y", {})]
            assert receiver.statuses()[0] == 400
            warnings = [line for line in proc.stderr if "does not accept structured metadata" in line]
            assert len(warnings) == 1
        finally:
            assert await proc.stop() == 0


async def test_tenant_and_basic_auth(containers: DockerEngine) -> None:
    async with LokiReceiver(require_basic=("loki", "s3cret"), require_tenant=True) as receiver:
        proc = await start_collector(containers, receiver, COLLECTOR_LOKI__TENANT="team-a",
                                     COLLECTOR_LOKI__USERNAME="loki", COLLECTOR_LOKI__PASSWORD="s3cret")
        try:
            name = f"auth-{time.monotonic_ns()}"
            containers.run("echo secure", name=name)
            await wait_lines(receiver, name, 1)
            assert {e.tenant for e in receiver.entries({"container_name": name})} == {"team-a"}
            assert receiver.counters["unauthorized"] == 0
            assert not any("s3cret" in line for line in proc.stderr)
        finally:
            assert await proc.stop() == 0


async def test_bearer_token_from_file_and_extra_headers(containers: DockerEngine, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    async with LokiReceiver(require_bearer="tok-123") as receiver:
        proc = await start_collector(containers, receiver, COLLECTOR_LOKI__BEARER_TOKEN_FILE=str(token),
                                     COLLECTOR_LOKI__HEADERS='{"X-Extra": "yes"}')
        try:
            name = f"bearer-{time.monotonic_ns()}"
            containers.run("echo token", name=name)
            await wait_lines(receiver, name, 1)
            assert receiver.requests[-1].headers.get("X-Extra") == "yes"
        finally:
            assert await proc.stop() == 0


async def test_other_4xx_drops_the_batch_counts_it_and_goes_on(receiver: LokiReceiver, containers: DockerEngine) -> None:
    proc = await CollectorProcess(containers, env={"COLLECTOR_LOKI__URL": receiver.push_url,
                                                   "COLLECTOR_METRICS__LISTEN": "127.0.0.1:0"}).start()
    try:
        # The next push must be this test's: first let anything other containers had waiting go out.
        async def quiet() -> bool:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{proc.metrics_url}/status") as response:
                    status = await response.json()
            return status["queue_bytes"] == 0 and all(row["unacked_bytes"] == 0 for row in status["containers"])

        await wait_until(quiet, 30, what="nothing in flight before the fault")
        # 422: what Loki answers a push without a valid stream; neither retried nor split.
        receiver.fail_next(1, status=422, body="error at least one valid stream is required for ingestion")
        first, second = f"drop-{time.monotonic_ns()}", f"after-{time.monotonic_ns()}"
        containers.run("echo refused", name=first)
        await wait_until(lambda: any("Loki refused the push" in line for line in proc.stderr), 30, what="the drop")
        containers.run("echo accepted", name=second)
        assert await wait_lines(receiver, second, 1) == ["accepted"]
        dropped = [json.loads(line) for line in proc.stderr if "Loki refused the push" in line]
        assert first in dropped[0]["containers"], dropped  # the log names whose lines were dropped
        assert lines_of(receiver, first) == []  # dropped for good, not retried
        assert receiver.statuses().count(422) == 1
        assert dropped[0]["reason"] == "http_422" and dropped[0]["answer"].startswith("HTTP 422: error at least one valid stream")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{proc.metrics_url}/metrics") as response:
                assert 'collector_entries_dropped_total{reason="http_422"} 1.0' in await response.text()
    finally:
        assert await proc.stop() == 0
