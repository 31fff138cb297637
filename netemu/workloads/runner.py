"""run_builtin: turn the forked container process into the stand-in for its image."""
from __future__ import annotations

import gc
import os
import signal
import threading
from typing import Callable, NoReturn

from netemu.workloads.addon import start_addon
from netemu.workloads.coredns import start_coredns
from netemu.workloads.counter import start_counter
from netemu.workloads.echo import start_echo_hname, start_echo_ip, start_generic
from netemu.workloads.ingress_nginx import start_ingress_nginx
from netemu.workloads.hpa_example import start_hpa_example
from netemu.workloads.kuard import start_kuard
from netemu.workloads.listeners import Loop, StartError
from netemu.workloads.podlog import write_log
from netemu.workloads.model import WorkloadContext
from netemu.workloads.nginx import start_hello, start_hello_plain, start_nginx
from netemu.workloads.redis import start_redis

THREAD_STACK = 512 << 10  # connection threads run shallow code; 8 MiB stacks would only waste address space

Starter = Callable[[WorkloadContext, Loop], None]

# builtin name -> (what opens its ports, what it is, for the start-up line)
BUILTINS: dict[str, tuple[Starter, str]] = {
    "echo-hname": (start_echo_hname, "echo-hname (answers its hostname)"),
    "echo-ip": (start_echo_ip, "echo-ip (answers method, server and client addresses)"),
    "nginx": (start_nginx, "nginx (the welcome page)"),
    "hello": (start_hello, "nginxdemos/hello (the server's address and name)"),
    "hello-plain": (start_hello_plain, "nginxdemos/hello:plain-text"),
    "kuard": (start_kuard, "kuard (probes that can be made to fail)"),
    "generic": (start_generic, "generic hostname page"),
    "redis": (start_redis, "built-in redis (in memory, a subset of the commands)"),
    "counter": (start_counter, "subicura/counter (hits counted in redis)"),
    "sleep": (lambda ctx, loop: None, "sleep (nothing to serve)"),
    "coredns": (start_coredns, "CoreDNS (the cluster zone, from the lab's control process)"),
    "ingress-nginx": (start_ingress_nginx, "ingress-nginx controller (real nginx, configured from the Ingresses)"),
    "hpa-example": (start_hpa_example, "hpa-example (php-apache: CPU work on every request)"),
    "addon": (start_addon, "a cluster add-on the lab does itself (answers its health checks)"),
}


def run_builtin(name: str, ctx: WorkloadContext, *, bind_address: str = "0.0.0.0") -> NoReturn:
    """Serve as the stand-in `name` until killed by a signal. Never returns.

    Meant for a freshly forked container process (stdout = the container's log). If the
    stand-in cannot start (a port taken, say), the reason goes to stderr and the process
    exits with status 1, like a container whose server fails to start. `bind_address` is for
    tests (127.0.0.1); in a pod the stand-in listens on every address of its namespace."""
    try:
        starter, description = BUILTINS[name]
    except KeyError:
        raise ValueError(f"no built-in program named {name!r} (known: {', '.join(sorted(BUILTINS))})") from None
    _become_service_process()
    loop = Loop(bind_address)
    try:
        starter(ctx, loop)
    except StartError as e:
        _fail(f"netemu stand-in {name}: {e}")
    where = ", ".join(loop.endpoints) or "no ports"
    write_log(f"netemu: stand-in {description} for image {ctx.image or '(none)'} "
              f"in pod {ctx.namespace}/{ctx.pod_name}, listening on {where}\n")
    if ctx.on_ready is not None:
        ctx.on_ready()
    loop.run_forever()


def _become_service_process() -> None:
    # stop when signalled, whatever handlers the launcher had (a Python handler would need
    # the main thread to get around to running it)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (ValueError, OSError):  # not the main thread: leave them be
            pass
    # objects inherited from the preloaded parent stay out of garbage collections, whose
    # bookkeeping would otherwise write to (and so un-share) every page holding one
    gc.freeze()
    threading.stack_size(THREAD_STACK)


def _fail(message: str) -> NoReturn:
    try:
        os.write(2, (message + "\n").encode())
    except OSError:
        pass
    os._exit(1)
