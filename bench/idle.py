#!/usr/bin/env python
"""500 idle containers: time until every source is live, then RSS, FDs, tasks, inotify watches and
CPU over 60 s of nothing happening.

    python bench/idle.py                      # 500 containers, 60 s; appends to docs/benchmarks-cpu.md

bench/report.py runs the same measurement (measure()) for docs/benchmarks.md.
    python bench/idle.py --containers 100 --idle 20 --no-doc

The containers (json-file, `sleep`) are started before the collector; the collector then starts
with metrics on, and "live" is the first scrape where collector_sources{mode="file"} counts them all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "bench"))

from cpu import DOC_PATH, proc_cpu, proc_rss_mib, start_receiver  # noqa: E402
from dockerengine import DockerEngine, start_engine  # noqa: E402
from e2e import free_port  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def scrape(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return samples.get(key, 0.0)


def measure(engine: DockerEngine, containers: int, idle_s: float) -> dict:
    """Start `containers` idle containers, then the collector; its figures once all are live and
    after `idle_s` seconds of nothing happening. Removes the containers and its temp dir."""
    workdir = tempfile.mkdtemp(prefix="idle-bench-")
    tag = time.monotonic_ns()
    names = [f"idle-{tag}-{i}" for i in range(containers)]
    receiver, urls = start_receiver()
    collector = None
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: engine.run("echo started; sleep 100000", name=name), names))
        listen = f"127.0.0.1:{free_port()}"
        environment = {key: value for key, value in os.environ.items() if not key.startswith("COLLECTOR_")}
        environment.update({
            "DOCKER_HOST": engine.host, "COLLECTOR_DOCKER__CONTAINERS_DIR": engine.containers_dir,
            "COLLECTOR_LOKI__URL": urls["push_url"], "COLLECTOR_METRICS__LISTEN": listen,
            "COLLECTOR_POSITIONS__PATH": os.path.join(workdir, "positions.json"), "COLLECTOR_LOG__LEVEL": "warning",
            "PYTHONPATH": REPO,
        })
        url = f"http://{listen}"
        started = time.monotonic()
        collector = subprocess.Popen([sys.executable, "-m", "collector"], env=environment, cwd=REPO, stderr=subprocess.DEVNULL)
        live_after = None
        while time.monotonic() - started < 120:
            try:
                if sample(scrape(url), "collector_sources", mode="file") >= containers:
                    live_after = time.monotonic() - started
                    break
            except OSError:
                pass
            time.sleep(0.1)
        time.sleep(5)  # let the first lines be delivered and checkpointed
        cpu_before, at = proc_cpu(collector.pid), time.monotonic()
        time.sleep(idle_s)
        idle_cpu = (proc_cpu(collector.pid) - cpu_before) / (time.monotonic() - at)
        samples = scrape(url)
        rss = proc_rss_mib(collector.pid)
        return {
            "containers": containers,
            "all live after s": round(live_after, 2) if live_after is not None else None,
            "idle CPU % of a core": round(idle_cpu * 100, 3),
            "RSS MiB": round(rss, 1),
            "open FDs": int(sample(samples, "collector_open_fds")),
            "asyncio tasks": int(sample(samples, "collector_asyncio_tasks")),
            "inotify watches": int(sample(samples, "collector_inotify_watches")),
        }
    finally:
        if collector is not None:
            collector.send_signal(signal.SIGTERM)
            collector.wait(60)
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: engine.docker("rm", "-f", name, check=False), names))
        removed = set(names)
        engine._names[:] = [name for name in engine._names if name not in removed]
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=500)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    engine = start_engine()
    try:
        result = measure(engine, args.containers, args.idle)
    finally:
        engine.stop()
    print(result)
    if not args.no_doc:
        with open(DOC_PATH, "a") as handle:
            handle.write(f"\n## {args.containers} idle containers\n\nFrom `python bench/idle.py` ({args.idle:g} s idle):\n\n"
                         "| " + " | ".join(result) + " |\n|" + "---:|" * len(result) + "\n| "
                         + " | ".join(str(v) for v in result.values()) + " |\n\n"
                         "Targets: all live within 5 s, idle CPU < 1 % of a core, RSS <= 80 MiB.\n")


if __name__ == "__main__":
    main()
