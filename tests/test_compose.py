"""Step 9: the compose stack's files. docker-compose validates the compose file, promtool the Prometheus
config and the dashboard's queries; the dashboard names only metrics a running collector exports.
Loki's and Grafana's own parsing of their files cannot run here (no binaries): see docs/testing.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from typing import Any

import aiohttp
import pytest
import yaml
from dockerengine import DockerEngine
from harness import REPO, CollectorProcess
from loki_receiver import LokiReceiver
from prometheus_client.parser import text_string_to_metric_families

COMPOSE = os.path.join(REPO, "docker-compose.yml")
DEPLOY = os.path.join(REPO, "deploy")
DASHBOARD = os.path.join(DEPLOY, "grafana", "dashboards", "collector.json")
PROVISIONING = os.path.join(DEPLOY, "grafana", "provisioning")
PROMETHEUS = os.path.join(DEPLOY, "prometheus", "prometheus.yml")
# Grafana's variables, replaced by what they stand for so promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$container": ".+", "$host": ".+"}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is missing (apt-get install {package})")
    return path


def load_yaml(path: str) -> Any:
    with open(path) as file:
        return yaml.safe_load(file)


def services() -> dict[str, dict[str, Any]]:
    return load_yaml(COMPOSE)["services"]


def dashboard() -> dict[str, Any]:
    with open(DASHBOARD) as file:
        return json.load(file)


def queries(datasource_type: str) -> list[str]:
    board = dashboard()
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])
            if (target.get("datasource") or panel["datasource"])["type"] == datasource_type]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bcollector_[a-z0-9_]+", expr))


def test_docker_compose_validates_the_file() -> None:
    result = subprocess.run([tool("docker-compose", "docker-compose"), "-f", COMPOSE, "config", "-q"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_image_is_pinned_ports_are_local_and_mounted_files_exist() -> None:
    for name, service in services().items():
        image = service.get("image", "")
        assert re.search(r":v?[0-9]+\.[0-9]+\.[0-9]+$", image), f"{name}: image {image!r} is not pinned to a version"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: port {port} is published beyond localhost"
        assert "deploy" not in service, f"{name}: no Swarm deploy section (it breaks build, per-node proxies and localhost ports)"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert os.path.exists(os.path.join(REPO, source)), f"{name} mounts {source}, which is not in the repo"
    with open(os.path.join(REPO, "Dockerfile")) as file:
        base = re.search(r"^ARG BASE_IMAGE=(\S+)$", file.read(), re.M)
    assert base and re.fullmatch(r"debian:bookworm-[0-9]{8}-slim", base.group(1)), "the default base is a dated Debian bookworm slim"


def test_the_collector_service_is_locked_down_and_reaches_docker_through_the_proxy() -> None:
    stack = services()
    collector = stack["collector"]
    assert collector["cap_drop"] == ["ALL"] and "cap_add" not in collector
    assert collector["read_only"] is True
    assert "no-new-privileges:true" in collector["security_opt"]
    assert collector["environment"]["DOCKER_HOST"] == "tcp://docker-proxy:2375"
    assert "/var/lib/docker/containers:/var/lib/docker/containers:ro" in collector["volumes"]
    assert "collector-positions:/var/lib/collector" in collector["volumes"]
    assert not any("docker.sock" in volume for volume in collector["volumes"]), "only the proxy sees Docker's socket"
    proxy = stack["docker-proxy"]
    assert "./deploy/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in proxy["volumes"]
    assert "ports" not in proxy, "the proxy is reachable from the compose network only"
    loki = stack["loki"]
    assert "-config.file=/etc/loki/loki.yaml" in loki["command"]
    assert "./deploy/loki/loki.yaml:/etc/loki/loki.yaml:ro" in loki["volumes"]


def test_prometheus_config_passes_promtool_and_scrapes_the_collector() -> None:
    result = subprocess.run([tool("promtool", "prometheus"), "check", "config", PROMETHEUS], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    targets = [target for job in load_yaml(PROMETHEUS)["scrape_configs"] for static in job["static_configs"] for target in static["targets"]]
    listen_port = load_yaml(os.path.join(REPO, "config.yaml"))["metrics"]["listen"].rpartition(":")[2]
    assert f"collector:{listen_port}" in targets
    assert "collector" in services() and "prometheus" in services()


def test_grafana_provisioning_points_at_the_stack_and_the_dashboard_queries_parse(tmp_path) -> None:
    datasources = load_yaml(os.path.join(PROVISIONING, "datasources", "datasources.yaml"))["datasources"]
    by_uid = {source["uid"]: source for source in datasources}
    assert by_uid["loki"]["type"] == "loki" and by_uid["loki"]["url"] == "http://loki:3100"
    assert by_uid["prometheus"]["type"] == "prometheus" and by_uid["prometheus"]["url"] == "http://prometheus:9090"
    providers = load_yaml(os.path.join(PROVISIONING, "dashboards", "dashboards.yaml"))["providers"]
    grafana = services()["grafana"]
    assert f"./deploy/grafana/dashboards:{providers[0]['options']['path']}:ro" in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]

    board = dashboard()
    used = {panel["datasource"]["uid"] for panel in board["panels"]} | {var["datasource"]["uid"] for var in board["templating"]["list"]}
    assert used <= set(by_uid)
    assert any(panel["type"] == "logs" and "$container" in panel["targets"][0]["expr"] for panel in board["panels"])
    assert "container" in {var["name"] for var in board["templating"]["list"]}

    # promtool parses every PromQL query, as recording rules.
    exprs = queries("prometheus")
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [expr.replace(variable, value) for expr in exprs]
    assert not [expr for expr in exprs if "$" in expr], "a Grafana variable promtool cannot parse is left"
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(yaml.safe_dump(rules))
    result = subprocess.run([tool("promtool", "prometheus"), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Every sample name /metrics can carry (families with no samples yet included), and the labels seen per name."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
        for sample in family.samples:
            names.add(sample.name)
            labels.setdefault(sample.name, set()).update(sample.labels)
    return names, labels


@pytest.mark.docker
async def test_the_dashboard_names_only_what_a_running_collector_exports(containers: DockerEngine) -> None:
    async with LokiReceiver() as receiver:
        proc = await CollectorProcess(containers, env={
            "COLLECTOR_LOKI__URL": receiver.push_url, "COLLECTOR_METRICS__LISTEN": "127.0.0.1:0",
        }).start()
        try:
            name = f"dash-{time.monotonic_ns()}"
            containers.run("seq 1 20; sleep 300", name=name)
            await receiver.wait_for(lambda: len(receiver.lines({"container_name": name})) == 20)
            async with aiohttp.ClientSession() as session, session.get(f"{proc.metrics_url}/metrics") as response:
                assert response.status == 200
                text = await response.text()
        finally:
            assert await proc.stop() == 0
        stream_labels = {label for entry in receiver.entries({"container_name": name}) for label in entry.labels}

    names, labels = exported_names(text)
    used = set().union(*(metric_names(expr) for expr in queries("prometheus")))
    assert used - names == set(), "the dashboard names metrics /metrics does not export"
    # What the issue asks the dashboard to show.
    assert {"collector_lines_read_total", "collector_end_to_end_lag_seconds_bucket", "collector_push_requests_total",
            "collector_push_retries_total", "collector_queue_bytes", "collector_asyncio_tasks", "collector_open_fds",
            "collector_rss_bytes"} <= used
    # Labels it groups or filters by exist on its metrics (where a sample shows them).
    for expr in queries("prometheus"):
        grouped = set().union(*(set(re.split(r"\s*,\s*", group.strip())) for group in re.findall(r"by \(([^)]*)\)", expr)),
                              re.findall(r"([a-z_]+)\s*[!=]~?\s*\"", expr))
        grouped -= {"le", "instance", "job"}
        seen = set().union(*(labels.get(metric, set()) for metric in metric_names(expr)))
        if seen:
            assert grouped <= seen, f"{expr}: groups by {grouped - seen}, which its metrics do not carry"
    # The Loki side: the labels its selectors and variables use are on the streams the collector pushes.
    loki_text = " ".join(queries("loki") + [var["query"] for var in dashboard()["templating"]["list"]])
    loki_labels = set(re.findall(r"([a-z_]+)\s*=~", loki_text)) | set(re.findall(r"label_values\((?:\{[^}]*\},\s*)?([a-z_]+)\)", loki_text))
    assert loki_labels and loki_labels <= stream_labels, f"{loki_labels - stream_labels} are not labels of the pushed streams"
