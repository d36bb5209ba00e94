"""``polygraphy run --onnxrt`` (NVIDIA's CLI, in a subprocess) on every exported variant of the tiny model,
compared with PyTorch's outputs saved as a Polygraphy RunResults file (``--load-outputs``) on our seeded
feeds (``--load-inputs``): portable, TensorRT target, CPU-tuned (``--solver-chunk``, ``--align-channels``)
and tileable."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("polygraphy")
pytest.importorskip("onnxruntime")

from lso import LSO, LSOConfig, io_spec

HR, LR = (1, 3, 64, 64), (1, 31, 16, 16)
EXTENT = np.array([0, 0, 64, 64], dtype=np.int64)
VARIANTS = {
    "portable": {},
    "tensorrt": {"target": "tensorrt"},
    "cpu-chunk": {"solver_chunk": 16},
    "cpu-align": {"align_channels": 16},
    "tileable": {"tileable": True},
}


def _polygraphy_cli() -> list[str]:
    exe = Path(sys.executable).with_name("polygraphy")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("polygraphy")
    if found is None:
        pytest.skip("the polygraphy command is not installed")
    return [found]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return LSO(LSOConfig.tiny()).eval()


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_polygraphy_run_onnxrt_matches_pytorch(variant, tiny, tmp_path):
    from polygraphy.comparator import RunResults
    from polygraphy.json import save_json

    from lso.export import export_onnx
    from lso.export.variants import read_variant

    kwargs = VARIANTS[variant]
    graph = export_onnx(tiny, tmp_path / f"tiny.{variant}.onnx", check=False, **kwargs)
    expected = {"tensorrt": "tensorrt", "cpu-chunk": "cpu", "cpu-align": "cpu"}.get(variant, "portable")
    assert read_variant(graph).name == expected
    rng = np.random.default_rng(7)  # our seeded feeds, the same for PyTorch and for polygraphy
    feeds = []
    for _ in range(2):
        feed = {io_spec.HR_MSI: rng.random(HR, dtype=np.float32), io_spec.LR_HSI: rng.random(LR, dtype=np.float32)}
        if kwargs.get("tileable"):
            feed[io_spec.EXTENT] = EXTENT
        feeds.append(feed)
    outputs = []
    with torch.no_grad():
        for feed in feeds:
            args = [torch.from_numpy(feed[io_spec.HR_MSI]), torch.from_numpy(feed[io_spec.LR_HSI])]
            if kwargs.get("tileable"):
                args.append(torch.from_numpy(feed[io_spec.EXTENT]))
            outputs.append({io_spec.HR_HSI: tiny(*args).numpy()})
    save_json(feeds, str(tmp_path / "inputs.json"))
    reference = RunResults()
    reference.add(outputs, runner_name="pytorch")
    reference.save(str(tmp_path / "pytorch.json"))
    cmd = _polygraphy_cli() + [
        "run", str(graph), "--onnxrt", "--input-shapes", f"hr_msi:{list(HR)}".replace(" ", ""),
        f"lr_hsi:{list(LR)}".replace(" ", ""), "--load-inputs", str(tmp_path / "inputs.json"),
        "--load-outputs", str(tmp_path / "pytorch.json"), "--atol", "1e-4", "--rtol", "0",
        "--check-error-stat", "max"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    # both feeds compared (the loaded PyTorch outputs against ONNX Runtime's), each within 1e-4 max |diff|
    assert "vs. pytorch | Passed: 2/2 iterations" in log and "[I] PASSED | Runtime" in log
