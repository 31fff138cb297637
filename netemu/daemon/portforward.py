"""pods/portforward: connections to ports inside a pod's network namespace, as kubelet makes them.

Each forwarded connection dials localhost:<port> in the pod's namespace (the socket is made there by
a short-lived thread, since setns() moves only the calling thread, and connected from the loop), so
no host route to pod addresses is needed. Two forms:

- SPDY (plain, or tunnelled in WebSocket messages by kubectl >= 1.31): the client opens an error
  and a data stream per connection, paired by their requestID header; many pairs, concurrently.
- WebSocket v4.channel.k8s.io (the Python client): one connection per `ports=` port, data on
  channel 2i and errors on 2i+1, each announced by the port (2 bytes, little endian).

A port nothing listens on gets containerd's message on the error stream; the session goes on.
"""
from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import WSMsgType, web

from netemu.api import channels
from netemu.daemon.spdyconn import SpdyStream

log = logging.getLogger("netemu.portforward")

READ_SIZE = 1024 * 1024


class ConnectFailed(Exception):
    pass


def _socket_in_netns(netns_path: str, family: int) -> socket.socket:
    from netemu.dataplane.nsutil import socket_in

    s = socket_in(netns_path, family)
    s.setblocking(False)
    return s


def _go_error(e: OSError, network: str, addr: str) -> str:
    why = {111: "connection refused", 101: "network is unreachable", 99: "cannot assign requested address",
           113: "no route to host", 110: "connection timed out"}.get(e.errno or 0, (e.strerror or str(e)).lower())
    return f"dial {network} {addr}: connect: {why}"


async def connect(netns_path: str, port: int, sandbox: str) -> socket.socket:
    """localhost:<port> inside the namespace: IPv4 first, then IPv6 (containerd's order and words)."""
    loop = asyncio.get_running_loop()
    errors = []
    for family, host, network, shown in ((socket.AF_INET, "127.0.0.1", "tcp4", f"127.0.0.1:{port}"),
                                         (socket.AF_INET6, "::1", "tcp6", f"[::1]:{port}")):
        sock = await asyncio.to_thread(_socket_in_netns, netns_path, family)
        try:
            await loop.sock_connect(sock, (host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as e:
            sock.close()
            errors.append(_go_error(e, network, shown))
    raise ConnectFailed(f'failed to connect to localhost:{port} inside namespace "{sandbox}", '
                        f"IPv4: {errors[0]} IPv6 {errors[1]} ")


async def _pod_to_client(sock: socket.socket, send) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.sock_recv(sock, READ_SIZE)
        except OSError:
            return
        if not data:
            return
        await send(data)


# ---------------------------------------------------------------------- SPDY
class SpdyForwarder:
    """The streams of one SPDY port-forward session, paired by requestID."""

    def __init__(self, netns_path: str, pod_label: str, sandbox: str):
        self.netns_path = netns_path
        self.pod_label = pod_label
        self.sandbox = sandbox
        self.pairs: dict[str, dict[str, SpdyStream]] = {}
        self.tasks: set[asyncio.Task] = set()

    def on_stream(self, st: SpdyStream) -> None:
        kind = (st.header("streamType") or "").lower()
        rid = st.header("requestID") or ""
        pair = self.pairs.setdefault(rid, {})
        if kind not in ("data", "error") or kind in pair:
            st.abort()
            return
        pair[kind] = st
        if len(pair) == 2:
            del self.pairs[rid]
            t = asyncio.get_running_loop().create_task(self._forward(pair["data"], pair["error"]))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def _forward(self, data: SpdyStream, error: SpdyStream) -> None:
        try:
            port = int(data.header("port") or "")
        except ValueError:
            await self._fail(data, error, f'invalid port {data.header("port")!r}')
            return
        try:
            sock = await connect(self.netns_path, port, self.sandbox)
        except (ConnectFailed, OSError) as e:
            await self._fail(data, error, f"error forwarding port {port} to pod {self.pod_label}, uid : {e}")
            return
        loop = asyncio.get_running_loop()
        out = loop.create_task(self._out(sock, data))
        try:
            while True:  # client -> pod
                chunk = await data.read()
                if not chunk:
                    break
                await loop.sock_sendall(sock, chunk)
            if data.reset or data.session.closed.is_set():
                out.cancel()
            else:  # the client's half-close, passed on
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            await asyncio.gather(out, return_exceptions=True)
        except OSError:
            out.cancel()
        finally:
            sock.close()
            data.close()
            error.close()

    @staticmethod
    async def _out(sock: socket.socket, data: SpdyStream) -> None:
        try:
            await _pod_to_client(sock, data.write)
        except ConnectionError:
            return
        data.close()  # the pod closed its side: FIN

    @staticmethod
    async def _fail(data: SpdyStream, error: SpdyStream, message: str) -> None:
        log.info("%s", message)
        try:
            await error.write(message.encode())
        except ConnectionError:
            pass
        error.close()
        data.close()

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()


# ---------------------------------------------------------------------- WebSocket (v4 channels)
async def serve_websocket(ws: web.WebSocketResponse, protocol, ports: list[int], netns_path: str,
                          pod_label: str, sandbox: str) -> None:
    """The Python client's form: one connection per port, for the life of the WebSocket."""
    loop = asyncio.get_running_loop()
    socks: list = []

    async def send(channel: int, data: bytes) -> None:
        msg = channels.encode(channel, data, protocol)
        await (ws.send_str(msg) if isinstance(msg, str) else ws.send_bytes(msg))

    for i, port in enumerate(ports):  # every channel announces its port first, as kubelet does
        await send(channels.data_channel(i), channels.port_prefix(port))
        await send(channels.error_channel(i), channels.port_prefix(port))
    for i, port in enumerate(ports):
        try:
            socks.append(await connect(netns_path, port, sandbox))
        except (ConnectFailed, OSError) as e:
            msg = f"error forwarding port {port} to pod {pod_label}, uid : {e}"
            log.info("%s", msg)
            socks.append(None)
            await send(channels.error_channel(i), msg.encode())
    inboxes = [asyncio.Queue() for _ in ports]

    async def pod_to_ws(i: int, sock) -> None:
        try:
            await _pod_to_client(sock, lambda data: send(channels.data_channel(i), data))
        except ConnectionError:
            pass

    async def ws_to_pod(i: int, sock) -> None:
        while True:
            data = await inboxes[i].get()
            try:
                await loop.sock_sendall(sock, data)
            except OSError:
                return

    async def read_ws() -> None:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT) or not msg.data:
                continue
            ch, data = channels.decode(msg.data, protocol)
            i, is_error = channels.port_of_channel(ch)
            if i < len(ports) and not is_error and data and socks[i] is not None:
                inboxes[i].put_nowait(data)

    outs = [loop.create_task(pod_to_ws(i, s)) for i, s in enumerate(socks) if s is not None]
    ins = [loop.create_task(ws_to_pod(i, s)) for i, s in enumerate(socks) if s is not None]
    reader = loop.create_task(read_ws())
    all_out = loop.create_task(asyncio.wait(outs)) if outs else None
    try:
        # the session ends when the client goes, or when every pod connection has ended
        await asyncio.wait([t for t in (reader, all_out) if t is not None], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in outs + ins + [reader] + ([all_out] if all_out else []):
            t.cancel()
        await asyncio.gather(*outs, *ins, reader, return_exceptions=True)
        for s in socks:
            if s is not None:
                s.close()
        await ws.close()
