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

pytest_plugins = ["so_fixtures"]


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
    # out-of-range values are served with a warning header, not refused
    notes: list = []
    fuse_remote(serve_url, hr * 4, lr, warnings_out=notes)
    assert notes and "outside" in notes[0]
    # after all of that the same replica still answers correctly
    np.testing.assert_allclose(fuse_remote(serve_url, hr, lr), _direct(tiny_onnx_tileable, hr, lr), atol=1e-6)


def test_concurrent_clients_all_succeed(serve_url, tiny_onnx_tileable):
    scenes = [_scene(32, 32, seed=10 + i) for i in range(6)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: fuse_remote(serve_url, *s, media=RAW), scenes))
    for (hr, lr), got in zip(scenes, results):
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
