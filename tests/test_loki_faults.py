"""Loki faults through the real path (containers -> collector -> receiver): a refusing gateway,
413 above a body size, one container's stream throttled by Loki's per-stream rate limit, and a
long outage. Each test prints lines sent / received / duplicated / dropped for the closing note."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from loki_receiver import LokiReceiver
from polling import wait_until

pytestmark = pytest.mark.docker


async def start(engine: DockerEngine, receiver: LokiReceiver, **env: str) -> CollectorProcess:
    return await CollectorProcess(engine, env={"COLLECTOR_LOKI__URL": receiver.push_url,
                                               "COLLECTOR_METRICS__LISTEN": "127.0.0.1:0", **env}).start()


async def metrics(proc: CollectorProcess) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proc.metrics_url}/metrics") as response:
            return await response.text()


async def ready(proc: CollectorProcess) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proc.metrics_url}/ready") as response:
            return await response.json()


async def is_ready(proc: CollectorProcess) -> bool:
    return bool((await ready(proc))["ready"])


def gauges(text: str) -> dict[str, float]:
    return {line.split()[0]: float(line.split()[-1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line.split()[0]}


def report(case: str, receiver: LokiReceiver, expected: dict[str, list[str]], dropped: int = 0) -> tuple[int, int]:
    """Print and return (missing, duplicated) over the containers in `expected`."""
    sent = sum(len(lines) for lines in expected.values())
    received = duplicated = missing = 0
    for name, lines in expected.items():
        got = Counter(receiver.lines({"container_name": name}))
        received += sum(got.values())
        duplicated += sum(n - 1 for n in got.values() if n > 1)
        missing += sum(1 for line in lines if got[line] == 0)
    print(f"\n{case}: sent {sent}, received {received}, duplicated {duplicated}, missing {missing}, counted dropped {dropped}")
    return missing, duplicated


def numbered(prefix: str, count: int) -> list[str]:
    return [f"{prefix} {i}" for i in range(1, count + 1)]


def writer(prefix: str, count: int, per_second: int = 0) -> str:
    if not per_second:
        return f"awk 'BEGIN{{for(i=1;i<={count};i++) print \"{prefix}\", i}}'"
    pause = 10.0 / per_second  # ten lines, then a pause
    return f"i=1; while [ $i -le {count} ]; do echo {prefix} $i; [ $((i % 10)) = 0 ] && sleep {pause:g}; i=$((i+1)); done"


async def test_401_for_20_seconds_then_200_every_line_arrives(containers: DockerEngine) -> None:
    async with LokiReceiver(require_bearer="good") as receiver:
        proc = await start(containers, receiver, COLLECTOR_LOKI__BEARER_TOKEN="good", COLLECTOR_LOKI__MAX_BACKOFF="2s")
        try:
            name = f"auth401-{time.monotonic_ns()}"
            receiver.require_bearer = "rotated"  # the gateway's credential changed under us
            refused_from = time.monotonic()
            containers.run(writer(name, 3000, per_second=200), name=name)
            await wait_until(lambda: receiver.counters["unauthorized"] >= 2, 30, what="refused pushes")
            state = await ready(proc)
            assert not state["ready"]
            reason = " ".join(state["problems"])
            assert "HTTP 401" in reason and reason.endswith("s.") and "Every entry is kept" in reason
            await wait_until(lambda: time.monotonic() - refused_from >= 20, 30)
            receiver.require_bearer = "good"
            await receiver.wait_for(lambda: len(receiver.lines({"container_name": name})) >= 3000, 120)
            missing, duplicated = report("401 for 20 s", receiver, {name: numbered(name, 3000)})
            assert missing == 0 and duplicated == 0
            assert receiver.lines({"container_name": name}) == numbered(name, 3000)
            assert "collector_entries_dropped_total{" not in await metrics(proc)
            await wait_until(lambda: is_ready(proc), 30, what="/ready true again")
            refusals = [line for line in proc.stderr if "Loki refuses the pushes" in line]
            assert 1 <= len(refusals) <= 2  # once a minute, not once per retry
        finally:
            assert await proc.stop() == 0


async def test_413_above_100_kib_every_line_arrives_in_smaller_pushes(containers: DockerEngine) -> None:
    async with LokiReceiver(max_push_bytes=100 * 1024) as receiver:
        proc = await start(containers, receiver, COLLECTOR_LOKI__ENCODING="json")  # JSON bodies: big, so 413s come
        try:
            name = f"big413-{time.monotonic_ns()}"
            # 20,000 lines of ~120 bytes: ~2.4 MB, several 1 MiB batches, each far above 100 KiB.
            containers.run(f"awk 'BEGIN{{pad=sprintf(\"%100s\",\"\"); for(i=1;i<=20000;i++) print \"{name}\", i, pad}}'", name=name)
            expected = [f"{name} {i} " + " " * 100 for i in range(1, 20001)]
            await receiver.wait_for(lambda: len(receiver.lines({"container_name": name})) >= 20000, 120)
            missing, duplicated = report("413 above 100 KiB", receiver, {name: expected})
            assert missing == 0 and duplicated == 0
            assert receiver.lines({"container_name": name}) == expected
            assert receiver.counters["too_large"] >= 1
            assert all(r.body_size <= 100 * 1024 for r in receiver.requests if r.status == 204)
            assert "collector_entries_dropped_total{" not in await metrics(proc)
        finally:
            assert await proc.stop() == 0


async def test_per_stream_429_for_one_container_the_others_keep_flowing(containers: DockerEngine) -> None:
    stamp = time.monotonic_ns()
    noisy, quiet = f"noisy-{stamp}", [f"quiet{i}-{stamp}" for i in range(3)]
    async with LokiReceiver(stream_rate_limit=(20_000, 40_000), stream_rate_limit_match={"container_name": noisy},
                            shard_label=True) as receiver:
        proc = await start(containers, receiver, COLLECTOR_LOKI__MAX_BACKOFF="2s")
        try:
            # The noisy one writes ~330 KB at once: ~15 s at the 20 KB/s Loki allows its stream.
            containers.run(f"awk 'BEGIN{{pad=sprintf(\"%100s\",\"\"); for(i=1;i<=3000;i++) print \"{noisy}\", i, pad}}'", name=noisy)
            for name in quiet:
                containers.run(writer(name, 2000, per_second=200), name=name)
            for name in quiet:  # the quiet ones arrive while the noisy stream is still throttled
                await receiver.wait_for(lambda name=name: len(receiver.lines({"container_name": name})) >= 2000, 60)
            assert receiver.counters["stream_throttled"] >= 1
            noisy_expected = [f"{noisy} {i} " + " " * 100 for i in range(1, 3001)]
            still_throttled = len(set(receiver.lines({"container_name": noisy}))) < 3000
            await receiver.wait_for(lambda: len(set(receiver.lines({"container_name": noisy}))) >= 3000, 120)
            expected = {noisy: noisy_expected, **{name: numbered(name, 2000) for name in quiet}}
            missing, duplicated = report("per-stream 429 for one container", receiver, expected)
            assert missing == 0
            for name in quiet:
                assert receiver.lines({"container_name": name}) == numbered(name, 2000)  # once each
            print(f"noisy stream still throttled when the quiet ones were complete: {still_throttled}")
            assert "collector_entries_dropped_total{" not in await metrics(proc)
        finally:
            assert await proc.stop() == 0


async def test_hot_container_over_256kb_per_s_is_paced_and_a_quiet_one_beside_it_is_not_delayed(containers: DockerEngine) -> None:
    """Loki 3's defaults but per_stream_rate_limit 256KB, burst 512KB (what the real-Loki trial used):
    it names the hot stream with service_name added; the collector must match it, pace it, and
    keep the quiet container's lines flowing at once."""
    stamp = time.monotonic_ns()
    hot, quiet = f"hot-{stamp}", f"quiet-{stamp}"
    async with LokiReceiver(stream_rate_limit=(256 * 1024, 512 * 1024), require_tenant=True) as receiver:
        proc = await start(containers, receiver, COLLECTOR_LOKI__TENANT="t1")
        try:
            # 30,000 lines of ~120 bytes (3.6 MB) at full speed: ~13 s at 256 KB/s after the burst.
            containers.run(f"awk 'BEGIN{{pad=sprintf(\"%100s\",\"\"); for(i=1;i<=30000;i++) print \"{hot}\", i, pad}}'", name=hot)
            await receiver.wait_for(lambda: receiver.counters["stream_throttled"] >= 1, 60)
            containers.run(writer(quiet, 40, per_second=10), name=quiet)  # 40 lines over 4 s
            async with aiohttp.ClientSession() as session, session.get(f"{proc.metrics_url}/status") as response:
                shown = (await response.json())["throttled_streams"]
            assert [(t["containers"], t["allowed_bytes_per_s"]) for t in shown] == [([hot], 256 * 1024)]
            assert "collector_streams_throttled 1.0" in await metrics(proc)
            await receiver.wait_for(lambda: len(receiver.lines({"container_name": quiet})) >= 40, 60)
            quiet_delays = [e.received_at - e.ts_ns / 1e9 for e in receiver.entries({"container_name": quiet})]
            hot_done_by_then = len(set(receiver.lines({"container_name": hot})))
            await receiver.wait_for(lambda: len(set(receiver.lines({"container_name": hot}))) >= 30000, 180)
            hot_entries = receiver.entries({"container_name": hot})
            expected = {hot: [f"{hot} {i} " + " " * 100 for i in range(1, 30001)], quiet: numbered(quiet, 40)}
            missing, duplicated = report("hot stream over 256 KB/s beside a quiet container", receiver, expected)
            assert missing == 0
            assert receiver.lines({"container_name": quiet}) == numbered(quiet, 40)  # once each, in order
            assert hot_done_by_then < 30000  # the quiet lines did not wait for the hot backlog
            # The delivered rate of the hot stream once paced (after its first throttle, the burst spent).
            first_throttle = min(r.received_at for r in receiver.requests if r.status == 429)
            paced = [e for e in hot_entries if e.received_at > first_throttle + 1]
            span = max(e.received_at for e in paced) - min(e.received_at for e in paced)
            rate = sum(len(e.line) + sum(len(k) + len(v) for k, v in e.metadata.items()) for e in paced) / span
            refusals = sum(1 for r in receiver.requests if r.status == 429)
            print(f"hot stream paced at {rate / 1024:.0f} KB/s (Loki's limit 256 KB/s), {refusals} 429 answers; "
                  f"quiet container's worst delay {max(quiet_delays):.2f} s (median {sorted(quiet_delays)[20]:.2f} s)")
            assert max(quiet_delays) < 3.0
            assert rate <= 256 * 1024 * 1.05
            assert "collector_entries_dropped_total{" not in await metrics(proc)
        finally:
            assert await proc.stop() == 0


