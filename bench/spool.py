#!/usr/bin/env python
"""The spool's cost: CPU per 1,000,000 lines with the spool in use vs not, and its disk write rate.

    python bench/spool.py                          # 3 runs of each mode; prints a Markdown table
    python bench/spool.py --runs 1 --lines 200000 --mode spool

The backlog of bench/cpu.py (its helpers imported: one json-file container writes 1,000,000 lines
of ~90 bytes and exits before the collector starts; collector pinned to CPU 0 with taskset,
`positions.start_at: all`). What forces the spool into use: bench/counting_receiver.py (on CPU 1)
starts with --unavailable and answers every push 503 (Loki down) until the collector has read all
it will read (its disk writes have not grown for 2 s, and 5 s at least); then it takes everything.

- `spool` (the default setting): the queue fills, the lane spills, and the sources read the whole
  backlog into the spool during the outage; then it is read back and sent.
- `no spool` (`spool.enabled: false`): the queue fills and the source waits (the log file is the
  buffer); after the outage it reads on from the file.

Both modes see the same outage, so the difference is what the spool costs: encoding records
(msgpack, CRC32), writing and fsyncing them in batches, reading back and decoding. CPU = utime +
stime of the collector from its start until the receiver has counted every entry, and the part of
it spent during the outage (reading, and writing the spool). RSS peak = VmHWM. Disk write rate:
the collector's /proc/<pid>/io write_bytes, sampled every 0.1 s, from the first byte written to the
last during the outage (the spool, plus a few positions-file writes). `loki.max_backoff: 1s` in
both modes, so the end of the outage is seen within a second. Metrics are scraped once, at the end
of the outage (spool bytes then) and once at the end (spool writes and reads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

from cpu import LINES, get_json, machine, proc_cpu, proc_hwm_mib, write_log  # noqa: E402
from dockerengine import DockerEngine, start_engine  # noqa: E402  (bench/cpu.py put tests/ on the path)

MODES = ("no spool", "spool")
QUIET_S = 2.0  # the outage ends once the collector's disk writes have not grown for this long...
MIN_OUTAGE_S = 5.0  # ...and it lasted this long at least


@dataclass
class Result:
    mode: str
    cpu_s: float
    outage_cpu_s: float
    rss_peak_mib: float
    wall_s: float
    outage_s: float
    spooled_bytes: float  # collector_spool_bytes at the end of the outage
    written_bytes: int  # write_bytes during the outage
    write_s: float  # from the first byte written to the last, during the outage
    spool_writes: float
    spool_reads: float

    @property
    def write_rate_mb_s(self) -> float:
        return self.written_bytes / self.write_s / 1e6 if self.write_s > 0 else 0.0


def io_write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("write_bytes:"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """Unlabelled samples, and labelled ones summed under their family name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            values[name] = values.get(name, 0.0) + float(line.split()[-1])
    return values


