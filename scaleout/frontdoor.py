"""The HTTP front door of ``lso serve``: request deadlines and connection caps in front of the replicas.

Why it exists: Ray Serve 2.60's HTTP proxy hands a request to a replica as soon as its headers have
arrived; the replica then pulls the body from the proxy while it holds one of its ``max_ongoing_requests``
slots. The proxy sets no deadline for receiving a request, and uvicorn's keep-alive timer restarts on
every byte, so a few clients that declare a body and send it a byte at a time hold every slot of a
replica, and a valid request waits for ``request_timeout_s`` (or forever, the default).

What it does: an asyncio HTTP/1.1 server (one daemon thread of the serving process) receives every
request *completely*, under deadlines, before any replica sees it, then hands the complete request to a
``dispatch`` coroutine (``lso serve`` passes it to the deployment through a Serve ``DeploymentHandle``;
Serve's own HTTP proxy is not started). A slow client therefore holds only its own connection, and the
number of those is capped.

The limits (:class:`ClientLimits`; ``lso serve`` flags in brackets):

- headers: the request line and headers must arrive within ``header_timeout_s`` (10 s
  [``--header-timeout-s``]) of the connection being accepted, or of the first byte of a later request
  on a kept-alive connection; then ``408`` and the connection is closed. At most 64 KiB of headers (431).
- body: a request body needs a ``Content-Length`` (chunked bodies get 411) no larger than the server's
  ``max_request_bytes`` (413, answered before the body is read). The whole body must arrive within
  ``max(body_timeout_s, declared bytes / body_rate)``: a total deadline from the end of the headers, not
  a per-read timer (10 s [``--body-timeout-s``] and 1 MiB/s [``--body-rate-mb-s``]: 10 s for requests up
  to 10 MiB, 256 s for the largest default body of 256 MiB); then ``408`` and the connection is closed.
- answer: the response must be taken by the client within the same formula applied to its size, or the
  connection is dropped (a client that does not read cannot hold the server either).
- idle: a kept-alive connection is closed after ``keep_alive_s`` (5 s [``--keep-alive-s``]) without a
  new request.
- connections: at most ``max_connections_per_client`` (8 [``--max-connections-per-client``]) open
  connections per client IP address (the next one gets ``429`` and is closed) and ``max_connections``
  (256 [``--max-connections``]) in all (the next one gets ``503`` and is closed).

Why these defaults: 10 s for headers is generous for any real client (they send headers in one packet)
and short enough that a stalled connection is gone before a user gives up; 1 MiB/s (8 Mbit/s) lets a
typical 256x256 request (1.3 MB) and anything up to 10 MiB use the 10 s floor, and a 2048x2048 request
(83 MB) 80 s; 8 connections per address is above what one HTTP client library opens by default, and 256
in all bounds the file descriptors and the buffered bodies of the process. Raise them behind a trusted
reverse proxy (every client then has the proxy's address).

Error answers are JSON like every other error of the server (:func:`lso.scaleout.wire.error_body`), carry
``Connection: close``, and the connection is half-closed and drained for up to 2 s before it is closed,
so a client still sending its body reads the answer instead of a reset.
"""
from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from lso.errors import InputError, LSOError
from lso.scaleout.wire import error_body

__all__ = ["ClientLimits", "FrontDoor", "Dispatch", "MAX_HEADER_BYTES"]

log = logging.getLogger(__name__)

#: largest request line plus headers (bytes); more is answered with 431
MAX_HEADER_BYTES = 64 * 1024
_LINGER_S = 2.0  # how long an error answer waits for the client to stop sending before closing
_READ_CHUNK = 1 << 20

#: ``dispatch(method, path, headers, body) -> (status, headers, body)``; header names in lower case
Dispatch = Callable[[str, str, dict, bytes], Awaitable[tuple[int, dict, bytes]]]

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
    from asyncio import timeout_at as _timeout_at
