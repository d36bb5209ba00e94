"""PyTorch runner: the reference backend, on CPU or CUDA, optionally compiled, optionally FP16.

FP16 is autocast with the FP32 islands of :mod:`lso.islands` (the same table the FP16 ONNX graph
follows): the convolutions run in half precision, while the solver and the softmaxes (each spectral
block is wrapped whole), the coordinate grid and both bicubic resizes (and so the up-sampled LR-HSI
added to the output) run in FP32, eager and under ``torch.compile`` alike. The islands are set on the
runner's own copy of the model; the caller's model is never modified.

FP32 on CUDA is FP32 for real: TF32 (matmul and cuDNN convolutions) is turned off for each call and the
caller's setting restored (TF32 alone breaks the 1e-4 parity); ``tf32=True`` allows it. Outputs of a model
compiled with CUDA graphs (``mode="reduce-overhead"`` or ``"max-autotune"``) are copied before they are
returned, since the next call overwrites the graph's output buffer.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from lso.config import LSOConfig
from lso.errors import InputError
from lso.io_spec import TensorSpec, tensor_specs
from lso.model import LSO, SpectralBlock
from lso.runtime.base import Runner, RunnerStateError
from lso.runtime.cuda_arrays import require_cuda
from lso.runtime.validation import FuseInputs

__all__ = ["TorchRunner"]

log = logging.getLogger(__name__)


class _Fp32Island(nn.Module):
    """Runs the wrapped module in FP32 with autocast disabled (inputs cast up, output FP32)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.block(x.float())


# how each island of lso.islands is kept FP32 here: the spectral blocks are wrapped whole (solver and
# softmaxes), the model's own autocast-free regions cover the rest (LSO.fp32_islands)
_SPECTRAL_BLOCK = "spectral_block"
_TORCH_MECHANISM = {"solver": _SPECTRAL_BLOCK, "softmax": _SPECTRAL_BLOCK, "coordinate_grid": "coordinate_grid",
                    "bicubic": "bicubic"}


def _with_fp32_islands(model: LSO) -> LSO:
    """Keep every island of :data:`lso.islands.FP32_ISLANDS` FP32 under autocast (``model`` changed in place)."""
    from lso.islands import islands_for

    names = [entry.name for entry in islands_for("fp16")]  # autocast is this runner's FP16 path
    missing = set(names) - set(_TORCH_MECHANISM)
    if missing:  # a new island in the table must get a mechanism here
        raise NotImplementedError(f"TorchRunner has no FP32 mechanism for island(s) {sorted(missing)}")
    mechanisms = {_TORCH_MECHANISM[name] for name in names}
    if _SPECTRAL_BLOCK in mechanisms:
        for name, child in list(model.named_children()):
            if isinstance(child, SpectralBlock):
                setattr(model, name, _Fp32Island(child))
    model.fp32_islands = frozenset(mechanisms - {_SPECTRAL_BLOCK})
    return model


@contextlib.contextmanager
def _tf32_off(device: torch.device) -> Any:
    """TF32 off for matmuls and cuDNN convolutions inside the block, the caller's setting restored after.

    Uses the ``fp32_precision`` API where torch has it (2.9+; mixing it with the legacy ``allow_tf32`` flags
    is an error there), else the legacy flags. A no-op off CUDA.
    """
    if device.type != "cuda":
        yield
        return
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        saved = (matmul.fp32_precision, conv.fp32_precision)
        with _TF32_LOCK:
            matmul.fp32_precision, conv.fp32_precision = "ieee", "ieee"
            try:
                yield
            finally:
                matmul.fp32_precision, conv.fp32_precision = saved
        return
    saved_legacy = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with _TF32_LOCK:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, False
        try:
            yield
        finally:
            matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_legacy


_TF32_LOCK = threading.RLock()  # the flags are process-wide: calls that change them run one at a time


