"""The HTTP wire format of ``lso serve`` (pure functions: no Ray, no web framework).

One request fuses one scene (or a batch of same-size scenes). Two encodings, chosen by ``Content-Type``;
the response uses the request's encoding.

``application/x-npz`` — a numpy ``.npz`` archive (``np.savez``/``np.savez_compressed``, no pickled
objects) with arrays ``hr_msi`` ``[3, H, W]`` or ``[B, 3, H, W]`` and ``lr_hsi`` ``[31, h, w]`` or
``[B, 31, h, w]``, float16/32/64 in [0, 1]. The response is an ``.npz`` with ``hr_hsi`` (float32, the
input's rank).

``application/x-lso-raw`` — raw little-endian float32 in C order: the body is ``hr_msi``'s bytes
followed by ``lr_hsi``'s bytes; their shapes are given in headers ``X-LSO-HR-Shape: 3,256,256`` and
``X-LSO-LR-Shape: 31,64,64`` (comma-separated, 3 or 4 numbers). The body length must equal
``4 * (prod(hr shape) + prod(lr shape))``. The response body is ``hr_hsi`` float32 little-endian with
its shape in ``X-LSO-Shape``.

Errors come back as JSON ``{"error": "<reason>", "status": <code>}``: 400 malformed request (bad
encoding, shapes that do not match the body), 413 too large (body, pixels or batch over the server's
limits), 415 unknown ``Content-Type``, 422 content the model cannot take (bands, ratio, NaN/Inf, dtype;
the runtime's own input checks; values out of range), 405 wrong method, 503 overloaded.

Values: the one value policy of every input format (:mod:`lso.data.value_range`): values outside
[-0.5, 1.5] are a 422 naming the scale they look like (8-/16-bit counts stored as floats, centred at 0);
a request header ``X-LSO-Input-Scale: 8bit`` (``unit`` default, ``16bit`` or a number to divide by) converts
them first, and the response echoes the scale applied in ``X-LSO-Input-Scale``; values in range that look
centred at 0 are answered with a warning (``X-LSO-Warning``). A request is never answered with a
500 for anything the client sent.

Example with curl (npz)::

    python -c "import numpy as np; np.savez('req.npz', hr_msi=np.random.rand(3,256,256).astype('f4'),
               lr_hsi=np.random.rand(31,64,64).astype('f4'))"
    curl -s -X POST --data-binary @req.npz -H 'Content-Type: application/x-npz' \\
         http://127.0.0.1:8000/fuse -o fused.npz
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lso.artifacts import npy_header
from lso.data.value_range import InputScale, apply_input_scale
from lso.errors import InputError
from lso.io_spec import HR_HSI, HR_MSI, LR_HSI, PROFILE_BATCH

__all__ = ["NPZ", "RAW", "HR_SHAPE_HEADER", "LR_SHAPE_HEADER", "SHAPE_HEADER", "WARNING_HEADER", "INPUT_SCALE_HEADER",
           "Limits", "RequestError", "decode_request", "encode_request", "encode_response", "decode_response",
           "error_body"]

NPZ = "application/x-npz"
RAW = "application/x-lso-raw"
HR_SHAPE_HEADER = "x-lso-hr-shape"
LR_SHAPE_HEADER = "x-lso-lr-shape"
SHAPE_HEADER = "x-lso-shape"
WARNING_HEADER = "x-lso-warning"
INPUT_SCALE_HEADER = "x-lso-input-scale"
_ACCEPTED_NPZ_DTYPES = ("<f2", "<f4", "<f8", ">f2", ">f4", ">f8")


@dataclass(frozen=True)
class Limits:
    """What one request may carry.

    Attributes:
        max_request_bytes: largest body (also the largest decoded array total, against npz compression bombs).
        max_pixels: largest ``H * W`` of the HR image.
        max_batch: largest batch ``B``.
    """

    max_request_bytes: int = 256 * 2**20
    max_pixels: int = 2048 * 2048
    max_batch: int = PROFILE_BATCH[2]  # the default optimization profile's largest batch (lso.io_spec)


class RequestError(InputError):
    """A request the server refuses; ``status`` is the HTTP status code to answer with (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _parse_shape(value: str | None, header: str) -> tuple[int, ...]:
    if not value:
        raise RequestError(400, f"raw request without the {header} header: give the array's shape, e.g. "
                                f"'{header}: 3,256,256'")
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise RequestError(400, f"{header}: {value!r} is not a comma-separated list of integers") from None
    if len(shape) not in (3, 4) or any(s <= 0 for s in shape):
        raise RequestError(400, f"{header}: {value!r}: expected 3 or 4 positive sizes ([B,] C, H, W)")
    return shape


def _check_limits(hr_shape: tuple[int, ...], lr_shape: tuple[int, ...], limits: Limits) -> None:
    pixels = int(hr_shape[-1]) * int(hr_shape[-2])
    if pixels > limits.max_pixels:
        raise RequestError(413, f"hr_msi is {hr_shape[-2]}x{hr_shape[-1]} = {pixels} pixels; this server accepts at "
                                f"most {limits.max_pixels} per request: split the scene into tiles")
    for name, shape in ((HR_MSI, hr_shape), (LR_HSI, lr_shape)):
        if len(shape) == 4 and shape[0] > limits.max_batch:
            raise RequestError(413, f"{name} has batch {shape[0]}; this server accepts at most {limits.max_batch} "
                                    f"scenes per request: send several requests")


def _npy_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one ``.npy`` member, read from its header (the data is not decompressed).

    A damaged header or an unsupported format version raises ValueError: a 400 for the caller."""
    with zf.open(member) as fh:
        return npy_header(fh)


def _decode_npz(body: bytes, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(body))
    except zipfile.BadZipFile:
        raise RequestError(400, "body is not an .npz archive (not a zip file); send np.savez output with "
                                "Content-Type application/x-npz") from None
    with zf:
        members = {name[:-4] if name.endswith(".npy") else name: name for name in zf.namelist()}
        missing = [k for k in (HR_MSI, LR_HSI) if k not in members]
        if missing:
            raise RequestError(400, f"npz holds {sorted(members)}; expected arrays '{HR_MSI}' and '{LR_HSI}'")
        shapes = {}
        try:
            total = 0
            for key in (HR_MSI, LR_HSI):
                shape, dtype = _npy_header(zf, members[key])
                if dtype.str not in _ACCEPTED_NPZ_DTYPES:
                    raise RequestError(422, f"{key} has dtype {dtype}: send float32 (or float16/float64) values in "
                                            f"[0, 1]; integers, objects and other types are rejected")
                if len(shape) not in (3, 4):
                    raise RequestError(422, f"{key} has shape {shape}: expected [C, H, W] or [B, C, H, W]")
                total += math.prod(shape) * dtype.itemsize
                shapes[key] = shape
            if total > limits.max_request_bytes:
                raise RequestError(413, f"the npz arrays hold {total} bytes decompressed; this server accepts at "
                                        f"most {limits.max_request_bytes}")
            _check_limits(shapes[HR_MSI], shapes[LR_HSI], limits)
            with np.load(io.BytesIO(body), allow_pickle=False) as data:
                return np.asarray(data[HR_MSI]), np.asarray(data[LR_HSI])
        except RequestError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise RequestError(400, f"npz archive is corrupt or truncated ({exc})") from None


def _decode_raw(body: bytes, headers: Mapping[str, str], limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    hr_shape = _parse_shape(headers.get(HR_SHAPE_HEADER), HR_SHAPE_HEADER)
    lr_shape = _parse_shape(headers.get(LR_SHAPE_HEADER), LR_SHAPE_HEADER)
    _check_limits(hr_shape, lr_shape, limits)
    n_hr, n_lr = math.prod(hr_shape), math.prod(lr_shape)
    if len(body) != 4 * (n_hr + n_lr):
        raise RequestError(400, f"raw body has {len(body)} bytes; the shapes {hr_shape} and {lr_shape} in float32 "
                                f"need {4 * (n_hr + n_lr)}")
    values = np.frombuffer(body, dtype="<f4")
    return values[:n_hr].reshape(hr_shape), values[n_hr:].reshape(lr_shape)


def decode_request(body: bytes, content_type: str | None, headers: Mapping[str, str],
                   limits: Limits = Limits()) -> tuple[np.ndarray, np.ndarray, str]:
    """``(hr_msi, lr_hsi, media_type)`` from a request (header names in lower case).

    The encoding, the limits and the values (:mod:`lso.data.value_range`, after the scale of the
    ``X-LSO-Input-Scale`` header) are checked here; bands, ratio and dtype by the runner
    (:func:`lso.runtime.validation.validate_inputs`).

    Raises:
        RequestError: 400 malformed (or a bad ``X-LSO-Input-Scale``), 413 over a limit, 415 unknown media type,
            422 wrong dtype.
        InputError: values the value policy refuses (out of range, another scale, NaN/Inf): answered with 422.

    Warns:
        InputRangeWarning: values in range that look centred at 0.
    """
    if len(body) > limits.max_request_bytes:
        raise RequestError(413, f"request body has {len(body)} bytes; this server accepts at most "
                                f"{limits.max_request_bytes}")
    media = _media_type(content_type)
    if media == NPZ:
        hr, lr = _decode_npz(body, limits)
    elif media == RAW:
        hr, lr = _decode_raw(body, headers, limits)
    else:
        raise RequestError(415, f"Content-Type {content_type!r} is not accepted: send {NPZ} (an npz with "
                                f"{HR_MSI} and {LR_HSI}) or {RAW} (float32 bytes with {HR_SHAPE_HEADER}/"
                                f"{LR_SHAPE_HEADER} headers)")
    scale = request_scale(headers)
    hr = apply_input_scale(hr, HR_MSI, scale)
    lr = apply_input_scale(lr, LR_HSI, scale)
    return hr, lr, media


def request_scale(headers: Mapping[str, str]) -> InputScale:
    """The scale of a request's values (``X-LSO-Input-Scale``, default unit); RequestError 400 for a bad one."""
    try:
        return InputScale.parse(headers.get(INPUT_SCALE_HEADER))
    except InputError as exc:
        raise RequestError(400, f"{INPUT_SCALE_HEADER}: {exc}".replace("--input-scale ", "")) from None


def encode_request(hr_msi: np.ndarray, lr_hsi: np.ndarray, media: str = NPZ) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` of a request in ``media`` (:data:`NPZ` or :data:`RAW`)."""
    if media == NPZ:
        buf = io.BytesIO()
        arrays: dict[str, Any] = {HR_MSI: np.asarray(hr_msi), LR_HSI: np.asarray(lr_hsi)}
        np.savez(buf, **arrays)
        return buf.getvalue(), {"Content-Type": NPZ}
    if media == RAW:
        hr = np.ascontiguousarray(hr_msi, dtype="<f4")
        lr = np.ascontiguousarray(lr_hsi, dtype="<f4")
        return hr.tobytes() + lr.tobytes(), {"Content-Type": RAW, HR_SHAPE_HEADER: ",".join(map(str, hr.shape)),
                                             LR_SHAPE_HEADER: ",".join(map(str, lr.shape))}
    raise InputError(f"media type must be {NPZ!r} or {RAW!r}, got {media!r}")


def encode_response(hr_hsi: np.ndarray, media: str) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` of a successful response in the request's encoding."""
    out = np.ascontiguousarray(hr_hsi, dtype="<f4")
    if media == RAW:
        return out.tobytes(), {"Content-Type": RAW, SHAPE_HEADER: ",".join(map(str, out.shape))}
    buf = io.BytesIO()
    arrays: dict[str, Any] = {HR_HSI: out}
    np.savez(buf, **arrays)
    return buf.getvalue(), {"Content-Type": NPZ}


def decode_response(body: bytes, content_type: str | None, headers: Mapping[str, str]) -> np.ndarray:
    """``hr_hsi`` from a successful response (header names in lower case)."""
    media = _media_type(content_type)
    if media == RAW:
        shape = _parse_shape(headers.get(SHAPE_HEADER), SHAPE_HEADER)
        return np.frombuffer(body, dtype="<f4").reshape(shape)
    if media == NPZ:
        with np.load(io.BytesIO(body), allow_pickle=False) as data:
            return np.asarray(data[HR_HSI])
    raise InputError(f"unexpected response Content-Type {content_type!r}")


def error_body(status: int, message: str) -> bytes:
    """The JSON body of an error response."""
    return json.dumps({"error": message, "status": int(status)}).encode("utf-8")

