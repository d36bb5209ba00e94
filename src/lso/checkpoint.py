"""Load official LSO checkpoints and our own; save ours as safetensors with the config in metadata.

Official files (``.pth.tar``, ``.pth``, ``.pt``) are dicts with ``model_state_dict`` (sometimes
``state_dict``) or a bare state dict, keys possibly prefixed ``module.``, ``model.`` or ``_orig_mod.``.
They are read with ``torch.load(weights_only=True)``: a file holding anything but tensors and plain
containers is refused, never unpickled. Our own files are ``.safetensors`` whose metadata holds the
``LSOConfig`` as JSON (key ``lso_config``).

Integrity, before anything is parsed: a checkpoint with a sidecar ``<file>.json`` must match its
sha256; a zip-format PyTorch file (every ``torch.save`` since 1.6) must pass the CRC-32 of each of its
members (``torch.load`` itself does not check them: a flipped bit in a weight would load silently);
our ``.safetensors`` files carry ``content_sha256`` in their metadata (the whole header minus that key, so
``lso_config`` and every other metadata entry, plus every tensor byte), checked on load; a file of ours (metadata
``format`` = :data:`FORMAT_TAG`, or an ``lso_config``) without it is refused (:func:`resave_checkpoint` gives a
trusted one its digest), a third-party ``.safetensors`` (neither key: it never had our digest) is loaded. A
sidecar without its ``sha256`` is refused. Any mismatch is an :class:`~lso.errors.ArtifactError` naming the
file. Sizes declared by a file are checked against the memory budget (:mod:`lso.memory`) first.

The weights themselves, whatever the format: every tensor must be floating-point (the authors' files hold
float32 throughout) and finite, ``modes_list`` exactly 1..Q, and no two keys may become one once the
``module.``/``model.``/``_orig_mod.`` prefixes are removed; each is an ``ArtifactError`` naming the key.
:func:`weights_fingerprint` names a model's weights (the same for a checkpoint file and the graph exported
from it).

Configuration: the model is built from what the checkpoint itself records — our ``lso_config`` metadata, or
the option namespace the authors' training script saves under ``config`` (``num_token``, ``num_basis``,
``width``, ``patch_size``, ``n_resblocks``, ``guide_dim``, ``n_bands``, ``n_bands_rgb``; its dataset and
training options say nothing about the architecture and are ignored) — checked against what the tensor shapes
pin (every field but ``patch_size``). A caller may add fields (``load_checkpoint(p, patch_size=2)``, or
``--config patch_size=2`` on the command line); one that contradicts the checkpoint is an error. Where nothing
records ``patch_size`` the default is used, with a warning. :func:`resolve_config` says where each field came
from (``lso info --checkpoint X``). See ``docs/model.md`` for the formats.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lso.artifacts import CHECKPOINT_SUFFIXES, OFFICIAL_SUFFIXES, WEIGHTS_FINGERPRINT_KEY, atomic_path, read_sidecar
from lso.config import LSOConfig, add_config_argument
from lso.deps import require
from lso.errors import ArtifactError, InputError
from lso.memory import check_bytes
from lso.model import LSO

__all__ = ["load_checkpoint", "save_checkpoint", "read_state_dict", "infer_config", "resolve_config",
           "ResolvedConfig", "parse_config_arg", "add_config_argument", "normalize_config_fields",
           "OFFICIAL_OPTIONS", "OFFICIAL_CONFIG_KEY", "OFFICIAL_SUFFIXES", "CHECKPOINT_SUFFIXES", "FORMAT_TAG",
           "CONTENT_HASH_KEY", "SOURCE_SAVED", "SOURCE_SHAPES", "SOURCE_CALLER", "SOURCE_DEFAULT",
           "weights_fingerprint", "resave_checkpoint", "FINGERPRINT_VERSION", "WEIGHTS_FINGERPRINT_KEY"]

log = logging.getLogger(__name__)

FORMAT_TAG = "lso-deploy/1"
_PREFIXES = ("module.", "model.", "_orig_mod.")
_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model", "net", "params")
OFFICIAL_CONFIG_KEY = "official_config"  # read_state_dict's metadata key for the authors' saved option namespace


def _strip_prefixes(state: Mapping[str, Any], path: Path | str = "state dict") -> dict[str, Any]:
    """``state`` with the wrapper prefixes (``module.``, ``model.``, ``_orig_mod.``) removed from its keys.

    Raises:
        ArtifactError: two keys become one (``module.K`` and ``K``): which of them the model should get cannot
            be told, so the file is refused instead of keeping one silently.
    """
    out: dict[str, Any] = {}
    original: dict[str, str] = {}
    for raw in state:
        key = raw
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        if key in out:
            value, other = state[raw], out[key]
            same = (isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor) and value.shape == other.shape
                    and value.dtype == other.dtype and torch.equal(value, other))
            raise ArtifactError(
                f"{path}: keys {original[key]!r} and {raw!r} both name the weight {key!r} once the prefixes "
                f"{', '.join(_PREFIXES)} are removed ({'equal values' if same else 'different values'}); which one "
                f"the model should get cannot be told. Keep one of them (e.g. save only model.state_dict() of the "
                f"unwrapped model) and re-save the file")
        out[key], original[key] = state[raw], raw
    return out


def _check_tensors(state: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """Refuse weights that cannot be right: non-floating dtypes, NaN/Inf values, a wrong ``modes_list``.

    The authors' model stores every parameter and its ``modes_list`` buffers (``torch.arange(1, Q + 1,
    dtype=torch.float)``) as floating tensors; their published files hold float32 throughout (see
    ``tests/data/reference``). An integer, boolean or complex tensor would be cast and run, and one NaN or
    Inf weight turns the whole output into NaN. ``modes_list`` must hold exactly 1..Q: the folded solver
    (the default, and every exported graph) assumes those harmonic orders whatever the buffer holds.

    Raises:
        ArtifactError: naming the first offending key.
    """
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        if not value.is_floating_point():
            raise ArtifactError(
                f"{path}: tensor {key!r} has dtype {value.dtype}, but every LSO weight is a floating-point tensor "
                f"(the authors' files hold float32, modes_list included); an integer, boolean or complex tensor is "
                f"not a weight of this model: the file is corrupt or not an LSO checkpoint. Re-download it, or "
                f"convert that tensor (state[{key!r}] = state[{key!r}].float()) only if you know its values are right")
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            first = tuple(int(i) for i in (~finite).nonzero()[0]) if value.dim() else ()
            raise ArtifactError(
                f"{path}: tensor {key!r} holds {bad} non-finite value(s) (NaN or Inf; the first at index {first}): "
                f"the model would output NaN everywhere. The weights are corrupt or from a diverged training run; "
                f"use another checkpoint (e.g. an earlier one)")
        if key.endswith("modes_list"):
            expected = torch.arange(1, value.numel() + 1, dtype=torch.float64)
            if value.dim() != 1 or not torch.equal(value.detach().cpu().double(), expected):
                shown = value.detach().cpu().flatten()[:6].tolist()
                raise ArtifactError(
                    f"{path}: buffer {key!r} must hold the harmonic orders 1..{value.numel()} (the authors' "
                    f"torch.arange(1, Q + 1)); it holds {shown}{'…' if value.numel() > 6 else ''}: the file is "
                    f"corrupt or from another model. Re-download it, or drop that key (the model fills it in)")


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


def _safetensors_digest(path: Path) -> tuple[str, str | None, dict[str, Any]]:
    """``(computed, recorded, metadata)``: sha256 of the header without its digest keys plus the data bytes.

    The digest covers the whole JSON header (tensor names, dtypes, shapes, offsets and every metadata entry,
    ``lso_config`` included) in a canonical form, then every data byte. ``recorded`` is None for a file without
    a digest (a third-party file, or one of ours whose digest keys were removed: :func:`read_state_dict` tells
    them apart by ``metadata``, the header's ``__metadata__`` without the digest keys). The digest is stored
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
            metadata = dict(meta) if isinstance(meta, dict) else {}
            digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except (OSError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file ({exc}); re-download or re-save "
                            f"it") from exc
    return digest.hexdigest(), recorded, metadata


def _is_ours(metadata: Mapping[str, Any]) -> bool:
    """Whether a safetensors header says this package wrote it (its ``format`` tag, or our ``lso_config``)."""
    fmt = metadata.get("format")
    return (isinstance(fmt, str) and fmt.startswith(FORMAT_TAG.split("/")[0] + "/")) or "lso_config" in metadata


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


def read_state_dict(path: str | os.PathLike, *, require_digest: bool = True,
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read ``(state_dict, metadata)`` from any supported checkpoint file (no model built).

    Checks, in order: the sidecar's sha256 (when there is a sidecar: one without a ``sha256`` is refused); our
    ``.safetensors`` content digest (a file of ours, i.e. with our ``format`` tag or ``lso_config`` metadata,
    must carry it); the zip CRC-32 of a PyTorch file; then the tensors themselves: keys that collide once the
    ``module.``/``model.``/``_orig_mod.`` prefixes are removed, non-floating dtypes, NaN/Inf values and a
    ``modes_list`` other than 1..Q are refused. A third-party ``.safetensors`` (no ``format`` tag, no
    ``lso_config``, hence never a digest) is read, with the tensor checks, and a log line saying it is unchecked.

    Args:
        path: the file, or ``@demo`` for the bundled demo checkpoint.
        require_digest: refuse a file of ours without its content digest (default). Only
            :func:`resave_checkpoint` turns this off, to give a trusted file written before digests one.

    Returns:
        The state dict (prefixes stripped) and a metadata dict of strings: for our ``.safetensors`` the
        file's metadata (``lso_config``, ``ratio``, ...); for an official file that carries the authors' option
        namespace, ``{"official_config": <that whole namespace as JSON>}`` (its ``sf`` is the training ratio).

    Raises:
        ArtifactError: missing, unreadable, corrupt (sidecar sha256, zip CRC-32 or ``content_sha256``
            mismatch), unsafe (arbitrary pickle) or not a checkpoint.
    """
    from lso.weights import resolve_checkpoint

    path = resolve_checkpoint(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint {path} does not exist (or is not a file)")
    read_sidecar(path)  # a pinned sha256, when there is one
    if path.name.endswith(".safetensors"):
        safetensors_torch = require("safetensors.torch")
        safe_open = require("safetensors").safe_open
        computed, recorded, header_meta = _safetensors_digest(path)
        if recorded is None:
            if _is_ours(header_meta) and require_digest:
                raise ArtifactError(
                    f"{path} is an lso-deploy checkpoint (metadata format={header_meta.get('format')!r}) without "
                    f"its content digest ({CONTENT_HASH_KEY}): the digest keys were removed or the file was written "
                    f"before digests existed, so a modified weight or config could not be detected. Re-download it; "
                    f"if you trust this copy, give it a digest with "
                    f"lso.checkpoint.resave_checkpoint({str(path)!r}, 'checked.safetensors')")
            if not _is_ours(header_meta):
                log.info("%s: a third-party safetensors file (no %r metadata): it has no content digest of ours; "
                         "pin it with a sidecar (lso.artifacts.write_sidecar) if it came from a trusted source", path,
                         "format")
        elif computed != recorded:
            raise ArtifactError(f"{path}: content sha256 {computed[:12]}… != recorded {recorded[:12]}… in its "
                                f"metadata: the file (its weights or its metadata, lso_config included) was modified "
                                f"or corrupted; re-download or re-save it")
        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata: dict[str, str] = dict(fh.metadata() or {})
            state = safetensors_torch.load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types and OSError
            raise ArtifactError(f"{path} is not a readable safetensors file ({exc}); re-download or re-save it") \
                from exc
        for key in _HASH_KEYS:
            metadata.pop(key, None)
        state = _strip_prefixes(state, path)
        _check_tensors(state, path)
        return state, metadata
    _check_zip(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ArtifactError(_refused_pickle_message(path, exc)) from exc
    except Exception as exc:  # a corrupt pickle stream raises almost anything (IndexError, KeyError, EOFError, ...)
        raise ArtifactError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                            f"{type(exc).__name__}: {_plain(str(exc))}") from exc
    metadata = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping):
        # the authors' training script saves its whole option namespace here (vars(opt))
        metadata[OFFICIAL_CONFIG_KEY] = json.dumps(dict(obj["config"]), default=str, sort_keys=True)
    state = _strip_prefixes(_unwrap(obj, path), path)
    _check_tensors(state, path)
    return state, metadata


_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def _plain(text: str) -> str:
    """``text`` without terminal escape sequences (torch's messages carry ANSI bold codes)."""
    return _ANSI.sub("", text).replace("\x1b", "")


def _refused_pickle_message(path: Path, exc: BaseException) -> str:
    text = _plain(str(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    what = f" (the first is {found.group(1)})" if found else ""
    return (
        f"{path} was refused: it holds pickled Python objects beyond tensors and plain containers{what}, which "
        f"only running code can rebuild; a legacy full-model save (torch.save(model)) looks like this. The way "
        f"forward, only for a file you trust: where the authors' code is importable, load it with "
        f"torch.load(path, weights_only=False) and save the weights with torch.save({{\"model_state_dict\": "
        f"model.state_dict(), \"config\": vars(opt)}}, \"model_best.pth.tar\") (opt: the options the model was "
        f"built with), or load those weights into lso.LSO(lso.LSOConfig(...)) and save that with "
        f"lso.checkpoint.save_checkpoint(model, \"model.safetensors\"); then use the new file."
    )


# ------------------------------------------------------------------------------------ configuration
SOURCE_SAVED = "saved config"
SOURCE_SHAPES = "tensor shapes"
SOURCE_CALLER = "caller"
SOURCE_DEFAULT = "default"

#: the authors' option names (their training script's ``config``) -> LSOConfig fields
OFFICIAL_OPTIONS: dict[str, str] = {
    "n_bands": "n_bands",
    "n_bands_rgb": "n_msi_bands",
    "guide_dim": "guide_dim",
    "n_resblocks": "n_resblocks",
    "width": "width",
    "patch_size": "patch_size",
    "num_token": "num_token",
    "num_basis": "num_basis",
}
_FIELDS = tuple(LSOConfig().to_dict())  # architecture fields, then "solver"
_INT_FIELDS = tuple(f for f in _FIELDS if f != "solver")
# a model's computation form, not its architecture: the caller's choice wins, it never contradicts a file
_FORM_FIELDS = ("solver",)


def _field_name(key: str) -> str | None:
    key = str(key).strip().replace("-", "_")
    if key in _FIELDS:
        return key
    return OFFICIAL_OPTIONS.get(key)


def _field_value(name: str, value: Any, where: str) -> Any:
    if name == "solver":
        if value not in ("reference", "folded"):
            raise InputError(f"{where}: solver must be 'reference' or 'folded', got {value!r}")
        return value
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise InputError(f"{where}: {name} must be an integer, got {value!r}") from None
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{where}: {name} must be an integer, got {value!r}")
    return value


def normalize_config_fields(fields: Mapping[str, Any], *, where: str = "configuration",
                            ignore_unknown: bool = False) -> dict[str, Any]:
    """LSOConfig fields from a mapping that may use the authors' option names (``n_bands_rgb``) or kebab-case.

    Args:
        fields: names -> values (ints, or strings of ints; ``solver`` a string).
        where: what the mapping is, for error messages (``"--config"``, a file name, ...).
        ignore_unknown: skip names that are no architecture field (a whole option namespace holds many);
            otherwise they are an error.

    Raises:
        InputError: an unknown name (unless ``ignore_unknown``), a value of the wrong type, or two names for
            one field with different values.
    """
    out: dict[str, Any] = {}
    unknown = []
    for key, value in fields.items():
        name = _field_name(key)
        if name is None:
            unknown.append(str(key))
            continue
        if value is None and ignore_unknown:
            continue
        value = _field_value(name, value, where)
        if name in out and out[name] != value:
            raise InputError(f"{where}: {name} is given twice with different values ({out[name]!r}, {value!r})")
        out[name] = value
    if unknown and not ignore_unknown:
        official = ", ".join(f"{k} (= {v})" for k, v in OFFICIAL_OPTIONS.items() if k != v)
        raise InputError(f"{where}: unknown configuration field(s) {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(_FIELDS)}, and the authors' option names {official}")
    if unknown:
        log.debug("%s: ignored non-architecture options %s", where, unknown)
    return out


def _shape_fields(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Every field the tensor shapes pin (all but ``patch_size`` and ``solver``)."""
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
    return {"n_bands": int(n_bands), "n_msi_bands": int(in_ch - n_bands), "guide_dim": int(guide_dim),
            "n_resblocks": int(n_res), "width": int(width), "heads": int(heads), "num_token": int(num_token),
            "num_basis": int(num_basis)}


def infer_config(state: Mapping[str, torch.Tensor], base: LSOConfig | None = None) -> LSOConfig:
    """Infer the architecture from tensor shapes (patch size cannot be inferred: taken from ``base``)."""
    base = base or LSOConfig()
    try:
        return base.replace(**_shape_fields(state))
    except ValueError as exc:
        raise ArtifactError(f"the tensor shapes give no valid LSO configuration ({exc})") from exc


def _saved_fields(metadata: Mapping[str, str], path: Path) -> dict[str, Any]:
    """The architecture a file records: our ``lso_config``, else the authors' ``config`` namespace."""
    for key in ("lso_config", OFFICIAL_CONFIG_KEY):
        if key not in metadata:
            continue
        try:
            data = json.loads(metadata[key])
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return normalize_config_fields(data, where=f"{path}: saved {key!r}", ignore_unknown=True)
        except (ValueError, TypeError, RecursionError) as exc:
            raise ArtifactError(f"{path}: its saved configuration ({key!r}) is not valid ({exc}); re-save the "
                                f"checkpoint, or pass the configuration yourself to a copy saved without it") from exc
    return {}


def _caller_fields(config: LSOConfig | Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    if config is None:
        named: dict[str, Any] = {}
    elif isinstance(config, LSOConfig):
        named = config.to_dict()
    elif isinstance(config, Mapping):
        named = normalize_config_fields(config, where="config")
    else:
        raise InputError(f"config must be an LSOConfig, a dict of its fields or None, got {type(config).__name__}")
    extra = normalize_config_fields(fields, where="load_checkpoint keyword arguments")
    for name, value in extra.items():
        if name in named and named[name] != value:
            raise InputError(f"{name} is given twice with different values: {named[name]!r} in config, {value!r} "
                             f"as a keyword argument")
        named[name] = value
    return named


@dataclass(frozen=True)
class ResolvedConfig:
    """The configuration a checkpoint will be built with, and where each field came from.

    Attributes:
        config: the configuration.
        sources: field -> ``"saved config"`` (the file's own ``lso_config`` or the authors' ``config``),
            ``"tensor shapes"``, ``"caller"`` or ``"default"``: the first of these that gives the field.
        agreeing: field -> the other sources that give the same value (e.g. the shapes confirming a saved width).
        path: the checkpoint file (None: no checkpoint).
    """

    config: LSOConfig
    sources: Mapping[str, str]
    agreeing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    path: Path | None = None

    def describe_sources(self) -> dict[str, str]:
        """field -> its source, with the sources that agree: ``{"width": "saved config (= tensor shapes)", ...}``."""
        return {name: self.sources[name] + (f" (= {', '.join(self.agreeing[name])})" if self.agreeing.get(name) else "")
                for name in self.config.to_dict()}


def _resolve(path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str],
             caller: Mapping[str, Any], *, strict: bool = True) -> ResolvedConfig:
    saved = _saved_fields(metadata, path)
    try:
        shapes: dict[str, int] = _shape_fields(state)
    except ArtifactError:
        if not caller and not saved:
            raise
        shapes = {}  # not LSO-shaped: the fit check below names what is wrong
    where_saved = "our saved 'lso_config'" if "lso_config" in metadata else "the authors' saved 'config'"
    # the file against itself
    clash = {n: (saved[n], shapes[n]) for n in saved if n in shapes and saved[n] != shapes[n]}
    if clash:
        text = ", ".join(f"{n}: saved {a}, shapes {b}" for n, (a, b) in clash.items())
        if strict:
            raise ArtifactError(f"{path}: {where_saved} disagrees with its tensor shapes ({text}); the file is "
                                f"inconsistent or corrupt: re-save it (strict=False builds what the shapes say)")
        log.warning("%s: %s disagrees with its tensor shapes (%s); using the shapes", path, where_saved, text)
        saved = {n: v for n, v in saved.items() if n not in clash}
    # the caller against the file
    problems = []
    for name, value in caller.items():
        if name in _FORM_FIELDS:
            continue
        if name in saved and saved[name] != value:
            problems.append(f"{name}={value!r} was asked for, but {where_saved} says {name}={saved[name]!r}")
        elif name in shapes and shapes[name] != value:
            problems.append(f"{name}={value!r} was asked for, but the tensor shapes pin {name}={shapes[name]!r}")
    if problems:
        own = {**shapes, **saved}
        raise ArtifactError(f"{path} contradicts the configuration asked for: " + "; ".join(problems) +
                            ". Drop those fields from --config / load_checkpoint(...), or pass the checkpoint's "
                            "own values (it records " + ", ".join(f"{k}={v}" for k, v in own.items()) + ")")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    agreeing: dict[str, tuple[str, ...]] = {}
    default = LSOConfig().to_dict()
    for name in _FIELDS:
        given = [(src, d[name]) for src, d in ((SOURCE_SAVED, saved), (SOURCE_SHAPES, shapes), (SOURCE_CALLER, caller))
                 if name in d]
        if name in _FORM_FIELDS and name in caller:  # the caller's choice of form wins
            given = [(SOURCE_CALLER, caller[name])] + [g for g in given if g[0] != SOURCE_CALLER]
        if given:
            values[name], sources[name] = given[0][1], given[0][0]
            agreeing[name] = tuple(src for src, v in given[1:] if v == given[0][1])
        else:
            values[name], sources[name] = default[name], SOURCE_DEFAULT
    if sources["patch_size"] == SOURCE_DEFAULT:
        log.warning("%s does not record patch_size (no saved configuration holds it, and it changes no tensor "
                    "shape): using the default patch_size=%d. If the model was trained with another patch size its "
                    "outputs will be wrong: "
                    "pass it with --config patch_size=N (command line) or load_checkpoint(..., patch_size=N).",
                    path, values["patch_size"])
    try:
        config = LSOConfig(**values)
    except ValueError as exc:
        raise ArtifactError(f"{path}: the configuration {values} is not valid ({exc})") from exc
    return ResolvedConfig(config=config, sources=sources, agreeing=agreeing, path=path)


def resolve_config(path: str | os.PathLike, config: LSOConfig | Mapping[str, Any] | None = None, *,
                   strict: bool = True, **fields: Any) -> ResolvedConfig:
    """The configuration :func:`load_checkpoint` would build ``path`` with, and where each field comes from.

    Same arguments as :func:`load_checkpoint`; reads the file but builds no model.

    Raises:
        ArtifactError: unreadable file, or a configuration that contradicts the checkpoint.
        InputError: unknown field names or bad values in ``config``/``fields``.
    """
    from lso.weights import resolve_checkpoint

    path = resolve_checkpoint(path)
    state, metadata = read_state_dict(path)
    return _resolve(path, state, metadata, _caller_fields(config, fields), strict=strict)


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
                        "pass no configuration to use the checkpoint's own, or the matching one.")


def load_checkpoint(
    path: str | os.PathLike,
    config: LSOConfig | Mapping[str, Any] | None = None,
    *,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    **fields: Any,
) -> LSO:
    """Build an :class:`LSO` from an official or our own checkpoint, in eval mode.

    The architecture is what the checkpoint records (our ``lso_config`` metadata, or the ``config`` option
    namespace the authors' training script saves), checked against what its tensor shapes pin; see
    :func:`resolve_config` for where each field comes from.

    Args:
        path: ``.pth.tar``/``.pth``/``.pt`` (official), ``.safetensors`` (ours), or ``@demo`` (the bundled
            demo checkpoint).
        config: a whole configuration (an :class:`LSOConfig`: every field is named) or some fields (a dict,
            our names or the authors' option names); needed only for what the checkpoint does not record
            (``patch_size`` of a bare state dict).
        map_location: device for the model.
        strict: refuse missing/unexpected keys, shape mismatches and a saved configuration that disagrees
            with the shapes (``ArtifactError``).
        **fields: single fields, e.g. ``patch_size=2`` (the same as ``config={"patch_size": 2}``).

    Raises:
        ArtifactError: unreadable or corrupt file; a named field that contradicts the checkpoint's saved
            configuration or its tensor shapes (the message names the field and both values).
        InputError: unknown field names or bad values.
    """
    from lso.weights import resolve_checkpoint

    path = resolve_checkpoint(path)
    state, metadata = read_state_dict(path)
    return _build_model(path, state, metadata, _caller_fields(config, fields), strict=strict,
                        map_location=map_location)


def _build_model(path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str],
                 caller: Mapping[str, Any], *, strict: bool, map_location: str | torch.device) -> LSO:
    """The model :func:`load_checkpoint` builds from what :func:`read_state_dict` returned."""
    resolved = _resolve(path, state, metadata, caller, strict=strict)
    model = LSO(resolved.config)
    if strict:
        _check_fit(model, state, path)
    # modes_list is a constant buffer (1..Q): fill it if a checkpoint lacks it
    full = model.state_dict()
    full.update({k: v.to(full[k].dtype) for k, v in state.items() if k in full})
    model.load_state_dict(full, strict=True)
    model.to(map_location).eval()
    log.info("loaded %s (%s; %s)", path, "ours" if metadata.get("format") == FORMAT_TAG else "official/state dict",
             ", ".join(f"{k}={v} [{resolved.sources[k]}]" for k, v in resolved.config.to_dict().items()))
    return model


# ----------------------------------------------------------------------------------- --config
def parse_config_arg(text: str | None) -> dict[str, Any] | None:
    """Parse a ``--config`` value into LSOConfig fields (None for None or an empty string).

    Accepted: ``key=value[,key=value...]`` (``patch_size=2,width=32``; kebab-case and the authors' names such as
    ``n_bands_rgb`` work), a JSON object (``{"patch_size": 2}``), a JSON file holding one (non-architecture keys
    such as ``lr`` are ignored, so the authors' option dump works; so does a file with the fields under
    ``"config"``), or ``paper``/``tiny`` (every field of that preset).

    Raises:
        InputError: anything else, unknown fields, or values of the wrong type; the message shows the forms.
    """
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    forms = ("expected key=value pairs (e.g. patch_size=2,width=32), a JSON object, a JSON file or 'paper'/'tiny'")
    where = f"--config {text!r}"
    if text in ("paper", "tiny"):
        return getattr(LSOConfig, text)().to_dict()
    if text[0] in "{[" or text.lower().endswith(".json") or (Path(text).is_file() and "=" not in text):
        source = text
        if text[0] not in "{[":
            try:
                source = Path(text).read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{where}: cannot read the JSON file ({exc}); {forms}") from exc
        try:
            data = json.loads(source)
        except ValueError as exc:
            raise InputError(f"{where}: not valid JSON ({exc}); {forms}") from exc
        if not isinstance(data, dict):
            raise InputError(f"{where}: the JSON is a {type(data).__name__}, not an object; {forms}")
        if isinstance(data.get("config"), dict) and not any(_field_name(k) for k in data):
            data = data["config"]  # a saved-checkpoint-like or `lso info` layout
        fields = normalize_config_fields(data, where=where, ignore_unknown=True)
        if not fields:
            raise InputError(f"{where}: the JSON names no configuration field (known: {', '.join(_FIELDS)})")
        return fields
    if "=" not in text:
        raise InputError(f"{where}: {forms}; a JSON file of that name does not exist")
    pairs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"{where}: {item!r} is not key=value; {forms}")
        if key.strip() in pairs:
            raise InputError(f"{where}: {key.strip()} is given twice")
        pairs[key.strip()] = value.strip()
    return normalize_config_fields(pairs, where=where)


def save_checkpoint(model: LSO, path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                    **metadata: Any) -> Path:
    """Save ``model`` as ``.safetensors`` with its config (and ``metadata``) in the file's metadata.

    Written atomically (temporary file, then rename). ``dtype=torch.float16`` halves the size; loading
    casts back to float32.
    """
    safetensors_torch = require("safetensors.torch")
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise ArtifactError(f"our checkpoints are .safetensors files; got {path.name}")
    state = {k: v.detach().to("cpu", dtype if (dtype and v.is_floating_point() and not k.endswith("modes_list"))
                              else v.dtype).contiguous()
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


# ------------------------------------------------------------------------------------ provenance
FINGERPRINT_VERSION = "lso-weights-sha256/1"
"""What :func:`weights_fingerprint` hashes, by version: see its docstring."""



def _state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(FINGERPRINT_VERSION.encode() + b"\0")
    for key in sorted(state):
        if key.endswith("modes_list"):  # a constant (1..Q, checked on load) that files may omit
            continue
        value = state[key]
        if not isinstance(value, torch.Tensor):
            continue
        tensor = value.detach().to("cpu", torch.float32).contiguous()
        digest.update(key.encode("utf-8") + b"\0" + ",".join(map(str, tensor.shape)).encode() + b"\0")
        digest.update(tensor.numpy().astype("<f4", copy=False).tobytes())
    return digest.hexdigest()


def weights_fingerprint(source: LSO | Mapping[str, torch.Tensor] | str | os.PathLike) -> str:
    """The fingerprint of a model's weights: the same for a checkpoint file and for a graph exported from it.

    sha256 over the version tag :data:`FINGERPRINT_VERSION`, then, for every tensor in sorted key order (prefixes
    stripped, the constant ``modes_list`` buffers left out): the key, its shape and its values as little-endian
    float32. The weights as the model holds them, so a float16 checkpoint and its float32 copy, or a ``.pth.tar``
    and the ``.safetensors`` saved from it, have the same fingerprint; any changed weight changes it.

    ``lso export`` records it in the graph (``metadata_props`` ``lso.weights_sha256``) and in its sidecar
    (``weights_sha256``), ``lso build`` in the plan's sidecar; ``Runner.weights_fingerprint`` reports it, ``lso
    info --checkpoint X`` prints it for a checkpoint. Two fingerprints equal: the graph computes with exactly
    these weights.

    Args:
        source: an :class:`LSO`, a state dict, a checkpoint file (or ``@demo``: read and checked like
            :func:`read_state_dict`), or an exported artifact (``.onnx``, ``.plan``/``.engine``/``.trt``: the
            fingerprint it records, checked against its sidecar).

    Returns:
        The hex digest.

    Raises:
        ArtifactError: an unreadable or corrupt file, or an artifact that records no fingerprint (exported
            before fingerprints: re-export it).
    """
    if isinstance(source, LSO):
        return _state_fingerprint(source.state_dict())
    if isinstance(source, Mapping):
        return _state_fingerprint(_strip_prefixes(source))
    from lso.weights import resolve_checkpoint

    path = resolve_checkpoint(source)
    name = path.name.lower()
    if name.endswith(CHECKPOINT_SUFFIXES):
        return _state_fingerprint(read_state_dict(path)[0])
    return _recorded_fingerprint(path)


def _recorded_fingerprint(path: Path) -> str:
    """The fingerprint an exported graph or plan records (its metadata, else its sidecar)."""
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist (or is not a file)")
    side = read_sidecar(path) or {}
    recorded = {}
    if path.name.lower().endswith(".onnx"):
        onnx = require("onnx")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # DecodeError and friends
            raise ArtifactError(f"{path} is not a readable ONNX graph ({exc}); re-export it") from exc
        props = {p.key: p.value for p in proto.metadata_props}
        if props.get("lso." + WEIGHTS_FINGERPRINT_KEY):
            recorded["graph metadata"] = props["lso." + WEIGHTS_FINGERPRINT_KEY]
    if isinstance(side.get(WEIGHTS_FINGERPRINT_KEY), str):
        recorded["sidecar"] = side[WEIGHTS_FINGERPRINT_KEY]
    if len(set(recorded.values())) > 1:
        raise ArtifactError(f"{path}: its graph metadata and its sidecar record different weight fingerprints "
                            f"({recorded}); one of them was edited: re-export it")
    if not recorded:
        raise ArtifactError(f"{path} records no weights fingerprint (exported before lso-deploy recorded one, or "
                            f"not by lso export): re-export it from its checkpoint (lso export)")
    return next(iter(recorded.values()))


def resave_checkpoint(path: str | os.PathLike, out: str | os.PathLike, *,
                      config: LSOConfig | Mapping[str, Any] | None = None) -> Path:
    """Save a checkpoint you trust as one of ours, with its content digest, keeping weights, dtype and metadata.

    For a file of ours written before digests existed (or whose digest was lost), which :func:`load_checkpoint`
    refuses, and for official files. The tensors are checked as on every load (finite, floating, no colliding
    keys); the weights are saved in the dtype the file holds them in (float16 stays float16), so they are
    bit-for-bit the same, and our own metadata entries (``step``, ``val_psnr``, ...) are kept.

    Args:
        path: the checkpoint (anything :func:`load_checkpoint` reads).
        out: the new ``.safetensors`` file (may be ``path`` itself: written atomically).
        config: configuration fields for what the file does not record (see :func:`load_checkpoint`).

    Returns:
        ``out`` as a Path.

    Raises:
        ArtifactError: the file is unreadable, corrupt (a digest that is present must still match), holds
            weights that cannot be right, or holds tensors of several floating dtypes.
    """
    from lso.weights import resolve_checkpoint

    path = resolve_checkpoint(path)
    state, metadata = read_state_dict(path, require_digest=False)
    model = _build_model(path, state, metadata, _caller_fields(config, {}), strict=True, map_location="cpu")
    dtypes = {v.dtype for k, v in state.items() if not k.endswith("modes_list")}
    if len(dtypes) > 1:
        raise ArtifactError(f"{path} holds weights in several dtypes ({sorted(map(str, dtypes))}); our checkpoints "
                            f"hold one: save it yourself with save_checkpoint(model, out, dtype=...)")
    dtype = dtypes.pop() if dtypes else None
    keep = {k: v for k, v in metadata.items() if k not in ("format", "lso_config", OFFICIAL_CONFIG_KEY)}
    log.warning("re-saving %s as %s with a content digest: only do this for a file you trust", path, out)
    return save_checkpoint(model, out, dtype=None if dtype == torch.float32 else dtype, **keep)
