"""``lso`` command line: one entry point, one subcommand per stage.

Each subcommand is: parse -> one library call (imported inside the handler, so ``lso --help`` needs
only torch and numpy). Errors from this package exit non-zero with their message; ``-v`` shows the
traceback and debug logging.

One convention for every command, ``lso <name>`` and the ``python */*.py`` scripts alike:

- ``_add_<name>(sub)`` defines its arguments (argparse only, no heavy imports); each flag's ``dest`` is the
  name of the field it sets in the command's options dataclass (``InferOptions``, ``BatchOptions``, ...);
- ``_<name>_options(args)`` builds that dataclass with :func:`options_from_args` (fields taken by name; only
  conversions and derived fields are written out), and ``_run_<name>(args)`` makes the one library call;
- the pair is listed in :data:`COMMANDS` (and in :data:`LSO_COMMANDS` for an ``lso`` subcommand);
- a script (``python export/to_onnx.py``, ``python export/build_engine.py``, ``python benchmarks/latency.py``)
  is ``script_main(name, prog, argv)``: the same parser, help and defaults, the same error wrapper
  (:func:`run_command`: an ``LSOError`` or OS error is one line and exit status 1, Ctrl-C 130).

Defaults that are limits of the I/O contract are read from :mod:`lso.io_spec` (profile, batch).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lso import io_spec
from lso.tolerances import TOLERANCES

__all__ = ["main", "build_parser", "HelpFormatter", "COMMANDS", "command_parser", "script_main", "run_command",
           "option_fields", "options_from_args", "add_export_arguments", "export_kwargs"]

log = logging.getLogger("lso")
_T = TypeVar("_T")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and shows each option's default once.

    ``(default: X)`` is appended only where the help text does not already say what the default is
    (it mentions "default" or explains ``None = ...``) and the default is not None; flags that default to
    False say nothing (off unless given). Shared by ``lso`` and the ``python export/*.py`` scripts.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or default is argparse.SUPPRESS or default is False or not action.option_strings
                or "default" in text.lower() or "none =" in text.lower() or "%(default)" in text):
            return text
        return text + " (default: %(default)s)"


_Formatter = HelpFormatter


def _sub(sub, name: str, help: str, description: str = "") -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description or help, formatter_class=_Formatter)


# ------------------------------------------------------------------------------- the one convention
def option_fields(cls: type, args: argparse.Namespace, *, skip_none: bool = False, **values: Any) -> dict[str, Any]:
    """The fields of the options dataclass ``cls`` that the parsed ``args`` carry (same names: each flag's ``dest``
    is the field it sets), then ``values`` (converted or derived fields) on top. ``skip_none``: leave out what is
    None so that the dataclass's own default applies."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {k: v for k, v in vars(args).items() if k in names and not (skip_none and v is None)}
    out.update(values)
    return out


def options_from_args(cls: type[_T], args: argparse.Namespace, *, skip_none: bool = False, **values: Any) -> _T:
    """``cls(**option_fields(cls, args, ...))``: a command's options object from its parsed arguments."""
    return cls(**option_fields(cls, args, skip_none=skip_none, **values))


def _paths(values: Sequence[str] | None) -> tuple[Path, ...]:
    return tuple(Path(v) for v in values or ())


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _show_steps(logger: str) -> None:
    """Log ``logger``'s INFO steps (commands that take minutes), unless -v asked for more already."""
    step_log = logging.getLogger(logger)
    if step_log.getEffectiveLevel() > logging.INFO:
        step_log.setLevel(logging.INFO)


