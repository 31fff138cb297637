"""registry.k8s.io/coredns/coredns: the cluster DNS server, in its pod.

Like CoreDNS's kubernetes plugin watches the API server, this stand-in subscribes to the lab's
control process (its Unix socket, `NETEMU_API_SOCKET` in the environment) and receives the
cluster zone on every change; netemu.dns answers from it on UDP and TCP 53, with /metrics on
9153, /health on 8080 and /ready on 8181, as CoreDNS has them.
"""
from __future__ import annotations

import os
import pickle
import threading

from netemu.frames import read_frames
from netemu.workloads.listeners import Loop, StartError
from netemu.workloads.podlog import write_log
from netemu.workloads.model import WorkloadContext

FIRST_ZONE_TIMEOUT = 10.0



def start_coredns(ctx: WorkloadContext, loop: Loop) -> None:
    from netemu.dns import ZoneFeed, serve

    path = ctx.env.get("NETEMU_API_SOCKET", "")
    if not path:
        raise StartError("NETEMU_API_SOCKET is not set: this stand-in needs the lab's control process")
    from netemu.workloads.labapi import open_feed

    try:
        sock = open_feed(path, "dns_watch", {})
    except OSError as e:
        raise StartError(f"cannot reach the lab's control process at {path}: {e}") from None
    feed = ZoneFeed()
    first = threading.Event()

    def follow() -> None:
        for frame in read_frames(sock):
            feed.publish(pickle.loads(frame))
            first.set()
        # the control process went away: the lab is being torn down
        write_log("netemu coredns: the control process closed the zone feed; exiting\n")
        os._exit(0)

    threading.Thread(target=follow, name="zone-feed", daemon=True).start()
    if not first.wait(FIRST_ZONE_TIMEOUT):
        raise StartError("no zone from the control process")
    ports = {p.name: p.port for p in ctx.ports}
    serve("", feed, port=ports.get("dns", 53), metrics_port=ports.get("metrics", 9153),
          health_port=8080, ready_port=8181)
    write_log(f"netemu coredns: serving {feed.current().domain}\n")
