"""Artifact integrity: truncated or bit-flipped checkpoints, HDF5, .mat, ONNX and plan files raise ArtifactError.

For each kind a file is written, then (a) truncated at several lengths and (b) one bit is flipped at seeded
positions spread over the whole file (headers included). Files we write, or pin with a sidecar, must refuse
every flip, naming the file; a foreign file with no checksum of its own (an official .pth) must refuse the
flip or load exactly what it held before (a flipped zip timestamp changes nothing), never different weights.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig, load_checkpoint, save_checkpoint
from lso.artifacts import read_sidecar, sidecar_path, write_sidecar
from lso.checkpoint import read_state_dict
from lso.errors import ArtifactError

N_FLIPS = 40


def _flip_positions(size: int, seed: int = 0, n: int = N_FLIPS) -> list[int]:
    """Seeded byte positions: the first 64 bytes (headers) always sampled, the rest spread over the file."""
    rng = np.random.default_rng(seed)
    head = rng.choice(min(size, 64), size=min(8, size), replace=False)
    rest = rng.integers(0, size, size=n - len(head))
    return sorted({int(i) for i in (*head, *rest)})


def _flipped(data: bytes, pos: int, bit: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


def _truncations(size: int) -> list[int]:
    return sorted({0, 1, 8, size // 3, size // 2, size - 1})


@pytest.fixture(scope="module")
def tiny() -> LSO:
    torch.manual_seed(0)
    return LSO(LSOConfig.tiny()).eval()


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ checkpoints
def test_our_safetensors_refuses_every_flip_and_truncation(tmp_path, tiny):
    path = save_checkpoint(tiny, tmp_path / "ours.safetensors")
    good = path.read_bytes()
    _, meta = read_state_dict(path)
    assert "content_sha256" not in meta  # the digest is checked, not handed back as metadata
    header = 8 + int.from_bytes(good[:8], "little")  # the JSON header: names, shapes, offsets, config, digest
    for pos in _flip_positions(len(good)) + _flip_positions(header, seed=1, n=120):
        path.write_bytes(_flipped(good, pos, pos % 8))
        with pytest.raises(ArtifactError, match="ours.safetensors"):
            load_checkpoint(path)
    for n in _truncations(len(good)):
        path.write_bytes(good[:n])
        with pytest.raises(ArtifactError, match="ours.safetensors"):
            load_checkpoint(path)


def test_flipped_config_digit_is_caught(tmp_path, tiny):
    """'patch_size': 4 -> 5 is one bit and cannot be inferred from tensor shapes: only the digest sees it."""
    path = save_checkpoint(tiny, tmp_path / "ours.safetensors")
    data = path.read_bytes()
    at = data.index(b'\\"patch_size\\": 4') + len(b'\\"patch_size\\": ')
    path.write_bytes(_flipped(data, at, 0))  # '4' (0x34) -> '5' (0x35)
    with pytest.raises(ArtifactError, match="content sha256"):
        load_checkpoint(path)


def test_official_pth_flip_is_refused_or_harmless(tmp_path, tiny):
    """torch.load does not check the zip's CRC-32; read_state_dict does, so no flip changes the weights silently."""
    path = tmp_path / "model_best.pth.tar"
    torch.save({"model_state_dict": tiny.state_dict(), "epoch": 3}, path)
    good = path.read_bytes()
    original, _ = read_state_dict(path)
    refused = 0
    for pos in _flip_positions(len(good), n=80):
        path.write_bytes(_flipped(good, pos, pos % 8))
        try:
            state, _ = read_state_dict(path)
        except ArtifactError as exc:
            assert "model_best.pth.tar" in str(exc)
            refused += 1
            continue
        assert _same_state(state, original), f"flip at byte {pos} changed the weights silently"
    assert refused >= 60  # almost every byte matters; the rest are zip timestamps and alignment padding


