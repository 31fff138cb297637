"""The lab's own verbs, next to the Kubernetes API on the same HTTP server (netemu.daemon.apiserver):
`POST /netemu/v1/<op>` with a JSON body, for what Kubernetes has no API for (node failure, speakers,
rules, traces, waiting for a lab to be Ready, the DNS and ingress feeds of the lab's pods).

Most answers are one JSON object; streaming operations (`wait`) send JSON lines and end with a line
holding "result" or "error".
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from netemu.control.cluster import AdmissionError
from netemu.control.pods import is_ready, is_terminal, is_terminating
from netemu.control.store import Conflict, NotFound

log = logging.getLogger("netemu.api")


class ApiError(Exception):
    pass


class Api:
    def __init__(self, daemon):
        self.d = daemon
        self.cluster = daemon.cluster
        self.shutdown = asyncio.Event()

    async def handle(self, request, parts: list[str]):
        """POST /netemu/v1/<op> with a JSON body: the lab's own verbs (those Kubernetes has no API for).
        Answers {"result": ...} or {"error": ...}; streaming ops answer JSON lines; raw ops (the DNS and
        ingress feeds of the lab's pods) own the connection's bytes after the headers."""
        from aiohttp import web

        if len(parts) != 2 or parts[0] != "v1" or request.method != "POST":
            return web.json_response({"error": "POST /netemu/v1/<operation>"}, status=404)
        op = parts[1]
        handler = getattr(self, f"op_{op.replace('-', '_')}", None)
        try:
            raw = await request.read()
            req = json.loads(raw) if raw else {}
            if handler is None:
                raise ApiError(f"unknown operation {op!r}")
            if getattr(handler, "raw", False):
                resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
                resp.force_close()
                await resp.prepare(request)
                await handler(req, _RawWriter(request.transport))
                return resp
            if getattr(handler, "streaming", False):
                resp = web.StreamResponse(headers={"Content-Type": "application/json-seq"})
                await resp.prepare(request)

                async def send(msg):
                    await resp.write(json.dumps(msg).encode() + b"\n")
                await handler(req, send)
                return resp
            result = handler(req)
            if asyncio.iscoroutine(result):
                result = await result
            return web.json_response({"result": result})
        except (NotFound, Conflict, AdmissionError, ApiError, ValueError, KeyError) as e:
            return web.json_response({"error": str(e) if not isinstance(e, KeyError) or isinstance(e, NotFound)
                                      else f"missing field {e}"})
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # never kill the daemon for one bad request
            log.exception("request failed")
            return web.json_response({"error": f"internal error: {type(e).__name__}: {e}"})

    # ------------------------------------------------------------------ reads
    def op_ping(self, req):
        return {"lab": self.d.name, "pid": os.getpid(), "uptime": time.time() - self.d.started,
                "syncs": self.d.sync_count, "launcher_pid": self.d.launcher.pid,
                "launcher_restarts": self.d.launcher_restarts, "resumed": self.d.resumed}

    def op_lab(self, req):
        return self.d.lab.dump()

    def op_runtime(self, req):
        """Where a pod's processes live, for exec / logs."""
        ns, name = req.get("namespace") or "default", req["name"]
        pod = self.cluster.store.get("Pod", ns, name)
        rt = self.d.kubelet.runtime(ns, name) if self.d.kubelet else None
        from netemu import paths

        if rt is None or rt.sandbox is None:
            raise ApiError(f'pod "{name}" is not running (status: {pod.status.phase})')
        container = req.get("container")
        if container and container not in rt.containers:
            raise ApiError(f'container {container} is not valid for pod {name}')
        # the exec helper's options, None while the container is not running (its logs still are there)
        enter = self.d.kubelet.nsenter_args(rt, container)
        cg = self.d.cgroups.pod(rt.cgroup_id)
        return {
            "enter": enter,
            "cgroups": list(cg.dirs) if cg else [],
            "netns": rt.netns,
            "node": rt.node,
            "containers": {c: {"pid": crt.pid, "log": paths.container_log(self.d.name, ns, name, c)}
                           for c, crt in rt.containers.items()},
        }

    async def op_rules(self, req):
        """What is loaded on a node now (iptables-save in its namespace)."""
        node = self.cluster.store.get("Node", "", req["name"]).metadata.name
        if self.d.proxy is None:
            raise ApiError("kube-proxy is not running in this lab")
        return await asyncio.to_thread(self.d.proxy.rules, node)

    async def op_trace(self, req):
        """`netemu trace`, in every proxy mode: new connections from "src" to "destinations" ([{via, ip,
        port, proto}]) followed through the rules of node "name" by the lab's mode's tracer, with the
        node's conntrack entries for each (netemu.dataplane.proxy.trace)."""
        from netemu.dataplane.proxy.trace import TraceError, trace

        node = self.cluster.store.get("Node", "", req["name"]).metadata.name
        mode = self.d.lab.spec.proxy_mode or "iptables"
        if self.d.proxy is None:
            raise ApiError("kube-proxy is not running in this lab")
        try:
            return await asyncio.to_thread(trace, self.d.proxy, node, mode, req["src"], req["destinations"])
        except TraceError as e:
            raise ApiError(str(e)) from None

    def op_node_netns(self, req):
        node = self.cluster.store.get("Node", "", req["name"])
        return self.d.net.node_netns(node.metadata.name)

    def op_announcements(self, req):
        """Which node announces which LoadBalancer IP (MetalLB layer 2), and the speakers."""
        from netemu.control import metallb_l2

        a = metallb_l2.announcements(self.cluster)
        services = {f"{ns}/{name}": {"node": x.node, "ips": list(x.ips), "reason": x.reason, "failed": x.failed}
                    for (ns, name), x in a.services.items()}
        from netemu.control import metallb_bgp

        for (ns, name), b in metallb_bgp.announcements(self.cluster).services.items():
            # BGP mode: every announcing node (MetalLB's ServiceBGPStatus), and to which peers
            entry = services.setdefault(f"{ns}/{name}", {"node": None, "ips": list(b.ips), "reason": "", "failed": ""})
            if b.nodes and not entry.get("node"):
                entry["node"] = ",".join(sorted(b.nodes))
            entry["bgp"] = {"nodes": {n: list(p) for n, p in sorted(b.nodes.items())}, "reasons": dict(b.reasons)}
        return {"by_ip": dict(a.by_ip), "by_node": {n: sorted(ips) for n, ips in a.by_node.items()},
                "services": services, "speakers": self.d.speakers.stats() if self.d.speakers else {}}

    async def op_bgp(self, req):
        """MetalLB's BGP mode: each node's and router's sessions (FRR's `show bgp summary json`), and the
        host's (kind host) when a router has ``upstream: true``."""
        if self.d.bgp is None:
            return {"instances": {}}
        from netemu.dataplane import frr

        known = set(self.d.net.nodes) | set(self.d.net.routers)
        host_key = "host" if "host" not in known else frr.HOST  # the host's bgpd (a router's upstream session)
        names = [req["node"]] if req.get("node") else self.d.bgp.running()
        out = {}
        for n in names:
            if n in (host_key, frr.HOST) and n not in known:
                out[host_key] = {"kind": "host", "summary": await asyncio.to_thread(self.d.bgp.summary, frr.HOST)}
                continue
            if n not in known:
                raise ApiError(f'no node or router named "{n}"')
            out[n] = {"kind": "router" if n in self.d.net.routers else "node",
                      "summary": await asyncio.to_thread(self.d.bgp.summary, n)}
        return {"instances": out, "warnings": list(self.d.bgp.warnings)}

    def op_router(self, req):
        """A lab router's namespace and FRR directory (for exec)."""
        name = req["name"]
        if self.d.net is None or name not in self.d.net.routers:
            raise ApiError(f'no router named "{name}"')
        from netemu.dataplane import frr

        return {"netns": self.d.net.node_netns(name), "frr_dir": frr.instance_dir(self.d.name, name)}

    # ------------------------------------------------------------------ writes (failure injection)
    def op_speaker(self, req):
        self.d.set_speaker(req["name"], bool(req["alive"]))
        return f"speaker on node/{req['name']} {'started' if req['alive'] else 'killed'}"

    async def op_node(self, req):
        up = bool(req["up"])
        await self.d.set_node(req["name"], up)
        return f"node/{req['name']} {'up' if up else 'down'}"

    async def op_down(self, req):
        self.shutdown.set()
        return "stopping"

    # ------------------------------------------------------------------ waiting
    async def op_dns_watch(self, req, writer):
        """A DNS pod subscribes to the cluster zone (see daemon/feeds.py)."""
        await self.d.dns.serve(writer)
    op_dns_watch.raw = True

    async def op_ingress_watch(self, req, writer):
        """An ingress controller pod subscribes to its objects (see daemon/feeds.py)."""
        await self.d.ingress.serve(writer, req.get("pod"))
    op_ingress_watch.raw = True

    def op_ingress_applied(self, req):
        """An ingress controller's nginx now serves the snapshot with this digest."""
        self.d.ingress.applied(req.get("pod"), req.get("digest"))
        self.d.kick()
        return True

    async def op_wait(self, req, send):
        """Stream progress until a condition holds: `ready` (every pod Ready, every node Ready),
        `rollout` (a Deployment fully rolled out), `deleted` (pods gone)."""
        what = req.get("for", "ready")
        timeout = float(req.get("timeout", 120))
        pred, describe = self._condition(what, req)
        deadline = time.time() + timeout
        last = None
        fut = self.d.wait_for(pred)  # one waiter for the whole wait (one per tick piled up, each checked every pass)
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(fut), min(0.25, max(0.0, deadline - time.time())))
                    await send({"progress": describe(), "final": True})
                    await send({"result": True})
                    return
                except asyncio.TimeoutError:
                    pass
                msg = describe()
                if msg != last:
                    await send({"progress": msg})
                    last = msg
                if time.time() >= deadline:
                    await send({"error": f"timed out after {timeout:g}s: {msg}"})
                    return
        finally:  # a client gone or timed out: its waiter is not checked at every pass any longer
            fut.cancel()
    op_wait.streaming = True

    def _condition(self, what, req):
        store = self.cluster.store
        if what == "ready":
            def live_pods():  # finished pods (a Job's) count as done
                return [p for p in store.list("Pod") if not is_terminating(p) and not is_terminal(p)]

            def pred():
                nodes = store.list("Node")
                pods = live_pods()
                deps_ok = all(_deployment_done(d) for d in store.list("Deployment"))
                return all(_node_ready(n) for n in nodes) and all(is_ready(p) for p in pods) and deps_ok \
                    and self.d.ingress.settled(store)

            def describe():
                nodes = store.list("Node")
                pods = live_pods()
                pending = self.d.ingress.pending(store)
                return (f"nodes {sum(_node_ready(n) for n in nodes)}/{len(nodes)} Ready, "
                        f"pods {sum(is_ready(p) for p in pods)}/{len(pods)} Ready"
                        + (f", ingress controllers configuring: {', '.join(pending)}" if pending else ""))
            return pred, describe
        if what == "rollout":
            ns, name = req.get("namespace") or "default", req["name"]

            def pred():
                return _deployment_done(store.get("Deployment", ns, name))

            def describe():
                d = store.get("Deployment", ns, name)
                want = d.spec.replicas if d.spec.replicas is not None else 1
                st = d.status
                if st.updated_replicas < want:
                    return (f'Waiting for deployment "{name}" rollout to finish: {st.updated_replicas} out of '
                            f"{want} new replicas have been updated...")
                if st.replicas > st.updated_replicas:
                    return (f'Waiting for deployment "{name}" rollout to finish: {st.replicas - st.updated_replicas}'
                            " old replicas are pending termination...")
                if st.available_replicas < st.updated_replicas:
                    return (f'Waiting for deployment "{name}" rollout to finish: {st.available_replicas} of '
                            f"{st.updated_replicas} updated replicas are available...")
                return f'deployment "{name}" successfully rolled out'
            return pred, describe
        raise ApiError(f"cannot wait for {what!r}")


def _deployment_done(d) -> bool:
    want = d.spec.replicas if d.spec.replicas is not None else 1
    st = d.status
    return (st.observed_generation or 0) >= (d.metadata.generation or 0) and st.updated_replicas == want \
        and st.replicas == want and st.available_replicas == want


def _node_ready(n) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])


class _RawWriter:
    """The little of asyncio.StreamWriter the feeds use, over the HTTP connection's transport: after the
    response headers the feed writes its frames straight to the socket (HTTP/1.0, no chunking)."""

    def __init__(self, transport):
        self.t = transport

    def write(self, data: bytes) -> None:
        if self.t is not None and not self.t.is_closing():
            self.t.write(data)

    def is_closing(self) -> bool:
        return self.t is None or self.t.is_closing()

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        if self.t is not None:
            self.t.close()
