"""Step 1 through the real path: container -> json-file -> collector -> stdout sink."""

from __future__ import annotations

import calendar
import json
import os
import re
import signal
import time

import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from polling import wait_until

pytestmark = pytest.mark.docker


def _ns(text: str) -> int:
    """Independent RFC 3339 -> ns for checking (not the collector's parser)."""
    match = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z", text)
    assert match, text
    y, mo, d, h, mi, s, frac = match.groups()
    return calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s))) * 10**9 + int((frac or "0").ljust(9, "0"))


def _file_records(engine: DockerEngine, container_id: str) -> list[dict]:
    with open(engine.log_path(container_id)) as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture
async def collector(containers: DockerEngine):
    proc = await CollectorProcess(containers).start()
    yield proc
    code = await proc.stop()
    assert code == 0, proc.stderr[-20:]


async def test_three_containers_ten_thousand_lines_each(collector: CollectorProcess, containers: DockerEngine) -> None:
    names = [f"seq-{i}-{time.monotonic_ns()}" for i in range(3)]
    started = time.monotonic()
    ids = [containers.run(f"awk 'BEGIN{{for(i=1;i<=10000;i++) print \"{n}\", i}}'", name=n) for n in names]
    for name in names:
        await collector.wait_for_lines(name, 10000, timeout=120)
    elapsed = time.monotonic() - started
    print(f"\n30,000 lines delivered {elapsed:.2f}s after the first container start ({30000 / elapsed:,.0f} lines/s)")
    host = containers.docker("info", "--format", "{{.Name}}")
    for name, cid in zip(names, ids, strict=True):
        entries = collector.entries_of(name)
        assert [e["line"] for e in entries] == [f"{name} {i}" for i in range(1, 10001)]  # all, once, in order
        assert all(e["labels"] == {"container_name": name, "host": host, "stream": "stdout"} for e in entries)
        expected = [_ns(r["time"]) for r in _file_records(containers, cid)]
        assert [e["ts_ns"] for e in entries] == expected


async def test_rm_container_that_exits_at_once(collector: CollectorProcess, containers: DockerEngine) -> None:
    name = f"rm-{time.monotonic_ns()}"
    containers.run("echo one; echo two; echo three", "--rm", name=name)
    assert await collector.wait_for_lines(name, 3) == ["one", "two", "three"]


async def test_long_line_stderr_and_unterminated_last_line(collector: CollectorProcess, containers: DockerEngine) -> None:
    name = f"mixed-{time.monotonic_ns()}"
    containers.run(
        "awk 'BEGIN{s=\"\"; for(i=0;i<40960;i++) s=s \"x\"; print s}'; echo oops >&2; sleep 0.2; printf 'no newline'",
        name=name,
    )
    await collector.wait_for_lines(name, 3)
    await wait_until(lambda: containers.inspect(name)["State"]["Status"] == "exited", what="exit")
    entries = collector.entries_of(name)
    # Docker copies stdout and stderr separately, so only the order within a stream is defined.
    stdout = [e["line"] for e in entries if e["labels"]["stream"] == "stdout"]
    stderr = [e["line"] for e in entries if e["labels"]["stream"] == "stderr"]
    assert stdout == ["x" * 40960, "no newline"]  # the 16 KiB parts are one entry again
    assert stderr == ["oops"]


async def test_tty_lines_have_no_carriage_return(collector: CollectorProcess, containers: DockerEngine) -> None:
    name = f"tty-{time.monotonic_ns()}"
    containers.run("echo first; echo second", "-t", name=name)
    assert await collector.wait_for_lines(name, 2) == ["first", "second"]
    with open(containers.log_path(containers.inspect(name)["Id"])) as handle:
        assert json.loads(handle.readline())["log"] == "first\r\n"  # the file has it; we strip it


async def test_container_running_before_the_collector_starts(containers: DockerEngine) -> None:
    name = f"early-{time.monotonic_ns()}"
    containers.run("echo before; sleep 1; echo after; sleep 60", name=name)
    await wait_until(lambda: containers.docker("logs", name) != "", what="first line in the file")
    proc = await CollectorProcess(containers).start()
    try:
        assert await proc.wait_for_lines(name, 2) == ["before", "after"]
    finally:
        assert await proc.stop() == 0


