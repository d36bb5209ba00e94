"""Largest intermediate tensor vs TensorRT's 2^31-element limit: agreement with ONNX shape inference and an
eager meta-device trace, the export-only tensors it catches, the default profile, and refusals before a build."""
from __future__ import annotations

import math
import shlex

import pytest
import torch

from lso import LSO, LSOConfig, io_spec
from lso.errors import InputError
from lso.export import engine_builder as BE
from lso.export import profiles as PR
from lso.export import tensor_limits as TL
from lso.export import trtexec as TX

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# widths of the paper configuration (they set every tensor's size); few blocks and harmonics keep the export short
PAPER_WIDTHS = LSOConfig(n_resblocks=1, num_basis=1)
PROFILES = [((1, 64, 64, 4)), ((2, 96, 80, 8)), ((3, 120, 200, 4))]  # (batch, H, W, ratio)


def _shapes(cfg: LSOConfig, batch: int, h: int, w: int, ratio: int) -> dict[str, tuple[int, ...]]:
    return {"hr_msi": (batch, cfg.n_msi_bands, h, w), "lr_hsi": (batch, cfg.n_bands, h // ratio, w // ratio)}


# eager modules the export rewrites (their outputs exist only in the eager model): the spectral blocks'
# key/value and query convolutions, fused into one key/value/query convolution in the graph
REWRITTEN = ("encoder_attn", "decoder_attn")


def _meta_trace(cfg: LSOConfig, shapes: dict) -> list[tuple[int, ...]]:
    """Output shapes of the eager model's modules, run on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        model = LSO(cfg).eval()
    seen: list[tuple[int, ...]] = []
    for name, module in model.named_modules():
        if name.endswith(REWRITTEN):
            continue
        module.register_forward_hook(
            lambda m, i, o: seen.append(tuple(o.shape)) if isinstance(o, torch.Tensor) else None)
    with torch.no_grad():
        model(torch.empty(shapes["hr_msi"], device="meta"), torch.empty(shapes["lr_hsi"], device="meta"))
    return seen


@pytest.fixture(scope="module")
def paper_width_onnx(tmp_path_factory):
    from lso.export import export_onnx

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("limits") / "paper_widths.onnx"
    return export_onnx(LSO(PAPER_WIDTHS).eval(), out, check=False, simplify=False)


@pytest.mark.parametrize("batch, h, w, ratio", PROFILES)
def test_sizes_agree_with_onnx_shape_inference_and_the_eager_model(ex_onnx, ex_model, batch, h, w, ratio):
    cfg = ex_model.config
    shapes = _shapes(cfg, batch, h, w, ratio)
    sizes = TL.tensor_sizes(ex_onnx, shapes)
    ours = {t.name: t.shape for t in sizes}
    assert ours["hr_hsi"] == (batch, cfg.n_bands, h, w)
    # ONNX's own inference (no symbolic arithmetic): wherever it resolves a tensor, the shapes are the same
    model = onnx.load(str(ex_onnx))
    for inp in model.graph.input:
        # an input without a given shape keeps its symbolic dims
        for dim, value in zip(inp.type.tensor_type.shape.dim, shapes.get(inp.name, ()), strict=False):
            dim.Clear()
            dim.dim_value = value
    resolved = {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
                for vi in onnx.shape_inference.infer_shapes(model).graph.value_info
                if all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)}
    assert len(resolved) > 20
    assert {k: ours[k] for k in resolved} == resolved
    # every 4-D feature map the eager model shares with the graph has the same shape there
    eager = {s for s in _meta_trace(cfg, shapes) if len(s) == 4}
    assert eager <= set(ours.values())
    # ... but the largest tensor is an export-only one: the fused convolution that gives the attention logits
    # (heads x tokens), values and queries (width each); 8x8 + 64 + 64 = 192 channels in the paper configuration
    largest = sizes[0]
    assert largest.elements > max(math.prod(s) for s in eager)
    assert largest.shape == (batch, cfg.heads * cfg.num_token + 2 * cfg.width, h, w)
    assert largest.nbytes("fp16") == 2 * largest.elements and largest.nbytes("int8") == largest.elements


@pytest.mark.slow
def test_default_profile_builds_and_the_old_one_would_not(paper_width_onnx):
    big = PR.check_tensor_limit(paper_width_onnx, PR.BuildOptions(profiles=[io_spec.default_profile()]))[0]
    assert big.elements == 4 * 192 * 1024 * 1024 < TL.TRT_MAX_ELEMENTS  # about 0.8e9
    old = io_spec.default_profile(hr=((32, 32), (512, 512), (2048, 2048)))
    with pytest.raises(InputError) as err:
        PR.check_tensor_limit(paper_width_onnx, PR.BuildOptions(profiles=[old]))
    text = str(err.value)
    assert "[4, 192, 2048, 2048]" in text and "3,221,225,472" in text and "2,147,483,647 elements" in text
    assert "--max-shapes hr_msi:4x3x" in text and "windows of at most" in text
    side = TL.largest_fitting_side(paper_width_onnx, batch=4, ratio=4)
    assert 1024 <= side < 2048 and 4 * 192 * side * side <= TL.TRT_MAX_ELEMENTS < 4 * 192 * (side + 16) ** 2


def test_oversized_profile_is_refused_before_any_build(ex_onnx, tmp_path, monkeypatch, capsys):
    from lso.cli import main

    def forbidden(*a, **k):
        raise AssertionError("the build went on past an oversized profile")

    import lso.runtime.cuda_arrays as cuda_arrays

    monkeypatch.setattr(cuda_arrays, "require_cuda", forbidden)
    limit = 40 * 64 * 64  # the tiny graph's widest tensor is [B, 40, H, W]: a 64x64 max profile just fits
    monkeypatch.setattr(TL, "TRT_MAX_ELEMENTS", limit)
    big = "hr_msi:1x3x128x128,lr_hsi:1x31x32x32"
    spec = "--max-shapes", big, "--opt-shapes", big
    with pytest.raises(InputError, match="over TensorRT's limit"):
        BE.build_engine(ex_onnx, tmp_path / "m.plan", max_shapes=PR.parse_shape_spec(big),
                        opt_shapes=PR.parse_shape_spec(big))
    assert not (tmp_path / "m.plan").exists()
    assert main(["build", str(ex_onnx), "--print-trtexec", "--trt-version", "11", *spec]) == 1
    assert "over TensorRT's limit" in capsys.readouterr().err
    fits = "hr_msi:1x3x64x64,lr_hsi:1x31x16x16"
    assert main(["build", str(ex_onnx), "--print-trtexec", "--trt-version", "11", "--max-shapes", fits,
                 "--opt-shapes", fits]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# largest tensor at the max shapes: ") and "[1, 40, 64, 64]" in lines[0]
    assert shlex.split(lines[-1])[0] == "trtexec"


@pytest.mark.parametrize("precision_graph", ["fp32"])
def test_strongly_typed_when_the_version_is_unknown(ex_onnx, monkeypatch, capsys, precision_graph):
    from lso.cli import main

    monkeypatch.setattr(TX, "detect_trt_major", lambda default=11: default)  # nothing installed
    opts = PR.BuildOptions(profiles=PR.resolve_profiles())
    assert "--stronglyTyped" in TX.trtexec_command("m.fp16.onnx", "m.plan", opts)
    assert "--stronglyTyped" in TX.trtexec_command("m.int8.onnx", "m.plan", opts)
    assert "--stronglyTyped" not in TX.trtexec_command("m.onnx", "m.plan", opts, trt_major=11)
    small = "hr_msi:1x3x64x64,lr_hsi:1x31x16x16"
    assert main(["build", str(ex_onnx), "--print-trtexec", "--max-shapes", small, "--opt-shapes", small]) == 0
    out = capsys.readouterr().out
    assert TX.UNKNOWN_TRT_NOTE in out and "--stronglyTyped" in out.strip().splitlines()[-1]
    monkeypatch.setattr(TX, "detect_trt_major", lambda default=11: 10)  # TensorRT 10 installed: no assumption
    assert TX.UNKNOWN_TRT_NOTE not in TX.trtexec_notes(ex_onnx, PR.BuildOptions(
        profiles=PR.resolve_profiles(max_shapes=PR.parse_shape_spec(small), opt_shapes=PR.parse_shape_spec(small))))
