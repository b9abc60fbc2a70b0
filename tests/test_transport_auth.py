"""Basic credentials as a gateway in front of Loki checks them: RFC 7617's UTF-8, whatever the characters."""

from __future__ import annotations

import time
import warnings
from urllib.parse import quote

import pytest
from loki_receiver import LokiReceiver

from collector.config import LokiConfig
from collector.sinks.transport import AiohttpTransport

PASSWORD = "pässwörd-€-日本"  # "€" and CJK have no Latin-1 form


def body() -> bytes:
    return b'{"streams":[{"stream":{"job":"auth"},"values":[["%d","hello"]]}]}' % time.time_ns()


@pytest.mark.parametrize("where", ["username and password", "in the url"])
async def test_a_password_outside_latin_1_is_sent_as_utf_8_and_accepted(where: str) -> None:
    async with LokiReceiver(require_basic=("loki", PASSWORD)) as receiver:
        if where == "in the url":
            config = LokiConfig(url=receiver.push_url.replace("://", f"://loki:{quote(PASSWORD)}@", 1))
        else:
            config = LokiConfig(url=receiver.push_url, username="loki", password=PASSWORD)
        transport = AiohttpTransport(config)
        try:
            with warnings.catch_warnings():
                # aiohttp deprecates BasicAuth (to be removed in 4.0): credentials must not depend on it
                warnings.simplefilter("error", DeprecationWarning)
                reply = await transport.post(body(), {"Content-Type": "application/json"})
        finally:
            await transport.close()
        assert reply.status == 204, reply.body
        assert receiver.counters["unauthorized"] == 0
        assert [e.line for e in receiver.entries({"job": "auth"})] == ["hello"]
