"""Loki unreachable for 60 s while containers write more than Docker keeps: with the spool, every
line arrives after recovery, in order per container. Writers run at a stated pace, so the result
depends on the spool and not on read speed. Each test prints lines written / delivered /
duplicated / missing / counted lost for the closing note.

By hand, the same json-file scenario without the spool (it loses lines; figures only, no asserts):
    OUTAGE_WITHOUT_SPOOL=1 pytest tests/test_spool_outage.py -k json_file -s
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections import Counter

import aiohttp
import harness
import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from loki_receiver import LokiReceiver
from polling import wait_until

pytestmark = pytest.mark.docker

OUTAGE_S = int(os.environ.get("OUTAGE_S", "60"))
PAD = "x" * 60  # ~75 bytes a line, ~150 in a json-file record
WITHOUT_SPOOL = os.environ.get("OUTAGE_WITHOUT_SPOOL") == "1"
ENV = {"COLLECTOR_LOKI__MAX_BACKOFF": "2s", "COLLECTOR_QUEUE__MAX_BYTES": "256KiB", "COLLECTOR_METRICS__LISTEN": "127.0.0.1:0",
       "COLLECTOR_SHUTDOWN__FLUSH_TIMEOUT": "2s", **({"COLLECTOR_SPOOL__ENABLED": "false"} if WITHOUT_SPOOL else {})}


def paced_writer(prefix: str, count: int, per_second: int) -> str:
    pause = 10.0 / per_second  # ten lines, then a pause
    return (f"i=1; while [ $i -le {count} ]; do echo {prefix} $i {PAD}; [ $((i % 10)) = 0 ] && sleep {pause:g}; "
            f"i=$((i+1)); done")


def expected(prefix: str, count: int) -> list[str]:
    return [f"{prefix} {i} {PAD}" for i in range(1, count + 1)]


async def scrape(proc: CollectorProcess) -> dict[str, float]:
    """Unlabelled samples, and labelled ones summed under their family name."""
    async with aiohttp.ClientSession() as session, session.get(f"{proc.metrics_url}/metrics") as response:
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            values[name] = values.get(name, 0.0) + float(line.split()[-1])
    return values


def report(case: str, receiver: LokiReceiver, wanted: dict[str, list[str]], lost: float) -> tuple[int, int, bool]:
    """Print and return (missing, duplicated, in order) over the containers in `wanted`."""
    written = sum(map(len, wanted.values()))
    delivered = duplicated = missing = 0
    in_order = True
    for name, lines in wanted.items():
        got = receiver.lines({"container_name": name})
        counts = Counter(got)
        delivered += len(counts)
        duplicated += sum(n - 1 for n in counts.values())
        missing += sum(1 for line in lines if not counts[line])
        firsts = list(dict.fromkeys(got))
        kept = [line for line in lines if counts[line]]
        if firsts != kept:
            at = next(i for i, (a, b) in enumerate(zip(firsts, kept, strict=False)) if a != b)
            print(f"{name}: first out of order at {at}: got {[f.split()[1] for f in firsts[max(0, at - 2):at + 3]]}")
            entries = receiver.entries({"container_name": name})
            arrivals: list[tuple[float, int, int]] = []
            for e in entries:
                n = int(e.line.split()[1])
                if arrivals and arrivals[-1][0] == e.received_at and arrivals[-1][2] + 1 == n:
                    arrivals[-1] = (e.received_at, arrivals[-1][1], n)
                else:
                    arrivals.append((e.received_at, n, n))
            print("  runs (received_at, first, last):", [(round(t % 1000, 2), a, b) for t, a, b in arrivals[:12]])
            in_order = False
    print(f"\n{case}: written {written}, delivered {delivered}, duplicated {duplicated}, missing {missing}, "
          f"counted lost {lost:.0f} (rotated files lost + source losses), in order per container: {in_order}")
    return missing, duplicated, in_order


async def outage(containers: DockerEngine, receiver: LokiReceiver, scripts: dict[str, str], run: dict[str, list[str]],
                 procs: list[CollectorProcess], kill_at: tuple[float, ...] = ()) -> tuple[list[float], list[dict[str, float]]]:
    """Loki down for OUTAGE_S while `run` containers write; the collector is killed (-9) and
    restarted at each of `kill_at` seconds. Returns RSS samples and the last metrics of each run."""
    receiver.down = True
    down_from = time.monotonic()
    for name, opts in run.items():
        containers.run(scripts[name], *opts, name=name)
    rss: list[float] = []
    finals: list[dict[str, float]] = []
    kills = list(kill_at)
    while time.monotonic() - down_from < OUTAGE_S:
        values = await scrape(procs[-1])
        rss.append(values.get("collector_rss_bytes", 0.0))
        if kills and time.monotonic() - down_from >= kills[0]:
            kills.pop(0)
            finals.append(values)
            killed_at = time.monotonic()
            assert await procs[-1].stop(signal.SIGKILL) == -signal.SIGKILL
            procs.append(await CollectorProcess(containers, env=procs[-1].env, positions_path=procs[-1].positions_path).start())
            print(f"\nkill -9 at {killed_at - down_from:.0f} s; the next collector follows events {time.monotonic() - killed_at:.1f} s later")
        await asyncio.sleep(2)
    values = await scrape(procs[-1])
    if not WITHOUT_SPOOL:
        assert values["collector_spool_bytes"] > 0 and values["collector_spool_writes_total"] > 0
    receiver.down = False
    return rss, finals


async def start(containers: DockerEngine, receiver: LokiReceiver, **env: str) -> CollectorProcess:
    positions = os.path.join(tempfile.mkdtemp(prefix="spool-", dir=harness.SCRATCH), "positions.json")
    return await CollectorProcess(containers, env={**ENV, "COLLECTOR_LOKI__URL": receiver.push_url, **env},
                                  positions_path=positions).start()


async def finish(case: str, receiver: LokiReceiver, procs: list[CollectorProcess], wanted: dict[str, list[str]],
                 finals: list[dict[str, float]], rss: list[float], ordered: bool = True) -> None:
    try:
        await receiver.wait_for(lambda: all(set(wanted[name]) <= set(receiver.lines({"container_name": name})) for name in wanted),
                                60 if WITHOUT_SPOOL else float(os.environ.get("OUTAGE_WAIT_S", "240")))
    except TimeoutError:
        if not WITHOUT_SPOOL:
            for name, lines in wanted.items():
                got = set(receiver.lines({"container_name": name}))
                gone = [int(line.split()[1]) for line in lines if line not in got]
                print(f"{name}: missing {len(gone)}: {gone[:5]} .. {gone[-5:]}")
            for index, proc in enumerate(procs):
                print(f"collector run {index + 1}:", *[line[:400] for line in proc.stderr
                                                        if '"level": "error"' in line or "spool" in line or "lost" in line][:15], sep="\n  ")
    last = await scrape(procs[-1])
    lost = sum(m.get("collector_rotated_files_lost_total", 0) + m.get("collector_source_losses_total", 0) for m in [*finals, last])
    missing, duplicated, in_order = report(case + (" WITHOUT the spool" if WITHOUT_SPOOL else ""), receiver, wanted, lost)
    print(f"peak RSS during the outage {max(rss) / 2**20:.1f} MiB; spool writes {last.get('collector_spool_writes_total', 0):.0f}, "
          f"reads {last.get('collector_spool_reads_total', 0):.0f}, torn {last.get('collector_spool_torn_records_total', 0):.0f}, "
          f"corrupt {last.get('collector_spool_corrupt_records_total', 0):.0f}")
    if WITHOUT_SPOOL:
        return
    assert missing == 0 and (in_order or not ordered)
    assert max(rss) < 150 * 2**20, f"RSS {max(rss) / 2**20:.1f} MiB"
    await wait_until(lambda: spool_empty(procs[-1]), 30, what="the spool emptied once everything was delivered")


async def spool_empty(proc: CollectorProcess) -> bool:
    values = await scrape(proc)
    return values["collector_spool_bytes"] == 0 and values["collector_spool_segments"] == 0


async def test_json_file_retention_exceeded_during_a_60s_outage_every_line_arrives(containers: DockerEngine) -> None:
    """4 containers, json-file max-size=50k max-file=2 (~100 KB kept each), 100 lines/s for 60 s:
    ~0.9 MB each, nine times what Docker keeps."""
    stamp = time.monotonic_ns()
    names = [f"spoolj{i}-{stamp}" for i in range(4)]
    async with LokiReceiver() as receiver:
        procs = [await start(containers, receiver)]
        try:
            opts = ["--log-opt", "max-size=50k", "--log-opt", "max-file=2"]
            rss, finals = await outage(containers, receiver, {n: paced_writer(n, 6000, 100) for n in names},
                                       {n: opts for n in names}, procs)
            await finish("json-file, Loki down 60 s, 4 x 6000 lines at 100/s, retention 100 KB", receiver, procs,
                         {n: expected(n, 6000) for n in names}, finals, rss)
        finally:
            for proc in procs:
                await proc.stop()


async def test_local_driver_rm_containers_exiting_during_the_outage_every_line_arrives(containers: DockerEngine) -> None:
    """4 `--rm` containers of the local driver write 2000 lines at 200/s and are removed by Docker
    while Loki is still down: only the spool holds their tail."""
    stamp = time.monotonic_ns()
    names = [f"spoolrm{i}-{stamp}" for i in range(4)]
    async with LokiReceiver() as receiver:
        procs = [await start(containers, receiver)]
        try:
            rss, finals = await outage(containers, receiver, {n: paced_writer(n, 2000, 200) for n in names},
                                       {n: ["--rm", "--log-driver", "local"] for n in names}, procs)
            for name in names:
                assert containers.docker("ps", "-aq", "--filter", f"name={name}") == ""  # gone before Loki came back
            await finish("local --rm, Loki down 60 s, 4 x 2000 lines at 200/s, removed during the outage", receiver, procs,
                         {n: expected(n, 2000) for n in names}, finals, rss)
        finally:
            for proc in procs:
                await proc.stop()


async def test_killed_twice_during_the_outage_still_every_line(containers: DockerEngine) -> None:
    """3 containers at 20 lines/s (~3 KB/s): Docker's 100 KB covers a restart of the collector
    (nothing can read while it is down), not the 60 s outage (~1300 lines, ~190 KB each)."""
    stamp = time.monotonic_ns()
    names = [f"spoolk{i}-{stamp}" for i in range(3)]
    async with LokiReceiver() as receiver:
        procs = [await start(containers, receiver, COLLECTOR_QUEUE__MAX_BYTES="64KiB")]  # each run spills within ~15 s
        try:
            opts = ["--log-opt", "max-size=50k", "--log-opt", "max-file=2"]
            rss, finals = await outage(containers, receiver, {n: paced_writer(n, 1300, 20) for n in names},
                                       {n: opts for n in names}, procs, kill_at=(20, 40))
            assert len(procs) == 3
            # In order after a kill too: what the sink held as the lane started spilling was copied to
            # the spool ahead of what followed (LaneSpool.insure), so nothing older is left to be read
            # again from the file after the spool's backlog. Duplicates: what was delivered or read
            # since the last checkpoints.
            await finish("json-file, Loki down 60 s, 3 x 1300 lines at 20/s, retention 100 KB, kill -9 at 20 s and 40 s", receiver, procs,
                         {n: expected(n, 1300) for n in names}, finals, rss)
        finally:
            for proc in procs:
                await proc.stop()
