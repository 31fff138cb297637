"""A lab's control process, from its start until `down`: the process `netemu up` forks
(netemu.daemon.spawn) or a lab's supervisor restarts (`python -m netemu.daemon.main --resume`).

Everything the control process runs is imported here, at the top: `up` forks a child that imports
this module while it reads and validates the lab file, so that the control process starts with its
modules loaded.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Callable, Optional

from netemu import paths, procutil
from netemu.daemon import listeners, memory, proxylog, virtual
from netemu.daemon.api import Api
from netemu.daemon.apiserver import ApiServer
from netemu.daemon.lab import LabDaemon, unix_server_socket
from netemu.daemon.streams import Streams
from netemu.daemon.supervisor import STACK_SIGNAL, Link
from netemu.dataplane import launcher as launcher_mod
from netemu.dataplane.cgroups import LabCgroups
from netemu.spec.models import K8sModel, Lab

log = logging.getLogger("netemu.daemon")


def daemon_process(lab: Lab, objects: list[K8sModel], w: int, chan_fd: Optional[int] = None) -> None:
    """The control process of a lab `up` builds: its progress goes to the pipe `w`."""
    name = lab.metadata.name
    pipe = os.fdopen(w, "w", buffering=1)

    def say(tag: str, text: str = "") -> None:
        try:
            pipe.write(f"{tag} {text}".rstrip() + "\n")
        except (BrokenPipeError, ValueError):
            pass

    cg = _process_setup(name, on_pid=lambda: say("PID", str(os.getpid())))
    link = Link(chan_fd) if chan_fd is not None else None
    client = launcher_mod.LauncherClient(0, None)  # started once the lab's namespaces exist
    error = None
    try:
        asyncio.run(_main(lab, objects, client, cg, say, link))
    except BaseException as e:
        log.exception("control process failed")
        error = f"{type(e).__name__}: {e}" if not isinstance(e, RuntimeError) else str(e)
    finally:
        _remove_lab(name, client, link)
        if error:  # reported only once everything is rolled back
            say("E", error.replace("\n", "\\n"))
        try:
            pipe.close()
        except Exception:
            pass


def _process_setup(name: str, on_pid: Callable[[], None] = lambda: None) -> LabCgroups:
    """The control process's own set-up: its log, its pid file (on_pid right after it: `up` watches the
    process from then on), the lab's cgroup."""
    procutil.stdio_to_log(paths.daemon_log(name))
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    procutil.write_pid_file(paths.pid_file(name))
    on_pid()
    cg = LabCgroups(name)
    cg.setup()
    cg.join_lab(os.getpid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a wedged process's Python stacks, to the log, before its supervisor kills it (netemu.daemon.supervisor)
    import faulthandler

    faulthandler.register(STACK_SIGNAL, file=sys.stderr, all_threads=True)
    try:  # a descriptor per adopted container (pidfds), per pod's stdio, per connection
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 1 << 20)), hard))
    except (ValueError, OSError):
        pass
    # the store holds many long-lived objects: collect cycles rarely rather than rescanning
    # them all the time (rendering 10k Services otherwise pays for several full collections)
    import gc

    gc.set_threshold(50_000, 20, 50)
    return cg


RESUME_FAILED = 3  # the exit status of a restarted control process that could not resume (no teardown)


class ResumeFailed(RuntimeError):
    pass


def resume_process(name: str, chan_fd: int) -> int:
    """A control process restarted by the lab's supervisor: resume the lab from its state file,
    adopting what runs (netemu.daemon.recovery). Returns the exit status."""
    cg = _process_setup(name)
    link = Link(chan_fd)
    log.info("control process restarted (pid %d): resuming lab %s", os.getpid(), name)
    try:
        hello, launcher_sock = link.hello()
        from netemu.daemon import recovery

        lab, objects, extra = recovery.read_state(name)
    except Exception:
        log.exception("cannot resume the lab")
        return RESUME_FAILED
    client = launcher_mod.LauncherClient(hello.get("launcher") or 0, launcher_sock)
    removed = False
    try:
        asyncio.run(_main(lab, objects, client, cg, lambda tag, text="": None, link,
                          resume=(hello, extra)))
        removed = True
    except ResumeFailed as e:
        log.error("cannot resume the lab: %s", e)
        return RESUME_FAILED
    except BaseException:
        log.exception("control process failed")
        removed = True
    finally:
        if removed:
            _remove_lab(name, client, link)
    return 0


def _remove_lab(name: str, client, link) -> None:
    """The end of a control process that is not restarted: the supervisor told so first, then the
    launcher stopped and everything the lab made removed."""
    if link is not None:
        link.stopping()
    _stop_launcher(client)
    from netemu.dataplane.teardown import full_teardown

    full_teardown(name, exclude_pids=(os.getpid(),))


def _stop_launcher(client) -> None:
    try:
        if client.sock is not None:
            client.sock.close()
        if client.pid:
            os.kill(client.pid, signal.SIGKILL)
            os.waitpid(client.pid, 0)  # reaped here, or it would linger in the lab's cgroup
    except (OSError, ProcessLookupError, ChildProcessError):
        pass


async def _main(lab: Lab, objects, client, cg, say, link=None, resume=None) -> None:
    memory.limit_arenas()  # before the loop's worker threads exist
    name = lab.metadata.name
    daemon = LabDaemon(lab, objects, client, cg, progress=lambda s: say("P", s))
    daemon.supervisor = link
    if link is not None:
        link.attach(daemon.on_process_exit)
    api = Api(daemon)
    daemon.lab_ops = api
    daemon.streams = Streams(daemon)  # pods/exec, attach, portforward
    virtual.install(daemon)
    proxylog.install(daemon)
    # one HTTP server: the Kubernetes API and the lab's own verbs, on the root-only socket first
    server = ApiServer(daemon, daemon.storage)
    await server.start()
    await server.serve_unix(unix_server_socket(paths.api_socket(name)))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, api.shutdown.set)
    if resume is not None:
        try:  # the same CA, certificates and port: kubeconfigs and tokens stay valid
            await listeners.serve_host(daemon, server, reuse=True)
            await daemon.resume(*resume)
            await listeners.serve_in_lab(daemon, server)
        except BaseException as e:
            log.exception("resuming")
            await daemon.stop_for_restart()
            await server.close()
            raise ResumeFailed(f"{type(e).__name__}: {e}") from None
    else:
        try:
            # certificates before any pod starts: pods get a service-account token signed by the lab's CA
            await listeners.serve_host(daemon, server)
            await daemon.build()
            await listeners.serve_in_lab(daemon, server)
        except BaseException:
            await daemon.teardown()
            await server.close()
            raise
    runner = asyncio.create_task(daemon.run())
    daemon.persist_now()  # what a restart resumes from exists before anyone is told the lab is up
    if link is not None:
        link.ready()
        link.start_heartbeat()  # the supervisor's liveness check: a wedged loop is killed and restarted
        daemon.cluster.progress = link.progress  # a long pass is progress, not a wedge
    say("OK")
    await api.shutdown.wait()
    log.info("shutting down")
    await daemon.teardown()
    runner.cancel()
    await server.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--resume":
        os._exit(resume_process(sys.argv[2], int(sys.argv[3])))
    print("usage: python -m netemu.daemon.main --resume LAB FD (run by a lab's supervisor)", file=sys.stderr)
    sys.exit(2)
