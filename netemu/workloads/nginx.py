"""nginx (the stock welcome page) and nginxdemos/hello (a page about the server that answered).

nginx: `/` and `/index.html` give the welcome page, other paths nginx's 404 page, and methods
other than GET/HEAD on the page 405, as the stock configuration does.

nginxdemos/hello: every path gives the page (the image's try_files) with the server address
($server_addr:$server_port), server name ($hostname), date ($time_local), URI ($request_uri)
and a request ID ($request_id, 32 hex digits); no caching (`expires -1`). The `plain-text` tag
answers the same five fields as text lines: `Server address: 10.0.0.5:80` and so on.
"""
from __future__ import annotations

import html
import os

from netemu.workloads.httpbase import HTML, TEXT, Site, StandInHandler, time_local
from netemu.workloads.httpconn import serve_http
from netemu.workloads.listeners import Loop
from netemu.workloads.model import WorkloadContext, tcp_ports

WELCOME = """<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
body { max-width: 40em; margin: 2em auto; font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>The web server is up and answering: this is its default page, shown until a site of
your own is configured.</p>
<p>In netemu this page comes from a built-in stand-in for the nginx image, listening on the
container's ports inside the pod.</p>
<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""

NO_CACHE = (("Expires", "Thu, 01 Jan 1970 00:00:01 GMT"), ("Cache-Control", "no-cache"))


def error_page(status: int, phrase: str) -> str:
    return (f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n")


class WelcomeHandler(StandInHandler):
    def route(self) -> None:
        if self.path_only not in ("/", "/index.html"):
            self.reply(404, error_page(404, "Not Found"), HTML)
        elif self.command not in ("GET", "HEAD"):
            self.reply(405, error_page(405, "Not Allowed"), HTML)
        else:
            self.reply(200, WELCOME, HTML)


class HelloHandler(StandInHandler):
    plain_text = False

    def route(self) -> None:
        host, port = self.local_address
        fields = {"Server address": f"{host}:{port}", "Server name": self.server.hostname,
                  "Date": time_local(), "URI": self.path, "Request ID": os.urandom(16).hex()}
        if self.plain_text:
            body = "".join(f"{k}: {v}\n" for k, v in fields.items())
            self.reply(200, body, TEXT, NO_CACHE)
        else:
            self.reply(200, hello_page(fields), HTML, NO_CACHE)


class PlainHelloHandler(HelloHandler):
    plain_text = True


def hello_page(fields: dict[str, str]) -> str:
    rows = "\n".join(f"<p><span>{html.escape(k)}:</span> <span>{html.escape(v)}</span></p>"
                     for k, v in fields.items() if k != "Request ID")
    return f"""<!DOCTYPE html>
<html>
<head>
<title>Hello World</title>
<meta charset="utf-8">
<style>
body {{ margin: 0; font-family: Helvetica, Arial, sans-serif; background: #f4f4f4; }}
.info {{ margin: 3em auto; max-width: 34em; padding: 1em 2em; background: #fff; border-top: 6px solid #009639; }}
.info span:first-child {{ display: inline-block; width: 9em; font-weight: bold; }}
#footer {{ text-align: center; font-size: 0.8em; color: #666; }}
</style>
</head>
<body>
<div class="info">
{rows}
</div>
<div id="footer">Request ID: {html.escape(fields["Request ID"])}</div>
</body>
</html>
"""


def start_nginx(ctx: WorkloadContext, loop: Loop) -> None:
    site = Site(ctx)
    for port in tcp_ports(ctx, 80):
        serve_http(loop, port, WelcomeHandler, site)


def start_hello(ctx: WorkloadContext, loop: Loop) -> None:
    _start_hello(ctx, loop, HelloHandler)


def start_hello_plain(ctx: WorkloadContext, loop: Loop) -> None:
    _start_hello(ctx, loop, PlainHelloHandler)


def _start_hello(ctx: WorkloadContext, loop: Loop, handler: type[HelloHandler]) -> None:
    site = Site(ctx)
    for port in tcp_ports(ctx, 80):
        serve_http(loop, port, handler, site)
