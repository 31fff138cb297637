"""A lab's supervisor: the small process that restarts a crashed control process.

    netemu up ──fork──▶ supervisor (a lean interpreter, exec'd) ──fork──▶ control process ──▶ launcher ──▶ pods

`netemu up` forks the control process and then turns the process it forked it from into this one
(exec: a fresh interpreter of a few MB, not a copy of `up`). It holds the lab's owner lock
(netemu.locks) for the lab's whole life, so the lock stays held across restarts and a lab whose lock
is free is still one that nothing runs. It is a child subreaper: what the control process leaves
when it dies (its launcher, and the containers of a launcher that died) comes to it.

When the control process dies after the lab was up (killed, crashed, OOM), the supervisor starts a
new one with back-off (0.2 s, then 1, 2, 4 ... 30 s; a process that ran for a minute resets it):
`python -m netemu.daemon.main --resume LAB FD`, which resumes the lab from its state file and adopts
its kernel objects, its launcher and its running containers (netemu.daemon.recovery). It never
restarts one whose build did not finish (`up` reports that), nor one that ended with status 0 (the
lab was removed, by `down` or by a failed build's rollback), nor after the control process said the
lab is stopping. `netemu down` kills it first, so nothing is restarted behind `down`'s back.

A control process that is alive but wedged (its asyncio event loop blocked: an endless loop, a
blocking call) is restarted too, as a kubelet restarts a container whose liveness probe fails. Once
the lab is up, the control process's loop sends a heartbeat every second; when none came for
LIVENESS_SECONDS (30 s, NETEMU_LIVENESS_SECONDS; 0 turns the check off: generous, so that a big
lab's long reconcile pass is not taken for a wedge), the supervisor logs why, asks the process for
its Python stacks (SIGUSR2: faulthandler writes them to the lab's log), SIGKILLs it by its pid and
restarts it as after a crash (same back-off; it resumes from its state file). It never does so to a
stopped process (state T: a SIGSTOP is left to `down`, as before; the clock starts again when it
continues), nor after the control process said the lab is stopping, nor before it said the lab is
up (a build, or a resume, is not timed). The control process sends a heartbeat only when the
supervisor has read the last one, so a stopped supervisor never finds its link filled with them.

The link with the control process is a SOCK_SEQPACKET socketpair of JSON messages:

    control -> supervisor   {"ready": true}                  the lab is up (built, or resumed): the
                                                             liveness check starts
                            {"alive": true}                  heartbeat from the event loop, every
                                                             second once the lab is up
                            {"launcher": PID} + its socket   a launcher was started: keep its socket,
                                                             so that it outlives a control process
                            {"stopping": true}               `down` started: no restart from now on
    supervisor -> control   {"hello": {"launcher": PID|null, "restarts": N}} (+ the launcher's socket)
                                                             first message to a restarted process
                            {"exit": PID, "status": STATUS}  an adopted container ended

This module imports nothing heavy: the supervisor's own process loads only it.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import selectors
import signal
import socket
import sys
import time
from typing import Optional

from netemu import paths, procutil

log = logging.getLogger("netemu.supervisor")

FIRST_DELAY = 0.2
MAX_DELAY = 30.0
STABLE_SECONDS = 60.0  # a control process that ran this long after it was ready resets the back-off
MAX_BUFFERED_EXITS = 20_000
HEARTBEAT_SECONDS = 1.0  # how often the control process's loop says it is alive, once the lab is up
STACK_DUMP_WAIT = 0.5  # how long a wedged control process is given to write its stacks before SIGKILL
STACK_SIGNAL = signal.SIGUSR2  # faulthandler in the control process writes its Python stacks on it


def _liveness_seconds(default: float = 30.0) -> float:
    """NETEMU_LIVENESS_SECONDS: how long the control process may send no heartbeat before it counts as
    wedged; 0 (or less) turns the check off, anything else is at least a few heartbeats."""
    try:
        value = float(os.environ.get("NETEMU_LIVENESS_SECONDS", default))
    except ValueError:
        return default
    return 0.0 if value <= 0 else max(3 * HEARTBEAT_SECONDS, value)


LIVENESS_SECONDS = _liveness_seconds()


def wedged(last_heard: Optional[float], now: float, state: str, stopping: bool,
           limit: float = LIVENESS_SECONDS) -> bool:
    """Is the control process wedged: to be killed and restarted? Only when its liveness check runs
    (limit > 0, and it said the lab is up: last_heard is when its last heartbeat came), it has said
    nothing for `limit` seconds, it is running (state from /proc/PID/stat: not stopped, T/t, which is
    left to `down`; not gone, "" or Z, which the reaping sees) and the lab is not stopping."""
    if limit <= 0 or last_heard is None or stopping:
        return False
    if state in ("", "Z", "X", "x", "T", "t"):
        return False
    return now - last_heard >= limit


def pid_file(lab: str) -> str:
    return os.path.join(paths.lab_dir(lab), "supervisor.pid")


def read_pid(lab: str) -> Optional[int]:
    """The lab's supervisor, when it is alive (and really this lab's supervisor)."""
    try:
        with open(pid_file(lab)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if not procutil.alive(pid):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    return pid if b"netemu.daemon.supervisor" in argv and lab.encode() in argv else None


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _send(sock: socket.socket, msg: dict, fds: list[int] = ()) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def _python_env() -> dict:
    """The environment of a restarted control process: netemu importable wherever it is run from."""
    import netemu

    root = os.path.dirname(os.path.dirname(os.path.abspath(netemu.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def exec_supervisor(lab: str, child: int, chan_fd: int, owner_fd: Optional[int]) -> None:
    """Become the lab's supervisor (called in the process that forked the first control process)."""
    keep = [chan_fd] + ([owner_fd] if owner_fd is not None else [])
    for fd in keep:
        os.set_inheritable(fd, True)
    argv = [sys.executable, "-m", "netemu.daemon.supervisor", lab, str(child), str(chan_fd),
            str(owner_fd if owner_fd is not None else -1)]
    os.execve(sys.executable, argv, _python_env())


