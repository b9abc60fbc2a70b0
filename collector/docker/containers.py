"""Pure: Engine API inspect/event JSON -> ContainerInfo, and where its json-file log is seen from here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

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

    @property
    def compose_project(self) -> str:
        return self.labels.get(COMPOSE_PROJECT, "")

    @property
    def compose_service(self) -> str:
        return self.labels.get(COMPOSE_SERVICE, "")


def from_inspect(data: dict[str, Any]) -> ContainerInfo:
    config = data.get("Config") or {}
    host_config = data.get("HostConfig") or {}
    state = data.get("State") or {}
    return ContainerInfo(
        id=data["Id"],
        name=(data.get("Name") or "").lstrip("/"),
        image=config.get("Image") or data.get("Image", ""),
        labels=dict(config.get("Labels") or {}),
        log_driver=(host_config.get("LogConfig") or {}).get("Type", "json-file"),
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
