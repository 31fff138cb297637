"""The lab's write-ahead journal: what etcd's log is to kube-apiserver.

The state file is a snapshot written off the loop now and then (a checkpoint: encoding a big lab's
objects costs a good part of a second, so not at every change); a control process killed after it
would come back without what changed since. So every change to the store is also appended here, and
the appended lines reach the file before the API answers (the API server's middleware flushes) and at
the end of every reconcile pass: a write a client was told about survives a crash of the process.
(The file lives on /run, a tmpfs: like the state file it is for process crashes, not reboots.)

Segments `journal.<n>` beside the state file. Taking a snapshot at resourceVersion R starts a new
segment; once the snapshot is on disk, the segments before it are removed. Resuming replays every
segment left, in order, over the snapshot: changes newer than R win, a torn last line is dropped.
"""
from __future__ import annotations

import json
import logging
import os
import re

log = logging.getLogger("netemu.journal")

_SEGMENT = re.compile(r"^journal\.(\d+)$")


def _segments(directory: str) -> list[tuple[int, str]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), os.path.join(directory, n)) for n in names if (m := _SEGMENT.match(n))]
    return sorted(found)


class Journal:
    def __init__(self, directory: str):
        self.dir = directory
        existing = _segments(directory)
        # a resumed process appends after what the crashed one left (replayed, kept until a snapshot)
        self.seq = existing[-1][0] + 1 if existing else 1
        self._buf: list[bytes] = []
        self._fd = self._open(self.seq)
        self.since_rotate = 0  # changes recorded since the last snapshot began (what a restart would replay)

    def _open(self, seq: int) -> int:
        return os.open(os.path.join(self.dir, f"journal.{seq}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND
                       | os.O_CLOEXEC, 0o600)

    def record(self, rv: int, key: tuple, raw: bytes | None) -> None:
        """A change of the store (raw: the object as stored, in JSON; None for a deletion), kept until
        flush()."""
        head = json.dumps({"rv": rv, "key": list(key)}, separators=(",", ":")).encode()
        self.since_rotate += 1
        self._buf.append(head + b"\n" if raw is None else head[:-1] + b',"obj":' + raw + b"}\n")

    def flush(self) -> None:
        """Everything recorded, written to the file (a process crash no longer loses it)."""
        if not self._buf or self._fd < 0:
            return
        data = memoryview(b"".join(self._buf))
        self._buf.clear()
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as e:  # the lab's directory removed under it (`down`): nothing to keep
            log.warning("journal: %s", e)

    def rotate(self) -> int:
        """Start a new segment (a snapshot of everything so far is being taken); returns the last one
        the snapshot covers, for drop_through() once the snapshot is written."""
        self.flush()
        done = self.seq
        self.since_rotate = 0
        os.close(self._fd)
        self.seq += 1
        try:
            self._fd = self._open(self.seq)
        except OSError as e:
            log.warning("journal: %s", e)
            self._fd = -1
        return done

    def drop_through(self, seq: int) -> None:
        """Remove the segments up to seq (a snapshot that holds them is on disk). Any thread."""
        for n, path in _segments(self.dir):
            if n <= seq:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def replay(directory: str, objects: list[dict], last_rv: int) -> tuple[list[dict], int]:
    """The snapshot's objects (taken at last_rv) with the journal's newer changes applied; and the
    newest resourceVersion seen."""
    from netemu.spec.models import NAMESPACED

    def key_of(d: dict) -> tuple:
        meta = d.get("metadata") or {}
        kind = d.get("kind")
        return (kind, meta.get("namespace") or "" if kind in NAMESPACED else "", meta.get("name"))

    by_key = {key_of(d): d for d in objects}
    applied, newest = 0, last_rv
    for _, path in _segments(directory):
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        for line in lines:
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:  # the last line of a process killed while writing it
                log.warning("journal %s: a torn line dropped", path)
                continue
            rv = int(entry.get("rv") or 0)
            if rv <= last_rv:
                continue
            key = tuple(entry["key"])
            if "obj" in entry:
                by_key[key] = entry["obj"]
            else:
                by_key.pop(key, None)
            newest, applied = max(newest, rv), applied + 1
    if applied:
        log.info("journal: %d changes newer than the state file replayed", applied)
    return list(by_key.values()), newest
