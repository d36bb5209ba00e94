"""``lso triton-repo``: a Triton Inference Server model repository from our artifacts.

Layout written (Triton's standard one; each model folder holds ``config.pbtxt`` and one numbered
folder per version)::

    REPO/
      lso_onnx/                 onnxruntime backend (platform onnxruntime_onnx)
        config.pbtxt
        1/model.onnx            (+ model.onnx.json, our sidecar: provenance, sha256)
      lso_trt/                  tensorrt backend (platform tensorrt_plan)
        config.pbtxt
        1/model.plan            (+ model.plan.json)

Each ``config.pbtxt`` is derived from :mod:`lso.io_spec` (never hard-coded names or band counts):

- ``input``/``output``: ``hr_msi`` ``[3, -1, -1]``, ``lr_hsi`` ``[31, -1, -1]`` → ``hr_hsi``
  ``[31, -1, -1]``, ``TYPE_FP32``; every spatial dimension is ``-1`` (any size, any integer ratio). With
  ``max_batch_size > 0`` Triton adds the batch dimension itself, so dims exclude it.
- ``max_batch_size`` and ``dynamic_batching`` (preferred batch sizes, ``max_queue_delay_microseconds``):
  Triton batches queued requests *of the same shape* into one run.
- ``instance_group``: ``KIND_GPU`` (optionally pinned to ``gpus``) or ``KIND_CPU`` for the ONNX model;
  TensorRT plans run on GPUs only.
- A *tileable* graph (``export_onnx(..., tileable=True)``, extra int64 input ``extent [4]`` shared by
  the batch) cannot be batched by Triton (every input of a batched model needs the batch axis), so it
  gets ``max_batch_size: 0``, full dims ``[-1, 3, -1, -1]`` and no dynamic batcher.

For a plan with a sidecar (``lso build``), ``max_batch_size`` is checked against the plan's
optimization profile (Triton rejects a larger one at load time).

Nothing here needs ``tritonclient``: the text is written directly. When ``tritonclient`` is installed,
each config is parsed back with Triton's own ``model_config`` protobuf before it is written.

Serve it with::

    tritonserver --model-repository=REPO
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lso.artifacts import atomic_path, atomic_write_text, read_sidecar, sidecar_path
from lso.config import LSOConfig
from lso.deps import available, require
from lso.errors import ArtifactError, InputError
from lso.io_spec import EXTENT, HR_MSI, INPUT_NAMES, PROFILE_BATCH, ShapeProfile, TensorSpec, tensor_specs

__all__ = ["TritonRepoOptions", "TritonModel", "write_triton_repo", "model_config_text", "parse_model_config",
           "TRITON_DTYPES"]

log = logging.getLogger(__name__)

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
"""numpy dtype name (as :mod:`lso.io_spec` writes it) -> Triton ``DataType`` enum name."""

_BACKENDS = {  # kind -> (platform, backend, default model file name inside the version folder)
    "onnx": ("onnxruntime_onnx", "onnxruntime", "model.onnx"),
    "trt": ("tensorrt_plan", "tensorrt", "model.plan"),
}
_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}


@dataclass(frozen=True)
class TritonRepoOptions:
    """What ``lso triton-repo`` writes (one field per flag).

    Attributes:
        out: the model repository folder (created if missing).
        onnx: an ONNX graph from ``lso export`` (served by the onnxruntime backend).
        plan: a TensorRT plan from ``lso build`` (served by the tensorrt backend).
        name: model name prefix: models are ``<name>_onnx`` and ``<name>_trt``.
        version: version folder to write (other versions already in the repository are kept).
        max_batch_size: largest batch Triton forms (0 disables batching; forced to 0 for tileable graphs).
        max_queue_delay_us: how long the dynamic batcher waits to fill a batch (microseconds).
        preferred_batch_sizes: batch sizes the batcher aims for (default: none, i.e. as large as it can).
        instances: model instances per device (per GPU for KIND_GPU).
        onnx_instance_kind: ``"gpu"`` or ``"cpu"`` for the ONNX model (plans always run on GPUs).
        gpus: pin instances to these GPU indices (default: every GPU).
        tileable: whether the plan takes ``extent`` (None: its sidecar, else the ONNX given with it, else no).
        overwrite: replace an existing version folder of the same number.
    """

    out: Path
    onnx: Path | None = None
    plan: Path | None = None
    name: str = "lso"
    version: int = 1
    max_batch_size: int = PROFILE_BATCH[2]  # the default optimization profile's largest batch (lso.io_spec)
    max_queue_delay_us: int = 500
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1
    onnx_instance_kind: str = "gpu"
    gpus: tuple[int, ...] = ()
    tileable: bool | None = None
    overwrite: bool = False


@dataclass
class TritonModel:
    """One model written into the repository."""

    name: str
    platform: str
    backend: str
    folder: Path
    config_path: Path
    artifact_path: Path
    max_batch_size: int
    tileable: bool
    config_text: str = field(repr=False, default="")


# ------------------------------------------------------------------------------------------ config text
def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    """``-1`` for every symbolic dimension; the batch axis dropped when Triton adds it (``max_batch_size > 0``)."""
    shape = list(spec.shape)
    if batched:
        if not shape or isinstance(shape[0], int):
            raise InputError(f"input {spec.name} has no batch axis ({spec.shape}): it cannot be batched by Triton")
        shape = shape[1:]
    return [d if isinstance(d, int) else -1 for d in shape]


def _tensor_block(spec: TensorSpec, batched: bool) -> str:
    if spec.dtype not in TRITON_DTYPES:
        raise InputError(f"{spec.name}: dtype {spec.dtype} has no Triton type here (known: {sorted(TRITON_DTYPES)})")
    dims = ", ".join(str(d) for d in _dims(spec, batched))
    return (f"  {{\n    name: \"{spec.name}\"\n    data_type: {TRITON_DTYPES[spec.dtype]}\n"
            f"    dims: [ {dims} ]\n  }}")


def model_config_text(name: str, kind: str, *, config: LSOConfig | None = None, tileable: bool = False,
                      max_batch_size: int = PROFILE_BATCH[2], max_queue_delay_us: int = 500,
                      preferred_batch_sizes: Sequence[int] = (), instances: int = 1, instance_kind: str = "gpu",
                      gpus: Sequence[int] = ()) -> str:
    """The ``config.pbtxt`` text of one model (protobuf text format of Triton's ``ModelConfig``).

    Args:
        name: the model name (must equal its folder's name).
        kind: ``"onnx"`` (onnxruntime backend) or ``"trt"`` (tensorrt backend).
        config: the model's architecture (band counts); default the paper's.
        tileable: the graph takes ``extent``: no batching (``max_batch_size: 0``), dims with the batch axis.
        max_batch_size, max_queue_delay_us, preferred_batch_sizes: batching (see :class:`TritonRepoOptions`).
        instances, instance_kind, gpus: the instance group.
    """
    if kind not in _BACKENDS:
        raise InputError(f"model kind must be one of {sorted(_BACKENDS)}, got {kind!r}")
    if instance_kind not in _KINDS:
        raise InputError(f"instance kind must be 'gpu' or 'cpu', got {instance_kind!r}")
    if kind == "trt" and instance_kind != "gpu":
        raise InputError("a TensorRT plan runs on GPUs only: use instance kind 'gpu' for it")
    if max_batch_size < 0 or instances < 1 or max_queue_delay_us < 0:
        raise InputError(f"need max_batch_size >= 0, instances >= 1 and max_queue_delay_us >= 0; got "
                         f"{max_batch_size}, {instances}, {max_queue_delay_us}")
    if tileable:
        max_batch_size, preferred_batch_sizes = 0, ()
    bad = [b for b in preferred_batch_sizes if not 1 <= int(b) <= max(max_batch_size, 0)]
    if bad:
        raise InputError(f"preferred batch sizes {bad} are outside 1..max_batch_size ({max_batch_size})")
    platform, backend, filename = _BACKENDS[kind]
    inputs, outputs = tensor_specs(config, tileable=tileable)
    batched = max_batch_size > 0
    lines = [f"name: \"{name}\"", f"platform: \"{platform}\"", f"backend: \"{backend}\"",
             f"max_batch_size: {max_batch_size}", f"default_model_filename: \"{filename}\""]
    lines.append("input [\n" + ",\n".join(_tensor_block(s, batched) for s in inputs) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor_block(s, batched) for s in outputs) + "\n]")
    group = [f"    count: {int(instances)}", f"    kind: {_KINDS[instance_kind]}"]
    if gpus and instance_kind == "gpu":
        group.append(f"    gpus: [ {', '.join(str(int(g)) for g in gpus)} ]")
    lines.append("instance_group [\n  {\n" + "\n".join(group) + "\n  }\n]")
    if batched:
        batcher = []
        if preferred_batch_sizes:
            batcher.append(f"  preferred_batch_size: [ {', '.join(str(int(b)) for b in preferred_batch_sizes)} ]")
        batcher.append(f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}")
        lines.append("dynamic_batching {\n" + "\n".join(batcher) + "\n}")
    lines.append("version_policy: { latest { num_versions: 1 } }")
    return "\n".join(lines) + "\n"


def parse_model_config(text: str) -> Any:
    """Parse ``config.pbtxt`` text with Triton's own ``model_config`` protobuf (needs ``tritonclient``).

    Returns:
        a ``tritonclient.grpc.model_config_pb2.ModelConfig`` message.

    Raises:
        ArtifactError: the text is not a valid ``ModelConfig``.
    """
    pb2 = require("tritonclient.grpc.model_config_pb2")
    text_format = require("google.protobuf.text_format")
    message = pb2.ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ArtifactError(f"config.pbtxt does not parse as Triton's ModelConfig: {exc}") from exc
    return message


# ------------------------------------------------------------------------------------------ artifacts
def _onnx_inputs(path: Path) -> dict[str, tuple]:
    """Input name -> shape (ints or symbolic names) of an ONNX graph, without loading external data."""
    onnx = require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
        raise ArtifactError(f"{path}: not a readable ONNX graph ({exc}); re-export it with lso export") from exc
    inputs = {}
    for value in model.graph.input:
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in value.type.tensor_type.shape.dim)
        inputs[value.name] = dims
    return inputs


def _config_of(side: dict | None) -> LSOConfig | None:
    if side and isinstance(side.get("config"), dict):
        return LSOConfig.from_dict(side["config"])
    return None


def _check_onnx(path: Path, config: LSOConfig | None) -> bool:
    """Check the graph's inputs against the I/O spec; return whether it is tileable."""
    inputs = _onnx_inputs(path)
    names = list(inputs)
    if any(n not in names for n in INPUT_NAMES) or any(n not in (*INPUT_NAMES, EXTENT) for n in names):
        raise ArtifactError(f"{path.name} takes inputs {names}; an LSO graph takes {list(INPUT_NAMES)} (and "
                            f"optionally '{EXTENT}'): is this an LSO model exported by lso export?")
    tileable = EXTENT in names
    for spec in tensor_specs(config, tileable=tileable)[0]:
        got = inputs[spec.name]
        fixed = [(i, d) for i, d in enumerate(spec.shape) if isinstance(d, int)]
        if len(got) != len(spec.shape) or any(got[i] != d for i, d in fixed):
            raise ArtifactError(f"{path.name}: input {spec.name} has shape {list(got)}, the I/O spec says "
                                f"{list(spec.shape)} for this config; re-export, or fix the sidecar's config")
        dynamic = [i for i, d in enumerate(spec.shape) if not isinstance(d, int)]
        if any(isinstance(got[i], int) and got[i] > 0 for i in dynamic):
            raise ArtifactError(f"{path.name}: input {spec.name} has fixed sizes {list(got)} where the I/O spec has "
                                f"dynamic ones; Triton's -1 dims need a dynamic graph: re-export with lso export")
    return tileable


def _plan_batch_limit(side: dict | None) -> int | None:
    """The largest batch every optimization profile of the plan accepts (None if unknown)."""
    profiles = (side or {}).get("profiles") or []
    limits = [int(p["max"][HR_MSI][0]) for p in profiles if HR_MSI in p.get("max", {})]
    return min(limits) if limits else None


def _check_plan_source(plan: Path, side: dict | None, onnx: Path | None) -> None:
    """What can be checked of a plan from the graph it was built from, before anything is written.

    - A plan built from a CPU-tuned graph (its sidecar records the source's variant, or the recorded source
      file is one) is refused: that graph is not meant for TensorRT.
    - Its profiles against TensorRT's per-tensor limit, by shape inference on the recorded source graph,
      else on ``onnx`` given with it (the same model). Without a graph or recorded profiles (a plan from
      plain trtexec) nothing can be checked, and a debug line says so.
    """
    side = side or {}
    recorded: dict[str, Any] = side["source"] if isinstance(side.get("source"), dict) else {}
    source = Path(recorded["path"]) if recorded.get("path") and Path(recorded["path"]).is_file() else None
    variant = recorded.get("variant")
    if variant is None and source is not None:
        from lso.export.variants import read_variant

        variant = read_variant(source).name
    if variant == "cpu":
        from lso.export.variants import TRT_EXPORT_COMMAND

        raise InputError(f"{plan.name} was built from a CPU-tuned graph ({source or 'recorded in its sidecar'}), "
                         f"which is not meant for TensorRT; rebuild it from the graph of {TRT_EXPORT_COMMAND}")
    profiles = [ShapeProfile.from_dict(p) for p in side.get("profiles") or []]
    graph = source or onnx
    if not profiles or graph is None:
        log.debug("%s: no recorded profile or source graph; the largest-tensor check is skipped", plan.name)
        return
    from lso.export.tensor_limits import check_profiles

    check_profiles(graph, profiles)


def _copy_artifact(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    side = sidecar_path(src)
    if side.is_file():  # provenance travels with the model; the sha256 in it still matches the copy
        with atomic_path(sidecar_path(dst)) as tmp:
            shutil.copyfile(side, tmp)


def _validate_text(text: str, name: str) -> None:
    if not available("tritonclient.grpc.model_config_pb2"):
        log.debug("tritonclient not installed: %s/config.pbtxt not parsed back", name)
        return
    message = parse_model_config(text)
    if message.name != name:
        raise ArtifactError(f"internal error: config for {name} parsed with name {message.name!r}")


def _write_model(opts: TritonRepoOptions, kind: str, artifact: Path, *, config: LSOConfig | None,
                 tileable: bool, instance_kind: str) -> TritonModel:
    platform, backend, filename = _BACKENDS[kind]
    name = f"{opts.name}_{kind}"
    folder = Path(opts.out) / name
    version_dir = folder / str(int(opts.version))
    if version_dir.exists() and any(version_dir.iterdir()):
        if not opts.overwrite:
            raise ArtifactError(f"{version_dir} already exists: pass --overwrite to replace version {opts.version}, "
                                f"or write another --version")
        shutil.rmtree(version_dir)
    text = model_config_text(name, kind, config=config, tileable=tileable, max_batch_size=opts.max_batch_size,
                             max_queue_delay_us=opts.max_queue_delay_us,
                             preferred_batch_sizes=opts.preferred_batch_sizes, instances=opts.instances,
                             instance_kind=instance_kind, gpus=opts.gpus)
    _validate_text(text, name)
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / filename
    _copy_artifact(artifact, target)
    config_path = atomic_write_text(folder / "config.pbtxt", text)
    log.info("wrote Triton model %s (%s, version %d, max_batch_size %d)", name, platform, opts.version,
             0 if tileable else opts.max_batch_size)
    return TritonModel(name=name, platform=platform, backend=backend, folder=folder, config_path=config_path,
                       artifact_path=target, max_batch_size=0 if tileable else opts.max_batch_size,
                       tileable=tileable, config_text=text)


def check_triton_clash(opts: TritonRepoOptions) -> None:
    """InputError when the ONNX graph or plan (or its sidecar) lies in a version folder this run writes (or
    replaces with ``--overwrite``) or is a ``config.pbtxt`` it writes (see :mod:`lso.artifacts`)."""
    from lso.artifacts import OutputFolder, check_no_clash, with_sidecars

    inputs = [*with_sidecars([opts.onnx], "ONNX graph"), *with_sidecars([opts.plan], "plan")]
    outputs, folders = [], []
    for kind, artifact in (("onnx", opts.onnx), ("trt", opts.plan)):
        if artifact is not None:
            model = Path(opts.out) / f"{opts.name}_{kind}"
            outputs.append(("model configuration", model / "config.pbtxt"))
            folders.append(OutputFolder(model / str(int(opts.version)), None, "version folder"))
    check_no_clash(inputs, outputs, folders=folders)


def write_triton_repo(opts: TritonRepoOptions) -> list[TritonModel]:
    """Write (or add a version to) a Triton model repository for ``opts.onnx`` and/or ``opts.plan``.

    Returns:
        the models written, ONNX first.

    Raises:
        InputError: neither artifact given, bad batching/instance options, a batch larger than the plan's
            profile allows.
        ArtifactError: an artifact is missing, corrupt or not an LSO graph; the version exists (no overwrite).
        InputError: an artifact lies in a version folder it writes (:func:`check_triton_clash`).
    """
    if opts.onnx is None and opts.plan is None:
        raise InputError("give an ONNX graph (--onnx) and/or a TensorRT plan (--plan)")
    if not opts.name or any(not (c.isalnum() or c in "_-") for c in opts.name):
        raise InputError(f"model name {opts.name!r}: use letters, digits, '_' and '-' only")
    if opts.version < 1:
        raise InputError(f"version must be >= 1 (Triton's version folders are positive integers), got {opts.version}")
    for path, what in ((opts.onnx, ".onnx"), (opts.plan, ".plan/.engine/.trt")):
        if path is not None and not Path(path).is_file():
            raise ArtifactError(f"{path} does not exist (or is not a file); expected a {what} file")
    out = Path(opts.out)
    check_triton_clash(opts)  # before anything is written (a version folder may be replaced)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out} exists and is not a folder; choose another model repository path")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise ArtifactError(f"{out} is not writable; choose another model repository path")
    if opts.plan is not None:  # before anything is written
        _check_plan_source(Path(opts.plan), read_sidecar(Path(opts.plan)),
                                 Path(opts.onnx) if opts.onnx is not None else None)
    models = []
    onnx_tileable: bool | None = None
    onnx_config: LSOConfig | None = None
    if opts.onnx is not None:
        onnx_path = Path(opts.onnx)
        side = read_sidecar(onnx_path)
        onnx_config = _config_of(side)
        onnx_tileable = _check_onnx(onnx_path, onnx_config)
        models.append(_write_model(opts, "onnx", onnx_path, config=onnx_config, tileable=onnx_tileable,
                                   instance_kind=opts.onnx_instance_kind))
    if opts.plan is not None:
        plan = Path(opts.plan)
        side = read_sidecar(plan)
        if side is None:
            log.warning("%s has no sidecar (built by plain trtexec?): its config, tileability and profile are not "
                        "known; assuming the paper config and the batch limit you gave", plan.name)
        tileable = opts.tileable
        if tileable is None:
            tileable = bool((side or {}).get("tileable", onnx_tileable or False))
        limit = _plan_batch_limit(side)
        if limit is not None and not tileable and opts.max_batch_size > limit:
            raise InputError(f"max_batch_size {opts.max_batch_size} exceeds the plan's optimization profile (max "
                             f"batch {limit}); pass --max-batch-size {limit} or rebuild with a larger profile")
        config = _config_of(side) or onnx_config
        models.append(_write_model(opts, "trt", plan, config=config, tileable=tileable, instance_kind="gpu"))
    return models