class TorchRunner(Runner):
    """Runs an :class:`~lso.model.LSO` (given, or loaded from a checkpoint on ``__enter__``).

    Args:
        model: an LSO instance (moved to ``device`` in place on activation; deep-copied first when
            ``fp16``) or a checkpoint path (``.pth.tar``/``.pth``/``.pt``/``.safetensors``, or ``@demo``).
        device: ``"cpu"`` (default) or a CUDA device.
        compile: ``torch.compile`` the model on activation (``True``, or a dict of ``torch.compile``
            keyword arguments, e.g. ``{"mode": "max-autotune"}``). Default: ``{"dynamic": True}``.
        fp16: FP16 autocast with the FP32 islands of :mod:`lso.islands` kept in FP32.
        tf32: allow TF32 in FP32 calls on CUDA (faster, about 1e-3 off); default False: TF32 is turned off
            for each call (and the caller's setting restored), so FP32 means FP32.
        config: for a checkpoint, configuration fields (an :class:`LSOConfig` or a dict such as
            ``{"patch_size": 2}``) that must agree with what it records and fill in what it does not
            (see :func:`lso.checkpoint.load_checkpoint`); default: the checkpoint's own.

    Threads: an eager model is safe to call from many threads at once (``forward`` reads parameters and
    mutates nothing; autocast and ``no_grad`` are thread-local), so :attr:`concurrent` is True; a
    ``torch.compile``-d model is called one thread at a time (compilation and guards are not
    thread-safe), which the runner enforces with its lock.
    """

    backend = "torch"

    @property
    def concurrent(self) -> bool:  # type: ignore[override]
        return not self._compile

    def __init__(self, model: LSO | str | os.PathLike, *, device: Any = "cpu", compile: bool | dict = False,
                 fp16: bool = False, config: LSOConfig | Mapping[str, Any] | None = None,
                 tf32: bool = False) -> None:
        super().__init__()
        self._fields: LSOConfig | Mapping[str, Any] | None = None  # for load_checkpoint
        if isinstance(model, LSO):
            self._source: Path | None = None
            self._given: LSO | None = model
            self._config: LSOConfig | None = model.config
        else:
            from lso.weights import resolve_checkpoint

            self._source, self._given = resolve_checkpoint(model), None
            self._fields = config
            # known before activation only when a whole configuration was given (else: once loaded)
            self._config = config if isinstance(config, LSOConfig) else None
        self._device_arg = device
        self._compile = compile
        self._fp16 = fp16
        self._tf32 = tf32
        self._model: nn.Module | None = None
        self._device: torch.device | None = None

    # ----------------------------------------------------------------------------- lifecycle
    def _activate(self) -> None:
        device = torch.device(self._device_arg if self._device_arg is not None else "cpu")
        if device.type == "cuda":
            device = require_cuda(device)
        if self._given is not None:
            model = copy.deepcopy(self._given) if self._fp16 else self._given
            model = model.to(device).eval()
        else:
            from lso.checkpoint import load_checkpoint

            assert self._source is not None  # __init__ sets it when no model is given
            model = load_checkpoint(self._source, self._fields, map_location=device)
            self._config = model.config
        from lso.checkpoint import weights_fingerprint

        self._weights_sha256 = weights_fingerprint(model)  # before FP16 islands or compilation rename modules
        if self._fp16:
            if device.type == "cpu" and not torch.amp.is_autocast_available("cpu"):
                raise InputError("FP16 autocast is not available on this CPU build of torch; use fp16=False")
            model = _with_fp32_islands(model)
        runnable: nn.Module = model
        if self._compile:
            options = self._compile if isinstance(self._compile, dict) else {"dynamic": True}
            runnable = cast(nn.Module, torch.compile(model, **options))  # an OptimizedModule (an nn.Module)
        self._model, self._device = runnable, device

    def _deactivate(self) -> None:
        self._model = None
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    # ----------------------------------------------------------------------------- description
    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        if self._config is None:
            raise RunnerStateError(f"{self!r}: the checkpoint's architecture is known once the runner is active")
        return tuple(tensor_specs(self._config, tileable=True)[0])

    @property
    def model(self) -> nn.Module:
        """The module that runs (compiled and/or with FP32 islands); only while active."""
        self._require_active()
        assert self._model is not None  # set while active
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device if self._device is not None else torch.device(self._device_arg or "cpu")

    def _describe(self) -> str:
        src = str(self._source) if self._source else "model"
        extras = "".join(f", {k}" for k, v in (("fp16", self._fp16), ("compiled", self._compile)) if v)
        return f"{src}, device={self.device}{extras}"

    # ----------------------------------------------------------------------------- running
    def _fuse(self, inputs: FuseInputs, extent: tuple[int, int, int, int] | None, out: Any, **options: Any) -> Any:
        if options:
            raise TypeError(f"TorchRunner.fuse got unexpected options {sorted(options)}")
        device, model = self._device, self._model
        assert device is not None and model is not None  # set by _activate; fuse runs only while active
        hr, lr = (x.to(device=device, dtype=torch.float32) for x in inputs.torch_views())
        args = (hr, lr) if extent is None else (hr, lr, torch.tensor(extent, dtype=torch.int64, device=device))
        autocast = (torch.autocast(device_type=device.type, dtype=torch.float16) if self._fp16
                    else contextlib.nullcontext())
        precision = contextlib.nullcontext() if (self._fp16 or self._tf32) else _tf32_off(device)
        with torch.no_grad(), autocast, precision:
            result = model(*args)
        if self._cuda_graph_outputs:
            result = result.clone()  # the CUDA graph's output buffer is overwritten by the next call
        return result.float()

    @property
    def _cuda_graph_outputs(self) -> bool:
        """True if the compiled model replays CUDA graphs (its outputs live in reused graph memory)."""
        if not self._compile or self._device is None or self._device.type != "cuda":
            return False
        options = self._compile if isinstance(self._compile, dict) else {}
        mode = str(options.get("mode") or "")
        return (mode in ("reduce-overhead", "max-autotune")
                or bool((options.get("options") or {}).get("triton.cudagraphs")))
