#!/usr/bin/env python
"""The benchmark report: every scenario against the code in this tree, one command.

    python bench/report.py                 # everything (~9 min on 2 CPUs); rewrites docs/benchmarks.md + PNGs
    python bench/report.py --quick         # small sizes: checks the script end to end in a few minutes
    python bench/report.py --only churn    # rerun one section (repeatable); the others come from
                                           # docs/benchmarks.json, the raw figures of the last run

Sections (the measuring code is the other bench modules', imported):
  backlog  1M-line backlog, medians of 5 runs: json-file protobuf+snappy, json-file JSON+gzip, `local`
           driver through the API stream (bench/cpu.py run_once: counting receiver, collector pinned)
  lag      one more protobuf backlog run with metrics on: event loop lag p99 (histogram bucket bound)
  latency  write-to-ack latency at 1k and 10k lines/s (one container) and 50k (50 containers at 1k/s),
           default settings (bench/e2e.py's paced containers and timestamp-reading receiver)
  idle     500 idle json-file containers (bench/idle.py measure)
  churn    300 containers started and removed (`docker rm -f`) in waves while the collector runs
  outage   10 busy containers while the Loki URL refuses connections for 60 s, then Loki is back
  flame    one protobuf backlog run under py-spy: docs/flame.svg, and the top functions by own time

The churn and outage sections sample the collector every 0.5 s: VmRSS, open FDs (/proc) and
asyncio tasks (collector_asyncio_tasks on its metrics endpoint).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "bench"))

import cpu  # noqa: E402
import idle  # noqa: E402
from dockerengine import DockerEngine, start_engine  # noqa: E402
from e2e import (  # noqa: E402
    Bench,
    CollectorProcess,
    ReceiverProcess,
    burst_script,
    check_delivery,
    delivery_text,
    free_port,
    git_revision,
    lag_p99,
    loadavg,
    loop_lag_buckets,
    machine_info,
    paced_script,
    percentile,
    remove_containers,
    run_containers,
    settle,
    wait_delivered,
)

DOCS = os.path.join(REPO, "docs")
DOC_PATH = os.path.join(DOCS, "benchmarks.md")
DATA_PATH = os.path.join(DOCS, "benchmarks.json")
FLAME_PATH = os.path.join(DOCS, "flame.svg")
KEPT_MARK = "<!-- Below: sections other bench scripts write (bench/vs_fluentbit.py, bench/spool.py); bench/report.py keeps them. -->"
SECTIONS = ("backlog", "lag", "latency", "idle", "churn", "outage", "flame")
RSS_TARGET_MIB = 80.0
LATENCY_RATES = (("1k lines/s", 1_000, 1), ("10k lines/s", 10_000, 1), ("50k lines/s", 1_000, 50))  # per container


@dataclass(frozen=True)
class Sizes:
    runs: int = 5
    lines: int = 1_000_000
    latency_s: float = 10.0
    idle_containers: int = 500
    idle_s: float = 60.0
    churn_waves: int = 6
    churn_wave_size: int = 50
    churn_lines: int = 1_000
    outage_s: float = 60.0
    outage_containers: int = 10
    outage_rate: int = 1_000  # lines/s per container


QUICK = Sizes(runs=1, lines=100_000, latency_s=3.0, idle_containers=20, idle_s=5.0, churn_waves=3, churn_wave_size=10,
              churn_lines=200, outage_s=10.0, outage_rate=200)


# ---------------------------------------------------------------------------------------------
# Sampling a running collector
# ---------------------------------------------------------------------------------------------


class Sampler:
    """Every `interval` s, in a thread: seconds since start, VmRSS MiB, open FDs, asyncio tasks."""

    def __init__(self, pid: int, metrics_listen: str, interval: float = 0.5) -> None:
        self.pid, self.url, self.interval = pid, f"http://{metrics_listen}", interval
        self.samples: list[tuple[float, float, int, int]] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def take(self) -> tuple[float, float, int, int]:
        at, rss, fds = round(self.elapsed(), 2), round(cpu.proc_rss_mib(self.pid), 1), len(os.listdir(f"/proc/{self.pid}/fd"))
        try:  # after counting the FDs, so the scrape's own connection is not among them
            tasks = int(idle.sample(idle.scrape(self.url), "collector_asyncio_tasks"))
        except OSError:
            tasks = -1
        self.samples.append((at, rss, fds, tasks))
        return self.samples[-1]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.take()
            except OSError:  # the collector is gone
                return
            self._stop.wait(self.interval)


def fd_kinds(pid: int) -> dict[str, int]:
    """The process's open FDs by kind (socket, anon inode, json-file log, deleted file, ...)."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")):
            kind = target.split(":", 1)[0]
        elif target.startswith("anon_inode:"):
            kind = target
        elif target.endswith(" (deleted)"):
            kind = "deleted file"
        elif target.endswith("-json.log"):
            kind = "json-file log"
        else:
            kind = "other file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def series(sampler: Sampler) -> dict[str, list]:
    return {key: [s[i] for s in sampler.samples] for i, key in enumerate(("t", "rss_mib", "fds", "tasks"))}


