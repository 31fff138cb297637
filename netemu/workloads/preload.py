"""Work done once, in the process that imports this package, so that the stand-ins forked from
it share the result instead of each redoing it in pages of its own.

The C library's resolver (NSS modules, configuration) is loaded by a first name lookup, and
its time zone by a first local time: about 1 MB per process that would otherwise do both.
"""
from __future__ import annotations

import socket
import time


def warm_up() -> None:
    try:
        socket.getaddrinfo("localhost", None)  # answered from /etc/hosts: no network involved
    except OSError:
        pass
    time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime())
