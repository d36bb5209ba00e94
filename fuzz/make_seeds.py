"""Write the seed corpora of the fuzz targets: one small valid input per reader, plus a few edge cases.

    python fuzz/make_seeds.py            # -> fuzz/seeds/<target>/

Seeds are tiny (a few kB at most) so the fuzzer mutates structure, not bulk. Readers seeds are the
reader index (one byte, see ``fuzz/targets.py:READERS``) followed by the file's bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from targets import READERS  # noqa: E402


def _kind(suffix: str, reader: str) -> int:
    for i, (s, fn) in enumerate(READERS):
        if s == suffix and fn.__name__ == reader:
            return i
    raise KeyError((suffix, reader))


def _h5(write) -> bytes:
    import h5py

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.h5"
        with h5py.File(path, "w") as f:
            write(f)
        return path.read_bytes()


def _mat_v5(compress: bool = False, **arrays) -> bytes:
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, arrays, do_compression=compress)
    return buf.getvalue()


def seeds() -> dict[str, dict[str, bytes]]:
    import torch
    from safetensors.torch import save as st_save

    from lso.config import LSOConfig
    from lso.data import false_colour

    rng = np.random.default_rng(0)
    hr = rng.random((3, 16, 16), dtype=np.float32)
    lr = rng.random((31, 4, 4), dtype=np.float32)
    gt = rng.random((1, 31, 4, 4), dtype=np.float32)
    rgb = rng.random((1, 3, 4, 4), dtype=np.float32)
    out: dict[str, dict[str, bytes]] = {"readers": {}, "validation": {}, "cli": {}}
    r = out["readers"]

    def add(name: str, suffix: str, reader: str, data: bytes) -> None:
        r[name] = bytes([_kind(suffix, reader)]) + data

    add("h5_ours", ".h5", "_read_scene", _h5(lambda f: (f.create_dataset("hr_msi", data=hr),
                                                       f.create_dataset("lr_hsi", data=lr))))
    add("h5_community", ".h5", "_read_scene", _h5(lambda f: (f.create_dataset("GT", data=gt),
                                                            f.create_dataset("RGB", data=rgb))))
    add("h5_dataset", ".h5", "_h5_dataset", _h5(lambda f: (f.create_dataset("GT", data=gt, chunks=True,
                                                                           fletcher32=True),
                                                          f.create_dataset("RGB", data=rgb))))
    ref = rng.random((4, 4, 31)) * 3
    add("harvard_v5", ".mat", "_harvard", _mat_v5(ref=ref))
    add("harvard_v5_compressed", ".mat", "_harvard", _mat_v5(compress=True, ref=ref.astype(np.float32)))
    add("harvard_v73", ".mat", "_harvard", _h5(lambda f: f.create_dataset("ref", data=ref.T)))
    add("mat_scene", ".mat", "_read_scene", _mat_v5(hr_msi=hr.transpose(1, 2, 0), lr_hsi=lr.transpose(1, 2, 0)))
    buf = io.BytesIO()
    np.save(buf, hr)
    add("npy", ".npy", "_read_arrays", buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, hr_msi=hr, lr_hsi=lr)
    add("npz", ".npz", "_read_scene", buf.getvalue())
    buf = io.BytesIO()
    np.savez_compressed(buf, hr_msi=hr[:, :8, :8], lr_hsi=lr[:, :2, :2])
    add("npz_compressed", ".npz", "_read_scene", buf.getvalue())
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(false_colour(lr)).save(buf, format="PNG")
    add("png_rgb", ".png", "_read_arrays", buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray((rng.random((8, 8)) * 65535).astype(np.uint16)).save(buf, format="PNG")
    add("png_band16", ".png", "_band_png", buf.getvalue())
    buf = io.BytesIO()
    torch.save({"model_state_dict": {"process1.latent": torch.zeros(2, 4, 8), "outc.conv.2.weight": torch.zeros(31, 1)},
                "epoch": 1}, buf)
    add("pth", ".pth", "_checkpoint", buf.getvalue())
    add("safetensors", ".safetensors", "_checkpoint",
        st_save({"process1.latent": torch.zeros(2, 4, 8), "outc.conv.2.weight": torch.zeros(31, 1, 1, 1)},
                metadata={"format": "lso-deploy/1", "lso_config": LSOConfig.tiny().to_json()}))
    add("sidecar", ".json", "_sidecar", json.dumps({"sha256": hashlib.sha256(b"artifact").hexdigest(),
                                                     "config": LSOConfig.tiny().to_dict()}).encode())
    add("onnx", ".onnx", "_onnx", _tiny_onnx())
    add("plan", ".plan", "_plan", b"ftrt" + bytes(60))

    v = out["validation"]
    v["valid_pair"] = bytes([1, 1, 1, 1, 2, 2, 3, 0, 0, 0, 0, 0, 0, 1, 3, 1])
    v["huge"] = bytes([4, 0, 16, 0, 17, 0, 0, 0, 4, 0, 16, 0, 16, 0, 16, 0])
    v["nan"] = bytes([1, 1, 2, 2, 2, 3, 0, 3, 3, 0, 0, 1])
    c = out["cli"]
    c["infer"] = bytes([6, 1, 0, 1, 26, 1, 27, 1, 22, 1, 11, 1, 13, 1, 14, 1])
    c["help"] = bytes([2, 1, 24])
    return out


def _tiny_onnx() -> bytes:
    """A minimal graph with the LSO I/O names (hr_hsi = Resize of lr_hsi is not needed: Identity-like Add)."""
    from onnx import TensorProto, helper

    hr = helper.make_tensor_value_info("hr_msi", TensorProto.FLOAT, ["B", 3, "H", "W"])
    lr = helper.make_tensor_value_info("lr_hsi", TensorProto.FLOAT, ["B", 31, "h", "w"])
    out = helper.make_tensor_value_info("hr_hsi", TensorProto.FLOAT, None)
    node = helper.make_node("Identity", ["lr_hsi"], ["hr_hsi"])
    graph = helper.make_graph([node], "g", [hr, lr], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def main() -> None:
    for target, files in seeds().items():
        folder = ROOT / "seeds" / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        print(f"{folder}: {len(files)} seeds")


if __name__ == "__main__":
    main()
