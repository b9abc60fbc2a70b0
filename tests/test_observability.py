"""Step 4: /metrics, /healthz, /ready, /status and `collector status`, against a real run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from dockerengine import DockerEngine
from harness import REPO, CollectorProcess
from loki_receiver import LokiReceiver
from polling import wait_until
from scrape import get, scrape, value

pytestmark = pytest.mark.docker


async def ready_is(proc: CollectorProcess, code: int) -> bool:
    return (await get(f"{proc.metrics_url}/ready"))[0] == code


@pytest.fixture
async def receiver():
    async with LokiReceiver() as running:
        yield running


async def start(engine: DockerEngine, receiver: LokiReceiver, **env: str) -> CollectorProcess:
    return await CollectorProcess(engine, env={
        "COLLECTOR_LOKI__URL": receiver.push_url, "COLLECTOR_METRICS__LISTEN": "127.0.0.1:0", **env,
    }).start()


async def test_metrics_match_the_receiver_and_container_series_vanish_on_destroy(receiver, containers: DockerEngine) -> None:
    proc = await start(containers, receiver)
    try:
        name = f"met-{time.monotonic_ns()}"
        containers.run("awk 'BEGIN{for(i=1;i<=1500;i++) print \"m\", i}'; echo e >&2; sleep 300", name=name)
        await receiver.wait_for(lambda: len(receiver.lines({"container_name": name})) == 1501)
        await asyncio.sleep(0.3)
        samples = await scrape(proc.metrics_url)
        assert value(samples, "collector_lines_read_total", source="file", container_name=name) == 1501
        assert value(samples, "collector_bytes_read_total", source="file", container_name=name) == os.path.getsize(
            containers.log_path(containers.inspect(name)["Id"]))
        assert value(samples, "collector_entries_pushed_total") == receiver.counters["accepted_entries"]
        assert value(samples, "collector_push_requests_total", status="204") == receiver.counters["status_204"]
        assert value(samples, "collector_batch_entries_sum") == receiver.counters["accepted_entries"]
        assert value(samples, "collector_end_to_end_lag_seconds_count") >= 1
        assert value(samples, "collector_inotify_watches") >= 1
        assert value(samples, "collector_docker_connected") == 1
        assert value(samples, "collector_queue_bytes") == 0
        assert 0 <= value(samples, "collector_position_checkpoint_age_seconds") < 60
        # Leak gauges: present and sane.
        assert 3 <= value(samples, "collector_asyncio_tasks") < 100
        assert 5 <= value(samples, "collector_open_fds") < 500
        assert 10e6 < value(samples, "collector_rss_bytes") < 1e9

        containers.rm(name)

        async def gone() -> bool:
            return value(await scrape(proc.metrics_url), "collector_lines_read_total", source="file", container_name=name) is None

        await wait_until(gone, 30, what="per-container series gone after destroy")
        # Totals survive the container.
        assert value(await scrape(proc.metrics_url), "collector_entries_pushed_total") == receiver.counters["accepted_entries"]
    finally:
        assert await proc.stop() == 0


async def test_ready_follows_loki_and_healthz_stays_up(receiver, containers: DockerEngine) -> None:
    proc = await start(containers, receiver, COLLECTOR_LOKI__MIN_BACKOFF="100ms", COLLECTOR_LOKI__MAX_BACKOFF="300ms",
                       COLLECTOR_LOKI__NOT_READY_AFTER="2s")
    try:
        assert (await get(f"{proc.metrics_url}/ready"))[0] == 200
        receiver.down = True
        name = f"ready-{time.monotonic_ns()}"
        containers.run("echo while down", name=name)
        await wait_until(lambda: ready_is(proc, 503), 30, what="unready while Loki is down")
        status = await get(f"{proc.metrics_url}/ready")
        # A whole sentence: how long, and Loki's answer as short text.
        assert any(problem.startswith("Loki has accepted no push for ") and problem.endswith("HTTP 503: receiver is down.")
                   for problem in status[1]["problems"]), status
        assert (await get(f"{proc.metrics_url}/healthz"))[0] == 200
        receiver.down = False
        await receiver.wait_for(lambda: receiver.lines({"container_name": name}) == ["while down"])
        await wait_until(lambda: ready_is(proc, 200), 30, what="ready again")
        samples = await scrape(proc.metrics_url)
        assert value(samples, "collector_push_retries_total") >= 1
        assert value(samples, "collector_push_requests_total", status="503") >= 1
    finally:
        assert await proc.stop() == 0


async def test_collector_status_lists_containers_with_their_modes(receiver, containers: DockerEngine) -> None:
    proc = await start(containers, receiver)
    try:
        tag = time.monotonic_ns()
        names = {"file": f"st-file-{tag}", "none": f"st-none-{tag}", "local": f"st-local-{tag}"}
        containers.run("echo hello; sleep 300", name=names["file"])
        containers.run("sleep 300", "--log-driver", "none", name=names["none"])
        containers.run("echo streamed; sleep 300", "--log-driver", "local", name=names["local"])
        await receiver.wait_for(lambda: receiver.lines({"container_name": names["file"]}) == ["hello"])
        await receiver.wait_for(lambda: receiver.lines({"container_name": names["local"]}) == ["streamed"])

        def status() -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "collector", "status", "--url", proc.metrics_url],
                                  capture_output=True, text=True, timeout=30, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})

        result = status()
        assert result.returncode == 0, result.stderr
        rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
        assert " file " in rows[names["file"]] and rows[names["file"]].split()[-1] == "1"  # 1 line read
        assert "skipped (driver_none)" in rows[names["none"]]
        assert " stream " in rows[names["local"]] and rows[names["local"]].split()[-1] == "1"
        code, body = await get(f"{proc.metrics_url}/status")
        entry = next(c for c in body["containers"] if c["name"] == names["file"])
        assert entry["acked_offset"] == entry["size"] and entry["lag_bytes"] == 0
    finally:
        assert await proc.stop() == 0


def distinct(receiver: LokiReceiver, name: str) -> list[str]:
    """A container's lines without exact repeats of (timestamp, line): what Loki keeps."""
    seen: dict[tuple[int, str], str] = {}
    for entry in receiver.entries({"container_name": name}):
        seen.setdefault((entry.ts_ns, entry.line), entry.line)
    return list(seen.values())


