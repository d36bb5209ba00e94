"""TorchRunner: CPU/CUDA, FP16 autocast with FP32 islands, torch.compile."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rt_fixtures import reference, rt_model, scene  # noqa: F401  (fixtures)

from lso.model import SpectralBlock
from lso.runtime import TorchRunner


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
    assert seen["inc.double_conv.0"] == (torch.float16, torch.float16)  # the convolutions do run in FP16
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
    with TorchRunner(rt_model, device="cuda") as r:
        out = r.fuse(torch.from_numpy(hr).cuda(), torch.from_numpy(lr).cuda())
        assert out.is_cuda
        np.testing.assert_allclose(out.cpu().numpy(), reference(rt_model, hr, lr), atol=1e-4)
        assert isinstance(r.fuse(hr, lr), np.ndarray)
    with TorchRunner(rt_model, device="cuda", fp16=True) as r:
        assert np.abs(r.fuse(hr, lr) - reference(rt_model, hr, lr)).max() < 5e-3