class Supervisor:
    def __init__(self, lab: str, child: int, chan_fd: int, owner_fd: int):
        self.lab = lab
        self.child: Optional[int] = child
        self.owner_fd = owner_fd
        self.chan: Optional[socket.socket] = socket.socket(fileno=chan_fd)
        self.chan.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.ready = False  # the current control process said the lab is up
        self.ever_ready = False
        self.stopping = False
        self.ready_at: Optional[float] = None
        self.delay = FIRST_DELAY
        self.restart_at: Optional[float] = None
        self.restarts = 0
        self.launcher_pid: Optional[int] = None
        self.launcher_sock: Optional[socket.socket] = None
        self.exits: collections.deque = collections.deque(maxlen=MAX_BUFFERED_EXITS)
        self.term = False
        # when the current control process's last heartbeat (or its "ready") came; None until the lab is up
        self.last_heard: Optional[float] = None
        self.liveness = LIVENESS_SECONDS

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.sel.register(rfd, selectors.EVENT_READ, "sig")
        self.sel.register(self.chan, selectors.EVENT_READ, "chan")
        log.info("supervising the control process (pid %s)", self.child)
        while True:
            now = time.monotonic()
            timeout = 2.0
            for at in (self.restart_at, self._liveness_deadline()):
                if at is not None:
                    timeout = max(0.0, min(timeout, at - now))
            for key, _ in self.sel.select(timeout):
                if key.data == "sig":
                    try:
                        os.read(rfd, 4096)
                    except BlockingIOError:
                        pass
                elif key.data == "chan":
                    self._read_chan()
            done = self._reap()
            if done is not None:
                return done
            if self.term:
                log.info("asked to stop (SIGTERM): the control process is left as it is")
                return 0
            if not os.path.isdir(paths.lab_dir(self.lab)):
                log.info("the lab's directory is gone: nothing left to supervise")
                return 0
            self._send_exits()
            self._check_liveness(time.monotonic())
            if self.child is None and self.restart_at is not None and time.monotonic() >= self.restart_at:
                self._start_child()

    def _on_term(self, *a) -> None:
        self.term = True

    # ------------------------------------------------------------------ messages from the control process
    def _read_chan(self) -> None:
        while self.chan is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self.chan, 65536, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("link with the control process: %s", e)
                data, fds = b"", []
            if not data:
                self._close_chan()
                return
            try:
                msg = json.loads(data)
            except ValueError:
                msg = {}
            if msg.get("ready"):
                self.ready = self.ever_ready = True
                self.ready_at = time.monotonic()
                log.info("the control process (pid %s) has the lab up", self.child)
            if msg.get("ready") or msg.get("alive"):
                self.last_heard = time.monotonic()
            if msg.get("stopping"):
                self.stopping = True
            if "launcher" in msg:
                self._set_launcher(msg["launcher"], fds[0] if fds else None)
                fds = fds[1:]
            for fd in fds:
                os.close(fd)

    def _set_launcher(self, pid: Optional[int], fd: Optional[int]) -> None:
        if self.launcher_sock is not None:
            self.launcher_sock.close()
        self.launcher_pid = pid
        self.launcher_sock = socket.socket(fileno=fd) if fd is not None else None

    def _close_chan(self) -> None:
        if self.chan is not None:
            try:
                self.sel.unregister(self.chan)
            except (KeyError, ValueError):
                pass
            self.chan.close()
            self.chan = None

    def _send_exits(self) -> None:
        while self.exits and self.chan is not None and self.child is not None:
            pid, status = self.exits[0]
            try:
                _send(self.chan, {"exit": pid, "status": status})
            except BlockingIOError:
                return
            except OSError:
                return  # the control process is going: the next one gets them
            self.exits.popleft()

    # ------------------------------------------------------------------ liveness
    def _liveness_deadline(self) -> Optional[float]:
        if self.child is None or self.last_heard is None or self.liveness <= 0 or self.stopping:
            return None
        return self.last_heard + self.liveness

    def _check_liveness(self, now: float) -> None:
        """Kill a wedged control process (see wedged()); its exit is then a crash like any other, so
        it is restarted with the usual back-off."""
        if self._liveness_deadline() is None or now - self.last_heard < 2 * HEARTBEAT_SECONDS:
            return  # not timed, or heard from lately
        pid = self.child
        state = procutil.stat_field(pid, 0)
        if state in ("T", "t"):
            # stopped: `down`'s business. Looked at every pass (two seconds at most) while it says
            # nothing, so that its silence counts from when it continues, not from when it stopped
            self.last_heard = now
            return
        if not wedged(self.last_heard, now, state, self.stopping, self.liveness):
            return
        wchan = _read_text(f"/proc/{pid}/wchan")
        log.error("the control process (pid %s) sent no heartbeat for %.1fs although it is running "
                  "(state %s%s): its event loop is blocked; killing it (SIGKILL) to restart it "
                  "(its Python stacks follow in this log)", pid, now - self.last_heard, state,
                  f", waiting in {wchan}" if wchan and wchan != "0" else "")
        self.last_heard = None  # one kill per process
        try:
            os.kill(pid, STACK_SIGNAL)  # faulthandler (set up by the control process) writes its stacks
            time.sleep(STACK_DUMP_WAIT)
            os.kill(pid, signal.SIGKILL)  # our child, not reaped yet: the pid is still this process's
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------ children
    def _reap(self) -> Optional[int]:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            if pid == self.child:
                done = self._child_exited(status)
                if done is not None:
                    return done
            elif pid == self.launcher_pid:
                log.warning("the pod launcher (pid %s) exited while adopted", pid)
                self._set_launcher(None, None)
            else:  # a container adopted from a launcher that died
                self.exits.append((pid, status))

    def _child_exited(self, status: int) -> Optional[int]:
        code = os.waitstatus_to_exitcode(status)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        pid, self.child = self.child, None
        self._close_chan()
        if self.stopping or code == 0:
            log.info("the control process (pid %s) %s: the lab is down", pid, how)
            return 0
        if not self.ever_ready:
            log.error("the control process (pid %s) %s before the lab was up: not restarting it", pid, how)
            return 0
        now = time.monotonic()
        if self.ready and self.ready_at is not None and now - self.ready_at >= STABLE_SECONDS:
            self.delay = FIRST_DELAY
        self.ready = False
        self.restart_at = now + self.delay
        log.error("the control process (pid %s) %s: restarting it in %.1fs", pid, how, self.delay)
        self.delay = min(MAX_DELAY, max(1.0, self.delay * 2))
        return None

    def _launcher_alive(self) -> bool:
        return self.launcher_pid is not None and self.launcher_sock is not None and procutil.alive(self.launcher_pid)

    def _start_child(self) -> None:
        self.restart_at = None
        self.restarts += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = _python_env()
        argv = [sys.executable, "-m", "netemu.daemon.main", "--resume", self.lab, str(theirs.fileno())]
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                os.set_inheritable(theirs.fileno(), True)
                if self.owner_fd >= 0:
                    os.set_inheritable(self.owner_fd, True)
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)
        theirs.close()
        self.child = pid
        self.chan = ours
        self.last_heard = None  # timed again once it has resumed the lab (its "ready")
        launcher = self._launcher_alive()
        if not launcher and self.launcher_sock is not None:
            self._set_launcher(None, None)
        hello = {"hello": {"launcher": self.launcher_pid if launcher else None, "restarts": self.restarts}}
        try:
            _send(ours, hello, [self.launcher_sock.fileno()] if launcher else [])
        except OSError as e:
            log.error("cannot greet the new control process: %s", e)
        ours.setblocking(False)
        self.sel.register(ours, selectors.EVENT_READ, "chan")
        log.info("started control process pid %s (restart %d)", pid, self.restarts)


