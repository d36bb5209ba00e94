"""export_onnx: one self-contained graph for every size and ratio, folded solver, TensorRT-clean, equal to PyTorch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig, io_spec
from lso.artifacts import read_sidecar, sidecar_path

from ex_helpers import SMALL_CASES, inputs, ort_run, torch_run

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_one_self_contained_file_and_its_sidecar(ex_onnx):
    assert sorted(p.name for p in ex_onnx.parent.iterdir()) == ["tiny.onnx", "tiny.onnx.json"]  # no .data, no .tmp
    model = onnx.load(str(ex_onnx), load_external_data=False)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    side = read_sidecar(ex_onnx, verify=True)  # checks the recorded sha256 of the artifact
    assert side["opset"] == 18 and side["precision"] == "fp32" and side["solver"] == "folded"
    assert side["config"] == LSOConfig.tiny().to_dict()
    assert side["source"]["kind"] == "model" and len(side["source"]["sha256"]) == 64
    for tool in ("torch", "onnx", "onnxscript", "onnxslim", "onnxruntime", "lso-deploy"):
        assert side["versions"][tool], tool
    specs_in, specs_out = io_spec.tensor_specs(LSOConfig.tiny())
    assert [i["name"] for i in side["inputs"]] == [s.name for s in specs_in]
    assert [tuple(o["shape"]) for o in side["outputs"]] == [s.shape for s in specs_out]
    table = side["parity"]
    assert table["passed"] and len(table["cases"]) == len(SMALL_CASES)
    assert all(row["max_abs"] <= 1e-4 for row in table["cases"])
    assert side["simplifier"]["applied"] and side["trt_lint"]["issues"] == []
    assert side["graph"]["op_counts"]["Conv"] == 19  # 22 module convs; each spectral block runs its two 1x1 as one
    json.dumps(side, allow_nan=False)  # strict JSON (PSNR inf is written as "inf")


def test_inputs_outputs_and_dynamic_axes_follow_io_spec(ex_onnx):
    graph = onnx.load(str(ex_onnx)).graph
    assert [i.name for i in graph.input] == list(io_spec.INPUT_NAMES)  # exactly two inputs by default
    assert [o.name for o in graph.output] == list(io_spec.OUTPUT_NAMES)
    assert _dims(graph.input[0]) == ["batch", 3, "height", "width"]
    assert _dims(graph.input[1]) == ["batch", 31, "lr_height", "lr_width"]
    assert _dims(graph.output[0]) == ["batch", 31, "height", "width"]


@pytest.mark.parametrize("batch,ratio,h,w", [
    (1, 4, 16, 16),   # x4 64x64
    (1, 8, 8, 8),     # x8
    (1, 16, 4, 4),    # x16
    (1, 32, 2, 3),    # x32, non-square
    (1, 3, 15, 11),   # x3 at 45x33: neither side a multiple of 4
    (2, 5, 6, 7),     # x5 at 30x35, batch 2
    (3, 2, 5, 9),     # x2, batch 3
])
def test_the_same_file_serves_every_ratio_size_and_batch(ex_onnx, ex_model, batch, ratio, h, w):
    hr, lr = inputs(batch, ratio, h, w, seed=ratio)
    got = ort_run(ex_onnx, {io_spec.HR_MSI: hr, io_spec.LR_HSI: lr})
    assert got.shape == (batch, 31, ratio * h, ratio * w)
    np.testing.assert_allclose(got, torch_run(ex_model, hr, lr), rtol=0, atol=1e-4)


def test_folded_solver_one_sin_one_cos_per_block_and_no_basis_axis(ex_onnx):
    from lso.export.passes import op_counts, tensor_dims

    model = onnx.load(str(ex_onnx))
    counts = op_counts(model)
    assert counts["Sin"] == 3 and counts["Cos"] == 3  # three spectral blocks
    two_q = 2 * LSOConfig.tiny().num_basis
    with_basis = {name: dims for name, dims in tensor_dims(model).items() if two_q in dims}
    assert with_basis == {}, f"tensors with a 2Q = {two_q} axis: {with_basis}"


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch-internal deprecation during export
def test_reference_solver_would_show_the_basis_axis(tmp_path):
    """The check above can fail: the reference (basis) form exports a [..., 2Q] tensor and Q sines."""
    from lso.export.passes import tensor_dims
    from lso.solver import solve_reference

    class Solve(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = torch.nn.Parameter(torch.randn(16, 12))
            self.register_buffer("modes", torch.arange(1, 7, dtype=torch.float32))

        def forward(self, z):
            return solve_reference(z, self.weights, self.modes)

    program = torch.onnx.export(Solve().eval(), (torch.rand(5, 16, 4),), dynamo=True, opset_version=18, verbose=False)
    dims = tensor_dims(program.model_proto)
    assert any(12 in d for d in dims.values())


def test_resize_nodes_are_tensorrt_friendly(ex_onnx):
    graph = onnx.load(str(ex_onnx)).graph
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in resizes]
    modes = sorted(a["mode"].decode() for a in attrs)
    assert modes == ["linear", "linear"]  # the two U-Net upsamplings; the bicubic ones are MatMuls
    for a in attrs:
        assert a.get("antialias", 0) == 0
        assert a["coordinate_transformation_mode"].decode() in ("half_pixel", "pytorch_half_pixel")
    # lms (x r up) and MSI (x0.5 down): A_h @ pad(x) @ A_w^T each; the other MatMuls are the spectral
    # blocks' attention (3 per block)
    from lso.calibration.graph import resize_nodes

    model = onnx.load(str(ex_onnx))
    resize_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.name in resize_nodes(model)]
    assert len(resize_matmuls) == 4
    assert sum(n.op_type == "MatMul" for n in graph.node) == 4 + 3 * 3


def test_no_unsupported_operator(ex_onnx):
    from lso.export.lint import lint_model, load_op_table

    model = onnx.load(str(ex_onnx))
    assert lint_model(model) == []
    table = load_op_table()
    assert all(table[n.op_type].supported for n in model.graph.node)
    assert not {"Col2Im", "Loop", "If"} & {n.op_type for n in model.graph.node}


def test_exported_program_has_no_size_guards(ex_model):
    """torch.export keeps all five sizes symbolic with their natural ranges: nothing specialised."""
    from lso.export.onnx_export import _capture, trace_inputs

    with torch.no_grad():
        program = _capture(ex_model, trace_inputs(ex_model.config), tileable=False)
    ranges = sorted((r.lower, r.upper) for r in program.range_constraints.values())
    assert ranges == [(1, 1 << 16)] * 3 + [(2, 1 << 16)] * 2  # batch, h, w >= 1; H, W >= 2: as requested


def test_a_forward_that_specialises_a_size_is_refused():
    """A decision on a size (here a padding branch taken only when W is not a multiple of 4) is an ExportError,
    not a silent specialisation of the graph (torch.onnx.export given the module "refines" the shapes instead)."""
    from lso.errors import ExportError
    from lso.export.onnx_export import _capture, trace_inputs

    class Specialising(torch.nn.Module):
        def forward(self, hr_msi, lr_hsi):
            if hr_msi.shape[-1] % 4:
                hr_msi = torch.nn.functional.pad(hr_msi, (0, 4 - hr_msi.shape[-1] % 4))
            return hr_msi

    with pytest.raises(ExportError, match="could not keep every size dynamic"):
        _capture(Specialising(), trace_inputs(LSOConfig.tiny()), tileable=False)


@pytest.mark.slow
def test_paper_config_exports_and_matches_at_64(tmp_path):
    from lso.export import ParityCase, export_onnx

    torch.manual_seed(1)
    model = LSO(LSOConfig.paper()).eval()
    out = export_onnx(model, tmp_path / "paper.onnx", cases=[ParityCase(4, 64, 64)])
    side = read_sidecar(out)
    assert side["parity"]["cases"][0]["max_abs"] <= 1e-4
    counts = side["graph"]["op_counts"]
    # 28 module convs; each spectral block runs its two 1x1 as one
    assert counts["Sin"] == 3 and counts["Cos"] == 3 and counts["Conv"] == 25
    assert 7e6 < out.stat().st_size < 9e6  # 1.94 M float32 parameters, all inside the file
    assert sidecar_path(out).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["paper.onnx",
                                                                                          "paper.onnx.json"]
