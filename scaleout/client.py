"""A small Python client of ``lso serve`` (standard library only; the wire format is :mod:`lso.scaleout.wire`).

::

    from lso.scaleout.client import fuse_remote
    hr_hsi = fuse_remote("http://127.0.0.1:8000/fuse", hr_msi, lr_hsi)          # npz encoding
    hr_hsi = fuse_remote("http://127.0.0.1:8000/fuse", hr_msi, lr_hsi, media="application/x-lso-raw")
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from lso.errors import LSOError
from lso.scaleout.wire import INPUT_SCALE_HEADER, NPZ, WARNING_HEADER, decode_response, encode_request

__all__ = ["RemoteError", "fuse_remote", "server_info"]


class RemoteError(LSOError):
    """The server answered with an error status (``status``; 0 when no answer came: connection failed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = int(status)
        self.reason = message


def _error_message(exc: urllib.error.HTTPError) -> str:
    body = exc.read()
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:500] or exc.reason


def fuse_remote(url: str, hr_msi: np.ndarray, lr_hsi: np.ndarray, *, media: str = NPZ, timeout: float = 300.0,
                warnings_out: list | None = None, input_scale: str | None = None) -> np.ndarray:
    """POST one fusion request to ``url`` and return ``hr_hsi``.

    Args:
        url: the endpoint, e.g. ``http://127.0.0.1:8000/fuse``.
        hr_msi, lr_hsi: ``[3, H, W]``/``[31, h, w]`` (or with a batch axis), float in [0, 1].
        media: :data:`~lso.scaleout.wire.NPZ` or :data:`~lso.scaleout.wire.RAW`.
        timeout: seconds to wait for the answer.
        warnings_out: a list that receives the server's input warnings (e.g. values that look centred at 0).
        input_scale: scale of the values (``"8bit"``, ``"16bit"``, a number to divide by; default unit), sent as
            ``X-LSO-Input-Scale`` (:mod:`lso.data.value_range`).

    Raises:
        RemoteError: an error status (``.status`` 4xx/5xx, ``.reason`` the server's message), or no answer
            (``.status`` 0).
    """
    body, headers = encode_request(hr_msi, lr_hsi, media)
    if input_scale is not None:
        headers[INPUT_SCALE_HEADER] = str(input_scale)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
            lower = {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        raise RemoteError(exc.code, _error_message(exc)) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        raise RemoteError(0, f"no answer from {url}: {getattr(exc, 'reason', exc)}") from None
    if warnings_out is not None and WARNING_HEADER in lower:
        warnings_out.append(lower[WARNING_HEADER])
    return decode_response(data, lower.get("content-type"), lower)


def server_info(url: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """GET ``url``: the model and limits the server reports (raises :class:`RemoteError` when it cannot)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RemoteError(exc.code, _error_message(exc)) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError) as exc:
        raise RemoteError(0, f"no answer from {url}: {getattr(exc, 'reason', exc)}") from None
