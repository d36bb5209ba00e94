"""The trtexec recipe: the ``trtexec`` command line that builds the same engine as :func:`lso.export.build_engine`.

``lso build --print-trtexec`` prints it (no GPU needed); the plan sidecar records it
(``trtexec_equivalent``). Its flags are checked in the tests against per-version flag lists taken
from NVIDIA's trtexec sources; what differs between TensorRT 10 and 11 is decided by
:class:`lso.runtime.trt_support.BuilderCompat`.
"""
from __future__ import annotations

from lso.export.profiles import BuildOptions, PathLike, check_tensor_limit, format_shapes
from lso.runtime.trt_support import BuilderCompat, detect_trt_major

__all__ = ["trtexec_command", "trtexec_notes", "UNKNOWN_TRT_NOTE"]

# hardware compatibility level -> trtexec's --hardwareCompatibilityLevel value
_TRTEXEC_HW = {"ampere_plus": "ampere+", "same_compute_capability": "sameComputeCapability"}

#: What --print-trtexec assumes when no TensorRT is installed and no --trt-version is given.
UNKNOWN_TRT_NOTE = ("# TensorRT version unknown (none installed here, no --trt-version): --stronglyTyped is included "
                    "so that a TensorRT 10 build keeps the graph's own precisions (on TensorRT 11 it is a deprecated "
                    "no-op); pass --trt-version 10|11 for the exact line")


def trtexec_command(onnx_path: PathLike, out: PathLike, options: BuildOptions, *,
                    trt_major: int | None = None) -> list[str]:
    """The ``trtexec`` argument list that builds the same engine.

    ``trt_major``: the TensorRT major version to write for; default: the installed one. Where none is
    installed the version is unknown: the line is TensorRT 11's plus ``--stronglyTyped`` (see
    :data:`UNKNOWN_TRT_NOTE`), since a TensorRT 10 user copying it would otherwise build a weakly typed
    engine from a graph that carries its own precision.
    """
    major = trt_major if trt_major is not None else detect_trt_major(default=None)
    compat = BuilderCompat.for_major(major if major is not None else 11)
    compat.check(options)
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={out}"]
    if compat.trtexec_strongly_typed or major is None:
        cmd.append("--stronglyTyped")
    cmd.append("--noTF32")  # as the build (Polygraphy's CreateConfig clears TF32): FP32 layers compute in FP32
    many = len(options.profiles) > 1
    for i, prof in enumerate(options.profiles):
        if many:
            cmd.append(f"--profile={i}")
        cmd += [f"--minShapes={format_shapes(prof.min)}", f"--optShapes={format_shapes(prof.opt)}",
                f"--maxShapes={format_shapes(prof.max)}"]
    cmd.append(f"--memPoolSize=workspace:{max(1, round(options.workspace_gib * 1024))}")  # MiB (trtexec's unit)
    cmd.append(f"--builderOptimizationLevel={int(options.optimization_level)}")
    if options.timing_cache:
        cmd.append(f"--timingCacheFile={options.timing_cache}")
    if options.version_compatible:
        cmd.append("--versionCompatible")
    if options.hardware_compatibility != "none":
        cmd.append(f"--hardwareCompatibilityLevel={_TRTEXEC_HW[options.hardware_compatibility]}")
    cmd += ["--profilingVerbosity=detailed", f"--device={int(options.device)}", "--skipInference"]
    return cmd


def trtexec_notes(onnx_path: PathLike, options: BuildOptions, *, trt_major: int | None = None) -> list[str]:
    """Comment lines printed above ``--print-trtexec``'s command: the largest tensor, the version assumption.

    Raises:
        InputError: a profile's largest tensor is past TensorRT's limit (nothing is printed then).
    """
    from lso.export import tensor_limits

    notes = [f"# largest tensor at the max shapes{'' if len(options.profiles) == 1 else f' of profile {i}'}: "
             f"{big.describe()} (TensorRT's limit: {tensor_limits.TRT_MAX_ELEMENTS:,} elements)"
             for i, big in enumerate(check_tensor_limit(onnx_path, options))]
    if trt_major is None and detect_trt_major(default=None) is None:
        notes.append(UNKNOWN_TRT_NOTE)
    return notes
