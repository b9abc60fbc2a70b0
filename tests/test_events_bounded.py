"""Docker events are untrusted input: one of any size, or one that is not JSON, is skipped and
counted, discovery goes on, and a reconnect resumes past it. The Engine API is served by a small
aiohttp app here (no Docker), so the real client code reads the real bytes."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from polling import wait_until

from collector.docker.containers import ContainerInfo
from collector.docker.discovery import Discovery
from collector.docker.engine import Engine
from collector.docker.eventlines import MAX_EVENT_BYTES, EventLines, Skipped

CID = "ab" * 32
T1, T2 = 1_795_000_000_123_456_789, 1_795_000_001_000_000_001


def event(action: str, time_nano: int, **attributes: str) -> bytes:
    body = {"status": action, "id": CID, "from": "img", "Type": "container", "Action": action,
            "Actor": {"ID": CID, "Attributes": {"image": "img", "name": "big", **attributes}},
            "scope": "local", "time": time_nano // 10**9, "timeNano": time_nano}
    return json.dumps(body).encode() + b"\n"


def huge_event(time_nano: int, size: int) -> bytes:
    labels = {f"label{i}": "x" * 60_000 for i in range(size // 60_000 + 1)}
    return event("start", time_nano, **labels)


# -- the line splitter alone ----------------------------------------------------------------------
def test_an_oversized_line_is_skipped_with_what_its_ends_say_and_memory_stays_bounded() -> None:
    lines = EventLines(limit=64 * 1024)
    data = event("die", T1) + huge_event(T2, 300_000) + b"not json\n" + event("destroy", T2 + 1)
    found: list[Any] = []
    peak = 0
    for start in range(0, len(data), 7919):  # chunks that split lines anywhere
        found += lines.feed(data[start:start + 7919])
        peak = max(peak, lines.held)
    assert [item["Action"] if isinstance(item, dict) else item.reason for item in found] == ["die", "too_large", "bad_json", "destroy"]
    big = found[1]
    assert isinstance(big, Skipped) and big.size == len(huge_event(T2, 300_000)) - 1
    assert (big.time_nano, big.action, big.container_id) == (T2, "start", CID)
    assert peak <= 64 * 1024 + 2 * 4096 + 7919


# -- the engine client and discovery against a fake Engine API ------------------------------------
class Handler:
    """What discovery drives, recorded."""

    def __init__(self) -> None:
        self.containers: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []

    def set_host(self, name: str) -> None:
        pass

    def reconcile(self, present: list[ContainerInfo]) -> None:
        self.calls.append(("reconcile", ",".join(info.id for info in present)))

    def started(self, info: ContainerInfo, inspected: bool = False) -> None:
        self.calls.append(("start", info.id))

    def died(self, container_id: str) -> None:
        self.calls.append(("die", container_id))

    def destroyed(self, container_id: str) -> None:
        self.calls.append(("destroy", container_id))

    def renamed(self, container_id: str, new_name: str) -> None:
        self.calls.append(("rename", container_id))


class FakeDockerApi:
    """/info, /containers/json, /containers/{id}/json and /events; each events connection sends
    `script` (after `since`) and ends."""

    def __init__(self, script: list[tuple[int, bytes]]) -> None:
        self.script = script
        self.since_asked: list[str] = []
        self.listed = 0
        self.runner: web.AppRunner | None = None
        self.host = ""

    async def start(self) -> FakeDockerApi:
        app = web.Application()

        async def info(request: web.Request) -> web.Response:
            return web.json_response({"Name": "fakehost"})

        async def version(request: web.Request) -> web.Response:
            return web.json_response({"ApiVersion": "1.43"})

        app.router.add_get("/info", info)
        app.router.add_get("/version", version)
        app.router.add_get("/containers/json", self._list)
        app.router.add_get("/containers/{cid}/json", self._inspect)
        app.router.add_get("/events", self._events)
        app.router.add_get("/{version}/info", info)
        app.router.add_get("/{version}/containers/json", self._list)
        app.router.add_get("/{version}/containers/{cid}/json", self._inspect)
        app.router.add_get("/{version}/events", self._events)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.host = f"tcp://127.0.0.1:{port}"
        return self

    async def _list(self, request: web.Request) -> web.Response:
        self.listed += 1
        return web.json_response([])

    async def _inspect(self, request: web.Request) -> web.Response:
        return web.json_response({"message": "no such container"}, status=404)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        since = request.query.get("since", "")
        self.since_asked.append(since)
        since_ns = int(since.replace(".", "")) if since else 0
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for time_nano, body in self.script:
            if time_nano >= since_ns:  # dockerd's replay: since is inclusive
                await response.write(body)
        await asyncio.sleep(0.3)
        return response

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _follow(script: list[tuple[int, bytes]], until: Any) -> tuple[Discovery, FakeDockerApi, Handler]:
    api = await FakeDockerApi(script).start()
    engine = Engine(api.host)
    handler = Handler()
    discovery = Discovery(engine, handler, max_backoff=0.05, relist_interval=3600)  # type: ignore[arg-type]
    task = asyncio.create_task(discovery.run())
    try:
        await wait_until(lambda: until(discovery, api, handler) or task.done(), 20, what="discovery to get through the script")
        assert not task.done(), f"discovery ended: {task.exception()!r}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.close()
        await api.stop()
    return discovery, api, handler


async def test_an_event_larger_than_any_line_limit_is_skipped_counted_and_resumed_past(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="collector.docker.discovery")
    script = [(T1, huge_event(T1, 2 * MAX_EVENT_BYTES)), (T2, event("die", T2))]
    discovery, api, handler = await _follow(script, lambda d, a, h: len(a.since_asked) >= 3)
    assert discovery.events_skipped["too_large"] >= 1
    assert ("die", CID) in handler.calls, "the event after the big one is handled"
    # Each reconnect resumes after the last event handled: the big one is never replayed.
    assert api.since_asked[0] == "" and all(since == f"{T2 // 10**9}.{T2 % 10**9:09d}" for since in api.since_asked[1:])
    assert discovery.events_skipped["too_large"] == 1
    assert any("docker event skipped" in record.message and getattr(record, "reason", "") == "too_large" for record in caplog.records)
    assert api.listed >= 2, "a re-list picks up whatever the skipped event was about"


async def test_a_skipped_event_last_in_the_stream_still_moves_the_resume_point_past_it() -> None:
    script = [(T1, event("die", T1)), (T2, huge_event(T2, 2 * MAX_EVENT_BYTES))]
    discovery, api, _ = await _follow(script, lambda d, a, h: len(a.since_asked) >= 3)
    # dockerd's since is inclusive: a resume from the skipped event's own time would replay it.
    past = T2 + 1
    assert api.since_asked[1:] == [f"{past // 10**9}.{past % 10**9:09d}"] * (len(api.since_asked) - 1)
    assert discovery.events_skipped["too_large"] == 1


async def test_an_event_that_is_not_json_is_skipped_and_discovery_goes_on() -> None:
    script = [(T1, b'{"Action": "die", "Actor": {"ID": "' + CID.encode() + b'"}, "timeNano": 17\n'), (T2, event("destroy", T2))]
    discovery, _, handler = await _follow(script, lambda d, a, h: ("destroy", CID) in h.calls)
    assert discovery.events_skipped["bad_json"] == 1
