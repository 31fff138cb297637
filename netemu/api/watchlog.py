"""The watch window: recent changes with their resourceVersions, so that a client that listed at
resourceVersion N can watch from N on; a client further behind gets 410 Gone and lists again, as
with etcd's compaction."""
from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass
from typing import Callable, Optional


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Change:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    kind: str
    group: str
    namespace: str
    api_version: str  # the object's, as stored
    raw: bytes  # the object as JSON: a third of the memory of its dict, and what a watch sends as it is

    @property
    def obj(self) -> dict:
        """The object decoded (a new dict each time: for selectors, conversions and Tables)."""
        return json.loads(self.raw)


class TooOld(Exception):
    pass


class WatchLog:
    # a thousand changes: the window a client that relists and rewatches needs, kept as JSON (a few
    # megabytes, not tens of old object copies); etcd's compaction plays this part upstream
    def __init__(self, size: int = 1_000):
        self._log: collections.deque[Change] = collections.deque(maxlen=size)
        self._subs: set["Subscription"] = set()
        self.oldest = 0  # the oldest resourceVersion a watch can start after

    def append(self, change: Change) -> None:
        if len(self._log) == self._log.maxlen:
            self.oldest = self._log[0].rv
        self._log.append(change)
        for sub in list(self._subs):
            sub.offer(change)

    def since(self, rv: int, match: Callable[[Change], bool]) -> list[Change]:
        if rv < self.oldest:
            raise TooOld(f"too old resource version: {rv} ({self.oldest + 1})")
        return [c for c in self._log if c.rv > rv and match(c)]

    def subscribe(self, match: Callable[[Change], bool]) -> "Subscription":
        sub = Subscription(self, match)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: "Subscription") -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)


class Subscription:
    def __init__(self, log: WatchLog, match: Callable[[Change], bool]):
        self.log, self.match = log, match
        self.queue: asyncio.Queue[Change] = asyncio.Queue()

    def offer(self, change: Change) -> None:
        if self.match(change):
            self.queue.put_nowait(change)

    async def next(self, timeout: Optional[float]) -> Optional[Change]:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        self.log.unsubscribe(self)