class Pipeline:
    """The e2e collector + timestamp-reading receiver in a temp dir of their own; stopped on exit."""

    def __init__(self, engine: DockerEngine, receiver_port: int | None = None) -> None:
        """receiver_port: push to this port with no receiver yet (start it with receiver_up())."""
        self.workdir = tempfile.mkdtemp(prefix="report-bench-")
        self.receiver: ReceiverProcess | None = None
        self.port = receiver_port
        if receiver_port is None:
            self.receiver = ReceiverProcess(self.workdir, fast=True)
            push_url = self.receiver.push_url
        else:
            push_url = f"http://127.0.0.1:{receiver_port}/loki/api/v1/push"
        self.collector = CollectorProcess(engine, push_url, self.workdir)
        self.bench = Bench(engine, self.receiver, self.collector) if self.receiver else None  # type: ignore[arg-type]

    def __enter__(self) -> Pipeline:
        self.collector.start()
        return self

    def receiver_up(self) -> ReceiverProcess:
        self.receiver = ReceiverProcess(self.workdir, port=self.port or 0, fast=True)
        return self.receiver

    def sampler(self) -> Sampler:
        return Sampler(self.collector.pid, self.collector.env["COLLECTOR_METRICS__LISTEN"])

    def __exit__(self, *exc: object) -> None:
        try:
            self.collector.stop()
            if self.receiver is not None:
                self.receiver.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def delivered(receiver: ReceiverProcess, expected: dict[str, int]) -> dict[str, Any]:
    settle(receiver)
    result = check_delivery(receiver.dump(clear=True), expected)
    return {**asdict(result), "exact": result.exact, "text": delivery_text(result)}


# ---------------------------------------------------------------------------------------------
# Sections: each returns plain data (kept in docs/benchmarks.json)
# ---------------------------------------------------------------------------------------------


