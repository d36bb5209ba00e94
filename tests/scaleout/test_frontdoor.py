"""The front door of ``lso serve`` alone (no Ray): header and body deadlines, connection caps, framing errors.

Every test listens on a free loopback port with short limits, uses raw sockets with timeouts, and closes
everything it opens.
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from lso.errors import InputError
from lso.scaleout.frontdoor import ClientLimits, FrontDoor

FAST = ClientLimits(header_timeout_s=1.0, body_timeout_s=1.0, body_rate_mb_s=1.0, keep_alive_s=1.0,
                    max_connections_per_client=3, max_connections=6)


async def _echo(method, path, headers, body):
    return 200, {"Content-Type": "application/octet-stream", "X-Path": path}, method.encode() + b" " + body


@pytest.fixture()
def door():
    doors = []

    def make(limits=FAST, **kwargs):
        d = FrontDoor("127.0.0.1", 0, _echo, limits, **kwargs).start()
        doors.append(d)
        return d

    yield make
    for d in doors:
        d.stop()


def _connect(port, source="127.0.0.1", timeout=5.0):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _read_answer(sock):
    """(status, headers, body) of one answer, or (0, {}, b"") when the connection closed first."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return 0, {}, b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(lines[0].split(" ")[1]), headers, rest
    except ConnectionResetError:
        return 0, {}, b""


def _request(body=b"", method="POST", path="/fuse", extra="", keep=False):
    conn = "" if keep else "Connection: close\r\n"
    return (f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{conn}{extra}\r\n").encode() + body


def test_a_complete_request_is_dispatched_and_keep_alive_works(door):
    d = door()
    with _connect(d.port) as sock:
        sock.sendall(_request(b"abc", keep=True))
        status, headers, body = _read_answer(sock)
        assert (status, body, headers["x-path"]) == (200, b"POST abc", "/fuse")
        assert headers["connection"] == "keep-alive"
        sock.sendall(_request(b"", method="GET", path="/fuse?x=1"))
        status, headers, body = _read_answer(sock)
        assert (status, body, headers["connection"]) == (200, b"GET ", "close")
        assert sock.recv(10) == b""  # closed after Connection: close


def test_headers_have_one_deadline(door):
    d = door()
    with _connect(d.port) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /fuse HTTP/1.1\r\nHost: t\r\n")  # never finished
        for _ in range(3):  # a byte every 0.4 s does not extend the deadline
            time.sleep(0.4)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        status, _, body = _read_answer(sock)
        assert status in (408, 0) and time.monotonic() - start < 1.0 + 2.5
        if status:
            assert "header" in json.loads(body)["error"]
    assert d.stats()["header_timeouts"] == 1


def test_the_body_has_one_total_deadline_not_a_per_byte_timer(door):
    d = door()
    with _connect(d.port) as sock:
        sock.sendall(_request(b"x" * 100)[:-100])  # headers only; 100 bytes declared
        start = time.monotonic()
        status = None
        for _ in range(15):  # 1 byte every 0.2 s: each read succeeds, the total deadline still ends it
            try:
                sock.sendall(b"x")
            except OSError:
                status = 0
                break
            sock.settimeout(0.2)
            try:
                peek = sock.recv(65536, socket.MSG_PEEK)
            except TimeoutError:
                continue
            sock.settimeout(5.0)
            status = _read_answer(sock)[0] if peek else 0
            break
        assert status in (408, 0), status
        assert time.monotonic() - start < 1.0 + 1.5
    assert d.stats()["body_timeouts"] == 1


def test_body_deadline_scales_with_the_declared_size():
    limits = ClientLimits(body_timeout_s=10.0, body_rate_mb_s=1.0)
    assert limits.transfer_deadline_s(1000) == 10.0
    assert limits.transfer_deadline_s(10 * 2**20) == 10.0
    assert limits.transfer_deadline_s(83 * 2**20) == pytest.approx(83.0)
    assert ClientLimits() == ClientLimits(10.0, 10.0, 1.0, 5.0, 8, 256)  # the documented defaults


def test_connections_per_client_and_in_all_are_capped(door):
    d = door()
    held = [_connect(d.port) for _ in range(3)]
    try:
        with _connect(d.port) as extra:  # the 4th from 127.0.0.1
            status, headers, body = _read_answer(extra)
            assert status in (429, 0)
            if status:
                assert headers["retry-after"] == "1" and "per client" in json.loads(body)["error"]
        # other addresses still get in, up to 6 in all
        others = []
        try:
            for i in range(3):
                others.append(_connect(d.port, source=f"127.0.0.{2 + i}"))
            with _connect(d.port, source="127.0.0.9") as over:
                assert _read_answer(over)[0] in (503, 0)
        finally:
            for s in others:
                s.close()
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while d.stats()["open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    with _connect(d.port) as sock:  # the slots are free again
        sock.sendall(_request(b"ok"))
        assert _read_answer(sock)[0] == 200
    stats = d.stats()
    assert stats["refused_per_client"] == 1 and stats["refused_total"] == 1 and stats["open"] <= 1


def test_framing_errors_are_answered_before_the_body(door):
    d = door(max_body_bytes=1000)
    cases = [
        (b"POST /fuse HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", 413, "at most 1000"),
        (b"POST /fuse HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "Content-Length"),
        (b"POST /fuse HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 2\r\n\r\n", 400, "Content-Length"),
        (b"garbage\r\n\r\n", 400, "request line"),
        (b"GET /fuse HTTP/1.1\r\n" + b"X-A: " + b"a" * 70000 + b"\r\n\r\n", 431, "exceed"),
    ]
    for raw, status, reason in cases:
        with _connect(d.port) as sock:
            try:
                sock.sendall(raw)
            except OSError:
                pass
            got, _, body = _read_answer(sock)
            assert got == status and reason in json.loads(body)["error"], (raw[:40], got, body)


def test_an_idle_kept_alive_connection_is_closed(door):
    d = door()
    with _connect(d.port) as sock:
        sock.sendall(_request(b"a", keep=True))
        assert _read_answer(sock)[0] == 200
        start = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - start < 1.0 + 1.0


def test_bad_limits_are_refused_naming_the_flag():
    with pytest.raises(InputError, match="--header-timeout-s"):
        ClientLimits(header_timeout_s=0).check()
    with pytest.raises(InputError, match="--max-connections-per-client"):
        ClientLimits(max_connections_per_client=0).check()
