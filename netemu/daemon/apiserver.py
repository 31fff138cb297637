"""The lab's Kubernetes API server: kube-apiserver's REST API over HTTP (aiohttp on the control
process's event loop), in front of :class:`netemu.api.storage.Storage`.

It listens three ways, like a kind cluster's API server:
- the root-only Unix socket (the netemu CLI; trusted: only root can connect),
- https://127.0.0.1:<free port> on the host (kubectl and client libraries, with the kubeconfig's
  client certificate or a bearer token),
- https://<control-plane IP>:6443 inside the lab (pods, through the `kubernetes` Service, with their
  service-account token).
Anonymous requests over TCP get 401. Long requests (watch, log -f) stream.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import time
from typing import Optional
from urllib.parse import unquote

import yaml
from aiohttp import web

from netemu.api import discovery, errors
from netemu.spec import registry
from netemu.api.errors import ApiError
from netemu.spec.registry import Resource
from netemu.api.storage import Storage
from netemu.api.watchlog import Change, TooOld

log = logging.getLogger("netemu.apiserver")

JSON = "application/json"
MAX_REQUEST_BYTES = 3 * 1024 * 1024  # kube-apiserver's limit on a request body
TRUSTED = "netemu.trusted"


def _is_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def query_flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter as the API server reads it: given bare, as 1 or as true."""
    v = request.query.get(name)
    return v is not None and v.lower() in ("1", "true", "")


def _content_type(request: web.Request, default: str = "") -> str:
    return request.headers.get("Content-Type", default).split(";")[0].strip()


