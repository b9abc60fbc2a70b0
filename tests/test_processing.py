"""Per-line processing through real containers: redaction, drop rules (counted, positions move on),
fields as structured metadata, timestamps from the line, and a per-container rate limit."""

from __future__ import annotations

import time

import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from loki_receiver import LokiReceiver
from polling import wait_until
from scrape import get, scrape, value

pytestmark = pytest.mark.docker

CONFIG = """
loki:
  url: {url}
processing:
  drop: ["GET /healthz"]
  redact:
    - regex: 'password=\\S+'
      replacement: 'password=***'
  fields: [level, trace_id]
"""


async def test_redact_drop_fields_timestamps_and_rate_limit(containers: DockerEngine, tmp_path) -> None:
    tag = time.monotonic_ns()
    app, logfmt, stamped, noisy, quiet = (f"proc-{kind}-{tag}" for kind in ("app", "logfmt", "stamped", "noisy", "quiet"))
    async with LokiReceiver() as receiver:
        config = tmp_path / "config.yaml"
        config.write_text(CONFIG.format(url=receiver.push_url))
        proc = await CollectorProcess(containers, config_path=str(config), env={"COLLECTOR_METRICS__LISTEN": "127.0.0.1:0"}).start()
        try:
            containers.run("echo 'login password=hunter2 ok'; echo 'GET /healthz 200'; "
                           "echo '{\"level\":\"error\",\"trace_id\":\"t-1\",\"msg\":\"boom\"}'; echo 'GET /healthz 200'; sleep 300",
                           "--label", "collector.parse=json", name=app)
            containers.run("echo 'level=warn trace_id=t-2 msg=\"slow\"'; sleep 300", "--label", "collector.parse=logfmt", name=logfmt)
            # A minute ago (Loki refuses entries older than a week), with a fraction Docker's time lacks.
            stamp_s = int(time.time()) - 60
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp_s)) + ".5Z"
            containers.run(f"echo '{stamp} started'; echo 'no stamp'; sleep 300",
                           "--label", "collector.timestamp_format=rfc3339", name=stamped)
            containers.run("seq 1 5000; sleep 300", "--label", "collector.rate_limit=100", name=noisy)
            containers.run("seq 1 50; sleep 300", "--label", "collector.rate_limit=100", name=quiet)

            await receiver.wait_for(lambda: len(receiver.lines({"container_name": app})) == 2)
            first, second = receiver.entries({"container_name": app})
            assert first.line == "login password=*** ok"
            assert not any("hunter2" in e.line for e in receiver.received)
            assert second.metadata.get("level") == "error" and second.metadata.get("trace_id") == "t-1"
            assert "level" not in first.metadata
            await receiver.wait_for(lambda: len(receiver.lines({"container_name": logfmt})) == 1)
            assert receiver.entries({"container_name": logfmt})[0].metadata.get("level") == "warn"
            await receiver.wait_for(lambda: len(receiver.lines({"container_name": stamped})) == 2)
            started, plain = receiver.entries({"container_name": stamped})
            assert started.ts_ns == stamp_s * 1_000_000_000 + 500_000_000
            assert plain.ts_ns > started.ts_ns + 30 * 1_000_000_000  # Docker's time: now

            await receiver.wait_for(lambda: len(receiver.lines({"container_name": quiet})) == 50)  # within its burst

            async def noisy_read() -> bool:
                return value(await scrape(proc.metrics_url), "collector_lines_read_total", source="file", container_name=noisy) == 5000

            await wait_until(noisy_read, 60, what="the noisy container read to its end")
            samples = await scrape(proc.metrics_url)
            limited = value(samples, "collector_lines_rate_limited_total")
            delivered = len(receiver.lines({"container_name": noisy}))
            assert limited and delivered + limited == 5000 and delivered < 1000
            assert value(samples, "collector_lines_dropped_total", rule="drop[0]") == 2
            assert receiver.lines({"container_name": app}).count("GET /healthz 200") == 0
            assert value(samples, "collector_line_timestamp_fallbacks_total") == 1

            # Dropped lines still move the position: the app's file is acknowledged to its end.
            async def acknowledged_to_the_end() -> bool:
                row = next(r for r in (await get(f"{proc.metrics_url}/status"))[1]["containers"] if r["name"] == app)
                return row.get("acked_offset") == row.get("size") and row["unacked_bytes"] == 0

            await wait_until(acknowledged_to_the_end, 30, what="the dropped lines acknowledged too")
        finally:
            assert await proc.stop() == 0


async def test_field_labels_and_the_cardinality_guard(containers: DockerEngine, tmp_path) -> None:
    tag = time.monotonic_ns()
    app = f"fl-app-{tag}"
    async with LokiReceiver() as receiver:
        config = tmp_path / "config.yaml"
        config.write_text(f"loki:\n  url: {receiver.push_url}\nlabels:\n  max_active_streams: 10\n"
                          "processing:\n  parse: json\n  field_labels: [level]\n  fields: [trace_id]\n")
        proc = await CollectorProcess(containers, config_path=str(config), env={"COLLECTOR_METRICS__LISTEN": "127.0.0.1:0"}).start()
        try:
            containers.run("echo '{\"level\":\"info\",\"trace_id\":\"a\"}'; echo '{\"level\":\"error\"}'; echo plain; sleep 300",
                           name=app)
            await receiver.wait_for(lambda: len(receiver.lines({"container_name": app})) == 3)
            by_line = {e.line: e for e in receiver.entries({"container_name": app})}
            assert by_line['{"level":"info","trace_id":"a"}'].labels["level"] == "info"
            assert by_line['{"level":"info","trace_id":"a"}'].metadata.get("trace_id") == "a"
            assert "level" not in by_line['{"level":"info","trace_id":"a"}'].metadata
            assert by_line['{"level":"error"}'].labels["level"] == "error" and "level" not in by_line["plain"].labels

            # `docker compose run` containers: a new container_name each; only 10 label sets may be active.
            oneoff = [f"fl-run-{tag}-{i}" for i in range(12)]
            for name in oneoff:
                containers.run("echo job; sleep 300", "--label", "com.docker.compose.oneoff=True",
                               "--label", "com.docker.compose.project=shop", "--label", "com.docker.compose.service=job", name=name)
            await receiver.wait_for(lambda: len(receiver.lines({"compose_service": "job"})) == 12)
            label_sets = {tuple(sorted((k, v) for k, v in e.labels.items() if k != "stream")) for e in receiver.received}
            assert len(label_sets) <= 10, label_sets  # the app's three and the jobs': never more than the limit
            assert len(receiver.lines({"compose_service": "job", "container_name": "_other"})) >= 1
            samples = await scrape(proc.metrics_url)
            assert value(samples, "collector_streams_folded_total") >= 1
            assert any("foldable label values become _other" in line for line in proc.stderr)
        finally:
            assert await proc.stop() == 0
