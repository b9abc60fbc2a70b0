"""Pure: Engine API inspect/event JSON -> ContainerInfo, and where its json-file log is seen from here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from collector.transform.saferegex import PatternError, compile_untrusted

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


@dataclass(slots=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    log_driver: str = "json-file"
    log_path: str = ""  # as the Docker host sees it; "" before the first start
    tty: bool = False
    running: bool = False
    started_at: str = ""
    # What Docker's log drivers attach to each record as `attrs` (`--log-opt labels=... env=...`).
    log_attrs: dict[str, str] = field(default_factory=dict)

    @property
    def compose_project(self) -> str:
        return self.labels.get(COMPOSE_PROJECT, "")

    @property
    def compose_service(self) -> str:
        return self.labels.get(COMPOSE_SERVICE, "")


def log_attributes(log_options: dict[str, str], labels: dict[str, str], env: list[str]) -> dict[str, str]:
    """The `attrs` Docker adds to each record, as its logger.Info.ExtraAttributes computes them:
    the labels and environment variables named by the `labels`/`env` options or matched by the
    `labels-regex`/`env-regex` options."""
    env_values = dict(item.split("=", 1) for item in env if "=" in item)
    attrs: dict[str, str] = {}
    for option, source in (("labels", labels), ("env", env_values)):
        for key in filter(None, (part.strip() for part in log_options.get(option, "").split(","))):
            if key in source:
                attrs[key] = source[key]
        pattern = log_options.get(f"{option}-regex", "")
        if pattern:
            try:
                # Docker checks these with Go's regexp, RE2's syntax; RE2 also cannot backtrack.
                compiled = compile_untrusted(pattern)
            except PatternError:
                continue  # Docker refuses such a container at create; nothing to add
            attrs.update({key: value for key, value in source.items() if compiled.search(key)})
    return attrs


def from_inspect(data: dict[str, Any]) -> ContainerInfo:
    config = data.get("Config") or {}
    host_config = data.get("HostConfig") or {}
    state = data.get("State") or {}
    log_config = host_config.get("LogConfig") or {}
    labels = dict(config.get("Labels") or {})
    return ContainerInfo(
        id=data["Id"],
        name=(data.get("Name") or "").lstrip("/"),
        image=config.get("Image") or data.get("Image", ""),
        labels=labels,
        log_attrs=log_attributes(log_config.get("Config") or {}, labels, config.get("Env") or []),
        log_driver=log_config.get("Type", "json-file"),
        log_path=data.get("LogPath") or "",
        tty=bool(config.get("Tty")),
        running=bool(state.get("Running")),
        started_at=state.get("StartedAt") or "",
    )


def from_event(event: dict[str, Any]) -> ContainerInfo:
    """What an event says of its container: enough to read a `--rm` container whose inspect came too late."""
    actor = event.get("Actor") or {}
    attributes = dict(actor.get("Attributes") or {})
    name = attributes.pop("name", "")
    image = attributes.pop("image", event.get("from", ""))
    cid = actor.get("ID") or event.get("id", "")
    # Everything else in Attributes is a container label (plus exitCode on die).
    attributes.pop("exitCode", None)
    return ContainerInfo(id=cid, name=name, image=image, labels=attributes, running=True)


def local_log_path(containers_dir: str, info: ContainerInfo) -> str:
    """Map Docker's host path onto where this process sees the containers directory.

    LogPath is <data-root>/containers/<id>/<id>-json.log on the host; the collector may see that
    directory elsewhere (a mount, a non-default data-root, rootless Docker).
    """
    if info.log_path:
        container_dir, filename = os.path.split(info.log_path)
        return os.path.join(containers_dir, os.path.basename(container_dir), filename)
    return os.path.join(containers_dir, info.id, f"{info.id}-json.log")