class ApiServer:
    def __init__(self, daemon, storage: Storage):
        self.d = daemon
        self.storage = storage
        self.pki = None  # set by the daemon once the lab's certificates exist
        self.app = web.Application(middlewares=[self._middleware], client_max_size=MAX_REQUEST_BYTES + 1)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.runner: Optional[web.AppRunner] = None
        self.sites: list[web.BaseSite] = []
        self.host_port: Optional[int] = None
        self.requests = 0

    # ------------------------------------------------------------------ listening
    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()

    async def serve_unix(self, sock) -> None:
        site = web.SockSite(self.runner, sock)
        await site.start()
        self.sites.append(site)

    async def serve_tls(self, sock, ssl_context) -> None:
        site = web.SockSite(self.runner, sock, ssl_context=ssl_context)
        await site.start()
        self.sites.append(site)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ auth and errors
    def _user(self, request: web.Request) -> Optional[str]:
        transport = request.transport
        if transport is None:
            return None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            return "system:admin"  # the Unix socket: only root can open it
        from netemu.api import pki as pki_mod

        who = pki_mod.client_identity(transport.get_extra_info("peercert"))
        if who:
            return who
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token and self.pki is not None:  # clients differ in the case
            return pki_mod.verify_token(self.pki, token.strip())
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        self.requests += 1
        try:
            if (request.content_length or 0) > MAX_REQUEST_BYTES:
                raise ApiError(413, "RequestEntityTooLarge",
                               f"Request entity too large: limit is {MAX_REQUEST_BYTES}")
            path = request.path
            user = self._user(request)
            if path not in ("/livez", "/readyz", "/healthz", "/version") and user is None:
                raise errors.unauthorized()
            request["user"] = user or "system:anonymous"
            try:
                return await handler(request)
            finally:
                self.d.flush_journal()  # what the answer reports survives a crash from now on
        except ApiError as e:
            return web.json_response(e.status(), status=e.code)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # one bad request never stops the lab for everyone else
            log.exception("API request failed: %s %s", request.method, request.path_qs)
            err = errors.internal(f"{type(e).__name__}: {e}")
            return web.json_response(err.status(), status=500)

    # ------------------------------------------------------------------ routing
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [unquote(p) for p in request.path.strip("/").split("/") if p]
        if not parts:
            return self._json({"paths": ["/api", "/api/v1", "/apis", "/version", "/livez", "/readyz", "/openapi/v2",
                                         "/openapi/v3"]})
        head = parts[0]
        if head in ("livez", "readyz", "healthz"):
            return web.Response(text="ok")
        if head == "version":
            return self._json(discovery.KUBE_VERSION)
        if head == "openapi":
            return self._openapi(parts[1:], request)
        if head == "netemu":
            return await self.d.lab_ops.handle(request, parts[1:])
        if head == "api":
            if len(parts) == 1:
                return self._discovery(request, core=True)
            if len(parts) == 2:
                return self._json(discovery.resource_list("", parts[1]))
            return await self._resource(request, "", parts[1], parts[2:])
        if head == "apis":
            if len(parts) == 1:
                return self._discovery(request, core=False)
            if len(parts) == 2:
                g = discovery.group(parts[1])
                if g is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return self._json(g)
            if len(parts) == 3:
                if parts[2] not in registry.groups().get(parts[1], []):
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return self._json(discovery.resource_list(parts[1], parts[2]))
            return await self._resource(request, parts[1], parts[2], parts[3:])
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _discovery(self, request: web.Request, core: bool) -> web.Response:
        accept = request.headers.get("Accept", "")
        for ctype, version in ((discovery.AGGREGATED, "apidiscovery.k8s.io/v2"),
                               (discovery.AGGREGATED_BETA, "apidiscovery.k8s.io/v2beta1")):
            marker = ctype.split(";", 1)[1]
            if marker in accept.replace(" ", ""):
                return web.Response(body=json.dumps(discovery.aggregated(core, version)).encode(),
                                    headers={"Content-Type": ctype})
        return self._json(discovery.api_versions() if core else discovery.group_list())

    def _openapi(self, rest: list[str], request: web.Request) -> web.Response:
        from netemu.api import openapi

        resources = registry.all_resources()
        doc = None
        if rest == ["v2"]:
            accept = request.headers.get("Accept", "*/*")
            if "json" not in accept and "*/*" not in accept:  # the protobuf form is not served
                raise ApiError(406, "NotAcceptable", "only application/json is served for /openapi/v2")
            doc = openapi.v2_document_json(resources)
        elif rest == ["v3"]:
            return self._json(openapi.v3_index(resources))
        elif len(rest) == 3 and rest[:2] == ["v3", "api"]:
            doc = openapi.v3_document_json("", rest[2], resources)
        elif len(rest) == 4 and rest[:2] == ["v3", "apis"]:
            doc = openapi.v3_document_json(rest[2], rest[3], resources)
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        body, digest = doc
        return web.Response(body=body, headers={"Content-Type": JSON, "ETag": f'"{digest}"'})

    @staticmethod
    def _json(obj, status: int = 200, warnings: Optional[list[str]] = None) -> web.Response:
        headers = {"Content-Type": JSON}
        resp = web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=status, headers=headers)
        for w in warnings or []:
            resp.headers.add("Warning", f'299 - "{_header_safe(w)}"')
        return resp

    # ------------------------------------------------------------------ resources
    async def _resource(self, request: web.Request, group: str, version: str, rest: list[str]) -> web.StreamResponse:
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            cand = registry.by_gvr(group, version, rest[2])
            if cand is not None and cand.namespaced:
                namespace, rest = rest[1], rest[2:]
        if rest and rest[0] == "watch":  # the old /watch/ path form
            rest = rest[1:]
            request = request.clone(rel_url=request.rel_url.update_query(watch="true"))
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res = registry.by_gvr(group, version, rest[0])
        if res is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if version != res.version:  # served at another of its versions: answer in that one
            res = dataclasses.replace(res, version=version, also_versions=())
        name = rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:]) if len(rest) > 2 else ""
        if res.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not res.namespaced:
            namespace = None
        q = request.query
        dry_run = q.get("dryRun") == "All"
        fv = q.get("fieldValidation") or "Warn"
        if fv not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(f'fieldValidation: Unsupported value: "{fv}": supported values: "Ignore", '
                                     '"Strict", "Warn"')
        m = request.method
        if name is None:
            if m == "GET":
                if query_flag(request, "watch"):
                    return await self._watch(request, res, namespace)
                return self._list(request, res, namespace)
            if m == "POST":
                from netemu.api.reviews import REVIEWS, review

                if res.kind in REVIEWS:
                    return self._json(review(res.kind, await self._lenient_body(request), request["user"], self.pki),
                                      201)
                if res.namespaced and namespace is None:
                    raise errors.method_not_allowed()
                obj, warnings = self.storage.create(res, namespace, await self._body(request), dry_run, fv)
                return self._json(obj, 201, warnings)
            if m == "DELETE":
                opts = await self._options(request)
                return self._json(self.storage.delete_collection(res, namespace, q.get("labelSelector"),
                                                                 q.get("fieldSelector"), opts, dry_run))
            raise errors.method_not_allowed()
        if sub:
            return await self._subresource(request, res, namespace or "", name, sub, dry_run, fv)
        if m == "GET":
            obj = self.storage.get(res, namespace or "", name)
            if _is_table(request):
                return self._json(self._table(res, [obj], request))
            return self._json(obj)
        if m == "PUT":
            obj, warnings = self.storage.update(res, namespace or "", name, await self._body(request), "", dry_run, fv)
            return self._json(obj, 200, warnings)
        if m == "PATCH":
            return await self._patch(request, res, namespace or "", name, "", dry_run, fv)
        if m == "DELETE":
            obj = self.storage.delete(res, namespace or "", name, await self._options(request), dry_run)
            return self._json(obj, 200)
        raise errors.method_not_allowed()

    async def _patch(self, request, res, namespace, name, sub, dry_run, fv) -> web.Response:
        ctype = _content_type(request)
        body = await request.read()
        if ctype == "application/apply-patch+yaml" and self.storage.store.find(
                res.kind, namespace if res.namespaced else "", name) is None:
            # server-side apply creates what does not exist yet
            from netemu.spec.documents import safe_load_limited

            try:
                data = safe_load_limited(body.decode("utf-8", "replace"))
            except yaml.YAMLError as e:
                raise errors.bad_request(f"error decoding YAML: {e}") from None
            obj, warnings = self.storage.create(res, namespace or None, data, dry_run, fv)
            return self._json(obj, 201, warnings)
        obj, warnings = self.storage.patch(res, namespace, name, body, ctype, sub, dry_run, fv)
        return self._json(obj, 200, warnings)

    async def _subresource(self, request, res: Resource, namespace: str, name: str, sub: str,
                           dry_run: bool, fv: str) -> web.StreamResponse:
        m = request.method
        if sub not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub == "status":
            if m == "GET":
                return self._json(self.storage.get(res, namespace, name))
            if m == "PUT":
                obj, w = self.storage.update(res, namespace, name, await self._body(request), "status", dry_run)
                return self._json(obj, 200, w)
            if m == "PATCH":
                return await self._patch(request, res, namespace, name, "status", dry_run, fv)
        elif sub == "scale":
            if m == "GET":
                return self._json(self.storage.scale(res, namespace, name))
            if m == "PUT":
                return self._json(self.storage.set_scale(res, namespace, name, await self._body(request), dry_run))
            if m == "PATCH":
                return self._json(self.storage.patch_scale(res, namespace, name, await request.read(),
                                                           _content_type(request), dry_run))
        elif sub == "eviction" and m == "POST":
            return self._json(self.storage.evict(namespace, name, await self._body(request)), 201)
        elif sub == "binding" and m == "POST":
            return self._json(self.storage.bind(namespace, name, await self._body(request)), 201)
        elif sub == "log" and m == "GET":
            return await self._log(request, namespace, name)
        elif sub == "token" and m == "POST" and res.kind == "ServiceAccount":
            from netemu.api.reviews import token_request

            self.storage.get(res, namespace, name)  # 404 for a ServiceAccount that does not exist
            return self._json(token_request(self.pki, namespace, name, await self._lenient_body(request)), 201)
        elif sub in ("exec", "attach", "portforward"):
            return await self.d.streams.handle(request, sub, namespace, name)
        raise errors.method_not_allowed()

    async def _body(self, request: web.Request):
        raw = await request.read()
        ctype = _content_type(request, JSON)
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                from netemu.spec.documents import safe_load_limited

                return safe_load_limited(raw.decode("utf-8", "replace"))
            if ctype == "application/vnd.kubernetes.protobuf":  # kubectl's typed clients
                from netemu.api import protobuf

                return protobuf.decode(raw)  # ProtobufError is a ValueError: bad_request below
            if ctype and ctype != JSON and not ctype.endswith("+json"):
                raise errors.unsupported_media(ctype)
            return json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError, yaml.YAMLError) as e:  # the YAML limits included
            raise errors.bad_request(f"error decoding the request body: {e}") from None

    async def _lenient_body(self, request: web.Request) -> dict:
        """For answers that barely read the request (reviews, token requests): kubectl sends those as
        protobuf of kinds the decoder has no table for, and their defaults do."""
        try:
            body = await self._body(request)
        except ApiError:
            return {}
        return body if isinstance(body, dict) else {}

    async def _options(self, request: web.Request) -> dict:
        opts = {}
        if request.can_read_body:
            body = await self._body(request)
            if isinstance(body, dict):
                opts.update(body)
        q = request.query
        if "gracePeriodSeconds" in q:
            opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "orphanDependents" in q:
            opts["orphanDependents"] = query_flag(request, "orphanDependents")
        return opts

    # ------------------------------------------------------------------ list and watch
    def _list(self, request: web.Request, res: Resource, namespace: Optional[str]) -> web.Response:
        q = request.query
        rv = self.storage.resource_version()
        items = self.storage.list(res, namespace, q.get("labelSelector"), q.get("fieldSelector"))
        limit = int(q.get("limit") or 0)
        meta: dict = {"resourceVersion": rv}
        start = int(q.get("continue") or 0) if (q.get("continue") or "").isdigit() else 0
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
            items = items[start:start + limit]
        elif start:
            items = items[start:]
        if _is_table(request):
            t = self._table(res, items, request)
            t["metadata"] = meta
            return self._json(t)
        return self._json({"kind": f"{res.kind}List", "apiVersion": res.group_version, "metadata": meta,
                           "items": items})

    def _table(self, res: Resource, items: list[dict], request: web.Request) -> dict:
        from netemu.api import tables

        include = request.query.get("includeObject", "Metadata")
        try:
            return tables.table(res.kind, res.group, items, time.time(), include, self._table_extra(res))
        except ValueError as e:
            raise errors.bad_request(str(e)) from None

    def _table_extra(self, res: Resource) -> Optional[dict]:
        if res.builtin:
            return None
        crd = self.storage.store.find("CustomResourceDefinition", "", f"{res.plural}.{res.group}")
        return {"crd": self.storage.dump(crd), "version": res.version} if crd is not None else None

    async def _watch(self, request: web.Request, res: Resource, namespace: Optional[str]) -> web.StreamResponse:
        from netemu.api.selectors import field_selector, label_selector

        q = request.query
        match_l, match_f = label_selector(q.get("labelSelector")), field_selector(res.kind, q.get("fieldSelector"))
        name_sel = None

        selective = bool(q.get("labelSelector") or q.get("fieldSelector"))

        def match(c: Change) -> bool:
            if c.kind != res.kind or (c.group != res.group and c.kind != "Event"):
                return False
            if namespace is not None and c.namespace != namespace:
                return False
            if not selective and name_sel is None:
                return True
            obj = c.obj
            return match_l(obj) and match_f(obj) and (name_sel is None or obj["metadata"]["name"] == name_sel)

        table = _is_table(request)
        include = q.get("includeObject", "Metadata")
        bookmarks = query_flag(request, "allowWatchBookmarks")
        timeout = float(q.get("timeoutSeconds") or 1800)
        sub = self.storage.watch.subscribe(match)  # before the backlog: nothing falls between them
        resp = web.StreamResponse(headers={"Content-Type": JSON, "Transfer-Encoding": "chunked"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def send(kind: str, obj: dict) -> None:
            if table and kind != "ERROR" and kind != "BOOKMARK":
                from netemu.api import tables

                obj = tables.table_row_event(res.kind, res.group, obj, time.time(), include, self._table_extra(res))
            await resp.write(json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n")

        async def send_change(c: Change) -> None:
            if not table and (c.api_version == res.group_version or c.kind == "Event"):
                # as stored: the JSON the window holds, sent as it is
                await resp.write(b'{"type":"' + c.type.encode() + b'","object":' + c.raw + b"}\n")
            else:
                await send(c.type, self.storage._as_version(res, c.obj))

        try:
            rv_text = q.get("resourceVersion") or ""
            last = int(self.storage.resource_version())
            if rv_text in ("", "0"):
                for obj in self.storage.list(res, namespace, q.get("labelSelector"), q.get("fieldSelector")):
                    await send("ADDED", obj)
                start = last
            else:
                start = int(rv_text)
                try:
                    backlog = self.storage.watch.since(start, match)
                except TooOld as e:
                    await send("ERROR", errors.gone(str(e)).status())
                    return resp
                for c in backlog:
                    await send_change(c)
                    start = c.rv
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                c = await sub.next(min(left, 30.0))
                if c is None:
                    if bookmarks:
                        await send("BOOKMARK", {"kind": res.kind, "apiVersion": res.group_version,
                                                "metadata": {"resourceVersion": self.storage.resource_version()}})
                    continue
                if c.rv <= start:
                    continue
                await send_change(c)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            sub.close()
        return resp

    # ------------------------------------------------------------------ logs
    async def _log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        from netemu import paths

        q = request.query
        pod_res = registry.by_kind("Pod")
        pod = self.storage.store.find("Pod", namespace, name)
        if pod is None:
            raise errors.not_found(pod_res, name)
        names = [c.name for c in pod.spec.containers]
        container = q.get("container")
        if not container:
            if len(names) != 1:
                raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                         f"[{' '.join(names)}]")
            container = names[0]
        elif container not in names:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        if query_flag(request, "previous"):
            raise errors.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        path = paths.container_log(self.d.name, namespace, name, container)
        if not os.path.exists(path):
            phase = pod.status.phase or "Pending"
            raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                                     f"{'ContainerCreating' if phase == 'Pending' else phase}")
        tail = int(q["tailLines"]) if q.get("tailLines", "").lstrip("-").isdigit() else None
        stamps = query_flag(request, "timestamps")
        limit = int(q["limitBytes"]) if q.get("limitBytes", "").isdigit() else None
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        def fmt(data: bytes) -> bytes:
            if not stamps:
                return data
            ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()).encode()
            return b"".join(ts + b" " + ln for ln in data.splitlines(keepends=True))

        with open(path, "rb") as f:
            data = f.read()
            if tail is not None and tail >= 0:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail else b""
            if limit is not None:
                data = data[:limit]
            await resp.write(fmt(data))
            if not query_flag(request, "follow"):
                return resp
            uid = pod.metadata.uid
            try:
                while True:
                    chunk = f.read(65536)
                    if chunk:
                        await resp.write(fmt(chunk))
                        continue
                    cur = self.storage.store.find("Pod", namespace, name)
                    if cur is None or cur.metadata.uid != uid:
                        break
                    await asyncio.sleep(0.1)
            except (ConnectionResetError, asyncio.CancelledError):
                pass
        return resp


def _header_safe(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")[:1000]
