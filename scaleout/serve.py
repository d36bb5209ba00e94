"""``lso serve``: fusion behind an HTTP endpoint on Ray Serve.

Each replica is one Ray actor holding one runner (:func:`lso.runtime.load`: ONNX Runtime on CPU with
``threads`` intra-op threads, or TensorRT/CUDA with ``num_gpus_per_replica``). Requests are encoded as
described in :mod:`lso.scaleout.wire` (npz, or raw float32 with shape headers); every request goes
through the runtime's input checks, and anything wrong with it is answered with a 4xx and the reason,
never a 500 and never a crashed replica. Limits: body size, HR pixels and batch per request
(:class:`~lso.scaleout.wire.Limits`), ``max_ongoing_requests`` per replica and ``max_queued_requests``
before the server answers 503, ``request_timeout_s`` before it answers 408.

HTTP is served by the front door of :mod:`lso.scaleout.frontdoor` in the ``lso serve`` process, not by
Serve's own HTTP proxy (which is not started: it hands a request to a replica before the body has arrived,
so slow clients would hold the replica's slots). The front door receives each request completely, under
deadlines, before a replica sees it, and caps the connections a client may hold
(:class:`~lso.scaleout.frontdoor.ClientLimits`, ``ServeOptions.clients``; defaults: headers within 10 s,
the body within ``max(10 s, size / 1 MiB/s)``, idle keep-alive 5 s, 8 connections per client address and
256 in all; a late request gets 408, one connection too many 429 or 503). Complete requests reach the
deployment through a Serve ``DeploymentHandle``.

Routes (under ``route``, default ``/fuse``): ``POST`` fuses; ``GET`` returns the model and the limits
as JSON. ``/-/healthz`` (200 once the replicas are up, 503 before) and ``/-/routes`` are there too.

Library use::

    from lso.scaleout.serve import ServeOptions, start_serve, stop_serve
    url = start_serve(ServeOptions(artifact="model.onnx", replicas=2))   # returns once replicas are up
    ...
    stop_serve()                                                          # the front door, then Serve
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lso.data.value_range import InputRangeWarning
from lso.errors import InputError, LSOError
from lso.scaleout.frontdoor import ClientLimits, FrontDoor
from lso.scaleout.wire import (
    INPUT_SCALE_HEADER,
    NPZ,
    RAW,
    WARNING_HEADER,
    Limits,
    RequestError,
    decode_request,
    encode_response,
    error_body,
    request_scale,
)

__all__ = ["ServeOptions", "ClientLimits", "FusionServer", "build_app", "start_serve", "stop_serve", "serve_forever",
           "DEPLOYMENT_NAME"]

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "LSOFusion"
#: the runner options ``lso serve`` sets with flags of its own (``--runner-option`` refuses them)
RUNNER_OWN_FLAGS = ("device", "threads", "backend", "config")


@dataclass(frozen=True)
class ServeOptions:
    """What ``lso serve`` runs (one field per flag).

    Attributes:
        artifact: checkpoint, ONNX graph or TensorRT plan (reachable at this path on every node).
        replicas: number of replicas (Ray actors, each with its own runner).
        host, port: where the HTTP front door listens (``0.0.0.0`` to accept other machines).
        route: URL path of the endpoint.
        device: runner device (default: the backend's own; ``cuda`` when ``num_gpus_per_replica > 0``).
        threads: intra-op threads per replica (ONNX Runtime, OpenVINO).
        backend: the runner's backend (``"torch"``, ``"onnxruntime"``, ``"tensorrt"``, ``"openvino"``: a name of
            :data:`lso.runtime.base.BACKENDS`); None: the one the artifact's suffix picks (``.onnx``: ONNX Runtime).
        num_cpus_per_replica, num_gpus_per_replica: Ray resources reserved per replica.
        max_ongoing_requests: requests a replica holds at once (it fuses one at a time; the rest wait in it).
        max_queued_requests: requests queued before the server answers 503 (-1: unbounded).
        request_timeout_s: the server answers 408 when a complete request has not been answered after this
            long (None: no timeout).
        limits: request size limits.
        clients: how long a client may take to send a request and how many connections it may hold
            (:class:`~lso.scaleout.frontdoor.ClientLimits`: headers 10 s, body ``max(10 s, size / 1 MiB/s)``,
            keep-alive 5 s, 8 connections per client address, 256 in all).
        tile: fuse in tiles of this core size (tileable artifacts; bounds memory for large requests).
        config: for a checkpoint, configuration fields (``--config``; see :func:`lso.checkpoint.load_checkpoint`).
        address: Ray cluster to join (default: start a local one with ``num_cpus`` CPUs).
        num_cpus: CPUs of the local Ray instance (default: all).
        app_name: Serve application name.
        runner_options: the runner's other options (``--runner-option KEY=VALUE``, e.g. ``{"precision": "bf16"}``
            for OpenVINO, ``{"memory_budget": "2G"}``), passed to :func:`lso.runtime.load` in every replica (and in
            the driver's check of the artifact); the backend refuses one it does not take, and the keys with a field
            of their own here (``device``, ``threads``, ``backend``, ``config``) are refused.
    """

    artifact: Path
    replicas: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    route: str = "/fuse"
    device: str | None = None
    threads: int | None = 1
    backend: str | None = None
    num_cpus_per_replica: float = 1.0
    num_gpus_per_replica: float = 0.0
    max_ongoing_requests: int = 2
    max_queued_requests: int = 64
    request_timeout_s: float | None = None
    limits: Limits = field(default_factory=Limits)
    clients: ClientLimits = field(default_factory=ClientLimits)
    tile: int | None = None
    config: dict[str, Any] | None = None
    address: str | None = None
    num_cpus: int | None = None
    app_name: str = "lso"
    runner_options: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{self.route}"


def _json_response(status: int, message: str) -> Any:
    from starlette.responses import Response

    return Response(content=error_body(status, message), status_code=status, media_type="application/json")


class FusionServer:
    """The Serve deployment: one runner per replica; ``__call__`` handles one HTTP request.

    Args:
        artifact: the artifact path.
        device: runner device (None: the backend's own).
        threads: ONNX Runtime intra-op threads (ignored by other backends).
        limits: request limits.
        tile: tiled fusion core size, or None for whole-image fusion.
        config: for a checkpoint, configuration fields (see :func:`lso.checkpoint.load_checkpoint`).
        backend: the runner's backend (None: the one the artifact's suffix picks).
        runner_options: the runner's other options (``--runner-option``), passed to :func:`lso.runtime.load`.
    """

    def __init__(self, artifact: str, device: str | None = None, threads: int | None = 1,
                 limits: Limits | None = None, tile: int | None = None,
                 config: dict[str, Any] | None = None, backend: str | None = None,
                 runner_options: dict[str, Any] | None = None) -> None:
        from lso.runtime.base import load

        # threads: a hint, ignored by backends without intra-op threads (lso.runtime.base.backend_options)
        self._runner = load(artifact, device=device, config=config, backend=backend,
                            threads=int(threads) if threads else None, **(runner_options or {}))
        self._runner.activate()
        self._limits = limits or Limits()
        self._tile = tile
        # one fusion at a time per replica: the runner's threads are the replica's CPU share
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lso-fuse")
        self._info = {
            "artifact": Path(artifact).name,
            "runner": repr(self._runner),
            "backend": self._runner.backend,
            "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in self._runner.input_specs],
            "n_msi_bands": self._runner.n_msi_bands,
            "n_bands": self._runner.n_bands,
            "tileable": self._runner.tileable,
            "tile": tile,
            "formats": [NPZ, RAW],
            "limits": asdict(self._limits),
        }
        log.info("replica ready: %r", self._runner)

    def info(self) -> dict[str, Any]:
        """The model and the limits (what ``GET`` returns)."""
        return dict(self._info)

    def fuse(self, hr_msi: Any, lr_hsi: Any) -> tuple[Any, list[str]]:
        """Fuse one decoded request; returns ``(hr_hsi, input warnings)``. Raises InputError on bad content."""
        from lso.runtime.tiling import decide_tiling, fuse_tiled
        from lso.runtime.validation import InputRangeWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InputRangeWarning)
            if decide_tiling(self._runner, tuple(hr_msi.shape), tile=self._tile, strict=False).tiled:
                out = fuse_tiled(self._runner, hr_msi, lr_hsi, tile=self._tile)
            else:
                out = self._runner.fuse(hr_msi, lr_hsi)
        return out, [str(w.message) for w in caught if issubclass(w.category, InputRangeWarning)]

    async def _read_body(self, request: Any) -> bytes:
        limit = self._limits.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise RequestError(400, f"Content-Length {declared!r} is not an integer") from None
            if size > limit:
                raise RequestError(413, f"request body has {size} bytes; this server accepts at most {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body exceeds {limit} bytes (the server's limit)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle_http(self, method: str, headers: dict[str, str],
                          body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one complete request (what the front door sends): ``(status, headers, body)``.

        Args:
            method: the HTTP method.
            headers: the request headers, names in lower case.
            body: the whole request body.
        """
        if method in ("GET", "HEAD"):
            return 200, {"Content-Type": "application/json"}, json.dumps(self.info()).encode("utf-8")
        if method != "POST":
            return _error(405, f"method {method} not allowed: POST a request to fuse, GET for info")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as decoded:  # the value policy's warnings go to the client
                warnings.simplefilter("always", InputRangeWarning)
                hr, lr, media = decode_request(body, headers.get("content-type"), headers, self._limits)
            del body
            loop = asyncio.get_running_loop()
            out, notes = await loop.run_in_executor(self._executor, self.fuse, hr, lr)
            notes = [str(w.message) for w in decoded if issubclass(w.category, InputRangeWarning)] + notes
            payload, out_headers = encode_response(out, media)
            out_headers[INPUT_SCALE_HEADER] = request_scale(headers).record()
        except RequestError as exc:
            return _error(exc.status, str(exc))
        except InputError as exc:  # the runtime's input checks: bands, ratio, dtype, NaN/Inf
            return _error(422, str(exc))
        except Exception as exc:  # a server-side fault: logged, answered, the replica stays up
            log.exception("fusion failed")
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")
        if notes:
            out_headers[WARNING_HEADER] = "; ".join(notes)[:1000].replace("\n", " ")
        out_headers["x-lso-seconds"] = f"{time.perf_counter() - start:.4f}"
        return 200, out_headers, payload

    async def __call__(self, request: Any) -> Any:
        """A Starlette request, for Serve's own HTTP proxy when the application is deployed without
        :func:`start_serve` (that proxy sets no deadline for receiving a body; :func:`start_serve` does not
        use it)."""
        from starlette.requests import ClientDisconnect
        from starlette.responses import Response

        try:
            body = await self._read_body(request)
        except RequestError as exc:
            return _json_response(exc.status, str(exc))
        except ClientDisconnect:  # the client left before sending its body: nobody to answer
            return _json_response(400, "the client disconnected before its body arrived")
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, out_headers, payload = await self.handle_http(request.method, headers, body)
        media = out_headers.pop("Content-Type", "application/json")
        return Response(content=payload, status_code=status, headers=out_headers, media_type=media)


def _error(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, error_body(status, message)


class _Dispatch:
    """What the front door calls with a complete request: local routes here, the rest to the deployment.

    ``handle`` is set once the application runs; until then the route answers 503.
    """

    def __init__(self, opts: ServeOptions) -> None:
        self._route = "/" + opts.route.strip("/")
        self._app = opts.app_name
        self._timeout = float(opts.request_timeout_s) if opts.request_timeout_s else None
        self.handle: Any = None

    def _on_route(self, path: str) -> bool:
        return path == self._route or path.startswith(self._route.rstrip("/") + "/") or self._route == "/"

    async def __call__(self, method: str, path: str, headers: dict[str, str],
                       body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path == "/-/healthz":
            ok = self.handle is not None
            return (200 if ok else 503), {"Content-Type": "text/plain"}, b"success" if ok else b"starting"
        if path == "/-/routes":
            return 200, {"Content-Type": "application/json"}, json.dumps({self._route: self._app}).encode("utf-8")
        if not self._on_route(path):
            return _error(404, f"no route {path}: POST to {self._route} to fuse, GET it for info")
        if method not in ("GET", "HEAD", "POST"):
            return _error(405, f"method {method} not allowed: POST a request to fuse, GET for info")
        if self.handle is None:
            return _error(503, "the replicas are starting; retry in a few seconds")
        return await self._forward("GET" if method == "HEAD" else method, headers, body)

    async def _forward(self, method: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        from ray.exceptions import RayActorError, RayError
        from ray.serve.exceptions import BackPressureError

        response = None
        try:
            response = self.handle.handle_http.remote(method, headers, body)
            del body
            return await asyncio.wait_for(response, timeout=self._timeout)
        except (asyncio.TimeoutError, TimeoutError):
            if response is not None:
                response.cancel()
            return _error(408, f"no answer within {self._timeout:g} s (the server's request timeout)")
        except BackPressureError:
            return _error(503, "the server is overloaded (its request queue is full); retry later")
        except RayActorError as exc:
            log.warning("a replica failed during a request: %s", exc)
            return _error(503, "the replica died while answering; retry the request")
        except RayError as exc:
            log.exception("request failed in Ray")
            return _error(503, f"the request failed in Ray ({type(exc).__name__}); retry it")


def build_app(opts: ServeOptions) -> Any:
    """The Serve application (``serve.run(build_app(opts))``), one deployment of ``opts.replicas`` replicas."""
    from lso.deps import require
    from lso.scaleout._checks import check_artifact

    serve = require("ray.serve")
    if opts.replicas < 1 or opts.max_ongoing_requests < 1:
        raise InputError(f"need replicas >= 1 and max_ongoing_requests >= 1, got {opts.replicas}, "
                         f"{opts.max_ongoing_requests}")
    from lso.runtime.base import OPTION_FLAGS, check_runner_options

    runner_options = check_runner_options(opts.runner_options,
                                          own_flags={k: OPTION_FLAGS[k] for k in RUNNER_OWN_FLAGS})
    device = opts.device or ("cuda" if opts.num_gpus_per_replica > 0 else None)
    # missing, unknown or corrupt artifacts (and options the backend does not take) fail here, once, not in every
    # replica
    artifact = check_artifact(opts.artifact, device=device, num_gpus=opts.num_gpus_per_replica, config=opts.config,
                              backend=opts.backend, runner_options=runner_options)
    deployment = serve.deployment(FusionServer).options(
        name=DEPLOYMENT_NAME,
        num_replicas=int(opts.replicas),
        max_ongoing_requests=int(opts.max_ongoing_requests),
        max_queued_requests=int(opts.max_queued_requests),
        ray_actor_options={"num_cpus": float(opts.num_cpus_per_replica), "num_gpus": float(opts.num_gpus_per_replica)},
    )
    return deployment.bind(str(artifact), device, opts.threads, opts.limits, opts.tile, opts.config, opts.backend,
                           runner_options or None)


_DOORS: list[FrontDoor] = []
_DOORS_LOCK = threading.Lock()


def start_serve(opts: ServeOptions) -> str:
    """Start Ray (or join ``opts.address``), the HTTP front door and the Serve application; return the endpoint URL.

    The front door listens first (a port in use fails here, before any replica starts); the route answers
    503 until every replica has loaded its runner, and this returns once they have. Stop with
    :func:`stop_serve`.
    """
    from lso.deps import require
    from lso.scaleout._ray_session import init_ray

    app = build_app(opts)
    opts.clients.check()
    dispatch = _Dispatch(opts)
    door = FrontDoor(opts.host, opts.port, dispatch, opts.clients, max_body_bytes=opts.limits.max_request_bytes)
    door.start()
    try:
        init_ray(opts.address, opts.num_cpus)
        serve = require("ray.serve")
        # no Serve HTTP proxy: the front door is the only way in (see the module docstring)
        serve.start(proxy_location="Disabled")
        try:
            dispatch.handle = serve.run(app, name=opts.app_name, route_prefix=opts.route, blocking=False)
        except Exception as exc:  # Serve's DeploymentFailed/RuntimeError: the replicas could not start
            raise LSOError(f"the Serve application did not start ({type(exc).__name__}: {exc}); run with -v for "
                           f"the replica logs, check the artifact with lso infer, and the Ray resources requested "
                           f"(--num-cpus-per-replica, --num-gpus-per-replica)") from exc
    except BaseException:
        door.stop()
        raise
    with _DOORS_LOCK:
        _DOORS.append(door)
    log.info("serving %s at %s with %d replica(s)", Path(opts.artifact).name, opts.url, opts.replicas)
    return opts.url


def stop_serve(*, shutdown_serve: bool = True) -> None:
    """Close every front door :func:`start_serve` opened in this process, then shut Serve down."""
    with _DOORS_LOCK:
        doors = list(_DOORS)
        _DOORS.clear()
    for door in doors:
        door.stop()
    if shutdown_serve:
        import ray

        if ray.is_initialized():
            from ray import serve

            serve.shutdown()


def serve_forever(opts: ServeOptions, *, on_ready: Callable[[str], None] | None = None) -> None:
    """:func:`start_serve`, then block until interrupted (Ctrl-C or SIGTERM); shuts Serve (and a Ray it started)
    down."""
    from lso.deps import require
    from lso.scaleout._ray_session import ray_session

    def _terminate(signum: int, frame: Any) -> None:  # SIGTERM (docker stop, kill) stops cleanly like Ctrl-C
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    with ray_session(opts.address, opts.num_cpus):
        serve = require("ray.serve")
        try:
            url = start_serve(opts)
            if on_ready is not None:
                on_ready(url)
            while True:
                time.sleep(1.0)
        finally:
            stop_serve(shutdown_serve=False)
            serve.shutdown()
