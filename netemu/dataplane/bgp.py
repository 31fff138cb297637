"""MetalLB's BGP mode in the kernel: every node speaker's FRR and every lab router's, made to match what
the control process decided (netemu.control.metallb_frr), and the host's routes to the BGP pools
through a router.

A node's FRR starts from its whole configuration; later route changes are vtysh commands (``plan``), so
sessions stay up; a change of the sessions restarts bgpd and bfdd. A speaker that dies (``kill``: a
speaker kill, or its node going down) is SIGKILLed as a crash would end it. Routers restart on a change
of their neighbors (a BGPPeer changed). The host's route to a BGP pool goes via a router's lab address
and the lab's own host link only, is added only where the host routes nothing of that range already,
and goes with the link when the lab is down. A dual-stack lab's IPv6 pools are routed the same way via
the router's ip6, checked against the host's IPv6 routes (`ip -6 route show table all`).

With a router's ``upstream: true`` there is no static route: the host's own bgpd (frr.HOST: no zebra,
listening on the lab's gateway only) peers with the router, and a poller here reads what it learned
(``show ip bgp json``, every POLL_SECONDS) and programs those routes itself (``proto bgp``, via the
router, through the lab's host link, only inside the lab's BGP pools, only where the host routes nothing
of that range), removing them when withdrawn, when the host's bgpd is gone and when the lab goes down.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import signal
import subprocess
import threading
from typing import Mapping, Optional

from netemu.control.metallb_frr import (Applied, HostConfig, RouterConfig, SpeakerConfig, applied_from,
                                        host_routes_from, plan)
from netemu.dataplane import frr, names
from netemu.dataplane.hostnet import overlapping_routes
from netemu.dataplane.ipcmd import IpError, ip_batch, ip_json

log = logging.getLogger("netemu.bgp")

POLL_SECONDS = 0.5  # how often the host's learned routes are read (a withdrawal reaches the host's table)
LEARNED_PROTO = "bgp"  # the host's routes learned over the upstream session: `ip route` shows `proto bgp`


class BgpSpeakers:
    def __init__(self, lab: str, netns_of, cgroup_dirs: tuple[str, ...] = ()):
        self.lab = lab
        self.netns_of = netns_of  # node or router name -> its namespace
        self.cgroup_dirs = cgroup_dirs
        self.instances: dict[str, frr.FrrInstance] = {}
        self.applied: dict[str, tuple[tuple, Applied]] = {}  # node -> (its sessions, its routes)
        self.routers: dict[str, RouterConfig] = {}
        self.host_routes: dict[str, str] = {}  # CIDR -> via (static: a router without upstream)
        self.host: Optional[HostConfig] = None  # the host's bgpd (a router's upstream session)
        self.learned: dict[str, str] = {}  # prefix -> via: the host's routes from that session, installed
        self._learned_seen = False  # the host's table was read for routes of ours left by a control process before
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._poller: Optional[threading.Thread] = None
        self._stop_poll = threading.Event()

    def _instance(self, name: str) -> frr.FrrInstance:
        inst = self.instances.get(name)
        if inst is None:
            inst = self.instances[name] = frr.FrrInstance(self.lab, name, self.netns_of(name), self.cgroup_dirs)
        return inst

    def _host_instance(self, cfg: HostConfig) -> frr.FrrInstance:
        inst = self.instances.get(frr.HOST)
        if inst is None or inst.listen != cfg.address:
            inst = self.instances[frr.HOST] = frr.FrrInstance(self.lab, frr.HOST, None, self.cgroup_dirs,
                                                              daemons=("bgpd",), listen=cfg.address)
        return inst

    # ------------------------------------------------------------------ sync
    def sync(self, speakers: Mapping[str, SpeakerConfig], routers: Mapping[str, RouterConfig],
             host_routes: Mapping[str, str], upstream: Optional[HostConfig] = None) -> None:
        with self._lock:
            for name, cfg in routers.items():
                self._sync_router(name, cfg)
            self._sync_host(upstream)
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

    def _sync_host(self, cfg: Optional[HostConfig]) -> None:
        """The host's bgpd as ``cfg`` says (restarted on a change: its pools or its router), or none."""
        inst = self.instances.get(frr.HOST)
        if cfg is None:
            if inst is not None:
                inst.remove()
                del self.instances[frr.HOST]
            self.host = None
            self._apply_learned({})
            return
        if self.host == cfg and inst is not None and inst.running():
            return
        if inst is not None:
            inst.stop()
        inst = self._host_instance(cfg)
        try:
            inst.start(cfg.files())
        except Exception as e:
            log.error("the host's bgpd (upstream session with %s): %s", cfg.router, e)
            return
        self.host = cfg
        if self._poller is None:
            self._stop_poll.clear()
            self._poller = threading.Thread(target=self._poll, name="bgp-host-routes", daemon=True)
            self._poller.start()

    def _poll(self) -> None:
        while not self._stop_poll.wait(POLL_SECONDS):
            try:
                self.poll_learned()
            except Exception:
                log.exception("the host's routes learned over BGP")

    def poll_learned(self) -> None:
        """Read what the host's bgpd learned and make the host's routes match."""
        with self._lock:
            cfg, inst = self.host, self.instances.get(frr.HOST)
            if cfg is None or inst is None or self._stop_poll.is_set():
                return
            if inst.pid("bgpd") is None:
                wanted: dict[str, str] = {}  # no session: nothing learned (the next sync starts it again)
            else:
                try:
                    learned = json.loads(inst.vtysh("show ip bgp json", timeout=5) or "{}")
                except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
                    log.warning("reading the host's bgpd: %s", e)
                    return
                wanted, refused = host_routes_from(learned, cfg.pools, (cfg.router,))
                for why in refused:
                    self._warn(f"the host does not route {why}")
            self._apply_learned(wanted)

    def _apply_learned(self, wanted: Mapping[str, str]) -> None:
        link = names.host_link(self.lab)
        gone = [(c, v) for c, v in self.learned.items() if wanted.get(c) != v]
        missing = {c: v for c, v in wanted.items() if self.learned.get(c) != v}
        if not gone and not missing and self._learned_seen:
            return
        for cidr, via in gone:
            try:
                ip_batch([f"route del {cidr} via {via} dev {link} proto {LEARNED_PROTO}"])
            except IpError:
                pass
            del self.learned[cidr]
        if not missing and self._learned_seen:
            return
        try:
            routes = ip_json(["route", "show", "table", "all"])
        except IpError as e:
            log.error("reading the host's routes: %s", e)
            return
        ours = [r for r in routes if _learned_route(r, link)]
        others = [r for r in routes if not _learned_route(r, link)]
        if not self._learned_seen:  # left by a control process before this one: adopt or remove
            for r in ours:
                dst = str(ipaddress.ip_network(r["dst"], strict=False))  # `ip -j` writes a /32 as its address
                if wanted.get(dst) == r.get("gateway"):
                    self.learned[dst] = r["gateway"]
                    missing.pop(dst, None)
                else:
                    try:
                        ip_batch([f"route del {r['dst']} via {r.get('gateway')} dev {link} proto {LEARNED_PROTO}"])
                    except IpError:
                        pass
            self._learned_seen = True
        for cidr, via in decide_learned(missing, others).items():
            if via is None:
                continue
            try:
                ip_batch([f"route replace {cidr} via {via} dev {link} proto {LEARNED_PROTO}"])
                self.learned[cidr] = via
            except IpError as e:
                log.error("adding the host's route to %s: %s", cidr, e)
        for cidr in missing:
            if cidr not in self.learned:
                why = host_route_conflict(cidr, others)
                if why:
                    self._warn(f"the host's route to {cidr} learned over BGP is not added: {why}")

    def _warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)
            log.warning(msg)

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
            if any(":" in c for c in missing):  # a dual-stack lab's IPv6 pools: the host's IPv6 routes too
                routes += ip_json(["-6", "route", "show", "table", "all"])
        except IpError as e:
            log.error("reading the host's routes: %s", e)
            return
        for cidr, via in missing.items():
            if any(_same_net(r.get("dst"), cidr) and r.get("dev") == link and r.get("gateway") == via for r in routes):
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
        """The instances with a bgpd (frr.HOST: the host's)."""
        return sorted(n for n, i in self.instances.items() if i.pid("bgpd") is not None)

    def close(self) -> None:
        self._stop_poll.set()
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join(10)
        with self._lock:
            self._poller = None
            self.host = None
            self._learned_seen = True
            self._apply_learned({})  # the host's learned routes go first: the lab is going down
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
    for r in overlapping_routes(cidr, routes):
        return f"the host already routes {r['dst']} (dev {r.get('dev', '?')}, table {r.get('table', 'main')})"
    return ""


def _same_net(dst, cidr: str) -> bool:
    """Is a route's dst (`ip -j` writes a host route as its address) the network ``cidr``?"""
    try:
        return bool(dst) and dst != "default" and ipaddress.ip_network(dst, strict=False) == ipaddress.ip_network(cidr)
    except ValueError:
        return False


def _learned_route(r: dict, link: str) -> bool:
    """One of the host's routes learned over a lab's upstream session (ours: its link, proto bgp)."""
    return r.get("dev") == link and r.get("protocol") == LEARNED_PROTO and bool(r.get("dst")) and \
        r.get("dst") != "default" and bool(r.get("gateway"))


def decide_learned(missing: Mapping[str, str], routes: list[dict]) -> dict[str, Optional[str]]:
    """Which learned prefixes the host may route (prefix -> via, None: not): only where the host routes
    nothing of that range (``routes``: the host's routes but the learned ones, every table). A prefix
    inside or around another learned one is fine (an aggregate and its more specifics, all via the lab)."""
    return {cidr: (None if host_route_conflict(cidr, routes) else via) for cidr, via in missing.items()}


__all__ = ["BgpSpeakers", "host_route_conflict", "decide_learned", "POLL_SECONDS", "LEARNED_PROTO"]
