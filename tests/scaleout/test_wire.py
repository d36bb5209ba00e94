"""The HTTP wire format of ``lso serve`` (no Ray needed): encodings, limits, and the 4xx every bad request gets."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from lso.scaleout.wire import (
    HR_SHAPE_HEADER,
    LR_SHAPE_HEADER,
    NPZ,
    RAW,
    SHAPE_HEADER,
    Limits,
    RequestError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def _lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def _inputs(batch: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    return rng.random((*lead, 3, 24, 40), dtype=np.float32), rng.random((*lead, 31, 6, 10), dtype=np.float32)


@pytest.mark.parametrize("media", [NPZ, RAW])
@pytest.mark.parametrize("batch", [0, 2])
def test_request_and_response_round_trip(media, batch):
    hr, lr = _inputs(batch)
    body, headers = encode_request(hr, lr, media)
    got_hr, got_lr, got_media = decode_request(body, headers["Content-Type"], _lower(headers))
    assert got_media == media
    np.testing.assert_array_equal(got_hr, hr)
    np.testing.assert_array_equal(got_lr, lr)
    out = np.random.default_rng(1).random((*hr.shape[:-3], 31, 24, 40), dtype=np.float32)
    body, headers = encode_response(out, media)
    if media == RAW:
        assert headers[SHAPE_HEADER] == ",".join(map(str, out.shape)) and len(body) == out.nbytes
    np.testing.assert_array_equal(decode_response(body, headers["Content-Type"], _lower(headers)), out)


def _status(body, content_type, headers=None, limits=None) -> tuple[int, str]:
    with pytest.raises(RequestError) as info:
        decode_request(body, content_type, headers or {}, limits or Limits())
    return info.value.status, str(info.value)


def test_malformed_requests_are_400_with_the_reason():
    hr, lr = _inputs()
    body, headers = encode_request(hr, lr, RAW)
    h = _lower(headers)
    assert _status(body[:-4], RAW, h)[0] == 400  # body shorter than the shapes say
    status, msg = _status(body, RAW, {LR_SHAPE_HEADER: h[LR_SHAPE_HEADER]})
    assert status == 400 and HR_SHAPE_HEADER in msg
    assert _status(body, RAW, {**h, HR_SHAPE_HEADER: "3,abc"})[0] == 400
    assert _status(body, RAW, {**h, HR_SHAPE_HEADER: "24,40"})[0] == 400
    status, msg = _status(b"PK\x03\x04 not a zip at all", NPZ)
    assert status == 400
    buf = io.BytesIO()
    np.savez(buf, rgb=hr)
    status, msg = _status(buf.getvalue(), NPZ)
    assert status == 400 and "hr_msi" in msg and "rgb" in msg


def test_unknown_media_type_is_415_and_bad_dtypes_are_422():
    hr, lr = _inputs()
    body, _ = encode_request(hr, lr, NPZ)
    status, msg = _status(body, "application/json")
    assert status == 415 and NPZ in msg and RAW in msg
    buf = io.BytesIO()
    np.savez(buf, hr_msi=(hr * 255).astype(np.uint8), lr_hsi=lr)
    status, msg = _status(buf.getvalue(), NPZ)
    assert status == 422 and "uint8" in msg
    buf = io.BytesIO()
    np.savez(buf, hr_msi=np.array([{"a": 1}], dtype=object), lr_hsi=lr)  # pickled objects are never loaded
    assert _status(buf.getvalue(), NPZ)[0] == 422


def test_limits_are_413_before_anything_large_is_allocated():
    hr, lr = _inputs()
    body, _ = encode_request(hr, lr, NPZ)
    status, msg = _status(body, NPZ, limits=Limits(max_pixels=512))  # 24 x 40 = 960 pixels
    assert status == 413 and "960 pixels" in msg
    status, msg = _status(body, NPZ, limits=Limits(max_request_bytes=len(body) - 1))
    assert status == 413 and str(len(body) - 1) in msg
    hr3, lr3 = _inputs(batch=3)
    raw, raw_headers = encode_request(hr3, lr3, RAW)
    status, msg = _status(raw, RAW, _lower(raw_headers), limits=Limits(max_batch=2))
    assert status == 413 and "batch 3" in msg
    # a compression bomb: 130 MB of zeros in a ~130 kB npz is refused from the headers, never decompressed
    buf = io.BytesIO()
    np.savez_compressed(buf, hr_msi=np.zeros((3, 1024, 1024), np.float32),
                        lr_hsi=np.zeros((31, 1024, 1024), np.float32))
    assert len(buf.getvalue()) < 1 << 20
    status, msg = _status(buf.getvalue(), NPZ, limits=Limits(max_request_bytes=1 << 20, max_pixels=1 << 24))
    assert status == 413 and "decompressed" in msg
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:  # the test really built a bomb
        assert sum(i.file_size for i in zf.infolist()) > 100 * (1 << 20)
