#!/usr/bin/env python
"""This collector and Fluent Bit side by side, in one run, on the same 1,000,000-line json-file log.

    FLUENT_BIT=/path/to/fluent-bit python bench/vs_fluentbit.py            # 5 pairs; rewrites a section of docs/benchmarks.md
    FLUENT_BIT=/path/to/fluent-bit python bench/vs_fluentbit.py --pairs 1 --no-doc

Fluent Bit is built from its public source outside this repository (for measuring only); its
config is bench/fluent-bit.conf (tail + docker multiline -> out_loki, JSON lines, one label).
One container writes the log once (bench/cpu.py's writer); then each pair runs Fluent Bit and this
collector (default settings, `positions.start_at: all`) one after the other on that same file, the
order alternating between pairs. Each is pinned to CPU 0 with taskset and pushes to its own fresh
bench/counting_receiver.py on CPU 1; CPU = utime + stime of the process from its start until the
receiver has counted every line (startup included); peak RSS = VmHWM. With BENCH_RECEIVER_DELAY_MS=N in the
environment, both receivers answer every push N ms later, as a slower Loki would. The figure that means
something is the per-pair ratio (Fluent Bit CPU-s / collector CPU-s): absolute CPU figures move by
about 30 % between runs and days on this machine kind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cpu import (  # noqa: E402
    LINES,
    REPO,
    SCENARIOS,
    DockerEngine,
    Result,
    machine,
    proc_cpu,
    proc_hwm_mib,
    run_once,
    start_engine,
    start_receiver,
    wait_for_entries,
    write_log,
)
from e2e import free_port  # noqa: E402

CONFIG = os.path.join(REPO, "bench", "fluent-bit.conf")
DOC_PATH = os.path.join(REPO, "docs", "benchmarks.md")
BEGIN, END = "<!-- vs-fluentbit:begin -->", "<!-- vs-fluentbit:end -->"


def run_fluent_bit(binary: str, log_path: str, lines: int, workdir: str) -> Result:
    receiver, urls = start_receiver()
    environment = {**os.environ, "BENCH_LOG_PATH": log_path, "BENCH_LOKI_PORT": str(urlsplit(urls["push_url"]).port)}
    started = time.monotonic()
    stderr_path = os.path.join(workdir, "fluent-bit.stderr")
    process = subprocess.Popen(["taskset", "-c", "0", binary, "-c", CONFIG], env=environment,
                               stdout=subprocess.DEVNULL, stderr=open(stderr_path, "wb"))
    try:
        entries = wait_for_entries(urls["stats_url"], lines, process, stderr_path, "fluent-bit", started + 600)
        wall = time.monotonic() - started
        cpu, hwm = proc_cpu(process.pid), proc_hwm_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
    if entries < lines:
        raise RuntimeError(f"fluent-bit: only {entries} of {lines} entries arrived")
    return Result("fluent-bit", cpu, hwm, wall, entries)


def run_collector(engine: DockerEngine, name: str, lines: int, workdir: str, extra: dict[str, str]) -> tuple[Result, int]:
    """The collector's run, and how many chunks went through its spool (read from its /metrics
    once everything arrived): whether the backlog spilled, as it does when reading outpaces Loki."""
    port = free_port()
    spooled: list[int] = []

    def read_spool_writes(pid: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        spooled.extend(int(float(line.split()[-1])) for line in text.splitlines() if line.startswith("collector_spool_writes_total "))

    result = run_once(engine, "json-file-protobuf", lines, workdir, None,
                      {"COLLECTOR_METRICS__LISTEN": f"127.0.0.1:{port}", **extra}, on_done=read_spool_writes, log_name=name)
    return result, spooled[0] if spooled else -1


def receiver_answers() -> str:
    delay = os.environ.get("BENCH_RECEIVER_DELAY_MS", "")
    return f"every push answered {delay} ms late" if delay and float(delay) else "answering every push at once"


def fluent_bit_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "?"


def write_doc(pairs: list[tuple[Result, Result]], spooled: list[int], lines: int, version: str, settings: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    scale = 1_000_000 / lines
    ratios = [peer.cpu_s / ours.cpu_s for peer, ours in pairs]
    rows = ["| pair | Fluent Bit CPU-s | collector CPU-s | ratio (FB / collector) | Fluent Bit peak RSS MiB | collector peak RSS MiB "
            "| chunks through the collector's spool |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for index, ((peer, ours), chunks) in enumerate(zip(pairs, spooled, strict=True), 1):
        rows.append(f"| {index} | {peer.cpu_s * scale:.2f} | {ours.cpu_s * scale:.2f} | {peer.cpu_s / ours.cpu_s:.2f} | "
                    f"{peer.rss_peak_mib:.0f} | {ours.rss_peak_mib:.0f} | {chunks:,} |")
    section = "\n".join([
        BEGIN,
        "## Side by side with Fluent Bit (one run)", "",
        "From `FLUENT_BIT=... python bench/vs_fluentbit.py` (its docstring has the method); this section is rewritten by every run.", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; collector at {commit} ({settings}); {version}, release build",
        f"- machine: {machine()}",
        f"- {lines:,} lines of ~90 bytes, one json-file log; each process pinned to CPU 0, its counting receiver on CPU 1 "
        f"({receiver_answers()}); CPU-s per 1M lines", "",
        *rows, "",
        f"**Median ratio: {statistics.median(ratios):.2f}** (min {min(ratios):.2f}, max {max(ratios):.2f}); "
        f"peak RSS median: Fluent Bit {statistics.median(p.rss_peak_mib for p, _ in pairs):.0f} MiB, "
        f"collector {statistics.median(o.rss_peak_mib for _, o in pairs):.0f} MiB.",
        END,
    ])
    text = open(DOC_PATH).read() if os.path.exists(DOC_PATH) else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(DOC_PATH, "w") as handle:
        handle.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--set", action="append", default=[], metavar="COLLECTOR_X__Y=VALUE")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not rewrite the section of docs/benchmarks.md")
    args = parser.parse_args()
    binary = os.environ.get("FLUENT_BIT", "")
    if not binary or not os.access(binary, os.X_OK):
        sys.exit("set FLUENT_BIT to a Fluent Bit binary (built from its public source, outside this repository)")
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is needed")
    extra = dict(item.split("=", 1) for item in args.set)
    engine = start_engine()
    workdir = tempfile.mkdtemp(prefix="vs-fluentbit-")
    pairs: list[tuple[Result, Result]] = []
    spooled: list[int] = []  # per pair: chunks through the collector's spool (-1: not read)
    try:
        name = write_log(engine, SCENARIOS["json-file-protobuf"][0], args.lines)
        log_path = engine.docker("inspect", "-f", "{{.LogPath}}", name).strip()
        for index in range(args.pairs):
            runs = {}
            for who in (("fluent-bit", "collector") if index % 2 == 0 else ("collector", "fluent-bit")):
                if who == "fluent-bit":
                    runs[who] = run_fluent_bit(binary, log_path, args.lines, workdir)
                else:
                    runs[who], chunks = run_collector(engine, name, args.lines, workdir, extra)
                    spooled.append(chunks)
            peer, ours = runs["fluent-bit"], runs["collector"]
            pairs.append((peer, ours))
            print(f"pair {index + 1}: fluent-bit {peer.cpu_s:.2f} CPU-s {peer.rss_peak_mib:.0f} MiB; collector {ours.cpu_s:.2f} CPU-s "
                  f"{ours.rss_peak_mib:.0f} MiB, {spooled[-1]} chunks spooled; ratio {peer.cpu_s / ours.cpu_s:.2f}", flush=True)
        engine.rm(name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        engine.stop()
    ratios = [peer.cpu_s / ours.cpu_s for peer, ours in pairs]
    print(f"median ratio {statistics.median(ratios):.2f}")
    if not args.no_doc:
        settings = "default settings" + (", " + ", ".join(args.set) if args.set else "")
        write_doc(pairs, spooled, args.lines, fluent_bit_version(binary), settings)
        print(f"wrote the side-by-side section of {os.path.relpath(DOC_PATH, REPO)}")


if __name__ == "__main__":
    main()
