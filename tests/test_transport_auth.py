"""Basic credentials as a gateway in front of Loki checks them: RFC 7617's UTF-8, whatever the characters."""

from __future__ import annotations

import time
import warnings

from loki_receiver import LokiReceiver

from collector.config import LokiConfig
from collector.sinks.transport import AiohttpTransport



def body() -> bytes:
    return b'{"streams":[{"stream":{"job":"auth"},"values":[["%d","hello"]]}]}' % time.time_ns()


async def test_a_password_outside_latin_1_is_sent_as_utf_8_and_accepted() -> None:
    password = "pässwörd-€-日本"  # "€" and CJK have no Latin-1 form
    async with LokiReceiver(require_basic=("loki", password)) as receiver:
        transport = AiohttpTransport(LokiConfig(url=receiver.push_url, username="loki", password=password))
        try:
            with warnings.catch_warnings():
                # aiohttp deprecates BasicAuth (to be removed in 4.0): credentials must not depend on it
                warnings.simplefilter("error", DeprecationWarning)
                reply = await transport.post(body(), {"Content-Type": "application/json"})
        finally:
            await transport.close()
        assert reply.status == 204
        assert receiver.counters["unauthorized"] == 0
        assert [e.line for e in receiver.entries({"job": "auth"})] == ["hello"]