async def wait_quiet(receiver, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Until no push has arrived for `seconds` (at most 60 s)."""
    seen, since = receiver.counters["requests"], time.monotonic()
    deadline = since + 60
    while time.monotonic() - since < seconds and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if receiver.counters["requests"] != seen:
            seen, since = receiver.counters["requests"], time.monotonic()


async def test_push_answered_after_the_collector_gave_up_is_sent_again_as_exact_repeats(receiver, containers: DockerEngine) -> None:
    """What made the churn test see a container's lines twice: its receiver, blocked, answered a push
    after the collector's timeout; the collector sent it again (at-least-once) and the receiver kept
    both copies. The copies are exact repeats (same timestamps), which Loki drops."""
    proc = await start(containers, receiver, COLLECTOR_LOKI__TIMEOUT="1s")
    try:
        # The collector first sends what other containers of the session left in their logs: wait
        # until it is quiet, so that the next push is this container's. That one is stored but
        # answered after the 1 s timeout.
        await wait_quiet(receiver, 1.5)
        receiver.delay_next(1, 2.0)
        name = f"late-{time.monotonic_ns()}"
        await asyncio.to_thread(containers.run, "for i in 1 2 3; do echo l $i; done", name=name)
        await receiver.wait_for(lambda: len(receiver.lines({"container_name": name})) >= 6)
        assert distinct(receiver, name) == ["l 1", "l 2", "l 3"]
        assert any("no answer within 1s" in line for line in proc.stderr)
    finally:
        assert await proc.stop() == 0


async def test_container_churn_leaves_no_tasks_fds_or_watches(receiver, containers: DockerEngine) -> None:
    proc = await start(containers, receiver)
    try:
        # Warm up the whole path first (Loki and Docker keep-alive connections, lazily made tasks),
        # so the baseline holds everything that is supposed to stay.
        tag = time.monotonic_ns()
        for index, opts in enumerate([("--rm",), ()]):
            containers.run("echo warm", *opts, name=f"warm-{tag}-{index}")
            await receiver.wait_for(lambda index=index: receiver.lines({"container_name": f"warm-{tag}-{index}"}) == ["warm"])
        containers.rm(f"warm-{tag}-1")
        await asyncio.sleep(2.5)
        before = await scrape(proc.metrics_url)
        names = [f"churn-{tag}-{i}" for i in range(30)]
        for index, name in enumerate(names):
            opts = ("--rm",) if index % 2 else ()
            # Off the loop: the receiver answers from this loop, and 30 blocking `docker run`s held
            # it past the collector's push timeout (10 s): a push stored but answered late is sent
            # again, and the receiver (unlike Loki) keeps the exact repeats.
            await asyncio.to_thread(containers.run, "for i in 1 2 3 4 5; do echo c $i; done", *opts, name=name)
        for name in names:
            # Distinct entries, as Loki stores them: at-least-once may repeat a push.
            await receiver.wait_for(lambda name=name: distinct(receiver, name) == [f"c {i}" for i in range(1, 6)])
        containers.rm(*[n for i, n in enumerate(names) if not i % 2])
        await asyncio.sleep(2.5)  # drains end, watches go, the heartbeat settles
        after = await scrape(proc.metrics_url)
        for gauge in ("collector_asyncio_tasks", "collector_open_fds", "collector_inotify_watches"):
            assert value(after, gauge) <= value(before, gauge), (gauge, value(before, gauge), value(after, gauge))
        assert value(after, "collector_rss_bytes") < value(before, "collector_rss_bytes") + 50e6
        assert value(after, "collector_sources", mode="file") == value(before, "collector_sources", mode="file")
    finally:
        assert await proc.stop() == 0


async def test_huge_line_is_cut_counted_and_corrupt_records_are_skipped(receiver, containers: DockerEngine) -> None:
    proc = await start(containers, receiver)
    try:
        name = f"bad-{time.monotonic_ns()}"
        # A 600 KB line: Loki refuses lines over 256 KiB, so it is cut to sources.max_line_bytes.
        cid = containers.run("awk 'BEGIN{s=\"z\"; while(length(s)<600000) s=s s; print substr(s,1,600000); print \"next\"}'; sleep 300", name=name)
        await receiver.wait_for(lambda: len(receiver.lines({"container_name": name})) == 2)
        huge, following = receiver.lines({"container_name": name})
        assert huge == "z" * 262144 and following == "next"
        with open(containers.log_path(cid), "a") as handle:  # damage the file the way a crash might
            handle.write('{"log":"torn\n' + "\x00garbage\n" + json.dumps(
                {"log": "after damage\n", "stream": "stdout", "time": time.strftime("%Y-%m-%dT%H:%M:%S.1Z", time.gmtime())}) + "\n")
        await receiver.wait_for(lambda: receiver.lines({"container_name": name})[-1:] == ["after damage"])
        samples = await scrape(proc.metrics_url)
        assert value(samples, "collector_lines_truncated_total", container_name=name) == 1
        assert value(samples, "collector_source_errors_total", container_name=name) == 2
        assert any("bad json-file records skipped" in line for line in proc.stderr)
        assert receiver.rejected_by_reason.get("line_too_long", 0) == 0
    finally:
        assert await proc.stop() == 0
