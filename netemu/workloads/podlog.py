"""The pod's log (fd 1): access-log lines buffered, everything else written at once.

A write per request cost the HTTP stand-ins as much as the request itself, so access-log lines
wait in memory and go out together: when the event loop has nothing else to do, when the oldest
has waited FLUSH_AFTER seconds, or when FLUSH_BYTES have gathered. `write_log` (start-up lines,
errors) first writes what is waiting, so lines keep their order; the stand-ins flush before they
die of a signal (Loop.run_forever), so nothing is lost at exit.
"""
from __future__ import annotations

import os
import threading
import time

FLUSH_AFTER = 0.5  # seconds: `kubectl logs` shows a request within about this long under load
FLUSH_BYTES = 64 << 10
LOG_FD = 1  # the container's stdout

_lock = threading.Lock()  # worker threads log too
_pending: list[str] = []
_size = 0
_since = 0.0  # when the oldest pending line came


def buffer_line(line: str) -> None:
    global _size, _since
    with _lock:
        if not _pending:
            _since = time.monotonic()
        _pending.append(line)
        _size += len(line)
        if _size >= FLUSH_BYTES:
            _write_pending()


def pending() -> bool:
    return bool(_pending)


def due() -> bool:
    """Lines have waited long enough (or gathered enough) to go out even while the loop is busy."""
    return bool(_pending) and time.monotonic() - _since >= FLUSH_AFTER


def flush(wait: float = -1) -> None:
    """Write what is waiting; `wait` (seconds) bounds the wait for the lock, so that a signal
    handler that interrupted a flush of this same thread does not wait on itself for ever."""
    if not _lock.acquire(timeout=wait):
        return
    try:
        _write_pending()
    finally:
        _lock.release()


def write_log(line: str) -> None:
    """One line to the pod's log now, after what is waiting, in a single write."""
    with _lock:
        _pending.append(line)
        _write_pending()


def _write_pending() -> None:
    global _size
    if not _pending:
        return
    data = "".join(_pending).encode("utf-8", "replace")
    _pending.clear()
    _size = 0
    try:
        while data:
            data = data[os.write(LOG_FD, data):]
    except OSError:
        pass