def start_receiver() -> tuple[subprocess.Popen[str], dict[str, str]]:
    receiver = subprocess.Popen(["taskset", "-c", "1", sys.executable, os.path.join(REPO, "bench", "counting_receiver.py"),
                                 "--unavailable"], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    return receiver, json.loads(receiver.stdout.readline())


def run_once(engine: DockerEngine, mode: str, lines: int, workdir: str) -> Result:
    name = write_log(engine, (), lines)
    receiver, urls = start_receiver()
    port = free_port()
    run_dir = tempfile.mkdtemp(prefix="run-", dir=workdir)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("COLLECTOR_")}
    environment.update({
        "DOCKER_HOST": engine.host, "COLLECTOR_DOCKER__CONTAINERS_DIR": engine.containers_dir,
        "COLLECTOR_LOKI__URL": urls["push_url"], "COLLECTOR_LOKI__MAX_BACKOFF": "1s",
        "COLLECTOR_METRICS__LISTEN": f"127.0.0.1:{port}",
        "COLLECTOR_POSITIONS__PATH": os.path.join(run_dir, "positions.json"), "COLLECTOR_SPOOL__PATH": os.path.join(run_dir, "spool"),
        "COLLECTOR_SPOOL__ENABLED": "true" if mode == "spool" else "false",
        "COLLECTOR_POSITIONS__START_AT": "all", "COLLECTOR_LOG__LEVEL": "warning", "PYTHONPATH": REPO,
    })
    stderr_path = os.path.join(run_dir, "collector.stderr")
    started = time.monotonic()
    collector = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "collector"], env=environment, cwd=REPO,
                                 stderr=open(stderr_path, "wb"))
    pid = collector.pid

    def alive() -> None:
        if collector.poll() is not None:
            with open(stderr_path, errors="replace") as handle:
                raise RuntimeError(f"the collector exited with {collector.returncode}: {handle.read()[-2000:]}")

    try:
        # The outage: until the collector's disk writes stop growing.
        last = io_write_bytes(pid)
        base, first_write_at, last_write_at = last, None, started
        while True:
            time.sleep(0.1)
            alive()
            now, written = time.monotonic(), io_write_bytes(pid)
            if written > last:
                first_write_at = first_write_at or now
                last, last_write_at = written, now
            if now - started >= MIN_OUTAGE_S and now - last_write_at >= QUIET_S:
                break
            if now - started > 600:
                raise RuntimeError("the outage phase did not settle in 600 s")
        outage_s, outage_cpu = time.monotonic() - started, proc_cpu(pid)
        spooled = scrape(port).get("collector_spool_bytes", 0.0)
        urllib.request.urlopen(urllib.request.Request(urls["available_url"], method="POST"), timeout=10).close()
        entries = 0
        while time.monotonic() - started < 1200:
            entries = get_json(urls["stats_url"])["entries"]
            if entries >= lines:
                break
            alive()
            time.sleep(0.05)
        wall, cpu, hwm = time.monotonic() - started, proc_cpu(pid), proc_hwm_mib(pid)
        final = scrape(port)
    finally:
        if collector.poll() is None:
            os.kill(pid, signal.SIGTERM)
        collector.wait(60)
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
        engine.rm(name)
        shutil.rmtree(run_dir, ignore_errors=True)
    if entries < lines:
        raise RuntimeError(f"{mode}: only {entries} of {lines} entries arrived")
    write_s = last_write_at - first_write_at if first_write_at else 0.0
    return Result(mode, cpu, outage_cpu, hwm, wall, outage_s, spooled, last - base, write_s,
                  final.get("collector_spool_writes_total", 0.0), final.get("collector_spool_reads_total", 0.0))


def table(results: dict[str, list[Result]], lines: int) -> str:
    per_m = 1_000_000 / lines
    rows = ["| mode | runs | CPU-s per 1M lines (median) | min-max | of it during the outage | RSS peak MiB | "
            "spool MB at the outage's end | written to disk MB/s (median) | min-max |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, runs in results.items():
        cpu = [r.cpu_s * per_m for r in runs]
        rate = [r.write_rate_mb_s for r in runs]
        spool = mode == "spool"
        rows.append(f"| {mode} | {len(runs)} | {statistics.median(cpu):.2f} | {min(cpu):.2f}-{max(cpu):.2f} | "
                    f"{statistics.median(r.outage_cpu_s * per_m for r in runs):.2f} | "
                    f"{statistics.median(r.rss_peak_mib for r in runs):.0f} | "
                    + (f"{statistics.median(r.spooled_bytes for r in runs) / 1e6:.0f} | {statistics.median(rate):.0f} | "
                       f"{min(rate):.0f}-{max(rate):.0f} |" if spool else "- | - | - |"))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--mode", action="append", choices=MODES)
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is needed")
    engine = start_engine()
    workdir = tempfile.mkdtemp(prefix="spool-bench-")
    results: dict[str, list[Result]] = {}
    try:
        for index in range(args.runs):  # the modes alternate: a change in the machine's load hits both
            for mode in args.mode or MODES:
                result = run_once(engine, mode, args.lines, workdir)
                results.setdefault(mode, []).append(result)
                print(f"{mode} run {index + 1}: {result.cpu_s:.2f} CPU-s ({result.outage_cpu_s:.2f} in the outage of "
                      f"{result.outage_s:.1f} s), RSS peak {result.rss_peak_mib:.0f} MiB, wall {result.wall_s:.1f} s, "
                      f"spool {result.spooled_bytes / 1e6:.0f} MB, written {result.written_bytes / 1e6:.0f} MB in "
                      f"{result.write_s:.1f} s ({result.write_rate_mb_s:.0f} MB/s), spool writes {result.spool_writes:.0f} "
                      f"reads {result.spool_reads:.0f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        engine.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    print(f"\n- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; collector at {commit}\n- machine: {machine()}\n"
          f"- {args.lines:,} lines per run\n")
    print(table(results, args.lines))


if __name__ == "__main__":
    main()
