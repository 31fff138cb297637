"""Container probes, run from the pod's node as kubelet runs them.

HTTP and TCP probes open their socket inside the node's network namespace (the socket stays
there after the thread steps back), so a probe crosses the node's bridge and veth like a real
kubelet's. Exec probes run the command inside the pod's namespaces.
"""
from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Optional

from netemu.dataplane import nsutil, podexec
from netemu.spec.models import Container, Probe

USER_AGENT = "kube-probe/1.31"


@dataclass
class ProbeResult:
    ok: bool
    message: str = ""


def resolve_port(container: Container, port) -> Optional[int]:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for cp in container.ports or []:
        if cp.name == port:
            return cp.container_port
    return None


async def run_probe(probe: Probe, container: Container, *, node_netns: str, pod_ip: str,
                    enter: Optional[list[str]]) -> ProbeResult:
    timeout = probe.timeout_seconds or 1
    try:
        if probe.http_get is not None:
            return await asyncio.wait_for(_http(probe, container, node_netns, pod_ip), timeout)
        if probe.tcp_socket is not None:
            return await asyncio.wait_for(_tcp(probe, container, node_netns, pod_ip), timeout)
        if probe.exec is not None:
            return await _exec(probe, enter, timeout)
    except asyncio.TimeoutError:
        return ProbeResult(False, f"timeout after {timeout}s")
    except OSError as e:
        return ProbeResult(False, str(e))
    return ProbeResult(True)


async def _connect(node_netns: str, host: str, port: int) -> socket.socket:
    # an IPv6 address (an IPv6-only lab's pod) needs an IPv6 socket
    sock = nsutil.socket_in(node_netns, socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _http(probe: Probe, container: Container, node_netns: str, pod_ip: str) -> ProbeResult:
    act = probe.http_get
    port = resolve_port(container, act.port)
    if port is None:
        return ProbeResult(False, f"port {act.port!r} not found in container {container.name}")
    host = act.host or pod_ip
    path = act.path or "/"
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address in brackets
    headers = {"Host": authority, "User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
    for h in act.http_headers or []:
        headers[h.name] = h.value
    req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    loop = asyncio.get_running_loop()
    sock = await _connect(node_netns, host, port)
    if (act.scheme or "HTTP") == "HTTPS":
        data = await _https_status(sock, req, host)
    else:
        try:
            await loop.sock_sendall(sock, req.encode())
            data = b""
            while b"\r\n" not in data and len(data) < 4096:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
    status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return ProbeResult(False, f"bad HTTP response {status_line!r}")
    code = int(parts[1])
    if 200 <= code < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {code}")


async def _https_status(sock, req: str, host: str) -> bytes:
    """kubelet's HTTPS probe: TLS without verifying the certificate, then the status line."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        reader, writer = await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=host)
    except (ssl.SSLError, OSError):
        sock.close()
        return b""
    try:
        writer.write(req.encode())
        await writer.drain()
        return await reader.readuntil(b"\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        return b""
    finally:
        writer.close()


async def _tcp(probe: Probe, container: Container, node_netns: str, pod_ip: str) -> ProbeResult:
    port = resolve_port(container, probe.tcp_socket.port)
    if port is None:
        return ProbeResult(False, f"port {probe.tcp_socket.port!r} not found")
    sock = await _connect(node_netns, probe.tcp_socket.host or pod_ip, port)
    sock.close()
    return ProbeResult(True)


async def _exec(probe: Probe, enter: Optional[list[str]], timeout: float) -> ProbeResult:
    if enter is None:
        return ProbeResult(False, "pod sandbox is not running")
    argv = podexec.command(enter, list(probe.exec.command))  # in the container, as its user
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return ProbeResult(False, f"command timed out after {timeout}s")
    if proc.returncode == 0:
        return ProbeResult(True)
    return ProbeResult(False, f"command exited with {proc.returncode}: {out.decode(errors='replace')[:200]}")
