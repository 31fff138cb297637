"""The built-in redis (RESP framing, commands, pipelining, telnet-style inline commands) and
the counter app that keeps its hits in it."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from netemu.workloads import resp
from netemu.workloads.counter import CounterError, redis_port
from netemu.workloads.testing import Launcher, RespClient, free_port, http_request


@pytest.fixture
def launcher(tmp_path):
    pods = Launcher(tmp_path)
    yield pods
    pods.kill_all()


@pytest.fixture
def redis_port_(launcher):
    port = free_port()
    launcher.start("redis", "redis", ports=[port])
    return port


@pytest.fixture
def client(redis_port_):
    c = RespClient(redis_port_)
    yield c
    c.close()


# -------------------------------------------------------------------------------- framing
def test_reader_takes_pipelined_commands_however_tcp_cut_them():
    stream = resp.command("SET", "k", "v") + resp.command("INCR", "n") + b"PING\r\n" + resp.command("GET", "k")
    reader, seen = resp.CommandReader(), []
    for i in range(0, len(stream), 5):  # five bytes at a time
        reader.feed(stream[i:i + 5])
        seen += list(reader.commands())
    assert seen == [[b"SET", b"k", b"v"], [b"INCR", b"n"], [b"PING"], [b"GET", b"k"]]
    assert reader.buf == bytearray()


def test_reader_keeps_binary_values_intact_and_rejects_garbage():
    reader = resp.CommandReader()
    reader.feed(resp.command("SET", "k", b"a\r\nb\0c"))
    assert list(reader.commands()) == [[b"SET", b"k", b"a\r\nb\0c"]]
    reader.feed(b"*1\r\n+oops\r\n")
    with pytest.raises(resp.ProtocolError, match="expected '\\$', got '\\+'"):
        list(reader.commands())


def test_redis_port_accepts_a_number_or_a_service_link():
    assert redis_port("6379") == 6379 and redis_port("tcp://10.96.0.20:6380") == 6380
    with pytest.raises(CounterError, match="not a port number"):
        redis_port("six")


# ------------------------------------------------------------------------------ the server
def test_set_get_incr_del_exists(client):
    client.send(resp.command("SET", "greeting", "hello"))
    assert client.line() == b"+OK\r\n"
    client.send(resp.command("GET", "greeting"))
    assert client.line() == b"$5\r\n" and client.line() == b"hello\r\n"
    client.send(resp.command("GET", "missing"))
    assert client.line() == b"$-1\r\n"
    for expected in (b":1\r\n", b":2\r\n"):
        client.send(resp.command("INCR", "hits"))
        assert client.line() == expected
    client.send(resp.command("INCRBY", "hits", "40"))
    assert client.line() == b":42\r\n"
    client.send(resp.command("INCR", "greeting"))
    assert client.line() == b"-ERR value is not an integer or out of range\r\n"
    client.send(resp.command("EXISTS", "hits", "greeting", "missing"))
    assert client.line() == b":2\r\n"
    client.send(resp.command("DEL", "hits", "missing"))
    assert client.line() == b":1\r\n"


def test_pipelined_commands_get_their_replies_in_order(client):
    client.send(resp.command("SET", "a", "1") + resp.command("INCR", "a") + resp.command("INCRBY", "a", "10")
                + resp.command("GET", "a") + resp.command("PING"))
    assert [client.line() for _ in range(6)] == [b"+OK\r\n", b":2\r\n", b":12\r\n", b"$2\r\n", b"12\r\n",
                                                 b"+PONG\r\n"]


def test_telnet_style_inline_commands_as_in_the_counter_walkthrough(client):
    client.send(resp.command("INCR", "count"))
    assert client.line() == b":1\r\n"
    client.send(b"dbsize\r\nKEYS *\r\nGET count\r\n")
    assert [client.line() for _ in range(5)] == [b":1\r\n", b"*1\r\n", b"$5\r\n", b"count\r\n", b"$1\r\n"]
    assert client.line() == b"1\r\n"
    client.send(b"quit\r\n")
    assert client.line() == b"+OK\r\n" and client.line() == b""  # then the server hangs up


def test_unknown_commands_and_wrong_arity_are_redis_errors(client):
    client.send(resp.command("LPUSH", "list", "x") + resp.command("GET"))
    assert client.line().startswith(b"-ERR unknown command 'LPUSH', with args beginning with: 'list' 'x'")
    assert client.line() == b"-ERR wrong number of arguments for 'get' command\r\n"


def test_expiry_and_flush(client):
    client.send(resp.command("SET", "short", "x", "PX", "50") + resp.command("SET", "long", "y", "EX", "100")
                + resp.command("TTL", "long") + resp.command("TTL", "nokey"))
    assert [client.line() for _ in range(4)] == [b"+OK\r\n", b"+OK\r\n", b":100\r\n", b":-2\r\n"]
    time.sleep(0.1)
    client.send(resp.command("GET", "short") + resp.command("DBSIZE") + resp.command("FLUSHALL")
                + resp.command("DBSIZE"))
    assert [client.line() for _ in range(4)] == [b"$-1\r\n", b":1\r\n", b"+OK\r\n", b":0\r\n"]


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli_talks_to_the_built_in_server(redis_port_):
    def cli(*args):
        return subprocess.run(["redis-cli", "-p", str(redis_port_), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    assert cli("PING") == "PONG"
    assert cli("SET", "k", "v") == "OK" and cli("GET", "k") == "v"
    assert cli("INCR", "n") == "1" and "redis_version:" in cli("INFO")


# ------------------------------------------------------------------------------ the counter
def test_counter_counts_in_redis_1_2_3(launcher, redis_port_):
    port = free_port()
    # "localhost", as in the guide's two-container pod: a name to resolve, not an address
    launcher.start("counter", "ghcr.io/subicura/counter:latest", ports=[port],
                   env={"REDIS_HOST": "localhost", "REDIS_PORT": str(redis_port_)})
    assert [http_request(port)[::2] for _ in range(3)] == [(200, "1"), (200, "2"), (200, "3")]
    client = RespClient(redis_port_)
    client.send(b"GET count\r\n")
    assert client.line() == b"$1\r\n" and client.line() == b"3\r\n"
    client.close()
    status, _, body = http_request(port, "/other")
    assert status == 404 and json.loads(body)["message"] == "Route GET:/other not found"


def test_counter_says_why_when_redis_host_does_not_resolve(launcher):
    port = free_port()
    pod = launcher.start("counter", "ghcr.io/subicura/counter", ports=[port],
                         env={"REDIS_HOST": "no-such-redis.invalid", "REDIS_PORT": "6379"})
    for _ in range(2):  # the app keeps serving (and keeps trying) after a failure
        status, headers, body = http_request(port)
        assert status == 500 and headers["content-type"].startswith("application/json")
        assert json.loads(body)["message"].startswith("cannot resolve REDIS_HOST 'no-such-redis.invalid'")
    assert pod.poll() is None
    assert '"msg": "Server listening at http://127.0.0.1:' in pod.log_text()


def test_counter_says_why_when_redis_refuses(launcher):
    port, nothing_there = free_port(), free_port()
    launcher.start("counter", ports=[port], env={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(nothing_there)})
    status, _, body = http_request(port)
    assert status == 500 and f"cannot connect to redis at 127.0.0.1:{nothing_there}" in json.loads(body)["message"]


def test_counter_reconnects_after_redis_restarts(launcher):
    redis, port = free_port(), free_port()
    first = launcher.start("redis", ports=[redis])
    launcher.start("counter", ports=[port], env={"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis)})
    assert http_request(port)[2] == "1"
    first.kill()
    launcher.start("redis", ports=[redis])  # a new, empty redis on the same address
    assert http_request(port)[::2] == (200, "1")
