"""The pieces of pods/exec and pods/attach that need no lab: the exec command line, exit statuses, a
container's stdio (pipes and pty) and the error words of port-forward."""
from __future__ import annotations

import asyncio
import errno
import os

from netemu.api import channels
from netemu.daemon import execproc, portforward
from netemu.dataplane.stdio import STDERR, STDOUT, ContainerStdio


def test_the_exec_command_line_joins_the_cgroups_then_enters_the_pod():
    argv = execproc.command_line(["/sys/fs/cgroup/pids/netemu/l/u"], ["--net=/run/netns/x"], ["sh", "-c", "exit 3"],
                                 tty=True)
    assert argv[:5] == ["/bin/sh", "-c", execproc._JOIN, "sh", "/sys/fs/cgroup/pids/netemu/l/u/cgroup.procs"]
    rest = argv[argv.index("--") + 1:]
    from netemu.dataplane import podexec

    # the exec helper enters the container and drops to its user and capabilities
    assert rest == ["env", "--default-signal", "setsid", "-c", *podexec.command(["--net=/run/netns/x"],
                                                                                 ["sh", "-c", "exit 3"])]
    assert rest[4:7] == [podexec._python(), "-I", "-S"] and rest[-5:] == ["--net=/run/netns/x", "--", "sh", "-c",
                                                                           "exit 3"]
    assert "setsid" not in execproc.command_line([], [], ["true"], tty=False)


def test_the_join_script_runs_the_command_with_its_exit_code(tmp_path):
    import subprocess

    procs = tmp_path / "cgroup.procs"
    procs.write_text("")
    res = subprocess.run(["/bin/sh", "-c", execproc._JOIN, "sh", str(procs), "--", "sh", "-c", "exit 5"])
    assert res.returncode == 5
    assert procs.read_text().strip().isdigit()  # it wrote its own pid there first


def test_exit_statuses():
    assert execproc.exit_status(0, ["true"]) == channels.success()
    st = execproc.exit_status(7, ["sh"])
    assert st["reason"] == "NonZeroExitCode" and st["details"]["causes"][0]["message"] == "7"
    assert execproc.exit_status(-2, ["sleep"])["details"]["causes"][0]["message"] == "130"  # SIGINT: 128+2


def test_port_forward_errors_read_as_containerds():
    e = OSError(errno.ECONNREFUSED, "Connection refused")
    assert portforward._go_error(e, "tcp4", "127.0.0.1:8081") == "dial tcp4 127.0.0.1:8081: connect: connection refused"


def test_container_stdio_with_pipes(tmp_path):
    async def go():
        log = tmp_path / "logs" / "c.log"
        stdio = ContainerStdio(tty=False, log_path=str(log))
        paths = stdio.child_paths()
        assert not paths["tty"] and paths["stdin"].startswith(f"/proc/{os.getpid()}/fd/")
        q = stdio.subscribe()
        out = os.open(paths["stdout"], os.O_WRONLY)  # what the launcher's child does
        err = os.open(paths["stderr"], os.O_WRONLY)
        inp = os.open(paths["stdin"], os.O_RDONLY)
        os.write(out, b"to stdout\n")
        assert await asyncio.wait_for(q.get(), 5) == (STDOUT, b"to stdout\n")
        os.write(err, b"to stderr\n")
        assert await asyncio.wait_for(q.get(), 5) == (STDERR, b"to stderr\n")
        await stdio.write(b"typed\n")
        assert os.read(inp, 100) == b"typed\n"
        stdio.close_stdin()  # stdinOnce: the container reads its end
        assert os.read(inp, 100) == b""
        assert log.read_bytes() == b"to stdout\nto stderr\n"  # the log still has everything
        stdio.close()
        assert await q.get() is None
        for fd in (out, err, inp):
            os.close(fd)

    asyncio.run(go())


def test_container_stdio_with_a_terminal(tmp_path):
    async def go():
        stdio = ContainerStdio(tty=True, log_path=str(tmp_path / "t.log"))
        paths = stdio.child_paths()
        assert paths["tty"] and paths["stdin"] == paths["stdout"] == paths["stderr"]
        slave = os.open(paths["stdout"], os.O_RDWR | os.O_NOCTTY)
        q = stdio.subscribe()
        os.write(slave, b"prompt$ ")
        assert await asyncio.wait_for(q.get(), 5) == (STDOUT, b"prompt$ ")
        stdio.resize(120, 40)
        import fcntl
        import struct
        import termios

        rows, cols = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        assert (cols, rows) == (120, 40)
        os.close(slave)
        stdio.close()

    asyncio.run(go())
