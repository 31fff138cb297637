"""How zone updates reach a running server, whatever carries them (a Unix socket, a thread of
the control process, a test): one side publishes whole zones, the server reads the latest.

    feed = ZoneFeed()
    server = serve("10.244.0.5", feed)          # answers SERVFAIL until a zone is published
    feed.publish(ClusterZone.build(...))         # from any thread; effective for the next query
"""
from __future__ import annotations

import threading
from typing import Callable, Optional, Protocol, runtime_checkable

from netemu.dns.zone import ClusterZone

ZoneListener = Callable[[ClusterZone], None]


@runtime_checkable
class ZoneSource(Protocol):
    """Anything that can tell the current zone (None: not synced yet)."""

    def current(self) -> Optional[ClusterZone]: ...


class ZoneFeed:
    """Holds the current zone; ``publish`` swaps it atomically and tells the subscribers."""

    def __init__(self, zone: Optional[ClusterZone] = None):
        self._zone = zone
        self._lock = threading.Lock()
        self._listeners: list[ZoneListener] = []
        self._published = threading.Event()
        if zone is not None:
            self._published.set()

    def current(self) -> Optional[ClusterZone]:
        return self._zone  # one attribute read: atomic under the GIL

    def publish(self, zone: ClusterZone) -> None:
        with self._lock:  # listeners see zones in publication order
            self._zone = zone
            self._published.set()
            for listener in list(self._listeners):
                listener(zone)

    def subscribe(self, listener: ZoneListener) -> Callable[[], None]:
        """Call ``listener(zone)`` on every publish (in the publisher's thread; keep it
        short). Returns the function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until a zone has been published (or the timeout passes)."""
        return self._published.wait(timeout)