def test_official_pth_flip_in_a_weight_names_the_member(tmp_path, tiny):
    import zipfile

    path = tmp_path / "w.pth"
    torch.save(tiny.state_dict(), path)
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)  # the largest tensor's storage
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    path.write_bytes(_flipped(path.read_bytes(), start + info.file_size // 2, 3))
    with pytest.raises(ArtifactError, match=r"fails its CRC-32"):
        load_checkpoint(path)


def test_official_pth_truncated(tmp_path, tiny):
    path = tmp_path / "t.pth"
    torch.save(tiny.state_dict(), path)
    good = path.read_bytes()
    for n in _truncations(len(good)):
        path.write_bytes(good[:n])
        with pytest.raises(ArtifactError, match="t.pth"):
            load_checkpoint(path)


def test_pinned_checkpoint_sidecar_mismatch(tmp_path, tiny):
    """Any checkpoint (a legacy pickle too) pinned with a sidecar must match its sha256."""
    path = tmp_path / "legacy.pth"
    torch.save(tiny.state_dict(), path, _use_new_zipfile_serialization=False)
    write_sidecar(path, {"source": "downloaded"})
    load_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(_flipped(data, len(data) // 2, 1))
    with pytest.raises(ArtifactError, match=r"legacy.pth does not match its sidecar legacy.pth.json"):
        load_checkpoint(path)


class _RunsCode:
    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return (open, (str(self.mark), "w"))


def test_training_resume_refuses_a_malicious_state_and_runs_nothing(tmp_path):
    """--resume reads <out>/last.pt with weights_only=True too: a planted pickle is refused, nothing runs."""
    from lso.train import TrainConfig, train

    mark = tmp_path / "pwned"
    torch.save({"model": {}, "step": 1, "payload": _RunsCode(mark)}, tmp_path / "last.pt")
    with pytest.raises(ArtifactError, match="last.pt"):
        train(TrainConfig(out=str(tmp_path)), resume=True, progress=False)
    assert not mark.exists()


# ------------------------------------------------------------------------------------------ HDF5
def _community_h5(path, n=2, size=8):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("GT", data=rng.random((n, 31, size, size), dtype=np.float32))
        f.create_dataset("RGB", data=rng.random((n, 3, size, size), dtype=np.float32))
    return path


def _read_all(path):
    from lso.data.readers import H5Dataset

    with H5Dataset(path) as ds:
        return [ds[i] for i in range(len(ds))]


def test_hdf5_truncated(tmp_path):
    path = _community_h5(tmp_path / "test.h5")
    good = path.read_bytes()
    for n in _truncations(len(good)):
        path.write_bytes(good[:n])
        with pytest.raises(ArtifactError, match="test.h5"):
            _read_all(path)


def test_hdf5_pinned_by_sidecar_refuses_every_flip(tmp_path):
    path = _community_h5(tmp_path / "test.h5")
    write_sidecar(path, {"source": "download"})
    good = path.read_bytes()
    _read_all(path)
    for pos in _flip_positions(len(good)):
        path.write_bytes(_flipped(good, pos, pos % 8))
        with pytest.raises(ArtifactError, match="test.h5"):
            _read_all(path)


def test_hdf5_superblock_flip_without_sidecar(tmp_path):
    path = _community_h5(tmp_path / "test.h5")
    good = path.read_bytes()
    for pos in range(8):  # the HDF5 signature
        path.write_bytes(_flipped(good, pos, 2))
        with pytest.raises(ArtifactError, match="test.h5"):
            _read_all(path)


def test_our_h5_output_detects_a_flipped_data_bit_without_its_sidecar(tmp_path):
    """lso infer's .h5 output is chunked with Fletcher-32: a flipped value is refused even with the sidecar gone."""
    from lso.data import read_arrays as _arrays
    from lso.data import write_output as _write_output

    out = tmp_path / "out.h5"
    hsi = np.linspace(0, 1, 31 * 16 * 16, dtype=np.float32).reshape(31, 16, 16)
    _write_output(out, hsi, {"artifact": "m.onnx"})
    assert read_sidecar(out)["sha256"]
    np.testing.assert_array_equal(_arrays(out)["hr_hsi"], hsi)
    sidecar_path(out).unlink()
    data = out.read_bytes()
    at = data.index(hsi[10].tobytes()[:64])  # inside the stored values
    out.write_bytes(_flipped(data, at + 7, 4))
    with pytest.raises(ArtifactError, match="out.h5"):
        _arrays(out)


# ------------------------------------------------------------------------------------------ .mat
def _mat(path, compress=False):
    scipy_io = pytest.importorskip("scipy.io")
    ref = np.random.default_rng(0).random((8, 8, 31)) * 4
    buf = io.BytesIO()
    scipy_io.savemat(buf, {"ref": ref}, do_compression=compress)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_mat_truncated(tmp_path, compress):
    from lso.data.readers import read_harvard_mat

    path = _mat(tmp_path / "scene.mat", compress)
    good = path.read_bytes()
    for n in _truncations(len(good)):
        path.write_bytes(good[:n])
        with pytest.raises(ArtifactError, match="scene.mat"):
            read_harvard_mat(path)


def test_mat_pinned_by_sidecar_refuses_every_flip(tmp_path):
    from lso.data.readers import read_harvard_mat

    path = _mat(tmp_path / "scene.mat")
    write_sidecar(path, {})
    good = path.read_bytes()
    read_harvard_mat(path)
    for pos in _flip_positions(len(good)):
        path.write_bytes(_flipped(good, pos, pos % 8))
        with pytest.raises(ArtifactError, match="scene.mat"):
            read_harvard_mat(path)


def test_compressed_mat_flip_in_the_data_without_sidecar(tmp_path):
    """zlib's Adler-32 covers a compressed MATLAB variable."""
    from lso.data.readers import read_harvard_mat

    path = _mat(tmp_path / "scene.mat", compress=True)
    good = path.read_bytes()
    for pos in (200, len(good) // 2, len(good) - 6):
        path.write_bytes(_flipped(good, pos, 5))
        with pytest.raises(ArtifactError, match="scene.mat"):
            read_harvard_mat(path)


# ------------------------------------------------------------------------------------------ ONNX
def _onnx_graph(path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("hr_msi", TensorProto.FLOAT, ["B", 3, "H", "W"]),
              helper.make_tensor_value_info("lr_hsi", TensorProto.FLOAT, ["B", 31, "h", "w"])]
    output = helper.make_tensor_value_info("hr_hsi", TensorProto.FLOAT, None)
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["lr_hsi", "scale"], ["hr_hsi"])], "g", inputs, [output],
                              initializer=[scale])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    write_sidecar(path, {"config": LSOConfig.tiny().to_dict(), "precision": "fp32"})
    return path


def _activate(path):
    from lso.runtime.ort_runner import OrtRunner

    with OrtRunner(path, threads=1):
        pass


def test_onnx_flip_and_truncation_refused_by_the_sidecar(tmp_path):
    path = _onnx_graph(tmp_path / "model.onnx")
    _activate(path)
    good = path.read_bytes()
    for pos in _flip_positions(len(good)):
        path.write_bytes(_flipped(good, pos, pos % 8))
        with pytest.raises(ArtifactError, match=r"model.onnx does not match its sidecar model.onnx.json"):
            _activate(path)
    for n in _truncations(len(good)):
        path.write_bytes(good[:n])
        with pytest.raises(ArtifactError, match="model.onnx"):
            _activate(path)


def test_onnx_truncated_without_sidecar(tmp_path):
    path = _onnx_graph(tmp_path / "model.onnx")
    sidecar_path(path).unlink()
    good = path.read_bytes()
    for n in (0, 1, len(good) // 2, len(good) - 3):
        path.write_bytes(good[:n])
        with pytest.raises(ArtifactError, match="model.onnx"):
            _activate(path)


# ------------------------------------------------------------------------------------------ plans
@pytest.fixture()
def no_tensorrt(monkeypatch):
    """Fail the test if anything reaches the GPU or TensorRT: the file checks must come first."""
    from lso.runtime import trt_runner

    def boom(*_a, **_k):
        raise AssertionError("TensorRT or the GPU was touched before the plan file was checked")

    monkeypatch.setattr(trt_runner, "require_cuda", boom)
    monkeypatch.setattr(trt_runner, "import_tensorrt", boom)


def _plan(path):
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    write_sidecar(path, {"tensorrt_version": "10.9.0", "compute_capability": "8.9"})
    return path


def test_plan_flip_truncation_and_empty_refused_before_tensorrt(tmp_path, no_tensorrt):
    from lso.runtime.trt_runner import TrtRunner, read_plan

    path = _plan(tmp_path / "model.plan")
    good = path.read_bytes()
    assert read_plan(path)[0] == good
    for pos in _flip_positions(len(good)):
        path.write_bytes(_flipped(good, pos, pos % 8))
        with pytest.raises(ArtifactError, match=r"model.plan does not match its sidecar model.plan.json"):
            TrtRunner(path).activate()
    for n in _truncations(len(good)):
        path.write_bytes(good[:n])
        with pytest.raises(ArtifactError, match="model.plan"):
            TrtRunner(path).activate()
    sidecar_path(path).unlink()
    path.write_bytes(b"")
    with pytest.raises(ArtifactError, match="model.plan is empty"):
        TrtRunner(path).activate()


def test_unreadable_sidecar_is_an_artifact_error(tmp_path):
    path = _plan(tmp_path / "model.plan")
    for bad in (b"[1, 2]", b"{not json", b"\xff\xfe", b'"a string"'):
        sidecar_path(path).write_bytes(bad)
        with pytest.raises(ArtifactError, match="model.plan.json"):
            read_sidecar(path)
    sidecar_path(path).write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(ArtifactError, match="does not match"):
        read_sidecar(path)
