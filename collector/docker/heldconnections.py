"""How many connections our log-stream responses hold, through aiohttp's public API only.

aiohttp does not say how many connections a connector holds (only its private `_acquired` and
`_conns` do). Every connection of the log-stream pool is opened for a response of ours, and a
response holds it (`ClientResponse.connection`) until the response is closed, released or read
to its end; so counting our responses that still hold one counts the pool's connections. None
stays idle in the pool: over HTTP/1.0 a connection ends with its response.
"""

from __future__ import annotations

import weakref

import aiohttp


class HeldConnections:
    def __init__(self) -> None:
        # Weak: a response dropped unclosed frees its connection when collected, and leaves the count.
        self._responses: weakref.WeakSet[aiohttp.ClientResponse] = weakref.WeakSet()

    def track(self, response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
        self._responses.add(response)
        return response

    @property
    def count(self) -> int:
        return sum(1 for response in self._responses if response.connection is not None)
