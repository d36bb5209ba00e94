"""Load official LSO checkpoints and our own; save ours as safetensors with the config in metadata.

Official files (``.pth.tar``, ``.pth``, ``.pt``) are dicts with ``model_state_dict`` (sometimes
``state_dict``) or a bare state dict, keys possibly prefixed ``module.``, ``model.`` or ``_orig_mod.``.
They are read with ``torch.load(weights_only=True)``: a file holding anything but tensors and plain
containers is refused, never unpickled. Our own files are ``.safetensors`` whose metadata holds the
``LSOConfig`` as JSON (key ``lso_config``).

Integrity, before anything is parsed: a checkpoint with a sidecar ``<file>.json`` must match its
sha256; a zip-format PyTorch file (every ``torch.save`` since 1.6) must pass the CRC-32 of each of its
members (``torch.load`` itself does not check them: a flipped bit in a weight would load silently);
our ``.safetensors`` files carry ``content_sha256`` in their metadata (the header minus that key, plus
every tensor byte), checked on load. Any mismatch is an :class:`~lso.errors.ArtifactError` naming the
file. Sizes declared by a file are checked against the memory budget (:mod:`lso.memory`) first.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from lso._deps import require
from lso._io import atomic_path, read_sidecar
from lso.config import LSOConfig
from lso.errors import ArtifactError, InputError
from lso.memory import check_bytes
from lso.model import LSO

__all__ = ["load_checkpoint", "save_checkpoint", "read_state_dict", "infer_config", "OFFICIAL_SUFFIXES",
           "CHECKPOINT_SUFFIXES", "FORMAT_TAG", "CONTENT_HASH_KEY"]

log = logging.getLogger(__name__)

OFFICIAL_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".ckpt")
CHECKPOINT_SUFFIXES = OFFICIAL_SUFFIXES + (".safetensors",)
FORMAT_TAG = "lso-deploy/1"
_PREFIXES = ("module.", "model.", "_orig_mod.")
_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model", "net", "params")


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        out[key] = value
    return out


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) / 2:
            return dict(tensors)
    raise ArtifactError(
        f"{path} holds no LSO state dict: expected a dict with 'model_state_dict' or 'state_dict', or a bare "
        f"dict of tensors; found {type(obj).__name__}"
        + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else "")
    )


CONTENT_HASH_KEY = "content_sha256"
_HASH_KEYS = (CONTENT_HASH_KEY, CONTENT_HASH_KEY + "_copy")  # twice: one flipped bit cannot remove both
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def _safetensors_digest(path: Path) -> tuple[str, Optional[str]]:
    """``(computed, recorded)``: sha256 of the header without its digest keys plus the data bytes.

    ``recorded`` is None for a file written without a digest (before it existed). The digest is stored
    under two keys; one present without the other, or two that differ, is corruption (ArtifactError).
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("shorter than the 8-byte header length")
            n = struct.unpack("<Q", raw)[0]
            if n > _MAX_HEADER:
                raise ValueError(f"header length {n} is over {_MAX_HEADER}")
            header = json.loads(fh.read(n).decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
            meta = header.get("__metadata__")
            values = [meta.pop(k, None) for k in _HASH_KEYS] if isinstance(meta, dict) else [None, None]
            if values[0] != values[1] or not all(v is None or isinstance(v, str) for v in values):
                raise ValueError("its two recorded content digests disagree or one is missing: the header is "
                                 "corrupted")
            recorded = values[0]
            digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except (OSError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file ({exc}); re-download or re-save "
                            f"it") from exc
    return digest.hexdigest(), recorded


def _check_zip(path: Path) -> None:
    """CRC-32 of every member of a zip-format PyTorch checkpoint (no-op for the legacy format)."""
    try:
        if not zipfile.is_zipfile(path):  # may itself raise BadZipFile on a damaged end record
            return
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            check_bytes(sum(max(i.file_size, 0) for i in infos), f"{path}: checking a checkpoint whose zip directory "
                        f"declares {len(infos)} members", fix="check that the file is not corrupt")
            bad = zf.testzip()  # streams each member (1 MiB at a time) and compares its CRC-32
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, ValueError, KeyError,
            NotImplementedError, RuntimeError, struct.error, OverflowError) as exc:
        if isinstance(exc, InputError):
            raise
        raise ArtifactError(f"{path} is a damaged zip (PyTorch) file ({type(exc).__name__}: {exc}); it is "
                            f"truncated or corrupt: re-download or re-save it") from exc
    if bad is not None:
        raise ArtifactError(f"{path}: member {bad!r} fails its CRC-32 check: the file is corrupted (a flipped bit "
                            f"would change the weights silently); re-download or re-save it")