else:  # Python 3.10 has neither: the same contract, the task cancelled at the deadline and TimeoutError raised

    @contextlib.asynccontextmanager
    async def _timeout_at(when: float | None) -> AsyncIterator[None]:
        if when is None:
            yield
            return
        task = asyncio.current_task()
        assert task is not None  # called from a coroutine the loop runs
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_at(when, expire)
        try:
            yield
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()

    def _timeout(delay: float | None) -> contextlib.AbstractAsyncContextManager[None]:
        return _timeout_at(None if delay is None else asyncio.get_running_loop().time() + delay)


@dataclass(frozen=True)
class ClientLimits:
    """How long a client may take and how many connections it may hold (see the module docstring).

    Attributes:
        header_timeout_s: seconds to receive the request line and headers.
        body_timeout_s: the body deadline's floor (seconds).
        body_rate_mb_s: the body deadline grows by one second per this many MiB declared
            (deadline = ``max(body_timeout_s, bytes / (body_rate_mb_s * 2**20))``); the answer's send
            deadline uses the same formula.
        keep_alive_s: seconds an idle kept-alive connection waits for its next request.
        max_connections_per_client: open connections per client IP address.
        max_connections: open connections in all.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    body_rate_mb_s: float = 1.0
    keep_alive_s: float = 5.0
    max_connections_per_client: int = 8
    max_connections: int = 256

    def check(self) -> None:
        """Raise InputError naming the flag when a value cannot work."""
        for name in ("header_timeout_s", "body_timeout_s", "body_rate_mb_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{name} must be > 0 seconds (or MiB/s), got {getattr(self, name)}: set {flag} "
                                 f"to a positive number")
        for name in ("max_connections_per_client", "max_connections"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}: set "
                                 f"--{name.replace('_', '-')} to a positive integer")

    def transfer_deadline_s(self, n_bytes: int) -> float:
        """Seconds allowed to receive a body (or send an answer) of ``n_bytes``."""
        return max(float(self.body_timeout_s), n_bytes / (float(self.body_rate_mb_s) * 2**20))


class _Refuse(Exception):
    """Answer ``status`` with ``message`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _head_bytes(status: int, headers: dict, length: int, keep_alive: bool) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {int(status)} {reason}"]
    for name, value in headers.items():
        name, value = str(name), str(value)
        if name.lower() in ("content-length", "connection", "transfer-encoding"):
            continue
        lines.append(f"{name}: {value}".replace("\r", " ").replace("\n", " "))
    lines.append(f"Content-Length: {int(length)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def _parse_head(head: bytes) -> tuple[str, str, str, dict]:
    """``(method, path, version, headers)`` of a request head (ending in an empty line); raises _Refuse 400."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes every byte; kept for clarity
        raise _Refuse(400, "request head is not latin-1 text") from None
    lines = text[:-4].split("\r\n") if text.endswith("\r\n\r\n") else text.rstrip("\r\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise _Refuse(400, f"malformed request line {lines[0][:100]!r}: expected 'METHOD /path HTTP/1.1'")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[:1] in (" ", "\t"):
            raise _Refuse(400, f"malformed header line {line[:100]!r}")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return method.upper(), target.split("?", 1)[0], version, headers


def _content_length(headers: dict, max_body_bytes: int) -> int:
    if "transfer-encoding" in headers:
        raise _Refuse(411, "chunked (Transfer-Encoding) request bodies are not accepted: send the body with a "
                           "Content-Length header")
    declared = headers.get("content-length")
    if declared is None:
        return 0
    values = {v.strip() for v in declared.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise _Refuse(400, f"Content-Length {declared!r} is not one non-negative integer")
    size = int(values.pop())
    if size > max_body_bytes:
        raise _Refuse(413, f"request body has {size} bytes; this server accepts at most {max_body_bytes}")
    return size


class FrontDoor:
    """An HTTP/1.1 server with request deadlines and connection caps that hands complete requests to ``dispatch``.

    It runs on its own event loop in a daemon thread: :meth:`start` returns once it listens, :meth:`stop`
    closes it and every connection.

    Args:
        host, port: where to listen (port 0: a free one, see :attr:`port`).
        dispatch: ``async (method, path, headers, body) -> (status, headers, body)`` for complete requests.
        limits: the client limits.
        max_body_bytes: largest request body (413 above, before it is read).
    """

    def __init__(self, host: str, port: int, dispatch: Dispatch, limits: ClientLimits = ClientLimits(), *,
                 max_body_bytes: int = 256 * 2**20) -> None:
        limits.check()
        self.host, self._port = host, int(port)
        self._dispatch = dispatch
        self.limits = limits
        self.max_body_bytes = int(max_body_bytes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set = set()
        self._per_client: dict[str, int] = {}
        self._open = 0
        self._stats = {"connections": 0, "requests": 0, "refused_per_client": 0, "refused_total": 0,
                       "header_timeouts": 0, "body_timeouts": 0, "send_timeouts": 0, "protocol_errors": 0}

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._port

    def stats(self) -> dict[str, int]:
        """Counters since start: connections, requests, refusals and timeouts; ``open`` connections now."""
        return {**self._stats, "open": self._open}

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 30.0) -> FrontDoor:
        """Bind and listen in a new thread; raises LSOError when the address cannot be bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(self._listen())
            except BaseException as exc:  # bind errors are reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="lso-frontdoor", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise LSOError(f"the HTTP front door did not start listening on {self.host}:{self._port} within "
                           f"{timeout:.0f} s")
        if failure:
            exc = failure[0]
            raise LSOError(f"cannot listen on {self.host}:{self._port} ({exc}): choose another --port or --host, "
                           f"or stop the process that uses it") from exc
        log.info("front door listening on %s:%d (%s)", self.host, self._port, self.limits)
        return self

    async def _listen(self) -> asyncio.base_events.Server:
        server = await asyncio.start_server(self._connection, self.host, self._port, limit=MAX_HEADER_BYTES,
                                            backlog=max(128, self.limits.max_connections),
                                            reuse_address=True)
        self._port = int(server.sockets[0].getsockname()[1])
        return server

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, close every connection and end the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=timeout / 2)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(timeout)
        self._thread = None

    # ---------------------------------------------------------------------------------- connections
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        limits = self.limits
        counted = False
        try:
            if self._open >= limits.max_connections:
                self._stats["refused_total"] += 1
                log.debug("refusing %s: %d connections open", client, self._open)
                await self._refuse(reader, writer, 503, f"the server holds {limits.max_connections} connections "
                                                        f"(its limit); retry later")
                return
            if self._per_client.get(client, 0) >= limits.max_connections_per_client:
                self._stats["refused_per_client"] += 1
                log.debug("refusing %s: %d connections from it", client, self._per_client[client])
                await self._refuse(reader, writer, 429, f"{client} holds {limits.max_connections_per_client} "
                                                        f"connections (the limit per client); reuse them or retry "
                                                        f"after one closes", {"Retry-After": "1"})
                return
            self._open += 1
            self._per_client[client] = self._per_client.get(client, 0) + 1
            counted = True
            self._stats["connections"] += 1
            await self._serve_connection(reader, writer, client)
        except asyncio.CancelledError:  # stop(): end quietly (asyncio logs a connection task that ends cancelled)
            writer.transport.abort()
        except Exception:  # a fault of ours: log it, drop the connection, keep serving the others
            log.exception("front door connection from %s failed", client)
            writer.transport.abort()
        finally:
            if counted:
                self._open -= 1
                left = self._per_client.get(client, 1) - 1
                if left > 0:
                    self._per_client[client] = left
                else:
                    self._per_client.pop(client, None)
            if not writer.transport.is_closing():
                writer.close()
            self._tasks.discard(task)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                client: str) -> None:
        loop = asyncio.get_running_loop()
        limits = self.limits
        first = True
        while True:
            # ---- headers: one deadline from accept (or from the first byte of a kept-alive request)
            prefix = b""
            if not first:
                try:
                    async with _timeout(limits.keep_alive_s):
                        prefix = await reader.read(1)
                except TimeoutError:
                    return  # idle keep-alive connection: close quietly
                if not prefix:
                    return
            first = False
            try:
                async with _timeout_at(loop.time() + limits.header_timeout_s):
                    head = prefix + await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                self._stats["header_timeouts"] += 1
                log.debug("%s: headers not received within %.1f s", client, limits.header_timeout_s)
                await self._refuse(reader, writer, 408, f"request headers not received within "
                                                        f"{limits.header_timeout_s:g} s (the server's header "
                                                        f"timeout)")
                return
            except asyncio.IncompleteReadError as exc:
                if exc.partial or prefix:
                    self._stats["protocol_errors"] += 1
                return  # the client closed
            except asyncio.LimitOverrunError:
                self._stats["protocol_errors"] += 1
                await self._refuse(reader, writer, 431, f"request headers exceed {MAX_HEADER_BYTES} bytes")
                return
            except ConnectionError:
                return
            try:
                method, path, version, headers = _parse_head(head)
                size = _content_length(headers, self.max_body_bytes)
            except _Refuse as exc:
                self._stats["protocol_errors"] += 1
                await self._refuse(reader, writer, exc.status, str(exc))
                return
            connection = headers.get("connection", "").lower()
            keep_alive = ("close" not in connection) if version == "HTTP/1.1" else ("keep-alive" in connection)

            # ---- body: one total deadline, scaled from the declared size
            body = b""
            if size:
                if "100-continue" in headers.get("expect", "").lower():
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                allowed = limits.transfer_deadline_s(size)
                try:
                    async with _timeout_at(loop.time() + allowed):
                        body = await self._read_body(reader, size)
                except TimeoutError:
                    self._stats["body_timeouts"] += 1
                    log.debug("%s: body of %d bytes not received within %.1f s", client, size, allowed)
                    await self._refuse(reader, writer, 408, f"request body of {size} bytes not received within "
                                                            f"{allowed:g} s (the server's body deadline: "
                                                            f"max({limits.body_timeout_s:g} s, size / "
                                                            f"{limits.body_rate_mb_s:g} MiB/s))")
                    return
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the client closed mid-body
            self._stats["requests"] += 1

            # ---- the complete request goes to the replicas
            try:
                status, out_headers, payload = await self._dispatch(method, path, headers, body)
            except Exception as exc:  # dispatch answers its own errors; this is a fault of ours
                log.exception("dispatching %s %s failed", method, path)
                status, out_headers = 500, {"Content-Type": "application/json"}
                payload = error_body(500, f"internal error: {type(exc).__name__}: {exc}")
            del body
            if method == "HEAD":
                payload = b""
            n_out = len(payload)
            writer.write(_head_bytes(status, out_headers, n_out, keep_alive))
            if payload:
                writer.write(payload)
            del payload
            allowed = limits.transfer_deadline_s(n_out)
            try:
                async with _timeout(allowed):
                    await writer.drain()
            except TimeoutError:
                self._stats["send_timeouts"] += 1
                log.debug("%s: answer not taken within %.1f s", client, allowed)
                writer.transport.abort()
                return
            except ConnectionError:
                return
            if not keep_alive:
                await self._linger(reader, writer)
                return

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, size: int) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            chunk = await reader.read(min(size - len(buf), _READ_CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), size)
            buf += chunk
        return bytes(buf)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, message: str,
                      headers: dict | None = None) -> None:
        """Answer an error, half-close, drain what the client still sends for up to 2 s, close."""
        body = error_body(status, message)
        writer.write(_head_bytes(status, {"Content-Type": "application/json", **(headers or {})}, len(body), False))
        writer.write(body)
        try:
            async with _timeout(_LINGER_S):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            writer.transport.abort()
            return
        await self._linger(reader, writer)

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close and discard input until the client closes or 2 s pass (so it reads our answer, not a reset)."""
        try:
            if writer.can_write_eof():
                writer.write_eof()
            async with _timeout(_LINGER_S):
                while await reader.read(_READ_CHUNK):
                    pass
        except (TimeoutError, ConnectionError, OSError):
            pass
        writer.close()
