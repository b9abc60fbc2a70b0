"""Multiline joining through real containers: a Java trace and a Python traceback arrive as one
entry each (file and API stream), a trace that is a container's last output goes out when it
dies, and a collector stopped in the middle of a trace delivers it whole and once after a restart."""

from __future__ import annotations

import time

import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from polling import wait_until

pytestmark = pytest.mark.docker

JAVA = ["ERROR request failed", "java.lang.IllegalStateException: boom", "\tat com.example.Api.handle(Api.java:42)",
        "\tat com.example.Server.run(Server.java:7)", "Caused by: java.io.IOException: closed", "\t... 2 more"]
PYTHON = ["ERROR failed", "Traceback (most recent call last):", '  File "app.py", line 3, in <module>', "    main()",
          "ValueError: bad"]


def printf(lines: list[str]) -> str:
    """A shell command printing these lines (tabs and quotes kept)."""
    escaped = [line.replace("\\", "\\\\").replace("\t", "\\t").replace("'", "'\"'\"'") for line in lines]
    return "printf '" + "\\n".join(escaped) + "\\n'"


async def test_traces_arrive_as_one_entry_from_files_and_streams_and_at_die(containers: DockerEngine) -> None:
    tag = time.monotonic_ns()
    java, python, last = f"ml-java-{tag}", f"ml-py-{tag}", f"ml-last-{tag}"
    # A long timeout: only the next first line, or the container's end, closes an entry here.
    proc = await CollectorProcess(containers, env={"COLLECTOR_PROCESSING__MULTILINE_TIMEOUT": "60s"}).start()
    try:
        containers.run(f"echo 'INFO before'; {printf(JAVA)}; echo 'INFO after'; sleep 300", "--label", "collector.multiline=java",
                       name=java)
        containers.run(f"{printf(PYTHON)}; echo 'INFO after'; sleep 300", "--log-driver", "local",
                       "--label", "collector.multiline=python", name=python)
        containers.run(f"echo 'INFO first'; {printf(JAVA)}", "--label", "collector.multiline=java", name=last)
        await wait_until(lambda: proc.lines_of(java)[:2] == ["INFO before", "\n".join(JAVA)], 60, what="the Java trace")
        await wait_until(lambda: proc.lines_of(python)[:1] == ["\n".join(PYTHON)], 60, what="the Python traceback")
        # Its last output is a trace: the container's exit, not the 60 s timeout, sends it.
        await wait_until(lambda: proc.lines_of(last) == ["INFO first", "\n".join(JAVA)], 30, what="the trace at die")
        before, trace = proc.entries_of(java)[:2]
        assert before["ts_ns"] < trace["ts_ns"]  # the joined entry carries its first line's time
        assert proc.lines_of(java)[2:] == []  # "INFO after" may still be continued: it waits (60 s here)
    finally:
        assert await proc.stop() == 0


async def test_sigterm_in_the_middle_of_a_trace_delivers_it_whole_and_once(containers: DockerEngine) -> None:
    name = f"ml-restart-{time.monotonic_ns()}"
    env = {"COLLECTOR_PROCESSING__MULTILINE_TIMEOUT": "60s"}
    first = await CollectorProcess(containers, env=env).start()
    positions = first.positions_path
    # Half a trace, a pause long enough to stop the collector, then the rest.
    containers.run(f"echo 'INFO one'; {printf(JAVA[:3])}; sleep 6; {printf(JAVA[3:])}; echo 'INFO two'; echo 'INFO three'; sleep 300",
                   "--label", "collector.multiline=java", name=name)
    try:
        await wait_until(lambda: first.lines_of(name) == ["INFO one"], 30, what="the line before the trace")
    finally:
        assert await first.stop() == 0  # the open trace is not emitted
    assert first.lines_of(name) == ["INFO one"]
    second = await CollectorProcess(containers, env=env, positions_path=positions).start()
    try:
        await wait_until(lambda: second.lines_of(name)[-1:] == ["INFO two"], 60, what="the rest after the restart")
        await wait_until(lambda: len(containers.docker("logs", name).splitlines()) == 9, 30, what="the container's last line")
        # One restart: the trace whole, once; nothing sent twice.
        assert first.lines_of(name) + second.lines_of(name) == ["INFO one", "\n".join(JAVA), "INFO two"]
    finally:
        assert await second.stop() == 0