async def test_start_at_all_reads_containers_that_exited_before_the_first_run(containers: DockerEngine) -> None:
    tag = time.monotonic_ns()
    exited, local = f"exited-{tag}", f"exited-local-{tag}"
    containers.run("seq 1 300", name=exited)
    containers.run("seq 1 200", "--log-driver", "local", name=local)
    for name in (exited, local):
        await wait_until(lambda name=name: not containers.inspect(name)["State"]["Running"], what=f"{name} exited")
    default = await CollectorProcess(containers).start()  # start_at 1h: a fresh install skips finished containers
    try:
        await wait_until(lambda: any('"containers found"' in line for line in default.stderr), what="the startup report")
        found = next(json.loads(line) for line in default.stderr if '"containers found"' in line)
        assert {f"{exited}: stopped", f"{local}: stopped"} <= set(found["read_as"])  # no source, nothing to read
        assert default.lines_of(exited) == [] and default.lines_of(local) == []
    finally:
        assert await default.stop() == 0
    everything = await CollectorProcess(containers, env={"COLLECTOR_POSITIONS__START_AT": "all"}).start()
    try:
        assert await everything.wait_for_lines(exited, 300) == [str(i) for i in range(1, 301)]
        assert await everything.wait_for_lines(local, 200) == [str(i) for i in range(1, 201)]
    finally:
        assert await everything.stop() == 0


async def test_own_container_is_never_read(containers: DockerEngine) -> None:
    own, other = f"self-{time.monotonic_ns()}", f"other-{time.monotonic_ns()}"
    own_id = containers.run("for i in 1 2 3; do echo mine $i; sleep 0.2; done; sleep 60", name=own)
    proc = await CollectorProcess(containers, env={"COLLECTOR_DOCKER__SELF_ID": own_id}).start()
    try:
        containers.run("echo theirs", name=other)
        await proc.wait_for_lines(other, 1)
        await wait_until(lambda: "mine 3" in containers.docker("logs", own), what="own container's output")
        assert proc.lines_of(own) == []
        skipped = [json.loads(line) for line in proc.stderr if "container skipped" in line]
        assert [(s["container_name"], s["reason"]) for s in skipped if s["container_name"] == own] == [(own, "self")]
    finally:
        assert await proc.stop() == 0


ROTATING = ("--log-opt", "max-size=10k", "--log-opt", "max-file=5")  # Docker keeps 5 x 10 KB
LINE = "rotated line %05d pad pad pad pad pad pad pad"  # ~100 bytes a record: ~100 records a file


async def test_paced_writes_through_many_rotations(collector: CollectorProcess, containers: DockerEngine) -> None:
    name = f"rotate-{time.monotonic_ns()}"
    # 3,000 records, ~30 rotations, paced well inside Docker's 50 KB retention.
    containers.run(f"awk 'BEGIN{{for(i=1;i<=3000;i++){{printf \"{LINE}\\n\", i; if(i%100==0) system(\"sleep 0.05\")}}}}'; sleep 300",
                   *ROTATING, name=name)
    lines = await collector.wait_for_lines(name, 3000, timeout=60)
    assert lines == [LINE % i for i in range(1, 3001)]


async def test_four_rotations_while_the_reader_is_stopped(collector: CollectorProcess, containers: DockerEngine) -> None:
    name = f"rotstop-{time.monotonic_ns()}"
    cid = containers.run(f"echo first; sleep 2; awk 'BEGIN{{for(i=1;i<=400;i++) printf \"{LINE}\\n\", i}}'; sleep 300",
                         *ROTATING, name=name)
    await collector.wait_for_lines(name, 1)
    assert collector.process is not None
    collector.process.send_signal(signal.SIGSTOP)  # the reader holds the first file and looks nowhere
    try:
        rotated = f"{containers.log_path(cid)}.3"
        await wait_until(lambda: os.path.exists(rotated) and len(containers.docker("logs", name).splitlines()) == 401, 30,
                         what="a burst rotated at least three times")
    finally:
        collector.process.send_signal(signal.SIGCONT)
    lines = await collector.wait_for_lines(name, 401, timeout=60)
    assert lines == ["first"] + [LINE % i for i in range(1, 401)]


async def test_truncated_file_is_read_again_from_its_start(collector: CollectorProcess, containers: DockerEngine) -> None:
    name = f"trunc-{time.monotonic_ns()}"
    cid = containers.run("echo before; sleep 300", name=name)
    await collector.wait_for_lines(name, 1)
    path = containers.log_path(cid)
    os.truncate(path, 0)  # what `truncate -s0` on a container log does
    record = json.dumps({"log": "after\n", "stream": "stdout", "time": time.strftime("%Y-%m-%dT%H:%M:%S.5Z", time.gmtime())})
    with open(path, "a") as handle:
        handle.write(record + "\n")
    assert await collector.wait_for_lines(name, 2) == ["before", "after"]


async def test_rename_relabels_later_lines(collector: CollectorProcess, containers: DockerEngine) -> None:
    old, new = f"old-{time.monotonic_ns()}", f"new-{time.monotonic_ns()}"
    containers.run("echo one; sleep 2; echo two; sleep 300", name=old)
    await collector.wait_for_lines(old, 1)
    containers.docker("rename", old, new)
    containers._names.append(new)
    assert await collector.wait_for_lines(new, 1) == ["two"]
    assert collector.lines_of(old) == ["one"]
