"""Fixtures of the scale-out tests (a plugin registered once by tests/conftest.py, so its fixtures are global;
a second conftest.py would shadow tests/conftest.py).

The tiny model and its ONNX graphs are the runtime tests' own (``rt_model``, ``tiny_onnx_tileable`` of
``tests/runtime/rt_fixtures.py``, also a plugin), so a full run exports them once. One local Ray instance
(2 CPUs) serves every test that needs Ray; the Serve application is started once.
"""
from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs) for the whole session; shut down at the end."""
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from lso.scaleout._ray_session import init_ray

    ray, owned = init_ray(num_cpus=2)
    yield ray
    if owned:
        ray.shutdown()


def serve_limits():
    """The limits of the test server: 2 MiB bodies, 96x96 pixels, batch 2."""
    from lso.scaleout.wire import Limits

    return Limits(max_request_bytes=2 * 2**20, max_pixels=96 * 96, max_batch=2)


@pytest.fixture(scope="session")
def serve_url(ray_local, tiny_onnx_tileable):
    """``lso serve``'s application (tiny tileable graph, 1 replica, half a CPU) on a free loopback port, with the
    default client limits (header and body deadlines, connection caps)."""
    pytest.importorskip("ray.serve")
    from lso.scaleout.serve import ServeOptions, start_serve, stop_serve

    opts = ServeOptions(artifact=tiny_onnx_tileable, replicas=1, port=free_port(), num_cpus_per_replica=0.5,
                        limits=serve_limits(), app_name="lso_test")
    url = start_serve(opts)
    yield url
    stop_serve()  # the front door, then Serve
