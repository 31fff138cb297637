"""MetalLB's BGP mode in the kernel: every node speaker's FRR and every lab router's, made to match what
the control process decided (netemu.control.metallb_frr), and the host's routes to the BGP pools
through a router.

A node's FRR starts from its whole configuration; later route changes are vtysh commands (``plan``), so
sessions stay up; a change of the sessions restarts bgpd and bfdd. A speaker that dies (``kill``: a
speaker kill, or its node going down) is SIGKILLed as a crash would end it. Routers restart on a change
of their neighbors (a BGPPeer changed). The host's route to a BGP pool goes via a router's lab address
and the lab's own host link only, is added only where the host routes nothing of that range already,
and goes with the link when the lab is down.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import signal
import threading
from typing import Mapping, Optional

from netemu.control.metallb_frr import Applied, RouterConfig, SpeakerConfig, applied_from, plan
from netemu.dataplane import frr, names
from netemu.dataplane.ipcmd import IpError, ip_batch, ip_json

log = logging.getLogger("netemu.bgp")


class BgpSpeakers:
    def __init__(self, lab: str, netns_of, cgroup_dirs: tuple[str, ...] = ()):
        self.lab = lab
        self.netns_of = netns_of  # node or router name -> its namespace
        self.cgroup_dirs = cgroup_dirs
        self.instances: dict[str, frr.FrrInstance] = {}
        self.applied: dict[str, tuple[tuple, Applied]] = {}  # node -> (its sessions, its routes)
        self.routers: dict[str, RouterConfig] = {}
        self.host_routes: dict[str, str] = {}  # CIDR -> via
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def _instance(self, name: str) -> frr.FrrInstance:
        inst = self.instances.get(name)
        if inst is None:
            inst = self.instances[name] = frr.FrrInstance(self.lab, name, self.netns_of(name), self.cgroup_dirs)
        return inst

    # ------------------------------------------------------------------ sync
    def sync(self, speakers: Mapping[str, SpeakerConfig], routers: Mapping[str, RouterConfig],
             host_routes: Mapping[str, str]) -> None:
        with self._lock:
            for name, cfg in routers.items():
                self._sync_router(name, cfg)
            for node in list(self.applied):
                if node not in speakers:
                    self._instance(node).stop()  # SIGTERM: bgpd says goodbye (Cease) and the router withdraws
                    del self.applied[node]
            for node, cfg in speakers.items():
                try:
                    self._sync_speaker(node, cfg)
                except Exception as e:
                    log.error("FRR on node %s: %s", node, e)
                    self.applied.pop(node, None)
            self._sync_host_routes(host_routes)

    def _sync_router(self, name: str, cfg: RouterConfig) -> None:
        inst = self._instance(name)
        if self.routers.get(name) == cfg and inst.running():
            return
        if name in self.routers:
            inst.stop(("bgpd", "bfdd"))
        inst.start(cfg.files())
        self.routers[name] = cfg

    def _sync_speaker(self, node: str, cfg: SpeakerConfig) -> None:
        inst = self._instance(node)
        have = self.applied.get(node)
        if have is None or not inst.running():
            inst.stop()
            inst.start(cfg.files())
        elif have[0] != cfg.static_key():
            inst.stop(("bgpd", "bfdd"))
            inst.start(cfg.files())
        else:
            cmds, now = plan(have[1], cfg)
            if cmds:
                inst.write(cfg.files())  # what a restart would read
                try:
                    inst.vtysh(*cmds, configure=True)
                except Exception as e:
                    log.error("FRR on node %s refused a change (%s): restarting bgpd", node, e)
                    inst.stop(("bgpd",))
                    inst.start(cfg.files())
                    now = applied_from(cfg)
            self.applied[node] = (cfg.static_key(), now)
            return
        self.applied[node] = (cfg.static_key(), applied_from(cfg))

    def kill(self, node: str) -> None:
        """The node's speaker dies (SIGKILL, as a crash): its sessions end without a goodbye."""
        with self._lock:
            if node in self.instances:
                self.instances[node].stop(sig=signal.SIGKILL)
            self.applied.pop(node, None)

    # ------------------------------------------------------------------ the host's routes
    def _sync_host_routes(self, wanted: Mapping[str, str]) -> None:
        link = names.host_link(self.lab)
        for cidr, via in list(self.host_routes.items()):
            if wanted.get(cidr) != via:
                try:
                    ip_batch([f"route del {cidr} via {via} dev {link}"])
                except IpError:
                    pass
                del self.host_routes[cidr]
        missing = {c: v for c, v in wanted.items() if c not in self.host_routes}
        if not missing:
            return
        try:
            routes = ip_json(["route", "show", "table", "all"])
        except IpError as e:
            log.error("reading the host's routes: %s", e)
            return
        for cidr, via in missing.items():
            if any(r.get("dst") == cidr and r.get("dev") == link and r.get("gateway") == via for r in routes):
                self.host_routes[cidr] = via  # ours already (a restarted control process)
                continue
            why = host_route_conflict(cidr, routes)
            if why:
                msg = f"the host's route to BGP pool {cidr} via {via} is not added: {why}"
                if msg not in self.warnings:
                    self.warnings.append(msg)
                    log.warning(msg)
                continue
            try:
                ip_batch([f"route add {cidr} via {via} dev {link} proto static"])
                self.host_routes[cidr] = via
            except IpError as e:
                log.error("adding the host's route to %s: %s", cidr, e)

    # ------------------------------------------------------------------ views
    def summary(self, name: str) -> Optional[dict]:
        inst = self.instances.get(name)
        if inst is None or inst.pid("bgpd") is None:
            return None
        try:
            return json.loads(inst.vtysh("show bgp summary json") or "{}")
        except (RuntimeError, ValueError, OSError) as e:
            return {"error": str(e)}

    def running(self) -> list[str]:
        return sorted(n for n, i in self.instances.items() if i.pid("bgpd") is not None)

    def close(self) -> None:
        with self._lock:
            for inst in self.instances.values():
                inst.remove()
            self.instances.clear()
            self.applied.clear()
            self.routers.clear()
            link = names.host_link(self.lab)
            for cidr, via in self.host_routes.items():
                try:
                    ip_batch([f"route del {cidr} via {via} dev {link}"])
                except IpError:
                    pass
            self.host_routes.clear()


def host_route_conflict(cidr: str, routes: list[dict]) -> str:
    """Why the host must not route ``cidr`` into the lab: a route of the host (other than a default
    route) for any part of it already, in any table."""
    net = ipaddress.ip_network(cidr)
    for r in routes:
        dst = r.get("dst")
        if not dst or dst == "default" or r.get("type") in ("broadcast", "multicast"):
            continue
        try:
            other = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if other.version == net.version and other.overlaps(net):
            return f"the host already routes {dst} (dev {r.get('dev', '?')}, table {r.get('table', 'main')})"
    return ""


__all__ = ["BgpSpeakers", "host_route_conflict"]