# ---------------------------------------------------------------------------- the control process's end
class Link:
    """The control process's end of the link (see the module's docstring)."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.on_exit = None
        self._beating = None  # the heartbeat task, once the lab is up
        self._last_beat = 0.0
        self._stopping = False

    def hello(self, timeout: float = 10.0) -> tuple[dict, Optional[socket.socket]]:
        """The supervisor's greeting to a restarted control process: its launcher (pid, socket), if alive."""
        self.sock.settimeout(timeout)
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 65536, 4)
        finally:
            self.sock.settimeout(None)
        msg = json.loads(data).get("hello") or {}
        sock = None
        if fds:
            if msg.get("launcher"):
                sock = socket.socket(fileno=fds[0])
                fds = fds[1:]
            for fd in fds:
                os.close(fd)
        return msg, sock

    def attach(self, on_exit) -> None:
        """Exit reports from now on go to on_exit(pid, status), in the running loop."""
        import asyncio

        self.on_exit = on_exit
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        import asyncio

        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the supervisor is gone: this process goes on, unsupervised
                log.warning("the supervisor is gone: the lab runs on, but a crash will not be restarted")
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
                return
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if "exit" in msg and self.on_exit is not None:
                self.on_exit(int(msg["exit"]), int(msg["status"]))

    def _tell(self, msg: dict, fds: list[int] = (), quiet: bool = False) -> None:
        try:
            if not fds:
                self.sock.send(json.dumps(msg).encode())
            else:
                socket.send_fds(self.sock, [json.dumps(msg).encode()], list(fds))
        except OSError as e:  # never a reason for the lab to fail
            if not quiet:
                log.warning("cannot tell the supervisor %s: %s", list(msg), e)

    def ready(self) -> None:
        self._tell({"ready": True})

    def start_heartbeat(self) -> None:
        """The lab is up (built or resumed): from now on this event loop says it is alive every
        HEARTBEAT_SECONDS; a loop blocked for the supervisor's LIVENESS_SECONDS gets this process
        killed and restarted. Call it in the running loop."""
        import asyncio

        if (self._beating is None or self._beating.done()) and not self._stopping:
            self._beating = asyncio.get_running_loop().create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        import asyncio

        while not self._stopping:
            _test_wedge()
            self._beat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def progress(self) -> None:
        """Long work in the loop (a big lab's reconcile pass) says it is moving on: a heartbeat when one is
        due. A loop that makes progress is not wedged; one stuck in a call never gets here."""
        if self._beating is not None and not self._stopping and \
                time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
            self._beat()

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        if self._unread() == 0:  # not one more while the supervisor has not read the last (stopped?)
            self._tell({"alive": True}, quiet=True)

    def _unread(self) -> int:
        """What this end sent that the supervisor has not read yet, in bytes (0 if unknown)."""
        import fcntl
        import struct
        import termios

        try:
            return struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except (OSError, ValueError):
            return 0

    def stopping(self) -> None:
        self._stopping = True  # no heartbeat from now on: the supervisor does not time a lab going down
        self._tell({"stopping": True})

    def launcher(self, pid: int, sock: socket.socket) -> None:
        self._tell({"launcher": pid}, [sock.fileno()])


