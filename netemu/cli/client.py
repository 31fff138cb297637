"""Talking to a lab's control process over its Unix socket."""
from __future__ import annotations

import http.client
import json
import socket
import sys
from typing import Any, Callable, Iterator, Optional

from netemu import paths
from netemu.cli.errors import CliError


class ApiCallError(CliError):
    """The Kubernetes API refused a request: its Status, printed as kubectl prints it
    (`Error from server (Reason): message`)."""

    def __init__(self, status: int, reason: str, message: str, body: Any = None):
        super().__init__(f"Error from server ({reason}): {message}")
        self.status, self.reason, self.api_message, self.body = status, reason, message, body


class LabNotRunning(CliError):
    """Nothing listens on the lab's socket: its control process is gone."""


class LabUnresponsive(CliError):
    """The control process did not answer in time (stopped, wedged or too busy)."""


class LabConnectionLost(CliError):
    """The control process closed the connection before its answer was complete."""


def pick_lab(name: Optional[str]) -> str:
    """--lab NAME, or the only lab that is up."""
    labs = paths.running_labs()
    if name:
        if name not in labs:
            raise CliError(f'lab "{name}" is not up' + (f" (labs up: {', '.join(labs)})" if labs else ""))
        return name
    if not labs:
        raise CliError("no lab is up: start one with `netemu up LAB.yaml`")
    if len(labs) > 1:
        raise CliError(f"more than one lab is up ({', '.join(labs)}): choose one with --lab NAME")
    return labs[0]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class Client:
    """HTTP over the lab's root-only Unix socket: the Kubernetes API (`rest`) and the lab's own verbs
    (`call`, `stream`, `wait`: POST /netemu/v1/<op>), served by one server in the control process."""

    def __init__(self, lab: str, timeout: Optional[float] = 20.0):  # a stopped lab says so soon
        self.lab = lab
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 headers: Optional[dict] = None) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        conn = _UnixConnection(paths.api_socket(self.lab), self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise self._transport_error(e) from None

    def _transport_error(self, e: BaseException) -> CliError:
        """A failure to talk to the control process, in words (never a traceback)."""
        if isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
            return LabNotRunning(f'lab "{self.lab}" has no control process running (it may have crashed): '
                                 f"`netemu down {self.lab}` cleans it up")
        if isinstance(e, PermissionError):
            return CliError("permission denied: netemu needs root (try sudo)")
        if isinstance(e, (socket.timeout, TimeoutError)):
            return LabUnresponsive(f'lab "{self.lab}": the control process did not answer within '
                                   f"{self.timeout:g}s (it may be stopped or overloaded; `netemu down {self.lab}` "
                                   "removes the lab all the same)")
        what = type(e).__name__ + (f": {e}" if str(e) else "")
        return LabConnectionLost(f'lab "{self.lab}": the control process closed the connection before answering '
                                 f"({what}); it may have crashed (`netemu labs` shows its state, "
                                 f"`netemu down {self.lab}` removes the lab)")

    def rest(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             accept: str = "application/json", warnings: Optional[list] = None) -> Any:
        """A Kubernetes API call; a Status failure raises ApiCallError (a CliError) with the server's
        message. The API's warnings (HTTP `Warning` headers) go to stderr as `Warning: ...`, as kubectl
        prints them, or into `warnings` when a list is given."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        conn, resp = self._request(method, path, data, {"Content-Type": content_type, "Accept": accept})
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._transport_error(e) from None
        finally:
            conn.close()
        self._warnings(resp, warnings)
        try:
            out = json.loads(raw) if raw else None
        except ValueError:
            out = raw.decode(errors="replace")
        if resp.status >= 400:
            raise _api_error(resp.status, out)
        return out

    def rest_lines(self, path: str, accept: str = "application/json") -> Iterator[dict]:
        """A streaming GET (a watch): one JSON object per line, until the server ends the stream."""
        conn, resp = self._request("GET", path, None, {"Accept": accept})
        try:
            self._warnings(resp, None)
            if resp.status >= 400:
                raw = resp.read()
                try:
                    out = json.loads(raw) if raw else None
                except ValueError:
                    out = raw.decode(errors="replace")
                raise _api_error(resp.status, out)
            for msg in self._lines(resp):
                yield msg
        finally:
            conn.close()

    def _lines(self, resp: http.client.HTTPResponse) -> Iterator[dict]:
        """The JSON objects of a line-per-object stream; a dropped connection or a cut line is an error."""
        while True:
            try:
                line = resp.readline()
            except (OSError, http.client.HTTPException) as e:
                raise self._transport_error(e) from None
            if not line:
                return
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                raise self._transport_error(http.client.IncompleteRead(line)) from None
            yield msg

    @staticmethod
    def _warnings(resp: http.client.HTTPResponse, into: Optional[list]) -> None:
        for header in resp.headers.get_all("Warning") or []:
            text = warning_text(header)
            if into is not None:
                into.append(text)
            else:
                print(f"Warning: {text}", file=sys.stderr)

    def stream(self, op: str, **fields: Any) -> Iterator[dict]:
        conn, resp = self._request("POST", f"/netemu/v1/{op}", json.dumps(fields).encode(),
                                   {"Content-Type": "application/json"})
        try:
            if resp.headers.get("Content-Type", "").startswith("application/json-seq"):
                for msg in self._lines(resp):
                    yield msg
            else:
                try:
                    raw = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    raise self._transport_error(e) from None
                try:
                    msg = json.loads(raw or b"{}")
                except ValueError:
                    raise self._transport_error(http.client.IncompleteRead(raw)) from None
                yield msg
        finally:
            conn.close()

    def call(self, op: str, **fields: Any) -> Any:
        for msg in self.stream(op, **fields):
            if "error" in msg:
                raise CliError(msg["error"])
            if "result" in msg:
                return msg["result"]
        raise LabConnectionLost(f'lab "{self.lab}": the control process closed the connection without an answer')

    def wait(self, on_progress: Callable[[str, bool], None], **fields: Any) -> None:
        for msg in self.stream("wait", **fields):
            if "progress" in msg:
                on_progress(msg["progress"], bool(msg.get("final")))
            elif "error" in msg:
                raise CliError(msg["error"])
            elif "result" in msg:
                return
        # a stream that ends without its result is not a success: the control process went away
        raise LabConnectionLost(f'lab "{self.lab}": the control process closed the connection before the wait '
                                "ended (it may have crashed: `netemu labs` shows its state)")


def _api_error(status: int, out: Any) -> ApiCallError:
    if isinstance(out, dict):
        return ApiCallError(status, out.get("reason") or str(status), out.get("message") or "", out)
    return ApiCallError(status, str(status), str(out or "").strip(), out)


def warning_text(header: str) -> str:
    """The text of an HTTP Warning header (`299 - "text"`), as kubectl prints it."""
    code, _, rest = header.strip().partition(" ")
    agent, _, text = rest.partition(" ")
    if code.isdigit() and text.startswith('"'):
        end = text.rfind('"')
        return text[1:end if end > 0 else None].replace('\\"', '"').replace("\\\\", "\\")
    return header.strip()
