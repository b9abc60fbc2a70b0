"""Step 3: restarts, crashes and stopped containers lose nothing (real engine, test receiver)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter

import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from loki_receiver import LokiReceiver
from polling import wait_until

pytestmark = pytest.mark.docker

# ~5,000 lines/s from busybox: 50 lines, then 10 ms of sleep.
PRODUCER = "awk 'BEGIN{{for(i=1;i<={n};i++){{print \"p\", i; if(i%50==0) system(\"sleep 0.01\")}}}}'"


@pytest.fixture
async def receiver():
    async with LokiReceiver() as running:
        yield running


@pytest.fixture
def positions_path(tmp_path) -> str:
    return str(tmp_path / "positions.json")


def collector(engine: DockerEngine, receiver: LokiReceiver, positions_path: str, **env: str) -> CollectorProcess:
    return CollectorProcess(engine, env={"COLLECTOR_LOKI__URL": receiver.push_url, **env}, positions_path=positions_path)


def lines_of(receiver: LokiReceiver, name: str) -> list[str]:
    return receiver.lines({"container_name": name})


async def wait_lines(receiver: LokiReceiver, name: str, count: int, timeout: float = 120) -> None:
    await wait_until(lambda: len(set(lines_of(receiver, name))) >= count, timeout,
                     what=f"{count} distinct lines of {name} ({receiver.summary()})")


def saved_positions(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)["containers"]


def records_before(log_path: str, offset: int) -> int:
    with open(log_path, "rb") as handle:
        return handle.read(offset).count(b"\n")


async def test_sigterm_mid_stream_three_times_loses_and_repeats_nothing(receiver, containers: DockerEngine, positions_path) -> None:
    total = 40000
    name = f"term-{time.monotonic_ns()}"
    proc = await collector(containers, receiver, positions_path).start()
    containers.run(PRODUCER.format(n=total), name=name)
    for _ in range(3):
        await wait_until(lambda: len(lines_of(receiver, name)) > 0, 60, what="lines flowing")
        await asyncio.sleep(random.uniform(0.7, 1.5))
        assert await proc.stop(signal.SIGTERM) == 0, proc.stderr[-10:]
        proc = await collector(containers, receiver, positions_path).start()
    try:
        await wait_lines(receiver, name, total)
        await asyncio.sleep(1.0)  # a late duplicate would show now
        assert lines_of(receiver, name) == [f"p {i}" for i in range(1, total + 1)]
    finally:
        assert await proc.stop() == 0


async def test_kill_9_five_rounds_every_line_arrives_duplicates_only_after_checkpoint(receiver, containers: DockerEngine, positions_path) -> None:
    total = 50000
    name = f"kill-{time.monotonic_ns()}"
    proc = await collector(containers, receiver, positions_path).start()
    cid = containers.run(PRODUCER.format(n=total), name=name)
    log_path = containers.log_path(cid)
    windows: list[tuple[int, int]] = []  # per kill: (lines checkpointed, highest line received)
    for _ in range(5):
        await asyncio.sleep(random.uniform(0.3, 1.6))
        assert await proc.stop(signal.SIGKILL) == -signal.SIGKILL
        highest = max((int(line.split()[1]) for line in lines_of(receiver, name)), default=0)
        saved = saved_positions(positions_path) if os.path.exists(positions_path) else {}
        checkpointed = records_before(log_path, saved[cid]["offset"]) if cid in saved else 0
        windows.append((checkpointed, highest))
        proc = await collector(containers, receiver, positions_path).start()
    try:
        await wait_lines(receiver, name, total)
        await asyncio.sleep(1.0)
        counts = Counter(lines_of(receiver, name))
        assert set(counts) == {f"p {i}" for i in range(1, total + 1)}  # every line arrived
        # A kill may repeat only what Loki acknowledged after the last checkpoint, or had in
        # flight: lines in (checkpointed, highest received] of that kill, each once.
        allowed = Counter()
        for checkpointed, highest in windows:
            allowed.update(f"p {i}" for i in range(checkpointed + 1, highest + 1))
        excess = {line: n - 1 for line, n in counts.items() if n - 1 > allowed[line]}
        assert excess == {}, f"duplicates outside the unacknowledged windows: {list(excess.items())[:5]}"
        print(f"\nkill -9 x5: {sum(n - 1 for n in counts.values())} duplicate lines of {total}; per kill "
              f"(received but not yet checkpointed): {[h - c for c, h in windows]}")
    finally:
        assert await proc.stop() == 0


async def test_containers_that_stopped_or_started_while_down(receiver, containers: DockerEngine, positions_path) -> None:
    stopper, newcomer = f"stopper-{time.monotonic_ns()}", f"newcomer-{time.monotonic_ns()}"
    proc = await collector(containers, receiver, positions_path).start()
    containers.run("for i in 1 2 3; do echo s $i; done; sleep 3; for i in 4 5 6; do echo s $i; done", name=stopper)
    await wait_lines(receiver, stopper, 3)
    assert await proc.stop() == 0
    containers.run("for i in 1 2 3 4; do echo n $i; done", name=newcomer)
    await wait_until(lambda: containers.inspect(stopper)["State"]["Status"] == "exited"
                     and containers.inspect(newcomer)["State"]["Status"] == "exited", 30, what="both exited")
    proc = await collector(containers, receiver, positions_path).start()
    try:
        await wait_lines(receiver, stopper, 6)
        await wait_lines(receiver, newcomer, 4)
        await asyncio.sleep(0.5)
        assert lines_of(receiver, stopper) == [f"s {i}" for i in range(1, 7)]
        assert lines_of(receiver, newcomer) == [f"n {i}" for i in range(1, 5)]
    finally:
        assert await proc.stop() == 0


async def test_start_at_window_found_by_bisection(receiver, containers: DockerEngine, positions_path) -> None:
    name = f"bisect-{time.monotonic_ns()}"
    cid = containers.run("sleep 300", name=name)
    now = time.time()
    records = []
    for i in range(100000):
        # First half two hours old, second half one minute old: lines in time order.
        ts = now - 7200 + i * 0.001 if i < 50000 else now - 60 + (i - 50000) * 0.0001
        seconds = int(ts)
        records.append(json.dumps({"log": f"b {i}\n", "stream": "stdout",
                                   "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((ts - seconds) * 1e9):09d}Z"}))
    with open(containers.log_path(cid), "a") as handle:
        handle.write("\n".join(records) + "\n")
    size = os.path.getsize(containers.log_path(cid))
    proc = await collector(containers, receiver, positions_path, COLLECTOR_POSITIONS__START_AT="1h").start()
    try:
        await wait_lines(receiver, name, 50000)
        await asyncio.sleep(0.5)
        assert lines_of(receiver, name) == [f"b {i}" for i in range(50000, 100000)]
        seek = [json.loads(line) for line in proc.stderr if "first meeting" in line and cid[:12] in line]
        seek = [s for s in seek if s["container_id"] == cid[:12]]
        assert len(seek) == 1 and seek[0]["file_size"] == size
        print(f"\nbisection read {seek[0]['bytes_read']:,} of {size:,} bytes ({seek[0]['bytes_read'] / size:.2%})")
        assert seek[0]["bytes_read"] < size / 20
    finally:
        assert await proc.stop() == 0


async def test_start_at_end_and_all(receiver, containers: DockerEngine, positions_path, tmp_path) -> None:
    name = f"ends-{time.monotonic_ns()}"
    containers.run("echo old 1; echo old 2; sleep 2; echo new 1; sleep 300", name=name)
    await wait_until(lambda: "old 2" in containers.docker("logs", name), 30)
    proc = await collector(containers, receiver, positions_path, COLLECTOR_POSITIONS__START_AT="end").start()
    try:
        await wait_lines(receiver, name, 1)
        await asyncio.sleep(0.3)
        assert lines_of(receiver, name) == ["new 1"]
    finally:
        assert await proc.stop() == 0
    receiver.clear()
    fresh = str(tmp_path / "fresh-positions.json")
    proc = await collector(containers, receiver, fresh, COLLECTOR_POSITIONS__START_AT="all").start()
    try:
        await wait_lines(receiver, name, 3)
        assert lines_of(receiver, name) == ["old 1", "old 2", "new 1"]
    finally:
        assert await proc.stop() == 0


async def test_restarted_container_continues_and_destroy_drops_its_position(receiver, containers: DockerEngine, positions_path) -> None:
    name = f"again-{time.monotonic_ns()}"
    proc = await collector(containers, receiver, positions_path, COLLECTOR_POSITIONS__SYNC_INTERVAL="100ms").start()
    try:
        cid = containers.run("echo a; echo b", name=name)
        await wait_lines(receiver, name, 2)
        await wait_until(lambda: containers.inspect(name)["State"]["Status"] == "exited", 30)
        containers.docker("start", name)
        await wait_until(lambda: len(lines_of(receiver, name)) >= 4, 30, what="second run's lines")
        await asyncio.sleep(0.5)
        assert lines_of(receiver, name) == ["a", "b", "a", "b"]
        await wait_until(lambda: cid in saved_positions(positions_path), 10, what="position saved")
        assert saved_positions(positions_path)[cid]["offset"] == os.path.getsize(containers.log_path(cid))
        containers.rm(name)
        await wait_until(lambda: cid not in saved_positions(positions_path), 10, what="position dropped on destroy")
    finally:
        assert await proc.stop() == 0


async def test_sigterm_during_loki_outage_exits_within_the_flush_deadline_and_loses_nothing(receiver, containers: DockerEngine, positions_path) -> None:
    name = f"outage-{time.monotonic_ns()}"
    proc = await collector(containers, receiver, positions_path, COLLECTOR_SHUTDOWN__FLUSH_TIMEOUT="2s",
                           COLLECTOR_LOKI__MIN_BACKOFF="100ms", COLLECTOR_LOKI__MAX_BACKOFF="500ms").start()
    containers.run("for i in 1 2 3; do echo o $i; done; sleep 300", name=name)
    await wait_lines(receiver, name, 3)
    receiver.down = True
    containers.docker("exec", name, "sh", "-c", "for i in 4 5 6; do echo o $i > /proc/1/fd/1; done")
    await wait_until(lambda: receiver.counters["status_503"] >= 2, 30, what="pushes failing")
    started = time.monotonic()
    assert await proc.stop(signal.SIGTERM) == 0
    took = time.monotonic() - started
    assert took < 10, f"shutdown took {took:.1f}s with a 2s flush deadline"
    assert any("flush timed out" in line for line in proc.stderr)
    receiver.down = False
    proc = await collector(containers, receiver, positions_path).start()
    try:
        await wait_lines(receiver, name, 6)
        await asyncio.sleep(0.5)
        assert lines_of(receiver, name) == [f"o {i}" for i in range(1, 7)]
    finally:
        assert await proc.stop() == 0


async def test_sigterm_exits_while_a_destroyed_containers_source_waits_on_a_full_queue(receiver, containers: DockerEngine, positions_path) -> None:
    proc = await collector(containers, receiver, positions_path, COLLECTOR_QUEUE__MAX_BYTES="64KiB",
                           COLLECTOR_SHUTDOWN__FLUSH_TIMEOUT="1s", COLLECTOR_LOKI__MAX_BACKOFF="500ms",
                           COLLECTOR_DOCKER__DRAIN_TIMEOUT="30s").start()
    receiver.down = True
    name = f"full-{time.monotonic_ns()}"
    # ~8 MB of log: more than the sink's batches (~3 MiB) and the 64 KiB queue hold while Loki is
    # down, so its source ends up blocked on the full queue.
    containers.run("awk 'BEGIN{for(i=1;i<=100000;i++) printf \"filler %06d %s\\n\", i, \"0123456789012345678901234567890123456789012345678901234567890123456789\"}'; sleep 300", name=name)
    await wait_until(lambda: receiver.counters["status_503"] >= 1, 30, what="pushes failing")
    await asyncio.sleep(1)
    containers.rm(name)  # destroyed while its source is still draining into the full queue
    await asyncio.sleep(0.5)
    started = time.monotonic()
    assert await proc.stop(signal.SIGTERM, timeout=60) == 0
    print(f"\nshutdown took {time.monotonic() - started:.1f}s")
    # Shutdown cancels draining sources at once: it does not sit out their 30 s drain timeout.
    assert time.monotonic() - started < 20
