"""``lso serve`` on Ray Serve (one replica of the tiny model on loopback): results equal local fusion in both
encodings, every bad request gets a 4xx with its reason, and the replica keeps serving afterwards."""
from __future__ import annotations

import io
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lso.scaleout.client import RemoteError, fuse_remote, server_info
from lso.scaleout.wire import NPZ, RAW


def _direct(artifact, hr, lr):
    from lso.runtime import load

    with load(artifact, threads=1) as runner:
        return runner.fuse(hr, lr)


def _scene(height=32, width=48, batch=0, seed=0):
    rng = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    return (rng.random((*lead, 3, height, width), dtype=np.float32),
            rng.random((*lead, 31, height // 4, width // 4), dtype=np.float32))


def _post(url, body: bytes, content_type: str, method: str = "POST") -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def test_info_describes_model_and_limits(serve_url):
    info = server_info(serve_url)
    assert info["n_bands"] == 31 and info["n_msi_bands"] == 3 and info["tileable"] is True
    assert set(info["formats"]) == {NPZ, RAW} and info["limits"]["max_pixels"] == 96 * 96


@pytest.mark.parametrize("media", [NPZ, RAW])
def test_fused_cube_equals_local_fusion(serve_url, tiny_onnx_tileable, media):
    hr, lr = _scene(32, 48, seed=1)
    got = fuse_remote(serve_url, hr, lr, media=media)
    assert got.shape == (31, 32, 48) and got.dtype == np.float32
    np.testing.assert_allclose(got, _direct(tiny_onnx_tileable, hr, lr), atol=1e-6)
    hr2, lr2 = _scene(24, 40, batch=2, seed=2)  # a batch, a size not a multiple of 16
    np.testing.assert_allclose(fuse_remote(serve_url, hr2, lr2, media=media), _direct(tiny_onnx_tileable, hr2, lr2),
                               atol=1e-6)


def test_bad_requests_get_4xx_with_the_reason_and_the_replica_survives(serve_url, tiny_onnx_tileable):
    hr, lr = _scene()
    cases = [
        ((hr[:2], lr), 422, "bands"),                        # runtime checks: band count
        ((hr, lr[:, :7]), 422, "integer multiple"),           # ratio
        ((np.full_like(hr, np.nan), lr), 422, "NaN"),         # non-finite values
        ((lr, hr), 422, "swapped"),                           # inputs swapped
        (_scene(128, 128), 413, "pixels"),                    # over the server's pixel limit
        (_scene(32, 32, batch=3), 413, "batch 3"),            # over the batch limit
    ]
    for (a, b), status, reason in cases:
        with pytest.raises(RemoteError) as info:
            fuse_remote(serve_url, a, b)
        assert info.value.status == status and reason in info.value.reason, (status, info.value)
    code, text = _post(serve_url, b"x" * (3 * 2**20), NPZ)  # body over 2 MiB
    assert code == 413 and "bytes" in text
    assert _post(serve_url, b"not an npz", NPZ)[0] == 400
    code, text = _post(serve_url, b"{}", "application/json")
    assert code == 415 and RAW in text
    assert _post(serve_url, b"", NPZ, method="PUT")[0] == 405
    buf = io.BytesIO()
    np.savez(buf, hr_msi=(hr * 255).astype(np.uint8), lr_hsi=lr)
    code, text = _post(serve_url, buf.getvalue(), NPZ)
    assert code == 422 and "uint8" in text
    # one value policy with the files (lso.data.value_range): 8-bit counts stored as floats are refused naming
    # the scale; values centred at 0 within the bound are served with a warning header naming it
    with pytest.raises(RemoteError) as info:
        fuse_remote(serve_url, hr * 255, lr)
    assert info.value.status == 422 and "8bit" in info.value.reason, info.value
    notes: list = []
    fuse_remote(serve_url, hr - 0.5, lr - 0.5, warnings_out=notes)
    assert notes and "centred at 0" in notes[0]
    np.testing.assert_allclose(fuse_remote(serve_url, hr * 255, lr * 255, input_scale="8bit"),
                               _direct(tiny_onnx_tileable, hr, lr), atol=1e-5)  # --input-scale's header converts
    # after all of that the same replica still answers correctly
    np.testing.assert_allclose(fuse_remote(serve_url, hr, lr), _direct(tiny_onnx_tileable, hr, lr), atol=1e-6)


def test_concurrent_clients_all_succeed(serve_url, tiny_onnx_tileable):
    scenes = [_scene(32, 32, seed=10 + i) for i in range(6)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: fuse_remote(serve_url, *s, media=RAW), scenes))
    for (hr, lr), got in zip(scenes, results, strict=True):
        np.testing.assert_allclose(got, _direct(tiny_onnx_tileable, hr, lr), atol=1e-6)


def test_bad_artifacts_and_options_are_refused_before_any_replica_starts(tmp_path):
    pytest.importorskip("ray.serve")
    from lso.errors import ArtifactError, InputError
    from lso.scaleout.serve import ServeOptions, build_app

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf")
    with pytest.raises(ArtifactError, match="corrupt.onnx"):
        build_app(ServeOptions(artifact=corrupt))
    with pytest.raises(ArtifactError, match="does not exist"):
        build_app(ServeOptions(artifact=tmp_path / "missing.onnx"))
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ArtifactError, match="which runtime"):
        build_app(ServeOptions(artifact=tmp_path / "model.bin"))
    with pytest.raises(InputError, match="replicas"):
        build_app(ServeOptions(artifact=corrupt, replicas=0))



def test_runner_options_reach_the_replica_s_runner(tiny_onnx, monkeypatch):
    """--runner-option: checked on the driver (an option the backend does not take, a key with a flag of its own),
    bound into the deployment, and passed to lso.runtime.load by each replica (built here without Ray)."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    import types

    import lso.deps
    from lso.errors import InputError
    from lso.scaleout.serve import FusionServer, ServeOptions, build_app

    bound = []
    deployment = types.SimpleNamespace(options=lambda **kw: deployment, bind=lambda *a, **kw: bound.append((a, kw)))
    fake_serve = types.SimpleNamespace(deployment=lambda cls: deployment)
    real = lso.deps.require  # no Ray Serve: build_app's bind is recorded
    monkeypatch.setattr(lso.deps, "require", lambda name: fake_serve if name == "ray.serve" else real(name))
    options = {"shapes": "dynamic", "memory_budget": "1G"}  # serve has no --memory-budget: a runner option
    build_app(ServeOptions(artifact=tiny_onnx, backend="openvino", runner_options=options))
    (args, kwargs), = bound
    server = FusionServer(*args, **kwargs)
    try:
        assert server._runner.backend == "openvino" and server._runner.settings["shapes"] == "dynamic"
        assert server._runner.memory_budget == "1G"
        hr, lr = _scene()
        out, _ = server.fuse(hr, lr)
        np.testing.assert_allclose(out, _direct(tiny_onnx, hr, lr), atol=1e-5)
    finally:
        server._runner.deactivate()
    with pytest.raises(InputError, match="openvino backend takes no option 'cuda_graph'"):
        build_app(ServeOptions(artifact=tiny_onnx, backend="openvino", runner_options={"cuda_graph": True}))
    with pytest.raises(InputError, match="use --threads instead"):
        build_app(ServeOptions(artifact=tiny_onnx, runner_options={"threads": 4}))
    assert len(bound) == 1

def _trickle(port: int, source: str, declared: int, limit_s: float) -> tuple[str, float]:
    """Send headers declaring ``declared`` body bytes, then one byte a second until the server answers or closes.

    Returns ``(outcome, seconds after the headers)``: outcome is the status line's code, ``"closed"``, or
    ``"still open"`` if nothing happened within ``limit_s``."""
    import socket
    import time

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"POST /fuse HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {NPZ}\r\n"
                     f"Content-Length: {declared}\r\n\r\n".encode())
        start = time.monotonic()
        sock.settimeout(1.0)
        while time.monotonic() - start < limit_s:
            try:
                sock.sendall(b"P")
                data = sock.recv(4096)
            except TimeoutError:
                continue  # one second passed without an answer: send the next byte
            except OSError:
                return "closed", time.monotonic() - start
            if not data:
                return "closed", time.monotonic() - start
            return data.split(b" ", 2)[1].decode(), time.monotonic() - start
        return "still open", time.monotonic() - start


@pytest.mark.slow
def test_slow_clients_cannot_starve_the_replica(serve_url, tiny_onnx_tileable):
    """One replica, the default client limits: 30 clients send headers and trickle a declared body at 1 byte/s;
    a valid request sent during the stall is answered within 2 s plus its unloaded latency, and every trickling
    client gets a 408 or a closed connection once the body deadline has passed."""
    import time
    from urllib.parse import urlsplit

    from lso.scaleout.frontdoor import ClientLimits
    from lso.scaleout.serve import ServeOptions

    limits = ServeOptions(artifact=tiny_onnx_tileable).clients
    assert limits == ClientLimits()  # the fixture's server runs with the defaults
    port = urlsplit(serve_url).port
    hr, lr = _scene(32, 32, seed=7)
    want = _direct(tiny_onnx_tileable, hr, lr)
    fuse_remote(serve_url, hr, lr)  # warm-up
    unloaded = []
    for _ in range(3):
        t = time.perf_counter()
        fuse_remote(serve_url, hr, lr)
        unloaded.append(time.perf_counter() - t)
    unloaded_s = sorted(unloaded)[1]

    declared = 1000  # well under 10 MiB: the body deadline is the 10 s floor
    deadline_s = limits.transfer_deadline_s(declared)
    with ThreadPoolExecutor(max_workers=30) as pool:
        # 30 clients, each from its own loopback address (127.0.0.2-31) so the per-client cap is not what stops them
        trickles = [pool.submit(_trickle, port, f"127.0.0.{2 + i}", declared, deadline_s + 10) for i in range(30)]
        time.sleep(3.0)  # every trickling client has sent its headers and a few bytes: the stall
        assert not any(f.done() for f in trickles)
        t = time.perf_counter()
        got = fuse_remote(serve_url, hr, lr, timeout=2.0 + unloaded_s + 30)
        stalled_s = time.perf_counter() - t
        outcomes = [f.result(timeout=deadline_s + 20) for f in trickles]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert stalled_s < 2.0 + unloaded_s, (stalled_s, unloaded_s)
    for outcome, seconds in outcomes:
        assert outcome in ("408", "closed"), outcomes
        assert deadline_s - 1.0 <= seconds <= deadline_s + 3.0, outcomes
    # and the server still answers afterwards
    np.testing.assert_allclose(fuse_remote(serve_url, hr, lr), want, atol=1e-6)