# Tests only: NETEMU_TEST_WEDGE_FILE names a file; while it exists and holds this control process's pid,
# its heartbeat blocks the event loop (time.sleep), as a blocking call in the loop would: what the
# supervisor's liveness check is for (tests/e2e/test_recovery.py). Read once, at start.
WEDGE_FILE = os.environ.get("NETEMU_TEST_WEDGE_FILE") or None


def _test_wedge() -> None:
    if WEDGE_FILE is None:
        return
    me = str(os.getpid())
    if _read_text(WEDGE_FILE) == me:
        log.warning("test hook (NETEMU_TEST_WEDGE_FILE): blocking the event loop while %s names this process",
                    WEDGE_FILE)
    while _read_text(WEDGE_FILE) == me:
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    lab, child, chan_fd, owner_fd = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    procutil.stdio_to_log(paths.daemon_log(lab))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from netemu.dataplane.cgroups import LabCgroups

        cg = LabCgroups(lab)
        cg.setup()
        cg.join_lab(os.getpid())  # with the control process: `down` finds it there too
    except OSError as e:
        log.warning("cannot join the lab's cgroup: %s", e)
    procutil.set_child_subreaper()
    procutil.write_pid_file(pid_file(lab))
    return Supervisor(lab, child, chan_fd, owner_fd).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
