"""``lso infer``: read a scene from files, fuse it with any artifact, write the result atomically.

Inputs (one file, or a pair), read by :func:`lso.data.read_scene` (:mod:`lso.data.scene_files`):

- ``.h5``/``.hdf5``, our layout: datasets ``hr_msi`` and ``lr_hsi``.
- ``.h5``/``.hdf5``, the community layout (``GT``, ``RGB``, optionally ``LRHSI``): ``RGB`` is the
  HR-MSI; the LR-HSI is regenerated from ``GT`` with the paper's protocol
  (:func:`lso.data.degrade`, ratio ``--ratio``, default 4), as LSO's evaluation does. ``--lr-from
  file`` uses the file's ``LRHSI`` instead (made with another protocol by the dataset's authors).
- ``.npz``: arrays ``hr_msi`` and ``lr_hsi`` (also accepted: ``msi``/``rgb`` and ``lrhsi``/``hsi``).
- ``.mat`` (MATLAB v5 through scipy, v7.3 through h5py): variables as for ``.npz``; MATLAB arrays are
  usually ``H x W x C`` and are transposed (``--layout``).
- a pair ``HR LR``: two single-array files (``.npy``, ``.npz``, ``.mat``, ``.h5``), or an 8/16-bit
  ``.png``/``.tif`` for the RGB (divided by 255 or 65535). Which is which is read from the band counts.

Arrays may be ``[C, H, W]``, ``[N, C, H, W]`` or channels-last (``--layout auto`` transposes when the
band count makes it unambiguous). Values are reflectance in [0, 1]; one policy for every format
(:mod:`lso.data.value_range`): values outside [-0.5, 1.5] are an ``InputError`` naming the scale they look like
(8- or 16-bit counts stored as numbers, centred at 0) and the fix; ``--input-scale`` (``input_scale``: ``8bit``,
``16bit`` or a number to divide by) converts them and the output records it (``input_scale``); integer arrays
need it; images (PNG) carry their scale in their bit depth. A community ``.h5`` holding one scene without the
leading N axis (``GT`` ``[31, H, W]``) is read as one scene.

Nothing is cropped silently, whatever the format: sizes that do not fit the ratio (a community ``GT``
of 130x130 at x4, an HR-MSI of 130x130 with an LR-HSI of 32x32 or 33x33) are an ``InputError`` naming the
top-left crop that would fit (:func:`lso.data.readers.fit_to_ratio`). ``--crop`` (``crop=True``) takes that
crop instead; the output records it (attribute/variable ``crop``, a one-line description, and
``crop_box`` = top, left, height, width of the HR input kept) and ``lso infer`` prints it.

Outputs are written as the network computes them (they may leave [0, 1] slightly); ``--clamp`` clips them
to [0, 1], as the paper does before computing metrics (recorded as ``clamped`` = 1).

Outputs, chosen by the suffix of ``--out`` (written by :mod:`lso.data.writers`), each with the
variables/attributes ``artifact``, ``inputs``, ``crop``, ``clamped`` and, for 31 bands, ``wavelengths_nm``
(400..700 nm):

- ``.npz``: arrays ``hr_hsi`` and the ones above.
- ``.h5``/``.hdf5``: dataset ``hr_hsi`` with the others as its attributes, chunked with Fletcher-32
  checksums.
- ``.mat`` (MATLAB v5, :func:`scipy.io.savemat`): variable ``hr_hsi`` and the others as variables.
  ``hr_hsi`` has the same layout as in ``.npz``/``.h5``: ``[31, H, W]`` for one scene, ``[N, 31, H, W]``
  for several (channels first; in MATLAB ``permute(hr_hsi, [2 3 1])`` gives the usual H x W x 31 of one
  scene). MATLAB v5 holds at most 2 GiB per variable: write larger results as ``.h5``.

Each is written to a temporary file and renamed (no partial file under the final name, ever), with a
sidecar ``<out>.json`` holding its sha256; optionally an ENVI pair (``.hdr`` + ``.img``, BSQ float32,
wavelengths in the header) for remote-sensing tools; and a false-colour PNG preview (bands near
650/550/450 nm, 1-99 % stretch). ``--tile`` fuses large scenes exactly in tiles
(:func:`lso.runtime.fuse_tiled`), into a memory-mapped partial result in ``.<out>.partial/`` that
records finished tiles: a killed run leaves no output file, and the same command run again skips the
finished tiles and completes the rest (the folder is removed once the output is written).
One run per output at a time: while it runs, ``.<out>.lock`` beside the output holds it
(:func:`lso.artifacts.output_lock`), and a second run writing the same output is refused with an ``ArtifactError``
naming the first (PID, host, start time, command) before it touches the output or its resume state.

Untrusted input files: sizes are read from headers and checked against the memory budget before
any array is read; ``.npy``/``.npz`` are never unpickled; an input with a sidecar must match its sha256.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lso.artifacts import atomic_write_text, check_writable_target, output_lock, sidecar_path
from lso.data.scene_files import DeclaredScene, declared_scene, read_scene
from lso.data.writers import OUTPUT_SUFFIXES, check_mat_size, false_colour, write_envi, write_output, write_png
from lso.deps import require
from lso.errors import InputError
from lso.memory import array_bytes, check_bytes, fusion_bytes, parse_bytes, resolve_budget

__all__ = ["InferOptions", "InferResult", "infer", "check_infer_clash", "check_work_memory", "work_bytes",
           "resume_dir"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferOptions:
    """What ``lso infer`` does (one field per flag).

    Attributes:
        artifact: checkpoint, ONNX graph or TensorRT plan (the runner is chosen from it).
        inputs: one scene file, or the HR-MSI and LR-HSI files.
        out: output ``.npz``, ``.h5`` or ``.mat`` (see the module docstring for the variables).
        device: runner device (default: the backend's).
        tile: fuse in tiles with this core size (exact; bounded memory); None = whole image.
        overlap: tile overlap (default: the exact minimum).
        index: scene index in a multi-scene file (default: all scenes).
        ratio: ratio for regenerating the LR-HSI from GT (community files); default 4.
        lr_from: community files: ``"auto"``/``"gt"`` regenerate from GT, ``"file"`` use ``LRHSI``.
        layout: ``"auto"``, ``"chw"`` or ``"hwc"`` for the arrays read.
        envi: also write ``<out>.hdr``/``<out>.img``.
        preview: also write ``<out>.png``.
        threads: intra-op threads (ONNX Runtime, OpenVINO; a hint other backends ignore).
        backend: the runner's backend (``"torch"``, ``"onnxruntime"``, ``"tensorrt"``, ``"openvino"``: a name of
            :data:`lso.runtime.base.BACKENDS`); None: the one the artifact's suffix picks (``.onnx``: ONNX Runtime).
        progress: show a progress bar when tiling.
        config: for a checkpoint artifact, configuration fields (``--config``, e.g. ``{"patch_size": 2}``):
            they must agree with what it records and fill in what it does not (:func:`lso.load_checkpoint`).
        memory_budget: working memory allowed (bytes or ``"4G"``; default :mod:`lso.memory`'s): a scene
            too large to fuse in one piece is refused before anything is allocated; with ``tile`` the
            tile shrinks until it fits.
        crop: crop inputs whose sizes do not fit the ratio to the top-left part that does (recorded in the
            output); False (default): such inputs are an ``InputError`` naming that crop.
        clamp: clip the output to [0, 1] (as the paper does before metrics); False (default): write the
            values as the network computes them.
        input_scale: scale of the input values (``--input-scale``: ``"unit"`` (default), ``"8bit"``, ``"16bit"``
            or a number to divide by; :mod:`lso.data.value_range`); recorded in the output as ``input_scale``.
        runner_options: the runner's other options (``--runner-option KEY=VALUE``, e.g. ``{"precision": "bf16"}``
            for OpenVINO), passed to :func:`lso.runtime.load`; the backend refuses one it does not take, and the
            keys with a field of their own here (``device``, ``threads``, ``backend``, ``config``,
            ``memory_budget``) are refused.
    """

    artifact: Path
    inputs: tuple[Path, ...]
    out: Path
    device: str | None = None
    tile: int | None = None
    overlap: int | None = None
    index: int | None = None
    ratio: int | None = None
    lr_from: str = "auto"
    layout: str = "auto"
    envi: bool = False
    preview: bool = True
    threads: int | None = None
    progress: bool = True
    memory_budget: str | None = None
    config: dict[str, Any] | None = None
    crop: bool = False
    clamp: bool = False
    input_scale: Any = None
    backend: str | None = None
    runner_options: dict[str, Any] | None = None

    def check(self) -> InferOptions:
        """Refuse impossible option values (InputError naming the flag) before any file is read."""
        def whole(name: str, value: Any, minimum: int | None) -> None:
            if value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
                raise InputError(f"--{name.replace('_', '-')} must be an integer"
                                 + (f" >= {minimum}" if minimum is not None else "") + f", got {value!r}")

        whole("tile", self.tile, 1)
        whole("overlap", self.overlap, 0)
        whole("index", self.index, None)
        whole("ratio", self.ratio, 2)
        whole("threads", self.threads, 1)
        if self.lr_from not in ("auto", "gt", "file"):
            raise InputError(f"--lr-from must be 'auto', 'gt' or 'file', got {self.lr_from!r}")
        if self.layout not in ("auto", "chw", "hwc"):
            raise InputError(f"--layout must be 'auto', 'chw' or 'hwc', got {self.layout!r}")
        if not 1 <= len(self.inputs) <= 2:
            raise InputError(f"give one scene file or two files (HR-MSI, LR-HSI), got {len(self.inputs)}")
        if Path(self.out).suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"output {Path(self.out).name}: expected one of {', '.join(OUTPUT_SUFFIXES)}")
        if self.memory_budget is not None:
            parse_bytes(self.memory_budget)
        from lso.data.value_range import InputScale

        InputScale.parse(self.input_scale)  # InputError naming --input-scale
        from lso.runtime.base import check_runner_options

        check_runner_options(self.runner_options)  # string keys, none with a flag of its own
        return self


@dataclass
class InferResult:
    """What was written (``crop``: what ``--crop`` did, ``"none"`` if nothing; ``clamped``: ``--clamp``)."""

    output: Path
    shape: tuple[int, ...]
    seconds: float
    runner: str
    preview: list[Path] = field(default_factory=list)
    envi: list[Path] = field(default_factory=list)
    crop: str = "none"
    clamped: bool = False


# ------------------------------------------------------------------------------------------ memory plan
def work_bytes(scene: DeclaredScene, config: Any, *, tiled: bool, fuse_on_host: bool = True,
               clamp: bool = False) -> int:
    """Peak host bytes of a command's whole work on ``scene``: the larger of reading (inputs held plus the read
    in flight) and fusing (inputs held, the fusion's working memory and its float32 output, unless tiled:
    the tiles are sized to fit the budget by :func:`lso.runtime.fuse_tiled`, the output is memory-mapped)."""
    held = array_bytes((scene.batch, config.n_msi_bands, scene.height, scene.width), 4) \
        + array_bytes((scene.batch, config.n_bands, scene.lr_height, scene.lr_width), 4)
    reading = held * scene.held_factor + scene.read_bytes
    output = array_bytes((scene.batch, config.n_bands, scene.height, scene.width), 4)
    fusing = held
    if not tiled:
        fusing += output * (2 if clamp else 1)
        if fuse_on_host:
            fusing += fusion_bytes(config, scene.batch, scene.height, scene.width)
    elif clamp:
        fusing += output
    return max(reading, fusing)


def check_work_memory(inputs: Sequence[Path], runner: Any, *, index: int | None = None, ratio: int | None = None,
                      lr_from: str = "auto", layout: str = "auto", tiled: bool = False, clamp: bool = False,
                      memory_budget: Any = None, label: str = "", fix: str | None = None) -> int | None:
    """Refuse (InputError) before anything is read when the whole work on the scene files ``inputs`` (every item
    of the file, read, held and fused) would not fit the memory budget; returns the estimate (None: not declared).

    Args:
        inputs: the scene files; ``index``, ``ratio``, ``lr_from``, ``layout``: as for
            :func:`lso.data.read_scene` (:func:`lso.data.declared_scene` reads their headers).
        runner: the active runner (its configuration and bands).
        tiled: the fusion will be tiled to fit.
        clamp: the output is clipped to [0, 1] (a second copy of it).
        memory_budget: the budget (default :mod:`lso.memory`'s).
        label: put before the message (``"scene big: "``).
        fix: how to get under the budget (default: one scene at a time, tiles, or a split file).
    """
    from lso.config import LSOConfig

    scene = declared_scene(inputs, index=index, ratio=ratio, lr_from=lr_from, layout=layout,
                           n_msi_bands=runner.n_msi_bands, n_bands=runner.n_bands)
    if scene is None:
        return None
    config = runner.config or LSOConfig(n_bands=runner.n_bands, n_msi_bands=runner.n_msi_bands)
    memory_device = getattr(runner, "_memory_device", None)
    on_host = memory_device is None or memory_device() == "cpu"
    need = work_bytes(scene, config, tiled=tiled, fuse_on_host=on_host, clamp=clamp)
    how = "in tiles" if tiled else "in one piece"
    check_bytes(need, f"{label}{scene.what} (as declared; {scene.batch} scene(s) read, held and fused {how})",
                memory_budget=memory_budget,
                fix=fix or "fuse one scene at a time (--index I), in tiles (--tile 256), or split the file")
    return need


# ------------------------------------------------------------------------------------------ resuming
def resume_dir(out: Path) -> Path:
    """Where a tiled ``lso infer`` keeps its partial result: ``.<out name>.partial/`` next to ``out``."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def _fingerprint(opts: InferOptions, hr_shape: tuple, lr_shape: tuple) -> str:
    """What a partial result depends on: the artifact and input files (name, size, mtime), options, shapes."""
    def stat(p: Path) -> list:
        st = Path(p).stat()
        return [str(Path(p).resolve()), st.st_size, st.st_mtime_ns]

    key = {"artifact": stat(opts.artifact), "inputs": [stat(p) for p in opts.inputs], "tile": opts.tile,
           "overlap": opts.overlap, "memory_budget": opts.memory_budget, "index": opts.index, "ratio": opts.ratio,
           "lr_from": opts.lr_from, "layout": opts.layout, "hr": list(hr_shape), "lr": list(lr_shape),
           "config": opts.config}
    if opts.runner_options:  # e.g. precision=bf16 changes the values (absent when none: older partials still match)
        key["runner_options"] = opts.runner_options
    for name in ("backend", "device"):  # another runtime computes other last bits: its tiles are not mixed in
        if getattr(opts, name) is not None:
            key[name] = str(getattr(opts, name))
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()


def _fuse_resumable(runner: Any, hr: np.ndarray, lr: np.ndarray, opts: InferOptions, out: Path) -> np.ndarray:
    """Tiled fusion into a memory-mapped partial result that survives a kill; finished tiles are skipped on re-run.

    The partial result (``hr_hsi.f32``) and the list of finished tiles (``state.json``, written atomically at
    most every 0.5 s and at the end, after the tiles' pixels are flushed) live in :func:`resume_dir`. The final
    output is written atomically from it by the caller; the folder is removed after that.
    """
    from lso.runtime.tiling import fuse_tiled

    work = resume_dir(out)
    state_path, data_path = work / "state.json", work / "hr_hsi.f32"
    shape = (*hr.shape[:-3], runner.n_bands, *hr.shape[-2:])
    key = _fingerprint(opts, hr.shape, lr.shape)
    done: list[int] = []
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            same = (isinstance(state, dict) and state.get("key") == key
                    and data_path.stat().st_size == array_bytes(shape, 4))
            done = [int(i) for i in state.get("done", [])] if same else []
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s: unreadable partial result (%s); starting over", work, exc)
            same = False
        if not same:
            log.warning("%s belongs to another run (different artifact, inputs or options): starting over", work)
            shutil.rmtree(work, ignore_errors=True)
        elif done:
            log.warning("resuming %s: %d tile(s) already done", out.name, len(done))
    work.mkdir(exist_ok=True)
    mm = np.memmap(data_path, dtype=np.float32, mode="r+" if done else "w+", shape=shape)
    last = [time.monotonic()]

    def save(force: bool = False) -> None:
        if force or time.monotonic() - last[0] >= 0.5:
            mm.flush()  # the pixels first, then the list that says they are there
            atomic_write_text(state_path, json.dumps({"key": key, "done": sorted(set(done))}))
            last[0] = time.monotonic()

    def on_tile(index: int, _tile: Any) -> None:
        done.append(index)
        save()

    # the tiles get the budget less the inputs this command already holds (the output is the memmap on disk)
    held = sum(array_bytes(tuple(x.shape), np.dtype(getattr(x, "dtype", np.float32)).itemsize) for x in (hr, lr))
    fuse_tiled(runner, hr, lr, tile=opts.tile, overlap=opts.overlap, progress=opts.progress, out=mm,
               memory_budget=max(resolve_budget(opts.memory_budget) - held, 1), done=set(done), on_tile=on_tile)
    save(force=True)
    return mm


# ------------------------------------------------------------------------------------------ entry
def check_infer_clash(opts: InferOptions) -> None:
    """InputError when anything ``lso infer`` would write (``out``, its sidecar, previews, the ENVI pair, the
    resume folder) is one of its inputs (the artifact, the scene files and their sidecars); see :mod:`lso.artifacts`."""
    import re

    from lso.artifacts import OutputFolder, check_no_clash, with_sidecars

    out = Path(opts.out)
    stem = out.with_name(out.stem)
    outputs: list[tuple[str, Path]] = [("output", out), ("output sidecar", sidecar_path(out)),
                                       ("resume folder", resume_dir(out))]
    extras = (["png"] if opts.preview else []) + (["hdr", "img"] if opts.envi else [])
    outputs += [("preview" if ext == "png" else "ENVI file", stem.with_name(f"{stem.name}.{ext}")) for ext in extras]
    # a multi-scene file gives one preview/ENVI pair per scene: <stem>_<i>.png, ... (the count is not known yet)
    folder = (OutputFolder(out.parent, rf"{re.escape(stem.name)}_[0-9]+\.(?:{'|'.join(extras)})", "output folder",
                           recursive=False) if extras else None)
    check_no_clash([*with_sidecars([opts.artifact], "artifact"), *with_sidecars(opts.inputs, "input")], outputs,
                   folders=[folder])


def infer(opts: InferOptions) -> InferResult:
    """Read ``opts.inputs``, fuse with the runner for ``opts.artifact``, write ``opts.out`` (+ extras).

    Raises:
        ArtifactError: unreadable artifact or input file, unwritable output.
        InputError: wrong content (keys, shapes, bands, dtype, values); an output path that is one of the inputs
            (:func:`check_infer_clash`, before anything runs).
        ArtifactError: another run is writing ``opts.out`` (:func:`lso.artifacts.output_lock`: it names that run).
    """
    opts.check()
    from dataclasses import replace

    from lso.weights import resolve_checkpoint

    opts = replace(opts, artifact=resolve_checkpoint(opts.artifact))  # @demo: the bundled checkpoint's file
    out = Path(opts.out)
    check_infer_clash(opts)  # before anything runs: no output (sidecar, preview, ENVI, resume folder) over an input
    check_writable_target(out)
    with output_lock(out):  # one run per output: a second one is refused, naming this one
        return _infer_locked(opts, out)


def _infer_locked(opts: InferOptions, out: Path) -> InferResult:
    """:func:`infer` once ``out`` is locked (options checked, the artifact resolved)."""
    from lso.runtime.base import load
    from lso.runtime.tiling import AUTO_TILE, decide_tiling

    if out.suffix.lower() == ".mat":
        require("scipy.io")  # before the model is loaded and the scene fused
    # threads: a hint, ignored by backends without intra-op threads (lso.runtime.base.backend_options)
    runner = load(opts.artifact, device=opts.device, memory_budget=opts.memory_budget, config=opts.config,
                  threads=opts.threads, backend=opts.backend, **(opts.runner_options or {}))
    start = time.perf_counter()
    with runner:  # active: its configuration is known
        # every item of the file, from declared sizes, before any is read
        check_work_memory(opts.inputs, runner, index=opts.index, ratio=opts.ratio, lr_from=opts.lr_from,
                          layout=opts.layout, tiled=bool(opts.tile), clamp=opts.clamp,
                          memory_budget=opts.memory_budget)
        scene = read_scene(opts.inputs, index=opts.index, ratio=opts.ratio, lr_from=opts.lr_from, layout=opts.layout,
                           crop=opts.crop, input_scale=opts.input_scale, n_msi_bands=runner.n_msi_bands,
                           n_bands=runner.n_bands)
        hr, lr = scene.hr_msi, scene.lr_hsi
        if out.suffix.lower() == ".mat":
            check_mat_size(out, (*hr.shape[:-3], runner.n_bands, *hr.shape[-2:]))
        log.info("fusing hr_msi %s with lr_hsi %s using %r", hr.shape, lr.shape, runner)
        tiling = decide_tiling(runner, tuple(hr.shape), tile=opts.tile)  # the one policy (lso.runtime.tiling)
        if tiling.tiled:
            hsi = _fuse_resumable(runner, hr, lr, opts, out)
        else:
            if tiling.large:
                log.warning("fusing a %dx%d scene in one piece; --tile %d bounds memory (and is exact)",
                            hr.shape[-2], hr.shape[-1], AUTO_TILE)
            hsi = runner.fuse(hr, lr)
    seconds = time.perf_counter() - start
    hsi = np.asarray(hsi, dtype=np.float32)
    if opts.clamp:  # a new array: a tiled run's partial result keeps the values as computed
        hsi = np.clip(hsi, 0.0, 1.0)
    n_bands = hsi.shape[-3]
    wavelengths = np.arange(400, 701, 10) if n_bands == 31 else None
    attrs: dict[str, Any] = {"artifact": str(Path(opts.artifact).name),
                             "inputs": ";".join(Path(p).name for p in opts.inputs),
                             **scene.crop_attrs(), "clamped": int(opts.clamp), "input_scale": scene.input_scale}
    attrs["weights_sha256"] = runner.weights_fingerprint or ""  # provenance: lso.checkpoint.weights_fingerprint
    if wavelengths is not None:
        attrs["wavelengths_nm"] = wavelengths
    write_output(out, hsi, attrs)
    result = InferResult(output=out, shape=tuple(hsi.shape), seconds=seconds,
                         runner=getattr(runner, "description", None) or repr(runner),
                         crop=str(attrs["crop"]), clamped=opts.clamp)
    scenes = hsi if hsi.ndim == 4 else hsi[None]
    for i, scene in enumerate(scenes):
        suffix = f"_{i}" if len(scenes) > 1 else ""
        stem = out.with_name(out.stem + suffix)
        if opts.preview:
            result.preview.append(write_png(stem.with_suffix(".png"), false_colour(scene)))
        if opts.envi:
            result.envi += write_envi(stem, scene, wavelengths=wavelengths)
    if opts.tile:
        shutil.rmtree(resume_dir(out), ignore_errors=True)  # the output is complete: the partial result goes
    log.info("wrote %s %s in %.2f s", out, result.shape, seconds)
    return result
