"""Load official LSO checkpoints and our own; save ours as safetensors with the config in metadata.

Official files (``.pth.tar``, ``.pth``, ``.pt``) are dicts with ``model_state_dict`` (sometimes
``state_dict``) or a bare state dict, keys possibly prefixed ``module.``, ``model.`` or ``_orig_mod.``.
They are read with ``torch.load(weights_only=True)``: a file holding anything but tensors and plain
containers is refused, never unpickled. Our own files are ``.safetensors`` whose metadata holds the
``LSOConfig`` as JSON (key ``lso_config``).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from lso._deps import require
from lso._io import atomic_path
from lso.config import LSOConfig
from lso.errors import ArtifactError
from lso.model import LSO

__all__ = ["load_checkpoint", "save_checkpoint", "read_state_dict", "infer_config", "OFFICIAL_SUFFIXES",
           "CHECKPOINT_SUFFIXES", "FORMAT_TAG"]

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


def read_state_dict(path: Union[str, os.PathLike]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read ``(state_dict, metadata)`` from any supported checkpoint file (no model built).

    Raises:
        ArtifactError: missing, unreadable, corrupt, unsafe (arbitrary pickle) or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint {path} does not exist (or is not a file)")
    if path.name.endswith(".safetensors"):
        safetensors_torch = require("safetensors.torch")
        safe_open = require("safetensors").safe_open
        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = dict(fh.metadata() or {})
            state = safetensors_torch.load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types and OSError
            raise ArtifactError(f"{path} is not a readable safetensors file ({exc}); re-download or re-save it") from exc
        return _strip_prefixes(state), metadata
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
    n_res = len({k.split(".")[2] for k in state if k.startswith("spatial_encoder.body.") and ".body." in k[22:]})
    return base.replace(n_bands=int(n_bands), n_msi_bands=int(in_ch - n_bands), guide_dim=int(guide_dim),
                        n_resblocks=int(n_res), width=int(width), heads=int(heads), num_token=int(num_token),
                        num_basis=int(num_basis))


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
            except (ValueError, TypeError) as exc:
                raise ArtifactError(f"{path}: metadata 'lso_config' is not a valid config ({exc})") from exc
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
    return path
