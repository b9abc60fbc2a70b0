#!/usr/bin/env python
"""CPU per 1,000,000 lines: the reference backlog run.

    python bench/cpu.py                    # every scenario, 5 runs each; writes docs/benchmarks-cpu.md
    python bench/cpu.py --runs 1 --scenario json-file-protobuf
    python bench/cpu.py --profile          # also a py-spy flame graph of one run: docs/flame.svg

One container writes 1,000,000 lines of ~90 bytes
(`2026-11-22T12:00:00Z INFO request id=N path=/api/v1/items/N status=200 dur_ms=N user=alice`) and
exits; then the collector starts (`positions.start_at: all`, defaults otherwise), pinned to one CPU
with taskset, and pushes everything to bench/counting_receiver.py (decompress and count only, in
its own process on the other CPU). CPU = utime + stime of the collector process from its start
until the receiver has counted every entry: imports and startup included. RSS peak = VmHWM.
bench/report.py runs the same run_once() for the summary in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from dockerengine import DockerEngine, start_engine  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
LINES = 1_000_000
WRITER = ("awk 'BEGIN{for(i=1;i<=%d;i++) printf \"2026-11-22T12:00:00Z INFO request id=%%d path=/api/v1/items/%%d "
          "status=200 dur_ms=%%d user=alice\\n\", i, i, i%%1000}'")
SCENARIOS = {
    # name: (docker run options, collector environment)
    "json-file-protobuf": ((), {}),
    "json-file-json-gzip": ((), {"COLLECTOR_LOKI__ENCODING": "json", "COLLECTOR_LOKI__GZIP": "true"}),
    "local-stream-protobuf": (("--log-driver", "local", "--log-opt", "max-size=1g"), {}),
}
DOC_PATH = os.path.join(REPO, "docs", "benchmarks-cpu.md")


@dataclass
class Result:
    scenario: str
    cpu_s: float
    rss_peak_mib: float
    wall_s: float
    entries: int


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_rss_mib(pid: int) -> float:
    """VmRSS now (VmHWM is the peak)."""
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) / 1024 for line in handle if line.startswith("VmRSS:"))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def start_receiver() -> tuple[subprocess.Popen, dict]:
    receiver = subprocess.Popen(["taskset", "-c", "1", sys.executable, os.path.join(REPO, "bench", "counting_receiver.py")],
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    return receiver, json.loads(receiver.stdout.readline())


def write_log(engine: DockerEngine, options: tuple[str, ...], lines: int) -> str:
    name = f"cpu-bench-{time.monotonic_ns()}"
    engine.run(WRITER % lines, *options, name=name)
    engine.docker("wait", name, timeout=600)
    return name


def wait_for_entries(stats_url: str, lines: int, process: subprocess.Popen, stderr_path: str, who: str, deadline: float) -> int:
    """Until the receiver has counted `lines` entries (or the deadline): how many it counted. A
    process that exits meanwhile is an error, with the end of its stderr."""
    entries = 0
    while time.monotonic() < deadline:
        entries = get_json(stats_url)["entries"]
        if entries >= lines:
            break
        if process.poll() is not None:
            with open(stderr_path, errors="replace") as handle:
                raise RuntimeError(f"{who} exited with {process.returncode}: {handle.read()[-2000:]}")
        time.sleep(0.05)
    return entries


def run_once(engine: DockerEngine, scenario: str, lines: int, workdir: str, profile: str | None,
             extra_env: dict[str, str] | None = None, on_done: Callable[[int], None] | None = None,
             log_name: str = "") -> Result:
    """on_done(collector pid): called once everything has arrived, before the collector is stopped
    (e.g. to read its metrics). log_name: an exited container whose log is read again (kept);
    otherwise a new one is written and removed after the run."""
    options, env = SCENARIOS[scenario]
    name = log_name or write_log(engine, options, lines)
    receiver, urls = start_receiver()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("COLLECTOR_")}
    environment.update({
        "DOCKER_HOST": engine.host, "COLLECTOR_DOCKER__CONTAINERS_DIR": engine.containers_dir,
        "COLLECTOR_LOKI__URL": urls["push_url"], "COLLECTOR_METRICS__LISTEN": "",
        "COLLECTOR_POSITIONS__PATH": os.path.join(workdir, f"positions-{time.monotonic_ns()}.json"),
        "COLLECTOR_POSITIONS__START_AT": "all", "COLLECTOR_LOG__LEVEL": "warning", "PYTHONPATH": REPO, **env, **(extra_env or {}),
    })
    command = ["taskset", "-c", "0", sys.executable, "-m", "collector"]
    if profile:
        fmt = ["--format", "raw"] if profile.endswith(".txt") else []  # collapsed stacks, to read as text
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")  # the venv's, if not on PATH
        command = [spy if os.path.exists(spy) else "py-spy", "record", "--nonblocking", "-r", "200", *fmt, "-o", profile, "--", *command]
    started = time.monotonic()
    stderr_path = os.path.join(workdir, "collector.stderr")
    collector = subprocess.Popen(command, env=environment, cwd=REPO, stderr=open(stderr_path, "wb"))
    try:
        pid = collector.pid
        if profile:  # py-spy's child is the collector
            time.sleep(1.0)
            children = subprocess.run(["pgrep", "-P", str(collector.pid)], capture_output=True, text=True).stdout.split()
            pid = int(children[0]) if children else collector.pid
        entries = wait_for_entries(urls["stats_url"], lines, collector, stderr_path, "the collector", started + 600)
        wall = time.monotonic() - started
        cpu, hwm = proc_cpu(pid), proc_hwm_mib(pid)
        if on_done is not None and entries >= lines:
            on_done(pid)
    finally:
        os.kill(pid, signal.SIGTERM)  # the collector itself: py-spy writes its profile once its target exits
        collector.wait(60)
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
        if not log_name:
            engine.rm(name)
    if entries < lines:
        raise RuntimeError(f"{scenario}: only {entries} of {lines} entries arrived")
    return Result(scenario, cpu, hwm, wall, entries)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}"


def write_doc(results: dict[str, list[Result]], lines: int) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    rows = ["| scenario | runs | CPU-s per 1M lines (median) | min-max | RSS peak MiB (median) | wall s (median) |",
            "|---|---:|---:|---:|---:|---:|"]
    for scenario, runs in results.items():
        cpu = [r.cpu_s * 1_000_000 / lines for r in runs]
        rows.append(f"| {scenario} | {len(runs)} | {statistics.median(cpu):.2f} | {min(cpu):.2f}-{max(cpu):.2f} | "
                    f"{statistics.median(r.rss_peak_mib for r in runs):.0f} | {statistics.median(r.wall_s for r in runs):.1f} |")
    text = "\n".join([
        "# CPU per million lines", "",
        "From `python bench/cpu.py` (see its docstring for the method); rewritten by every run.", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; collector at {commit}",
        f"- machine: {machine()}",
        f"- {lines:,} lines per run; collector pinned to CPU 0, the counting receiver to CPU 1", "",
        *rows, "",
        "Targets: <= 2.3 CPU-s per 1M lines for json-file, the `local` stream within 1.5x of it, RSS peak <= 80 MiB.",
        "Against Fluent Bit, in one run on the same file: `bench/vs_fluentbit.py` (section in benchmarks.md).",
        "The full report (every scenario, plots, flame graph) is [benchmarks.md](benchmarks.md) (`python bench/report.py`).",
        "",
    ])
    os.makedirs(os.path.dirname(DOC_PATH), exist_ok=True)
    with open(DOC_PATH, "w") as handle:
        handle.write(text)


def main() -> None:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1` shows where a run waits
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--profile", nargs="?", const=os.path.join(REPO, "docs", "flame.svg"), default="",
                        help="one extra py-spy run of the first scenario: an SVG flame graph (default docs/flame.svg), "
                             "or collapsed stacks when the path ends in .txt")
    parser.add_argument("--set", action="append", default=[], metavar="COLLECTOR_X__Y=VALUE",
                        help="an extra setting for the collector, e.g. COLLECTOR_QUEUE__MAX_BYTES=4MiB")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not rewrite docs/benchmarks-cpu.md")
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is needed")
    engine = start_engine()
    workdir = tempfile.mkdtemp(prefix="cpu-bench-")
    results: dict[str, list[Result]] = {}
    try:
        for scenario in args.scenario or list(SCENARIOS):
            for index in range(args.runs):
                result = run_once(engine, scenario, args.lines, workdir, None, dict(item.split("=", 1) for item in args.set))
                results.setdefault(scenario, []).append(result)
                print(f"{scenario} run {index + 1}: {result.cpu_s:.2f} CPU-s, RSS peak {result.rss_peak_mib:.0f} MiB, "
                      f"wall {result.wall_s:.1f} s", flush=True)
        if args.profile:
            scenario = (args.scenario or list(SCENARIOS))[0]
            run_once(engine, scenario, args.lines, workdir, args.profile)
            print(f"profile: {args.profile}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        engine.stop()
    if not args.no_doc:
        write_doc(results, args.lines)
        print(f"wrote {os.path.relpath(DOC_PATH, REPO)}")


if __name__ == "__main__":
    main()
