#!/usr/bin/env python
"""End-to-end benchmark: Docker containers -> json-file -> collector -> Loki push -> receiver.

    python bench/e2e.py            # full run (about a minute on 2 CPUs), rewrites docs/benchmarks-e2e.md
    python bench/e2e.py --quick    # smaller sizes (under half a minute)

Everything is real: a Docker engine (the one at DOCKER_HOST, else a private dockerd, see
tests/dockerengine.py), the collector as `python -m collector` with default settings, and the test
suite's Loki receiver (full protobuf decoding and validation) in a process of its own
(bench/receiver_proc.py), so neither its decoding nor this driver's blocking calls run in the
collector's process or event loop.

Scenarios
  A  throughput: containers print N lines as fast as awk can while the collector follows them
     ("live"), and the same with the collector frozen (SIGSTOP) until Docker has written everything,
     then resumed ("backlog": the collector and receiver alone, Docker idle).
  B  latency: one container writing at a steady rate (paced by /proc/uptime inside the container);
     latency per entry = receiver arrival (wall clock) - Docker's timestamp of the line.

The benchmark report (bench/report.py -> docs/benchmarks.md) reuses this module's collector,
receiver and latency machinery.
"""

from __future__ import annotations

import argparse
import calendar
import itertools
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from dockerengine import DockerEngine, start_engine  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
DOC_PATH = os.path.join(REPO, "docs", "benchmarks-e2e.md")


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None if unknown or gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15: utime, stime