def run_command(prog: str, run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a parsed command: its exit status; an LSOError or an OS error is one line on stderr and status 1 (the
    traceback only with -v), Ctrl-C status 130. The one error wrapper of ``lso`` and the ``python */*.py`` scripts."""
    from lso.errors import LSOError

    verbose = getattr(args, "verbose", 0)
    try:
        return int(run(args) or 0)
    except LSOError as exc:
        if verbose:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # what no library call turned into an LSOError: one line naming the file, no traceback
        if verbose:
            raise
        from lso.artifacts import os_error_message

        where = f"{os.fsdecode(exc.filename)}: " if exc.filename is not None else ""
        print(f"{prog}: error: {where}{os_error_message(exc, *(() if not where else (exc.filename,)))}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging; -v also shows tracebacks")


def _set_logging(verbose: int) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


class _OneCommand:
    """Stands in for argparse's subparsers: ``add_parser`` makes a stand-alone parser named ``prog``."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.parser: argparse.ArgumentParser | None = None

    def add_parser(self, name: str, *, help: str = "", description: str = "", **kwargs: Any) -> argparse.ArgumentParser:
        self.parser = argparse.ArgumentParser(prog=self.prog, description=description or help, **kwargs)
        _add_verbose(self.parser)
        return self.parser


def command_parser(command: str, prog: str) -> argparse.ArgumentParser:
    """A stand-alone parser of one command (``export``, ``build``, ``latency``, ...) named ``prog``: the same
    arguments, help and defaults as ``lso <command>``, plus ``-v``. What the ``python */*.py`` scripts parse with."""
    add, _ = COMMANDS[command]
    one = _OneCommand(prog)
    add(one)
    assert one.parser is not None
    return one.parser


def script_main(command: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """``main`` of a script that runs one command (``python export/to_onnx.py`` = ``lso export``): parse with
    :func:`command_parser`, log as ``lso`` does, run with :func:`run_command`. Errors are prefixed with the
    script's file name (``to_onnx: error: ...``)."""
    args = command_parser(command, prog).parse_args(argv)
    _set_logging(args.verbose)
    _, run = COMMANDS[command]
    return run_command(Path(prog.split()[-1]).stem, run, args)


#: how every command names a checkpoint argument (the bundled demo checkpoint is spelled @demo everywhere)
CHECKPOINT_HELP = "an official .pth.tar/.pth/.pt, ours (.safetensors) or @demo (the bundled demo checkpoint)"
ARTIFACT_HELP = f"checkpoint ({CHECKPOINT_HELP}), ONNX graph or TensorRT plan"
BACKEND_HELP = ("runner backend: torch, onnxruntime, tensorrt or openvino (OpenVINO runs .onnx graphs and its "
                ".xml IR, in FP32 unless --runner-option precision=bf16); default: the backend lso export "
                "--target cpu recorded in the graph's sidecar, else the artifact's suffix picks it (.onnx: "
                "onnxruntime)")


class _RunnerOptionAction(argparse.Action):
    """``--runner-option KEY=VALUE``, repeatable: collects a dict (None until given) of options for
    ``lso.runtime.load`` (:func:`lso.runtime.base.parse_runner_option` converts VALUE and refuses the keys that have
    a flag of their own, ``own_flags``); a key given twice is an error."""

    def __init__(self, *args: Any, own_flags: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.own_flags = own_flags

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from lso.errors import InputError
        from lso.runtime.base import parse_runner_option

        try:
            key, value = parse_runner_option(str(values), own_flags=self.own_flags)
        except InputError as exc:
            parser.error(str(exc))  # exits (status 2), the message naming --runner-option
        options = dict(getattr(namespace, self.dest, None) or {})
        if key in options:
            parser.error(f"--runner-option {key} given twice ({key}={options[key]!r}, then {values}); "
                         f"give each option once")
        options[key] = value
        setattr(namespace, self.dest, options)


def _add_runner_option(p: argparse.ArgumentParser, own: Sequence[str] | None = None) -> None:
    """``--runner-option KEY=VALUE`` (dest ``runner_options``, a dict or None): options for ``lso.runtime.load``
    besides the ones the command sets with its own flags (``own``: the keys of those flags, refused here; default:
    all of :data:`lso.runtime.base.OPTION_FLAGS`)."""
    from lso.runtime.base import OPTION_FLAGS

    flags = {key: OPTION_FLAGS[key] for key in (OPTION_FLAGS if own is None else own)}
    p.add_argument("--runner-option", dest="runner_options", action=_RunnerOptionAction, own_flags=flags,
                   metavar="KEY=VALUE",
                   help="an option of the runner, passed to lso.runtime.load (repeatable), e.g. precision=bf16 "
                        "(openvino: BF16 with FP32 islands; needs a CPU with BF16), shapes=dynamic (openvino), "
                        "cuda_graph=true (tensorrt), fp16=true (torch); VALUE true/false/none and numbers are "
                        "converted, anything else is a string. The backend refuses an option it does not take; "
                        f"for {', '.join(flags)} use their own flags")


def _add_config(p: argparse.ArgumentParser) -> None:
    """``--config`` for commands that may load a checkpoint (one definition: lso.config.add_config_argument)."""
    from lso.config import add_config_argument

    add_config_argument(p)


def _config_arg(args: argparse.Namespace):
    """The parsed ``--config`` (a dict of LSOConfig fields) or None; InputError for a bad value."""
    if not str(getattr(args, "config", None) or "").strip():
        return None  # nothing to parse: lso.checkpoint (and torch) stay unloaded
    from lso.checkpoint import parse_config_arg

    return parse_config_arg(args.config)


# ------------------------------------------------------------------------------------------- info
def _add_info(sub) -> None:
    p = _sub(sub, "info", "Show versions, optional dependencies and the model configuration.")
    p.add_argument("--checkpoint", help=f"checkpoint to describe: {CHECKPOINT_HELP}; prints the configuration it "
                                        f"will be built with, where each field comes from and the weights' "
                                        f"fingerprint (weights_sha256, the one an exported graph records; default: "
                                        f"the paper configuration)")
    _add_config(p)


def _run_info(args) -> int:
    import json

    import torch

    import lso
    from lso.checkpoint import SOURCE_CALLER, SOURCE_DEFAULT, ResolvedConfig, resolve_config, weights_fingerprint
    from lso.config import LSOConfig
    from lso.deps import available
    from lso.runtime.trt_support import describe_tensorrt

    fields = _config_arg(args) or {}
    if args.checkpoint:
        resolved = resolve_config(args.checkpoint, fields)
    else:
        try:
            cfg = LSOConfig(**fields)
        except ValueError as exc:
            from lso.errors import InputError

            raise InputError(f"--config: {exc}") from exc
        resolved = ResolvedConfig(cfg, {k: SOURCE_CALLER if k in fields else SOURCE_DEFAULT for k in cfg.to_dict()})
    cfg = resolved.config
    model = lso.LSO(cfg)
    info = {
        "lso-deploy": lso.__version__,
        "torch": torch.__version__,
        "checkpoint": str(resolved.path) if resolved.path else None,
        # compare with a graph's (Runner.weights_fingerprint, its sidecar's weights_sha256): same weights
        "weights_sha256": weights_fingerprint(resolved.path) if resolved.path else None,
        "config": cfg.to_dict(),
        # where each field came from: saved config, tensor shapes, caller (--config) or default
        "config_sources": resolved.describe_sources(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "optional": {m: available(m) for m in ("onnx", "onnxruntime", "onnxslim", "polygraphy", "h5py", "scipy",
                                                "cupy")},
        # full/lean/dispatch, version, CUDA major: from package metadata (TensorRT is not imported here)
        "tensorrt": describe_tensorrt(),
    }
    print(json.dumps(info, indent=2))
    return 0


# ------------------------------------------------------------------------------------------ train
def _int_list(text: str) -> list[int]:
    """``"4,8,16"`` -> ``[4, 8, 16]`` (an argparse type)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 4,8,16,32, got {text!r}") from exc


def _add_train(sub) -> None:
    p = _sub(sub, "train", "Train or fine-tune LSO (the paper's recipe by default); resumable.",
             "Train on synthetic scenes generated on the fly (default) or a community-format HDF5 file.\n"
             "Writes <out>/last.pt (resumable state, every --save-every steps), <out>/best.safetensors\n"
             "(best validation PSNR) and <out>/log.jsonl. Ctrl-C saves and stops; --resume continues.")
    p.add_argument("--out", default="runs/lso", help="run folder")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a training .h5 (GT/RGB keys)")
    p.add_argument("--val-data", help="validation .h5 (default for synthetic: the validation seeds)")
    p.add_argument("--ratio", type=int, default=4, help="scale ratio r")
    p.add_argument("--ratios", type=_int_list,
                   help="ratio mix, e.g. 4,8,16,32: each batch draws one (repeats weight it; default: --ratio)")
    p.add_argument("--fixed-ratio-form", type=float,
                   help="probability P that a batch uses the authors' fixed-ratio form: degraded at r, LR-HSI "
                        "FFT-resampled to H/f, model run at x f (default 0)")
    p.add_argument("--fixed-ratio", type=int, help="f of the fixed-ratio form (default 4)")
    p.add_argument("--crop", type=int, default=64, help="GT crop size (multiple of every ratio used and 4)")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--epochs", type=int, default=1001, help="epochs of --steps-per-epoch steps")
    p.add_argument("--steps-per-epoch", type=int, default=100, help="optimizer steps per epoch")
    p.add_argument("--lr-step-epochs", type=int, default=300, help="StepLR period in epochs")
    p.add_argument("--lr-gamma", type=float, default=0.6, help="StepLR factor")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--grad-clip", type=float, default=0.0, help="gradient norm clip (0 = off, as the paper)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total")
    p.add_argument("--max-minutes", type=float, help="stop (saving state) after this wall time")
    p.add_argument("--init", help=f"fine-tune from this checkpoint ({CHECKPOINT_HELP}); its configuration is "
                                  f"carried over into what this run saves")
    _add_config(p)
    g = p.add_argument_group("model architecture", "for a new model (default: the paper's); with --init they must "
                                                   "agree with the checkpoint's own configuration")
    for name, text in _ARCH_OPTIONS:
        g.add_argument("--" + name.replace("_", "-"), dest="model_" + name, type=int, metavar="N", help=text)
    p.add_argument("--scene-size", type=int, default=256, help="synthetic scene size")
    p.add_argument("--pool", type=int, default=16, help="synthetic scenes held at once")
    p.add_argument("--refresh-every", type=int, default=50, help="replace one pooled scene every N steps")
    p.add_argument("--val-every", type=int, default=200, help="validate every N steps")
    p.add_argument("--save-every", type=int, default=100, help="write last.pt every N steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_options(args):
    from lso.train import TrainConfig

    return options_from_args(TrainConfig, args, skip_none=True, model=_train_model_fields(args))


def _run_train(args) -> int:
    from lso.train import train

    best = train(_train_options(args), resume=args.resume, progress=not args.no_progress)
    print(best)
    return 0


#: ``lso train`` architecture flags: LSOConfig field -> help (paper defaults in the text: None = not given)
_ARCH_OPTIONS = (
    ("patch_size", "pixels per side of a spectral-block patch (paper: 4)"),
    ("width", "channels at every U-Net level (paper: 64)"),
    ("num_basis", "harmonics Q of the trigonometric solver (paper: 24)"),
    ("num_token", "latent tokens per patch (paper: 8)"),
    ("guide_dim", "width of the spatial encoder (paper: 128)"),
    ("n_resblocks", "residual blocks of the spatial encoder (paper: 4)"),
    ("heads", "attention heads; width must be divisible by it (paper: 8)"),
)


def _train_model_fields(args: argparse.Namespace) -> dict:
    """LSOConfig fields for ``lso train``: ``--config`` plus the architecture flags (which must agree with it)."""
    from lso.errors import InputError

    fields = dict(_config_arg(args) or {})
    for name, _ in _ARCH_OPTIONS:
        value = getattr(args, "model_" + name, None)
        if value is None:
            continue
        if name in fields and fields[name] != value:
            raise InputError(f"--{name.replace('_', '-')} {value} contradicts --config {name}={fields[name]}")
        fields[name] = value
    return fields


# ------------------------------------------------------------------------------------------- eval
def _ratio_list(text: str) -> tuple[int, ...]:
    """``"4,8,16"`` -> ``(4, 8, 16)`` (an argparse type for ``lso eval --ratios``)."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 4,8,16,32, got {text!r}") from exc


def _add_eval(sub) -> None:
    p = _sub(sub, "eval", "Evaluate LSO against bicubic and GSA (PSNR/SAM/ERGAS/SSIM per image, mean ± std).",
             "Scenes: the held-out synthetic evaluation scenes (default) or a community-format .h5 (GT, RGB,\n"
             "optionally LRHSI). Inputs as the authors' test code makes them: HR-MSI = the file's RGB, LR-HSI\n"
             "regenerated from GT with the paper's degradation (--msi-from/--lr-from choose; synthetic scenes:\n"
             "GT x SRF and GT). `lso infer` reads a community file the same way: the same LSO output.\n"
             "Estimates are clamped to [0, 1] before every metric; ERGAS is reported twice, with the true ratio\n"
             "(ERGAS (true r), key ergas_true_ratio) and as the paper's tables (ERGAS (paper, r=4), key\n"
             "ergas_paper_r4). Band-wise PSNR/RMSE per wavelength are in the JSON and a plot.\n"
             "A size that is not a multiple of the ratio is an error naming the crop that fits, unless --crop.\n\n"
             "Single ratio: writes <out>/eval_x<r>.json/.md, <out>/eval_x<r>_bandwise.png, one PNG per scene.\n"
             "--cross-scale: the authors' cross-scale protocol (see docs/model.md): for each r in --ratios the\n"
             "LR-HSI is degraded at r (sigma 0.5*r) and fed (a) as it is, the model at the true ratio r\n"
             "(LSO (direct)), and (b) FFT-resampled to H/f x W/f, the model at its training ratio f (LSO\n"
             "(fixed-ratio f), what the authors' script does); bicubic and GSA get the true-ratio LR-HSI.\n"
             "Sizes are cropped to a multiple of r and f, and the table says so. Writes <out>/cross_scale.json/.md\n"
             "(one table) and <out>/cross_scale_bandwise.png.")
    p.add_argument("--checkpoint", help=f"{ARTIFACT_HELP} (default: @demo)")
    _add_config(p)
    p.add_argument("--data", default="synthetic", help="'synthetic' or an .h5 file")
    p.add_argument("--ratio", type=int,
                   help="scale ratio r, any integer >= 2 (default: 4; with --lr-from file: the file's LRHSI ratio)")
    p.add_argument("--msi-from", choices=("file", "gt"),
                   help="HR-MSI source: the .h5's RGB (file) or GT x SRF (gt) "
                        "(default: file for .h5, gt for synthetic)")
    p.add_argument("--lr-from", choices=("gt", "file"), default="gt",
                   help="LR-HSI source: regenerated from GT with the paper's degradation (gt) "
                        "or the .h5's LRHSI (file)")
    p.add_argument("--crop", action="store_true",
                   help="crop a size that is not a multiple of the ratio to the largest that is (top-left), "
                        "recorded in the report; off: such a size is an error naming that crop")
    _add_input_scale(p)
    p.add_argument("--cross-scale", action="store_true",
                   help="run the authors' cross-scale protocol at every --ratios (one table; see above)")
    p.add_argument("--ratios", type=_ratio_list, default=(4, 8, 16, 32), metavar="R,R,...",
                   help="--cross-scale ratios (default: 4,8,16,32)")
    p.add_argument("--fixed-ratio", type=int,
                   help="--cross-scale: f of the fixed-ratio form (default: the checkpoint's training ratio, its "
                        "saved sf or our 'ratio' metadata; 4 with a note when it records none)")
    p.add_argument("--size", type=int, default=512, help="synthetic scene size")
    p.add_argument("-n", "--n", type=int, help="number of scenes (default: all)")
    p.add_argument("--out", default="eval", help="output folder")
    p.add_argument("--tile", type=int, help="fuse in tiles with this core size (large scenes)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--backend", help=BACKEND_HELP)
    from lso.benchmarks.evaluation import RUNNER_OWN_FLAGS

    _add_runner_option(p, RUNNER_OWN_FLAGS)
    p.add_argument("--png", action=argparse.BooleanOptionalAction, default=True,
                   help="write the PNGs: one per scene (single ratio) and the band-wise plot")
    p.add_argument("--save-fused", action="store_true",
                   help="single ratio: also write each scene's LSO output to <out>/<scene>_x<r>_lso.npz (hr_hsi)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _eval_options(args):
    from lso.benchmarks.evaluation import EvalConfig

    return options_from_args(EvalConfig, args, config=_config_arg(args))


def _run_eval(args) -> int:
    from lso.benchmarks.evaluation import cross_scale_markdown, evaluate_set, markdown_summary

    report = evaluate_set(_eval_options(args), progress=not args.no_progress)
    print(cross_scale_markdown(report) if report.get("protocol") == "cross-scale" else markdown_summary(report))
    return 0


# ------------------------------------------------------------------------------------------ infer
def _add_input_scale(p: argparse.ArgumentParser) -> None:
    """``--input-scale`` (one definition: lso.data.value_range, the value policy of every input format)."""
    from lso.data.value_range import INPUT_SCALE_HELP

    p.add_argument("--input-scale", metavar="SCALE", help=INPUT_SCALE_HELP)


def _add_infer(sub) -> None:
    p = _sub(sub, "infer", "Fuse a scene with any artifact (checkpoint, .onnx, .plan); write .npz/.h5/.mat atomically.",
             "Inputs: one .h5 (ours: hr_msi/lr_hsi; community: GT/RGB, LR-HSI regenerated from GT with the\n"
             "paper's protocol), .npz or .mat file, or a pair of files HR LR (.npy/.npz/.mat/.h5, .png for RGB).\n"
             "The runner follows the artifact: .pth/.pth.tar/.pt/.safetensors -> PyTorch, .onnx -> ONNX Runtime,\n"
             ".plan/.engine/.trt -> TensorRT. Writes OUT, a false-colour OUT.png and, with --envi, OUT.hdr/.img.\n"
             "Nothing is cropped unless --crop is given: sizes that do not fit the ratio are an error naming the\n"
             "crop that would fit.\n"
             "OUT by suffix: .npz (arrays), .h5 (dataset hr_hsi, the rest as its attributes) or .mat (MATLAB v5,\n"
             "variables). Each holds hr_hsi ([31,H,W] for one scene, [N,31,H,W] for several, channels first;\n"
             "in MATLAB permute(hr_hsi,[2 3 1]) gives H x W x 31), wavelengths_nm, artifact, inputs, crop\n"
             "('none' or what --crop did), crop_box (top,left,height,width kept, when cropped) and clamped (0/1).")
    p.add_argument("artifact", help=ARTIFACT_HELP)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="scene file, or HR-MSI and LR-HSI files")
    _add_config(p)
    p.add_argument("-o", "--out", required=True, help="output .npz, .h5 or .mat (see above for the variables)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the runner's own)")
    p.add_argument("--tile", type=int,
                   help="fuse in tiles with this core size (exact; bounds memory; default: the whole scene "
                        "in one piece)")
    p.add_argument("--overlap", type=int, help="tile overlap (default: the exact minimum)")
    p.add_argument("--index", type=int, help="scene index in a multi-scene file (default: all scenes)")
    p.add_argument("--ratio", type=int, help="ratio for regenerating LR-HSI from GT (community .h5; default 4)")
    p.add_argument("--crop", action="store_true",
                   help="crop inputs whose sizes do not fit the ratio to the top-left part that does, and record "
                        "it in OUT (off by default: such inputs are an error naming that crop)")
    p.add_argument("--clamp", action="store_true",
                   help="clip the output to [0, 1], as the paper does before metrics (off by default: written as "
                        "the network computes it, which may leave [0, 1] slightly)")
    p.add_argument("--lr-from", choices=("auto", "gt", "file"), default="auto",
                   help="community .h5: regenerate LR-HSI from GT (auto/gt) or use the file's LRHSI")
    p.add_argument("--layout", choices=("auto", "chw", "hwc"), default="auto", help="layout of the input arrays")
    _add_input_scale(p)
    p.add_argument("--envi", action="store_true", help="also write an ENVI .hdr/.img pair")
    p.add_argument("--preview", action=argparse.BooleanOptionalAction, default=True,
                   help="write a false-colour OUT.png (default: on)")
    p.add_argument("--threads", type=int, help="intra-op threads of ONNX Runtime and OpenVINO (default: the count "
                   "lso export --target cpu recorded for its backend, else theirs)")
    p.add_argument("--backend", help=BACKEND_HELP)
    _add_runner_option(p)
    p.add_argument("--memory-budget", help="working memory allowed (e.g. 4G, 512MiB); tiles shrink to fit it "
                                           "(default: $LSO_MEMORY_BUDGET or 75%% of physical memory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _infer_options(args):
    from lso.runtime.infer import InferOptions

    return options_from_args(InferOptions, args, config=_config_arg(args), artifact=Path(args.artifact),
                             inputs=_paths(args.inputs), out=Path(args.out), progress=not args.no_progress)


def _run_infer(args) -> int:
    from lso.runtime.infer import infer

    result = infer(_infer_options(args))
    written = [result.output, *result.preview, *result.envi]
    print(f"hr_hsi {'x'.join(map(str, result.shape))} in {result.seconds:.2f} s ({result.runner}) -> "
          + ", ".join(str(p) for p in written))
    if result.crop != "none":
        print(f"cropped (--crop): {result.crop}")
    if result.clamped:
        print("clamped to [0, 1] (--clamp)")
    return 0


# ----------------------------------------------------------------------------------------- export
def _export_description() -> str:
    from lso.export.parity import DEFAULT_CASES

    return """\
Export an LSO checkpoint (official .pth.tar or ours .safetensors) to ONE self-contained ONNX file
that serves every image size and every integer scale ratio (x2, x3, x4 ... x32): batch, HR and LR
height/width are independent dynamic axes. The trigonometric solver is folded (one Sin and one Cos
per spectral block); every node is checked against TensorRT's ONNX parser table; constants are
folded with onnxslim. The file is then run with ONNX Runtime (CPU) and PyTorch on a table of seeded
inputs, and only a graph within --atol of PyTorch is kept. A JSON sidecar <out>.json records the
config, opset, versions, checkpoint sha256, input/output spec and the parity table.

default parity table: """ + ", ".join(c.name for c in DEFAULT_CASES)


def _add_export(sub) -> None:
    p = _sub(sub, "export", "Export a checkpoint to one ONNX file (any size, any ratio) and check it against PyTorch.",
             _export_description())
    add_export_arguments(p)


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``lso export``'s options to ``parser`` (kebab-case flags; defaults shown by the caller's formatter)."""
    from lso.export.parity import DEFAULT_ATOL, ParityCase

    parser.add_argument("--checkpoint", metavar="PATH",
                        help="checkpoint to export: official .pth.tar/.pth/.pt, ours .safetensors, or @demo (the "
                             "bundled demo checkpoint, also used without this option when this install has it)")
    parser.add_argument("--out", metavar="PATH", default="model.onnx",
                        help="ONNX file to write (its folder must exist); the sidecar is <out>.json")
    _add_config(parser)
    parser.add_argument("--opset", type=int, default=18, choices=(18, 19, 20),
                        help="ai.onnx opset: 18 is what the exporter emits natively (no version conversion); "
                             "TensorRT 10/11 and ONNX Runtime >= 1.14 read it; 19 and 20 are converted from it")
    parser.add_argument("--tileable", action="store_true",
                        help="add the int64 input 'extent' [4] = (row0, col0, H_full, W_full) so a runtime can fuse "
                             "tiles with global coordinates; without it the graph has exactly two inputs, hr_msi and "
                             "lr_hsi")
    parser.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True,
                        help="fold constants and clean up with onnxslim (if it fails the unsimplified graph is kept)")
    parser.add_argument("--skip-check", action="store_true",
                        help="do not run the ONNX Runtime vs PyTorch parity table")
    parser.add_argument("--case", dest="cases", metavar="R:HxW[:B]", action="append", type=ParityCase.parse,
                        help="parity case (repeatable), e.g. --case 4:64x64 --case 3:75x57 --case 4:48x80:2; "
                             "without it, the default table above")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help="fail when any case's max abs error between ONNX Runtime and PyTorch exceeds this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")
    parser.add_argument("--solver-chunk", type=int, metavar="N", default=None,
                        help="CPU-only pass: run each solver chain in a Scan over chunks of N patches, so its ~90 "
                             "element-wise nodes work on cache-sized tensors (outputs unchanged). Whether it is "
                             "faster depends on the CPU (0.4-0.5 s less at 512² on a 2-core Intel Xeon, ~1 s more "
                             "on a 2-core AMD EPYC): --target cpu measures it. With --target cpu, fixes this "
                             "setting (only backend and threads are tuned). Leave it off for TensorRT")
    parser.add_argument("--align-channels", type=int, metavar="M", default=None,
                        help="CPU-only pass: pad convolutions' channel counts to a multiple of M (16) with zero "
                             "weights, so every convolution runs in ONNX Runtime's blocked NCHWc layout (outputs "
                             "unchanged up to rounding). Whether it is faster depends on the CPU: --target cpu "
                             "measures it. With --target cpu, fixes this setting. Leave it off for TensorRT, which "
                             "pads internally")
    parser.add_argument("--allow-unsupported", action="store_true",
                        help="write the graph even if nodes fail the TensorRT operator lint (they are listed)")
    parser.add_argument("--target", choices=("portable", "tensorrt", "cpu"), default="portable",
                        help="what the graph is for, recorded in its metadata and sidecar: portable (every runtime), "
                             "tensorrt (the same graph, every node checked against TensorRT's parser, no CPU "
                             "passes) or cpu: tuned on THIS machine, like a TensorRT build: the candidate graphs "
                             "(plain, Scan-chunked solver at 64/128/256, channels aligned to 16, combinations) are "
                             "timed at 256² and 512² x4 on each CPU backend (ONNX Runtime; OpenVINO when installed) "
                             "and thread setting within --tune-budget, each checked against PyTorch FP32, and the "
                             "fastest that passes is written (candidates within the run's timing noise of it, 1-5 "
                             "%%, are a tie that the lowest peak memory, measured in a fresh process, breaks); the "
                             "sidecar's cpu_tuning block records the choice, "
                             "every timing and the CPU model, and lso.runtime.load (lso infer, ...) runs that choice "
                             "by default (warning on another CPU model: export again there). The best settings "
                             "depend on the CPU family. --solver-chunk/--align-channels make the 'cpu' variant too; "
                             "lso build, --print-trtexec and triton-repo --plan refuse it")
    parser.add_argument("--tune-budget", metavar="TIME", default=None,
                        help="time budget of --target cpu's search: seconds, or 90s / 5m (default: 300 s); the "
                             "search keeps room for the memory tie-break, stops when the next candidate would not "
                             "fit and keeps the fastest measured candidate that passed parity")
    return parser


def export_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`lso.export.export_onnx` from parsed options."""
    return {
        "config": _config_arg(args),
        "opset": args.opset,
        "tileable": args.tileable,
        "simplify": args.simplify,
        "check": not args.skip_check,
        "cases": tuple(args.cases) if args.cases else None,
        "atol": args.atol,
        "seed": args.seed,
        "allow_unsupported": args.allow_unsupported,
        "solver_chunk": args.solver_chunk or None,
        "align_channels": args.align_channels or None,
        "target": args.target,
        "tune_budget": args.tune_budget,
    }


def _run_export(args: argparse.Namespace) -> int:
    """Parse -> one library call -> a short report on stdout. Errors propagate (run_command prints them)."""
    from lso.artifacts import read_sidecar
    from lso.export import export_onnx
    from lso.export.parity import ParityReport

    _show_steps("lso.export")  # export takes tens of seconds
    out = export_onnx(args.checkpoint, args.out, **export_kwargs(args))
    side = read_sidecar(out, verify=False) or {}
    graph = side.get("graph", {})
    print(f"wrote {out} ({graph.get('bytes', 0) / 1e6:.2f} MB, {graph.get('nodes')} nodes, opset {side.get('opset')}, "
          f"inputs {', '.join(i['name'] for i in side.get('inputs', []))}) and {out.name}.json")
    if side.get("weights_sha256"):  # lso info --checkpoint X prints the same for the checkpoint
        print(f"weights sha256 {side['weights_sha256']} (lso.checkpoint.weights_fingerprint)")
    counts = sorted(graph.get("op_counts", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    print("nodes by type: " + ", ".join(f"{k} {v}" for k, v in counts))
    if side.get("cpu_tuning"):
        from lso.export.cpu_tuning import format_tuning

        print(format_tuning(side["cpu_tuning"]))
    table = side.get("parity", {})
    if table.get("skipped"):
        print("parity check skipped (--skip-check)")
        return 0
    report = ParityReport.from_dict(table)
    print(f"parity, {report.runtime} vs {report.reference} (seed {report.seed}):")
    print(report.format_table())
    print(f"all {len(report.rows)} case(s) within {report.atol:g} (largest max abs error {report.max_abs:.2e})")
    return 0


# ------------------------------------------------------------------------------------------- demo
def _add_demo(sub) -> None:
    p = _sub(sub, "demo",
             "The demo: bundled checkpoint, held-out synthetic scene, export, ONNX Runtime, parity and latency.",
             "Loads the bundled demo checkpoint, makes a held-out synthetic scene, degrades it (paper protocol),\n"
             "exports ONNX, fuses with PyTorch (reference solver = baseline, folded solver) and ONNX Runtime,\n"
             "prints parity and latency tables and writes <out>/demo.png and <out>/demo.json.")
    p.add_argument("--checkpoint", help=f"checkpoint to use: {CHECKPOINT_HELP} (default: @demo)")
    _add_config(p)
    p.add_argument("--size", type=int, default=256, help="scene height and width")
    p.add_argument("--ratio", type=int, default=4, help="scale ratio r")
    p.add_argument("--seed", type=int, help="held-out scene seed (default: the first evaluation seed)")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per path (after one warm-up)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")


def _run_demo(args) -> int:
    from lso.benchmarks.demo import format_tables, run_demo

    report = run_demo(args.checkpoint, config=_config_arg(args), size=args.size, ratio=args.ratio, seed=args.seed,
                      out=args.out, repeats=args.repeats, threads=args.threads, echo=lambda s: print(s, flush=True))
    print()
    print(format_tables(report))
    return 0


# -------------------------------------------------------------------------------------- calibrate
def _add_calibrate(sub) -> None:
    opt_side, opt_ratio = io_spec.PROFILE_HR[1][0], io_spec.PROFILE_HR[1][0] // io_spec.PROFILE_LR[1][0]
    p = _sub(sub, "calibrate", "Make the FP16 (FP32 islands) or INT8 (Q/DQ) graph of an exported FP32 graph.",
             "fp16: FP16 everywhere except the solver, the attention softmaxes, the coordinate grid and any node\n"
             "  whose activations exceed --safe-range on the calibration feeds; FP32 inputs/outputs.\n"
             "  Writes MODEL.fp16.onnx.\n"
             "int8: explicit Q/DQ on the convolutions (ONNX Runtime quantize_static, per-channel weights); a\n"
             "  sensitivity sweep keeps the most sensitive blocks in float until the ΔPSNR target is met. Writes\n"
             "  MODEL.int8.onnx (tensorrt flavour: symmetric, zero points 0) and MODEL.int8.cpu.onnx (cpu flavour:\n"
             "  asymmetric U8, fast in ONNX Runtime), both from one calibration (MODEL.int8.calibration.json).\n"
             "Each artifact gets a .json sidecar. Calibration scenes: synthetic training scenes (default) or a\n"
             f"community .h5 (GT key), at the I/O spec's opt shapes ({opt_side}², x{opt_ratio}) unless "
             "--size/--ratio say otherwise.")
    p.add_argument("onnx", help="the FP32 graph (lso export)")
    p.add_argument("--precision", choices=("fp16", "int8"), required=True, help="target precision")
    p.add_argument("--out", help="output .onnx (default: ONNX.fp16.onnx / ONNX.int8.onnx)")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a community .h5 file (GT key)")
    p.add_argument("--count", type=int, default=16, help="calibration scenes")
    p.add_argument("--size", type=int,
                   help=f"HR side of the calibration scenes (default: the profile's opt, {opt_side})")
    p.add_argument("--ratio", type=int, help=f"scale ratio (default: the profile's opt, {opt_ratio})")
    p.add_argument("--batch", type=int,
                   help=f"scenes per feed (default: the profile's opt batch, {io_spec.PROFILE_BATCH[1]})")
    p.add_argument("--min-count", type=int, default=8, help="fewest calibration scenes accepted")
    g = p.add_argument_group("fp16")
    g.add_argument("--safe-range", type=float, default=4096.0, help="max |activation| allowed in FP16")
    g.add_argument("--naive", action="store_true", help="naive all-FP16 graph (solver in FP16): for comparison only")
    g = p.add_argument_group("int8")
    g.add_argument("--flavour", choices=("both", "tensorrt", "cpu"), default="both", help="which INT8 graph(s)")
    g.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="range calibration method")
    g.add_argument("--float-blocks", help="comma-separated blocks kept in float (skips the sweep), '' for none")
    g.add_argument("--target-dpsnr", type=float, default=TOLERANCES["int8"].dpsnr,
                   help="ΔPSNR budget (dB) the sweep must meet (default: the INT8 row of lso.tolerances)")
    g.add_argument("--min-int8-macs", type=float, default=0.75, help="least share of conv MACs in INT8")
    g.add_argument("--selection-margin", type=float, default=0.5,
                   help="share of the ΔPSNR budget the sweep's validation ΔPSNR may use (validation scenes are few)")
    g.add_argument("--val-count", type=int, default=4, help="validation scenes of the sweep")
    g.add_argument("--val-size", type=int, default=128, help="validation scene size of the sweep")
    g.add_argument("--calibration-cache", help="range cache JSON (default: OUT with .calibration.json)")


def _calibrate_options(args):
    from lso.calibration.run import CalibrateOptions

    blocks = {} if args.float_blocks is None else {
        "float_blocks": [b.strip() for b in args.float_blocks.split(",") if b.strip()]}
    return options_from_args(CalibrateOptions, args, **blocks)


def _run_calibrate(args) -> int:
    from lso.calibration.run import calibrate

    _show_steps("lso.calibration")  # calibration takes minutes: show the steps
    for path in calibrate(_calibrate_options(args)):
        print(path)
    return 0


# ------------------------------------------------------------------------------------------ build
BUILD_DESCRIPTION = """\
Build a TensorRT engine (plan) from an LSO ONNX graph: model.onnx (FP32), model.fp16.onnx (FP16 with
FP32 islands) or model.int8.onnx (INT8 Q/DQ). Precision is read from the graph; no precision flag exists
(TensorRT 11 removed them; on TensorRT 10 the network is built strongly typed). The optimization profile
is the I/O spec's ({profile}) unless --min/--opt/--max-shapes
override it; a max shape whose largest tensor passes TensorRT's 2^31-element limit is refused before the
build, with the largest shape that fits and the tile size for larger scenes. The engine is inspected after
building: an FP16/INT8 graph without FP16/INT8 layers is an error. Writes the plan as plain bytes (loadable
by trtexec and polygraphy) and <out>.json. Needs an NVIDIA GPU, TensorRT 10/11 and Polygraphy (NVIDIA's
TensorRT loaders do the build: pip install 'lso-deploy[onnx]'; TF32 is off, so FP32 layers compute in FP32),
except --print-trtexec, which only prints the equivalent trtexec command line."""


def _add_build(sub) -> None:
    from lso.runtime.trt_support import HARDWARE_COMPATIBILITY

    p = _sub(sub, "build", "Build a TensorRT engine from model.onnx / model.fp16.onnx / model.int8.onnx.",
             BUILD_DESCRIPTION.format(profile=io_spec.describe_profile()))
    p.add_argument("onnx", help="ONNX graph: model.onnx, model.fp16.onnx or model.int8.onnx")
    p.add_argument("--out", help="plan to write (default: the ONNX path with .plan)")
    p.add_argument("--min-shapes", metavar="SPEC", help="override min shapes, e.g. hr_msi:1x3x64x64,lr_hsi:1x31x16x16")
    p.add_argument("--opt-shapes", metavar="SPEC", help="override opt shapes (default: the I/O spec's)")
    p.add_argument("--max-shapes", metavar="SPEC", help="override max shapes (default: the I/O spec's)")
    p.add_argument("--workspace-gib", type=float, default=4.0, help="workspace memory pool limit in GiB")
    p.add_argument("--timing-cache", metavar="PATH", help="timing cache file, loaded if present and saved after")
    p.add_argument("--optimization-level", type=int, default=3, choices=range(6), metavar="0-5",
                   help="builder optimization level (TensorRT's default 3)")
    p.add_argument("--version-compatible", action="store_true",
                   help="build a version-compatible plan (runs on later TensorRT and the lean runtime)")
    p.add_argument("--hardware-compatibility", default="none", choices=HARDWARE_COMPATIBILITY,
                   help="hardware compatibility level")
    p.add_argument("--device", type=int, default=0, help="CUDA device index")
    p.add_argument("--allow-cpu-graph", action="store_true",
                   help="build a CPU-tuned graph (exported with --solver-chunk/--align-channels, or the cpu INT8 "
                        "flavour) anyway; without it such a graph is refused")
    p.add_argument("--print-trtexec", action="store_true",
                   help="print the equivalent trtexec command line and exit (builds nothing, needs no GPU)")
    p.add_argument("--trt-version", type=int, choices=(10, 11),
                   help="TensorRT major version for --print-trtexec (default: the installed one; if none is "
                        "installed, the line also carries --stronglyTyped, needed on 10 and a no-op on 11)")


def _run_build(args) -> int:
    from lso.export.profiles import BuildOptions, parse_shape_spec

    overrides: dict[str, Any] = {key: parse_shape_spec(getattr(args, key))
                                 for key in ("min_shapes", "opt_shapes", "max_shapes") if getattr(args, key, None)}
    kwargs = option_fields(BuildOptions, args, **overrides)  # profiles: the overrides of the default profile
    onnx_path = Path(args.onnx)
    out = Path(args.out) if args.out else onnx_path.with_suffix(".plan")
    if args.print_trtexec:
        import shlex

        from lso.errors import ArtifactError
        from lso.export.profiles import build_options
        from lso.export.trtexec import trtexec_command, trtexec_notes
        from lso.export.variants import require_tensorrt_graph

        if not onnx_path.is_file():
            raise ArtifactError(f"{onnx_path} does not exist: export it first (lso export / lso calibrate)")
        require_tensorrt_graph(onnx_path, consumer="lso build --print-trtexec", allow=args.allow_cpu_graph)
        opts = build_options(onnx_path, kwargs)
        for note in trtexec_notes(onnx_path, opts, trt_major=args.trt_version):
            print(note)
        print(shlex.join(trtexec_command(onnx_path, out, opts, trt_major=args.trt_version)))
        return 0
    from lso.artifacts import read_sidecar
    from lso.export.engine_builder import build_engine  # lso.export.build_engine is also the script's module name

    _show_steps("lso.export")
    plan = build_engine(onnx_path, out, allow_cpu_graph=args.allow_cpu_graph, **kwargs)
    side = read_sidecar(plan, verify=False) or {}
    layers = side.get("layers", {})
    print(f"wrote {plan} ({side.get('precision')}, TensorRT {side.get('tensorrt_version')}, {side.get('gpu')} "
          f"sm_{str(side.get('compute_capability', '')).replace('.', '')}; {layers.get('layers')} layers: "
          f"{layers.get('fp16')} FP16, {layers.get('int8')} INT8) and {plan.name}.json")
    return 0


# ----------------------------------------------------------------------------------- triton-repo
def _add_triton_repo(sub) -> None:
    p = _sub(sub, "triton-repo", "Write a Triton Inference Server model repository from an ONNX graph and/or a plan.",
             "Writes OUT/<name>_onnx (onnxruntime backend) and/or OUT/<name>_trt (tensorrt backend), each with a\n"
             "config.pbtxt derived from the I/O spec (spatial dims -1, batching, dynamic batcher, instance group)\n"
             "and the artifact in the version folder (<model>/<version>/model.onnx|model.plan). Other versions\n"
             "already in OUT are kept. A tileable graph (extent input) gets max_batch_size 0 (no batching).\n"
             "Serve with: tritonserver --model-repository=OUT")
    p.add_argument("out", help="model repository folder (created if missing)")
    p.add_argument("--onnx", help="ONNX graph from lso export (onnxruntime backend)")
    p.add_argument("--plan", help="TensorRT plan from lso build (tensorrt backend)")
    p.add_argument("--name", default="lso", help="model name prefix: <name>_onnx, <name>_trt")
    p.add_argument("--version", type=int, default=1, help="version folder to write")
    p.add_argument("--max-batch-size", type=int, default=io_spec.PROFILE_BATCH[2],
                   help="largest batch Triton forms (0: no batching)")
    p.add_argument("--max-queue-delay-us", type=int, default=500, help="dynamic batcher queue delay (microseconds)")
    p.add_argument("--preferred-batch-size", type=int, nargs="*", default=[], help="preferred batch sizes")
    p.add_argument("--instances", type=int, default=1, help="model instances per device")
    p.add_argument("--onnx-instance-kind", choices=("gpu", "cpu"), default="gpu",
                   help="where the ONNX model's instances run (plans always run on GPUs)")
    p.add_argument("--gpus", type=int, nargs="*", default=[], help="GPU indices for the instances (default: all)")
    p.add_argument("--tileable", action=argparse.BooleanOptionalAction, default=None,
                   help="the plan takes 'extent' (default: from its sidecar or the --onnx graph)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version folder")


def _triton_repo_options(args):
    from lso.scaleout.triton_repo import TritonRepoOptions

    return options_from_args(TritonRepoOptions, args, out=Path(args.out), onnx=_path(args.onnx), plan=_path(args.plan),
                             preferred_batch_sizes=tuple(args.preferred_batch_size), gpus=tuple(args.gpus))


def _run_triton_repo(args) -> int:
    from lso.scaleout.triton_repo import write_triton_repo

    opts = _triton_repo_options(args)
    for model in write_triton_repo(opts):
        print(f"{model.name}: {model.platform}, max_batch_size {model.max_batch_size} -> {model.config_path}, "
              f"{model.artifact_path}")
    print(f"serve with: tritonserver --model-repository={Path(args.out).resolve()}")
    return 0


# ------------------------------------------------------------------------------------------ batch
def _add_batch(sub) -> None:
    p = _sub(sub, "batch", "Fuse every scene of folders/HDF5 files with a Ray Data actor pool; resumable.",
             "Scenes: every .npz/.mat/.h5 in the given folders, and every scene of a multi-scene .h5 (community\n"
             "GT/RGB layout: LR-HSI regenerated from GT at --ratio; or ours: hr_msi/lr_hsi, optional gt). Each\n"
             "actor holds one runner and writes OUT/<scene>.npz (or .h5) atomically; OUT/manifest.json lists every\n"
             "scene's status, error and, with ground truth, PSNR/SAM/ERGAS/SSIM. Re-running skips finished scenes.\n"
             "Local by default (ray.init with --num-cpus); --address joins a cluster (shared storage needed).\n"
             "A scene over --memory-budget is fused in exact tiles (the largest that fit) instead of failing.\n"
             "Killed at any moment, it leaves only complete outputs; the same command then fuses the rest.\n"
             "Exit status 3 when some scenes failed (the others are written).")
    p.add_argument("artifact", help=ARTIFACT_HELP)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="scene folders and/or files")
    _add_config(p)
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--format", dest="output_format", choices=("npz", "h5"), default="npz", help="output format")
    p.add_argument("--actors", type=int, default=2, help="actors in the pool (one runner each)")
    p.add_argument("--num-cpus-per-actor", type=float, default=1.0, help="Ray CPUs reserved per actor")
    p.add_argument("--num-gpus-per-actor", type=float, default=0.0, help="Ray GPUs per actor (GPU clusters)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per actor (ONNX Runtime, OpenVINO)")
    p.add_argument("--backend", help=BACKEND_HELP)
    _add_runner_option(p)
    p.add_argument("--device", help="runner device; None = the backend's own (cuda with --num-gpus-per-actor)")
    p.add_argument("--tile", type=int, help="tile every scene with this core size; None = only large scenes")
    from lso.runtime.tiling import AUTO_TILE, AUTO_TILE_PIXELS  # the one tiling policy's threshold

    p.add_argument("--auto-tile-pixels", type=int, default=AUTO_TILE_PIXELS,
                   help=f"scenes with more HR pixels are tiled at {AUTO_TILE} (tileable artifacts)")
    p.add_argument("--memory-budget", help="working memory allowed per actor (e.g. 4G, 512MiB); a scene that does "
                                           "not fit in one piece is tiled to fit (tileable artifacts; else recorded "
                                           "as failed); None = $LSO_MEMORY_BUDGET or 75%% of physical memory, "
                                           "divided among the actors of a local run")
    p.add_argument("--ratio", type=int, default=4, help="ratio for regenerating LR-HSI from GT (community .h5)")
    p.add_argument("--crop", action="store_true",
                   help="crop scenes whose sizes do not fit the ratio to the top-left part that does, recorded in "
                        "their output and manifest (off by default: such scenes fail with an error naming that crop)")
    _add_input_scale(p)
    p.add_argument("--address", help="Ray cluster address (auto, host:6379, ray://host:10001); None = local")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray; None = all")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True, help="skip finished scenes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _batch_options(args):
    from lso.scaleout.batch import BatchOptions

    return options_from_args(BatchOptions, args, config=_config_arg(args), artifact=Path(args.artifact),
                             inputs=_paths(args.inputs), out=Path(args.out), progress=not args.no_progress)


def _run_batch(args) -> int:
    from lso.scaleout.batch import run_batch

    opts = _batch_options(args)
    report = run_batch(opts)
    print(f"{report.total} scene(s): {report.ok} fused, {report.skipped} already done, {report.failed} failed "
          f"in {report.seconds:.1f} s -> {report.manifest}")
    for record in report.records:
        if record["status"] == "failed":
            print(f"  failed {record['scene_id']}: {record['error']}", file=sys.stderr)
    return 3 if report.failed else 0


# ------------------------------------------------------------------------------------------ serve
def _add_serve(sub) -> None:
    from lso.scaleout.wire import Limits

    p = _sub(sub, "serve", "Serve fusion over HTTP with Ray Serve (replicas, request checks, size limits).",
             "POST ROUTE with Content-Type application/x-npz (an npz with hr_msi and lr_hsi) or\n"
             "application/x-lso-raw (float32 bytes of hr_msi then lr_hsi, shapes in X-LSO-HR-Shape and\n"
             "X-LSO-LR-Shape headers); the answer is hr_hsi in the same encoding. GET ROUTE describes the model.\n"
             "Bad requests get 4xx with the reason (400 malformed, 413 too large, 415 media type, 422 content).\n"
             "Slow clients: a request reaches a replica only once it has fully arrived; headers must arrive within\n"
             "--header-timeout-s, the body within max(--body-timeout-s, size / --body-rate-mb-s), else 408;\n"
             "each client address may hold --max-connections-per-client connections (then 429), the server\n"
             "--max-connections in all (then 503). Runs until Ctrl-C.")
    p.add_argument("artifact", help=ARTIFACT_HELP)
    _add_config(p)
    p.add_argument("--replicas", type=int, default=1, help="replicas (one runner each)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (0.0.0.0 to accept other machines)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port")
    p.add_argument("--route", default="/fuse", help="URL path of the endpoint")
    p.add_argument("--device", help="runner device; None = the backend's own (cuda with --num-gpus-per-replica)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per replica (ONNX Runtime, OpenVINO)")
    p.add_argument("--backend", help=BACKEND_HELP)
    from lso.scaleout.serve import RUNNER_OWN_FLAGS

    _add_runner_option(p, RUNNER_OWN_FLAGS)
    p.add_argument("--num-cpus-per-replica", type=float, default=1.0, help="Ray CPUs reserved per replica")
    p.add_argument("--num-gpus-per-replica", type=float, default=0.0, help="Ray GPUs per replica")
    p.add_argument("--max-ongoing-requests", type=int, default=2, help="requests one replica holds at once")
    p.add_argument("--max-queued-requests", type=int, default=64, help="queued requests before 503 (-1: no limit)")
    p.add_argument("--request-timeout-s", type=float, help="answer 408 after this long; None = no timeout")
    p.add_argument("--max-request-mb", type=float, default=Limits.max_request_bytes / 2**20,
                   help="largest request body (MiB)")
    p.add_argument("--max-pixels", type=int, default=Limits.max_pixels, help="largest HR image (H*W) per request")
    p.add_argument("--max-batch", type=int, default=Limits.max_batch, help="largest batch per request")
    p.add_argument("--tile", type=int, help="fuse in tiles of this core size (tileable artifacts)")
    p.add_argument("--header-timeout-s", type=float, default=10.0,
                   help="seconds a client has to send the request line and headers (then 408)")
    p.add_argument("--body-timeout-s", type=float, default=10.0,
                   help="least seconds a client has to send the whole body (then 408); see --body-rate-mb-s")
    p.add_argument("--body-rate-mb-s", type=float, default=1.0,
                   help="the body deadline is max(--body-timeout-s, declared MiB / this); the answer's too")
    p.add_argument("--keep-alive-s", type=float, default=5.0, help="seconds an idle connection is kept open")
    p.add_argument("--max-connections-per-client", type=int, default=8,
                   help="open connections per client IP address (then 429)")
    p.add_argument("--max-connections", type=int, default=256, help="open connections in all (then 503)")
    p.add_argument("--address", help="Ray cluster address; None = start a local Ray")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray; None = all")


def _serve_options(args):
    from lso.scaleout.serve import ClientLimits, ServeOptions
    from lso.scaleout.wire import Limits

    limits = options_from_args(Limits, args, max_request_bytes=int(args.max_request_mb * 2**20))
    return options_from_args(ServeOptions, args, config=_config_arg(args), artifact=Path(args.artifact),
                             limits=limits, clients=options_from_args(ClientLimits, args))


def _run_serve(args) -> int:
    from lso.scaleout.serve import serve_forever

    opts = _serve_options(args)
    serve_forever(opts, on_ready=lambda url: print(f"serving {opts.artifact} at {url} (Ctrl-C stops)", flush=True))
    return 0


# ---------------------------------------------------------------------------------------- latency
def _add_latency(sub) -> None:
    """``python benchmarks/latency.py`` (a script only, no ``lso`` subcommand)."""
    from lso.benchmarks import latency

    cpu, gpu = ",".join(latency.CPU_BACKENDS), ",".join(latency.GPU_BACKENDS)
    p = _sub(sub, "latency", "Latency, throughput and peak memory per backend, precision, size and ratio.",
             latency.__doc__ or "")
    p.add_argument("--checkpoint", help="checkpoint (default: the bundled demo checkpoint)")
    p.add_argument("--backends", help=f"comma list (default: CPU {cpu}; GPU adds {gpu})")
    p.add_argument("--plan", action="append", default=[], help="TensorRT plan(s) to add as trt-<name>")
    p.add_argument("--sizes", default="256,512,1024", help="HR sizes (square)")
    p.add_argument("--ratios", default="4", help="scale ratios")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds: each runs every cell once, in a rotated order, each in a fresh process")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per cell and round (after one warm-up)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (every cell and peer)")
    p.add_argument("--baseline-max-size", type=int, default=512,
                   help="largest size at which the (memory-hungry) baseline runs")
    p.add_argument("--out", default=str(Path(latency.__file__).resolve().parent / "results"), help="results folder")
    p.add_argument("--name", default="latency", help="results file stem")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    p.add_argument("--graph",
                   help="this package's CPU graph to time (default: lso export --target cpu, tuned here now)")
    p.add_argument("--tune-budget", default=None,
                   help="time budget of that tuning (seconds, or 90s / 5m; default: lso export's)")
    p.add_argument("--_cell", help=argparse.SUPPRESS)


def _run_latency(args) -> int:
    from lso.benchmarks.latency import run

    return run(args)


# ------------------------------------------------------------------------------ subcommand table
#: every command: name -> (adds its parser to a subparsers object, runs it). ``lso <name>`` for each in
#: :data:`LSO_COMMANDS`; the others run only as scripts (``python benchmarks/latency.py``, :func:`script_main`).
COMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "info": (_add_info, _run_info),
    "train": (_add_train, _run_train),
    "eval": (_add_eval, _run_eval),
    "demo": (_add_demo, _run_demo),
    "export": (_add_export, _run_export),
    "infer": (_add_infer, _run_infer),
    "calibrate": (_add_calibrate, _run_calibrate),
    "build": (_add_build, _run_build),
    "triton-repo": (_add_triton_repo, _run_triton_repo),
    "batch": (_add_batch, _run_batch),
    "serve": (_add_serve, _run_serve),
    "latency": (_add_latency, _run_latency),
}
LSO_COMMANDS = ("info", "train", "eval", "demo", "export", "infer", "calibrate", "build", "triton-repo", "batch",
                "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lso",
        description="lso-deploy: the Latent Spectral Operator (LSO) from checkpoint to production "
                    "(export, precision, engines, runtimes, benchmarks).",
        formatter_class=_Formatter,
    )
    _add_verbose(parser)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in LSO_COMMANDS:
        add, run = COMMANDS[name]
        add(sub)
        sub.choices[name].set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _set_logging(args.verbose)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return run_command(f"lso {args.command}", args._run, args)


if __name__ == "__main__":
    raise SystemExit(main())
