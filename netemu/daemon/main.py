"""Starting a lab's control process, and its life until `down`.

`netemu up` forks the control process from itself (the lab file is already parsed and
validated; no second interpreter start), detaches it, and reads its build progress from a
pipe. A failed build is rolled back by the control process before it reports the error.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import traceback
from typing import Callable, Iterator, Optional

from netemu import paths, procutil
from netemu.dataplane.cgroups import LabCgroups
from netemu.dataplane import launcher as launcher_mod
from netemu.spec.models import K8sModel, Lab

log = logging.getLogger("netemu.daemon")


class BuildFailed(RuntimeError):
    """The build failed and the control process rolled everything back before it said so."""


class ControlProcessStopped(RuntimeError):
    """The control process stays stopped (SIGSTOP) in the middle of its build."""

    def __init__(self, pid: int):
        super().__init__(f"the control process (pid {pid}) is stopped")
        self.pid = pid


class ControlProcessDied(RuntimeError):
    """The control process ended (killed, crashed) before it reported success or a rolled-back failure:
    whatever it had built is still there."""

    def __init__(self, pid: Optional[int]):
        super().__init__(f"the control process{f' (pid {pid})' if pid else ''} exited during start-up")
        self.pid = pid


def spawn(lab: Lab, objects: list[K8sModel], on_progress: Callable[[str], None],
          owner_fd: Optional[int] = None) -> int:
    """Fork the control process; return its pid once the lab's network is built.
    Raises BuildFailed (with the reason) if building failed; everything is rolled back then.
    Raises ControlProcessDied if it ended without a word (nothing was rolled back).

    The process that forks the control process becomes the lab's supervisor (netemu.daemon.supervisor),
    holding `owner_fd` (the lab's owner lock) for the lab's life."""
    name = lab.metadata.name
    os.makedirs(paths.lab_dir(name), mode=0o700, exist_ok=True)
    os.chmod(paths.RUN_DIR, 0o755)
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            import socket

            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            child = os.fork()
            if child == 0:
                ours.close()
                _daemon_process(lab, objects, w, theirs.detach())
                os._exit(0)
            os.close(w)
            theirs.close()
            from netemu.daemon import supervisor

            supervisor.exec_supervisor(name, child, ours.detach(), owner_fd)
        except BaseException:
            traceback.print_exc()
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    daemon_pid = None
    for line in _lines(r, lambda: daemon_pid):
        tag, _, text = line.partition(" ")
        if tag == "PID":
            daemon_pid = int(text)
        elif tag == "P":
            on_progress(text)
        elif tag == "E":
            raise BuildFailed(text.replace("\\n", "\n"))
        elif tag == "OK":
            return daemon_pid or 0
    raise ControlProcessDied(daemon_pid)


STOPPED_SECONDS = 5.0  # a control process stopped (SIGSTOP) this long while building is reported


def _lines(fd: int, pid: Callable[[], Optional[int]]) -> Iterator[str]:
    """The control process's start-up lines, until it closes the pipe. A control process that stays
    stopped (state T) raises ControlProcessStopped rather than leaving `up` waiting forever."""
    import select

    buf = b""
    stopped_since: Optional[float] = None
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                p = pid()
                if p and procutil.stat_field(p, 0) in ("T", "t"):
                    stopped_since = stopped_since or time.monotonic()
                    if time.monotonic() - stopped_since >= STOPPED_SECONDS:
                        raise ControlProcessStopped(p)
                else:
                    stopped_since = None
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                if buf.strip():
                    yield buf.decode(errors="replace")
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
    finally:
        os.close(fd)


def _daemon_process(lab: Lab, objects: list[K8sModel], w: int, chan_fd: Optional[int] = None) -> None:
    name = lab.metadata.name
    pipe = os.fdopen(w, "w", buffering=1)

    def say(tag: str, text: str = "") -> None:
        try:
            pipe.write(f"{tag} {text}".rstrip() + "\n")
        except (BrokenPipeError, ValueError):
            pass

    cg = _process_setup(name, on_pid=lambda: say("PID", str(os.getpid())))
    from netemu.daemon.supervisor import Link

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
    from netemu.daemon.supervisor import STACK_SIGNAL

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
    from netemu.daemon.supervisor import Link

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
    from netemu.daemon.api import Api
    from netemu.daemon.lab import LabDaemon, unix_server_socket

    from netemu.daemon.apiserver import ApiServer
    from netemu.daemon import listeners

    from netemu.daemon import memory

    memory.limit_arenas()  # before the loop's worker threads exist
    name = lab.metadata.name
    daemon = LabDaemon(lab, objects, client, cg, progress=lambda s: say("P", s))
    daemon.supervisor = link
    if link is not None:
        link.attach(daemon.on_process_exit)
    api = Api(daemon)
    daemon.lab_ops = api
    from netemu.daemon.streams import Streams

    daemon.streams = Streams(daemon)  # pods/exec, attach, portforward
    from netemu.daemon import virtual

    virtual.install(daemon)
    from netemu.daemon import proxylog

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
