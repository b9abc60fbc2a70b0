"""One Origin object per container for chunks read back from a spool.

The sink files a push's entries under (id(origin), stream) and orders a push's streams by size: a
new Origin for each decoded chunk would make every chunk a stream of its own and send a
container's lines out of order. So a decoded origin equal to the one last seen for its container
(at append: the live source's) is replaced by that object."""

from __future__ import annotations

from collections import OrderedDict

from collector.pipeline.entry import Origin

REMEMBERED = 4096  # containers; beyond, the least recently seen is forgotten (a new object: still correct, less merged)


class Origins:
    def __init__(self) -> None:
        self._last: OrderedDict[str, Origin] = OrderedDict()

    def live(self, origin: Origin) -> None:
        """A source's Origin (at append): chunks read back from now on use it when equal."""
        self._remember(origin)

    def seen(self, origin: Origin) -> Origin:
        """The object to use for `origin`: the remembered one when equal, else `origin` (remembered)."""
        known = self._last.get(origin.container_id)
        if known is not None and (known is origin or (known.labels == origin.labels and known.metadata == origin.metadata
                                                      and known.tenant == origin.tenant)):
            self._last.move_to_end(origin.container_id)
            return known
        self._remember(origin)
        return origin

    def _remember(self, origin: Origin) -> None:
        self._last[origin.container_id] = origin
        self._last.move_to_end(origin.container_id)
        while len(self._last) > REMEMBERED:
            self._last.popitem(last=False)

    def __len__(self) -> int:
        return len(self._last)
