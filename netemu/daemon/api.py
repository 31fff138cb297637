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

from netemu.control import labels as labelsel
from netemu.control.cluster import AdmissionError
from netemu.control.nodes import set_unschedulable
from netemu.control.pods import is_ready, is_terminating
from netemu.control.store import Conflict, NotFound
from netemu.spec.models import KINDS, NAMESPACED

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
                "syncs": self.d.sync_count}

    def op_lab(self, req):
        return self.d.lab.dump()

    def op_get(self, req):
        kind = req["kind"]
        ns = req.get("namespace")  # None: all namespaces
        name = req.get("name")
        store = self.cluster.store
        if kind == "Endpoints":
            return self._endpoints(ns, name)
        if name:
            return [store.get(kind, ns or "default", name).dump()]
        objs = store.list(kind, ns if kind in NAMESPACED else None)
        if req.get("selector"):
            sel = labelsel.parse(req["selector"])
            objs = [o for o in objs if labelsel.matches(sel, o.metadata.labels)]
        return [o.dump() for o in sorted(objs, key=lambda o: (o.metadata.namespace or "", o.metadata.name))]

    def _endpoints(self, ns, name):
        from netemu.control.endpoints import SERVICE_NAME_LABEL, endpoints_view

        store = self.cluster.store
        svcs = [store.get("Service", ns or "default", name)] if name else store.list("Service", ns)
        out = []
        for svc in sorted(svcs, key=lambda s: (s.metadata.namespace, s.metadata.name)):
            if svc.spec.type == "ExternalName":
                continue
            slices = [s for s in store.list("EndpointSlice", svc.metadata.namespace)
                      if (s.metadata.labels or {}).get(SERVICE_NAME_LABEL) == svc.metadata.name]
            out.append(endpoints_view(svc, slices))
        return out

    def op_events(self, req):
        out = []
        for e in self.cluster.events:
            if req.get("namespace") and e.namespace not in (req["namespace"], ""):
                continue
            if req.get("kind") and (e.kind, e.name) != (req["kind"], req.get("name")):
                continue
            out.append(vars(e))
        return out

    def op_runtime(self, req):
        """Where a pod's processes live, for exec / logs."""
        ns, name = req.get("namespace") or "default", req["name"]
        pod = self.cluster.store.get("Pod", ns, name)
        rt = self.d.kubelet.runtime(ns, name) if self.d.kubelet else None
        from netemu import paths

        enter = self.d.kubelet.nsenter_args(rt) if rt is not None else None
        if enter is None:
            raise ApiError(f'pod "{name}" is not running (status: {pod.status.phase})')
        cg = self.d.cgroups.pod(rt.cgroup_id)
        return {
            "enter": enter,
            "cgroups": list(cg.dirs) if cg else [],
            "netns": rt.netns,
            "node": rt.node,
            "containers": {c: {"pid": crt.pid, "log": paths.container_log(self.d.name, ns, name, c)}
                           for c, crt in rt.containers.items()},
        }

    def op_top(self, req):
        """metrics.k8s.io, for `top`: pods (kind Pod, namespace None = all) or nodes."""
        from netemu.dataplane.metrics import top_nodes, top_pods

        if req.get("kind") == "Node":
            return top_nodes(self.d.metrics, self.cluster.store, req.get("name"))
        return top_pods(self.d.metrics, self.cluster.store, req.get("namespace"), req.get("name"))

    async def op_rules(self, req):
        """What is loaded on a node now (iptables-save in its namespace)."""
        node = self.cluster.store.get("Node", "", req["name"]).metadata.name
        if self.d.proxy is None:
            raise ApiError("kube-proxy is not running in this lab")
        return await asyncio.to_thread(self.d.proxy.rules, node)

    async def op_trace_nft(self, req):
        """nftables mode: new connections ("packets": [{src, dst, dport, proto}]) followed through the
        ruleset kube-proxy writes for the node's current view (the lab loads an equivalent form of it),
        rendered once for all of them."""
        node = self.cluster.store.get("Node", "", req["name"]).metadata.name
        n = self.d.proxy.nodes[node] if self.d.proxy is not None else None
        if n is None or n.backend.mode != "nftables":
            raise ApiError("this lab's kube-proxy is not in nftables mode")
        if n.view is None:
            raise ApiError(f"kube-proxy on {node} has not synced yet")

        def run():
            from netemu.dataplane.proxy.nftables import render
            from netemu.dataplane.proxy.nftables_trace import trace_packet

            state = render(n.view, n.backend.syncer.renderer.settings).state()
            out = []
            for pk in req["packets"]:
                t = trace_packet(state, pk["src"], pk["dst"], int(pk["dport"]), pk.get("proto", "tcp"),
                                 req.get("node_ips") or [n.ip])
                out.append({"matches": t.matches, "steps": [list(x) for x in t.steps],
                            "outputs": [[o, float(p)] for o, p in t.outputs], "masq": t.masq})
            return out

        return await asyncio.to_thread(run)

    def op_node_netns(self, req):
        node = self.cluster.store.get("Node", "", req["name"])
        return self.d.net.node_netns(node.metadata.name)

    # ------------------------------------------------------------------ writes
    def op_apply(self, req):
        objs = [_model(o) for o in req["objects"]]
        results = self.cluster.apply(objs)
        self.d.kick()
        return [str(r) for r in results]

    def op_expose(self, req):
        from netemu.control.expose import ExposeError, expose

        obj = self.cluster.store.get(req["kind"], req.get("namespace") or "default", req["name"])
        try:
            svc = expose(obj, name=req.get("service_name"), type_=req.get("type") or "ClusterIP",
                         port=req.get("port"), target_port=req.get("target_port"), protocol=req.get("protocol"),
                         external_ip=req.get("external_ip"), session_affinity=req.get("session_affinity"),
                         cluster_ip=req.get("cluster_ip"), load_balancer_ip=req.get("load_balancer_ip"),
                         selector=_selector_map(req.get("selector")))
        except ExposeError as e:
            raise ApiError(str(e)) from None
        if self.cluster.store.find("Service", svc.metadata.namespace, svc.metadata.name):
            raise ApiError(f'services "{svc.metadata.name}" already exists')
        self.cluster.apply([svc])
        self.d.kick()
        return f"service/{svc.metadata.name} exposed"

    def op_delete(self, req):
        kind, ns, name = req["kind"], req.get("namespace") or "default", req["name"]
        pod_grace = req.get("grace")
        if kind == "Pod" and pod_grace is not None:
            self.cluster.delete_pod(self.cluster.store.get("Pod", ns, name), grace=int(pod_grace))
        else:
            self.cluster.delete(kind, ns, name)
        self.d.kick()
        return f"{kind.lower()} \"{name}\" deleted"

    def op_scale(self, req):
        obj = self.cluster.scale(req["kind"], req.get("namespace") or "default", req["name"], int(req["replicas"]))
        self.d.kick()
        return f"{_resource(obj.kind)}/{obj.metadata.name} scaled"

    def op_cordon(self, req):
        node = self.cluster.store.get("Node", "", req["name"])
        changed = set_unschedulable(self.cluster, node, bool(req.get("value", True)))
        self.d.kick()
        verb = "cordoned" if req.get("value", True) else "uncordoned"
        return f"node/{node.metadata.name} {verb if changed else 'already ' + verb}"

    def op_drain(self, req):
        node = self.cluster.store.get("Node", "", req["name"])
        set_unschedulable(self.cluster, node, True)
        evicted = []
        for pod in self.cluster.store.list("Pod"):
            if pod.spec.node_name == node.metadata.name and not is_terminating(pod):
                self.cluster.delete_pod(pod)
                evicted.append(f"{pod.metadata.namespace}/{pod.metadata.name}")
        self.d.kick()
        return {"node": node.metadata.name, "evicted": evicted}

    def op_announcements(self, req):
        """Which node announces which LoadBalancer IP (MetalLB layer 2), and the speakers."""
        from netemu.control import metallb_l2

        a = metallb_l2.announcements(self.cluster)
        services = {f"{ns}/{name}": {"node": x.node, "ips": list(x.ips), "reason": x.reason, "failed": x.failed}
                    for (ns, name), x in a.services.items()}
        return {"by_ip": dict(a.by_ip), "by_node": {n: sorted(ips) for n, ips in a.by_node.items()},
                "services": services, "speakers": self.d.speakers.stats() if self.d.speakers else {}}

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
        """A DNS pod subscribes to the cluster zone (see daemon/dnsfeed.py)."""
        await self.d.dns.serve(writer)
    op_dns_watch.raw = True

    async def op_ingress_watch(self, req, writer):
        """An ingress controller pod subscribes to its objects (see control/ingress_feed.py)."""
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
        while True:
            fut = self.d.wait_for(pred)
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
    op_wait.streaming = True

    def _condition(self, what, req):
        store = self.cluster.store
        if what == "ready":
            def pred():
                nodes = store.list("Node")
                pods = [p for p in store.list("Pod") if not is_terminating(p)]
                deps_ok = all(_deployment_done(d) for d in store.list("Deployment"))
                return all(_node_ready(n) for n in nodes) and all(is_ready(p) for p in pods) and deps_ok \
                    and self.d.ingress.settled(store)

            def describe():
                nodes = store.list("Node")
                pods = [p for p in store.list("Pod") if not is_terminating(p)]
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


def _selector_map(text):
    if not text:
        return None
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            raise ApiError(f"--selector {text!r}: expected key=value pairs")
        out[k.strip()] = v.strip()
    return out


def _deployment_done(d) -> bool:
    want = d.spec.replicas if d.spec.replicas is not None else 1
    st = d.status
    return (st.observed_generation or 0) >= (d.metadata.generation or 0) and st.updated_replicas == want \
        and st.replicas == want and st.available_replicas == want


def _node_ready(n) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])


def _model(data: dict):
    kind = data.get("kind")
    model = KINDS.get(kind)
    if model is None:
        raise ApiError(f"kind {kind!r} is not supported")
    return model.model_validate(data)


def _resource(kind: str) -> str:
    from netemu.control.cluster import resource_name

    return resource_name(kind)


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