def _stop_process(process: subprocess.Popen, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class ReceiverProcess:
    def __init__(self, workdir: str, port: int = 0, fast: bool = False) -> None:
        """port: the push endpoint's port (0: any free one); fast: see receiver_proc.py --fast."""
        self.workdir = workdir
        self.stderr = open(os.path.join(workdir, "receiver.stderr"), "wb")
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "bench", "receiver_proc.py"),
             "--dump-file", os.path.join(workdir, "receiver-final.json"), "--port", str(port), *(["--fast"] if fast else [])],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, cwd=REPO,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            self.stop()
            raise RuntimeError(f"receiver did not start: {self._stderr_tail()}")
        info = json.loads(line)
        self.push_url: str = info["push_url"]
        self.control_url: str = info["control_url"]
        self.pid: int = self.process.pid
        self._dumps = 0

    def _stderr_tail(self) -> str:
        self.stderr.flush()
        with open(self.stderr.name, "rb") as handle:
            return handle.read()[-2000:].decode(errors="replace")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.control_url + "/stats", timeout=30) as response:
            return json.loads(response.read())

    def dump(self, clear: bool = True) -> dict[str, Any]:
        self._dumps += 1
        path = os.path.join(self.workdir, f"dump-{self._dumps}.json")
        request = urllib.request.Request(f"{self.control_url}/dump?path={path}&clear={int(clear)}", method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
        with open(path) as handle:
            data = json.load(handle)
        os.unlink(path)
        return data

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        _stop_process(self.process)
        if self.process.stdout:
            self.process.stdout.close()
        self.stderr.close()


class CollectorProcess:
    def __init__(self, engine: DockerEngine, push_url: str, workdir: str) -> None:
        self.env = {
            **os.environ,
            "DOCKER_HOST": engine.host,
            "COLLECTOR_DOCKER__CONTAINERS_DIR": engine.containers_dir,
            "COLLECTOR_LOKI__URL": push_url,
            # Metrics on (a free local port): the event loop lag histogram is read per scenario.
            "COLLECTOR_METRICS__LISTEN": f"127.0.0.1:{free_port()}",
            "COLLECTOR_POSITIONS__PATH": os.path.join(workdir, "positions.json"),
            "PYTHONPATH": REPO,
        }
        # Only what we set above counts: drop any COLLECTOR_* the caller's shell may carry.
        for key in [k for k in self.env if k.startswith("COLLECTOR_") and k not in (
            "COLLECTOR_DOCKER__CONTAINERS_DIR", "COLLECTOR_LOKI__URL", "COLLECTOR_METRICS__LISTEN", "COLLECTOR_POSITIONS__PATH")]:
            del self.env[key]
        self.stderr_path = os.path.join(workdir, "collector.stderr")
        self.process: subprocess.Popen | None = None

    def effective_config(self) -> dict[str, Any]:
        """`collector check-config` with the same environment: the settings this run uses."""
        import yaml  # a dependency of the collector

        out = subprocess.run([sys.executable, "-m", "collector", "check-config"], env=self.env, cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        return yaml.safe_load(out)

    def start(self, timeout: float = 60) -> None:
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen([sys.executable, "-m", "collector"], env=self.env, cwd=REPO,
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while "following docker events" not in self.stderr_text():
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited with {self.process.returncode}: {self.stderr_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"collector not ready after {timeout}s: {self.stderr_text()[-3000:]}")
            time.sleep(0.05)

    def loop_lag_buckets(self) -> list[tuple[float, float]]:
        return loop_lag_buckets(self.env["COLLECTOR_METRICS__LISTEN"])

    def stderr_text(self) -> str:
        with open(self.stderr_path, "rb") as handle:
            return handle.read().decode(errors="replace")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        try:
            os.kill(self.pid, signal.SIGCONT)  # never leave it frozen
        except ProcessLookupError:
            pass
        return _stop_process(self.process)

    def warnings(self) -> list[str]:
        """Its own log lines at warning level or above (JSON log format by default)."""
        found = []
        for line in self.stderr_text().splitlines():
            try:
                level = str(json.loads(line).get("level", "")).lower()
            except (ValueError, AttributeError):
                level = "warning" if "warn" in line.lower() or "error" in line.lower() else ""
            if level in ("warning", "error", "critical"):
                found.append(line)
        return found


def loop_lag_buckets(listen: str) -> list[tuple[float, float]]:
    """collector_event_loop_lag_seconds of the collector whose metrics listen at `listen` (host:port),
    as (upper bound, cumulative count); [] when unreadable."""
    url = f"http://{listen}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return []
    buckets = []
    for line in text.splitlines():
        if line.startswith("collector_event_loop_lag_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    return buckets


# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------


def burst_script(name: str, count: int, line_bytes: int | None) -> str:
    """awk printing `name i [padding]` for i in 1..count, as fast as it can."""
    if line_bytes is None:  # exactly the tests' lines: "NAME i"
        return f"awk 'BEGIN{{for(i=1;i<={count};i++) print \"{name}\", i}}'"
    pad = "x" * max(1, line_bytes - len(f"{name} {count} "))
    return f"awk 'BEGIN{{p=\"{pad}\"; for(i=1;i<={count};i++) print \"{name}\", i, p}}'"


def paced_script(name: str, rate: float, count: int, line_bytes: int) -> str:
    """awk printing `count` lines at `rate` lines/s: after each sleep it prints what is due by the
    clock (/proc/uptime, 10 ms resolution, no fork), so fork and sleep overheads do not slow it."""
    pad = "x" * max(1, line_bytes - len(f"{name} {count} "))
    return (
        "awk 'function now(  u, a){getline u < \"/proc/uptime\"; close(\"/proc/uptime\"); split(u, a, \" \"); return a[1]}"
        f" BEGIN{{p=\"{pad}\"; t0=now(); n=0; while(n<{count}){{due=int((now()-t0)*{rate})+1; if(due>{count}) due={count};"
        f" while(n<due){{n++; print \"{name}\", n, p}}; fflush(); system(\"sleep 0.01\")}}}}'"
    )


def run_containers(engine: DockerEngine, specs: list[tuple[str, str]]) -> None:
    """`docker run -d` all of them at once (in parallel, so they start close together)."""
    processes = []
    for name, script in specs:
        engine._names.append(name)  # removed by engine.cleanup_containers()/stop() whatever happens
        processes.append(subprocess.Popen(
            ["docker", "run", "-d", "--network", "none", "--name", name, engine.image, "sh", "-c", script],
            env=engine.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ))
    errors = []
    for process in processes:
        _, err = process.communicate(timeout=120)
        if process.returncode != 0:
            errors.append(err.decode(errors="replace"))
    if errors:
        raise RuntimeError("docker run failed: " + "; ".join(errors))


def wait_exited(engine: DockerEngine, names: list[str], timeout: float = 300) -> None:
    engine.docker("wait", *names, timeout=timeout)


def started_at(engine: DockerEngine, names: list[str]) -> float:
    """The earliest State.StartedAt (wall clock, ns precision kept as float) of these containers."""
    out = engine.docker("inspect", "-f", "{{.State.StartedAt}}", *names)
    return min(parse_rfc3339(text) for text in out.split())


def parse_rfc3339(text: str) -> float:
    base, _, rest = text.partition(".")
    seconds = calendar.timegm(time.strptime(base.rstrip("Z"), "%Y-%m-%dT%H:%M:%S"))
    digits = "".join(ch for ch in rest if ch.isdigit())
    return seconds + (int(digits.ljust(9, "0")[:9]) / 1e9 if digits else 0.0)


def log_lines_written(engine: DockerEngine, name: str) -> int:
    container_id = engine.docker("inspect", "-f", "{{.Id}}", name)
    with open(engine.log_path(container_id), "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def remove_containers(engine: DockerEngine, names: list[str]) -> None:
    engine.rm(*names)
    for name in names:
        if name in engine._names:
            engine._names.remove(name)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Delivery:
    expected: int = 0
    received: int = 0
    distinct: int = 0
    missing: int = 0
    duplicates: int = 0
    out_of_order: int = 0  # containers whose lines did not arrive in order
    malformed: int = 0
    rejected: int = 0

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.malformed == 0 and self.rejected == 0


def check_delivery(dump: dict[str, Any], expected: dict[str, int]) -> Delivery:
    result = Delivery(expected=sum(expected.values()), rejected=sum(dump.get("rejected", {}).values()))
    for name, count in expected.items():
        cols = dump["containers"].get(name, {"seq": [], "malformed": 0})
        seqs = cols["seq"]
        distinct = set(seqs)
        result.received += len(seqs)
        result.distinct += len(distinct)
        result.missing += sum(1 for i in range(1, count + 1) if i not in distinct)
        result.duplicates += len(seqs) - len(distinct)
        result.malformed += cols["malformed"] + sum(1 for s in distinct if not 1 <= s <= count)
        if seqs != sorted(seqs):
            result.out_of_order += 1
    return result


def wait_delivered(receiver: ReceiverProcess, collector: CollectorProcess, expected: dict[str, int],
                   timeout: float) -> tuple[bool, float | None]:
    """Poll the receiver until every container has its lines; returns (complete, collector CPU then)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = receiver.stats()
        have = stats["by_container"]
        if all(have.get(name, 0) >= count for name, count in expected.items()):
            return True, collector.cpu()
        if time.monotonic() > deadline or not collector.alive():
            return False, collector.cpu()
        time.sleep(0.1)


def settle(receiver: ReceiverProcess, quiet: float = 1.0, timeout: float = 30) -> None:
    """Wait until no push has arrived for `quiet` seconds, so late duplicates would be counted."""
    deadline = time.monotonic() + timeout
    last = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        stats = receiver.stats()
        key = (stats["requests"], stats["entries"])
        if key != last:
            last, since = key, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


@dataclass
class Result:
    scenario: str
    kind: str  # "throughput" or "latency"
    containers: int
    lines: int
    line_bytes: int
    description: str
    complete: bool = False
    wall_s: float = math.nan
    collector_cpu_s: float = math.nan
    receiver_cpu_s: float = math.nan
    dockerd_cpu_s: float | None = None
    delivery: Delivery = field(default_factory=Delivery)
    pushes: int = 0
    push_bytes: int = 0
    receiver_busy_s: float = 0.0  # sum of the receiver's handler times
    push_handler_ms: float = math.nan  # mean receiver handler time per push
    push_gap_ms: float = math.nan  # mean time from one push's answer to the next push's arrival
    docker_span_s: float = math.nan  # first to last Docker timestamp of the scenario's lines
    tail_s: float = math.nan  # last Docker timestamp -> last entry received
    latencies: list[float] = field(default_factory=list, repr=False)
    first_line_latency_s: float = math.nan
    target_rate: float = 0.0
    loop_lag_p99_ms: float = math.nan  # event loop lag p99 during the scenario (upper bucket bound)

    @property
    def lines_per_s(self) -> float:
        return self.delivery.received / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def lines_per_cpu_s(self) -> float:
        return self.delivery.received / self.collector_cpu_s if self.collector_cpu_s > 0 else math.nan

    @property
    def cpu_us_per_line(self) -> float:
        return self.collector_cpu_s / self.delivery.received * 1e6 if self.delivery.received else math.nan

    @property
    def achieved_rate(self) -> float:
        return (self.lines - 1) / self.docker_span_s if self.docker_span_s > 0 else math.nan


def summarize(result: Result, dump: dict[str, Any], expected: dict[str, int], start_wall: float) -> None:
    result.delivery = check_delivery(dump, expected)
    all_ts: list[int] = []
    all_recv: list[float] = []
    latencies: list[float] = []
    first_latencies = []
    for name in expected:
        cols = dump["containers"].get(name)
        if not cols:
            continue
        all_ts.extend(cols["ts_ns"])
        all_recv.extend(cols["received_at"])
        latencies.extend(r - t / 1e9 for t, r in zip(cols["ts_ns"], cols["received_at"], strict=True))
        firsts = [r - t / 1e9 for t, r, s in zip(cols["ts_ns"], cols["received_at"], cols["seq"], strict=True) if s == 1]
        first_latencies.extend(firsts[:1])
    if all_recv:
        last_received = max(all_recv)
        result.wall_s = last_received - start_wall
        result.docker_span_s = (max(all_ts) - min(all_ts)) / 1e9
        result.tail_s = last_received - max(all_ts) / 1e9
    result.latencies = sorted(latencies)
    result.first_line_latency_s = max(first_latencies) if first_latencies else math.nan
    pushes = [p for p in dump["pushes"] if p[2] > 0]
    result.pushes = len(pushes)
    result.push_bytes = sum(p[1] for p in pushes)
    result.receiver_busy_s = sum(p[3] for p in pushes)
    if pushes:
        result.push_handler_ms = result.receiver_busy_s / len(pushes) * 1000
    pushes.sort()
    gaps = [b[0] - (a[0] + a[3]) for a, b in itertools.pairwise(pushes)]
    if gaps:
        result.push_gap_ms = sum(gaps) / len(gaps) * 1000


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, engine: DockerEngine, receiver: ReceiverProcess, collector: CollectorProcess) -> None:
        self.engine = engine
        self.receiver = receiver
        self.collector = collector
        self.dockerd_pid = engine._pid  # known only for a private engine
        self.results: list[Result] = []
        self.profile_dir = ""
        self._profiler: subprocess.Popen | None = None

    def _profile_start(self, scenario: str) -> None:
        if not self.profile_dir:
            return
        out = os.path.join(self.profile_dir, "".join(ch if ch.isalnum() else "_" for ch in scenario) + ".txt")
        self._profiler = subprocess.Popen(
            ["py-spy", "record", "--pid", str(self.collector.pid), "--format", "raw", "--rate", "250",
             "--nonblocking", "--output", out],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches

    def _profile_stop(self) -> None:
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return
        profiler.send_signal(signal.SIGINT)
        try:
            profiler.wait(30)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait()

    def _names(self, tag: str, n: int) -> list[str]:
        run = uuid.uuid4().hex[:6]
        tag = "".join(ch for ch in tag.lower() if ch.isalnum())
        return [f"bench-{tag}-{run}-{i}" for i in range(n)]

    def _skip_frozen_lag_probe(self) -> None:
        """The loop lag probe that slept through the freeze reports the freeze: start after it."""
        probes = sum(count for bound, count in self._lag_mark if bound == math.inf)  # +Inf: all probes
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            after = self.collector.loop_lag_buckets()
            if not after or sum(count for bound, count in after if bound == math.inf) > probes:
                self._lag_mark = after  # the probe that slept through the freeze is in; count from here
                return
            time.sleep(0.005)

    def _cpu_marks(self) -> tuple[float | None, float | None, float | None]:
        self._lag_mark = self.collector.loop_lag_buckets()  # the scenario starts here
        return self.collector.cpu(), self.receiver.cpu(), cpu_seconds(self.dockerd_pid)

    def _finish(self, result: Result, names: list[str], expected: dict[str, int], start_wall: float | None,
                marks: tuple, collector_cpu_end: float | None) -> Result:
        self._profile_stop()
        settle(self.receiver)
        receiver_cpu_end, dockerd_cpu_end = self.receiver.cpu(), cpu_seconds(self.dockerd_pid)
        dump = self.receiver.dump(clear=True)
        if start_wall is None:
            start_wall = started_at(self.engine, names)
        summarize(result, dump, expected, start_wall)
        c0, r0, d0 = marks
        if c0 is not None and collector_cpu_end is not None:
            result.collector_cpu_s = collector_cpu_end - c0
        if r0 is not None and receiver_cpu_end is not None:
            result.receiver_cpu_s = receiver_cpu_end - r0
        if d0 is not None and dockerd_cpu_end is not None:
            result.dockerd_cpu_s = dockerd_cpu_end - d0
        result.loop_lag_p99_ms = lag_p99(getattr(self, "_lag_mark", []), self.collector.loop_lag_buckets()) * 1000
        remove_containers(self.engine, names)
        self.results.append(result)
        print(f"  {one_line(result)}", flush=True)
        return result

    def live(self, scenario: str, containers: int, lines: int, line_bytes: int | None, timeout: float) -> Result:
        """Containers print as fast as they can while the collector follows them."""
        names = self._names(scenario, containers)
        expected = {name: lines for name in names}
        shown_bytes = line_bytes or len(f"{names[0]} {lines // 2}")
        result = Result(scenario, "throughput", containers, containers * lines, shown_bytes,
                        "live: collector follows the containers while they write")
        print(f"{scenario}: {containers} x {lines:,} lines of ~{shown_bytes} B, live", flush=True)
        self._profile_start(scenario)
        marks = self._cpu_marks()
        run_containers(self.engine, [(name, burst_script(name, lines, line_bytes)) for name in names])
        result.complete, cpu_end = wait_delivered(self.receiver, self.collector, expected, timeout)
        return self._finish(result, names, expected, None, marks, cpu_end)

    def backlog(self, scenario: str, containers: int, lines: int, line_bytes: int, timeout: float) -> Result:
        """The collector is frozen (SIGSTOP) while Docker writes everything, then resumed: the time and
        CPU to catch up are the collector's (and the receiver's) alone, with Docker idle."""
        names = self._names(scenario, containers)
        expected = {name: lines for name in names}
        result = Result(scenario, "throughput", containers, containers * lines, line_bytes,
                        "backlog: collector frozen while Docker writes, then resumed")
        print(f"{scenario}: {containers} x {lines:,} lines of ~{line_bytes} B, backlog", flush=True)
        self._profile_start(scenario)
        self.collector.freeze()
        try:
            run_containers(self.engine, [(name, burst_script(name, lines, line_bytes)) for name in names])
            wait_exited(self.engine, names, timeout)
            for name in names:
                written = log_lines_written(self.engine, name)
                if written != lines:
                    raise RuntimeError(f"{name}: Docker wrote {written} records, expected {lines}")
        except BaseException:
            self.collector.thaw()
            raise
        marks = self._cpu_marks()
        start_wall = time.time()
        self.collector.thaw()
        self._skip_frozen_lag_probe()
        result.complete, cpu_end = wait_delivered(self.receiver, self.collector, expected, timeout)
        return self._finish(result, names, expected, start_wall, marks, cpu_end)

    def paced(self, scenario: str, rate: float, seconds: float, line_bytes: int, containers: int = 1) -> Result:
        """`containers` containers writing `rate` lines/s each, together."""
        names = self._names(scenario, containers)
        count = int(rate * seconds)
        expected = {name: count for name in names}
        total_rate = rate * containers
        result = Result(scenario, "latency", containers, count * containers, line_bytes,
                        f"steady ~{total_rate:,.0f} lines/s for {seconds:g} s")
        result.target_rate = total_rate
        print(f"{scenario}: {containers} container(s), {count * containers:,} lines of ~{line_bytes} B at "
              f"~{total_rate:,.0f}/s", flush=True)
        self._profile_start(scenario)
        marks = self._cpu_marks()
        run_containers(self.engine, [(name, paced_script(name, rate, count, line_bytes)) for name in names])
        result.complete, cpu_end = wait_delivered(self.receiver, self.collector, expected, seconds * 3 + 60)
        return self._finish(result, names, expected, None, marks, cpu_end)


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _f(value: float | None, fmt: str = ".2f", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def _ms(value: float) -> str:
    return _f(value * 1000 if value == value else value, ".0f")


def delivery_text(d: Delivery) -> str:
    if d.exact and d.out_of_order == 0:
        return "all once, in order"
    parts = []
    if d.missing:
        parts.append(f"{d.missing:,} missing")
    if d.duplicates:
        parts.append(f"{d.duplicates:,} duplicates")
    if d.malformed:
        parts.append(f"{d.malformed:,} malformed")
    if d.rejected:
        parts.append(f"{d.rejected:,} rejected")
    if d.out_of_order:
        parts.append(f"{d.out_of_order} container(s) out of order")
    return ", ".join(parts) or "all once"


def lag_p99(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """p99 of the loop lag between two scrapes: the upper bound of the bucket holding it."""
    if not after:
        return math.nan
    start = dict(before)
    counts = [(bound, count - start.get(bound, 0.0)) for bound, count in after]
    total = counts[-1][1]
    if total <= 0:
        return math.nan
    return next(bound for bound, count in counts if count >= 0.99 * total)


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_line(r: Result) -> str:
    return _one_line(r) + f"; event loop lag p99 <= {_f(r.loop_lag_p99_ms, '.0f')} ms"


def _one_line(r: Result) -> str:
    if r.kind == "throughput":
        return (f"{r.delivery.received:,}/{r.delivery.expected:,} lines in {_f(r.wall_s)} s = {_f(r.lines_per_s, ',.0f')} lines/s; "
                f"collector CPU {_f(r.collector_cpu_s)} s = {_f(r.lines_per_cpu_s, ',.0f')} lines/CPU-s; "
                f"receiver CPU {_f(r.receiver_cpu_s)} s; {delivery_text(r.delivery)}")
    lat = r.latencies
    return (f"rate {_f(r.achieved_rate, ',.0f')}/s; latency p50 {_ms(percentile(lat, 50))} ms, p90 {_ms(percentile(lat, 90))} ms, "
            f"p99 {_ms(percentile(lat, 99))} ms, max {_ms(lat[-1] if lat else math.nan)} ms; "
            f"collector CPU {_f(r.collector_cpu_s)} s; {delivery_text(r.delivery)}")


_TEXT_COLUMNS = {"scenario", "containers x lines", "delivery"}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if h in _TEXT_COLUMNS else "---:" for h in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def throughput_tables(results: list[Result]) -> tuple[str, str]:
    rows = []
    detail = []
    for r in results:
        if r.kind != "throughput":
            continue
        rows.append([
            r.scenario, f"{r.containers} x {r.lines // r.containers:,}", str(r.line_bytes),
            _f(r.wall_s), _f(r.lines_per_s, ",.0f"), _f(r.collector_cpu_s),
            _f(r.lines_per_cpu_s, ",.0f"), _f(r.cpu_us_per_line, ".1f"),
            _ms(percentile(r.latencies, 50)), _ms(percentile(r.latencies, 99)),
            delivery_text(r.delivery) + ("" if r.complete else " (timed out)"),
        ])
        wall = r.wall_s
        detail.append([
            r.scenario,
            _f(r.collector_cpu_s / wall * 100 if wall > 0 else math.nan, ".0f", " %"),
            _f(r.receiver_cpu_s / wall * 100 if wall > 0 else math.nan, ".0f", " %"),
            _f(r.dockerd_cpu_s / wall * 100 if (wall > 0 and r.dockerd_cpu_s is not None) else None, ".0f", " %"),
            _f(r.docker_span_s), _f(r.tail_s),
            f"{r.pushes:,}", _f(r.delivery.received / r.pushes if r.pushes else math.nan, ",.0f"),
            _f(r.push_bytes / r.pushes / 1024 if r.pushes else math.nan, ",.0f"),
            _f(r.receiver_busy_s / wall * 100 if wall > 0 else math.nan, ".0f", " %"),
            _f(r.push_handler_ms, ".0f"), _f(r.push_gap_ms, ".0f"),
        ])
    main = _table(["scenario", "containers x lines", "bytes/line", "wall s", "lines/s", "collector CPU s",
                   "lines per CPU-s", "CPU µs/line", "p50 ms", "p99 ms", "delivery"], rows)
    more = _table(["scenario", "collector CPU", "receiver CPU", "dockerd CPU", "Docker write span s",
                   "last write -> received s", "pushes", "entries/push", "KiB/push (snappy)", "receiver busy",
                   "receiver ms/push", "ms between pushes"], detail)
    return main, more


def latency_table(results: list[Result]) -> str:
    rows = []
    for r in results:
        if r.kind != "latency":
            continue
        lat = r.latencies
        rows.append([
            r.scenario, f"{r.target_rate:,.0f}", _f(r.achieved_rate, ",.0f"), f"{r.delivery.received:,}", str(r.line_bytes),
            _ms(percentile(lat, 50)), _ms(percentile(lat, 90)), _ms(percentile(lat, 99)), _ms(lat[-1] if lat else math.nan),
            _ms(r.first_line_latency_s),
            _f(r.collector_cpu_s / r.wall_s * 100 if r.wall_s > 0 else math.nan, ".0f", " %"),
            _f(r.cpu_us_per_line, ".0f"),
            f"{r.pushes:,}", delivery_text(r.delivery) + ("" if r.complete else " (timed out)"),
        ])
    return _table(["scenario", "target lines/s", "achieved lines/s", "lines", "bytes/line", "p50 ms", "p90 ms",
                   "p99 ms", "max ms", "first line ms", "collector CPU", "collector CPU µs/line", "pushes",
                   "delivery"], rows)


def observations(results: list[Result], batch_max_wait_s: float | None, kind: str) -> list[str]:
    """Plain statements derived from this run's numbers (no result is written in here by hand)."""
    notes = []
    for r in results:
        if not r.wall_s > 0 or r.kind != kind:
            continue
        share_c = r.collector_cpu_s / r.wall_s
        if r.kind == "latency":
            lat = r.latencies
            text = (f"{r.scenario}: median latency {percentile(lat, 50) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms")
            if batch_max_wait_s:
                text += f" (batch_max_wait is {batch_max_wait_s * 1000:.0f} ms)"
            text += (f"; the collector used {share_c:.0%} of a core at {r.achieved_rate:,.0f} lines/s, "
                     f"{r.cpu_us_per_line:.0f} µs of CPU per line.")
            notes.append(text)
            continue
        share_r = r.receiver_cpu_s / r.wall_s
        busy = r.receiver_busy_s / r.wall_s
        what = [f"the collector used {share_c:.0%} of a core ({'CPU-bound' if share_c >= 0.85 else 'not CPU-bound'}), "
                f"the receiver {share_r:.0%} (handling pushes {busy:.0%} of the time)"]
        if r.pushes >= 5 and r.push_handler_ms == r.push_handler_ms and r.push_gap_ms == r.push_gap_ms:
            per_push = r.delivery.received / r.pushes
            bound = per_push / ((r.push_handler_ms + r.push_gap_ms) / 1000)
            what.append(f"pushes went out one at a time, {per_push:,.0f} entries each: {r.push_handler_ms:.0f} ms in the "
                        f"receiver plus {r.push_gap_ms:.0f} ms from one answer to the next push, a ceiling of "
                        f"~{bound:,.0f} lines/s for this pipeline (measured {r.lines_per_s:,.0f})")
        if r.description.startswith("live") and r.docker_span_s == r.docker_span_s:
            what.append(f"Docker wrote the lines within {r.docker_span_s:.2f} s and the last one arrived "
                        f"{r.tail_s:.2f} s after Docker wrote it")
        notes.append(f"{r.scenario}: " + "; ".join(what) + ".")
    return notes


def machine_info() -> dict[str, str]:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = str(os.cpu_count())
    mem = ""
    try:
        with open("/proc/meminfo") as handle:
            kib = int(handle.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": nproc, "cpu": model or platform.processor() or "unknown", "memory": mem,
            "python": platform.python_version(), "kernel": platform.release()}


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "n/a"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "collector"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (collector/ has uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def _size(n: int) -> str:
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def settings_text(config: dict[str, Any]) -> str:
    loki, sources, queue = config["loki"], config["sources"], config["queue"]
    encoding = "protobuf + snappy" if loki["encoding"] == "protobuf" else ("JSON + gzip" if loki.get("gzip") else "JSON")
    return (
        f"Defaults, as printed by `collector check-config` for this run: `loki.batch_max_wait` "
        f"{loki['batch_max_wait'] * 1000:g} ms, `loki.batch_max_bytes` {_size(loki['batch_max_bytes'])}, "
        f"`loki.encoding` {encoding}, structured metadata {', '.join(loki['structured_metadata']) or 'none'}, "
        f"`queue.max_bytes` {_size(queue['max_bytes'])}, `sources.read_chunk_bytes` {_size(sources['read_chunk_bytes'])}, "
        f"`log.level` {config['log']['level']}. Only `docker.*`, `loki.url`, `positions.path` and "
        f"`metrics.listen` (a local port, for the event loop lag histogram) are set, through the environment."
    )


def write_markdown(path: str, results: list[Result], config: dict[str, Any], machine: dict[str, str],
                   engine_text: str, quick: bool, duration_s: float, warnings: list[str], loads: tuple[str, str]) -> str:
    main, more = throughput_tables(results)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/e2e.py" + (" --quick" if quick else "")
    notes = observations(results, config["loki"]["batch_max_wait"], "throughput")
    latency_notes = observations(results, config["loki"]["batch_max_wait"], "latency")
    text = f"""# End-to-end benchmarks

End-to-end numbers from `{command}`: Docker containers -> json-file logs -> the collector
(`python -m collector`) -> Loki push API -> a Loki-compatible receiver. Regenerate with
`python bench/e2e.py` (about {max(1, round(duration_s / 60))} min; `--quick` for a smaller run);
this file is rewritten by every run, and every number in it comes from the run below.
The report against the performance targets is [benchmarks.md](benchmarks.md) (`python bench/report.py`).

## Run

- date: {when}{" (--quick run: smaller sizes)" if quick else ""}
- machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory']} RAM, Linux {machine['kernel']}
- Python {machine['python']}; collector at {git_revision()}
- Docker: {engine_text}
- collector settings: {settings_text(config)}
- whole benchmark run: {duration_s:.0f} s; load average (1/5/15 min) {loads[0]} before, {loads[1]} after

## A. Throughput

{main}

Where the time went (CPU as a share of one core over the scenario's wall time):

{more}

"""
    if notes:
        text += "Observations from this run:\n\n" + "\n".join(f"- {note}" for note in notes) + "\n\n"
    text += f"""## B. Latency at a steady rate

{latency_table(results)}

"""
    if latency_notes:
        text += "Observations from this run:\n\n" + "\n".join(f"- {note}" for note in latency_notes) + "\n\n"
    if warnings:
        text += "The collector logged these warnings/errors during the run:\n\n```\n" + "\n".join(w[:300] for w in warnings[:20]) + "\n```\n\n"
    text += """## Method

- **Engine**: the Docker engine at `DOCKER_HOST` if reachable, else a private `dockerd` (own data-root,
  no bridge, json-file logs, no rotation), started and stopped by the benchmark. The image is a static
  busybox; lines come from `awk` inside the containers.
- **Receiver**: `tests/loki_receiver.py`'s `LokiReceiver` (snappy + hand-written protobuf decoder,
  Loki's label and entry validation all on), run by `bench/receiver_proc.py` in **its own process**,
  so its decoding cost and the driver's blocking calls (docker CLI, polling) never run in the
  collector's process. It stamps every entry with the wall-clock time its push request arrived
  (`received_at`) and keeps (container, Docker timestamp, arrival, sequence number) per entry.
- **Collector**: one `python -m collector` process for the whole run, default settings; it is ready
  when its log says `following docker events`. Containers of one scenario are removed before the next.
- **Throughput (A)**: *live* scenarios start the containers (in parallel) while the collector runs;
  wall time = first container's `State.StartedAt` -> arrival of the last line at the receiver.
  This includes Docker's own write path (the containers' pipes -> dockerd -> json-file), which
  competes for the same CPUs. *Backlog* scenarios freeze the collector with SIGSTOP, let the
  containers write everything (checked by counting the records in each log file), then SIGCONT it:
  wall time = SIGCONT -> last line received, i.e. discovery, reading, parsing, batching, encoding and
  pushing with Docker idle. lines/s = lines received / wall time.
- **CPU**: utime + stime of the collector process (all threads) from `/proc/<pid>/stat`, read before
  the scenario and when the receiver first holds every line; lines per CPU-second = lines / that.
  Receiver and (private engine only) dockerd CPU are read the same way; "receiver busy" is the sum of
  its push handler times over the wall time. The machine is shared by all of these: on a 2-CPU host
  the collector, receiver, dockerd and the writers compete for the same cores. Each scenario runs
  once; on a shared (virtual) machine the same scenario can differ by 10-30 % from run to run, so
  compare runs made on the same machine, not single numbers.
- **Pushes**: "receiver ms/push" is the receiver's handler time per push (reading, snappy, protobuf
  decoding, validation); "ms between pushes" is the mean time from one push's answer to the arrival of
  the next: the collector's own work on its sending path (encoding, compression, HTTP), plus, in live
  scenarios, any wait for lines. When the collector sends one push at a time, entries per push /
  (the two added up) is a ceiling on throughput, shown under Observations. The receiver is pure
  Python and much slower per entry than Loki, so it weighs on these ceilings.
- **Delivery**: every line carries its container name and a sequence number; the receiver's copy is
  checked for missing, duplicated, malformed and rejected lines and per-container order, after waiting
  until no push has arrived for 1 s.
- **Latency (B)**: a container prints lines at a fixed rate (awk paced by `/proc/uptime`, small batches
  every ~10 ms); the achieved rate is measured from Docker's timestamps. Latency per entry =
  receiver `received_at` - Docker's timestamp of the line, so it includes Docker's write path, the
  collector's inotify wake-up and read, the batch wait (`batch_max_wait`: a batch is sent at the
  latest that long after its first chunk was taken from the queue), encoding and the HTTP push.
  Percentiles are nearest-rank over every line; "first line" is the latency of line 1, which also
  includes discovering the new container (Docker event -> inspect -> open).
- **Profiling**: `python bench/e2e.py --profile DIR` samples the collector with py-spy during each
  scenario (collapsed stacks in `DIR/<scenario>.txt`) and leaves this file alone.
"""
    with open(path, "w") as handle:
        handle.write(text)
    return text


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="End-to-end benchmark of the collector")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (under half a minute)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks-e2e.md")
    parser.add_argument("--profile", metavar="DIR", default="",
                        help="sample the collector with py-spy during each scenario (DIR/<scenario>.txt, collapsed "
                             "stacks); implies --no-doc, since the sampling costs CPU")
    args = parser.parse_args()
    if args.profile:
        if shutil.which("py-spy") is None:
            parser.error("--profile needs py-spy (pip install py-spy)")
        args.no_doc = True

    if args.quick:
        big, latency_seconds = 20_000, 3.0
    else:
        big, latency_seconds = 100_000, 10.0

    began = time.monotonic()
    load_before = loadavg()
    workdir = tempfile.mkdtemp(prefix="collector-bench-")
    engine = receiver = collector = bench = None
    try:
        print("starting Docker engine ...", flush=True)
        engine = start_engine()
        engine_text = (f"private dockerd {engine.docker('version', '--format', '{{.Server.Version}}')} started for this run"
                       if engine._pid else f"{engine.host}, server {engine.docker('version', '--format', '{{.Server.Version}}')}")
        receiver = ReceiverProcess(workdir)
        collector = CollectorProcess(engine, receiver.push_url, workdir)
        config = collector.effective_config()
        collector.start()
        print(f"collector pid {collector.pid}, receiver pid {receiver.pid} at {receiver.push_url}", flush=True)
        bench = Bench(engine, receiver, collector)
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
            bench.profile_dir = os.path.abspath(args.profile)

        bench.live("A1 live", 3, 10_000, None, timeout=120)
        bench.live("A2 live", 4, big, 100, timeout=300)
        bench.backlog("A3 backlog", 4, big, 100, timeout=300)
        bench.paced("B1 1k/s", 1_000, latency_seconds, 100)
        bench.paced("B2 10k/s", 10_000, latency_seconds, 100)

        warnings = collector.warnings()
        duration = time.monotonic() - began
        main_table, more_table = throughput_tables(bench.results)
        print("\nA. Throughput\n\n" + main_table + "\n\n" + more_table + "\n")
        for note in observations(bench.results, config["loki"]["batch_max_wait"], "throughput"):
            print("- " + note)
        print("\nB. Latency at a steady rate\n\n" + latency_table(bench.results) + "\n")
        for note in observations(bench.results, config["loki"]["batch_max_wait"], "latency"):
            print("- " + note)
        print("event loop lag p99 (collector_event_loop_lag_seconds, bucket upper bound): "
              + ", ".join(f"{r.scenario} <= {_f(r.loop_lag_p99_ms, '.0f')} ms" for r in bench.results))
        if warnings:
            print("collector warnings/errors:\n" + "\n".join(warnings[:20]))
        if not args.no_doc:
            write_markdown(DOC_PATH, bench.results, config, machine_info(), engine_text, args.quick, duration, warnings,
                           (load_before, loadavg()))
            print(f"wrote {os.path.relpath(DOC_PATH, REPO)}")
        failed = [r.scenario for r in bench.results if not r.complete or not r.delivery.exact]
        if failed:
            print(f"delivery problems in: {', '.join(failed)}", file=sys.stderr)
            return 1
        return 0
    finally:
        if bench is not None:
            bench._profile_stop()
        if collector is not None:
            code = collector.stop()
            if code not in (0, None):
                print(f"collector exited with {code}; log tail:\n{collector.stderr_text()[-2000:]}", file=sys.stderr)
        if receiver is not None:
            receiver.stop()
        if engine is not None:
            engine.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