def section_backlog(engine: DockerEngine, sizes: Sizes) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="report-bench-")
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        for scenario in cpu.SCENARIOS:
            for index in range(sizes.runs):
                r = cpu.run_once(engine, scenario, sizes.lines, workdir, None)
                runs.setdefault(scenario, []).append(
                    {"cpu_s_per_1m": r.cpu_s * 1_000_000 / sizes.lines, "rss_peak_mib": r.rss_peak_mib, "wall_s": r.wall_s})
                print(f"  {scenario} run {index + 1}: {r.cpu_s:.2f} CPU-s, RSS peak {r.rss_peak_mib:.0f} MiB, "
                      f"wall {r.wall_s:.1f} s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"lines": sizes.lines, "runs": runs}


def section_lag(engine: DockerEngine, sizes: Sizes) -> dict[str, Any]:
    """`sizes.runs` more backlog runs with metrics on; their lag histograms added up (one run of 1M
    lines lasts a few seconds: only ~25 probes of 100 ms)."""
    counts: dict[float, float] = {}
    walls, cpus = [], []
    workdir = tempfile.mkdtemp(prefix="report-bench-")
    try:
        for _ in range(sizes.runs):
            listen = f"127.0.0.1:{free_port()}"
            buckets: list[tuple[float, float]] = []
            r = cpu.run_once(engine, "json-file-protobuf", sizes.lines, workdir, None, {"COLLECTOR_METRICS__LISTEN": listen},
                             on_done=lambda pid, listen=listen, buckets=buckets: buckets.extend(loop_lag_buckets(listen)))
            for bound, count in buckets:
                counts[bound] = counts.get(bound, 0.0) + count
            walls.append(r.wall_s)
            cpus.append(r.cpu_s * 1_000_000 / sizes.lines)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    merged = sorted(counts.items())
    return {"lines": sizes.lines, "runs": sizes.runs, "p99_ms": lag_p99([], merged) * 1000,
            "probes": merged[-1][1] if merged else 0, "wall_s": sum(walls), "cpu_s_per_1m": statistics.median(cpus),
            "buckets": [[bound if bound != math.inf else "+Inf", count] for bound, count in merged]}


def section_latency(engine: DockerEngine, sizes: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": sizes.latency_s}
    with Pipeline(engine) as pipeline:
        assert pipeline.bench is not None
        for label, rate, containers in LATENCY_RATES:
            r = pipeline.bench.paced(label, rate, sizes.latency_s, 100, containers)
            lat = r.latencies
            out[label] = {
                "containers": containers, "target_rate": r.target_rate, "achieved_rate": r.achieved_rate,
                "lines": r.delivery.received, "expected": r.delivery.expected, "complete": r.complete,
                "p50_ms": percentile(lat, 50) * 1000, "p90_ms": percentile(lat, 90) * 1000,
                "p99_ms": percentile(lat, 99) * 1000, "max_ms": lat[-1] * 1000 if lat else math.nan,
                "collector_cpu_share": r.collector_cpu_s / r.wall_s if r.wall_s > 0 else math.nan,
                "loop_lag_p99_ms": r.loop_lag_p99_ms,
                "receiver_cpu_share": r.receiver_cpu_s / r.wall_s if r.wall_s > 0 else math.nan,
                "pushes": r.pushes, "push_handler_ms": r.push_handler_ms, "push_gap_ms": r.push_gap_ms,
                "delivery": delivery_text(r.delivery), "exact": r.delivery.exact,
                # the CDF, as latency (ms) at these percentiles: enough to plot, small enough to keep
                "cdf": [[pct, percentile(lat, pct) * 1000] for pct in cdf_points()] if lat else [],
            }
    return out


def cdf_points() -> list[float]:
    return [p / 2 for p in range(1, 199)] + [99.5, 99.9, 99.99, 100.0]


def section_idle(engine: DockerEngine, sizes: Sizes) -> dict[str, Any]:
    return {**idle.measure(engine, sizes.idle_containers, sizes.idle_s), "idle_s": sizes.idle_s}


def section_churn(engine: DockerEngine, sizes: Sizes) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    expected: dict[str, int] = {}
    waves: list[list[float]] = []  # [started at, delivered at] per wave, seconds on the sampler's clock
    incomplete = 0
    with Pipeline(engine) as pipeline, pipeline.sampler() as sampler:
        assert pipeline.receiver is not None
        time.sleep(3)
        before = sampler.take()
        previous: list[str] = []
        for wave in range(sizes.churn_waves):
            names = [f"churn-{tag}-{wave}-{i}" for i in range(sizes.churn_wave_size)]
            started = sampler.elapsed()
            # this wave starts while the last one is removed
            remover = threading.Thread(target=remove_containers, args=(engine, previous))
            remover.start()
            run_containers(engine, [(name, burst_script(name, sizes.churn_lines, 100) + "; sleep 3600") for name in names])
            remover.join()
            wave_expected = {name: sizes.churn_lines for name in names}
            complete, _ = wait_delivered(pipeline.receiver, pipeline.collector, wave_expected, timeout=180)
            incomplete += not complete
            expected.update(wave_expected)
            waves.append([started, sampler.elapsed()])
            print(f"  wave {wave + 1}/{sizes.churn_waves}: {len(names)} containers, delivered in "
                  f"{waves[-1][1] - started:.1f} s{'' if complete else ' (timed out)'}", flush=True)
            previous = names
        before_kinds = fd_kinds(pipeline.collector.pid)
        remove_containers(engine, previous)
        removed_at = sampler.elapsed()
        time.sleep(3)
        soon_after_kinds = fd_kinds(pipeline.collector.pid)
        after = wait_back_to(sampler, before, timeout=40)
        delivery = delivered(pipeline.receiver, expected)
    return {"containers": len(expected), "waves": sizes.churn_waves, "lines_per_container": sizes.churn_lines,
            "before": {"rss_mib": before[1], "fds": before[2], "tasks": before[3]},
            "after": {"rss_mib": after[1], "fds": after[2], "tasks": after[3], "after_s": round(after[0] - removed_at, 1)},
            "peak_rss_mib": max(s[1] for s in sampler.samples), "incomplete_waves": incomplete, "wave_times": waves,
            "fd_kinds_last_wave": before_kinds, "fd_kinds_3s_after_removal": soon_after_kinds,
            "removed_at": removed_at, "delivery": delivery, "series": series(sampler)}


def wait_back_to(sampler: Sampler, before: tuple[float, float, int, int], timeout: float) -> tuple[float, float, int, int]:
    """Once the containers are gone: the first sample with FDs and tasks back to `before` (or the last)."""
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.5)
        now = sampler.take()
        if (now[2] <= before[2] and now[3] <= before[3]) or time.monotonic() > deadline:
            return now


def section_outage(engine: DockerEngine, sizes: Sizes) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    names = [f"outage-{tag}-{i}" for i in range(sizes.outage_containers)]
    count = int(sizes.outage_rate * sizes.outage_s)
    expected = {name: count for name in names}
    with Pipeline(engine, receiver_port=free_port()) as pipeline, pipeline.sampler() as sampler:
        time.sleep(2)
        run_containers(engine, [(name, paced_script(name, sizes.outage_rate, count, 100)) for name in names])
        down_at = sampler.elapsed()  # the containers write from here on, for about outage_s
        time.sleep(sizes.outage_s)
        receiver = pipeline.receiver_up()
        up_at = sampler.elapsed()
        print(f"  Loki back after {up_at - down_at:.0f} s", flush=True)
        complete, _ = wait_delivered(receiver, pipeline.collector, expected, timeout=300)
        done_at = sampler.elapsed()
        time.sleep(2)
        delivery = delivered(receiver, expected)
        remove_containers(engine, names)
    during = [s[1] for s in sampler.samples if s[0] <= up_at]
    return {"containers": sizes.outage_containers, "rate_per_container": sizes.outage_rate, "lines": count * len(names),
            "outage_s": up_at - down_at, "down_at": down_at, "up_at": up_at, "complete": complete,
            "recovered_after_s": done_at - up_at, "peak_rss_mib": max(s[1] for s in sampler.samples),
            "peak_rss_during_outage_mib": max(during, default=math.nan), "delivery": delivery, "series": series(sampler)}


def section_flame(engine: DockerEngine, sizes: Sizes) -> dict[str, Any]:
    """Two py-spy runs of the protobuf backlog: the SVG kept in docs/, and collapsed stacks read here."""
    workdir = tempfile.mkdtemp(prefix="report-bench-")
    try:
        cpu.run_once(engine, "json-file-protobuf", sizes.lines, workdir, FLAME_PATH)
        stacks = os.path.join(workdir, "stacks.txt")
        cpu.run_once(engine, "json-file-protobuf", sizes.lines, workdir, stacks)
        own: dict[str, int] = {}
        total = 0
        with open(stacks) as handle:
            for line in handle:
                frames, _, count = line.rstrip("\n").rpartition(" ")
                total += int(count)
                leaf = frames.rsplit(";", 1)[-1]
                own[leaf] = own.get(leaf, 0) + int(count)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    top = sorted(own.items(), key=lambda item: -item[1])[:15]
    return {"svg": os.path.basename(FLAME_PATH), "samples": total,
            "top": [{"frame": frame, "share": count / max(1, total)} for frame, count in top]}


RUNNERS: dict[str, Callable[[DockerEngine, Sizes], dict[str, Any]]] = {
    "backlog": section_backlog, "lag": section_lag, "latency": section_latency,
    "idle": section_idle, "churn": section_churn, "outage": section_outage, "flame": section_flame,
}


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg)
# ---------------------------------------------------------------------------------------------


