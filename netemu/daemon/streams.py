"""pods/exec, pods/attach and pods/portforward: the streaming subresources, as kubectl and the
official clients speak them (netemu.api.channels, netemu.api.spdy).

The API server routes them here; we check the request as kube-apiserver and kubelet would (their
errors, their words), pick the transport the client asked for (WebSocket, or an HTTP upgrade to
SPDY/3.1), and run the session on the control process's event loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Optional

from aiohttp import web

from netemu.api import channels
from netemu.api.errors import ApiError
from netemu.daemon import execproc, portforward, streamio
from netemu.daemon.apiserver import query_flag
from netemu.daemon.execproc import PATH
from netemu.daemon.spdyconn import SpdySession
from netemu.dataplane.nsutil import netns_path

log = logging.getLogger("netemu.streams")

STREAM_CREATION_TIMEOUT = 30.0  # kubelet's: how long the client has to open its SPDY streams
LOG_POLL = 0.1  # attach to a container without stdio: its log, followed


def _plain(status: int, text: str) -> web.Response:
    """kubelet's errors are plain text: kubectl shows them as "unable to upgrade connection: <text>"
    (and, over WebSocket, falls back to SPDY first, which gets the same answer)."""
    return web.Response(status=status, text=text + "\n", content_type="text/plain")


class Streams:
    def __init__(self, daemon):
        self.d = daemon

    async def handle(self, request: web.Request, sub: str, namespace: str, name: str) -> web.StreamResponse:
        pod = self.d.cluster.store.find("Pod", namespace, name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        if not pod.spec.node_name:
            raise ApiError(400, "BadRequest", f"pod {name} does not have a host assigned")
        if pod.status.phase in ("Succeeded", "Failed"):
            raise ApiError(400, "BadRequest", f"cannot {sub} into a container in a completed pod; "
                                              f"current phase is {pod.status.phase}")
        rt = self.d.kubelet.runtime(namespace, name) if self.d.kubelet is not None else None
        if not (streamio.wants_websocket(request) or streamio.wants_spdy(request)):
            raise ApiError(400, "BadRequest", "Upgrade request required")
        if sub == "portforward":
            return await self._portforward(request, pod, rt)
        return await self._remotecommand(request, sub, pod, rt)

    # ------------------------------------------------------------------ exec and attach
    async def _remotecommand(self, request: web.Request, sub: str, pod, rt) -> web.StreamResponse:
        name = pod.metadata.name
        names = [c.name for c in pod.spec.containers]
        default = (pod.metadata.annotations or {}).get("kubectl.kubernetes.io/default-container")
        container = request.query.get("container") or (default if default in names else names[0])
        if container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        command = request.query.getall("command", [])
        if sub == "exec" and not command:
            raise ApiError(400, "BadRequest", "you must specify at least one command for the container")
        tty = query_flag(request, "tty")
        stdin, stdout = query_flag(request, "stdin"), query_flag(request, "stdout")
        stderr = query_flag(request, "stderr") and not tty  # a terminal has one output
        if not (stdin or stdout or query_flag(request, "stderr")):
            raise ApiError(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr")
        crt = rt.containers.get(container) if rt is not None else None
        enter = self.d.kubelet.nsenter_args(rt, container) if rt is not None else None
        if crt is None or crt.pid is None or enter is None:
            return _plain(404, f'container not found ("{container}")')

        remote, resp = await self._open_remote(request, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
        if remote is None:
            return resp
        try:
            if sub == "exec":
                cg = self.d.cgroups.pod(rt.cgroup_id)
                env = {"PATH": PATH, "HOME": "/root", **crt.env, "HOSTNAME": crt.env.get("HOSTNAME", name)}
                if tty:
                    env.setdefault("TERM", "xterm")
                status = await execproc.run(remote, command=command, enter=enter, cgroups=list(cg.dirs) if cg else [],
                                            env=env, cwd=crt.spec.working_dir or "/", tty=tty, stdin=stdin,
                                            stdout=stdout, stderr=stderr)
            else:
                status = await self._attach(remote, crt, rt, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
        except (OSError, RuntimeError) as e:
            log.warning("%s %s/%s failed: %s", sub, pod.metadata.namespace, name, e)
            status = channels.failure(f"Internal error occurred: error executing command in container: {e}")
        if status is not None:
            await remote.finish(status)
        elif isinstance(remote, streamio.WsRemote):
            await remote.ws.close()
        elif remote.session is not None:
            remote.session.close()
        return resp

    async def _open_remote(self, request: web.Request, *, stdin: bool, stdout: bool, stderr: bool, tty: bool):
        """(Remote, response) once the client is connected; (None, error response) if it can't be."""
        if streamio.wants_websocket(request):
            offers = channels.offered(request.headers.getall("Sec-WebSocket-Protocol", []))
            protocol = channels.choose(offers, channels.EXEC_WEBSOCKET)
            ws = await streamio.accept_websocket(request, protocol)
            remote = streamio.WsRemote(ws, protocol)
            await remote.start(channels.STDOUT if stdout else channels.STDERR if stderr else channels.ERROR)
            return remote, ws
        offers = channels.offered(request.headers.getall("X-Stream-Protocol-Version", []))
        protocol = channels.choose(offers, channels.EXEC_SPDY) or (None if offers else channels.V1)
        if protocol is None:
            return None, _plain(403, f"unable to upgrade: unable to negotiate protocol: client supports {offers}, "
                                     f"server supports {list(channels.EXEC_SPDY)}")
        expected = {"error"} | {k for k, on in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)) if on}
        if tty and protocol not in (channels.V1, channels.V2):
            expected.add("resize")
        remote = streamio.SpdyRemote(protocol, expected)
        session, resp = await streamio.upgrade_spdy(request, protocol, remote.on_stream)
        remote.attach(session)
        ready = asyncio.ensure_future(remote.ready.wait())
        await asyncio.wait([ready, asyncio.ensure_future(session.closed.wait())], timeout=STREAM_CREATION_TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)
        if not remote.ready.is_set():
            ready.cancel()
            if not session.closed.is_set() and "error" in remote.streams:
                await remote.finish(channels.failure("timed out waiting for client to create streams"))
            session.close()
            return None, resp
        return remote, resp

    async def _attach(self, remote, crt, rt, *, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Optional[dict]:
        """The container's own stdio until it exits or the client leaves."""
        exited = crt.exited
        stdio = crt.stdio
        tasks = []

        async def output() -> None:
            if stdio is None:  # no stdio of ours: its log, from now on
                await self._follow_log(remote, crt, rt)
                return
            q = stdio.subscribe()
            try:
                while True:
                    item = await q.get()
                    if item is None:
                        return
                    ch, data = item
                    if (ch == channels.STDOUT and stdout) or (ch == channels.STDERR and stderr):
                        await remote.write(ch, data)
                    elif ch == channels.STDERR and tty and stdout:
                        await remote.write(channels.STDOUT, data)
            finally:
                stdio.unsubscribe(q)

        async def input_() -> None:
            while True:
                data = await remote.read_stdin()
                if not data:
                    break
                await stdio.write(data)
            if crt.spec.stdin_once and not remote.gone.is_set():
                stdio.close_stdin()

        async def resizes() -> None:
            while True:
                w, h = await remote.resizes.get()
                stdio.resize(w, h)

        if stdout or stderr:
            tasks.append(asyncio.create_task(output()))
        if stdin and stdio is not None and stdio.stdin_fd is not None:
            tasks.append(asyncio.create_task(input_()))
        if tty and stdio is not None and stdio.tty:
            tasks.append(asyncio.create_task(resizes()))
        ended = asyncio.create_task(exited.wait())
        gone = asyncio.create_task(remote.gone.wait())
        try:
            await asyncio.wait([ended, gone], return_when=asyncio.FIRST_COMPLETED)
            if gone.done() and not ended.done():
                return None
            await asyncio.sleep(0.05)  # the last output of the container, relayed
            return channels.success()
        finally:
            for t in tasks + [ended, gone]:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow_log(self, remote, crt, rt) -> None:
        from netemu import paths

        path = paths.container_log(self.d.name, rt.namespace, rt.name, crt.spec.name)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return
        with f:
            f.seek(0, os.SEEK_END)
            while True:
                data = f.read(65536)
                if data:
                    await remote.write(channels.STDOUT, data)
                else:
                    await asyncio.sleep(LOG_POLL)

    # ------------------------------------------------------------------ port-forward
    async def _portforward(self, request: web.Request, pod, rt) -> web.StreamResponse:
        if rt is None or rt.sandbox is None:
            return _plain(404, f'pod "{pod.metadata.name}" is not running')
        netns = netns_path(rt.netns)
        label, sandbox = pod.metadata.name, rt.netns
        if streamio.wants_websocket(request):
            offers = channels.offered(request.headers.getall("Sec-WebSocket-Protocol", []))
            if channels.PORTFORWARD_TUNNEL in offers:  # kubectl: SPDY inside the WebSocket
                ws = await streamio.accept_websocket(request, channels.PORTFORWARD_TUNNEL)
                fw = portforward.SpdyForwarder(netns, label, sandbox)
                io = streamio.WsIO(ws)
                session = SpdySession(io, fw.on_stream)
                try:
                    await io.pump(session)
                finally:
                    fw.close()
                    session.close()
                    await ws.close()
                return ws
            try:
                ports = channels.parse_ports(request.query.getall("ports", []))
            except ValueError as e:
                raise ApiError(400, "BadRequest", str(e)) from None
            if not ports:
                raise ApiError(400, "BadRequest", "query parameter \"ports\" is required")
            protocol = channels.choose(offers, channels.PORTFORWARD_WEBSOCKET)
            ws = await streamio.accept_websocket(request, protocol)
            await portforward.serve_websocket(ws, protocol, ports, netns, label, sandbox)
            return ws
        offers = channels.offered(request.headers.getall("X-Stream-Protocol-Version", []))
        if offers and channels.PORTFORWARD not in offers:
            return _plain(403, f"unable to upgrade: unable to negotiate protocol: client supports {offers}, "
                               f"server supports {[channels.PORTFORWARD]}")
        fw = portforward.SpdyForwarder(netns, label, sandbox)
        session, resp = await streamio.upgrade_spdy(request, channels.PORTFORWARD, fw.on_stream)
        try:
            await session.closed.wait()
        finally:
            fw.close()
            session.close()
        return resp