async def test_receiver_down_60s_20_containers_5_removed_every_line_arrives(containers: DockerEngine) -> None:
    stamp = time.monotonic_ns()
    names = [f"outage{i}-{stamp}" for i in range(20)]
    async with LokiReceiver() as receiver:
        proc = await start(containers, receiver, COLLECTOR_LOKI__MAX_BACKOFF="5s", COLLECTOR_QUEUE__MAX_BYTES="4MiB")
        try:
            before = gauges(await metrics(proc))
            receiver.down = True
            for name in names:  # each writes 3000 lines over ~15 s while Loki is down
                containers.run(writer(name, 3000, per_second=200), name=name)
            await asyncio.sleep(0)
            down_from = time.monotonic()
            await wait_until(lambda: time.monotonic() - down_from >= 35, 60)
            removed = names[:5]
            for name in removed:  # finished writing (every line is in its log file), then removed
                await asyncio.to_thread(containers.docker, "wait", name, timeout=120)
            containers.rm(*removed)  # docker rm -f during the outage
            rss: list[float] = []
            while time.monotonic() - down_from < 60:
                text = await metrics(proc)
                rss += [float(line.split()[-1]) for line in text.splitlines() if line.startswith("collector_rss_bytes")]
                await asyncio.sleep(2)
            state = await ready(proc)
            assert not state["ready"] and any("Loki has accepted no push" in p for p in state["problems"])
            receiver.down = False
            for name in names:  # the removed ones too: their open log files are drained
                await receiver.wait_for(lambda name=name: len(set(receiver.lines({"container_name": name}))) >= 3000, 180)
            expected = {name: numbered(name, 3000) for name in names}
            missing, duplicated = report("receiver down 60 s, 20 containers, 5 removed", receiver, expected)
            await wait_until(lambda: is_ready(proc), 30, what="/ready true again")
            after = gauges(await metrics(proc))
            print(f"peak RSS during the outage {max(rss) / 2**20:.1f} MiB; tasks {before['collector_asyncio_tasks']:.0f} -> "
                  f"{after['collector_asyncio_tasks']:.0f}, fds {before['collector_open_fds']:.0f} -> {after['collector_open_fds']:.0f}")
            assert missing == 0
            # Every writer has exited and been drained: nothing the outage created is still held.
            assert after["collector_open_fds"] <= before["collector_open_fds"] + 5
            assert after["collector_asyncio_tasks"] <= before["collector_asyncio_tasks"] + 5
            assert max(rss) < 250 * 2**20, f"RSS {max(rss) / 2**20:.1f} MiB"
        finally:
            assert await proc.stop() == 0