def plot_all(data: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "backlog" in data:
        runs = data["backlog"]["result"]["runs"]
        names = list(runs)
        medians = [statistics.median(r["cpu_s_per_1m"] for r in runs[n]) for n in names]
        lows = [m - min(r["cpu_s_per_1m"] for r in runs[n]) for m, n in zip(medians, names, strict=True)]
        highs = [max(r["cpu_s_per_1m"] for r in runs[n]) - m for m, n in zip(medians, names, strict=True)]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        bars = ax.bar(names, medians, yerr=[lows, highs], capsize=4, color="tab:blue", label="collector, median (min-max)")
        ax.bar_label(bars, fmt="%.2f", padding=3)
        ax.set_ylabel("CPU-s per 1,000,000 lines")
        ax.set_title(f"{data['backlog']['result']['lines']:,}-line backlog, median of {len(runs[names[0]])} run(s)")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_ylim(0, (max(medians) + max(highs)) * 1.25)
        written.append(_save(fig, "bench-cpu.png"))
    if "latency" in data:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for label, *_ in LATENCY_RATES:
            item = data["latency"]["result"].get(label)
            if item and item["cdf"]:
                ax.plot([p[1] for p in item["cdf"]], [p[0] / 100 for p in item["cdf"]],
                        label=f"{label} (achieved {item['achieved_rate']:,.0f}/s)")
        ax.axvline(250, color="tab:red", linestyle="--", label="p99 target at 10k: 250 ms")
        ax.axhline(0.99, color="grey", linewidth=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("write-to-ack latency, ms (log)")
        ax.set_ylabel("fraction of lines")
        ax.set_title("Latency CDF, default settings")
        ax.legend(fontsize=8, loc="lower right")
        written.append(_save(fig, "bench-latency-cdf.png"))
    panels = [(key, title) for key, title in (("churn", "container churn"), ("outage", "Loki unreachable"))
              if key in data]
    if panels:
        fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3.4 * len(panels)), squeeze=False)
        for ax, (key, title) in zip(axes[:, 0], panels, strict=True):
            result = data[key]["result"]
            s = result["series"]
            ax.plot(s["t"], s["rss_mib"], color="tab:blue", label="VmRSS MiB")
            ax.axhline(RSS_TARGET_MIB, color="tab:red", linestyle="--", label=f"{RSS_TARGET_MIB:.0f} MiB")
            ax.set_ylabel("MiB")
            ax.set_ylim(0, max(max(s["rss_mib"]), RSS_TARGET_MIB) * 1.15)
            ax.set_xlabel("seconds")
            if key == "churn":
                for start, end in result["wave_times"]:
                    ax.axvspan(start, end, color="tab:green", alpha=0.12)
                ax.set_title(f"{result['containers']}-{title}: RSS (waves shaded), asyncio tasks")
                twin = ax.twinx()
                twin.plot(s["t"], s["tasks"], color="tab:grey", linewidth=0.8, label="asyncio tasks")
                twin.set_ylabel("tasks")
            else:
                ax.axvspan(result["down_at"], result["up_at"], color="tab:red", alpha=0.12, label="Loki unreachable")
                ax.set_title(f"{title} for {result['outage_s']:.0f} s: RSS")
            ax.legend(fontsize=8, loc="upper left")
        written.append(_save(fig, "bench-rss.png"))
    return written


