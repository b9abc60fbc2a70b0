"""Selection, labels from metadata, mappings, relabel rules, per-container settings and rename,
through real containers and the test receiver."""

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
labels:
  static: {{env: test}}
  metadata: [image]
  docker_labels: {{com.example.team: team}}
  attrs: {{region: region}}
selection:
  exclude:
    names: ["*-skip"]
relabel:
  - source_labels: [__meta_docker_container_label_com_example_tier]
    target_label: tier
  - action: drop
    source_labels: [__meta_docker_container_label_com_example_tier]
    regex: secret
  - action: labeldrop
    regex: compose_.*
"""


async def test_selection_labels_rules_and_container_settings(containers: DockerEngine, tmp_path) -> None:
    tag = time.monotonic_ns()
    names = {key: f"lbl-{key}-{tag}" for key in ("main", "off", "secret", "local", "forced")}
    skipped_by_name = f"lbl-{tag}-skip"
    async with LokiReceiver() as receiver:
        config = tmp_path / "config.yaml"
        config.write_text(CONFIG.format(url=receiver.push_url))
        proc = await CollectorProcess(containers, config_path=str(config), env={"COLLECTOR_METRICS__LISTEN": "127.0.0.1:0"}).start()
        try:
            containers.run("echo main; sleep 300", "--label", "com.example.team=pay", "--label", "com.example.tier=front",
                           "--label", "region=eu", "--log-opt", "labels=region", "--env", "BUILD=42", "--log-opt", "env=BUILD",
                           name=names["main"])
            containers.run("echo off; sleep 300", "--label", "collector.enable=false", name=names["off"])
            containers.run("echo hidden; sleep 300", "--label", "com.example.tier=secret", name=names["secret"])
            containers.run("echo skipped; sleep 300", name=skipped_by_name)
            containers.run("echo streamed; sleep 300", "--log-driver", "local", "--label", "collector.label.owner=ann",
                           name=names["local"])
            containers.run("echo forced; sleep 300", "--label", "collector.mode=stream", name=names["forced"])

            await receiver.wait_for(lambda: receiver.lines({"container_name": names["main"]}) == ["main"])
            await receiver.wait_for(lambda: receiver.lines({"container_name": names["local"]}) == ["streamed"])
            await receiver.wait_for(lambda: receiver.lines({"container_name": names["forced"]}) == ["forced"])
            host = receiver.entries({"container_name": names["main"]})[0].labels["host"]
            image = containers.image
            main = receiver.entries({"container_name": names["main"]})[0]
            assert main.labels == {"container_name": names["main"], "host": host, "env": "test", "image": image, "team": "pay",
                                   "region": "eu", "tier": "front", "stream": "stdout",
                                   "service_name": names["main"]}  # added by Loki 3 (discover_service_name)
            assert main.metadata.get("BUILD") == "42" and "region" not in main.metadata
            local = receiver.entries({"container_name": names["local"]})[0]
            assert local.labels == {"container_name": names["local"], "host": host, "env": "test", "image": image,
                                    "owner": "ann", "stream": "stdout", "service_name": names["local"]}

            async def rows() -> dict[str, dict]:
                return {row["name"]: row for row in (await get(f"{proc.metrics_url}/status"))[1]["containers"]}

            async def all_routed() -> bool:
                now = await rows()
                return all(name in now and now[name]["mode"] not in ("resolving", "new") for name in [*names.values(), skipped_by_name])

            await wait_until(all_routed, 60, what="every container routed")
            status = await rows()
            assert (status[names["off"]]["mode"], status[names["off"]]["reason"]) == ("skipped", "excluded by label collector.enable=false")
            assert status[skipped_by_name]["reason"] == "excluded by selection.exclude.names[0] '*-skip'"
            assert status[names["secret"]]["reason"] == "excluded by relabel[1] (drop)"
            assert (status[names["forced"]]["mode"], status[names["forced"]]["reason"]) == ("stream", "label collector.mode=stream")
            # Excluded containers cost nothing: one inotify watch (the main one's directory), two streams.
            samples = await scrape(proc.metrics_url)
            assert value(samples, "collector_sources", mode="file") == 1
            assert value(samples, "collector_sources", mode="stream") == 2
            assert value(samples, "collector_inotify_watches") == 1
            assert value(samples, "collector_log_streams_open") == 2
            assert value(samples, "collector_containers_skipped_total", reason="excluded") == 3
            for name in (names["off"], names["secret"], skipped_by_name):
                assert receiver.lines({"container_name": name}) == []
            assert not any(e.line == "hidden" for e in receiver.received)
        finally:
            assert await proc.stop() == 0


async def test_rename_changes_the_label_at_a_line_boundary(containers: DockerEngine) -> None:
    tag = time.monotonic_ns()
    old, new = f"before-{tag}", f"after-{tag}"
    async with LokiReceiver() as receiver:
        proc = await CollectorProcess(containers, env={"COLLECTOR_LOKI__URL": receiver.push_url}).start()
        try:
            containers.run("i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo $i; [ $((i % 50)) = 0 ] && sleep 0.05; done; sleep 300",
                           name=old)
            await receiver.wait_for(lambda: len(receiver.lines({"container_name": old})) >= 300)
            containers.docker("rename", old, new)
            await receiver.wait_for(lambda: len(receiver.lines({"container_name": old})) + len(receiver.lines({"container_name": new})) >= 3000, 120)
            before = [int(line) for line in receiver.lines({"container_name": old})]
            after = [int(line) for line in receiver.lines({"container_name": new})]
            assert after, "no line carried the new name"
            assert sorted(before + after) == list(range(1, 3001))  # none lost, none twice
            assert max(before) < min(after)  # the label changed once, between two lines
        finally:
            assert await proc.stop() == 0


async def test_tenants_are_isolated_and_refused_outside_the_allowlist(containers: DockerEngine, tmp_path) -> None:
    tag = time.monotonic_ns()
    a, b, base, evil = (f"tenant-{kind}-{tag}" for kind in ("a", "b", "base", "evil"))
    async with LokiReceiver(require_tenant=True) as receiver:
        config = tmp_path / "config.yaml"
        config.write_text(f"loki:\n  url: {receiver.push_url}\n  tenant: base\n  tenants_allowed: [team-a, team-b]\n"
                          "  min_backoff: 100ms\n  max_backoff: 500ms\n")
        proc = await CollectorProcess(containers, config_path=str(config), env={"COLLECTOR_METRICS__LISTEN": "127.0.0.1:0"}).start()
        try:
            receiver.refused_tenants.add("team-a")  # team-a's pushes fail (401) for a while
            containers.run("seq 1 200; sleep 300", "--label", "collector.tenant=team-a", name=a)
            containers.run("seq 1 200; sleep 300", "--label", "collector.tenant=team-b", name=b)
            containers.run("seq 1 200; sleep 300", name=base)
            containers.run("seq 1 200; sleep 300", "--label", "collector.tenant=evil", name=evil)
            expected = [str(i) for i in range(1, 201)]
            # While team-a is refused, the other tenants keep receiving, each only under its own tenant.
            await receiver.wait_for(lambda: receiver.lines({"container_name": b}, tenant="team-b") == expected)
            await receiver.wait_for(lambda: receiver.lines({"container_name": base}, tenant="base") == expected)
            assert receiver.lines({"container_name": a}) == [] and receiver.counters["unauthorized"] >= 1

            async def ready_names_the_tenant() -> bool:
                problems = (await get(f"{proc.metrics_url}/ready"))[1]["problems"]
                return any(problem.startswith("Tenant team-a:") for problem in problems)

            await wait_until(ready_names_the_tenant, 30, what="/ready naming the refused tenant")
            receiver.refused_tenants.clear()
            await receiver.wait_for(lambda: receiver.lines({"container_name": a}, tenant="team-a") == expected)
            assert len(receiver.lines({"container_name": b})) == 200 and len(receiver.lines({"container_name": base})) == 200

            # A tenant outside the allowlist: not collected at all, never sent to another tenant.
            status = {row["name"]: row for row in (await get(f"{proc.metrics_url}/status"))[1]["containers"]}
            assert status[evil]["reason"] == "excluded by tenant 'evil' not in loki.tenants_allowed"
            assert receiver.lines({"container_name": evil}) == []
            samples = await scrape(proc.metrics_url)
            assert value(samples, "collector_containers_skipped_total", reason="tenant_refused") == 1
            assert any("tenant 'evil' not in loki.tenants_allowed" in line for line in proc.stderr)
        finally:
            assert await proc.stop() == 0
