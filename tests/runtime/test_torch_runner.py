"""TorchRunner: CPU/CUDA, FP16 autocast with FP32 islands, torch.compile."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lso.model import SpectralBlock
from lso.runtime import TorchRunner

from rt_fixtures import reference, scene


def test_matches_the_model(rt_model):
    hr, lr = scene(30, 45, 3, batch=2)
    with TorchRunner(rt_model) as r:
        np.testing.assert_array_equal(r.fuse(hr, lr), reference(rt_model, hr, lr))


def test_fp16_keeps_spectral_blocks_in_fp32(rt_model):
    hr, lr = scene(32, 32, 4)
    seen: dict[str, tuple] = {}
    with TorchRunner(rt_model, fp16=True) as r:
        hooks = []
        for name, module in r.model.named_modules():
            if isinstance(module, SpectralBlock) or name == "inc.double_conv.0":
                hooks.append(module.register_forward_hook(
                    lambda m, i, o, name=name: seen.__setitem__(name, (i[0].dtype, o.dtype))))
        out = r.fuse(hr, lr)
        for h in hooks:
            h.remove()
    blocks = {k: v for k, v in seen.items() if k != "inc.double_conv.0"}
    assert len(blocks) == 3 and all(v == (torch.float32, torch.float32) for v in blocks.values())
    assert seen["inc.double_conv.0"][1] == torch.float16  # the convolutions do run in FP16 (input: FP32 grid)
    assert out.dtype == np.float32
    assert np.abs(out - reference(rt_model, hr, lr)).max() < 5e-3
    # the caller's model is untouched
    assert all(isinstance(getattr(rt_model, f"process{i}"), SpectralBlock) for i in (1, 2, 3))


def test_compile_option(rt_model):
    hr, lr = scene(32, 32, 4)
    with TorchRunner(rt_model, compile={"backend": "eager", "dynamic": True}) as r:
        np.testing.assert_allclose(r.fuse(hr, lr), reference(rt_model, hr, lr), atol=1e-6)


@pytest.mark.gpu
def test_cuda_tensors_stay_on_device(rt_model):
    hr, lr = scene(32, 48, 4)
    # a copy: an FP32 runner moves the model it is given to the GPU in place, and rt_model is shared
    with TorchRunner(copy.deepcopy(rt_model), device="cuda") as r:
        out = r.fuse(torch.from_numpy(hr).cuda(), torch.from_numpy(lr).cuda())
        assert out.is_cuda
        np.testing.assert_allclose(out.cpu().numpy(), reference(rt_model, hr, lr), atol=1e-4)
        assert isinstance(r.fuse(hr, lr), np.ndarray)
    with TorchRunner(rt_model, device="cuda", fp16=True) as r:
        assert np.abs(r.fuse(hr, lr) - reference(rt_model, hr, lr)).max() < 5e-3


class _DtypeLog(torch.utils._python_dispatch.TorchDispatchMode):
    """Records (aten op name, output dtype) of every floating-point op that runs."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            self.seen.append((func.overloadpacket.__name__, out.dtype))
        return out

    def dtypes(self, *names: str) -> set:
        return {d for n, d in self.seen if n in names}


@pytest.mark.parametrize("graph_form", [False, True], ids=["eager", "graph-form"])
def test_fp16_islands_follow_the_island_table(rt_model, monkeypatch, graph_form):
    """Under autocast the islands of lso.islands stay FP32 in both computation forms: eager (F.interpolate)
    and the graph form torch.compile traces (bicubic as interpolation-matrix MatMuls, attention MatMuls)."""
    import lso.model
    from lso.islands import ISLAND_NAMES

    assert set(ISLAND_NAMES) == {"solver", "softmax", "coordinate_grid", "bicubic"}
    monkeypatch.setattr(lso.model, "_in_graph", lambda: graph_form)
    hr, lr = scene(32, 32, 4)
    with TorchRunner(rt_model, fp16=True) as r, _DtypeLog() as log:
        r.fuse(hr, lr)
    assert log.dtypes("convolution") == {torch.float16, torch.float32}  # FP16 convs, FP32 ones in the blocks
    assert log.dtypes("cumsum") == {torch.float32}  # coordinate grid (and the matrices' indices)
    assert log.dtypes("_softmax") == {torch.float32}
    assert log.dtypes("sin", "cos") == {torch.float32}  # the solver
    if graph_form:
        assert log.dtypes("mm", "bmm", "matmul") == {torch.float32}  # bicubic matrices and attention products
    else:
        assert log.dtypes("upsample_bicubic2d") == {torch.float32}
    # the same autocast on the bare model puts the graph form's bicubic MatMuls in FP16: the islands do the work
    if graph_form:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16), _DtypeLog() as bare:
            rt_model(torch.from_numpy(hr), torch.from_numpy(lr))
        assert torch.float16 in bare.dtypes("mm", "bmm", "matmul") and torch.float16 in bare.dtypes("cumsum")


def test_fp32_calls_turn_tf32_off_and_restore_the_callers_setting():
    from lso.runtime.torch_runner import _tf32_off

    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = (matmul.fp32_precision, conv.fp32_precision)
    try:
        matmul.fp32_precision, conv.fp32_precision = "tf32", "tf32"
        with _tf32_off(torch.device("cuda", 0)):  # flags only: no GPU needed
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        with pytest.raises(RuntimeError), _tf32_off(torch.device("cuda", 0)):
            raise RuntimeError("a failing call")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        with _tf32_off(torch.device("cpu")):  # nothing to do on the CPU
            assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def test_cuda_graph_outputs_are_copied(rt_model):
    runner = TorchRunner(rt_model, compile={"mode": "reduce-overhead"})
    runner._device = torch.device("cuda", 0)  # what activation would set on a GPU
    assert runner._cuda_graph_outputs
    runner._compile = {"mode": "max-autotune-no-cudagraphs"}
    assert not runner._cuda_graph_outputs
    runner._compile, runner._device = {"mode": "reduce-overhead"}, torch.device("cpu")
    assert not runner._cuda_graph_outputs


@pytest.mark.gpu
def test_fp32_parity_on_cuda_with_tf32_off(rt_model):
    hr, lr = scene(64, 64, 4)
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        with TorchRunner(copy.deepcopy(rt_model), device="cuda") as r:  # a copy: rt_model stays on the CPU
            assert np.abs(r.fuse(hr, lr) - reference(rt_model, hr, lr)).max() <= 1e-4
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision = "none"