def _save(fig: Any, name: str) -> str:
    fig.tight_layout()
    path = os.path.join(DOCS, name)
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name


# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------


def _n(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None or value != value else f"{value:{fmt}}"


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**not met**")


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, measured, target, met?) for everything measured."""
    rows: list[tuple[str, str, str, bool | None]] = []
    if "backlog" in data:
        runs = data["backlog"]["result"]["runs"]
        med = {n: statistics.median(r["cpu_s_per_1m"] for r in v) for n, v in runs.items()}
        rss = {n: statistics.median(r["rss_peak_mib"] for r in v) for n, v in runs.items()}
        base = med.get("json-file-protobuf", math.nan)
        # No absolute CPU target: it moves with the machine; the target is a ratio to Fluent Bit
        # measured in one run (bench/vs_fluentbit.py, its own section below).
        rows.append(("CPU-s per 1M lines, json-file, protobuf+snappy (median)", _n(base),
                     "none here (Fluent Bit side by side: its CPU / ours >= 1.3)", None))
        if "json-file-json-gzip" in med:
            value = med["json-file-json-gzip"]
            rows.append(("CPU-s per 1M lines, json-file, JSON+gzip (median)", _n(value), "none (report)", None))
        if "local-stream-protobuf" in med:
            value = med["local-stream-protobuf"]
            rows.append(("CPU-s per 1M lines, `local` driver via the API stream (median)", _n(value),
                         f"<= 1.5 x json-file = {_n(1.5 * base)}", value <= 1.5 * base))
        for name, value in rss.items():
            rows.append((f"RSS peak in the backlog run, {name} (median)", f"{value:.0f} MiB",
                         f"<= {RSS_TARGET_MIB:.0f} MiB", value <= RSS_TARGET_MIB))
    if "lag" in data:
        lag = data["lag"]["result"]
        rows.append(("event loop lag p99 in the backlog run (bucket upper bound)", f"<= {_n(lag['p99_ms'], '.0f')} ms",
                     "<= 50 ms", lag["p99_ms"] <= 50))
    if "latency" in data:
        for label, *_ in LATENCY_RATES:
            item = data["latency"]["result"].get(label)
            if not item:
                continue
            target = "<= 250 ms" if label.startswith("10k") else "none (report)"
            rows.append((f"latency at {label}: p50 / p99", f"{_n(item['p50_ms'], '.0f')} / {_n(item['p99_ms'], '.0f')} ms",
                         target, item["p99_ms"] <= 250 if label.startswith("10k") else None))
            if label.startswith("50k"):
                rows.append(("rate achieved aiming at 50k lines/s (50 containers)", f"{item['achieved_rate']:,.0f} lines/s",
                             "none (report)", None))
    if "idle" in data:
        r = data["idle"]["result"]
        n = r["containers"]
        live = r["all live after s"]
        rows.append((f"{n} idle containers: all sources live after", f"{_n(live)} s", "<= 5 s", live is not None and live <= 5))
        rows.append((f"{n} idle containers: RSS", f"{r['RSS MiB']:.0f} MiB", f"<= {RSS_TARGET_MIB:.0f} MiB",
                     r["RSS MiB"] <= RSS_TARGET_MIB))
        rows.append((f"{n} idle containers: idle CPU over {r['idle_s']:g} s", f"{r['idle CPU % of a core']:.2f} % of a core",
                     "< 1 %", r["idle CPU % of a core"] < 1))
    if "churn" in data:
        r = data["churn"]["result"]
        rows.append((f"churn of {r['containers']} containers: peak RSS", f"{r['peak_rss_mib']:.0f} MiB", "none (report)", None))
        b, a = r["before"], r["after"]
        rows.append(("churn: open FDs / asyncio tasks before -> after", f"{b['fds']} / {b['tasks']} -> {a['fds']} / {a['tasks']}",
                     "back to before", a["fds"] <= b["fds"] and a["tasks"] <= b["tasks"]))
        rows.append(("churn: every line delivered once", r["delivery"]["text"], "all", r["delivery"]["exact"]))
    if "outage" in data:
        r = data["outage"]["result"]
        rows.append((f"Loki unreachable {r['outage_s']:.0f} s, {r['containers']} busy containers: peak RSS (while "
                     "unreachable / catching up)", f"{r['peak_rss_during_outage_mib']:.0f} / {r['peak_rss_mib']:.0f} MiB",
                     f"<= {RSS_TARGET_MIB:.0f} MiB", r["peak_rss_mib"] <= RSS_TARGET_MIB))
        rows.append(("Loki unreachable: every line delivered after recovery", r["delivery"]["text"]
                     + f" ({r['recovered_after_s']:.0f} s after Loki came back)", "all", r["delivery"]["exact"]))
    return rows


def _push_ceilings(latency: dict[str, Any]) -> str:
    """Where the rate fell short of the aim: with one push in flight at a time, lines per push /
    (receiver time + gap to the next push) bounds the rate."""
    notes = []
    for label, *_ in LATENCY_RATES:
        x = latency.get(label)
        if (x and x.get("pushes") and x["achieved_rate"] < 0.9 * x["target_rate"]
                and x["push_handler_ms"] == x["push_handler_ms"] and x["push_gap_ms"] == x["push_gap_ms"]):
            per_push = x["lines"] / x["pushes"]
            ceiling = per_push / ((x["push_handler_ms"] + x["push_gap_ms"]) / 1000)
            notes.append(f"- {label}: {per_push:,.0f} lines per push, {x['push_handler_ms']:.0f} ms in the receiver + "
                         f"{x['push_gap_ms']:.0f} ms from its answer to the next push: if pushes go one at a time, "
                         f"that carries at most ~{ceiling:,.0f} lines/s (Docker's timestamps say {x['achieved_rate']:,.0f} lines/s "
                         "were written).")
    return ("\nShort of the aimed rate:\n\n" + "\n".join(notes) + "\n") if notes else ""


def _kinds(kinds: dict[str, int] | None) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) if kinds else "n/a"


def detail(section: str, entry: dict[str, Any], sections: set[str]) -> str:
    """The section's method and figures; `sections`: those on the page (the RSS plot is shown once)."""
    r = entry["result"]
    head = (f"_Measured {entry['date']} at {entry['commit']}{' (--quick sizes)' if entry['quick'] else ''}; took "
            f"{entry['took_s']:.0f} s; load average (1/5/15 min) at its end: {entry.get('load_after', 'n/a')}._\n\n")
    if section == "backlog":
        rows = ["| scenario | runs | CPU-s per 1M lines, median | min-max | RSS peak MiB, median | wall s, median |",
                "|---|---:|---:|---:|---:|---:|"]
        for name, runs in r["runs"].items():
            cpu_values = [x["cpu_s_per_1m"] for x in runs]
            rows.append(f"| {name} | {len(runs)} | {statistics.median(cpu_values):.2f} | {min(cpu_values):.2f}-{max(cpu_values):.2f} | "
                        f"{statistics.median(x['rss_peak_mib'] for x in runs):.0f} | {statistics.median(x['wall_s'] for x in runs):.1f} |")
        return head + f"""One container's log of {r['lines']:,} lines of ~90 bytes
(`2026-11-22T12:00:00Z INFO request id=N path=/api/v1/items/N status=200 dur_ms=N user=alice`), written
before the collector starts; the collector (`positions.start_at: all`, defaults otherwise, metrics off)
pinned to CPU 0 with `taskset`, pushing to `bench/counting_receiver.py` (decompress and count only) on
CPU 1. CPU = utime + stime of the collector from its start until the receiver has counted every entry,
imports and startup included; RSS peak = VmHWM. The `local` scenario runs the container with
`--log-driver local --log-opt max-size=1g`, read through the Engine API stream (`bench/cpu.py`).

{chr(10).join(rows)}

![CPU-s per 1M lines](bench-cpu.png)
"""
    if section == "lag":
        runs = r.get("runs", 1)
        return head + f"""{runs} more json-file protobuf backlog run(s) of {r['lines']:,} lines, with the metrics endpoint on
(so the CPU runs above are not disturbed by it): `collector_event_loop_lag_seconds` is read just
before the collector stops, and the runs' histograms are added up. Its probe sleeps 100 ms and
records how late it woke: {r['probes']:.0f} probes over {r['wall_s']:.1f} s of backlog, so the p99 is close to the
worst probe. The p99 is given as **the upper bound of the histogram bucket** that holds it (buckets
1, 2.5, 5, 10, 25, 50, 100, 250 ms ...): p99 <= {_n(r['p99_ms'], '.1f')} ms. These runs used
{r['cpu_s_per_1m']:.2f} CPU-s per 1M lines (median).
"""
    if section == "latency":
        rows = ["| rate | containers | achieved lines/s | lines delivered | p50 ms | p90 ms | p99 ms | max ms | collector CPU "
                "| receiver CPU | pushes | receiver ms/push | ms between pushes | loop lag p99 ms (bucket bound) | delivery |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for label, *_ in LATENCY_RATES:
            x = r.get(label)
            if x:
                rows.append(f"| {label} | {x['containers']} | {x['achieved_rate']:,.0f} | {x['lines']:,}/{x['expected']:,} | "
                            f"{_n(x['p50_ms'], '.0f')} | {_n(x['p90_ms'], '.0f')} | {_n(x['p99_ms'], '.0f')} | "
                            f"{_n(x['max_ms'], '.0f')} | {x['collector_cpu_share'] * 100:.0f} % | "
                            f"{_n(x.get('receiver_cpu_share', math.nan) * 100, '.0f')} % | {x.get('pushes', 'n/a')} | "
                            f"{_n(x.get('push_handler_ms', math.nan), '.0f')} | {_n(x.get('push_gap_ms', math.nan), '.0f')} | "
                            f"<= {_n(x.get('loop_lag_p99_ms', math.nan), '.0f')} | "
                            f"{x['delivery']}{'' if x['complete'] else ' (timed out)'} |")
        return head + f"""Containers print lines of ~100 bytes at a steady rate for {r['seconds']:g} s (awk paced by
`/proc/uptime`); the collector runs with default settings (metrics on, for the loop lag) and pushes to
a Loki receiver in its own process (`bench/receiver_proc.py --fast`: snappy + protobuf decoded in C, no validation, ~2 µs per entry, so it keeps up at 50k lines/s),
which stamps each push's arrival. Latency per line = arrival at the receiver - Docker's timestamp of
the line: Docker's write path, inotify wake-up, reading, the batch wait, encoding and the HTTP push.
50k lines/s is 50 containers at 1k lines/s each; the achieved rate is lines / (last - first Docker
timestamp). Everything shares 2 CPUs: dockerd, the writers, the collector and the receiver (unpinned).
CPU columns are shares of one core over the scenario; "receiver ms/push" is the receiver's handler
time per push, "ms between pushes" the time from one push's answer to the next push's arrival.

{chr(10).join(rows)}
{_push_ceilings(r)}
![Latency CDF](bench-latency-cdf.png)
"""
    if section == "idle":
        keys = [k for k in r if k != "idle_s"]
        return head + (f"{r['containers']} json-file containers running `sleep`, started before the collector; \"live\" is the first "
                       "metrics scrape where `collector_sources{mode=\"file\"}` counts them all; then "
                       f"{r['idle_s']:g} s of nothing happening (`bench/idle.py`).\n\n"
                       "| " + " | ".join(keys) + " |\n|" + "---:|" * len(keys) + "\n| "
                       + " | ".join(str(r[k]) for k in keys) + " |\n")
    if section == "churn":
        b, a = r["before"], r["after"]
        return head + f"""{r['waves']} waves of {r['containers'] // r['waves']} containers (json-file), each printing
{r['lines_per_container']:,} lines of ~100 bytes and then sleeping; each wave is started (`docker run`
in parallel) while the previous one is removed with `docker rm -f`, and the next wave waits until this
one's lines have all arrived. The collector's VmRSS, open FDs and asyncio tasks are sampled every 0.5 s.

| | VmRSS MiB | open FDs | asyncio tasks |
|---|---:|---:|---:|
| before the first wave | {b['rss_mib']:.0f} | {b['fds']} | {b['tasks']} |
| peak | {r['peak_rss_mib']:.0f} | {max(r['series']['fds'])} | {max(r['series']['tasks'])} |
| after the last `docker rm -f` (+{a['after_s']:g} s) | {a['rss_mib']:.0f} | {a['fds']} | {a['tasks']} |

Open FDs by kind with the last wave running: {_kinds(r.get('fd_kinds_last_wave'))}; 3 s after its
`docker rm -f`: {_kinds(r.get('fd_kinds_3s_after_removal'))}. "after" is the first sample with FDs and
tasks back to their count before the first wave (or the last sample, 40 s on).

Delivery of {r['containers'] * r['lines_per_container']:,} lines: {r['delivery']['text']}
({r['incomplete_waves']} wave(s) timed out waiting).

![RSS over time](bench-rss.png)
"""
    if section == "outage":
        return head + f"""The collector (defaults) pushes to a local port where nothing listens (connection refused) while
{r['containers']} containers write {r['rate_per_container']:,} lines/s each (~100 bytes) for
{r['outage_s']:.0f} s; then the receiver starts on that port (Loki is back) and the collector catches up.
VmRSS sampled every 0.5 s.

- peak RSS: {r['peak_rss_mib']:.0f} MiB ({r['peak_rss_during_outage_mib']:.0f} MiB while Loki was unreachable,
  the rest while catching up)
- all {r['lines']:,} lines arrived {r['recovered_after_s']:.1f} s after Loki came back (includes the retry backoff,
  `loki.max_backoff` 30 s by default): {r['delivery']['text']}
""" + ("" if "churn" in sections else "\n![RSS over time](bench-rss.png)\n")
    if section == "flame":
        rows = "\n".join(f"| {item['share'] * 100:.1f} % | `{item['frame']}` |" for item in r["top"])
        return head + f"""One more protobuf backlog run under `py-spy record -r 200` (sampling, no code changes):
[flame.svg]({r['svg']}) (open it in a browser: it zooms). A second run's {r['samples']} samples,
by the function on top of the stack (own time, with its line):

| share | function (file:line) |
|---:|---|
{rows}
"""
    raise ValueError(section)


TITLES = {"backlog": "Backlog: CPU and RSS", "lag": "Event loop lag in the backlog run",
          "latency": "Latency at 1k, 10k and 50k lines/s", "idle": "Idle containers",
          "churn": "Container churn", "outage": "Loki unreachable", "flame": "Where the CPU goes (flame graph)"}


def write_doc(data: dict[str, Any]) -> None:
    machine = machine_info()
    rows = summary_rows(data)
    table = ["| figure | measured | target | |", "|---|---:|---|---|"]
    table += [f"| {figure} | {value} | {target} | {_verdict(ok)} |" for figure, value, target, ok in rows]
    runs: dict[tuple[str, str], list[str]] = {}
    for entry in data.values():
        runs.setdefault((entry["commit"], entry["command"]), []).append(entry["date"])
    took_min = sum(e["took_s"] for e in data.values()) / 60
    text = f"""# Benchmarks

The performance scenarios, measured against the code of one commit and rewritten by one command:

    python bench/report.py            # everything, ~9 min on this machine
    python bench/report.py --quick    # small sizes, to check the script
    python bench/report.py --only latency   # rerun one section: {', '.join(SECTIONS)}

- machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory']} RAM, Linux {machine['kernel']}, Python {machine['python']}
- measured: {'; '.join(f'`{cmd}` at {commit}, {min(dates)}' for (commit, cmd), dates in runs.items())}; the sections took {took_min:.0f} min
- the machine is shared (other jobs run on it): CPU figures can move by 10-30 % between runs; compare runs of one machine.
- raw figures: [benchmarks.json](benchmarks.json); more end-to-end detail: [benchmarks-e2e.md](benchmarks-e2e.md) (`python bench/e2e.py`).

## Summary

{chr(10).join(table)}

Against Fluent Bit, measured in one run on the same file: [side by side](#side-by-side-with-fluent-bit-one-run)
(`bench/vs_fluentbit.py`). Absolute figures move between runs and days; only a ratio from one run means much.

"""
    for section in SECTIONS:
        if section in data:
            text += f"## {TITLES[section]}\n\n{detail(section, data[section], set(data))}\n"
    # What other bench scripts wrote below the mark (vs_fluentbit.py, spool.py) stays.
    old = open(DOC_PATH).read() if os.path.exists(DOC_PATH) else ""
    text += old[old.index(KEPT_MARK):] if KEPT_MARK in old else KEPT_MARK + "\n"
    with open(DOC_PATH, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS)}; the others are kept from "
                             f"{os.path.relpath(DATA_PATH, REPO)}")
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is needed")
    sizes = QUICK if args.quick else Sizes()
    data: dict[str, Any] = {}
    if args.only and os.path.exists(DATA_PATH):
        with open(DATA_PATH) as handle:
            data = json.load(handle)
    command = "python bench/report.py" + (" --quick" if args.quick else "") + "".join(f" --only {s}" for s in args.only or ())
    began = time.monotonic()
    print(f"load average before: {loadavg()}", flush=True)
    engine = start_engine()
    try:
        for section in args.only or SECTIONS:
            print(f"{section} ...", flush=True)
            started = time.monotonic()
            result = RUNNERS[section](engine, sizes)
            data[section] = {"result": result, "sizes": asdict(sizes), "quick": args.quick, "command": command,
                             "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_revision(),
                             "took_s": time.monotonic() - started, "load_after": loadavg()}
            print(f"{section} done in {time.monotonic() - started:.0f} s", flush=True)
            with open(DATA_PATH, "w") as handle:  # after each section, so a later failure keeps it
                json.dump(data, handle, indent=1)
    finally:
        engine.stop()
    plots = plot_all(data)
    write_doc(data)
    for figure, value, target, ok in summary_rows(data):
        print(f"{figure}: {value} (target {target}) {_verdict(ok)}")
    print(f"wrote {os.path.relpath(DOC_PATH, REPO)}, {', '.join(plots)} in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