def read_state_dict(path: Union[str, os.PathLike]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read ``(state_dict, metadata)`` from any supported checkpoint file (no model built).

    Raises:
        ArtifactError: missing, unreadable, corrupt (sidecar sha256, zip CRC-32 or ``content_sha256``
            mismatch), unsafe (arbitrary pickle) or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint {path} does not exist (or is not a file)")
    read_sidecar(path)  # a pinned sha256, when there is one
    if path.name.endswith(".safetensors"):
        safetensors_torch = require("safetensors.torch")
        safe_open = require("safetensors").safe_open
        computed, recorded = _safetensors_digest(path)
        if recorded is not None and computed != recorded:
            raise ArtifactError(f"{path}: content sha256 {computed[:12]}… != recorded {recorded[:12]}… in its "
                                f"metadata: the file was modified or corrupted; re-download or re-save it")
        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = dict(fh.metadata() or {})
            state = safetensors_torch.load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types and OSError
            raise ArtifactError(f"{path} is not a readable safetensors file ({exc}); re-download or re-save it") from exc
        for key in _HASH_KEYS:
            metadata.pop(key, None)
        return _strip_prefixes(state), metadata
    _check_zip(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ArtifactError(
            f"{path} was refused: it contains Python objects beyond tensors and plain containers, which could "
            f"run code when unpickled (torch.load weights_only=True said: {str(exc).splitlines()[0]}). Only load "
            f"checkpoints you trust; re-save it as a plain state dict or as .safetensors."
        ) from exc
    except Exception as exc:  # a corrupt pickle stream raises almost anything (IndexError, KeyError, EOFError, ...)
        raise ArtifactError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                            f"{type(exc).__name__}: {exc}") from exc
    return _strip_prefixes(_unwrap(obj, path)), {}


def infer_config(state: Mapping[str, torch.Tensor], base: Optional[LSOConfig] = None) -> LSOConfig:
    """Infer the architecture from tensor shapes (patch size cannot be inferred: taken from ``base``)."""
    base = base or LSOConfig()
    try:
        n_bands = state["outc.conv.2.weight"].shape[0]
        guide_dim, in_ch = state["spatial_encoder.head.0.weight"].shape[:2]
        width = state["inc.double_conv.0.weight"].shape[0]
        heads, num_token, _ = state["process1.latent"].shape
        num_basis = state["process1.weights"].shape[1] // 2
    except KeyError as exc:
        raise ArtifactError(f"not an LSO state dict: key {exc} is missing") from exc
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ArtifactError(f"not an LSO state dict: a key tensor has an unexpected rank ({exc})") from exc
    n_res = len({k.split(".")[2] for k in state if k.startswith("spatial_encoder.body.") and ".body." in k[22:]})
    try:
        return base.replace(n_bands=int(n_bands), n_msi_bands=int(in_ch - n_bands), guide_dim=int(guide_dim),
                            n_resblocks=int(n_res), width=int(width), heads=int(heads), num_token=int(num_token),
                            num_basis=int(num_basis))
    except ValueError as exc:
        raise ArtifactError(f"the tensor shapes give no valid LSO configuration ({exc})") from exc


def _check_fit(model: LSO, state: Mapping[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("modes_list")]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} shape mismatch(es), first: {wrong[:4]}")
    if missing:
        parts.append(f"{len(missing)} missing key(s), first: {missing[:4]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), first: {unexpected[:4]}")
    try:
        hint = f"the weights fit LSOConfig({', '.join(f'{k}={v}' for k, v in infer_config(state).to_dict().items())})"
    except ArtifactError:
        hint = "the weights do not look like an LSO model at all"
    raise ArtifactError(f"{path} does not fit the model's config: " + "; ".join(parts) + f". Hint: {hint}; "
                        "pass config=None to infer it, or the matching LSOConfig.")


def load_checkpoint(
    path: Union[str, os.PathLike],
    config: Optional[LSOConfig] = None,
    *,
    map_location: Union[str, torch.device] = "cpu",
    strict: bool = True,
) -> LSO:
    """Build an :class:`LSO` from an official or our own checkpoint, in eval mode.

    Args:
        path: ``.pth.tar``/``.pth``/``.pt`` (official) or ``.safetensors`` (ours).
        config: architecture; default: the one stored in our metadata, else inferred from shapes.
        map_location: device for the model.
        strict: refuse missing/unexpected keys and shape mismatches (``ArtifactError``).
    """
    path = Path(path)
    state, metadata = read_state_dict(path)
    if config is None:
        if "lso_config" in metadata:
            try:
                config = LSOConfig.from_dict(json.loads(metadata["lso_config"]))
            except (ValueError, TypeError, AttributeError, RecursionError) as exc:
                raise ArtifactError(f"{path}: metadata 'lso_config' is not a valid config ({exc})") from exc
            if strict:  # the weights bound the model: never build one larger than the file's tensors describe
                inferred = infer_config(state, base=config)
                if inferred != config:
                    raise ArtifactError(f"{path}: metadata 'lso_config' ({config.to_json()}) disagrees with the tensor "
                                        f"shapes ({inferred.to_json()}); the file is corrupt: re-save it")
        else:
            config = infer_config(state)
    model = LSO(config)
    if strict:
        _check_fit(model, state, path)
    # modes_list is a constant buffer (1..Q): fill it if a checkpoint lacks it
    full = model.state_dict()
    full.update({k: v.to(full[k].dtype) for k, v in state.items() if k in full})
    model.load_state_dict(full, strict=True)
    model.to(map_location).eval()
    log.info("loaded %s (%s)", path, "ours" if metadata.get("format") == FORMAT_TAG else "official/state dict")
    return model


def save_checkpoint(model: LSO, path: Union[str, os.PathLike], *, dtype: Optional[torch.dtype] = None,
                    **metadata: Any) -> Path:
    """Save ``model`` as ``.safetensors`` with its config (and ``metadata``) in the file's metadata.

    Written atomically (temporary file, then rename). ``dtype=torch.float16`` halves the size; loading
    casts back to float32.
    """
    safetensors_torch = require("safetensors.torch")
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise ArtifactError(f"our checkpoints are .safetensors files; got {path.name}")
    state = {k: (v.detach().to("cpu", dtype if (dtype and v.is_floating_point() and not k.endswith("modes_list")) else v.dtype)).contiguous()
             for k, v in model.state_dict().items()}
    meta = {"format": FORMAT_TAG, "lso_config": model.config.to_json()}
    meta.update({k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in metadata.items()})
    with atomic_path(path) as tmp:
        safetensors_torch.save_file(state, str(tmp), metadata=meta)
        # the digest covers the header without its own key (offsets do not depend on the metadata)
        digest = _safetensors_digest(tmp)[0]
        meta.update({key: digest for key in _HASH_KEYS})
        safetensors_torch.save_file(state, str(tmp), metadata=meta)
    return path
