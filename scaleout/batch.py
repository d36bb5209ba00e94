"""``lso batch``: fuse every scene of a folder or HDF5 file with a Ray Data actor pool.

Each actor holds one runner (:func:`lso.runtime.load`: ONNX Runtime on CPU with ``threads`` intra-op
threads; TensorRT or CUDA with ``num_gpus_per_actor`` on a GPU cluster) and fuses one scene at a time:
it reads the scene itself (so the driver never holds image data), fuses it (tiled when it is large or
does not fit the memory budget, :func:`lso.runtime.fuse_tiled`), scores it when ground truth exists and
writes the output atomically.
The same code runs on this machine (``ray.init`` with its CPUs) and on a cluster (``address``); on a
cluster the inputs, the artifact and the output folder must be on storage every node sees.

Scenes (what :func:`discover_scenes` finds):

- a folder: every ``.npz``, ``.mat``, ``.h5``/``.hdf5`` file in it (not recursive);
- an ``.h5`` file: each scene of it — community layout (``GT``/``RGB``: the LR-HSI is regenerated from
  ``GT`` with the paper's protocol at ``ratio``) or ours (``hr_msi``/``lr_hsi``, optionally ``gt``);
- ``.npz``/``.mat`` files: ``hr_msi``/``lr_hsi`` (the key names :func:`lso.data.read_scene` accepts),
  and in ``.npz`` optionally ``gt`` ``[31, H, W]``; a 4-D ``.npz``/``.mat`` file is fused as one batch.

Scenes are read as ``lso infer`` reads them (:func:`lso.data.read_scene`), with the same rule for sizes that do
not fit the ratio: such a scene fails with an error naming the top-left crop that would fit, unless ``crop``
(``--crop``) is set; then it is cropped so (its ground truth too), and its record and output say so (``crop``).

Outputs in ``out``: ``<scene>.npz`` (or ``.h5``) per scene with ``hr_hsi`` and the scene's record (JSON,
key ``lso_record``), written by :func:`lso.data.write_output` (atomic, with its ``.json`` sidecar), and
``manifest.json``: every scene's status (``ok``, ``skipped`` = finished by an
earlier run, ``failed`` with its error), output, seconds and, with ground truth, PSNR/SAM/ERGAS/SSIM,
plus a summary. Re-running skips scenes whose output exists and was made by the same artifact (sha256) on the
same backend with the same runner options (each record names them), so an interrupted run resumes; failed
scenes are tried again. A scene that fails (corrupt file, wrong bands, ...) is recorded with its error and does
not stop the others.

No lost work: an output appears under its final name only once it is complete (written to a temporary
``.<name>.<random>.tmp`` and renamed), so a run killed at any moment (even ``SIGKILL``) leaves finished
outputs and, at worst, a temporary file of the scene it was writing; the next run into the same folder
removes such temporaries (they belong to no live run) and fuses the scenes without a finished output.
One run per output folder at a time: ``OUT/.lso.lock`` (:func:`lso.artifacts.output_lock`) holds it while it runs,
and a second run into the same folder is refused with an ``ArtifactError`` naming the first (PID, host, start
time, command) before it touches anything in it. Ray's processes of a local run end with the driver, even
when it is killed with ``SIGKILL`` (:mod:`lso.scaleout._ray_session`).

Memory budget (``memory_budget`` / ``--memory-budget``, as for ``lso infer``; :mod:`lso.memory`): working
memory one actor may use for one scene, checked before anything is allocated. A scene whose estimated
whole-scene memory (:func:`lso.memory.fusion_bytes` plus the output) exceeds it is fused in tiles
(:func:`lso.runtime.fuse_tiled` with ``tile`` or, when ``tile`` is None, the largest tile that fits; exact,
the tile core used is the record's ``tile``) if the artifact is tileable (takes ``extent``); otherwise the
scene is recorded as failed with an :class:`~lso.errors.InputError` naming the estimate, the budget and the
fix, and the other scenes go on. Default: ``$LSO_MEMORY_BUDGET`` or 75 % of the node's physical memory,
divided by the number of actors in a local run (they share this machine; on a cluster, ``address``, each
actor gets its node's default); on a GPU actor there is no default budget (as for
:class:`~lso.runtime.Runner`). Scenes with more than ``auto_tile_pixels`` HR pixels are tiled at ``auto_tile``
whatever the budget (the tile shrinks further if it does not fit).
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lso.artifacts import atomic_write_text, os_error_message, output_lock, read_sidecar, sha256_file, sidecar_path
from lso.deps import require
from lso.errors import ArtifactError, InputError, LSOError
from lso.memory import default_memory_budget, parse_bytes
from lso.runtime.base import backend_of
from lso.runtime.tiling import AUTO_TILE, AUTO_TILE_PIXELS

__all__ = ["BatchOptions", "BatchReport", "SceneRef", "discover_scenes", "fuse_scene", "run_batch",
           "read_record", "scene_budget", "remove_stale_temporaries", "SCENE_SUFFIXES", "MANIFEST"]

log = logging.getLogger(__name__)

SCENE_SUFFIXES = (".npz", ".mat", ".h5", ".hdf5")
MANIFEST = "manifest.json"
RECORD_KEY = "lso_record"
_H5 = (".h5", ".hdf5")


@dataclass(frozen=True)
class BatchOptions:
    """What ``lso batch`` does (one field per flag).

    Attributes:
        artifact: checkpoint, ONNX graph or TensorRT plan.
        inputs: folders and/or scene files (see the module docstring).
        out: output folder (created if missing).
        output_format: ``"npz"`` or ``"h5"``.
        actors: actors in the pool (each holds one runner).
        num_cpus_per_actor, num_gpus_per_actor: Ray resources per actor.
        threads: intra-op threads per actor (ONNX Runtime, OpenVINO).
        backend: the runner's backend (``"torch"``, ``"onnxruntime"``, ``"tensorrt"``, ``"openvino"``: a name of
            :data:`lso.runtime.base.BACKENDS`); None: the one the artifact's suffix picks (``.onnx``: ONNX Runtime).
        device: runner device (default: the backend's; ``cuda`` when ``num_gpus_per_actor > 0``).
        tile: tile core size for every scene (exact; shrunk to fit ``memory_budget``); None = whole scenes,
            tiled above ``auto_tile_pixels`` or when they do not fit ``memory_budget``.
        auto_tile_pixels: scenes with more HR pixels are tiled at ``auto_tile`` (tileable artifacts only).
        auto_tile: core size used for such scenes.
        memory_budget: working memory per actor (bytes or ``"4G"``, ``"512MiB"``); a scene that does not fit
            in one piece is tiled to fit (tileable artifacts) or recorded as failed. None: see the module
            docstring (``$LSO_MEMORY_BUDGET`` or 75 % of physical memory, shared by a local run's actors).
        config: for a checkpoint, configuration fields (``--config``; see :func:`lso.checkpoint.load_checkpoint`).
        ratio: ratio for regenerating the LR-HSI from GT in community-layout files.
        crop: crop scenes whose sizes do not fit the ratio to the top-left part that does (recorded);
            False: such scenes fail with an error naming that crop.
        address: Ray cluster to join; None starts a local Ray with ``num_cpus`` CPUs.
        num_cpus: CPUs of the local Ray (default: all of this machine's).
        resume: skip scenes already fused by this artifact.
        progress: progress bar.
        input_scale: scale of the input values (``--input-scale``; :mod:`lso.data.value_range`), recorded in
            every output and record as ``input_scale``.
        runner_options: the runner's other options (``--runner-option KEY=VALUE``, e.g. ``{"precision": "bf16"}``
            for OpenVINO), passed to :func:`lso.runtime.load` in every actor (and in the driver's check of the
            artifact); the backend refuses one it does not take, and the keys with a field of their own here
            (``device``, ``threads``, ``backend``, ``config``, ``memory_budget``) are refused.
    """

    artifact: Path
    inputs: tuple[Path, ...]
    out: Path
    output_format: str = "npz"
    actors: int = 2
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    threads: int | None = 1
    backend: str | None = None
    device: str | None = None
    tile: int | None = None
    auto_tile_pixels: int = AUTO_TILE_PIXELS
    auto_tile: int = AUTO_TILE
    memory_budget: str | None = None
    config: dict[str, Any] | None = None
    ratio: int = 4
    crop: bool = False
    address: str | None = None
    num_cpus: int | None = None
    resume: bool = True
    progress: bool = True
    input_scale: Any = None
    runner_options: dict[str, Any] | None = None


@dataclass(frozen=True)
class SceneRef:
    """One scene: a file, and the scene's index in it for multi-scene HDF5 files."""

    scene_id: str
    path: Path
    index: int | None = None


@dataclass
class BatchReport:
    """What a run did."""

    out: Path
    manifest: Path
    ok: int
    skipped: int
    failed: int
    seconds: float
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.ok + self.skipped + self.failed


# ------------------------------------------------------------------------------------------ discovery
def discover_scenes(inputs: Iterable[os.PathLike | str], *, exclude: Path | None = None
                    ) -> tuple[list[SceneRef], list[dict[str, Any]]]:
    """``(scenes, failures)``: every scene of ``inputs``; files that cannot even be opened become failures.

    Args:
        inputs: folders and files.
        exclude: a folder whose files are skipped (the output folder, when it lies inside an input folder).
    """
    from lso.data.scene_files import h5_scene_count

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES)
            if exclude is not None:
                found = [p for p in found if exclude.resolve() not in p.resolve().parents]
            if not found:
                log.warning("%s holds no scene files (%s)", path, ", ".join(SCENE_SUFFIXES))
            files += found
        elif path.is_file():
            if path.suffix.lower() not in SCENE_SUFFIXES:
                raise InputError(f"{path}: not a scene file; expected one of {', '.join(SCENE_SUFFIXES)}")
            files.append(path)
        else:
            raise ArtifactError(f"{path} does not exist; give scene folders or files")
    stems = [p.stem for p in files]
    scenes: list[SceneRef] = []
    failures: list[dict[str, Any]] = []
    for path in files:
        base = path.stem if stems.count(path.stem) == 1 else path.name.replace(".", "_")
        count: int | None = None
        if path.suffix.lower() in _H5:
            try:
                count = h5_scene_count(path)
            except Exception as exc:  # a file that cannot even be opened is one failed scene, not a failed run
                failures.append(_failure(SceneRef(base, path), exc, 0.0))
                continue
        if count is None:
            scenes.append(SceneRef(base, path))
        else:
            width = max(4, len(str(count - 1)))
            scenes += [SceneRef(f"{base}_{i:0{width}d}", path, i) for i in range(count)]
    return scenes, failures


# ------------------------------------------------------------------------------------------ one scene
def _metrics(gt: np.ndarray, out: np.ndarray, ratio: int) -> dict[str, float]:
    from lso.metrics import evaluate

    if gt.shape[-3:] != out.shape[-3:]:
        raise InputError(f"ground truth {gt.shape} does not match the fused output {out.shape}")
    gts = gt.reshape(-1, *gt.shape[-3:])
    outs = out.reshape(-1, *out.shape[-3:])
    per = [evaluate(g, o, ratio) for g, o in zip(gts, outs, strict=True)]
    return {k: float(np.mean([m[k] for m in per])) for k in per[0]}


def _failure(ref: SceneRef, exc: BaseException, seconds: float) -> dict[str, Any]:
    return {"scene_id": ref.scene_id, "source": str(ref.path), "index": ref.index, "status": "failed",
            "error": f"{type(exc).__name__}: {exc}", "seconds": round(seconds, 3)}


def output_path(out: Path, scene_id: str, output_format: str) -> Path:
    return Path(out) / f"{scene_id}.{output_format}"


def scene_budget(runner: Any, opts: BatchOptions, *, shared_by: int = 1) -> int | None:
    """The memory budget (bytes) of one scene in an actor: ``opts.memory_budget``, else the default divided by
    ``shared_by`` (the actors sharing this machine); None on a GPU without an explicit budget."""
    if opts.memory_budget is not None:
        return parse_bytes(opts.memory_budget)
    memory_device = getattr(runner, "_memory_device", None)
    if memory_device is not None and memory_device() != "cpu":
        return None  # activations in GPU memory: no host-memory default (as Runner.validate)
    return max(default_memory_budget() // max(int(shared_by), 1), 1)


def _fuse(runner: Any, ref: SceneRef, hr: np.ndarray, lr: np.ndarray, opts: BatchOptions,
          budget: int | None) -> tuple[Any, int | None, int]:
    """``(hr_hsi, tile core or None, tiles)``: whole when it fits, tiled when asked, large or over the budget."""
    from lso.runtime.tiling import decide_tiling, fuse_tiled

    tiling = decide_tiling(runner, tuple(hr.shape), tile=opts.tile, auto_tile=opts.auto_tile,
                           auto_tile_pixels=opts.auto_tile_pixels, memory_budget=budget,
                           label=f"scene {ref.scene_id}: ")
    if not tiling.tiled:
        return runner.fuse(hr, lr), None, 1
    tile = tiling.tile  # None: the largest tile that fits the budget
    cores: list[int] = []

    def on_tile(_index: int, t: Any) -> None:
        cores.append(max(t.core_row1 - t.core_row0, t.core_col1 - t.core_col0))

    hsi = fuse_tiled(runner, hr, lr, tile=tile, memory_budget=budget, on_tile=on_tile)
    return hsi, max(cores) if cores else tile, len(cores)


def _check_scene_memory(runner: Any, ref: SceneRef, opts: BatchOptions, budget: int | None) -> None:
    """InputError before a scene is read when what its files declare (every item it holds, read, held and
    fused; tiled when the artifact can be) would not fit ``budget`` (:func:`lso.runtime.infer.check_work_memory`)."""
    if budget is None:  # a GPU actor without an explicit budget: activations are not in host memory
        return
    from lso.io_spec import EXTENT
    from lso.runtime.infer import check_work_memory

    tileable = bool(runner.tileable)
    check_work_memory((ref.path,), runner, index=ref.index, ratio=opts.ratio, tiled=bool(opts.tile) or tileable,
                      memory_budget=budget,
                      label=f"scene {ref.scene_id}: ",
                      fix=None if tileable else f"the artifact takes no '{EXTENT}' input, so it cannot be tiled: "
                                                f"re-export it tileable (lso export --tileable) or use the checkpoint; "
                                                f"or split the file")


def fuse_scene(runner: Any, ref: SceneRef, opts: BatchOptions, *, artifact_sha256: str = "",
               memory_budget: int | None = None) -> dict[str, Any]:
    """Read, fuse, score and write one scene; returns its record (``status`` ``ok`` or ``failed``, never raises
    for a bad scene).

    Args:
        memory_budget: bytes for this scene; default :func:`scene_budget` (``opts.memory_budget`` or the
            default budget; None on a GPU).
    """
    from lso.data.scene_files import read_gt, read_scene
    from lso.data.writers import write_output
    from lso.io_spec import infer_ratio

    start = time.perf_counter()
    try:
        budget = scene_budget(runner, opts) if memory_budget is None else int(memory_budget)
        _check_scene_memory(runner, ref, opts, budget)  # the whole scene (all its items), before it is read
        scene = read_scene(ref.path, index=ref.index, ratio=opts.ratio, crop=opts.crop, input_scale=opts.input_scale,
                           n_msi_bands=runner.n_msi_bands, n_bands=runner.n_bands)
        hr, lr = scene.hr_msi, scene.lr_hsi
        ratio = infer_ratio(hr.shape, lr.shape)
        hsi, tile, tiles = _fuse(runner, ref, hr, lr, opts, budget)
        hsi = np.asarray(hsi, dtype=np.float32)
        gt = read_gt(ref.path, ref.index, crop=scene.crop)
        metrics = _metrics(gt, hsi, ratio) if gt is not None else None
        target = output_path(opts.out, ref.scene_id, opts.output_format)
        record = {"scene_id": ref.scene_id, "source": str(ref.path), "index": ref.index, "status": "ok",
                  "output": target.name, "shape": list(hsi.shape), "ratio": ratio,
                  "crop": scene.crop_attrs()["crop"], "input_scale": scene.input_scale, "tile": tile,
                  "tiles": tiles, "memory_budget": budget, "metrics": metrics, "artifact_sha256": artifact_sha256,
                  "backend": runner.backend, "runner_options": dict(opts.runner_options or {}),
                  "worker": f"{socket.gethostname()}:{os.getpid()}"}
        record["seconds"] = round(time.perf_counter() - start, 3)
        attrs: dict[str, Any] = {"artifact": Path(opts.artifact).name, "source": str(ref.path),
                                 **scene.crop_attrs(), "input_scale": scene.input_scale,
                                 RECORD_KEY: json.dumps(record)}
        if hsi.shape[-3] == 31:
            attrs["wavelengths_nm"] = np.arange(400, 701, 10)
        write_output(target, hsi, attrs)
        return record
    except Exception as exc:  # one bad scene is recorded, never stops the others
        log.warning("scene %s failed: %s: %s", ref.scene_id, type(exc).__name__, exc)
        return _failure(ref, exc, time.perf_counter() - start)


def finished_by(record: dict[str, Any] | None, artifact_sha256: str, backend: str,
                runner_options: dict[str, Any] | None) -> bool:
    """A scene's stored record says it was fused by this artifact, on this backend, with these runner options (a
    record written before records named their backend matches any backend)."""
    if not record or record.get("status") != "ok" or record.get("artifact_sha256") != artifact_sha256:
        return False
    return (record.get("backend", backend) == backend
            and dict(record.get("runner_options") or {}) == dict(runner_options or {}))


def read_record(path: Path) -> dict[str, Any] | None:
    """The record stored in a finished output (None if the file is missing, unreadable, damaged — its sha256 differs
    from its sidecar's — or has none)."""
    if not path.is_file():
        return None
    try:
        read_sidecar(path)  # the output's sha256 against its sidecar, where it has one
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return json.loads(str(data[RECORD_KEY])) if RECORD_KEY in data.files else None
        h5py = require("h5py")
        with h5py.File(path, "r") as f:
            value = f["hr_hsi"].attrs.get(RECORD_KEY)
            if value is None:
                return None
            return json.loads(value.decode() if isinstance(value, bytes) else str(value))
    except (LSOError, OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("%s is unreadable or damaged (%s): fusing that scene again", path, exc)
        return None


# ------------------------------------------------------------------------------------------ the actor
class SceneFuser:
    """Ray Data callable class: one runner per actor; each call fuses the scenes of one batch of refs.

    ``shared_by``: actors sharing this machine (a local run's pool size), dividing the default memory budget.
    """

    def __init__(self, opts: BatchOptions, artifact_sha256: str, shared_by: int = 1) -> None:
        from lso.runtime.base import load

        device = opts.device or ("cuda" if opts.num_gpus_per_actor > 0 else None)
        # threads: a hint, ignored by backends without intra-op threads (lso.runtime.base.backend_options)
        self._runner = load(opts.artifact, device=device, config=opts.config, backend=opts.backend,
                            threads=int(opts.threads) if opts.threads else None,
                            **(opts.runner_options or {})).activate()
        self._budget = scene_budget(self._runner, opts, shared_by=shared_by)  # active: its device is known
        if self._budget is not None:
            self._runner.memory_budget = self._budget  # each fuse (whole scene or tile) is checked against it
        self._opts = opts
        self._sha = artifact_sha256

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = []
        for scene_id, path, index in zip(batch["scene_id"], batch["path"], batch["index"], strict=True):
            ref = SceneRef(str(scene_id), Path(str(path)), None if int(index) < 0 else int(index))
            records.append(json.dumps(fuse_scene(self._runner, ref, self._opts, artifact_sha256=self._sha,
                                                 memory_budget=self._budget)))
        return {"record": np.array(records, dtype=object)}


# ------------------------------------------------------------------------------------------ the run
def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in records if r["status"] in ("ok", "skipped")]
    scored = [r["metrics"] for r in done if r.get("metrics")]
    summary: dict[str, Any] = {"scenes": len(records), "ok": sum(r["status"] == "ok" for r in records),
                               "skipped": sum(r["status"] == "skipped" for r in records),
                               "failed": sum(r["status"] == "failed" for r in records), "scored": len(scored)}
    if scored:
        summary["metrics_mean"] = {k: float(np.mean([m[k] for m in scored])) for k in scored[0]}
    return summary


def _write_manifest(path: Path, opts: BatchOptions, sha: str, records: dict[str, dict[str, Any]],
                    started: float) -> None:
    ordered = [records[k] for k in sorted(records)]
    data = {"format": "lso-batch-manifest", "version": 1, "artifact": str(opts.artifact), "artifact_sha256": sha,
            "inputs": [str(p) for p in opts.inputs], "out": str(opts.out),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()
                        if k not in ("artifact", "inputs", "out")},
            "updated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 2), "summary": _summary(ordered), "scenes": ordered}
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def _progress(rows: Iterable[Any], total: int, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return rows
    from lso.deps import available

    if not available("tqdm"):
        return rows
    from tqdm import tqdm

    return tqdm(rows, total=total, desc="lso batch", unit="scene")


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # lso.artifacts.atomic_path's (tempfile.mkstemp's)


def remove_stale_temporaries(out: Path, names: Iterable[str]) -> list[Path]:
    """Remove ``.<name>.<random>.tmp`` files (:func:`lso.artifacts.atomic_path`'s temporaries) of ``names`` in ``out``:
    what a run killed while writing leaves behind. Returns the files removed."""
    wanted = set(names)
    removed: list[Path] = []
    for path in Path(out).iterdir():
        match = _TEMPORARY.match(path.name)
        if match and match.group("name") in wanted and path.is_file():
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    if removed:
        log.warning("removed %d temporary file(s) left in %s by an interrupted run: %s", len(removed), out,
                    ", ".join(p.name for p in removed))
    return removed


#: names ``lso batch`` writes in its output folder: scene outputs and their sidecars, the manifest, temporaries
_OUTPUT_NAMES = r"[^/]*\.(?:npz|h5)(?:\.json)?|manifest\.json|\.[^/]*\.tmp|\.lso\.lock"


def check_batch_clash(opts: BatchOptions) -> None:
    """InputError when an input (the artifact, a scene file or folder, their sidecars) is the output folder or
    lies in it under a name ``lso batch`` writes there (see :mod:`lso.artifacts`)."""
    from lso.artifacts import OutputFolder, check_no_clash, with_sidecars

    check_no_clash([*with_sidecars([opts.artifact], "artifact"), *with_sidecars(opts.inputs, "input")],
                   folders=[OutputFolder(opts.out, _OUTPUT_NAMES, recursive=False)])


def run_batch(opts: BatchOptions, *, on_record: Callable[[dict[str, Any]], None] | None = None) -> BatchReport:
    """Fuse every scene of ``opts.inputs`` into ``opts.out`` with a Ray Data actor pool (see the module docstring).

    Args:
        opts: the options.
        on_record: called on the driver with each scene's record as it arrives.

    Returns:
        counts and records; the manifest is ``opts.out / "manifest.json"``.

    Raises:
        ArtifactError: the artifact is missing or corrupt; the output folder cannot be written; another run is
            writing into it (named in the message).
        InputError: bad options, an input that does not exist, an input inside the output folder under a name it
            writes, or the output folder itself (:func:`check_batch_clash`, before anything runs).
        LSOError: the actor pool itself failed (the scenes finished so far are kept; re-run to resume).
    """
    from lso.weights import resolve_checkpoint

    if opts.output_format not in ("npz", "h5"):
        raise InputError(f"output format must be 'npz' or 'h5', got {opts.output_format!r}")
    if opts.actors < 1:
        raise InputError(f"need at least one actor, got {opts.actors}")
    if opts.memory_budget is not None:
        parse_bytes(opts.memory_budget)  # InputError for a bad --memory-budget, before Ray starts
    from lso.data.value_range import InputScale

    InputScale.parse(opts.input_scale)  # InputError for a bad --input-scale, before Ray starts
    from lso.runtime.base import check_runner_options

    check_runner_options(opts.runner_options)  # string keys, none with a flag of its own, before Ray starts
    started = time.perf_counter()
    # absolute paths: actors on other nodes (or in other working directories) resolve them the same way
    opts = replace(opts, out=Path(opts.out).resolve(), artifact=resolve_checkpoint(opts.artifact).resolve())
    out = opts.out
    check_batch_clash(opts)  # before anything runs: no scene output, sidecar or manifest over an input
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create the output folder {out}: {os_error_message(exc, out)}") from exc
    with output_lock(out, folder=True):  # one run per output folder: a second one is refused, naming this one
        return _run_batch_locked(opts, started, on_record)


def _run_batch_locked(opts: BatchOptions, started: float,
                      on_record: Callable[[dict[str, Any]], None] | None) -> BatchReport:
    """:func:`run_batch` once the output folder exists and is locked."""
    from lso.scaleout._checks import check_artifact
    from lso.scaleout._ray_session import ray_session

    out = opts.out
    check_artifact(opts.artifact, device=opts.device, num_gpus=opts.num_gpus_per_actor, config=opts.config,
                   backend=opts.backend, runner_options=opts.runner_options)
    sha = sha256_file(opts.artifact)
    scenes, failures = discover_scenes(opts.inputs, exclude=out)
    names = [output_path(out, ref.scene_id, opts.output_format).name for ref in scenes]
    remove_stale_temporaries(out, [MANIFEST, *names, *(sidecar_path(out / n).name for n in names)])
    records: dict[str, dict[str, Any]] = {f["scene_id"]: f for f in failures}
    todo: list[SceneRef] = []
    backend = backend_of(opts.artifact, opts.backend).name
    for ref in scenes:
        previous = read_record(output_path(out, ref.scene_id, opts.output_format)) if opts.resume else None
        if previous is not None and finished_by(previous, sha, backend, opts.runner_options):
            records[ref.scene_id] = {**previous, "status": "skipped"}
        else:
            todo.append(ref)
    manifest = out / MANIFEST
    log.info("%d scene(s): %d to fuse, %d finished before, %d unreadable", len(scenes) + len(failures), len(todo),
             len(scenes) - len(todo), len(failures))
    if todo:
        with ray_session(opts.address, opts.num_cpus) as ray:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.print_on_execution_start = False
            items = [{"scene_id": r.scene_id, "path": str(Path(r.path).resolve()),
                      "index": -1 if r.index is None else r.index} for r in todo]
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                SceneFuser, batch_size=1, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(opts.actors, len(items))),
                fn_constructor_kwargs={"opts": opts, "artifact_sha256": sha,
                                       "shared_by": 1 if opts.address else min(opts.actors, len(items))},
                num_cpus=opts.num_cpus_per_actor, num_gpus=opts.num_gpus_per_actor or None)
            last_write = time.perf_counter()
            try:
                for row in _progress(dataset.iter_rows(), len(items), opts.progress):
                    record = json.loads(row["record"])
                    records[record["scene_id"]] = record
                    if on_record is not None:
                        on_record(record)
                    if time.perf_counter() - last_write > 10.0:
                        _write_manifest(manifest, opts, sha, records, started)
                        last_write = time.perf_counter()
            except LSOError:
                raise
            except Exception as exc:  # Ray's own failures (actor died, cluster lost)
                raise LSOError(f"the Ray actor pool failed ({type(exc).__name__}: {exc}); finished scenes are kept "
                               f"in {out}: run the same command again to resume") from exc
            finally:
                _write_manifest(manifest, opts, sha, records, started)
    else:
        _write_manifest(manifest, opts, sha, records, started)
    ordered = [records[k] for k in sorted(records)]
    summary = _summary(ordered)
    return BatchReport(out=out, manifest=manifest, ok=summary["ok"], skipped=summary["skipped"],
                       failed=summary["failed"], seconds=time.perf_counter() - started, records=ordered)
