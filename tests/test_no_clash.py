"""No command writes over one of its own inputs (issue 18): one table, every command that writes files.

Each row runs ``lso <command>`` with an output (or a file written beside it: sidecar, preview, ENVI pair, resume
folder, calibration cache, version folder, ...) that is one of the command's inputs, by the same name, another
spelling of it, or a hard link. Each must exit 1 with an ``InputError`` naming both paths before anything runs,
and leave the input byte for byte as it was. (``lso build --print-trtexec`` writes nothing and is not listed;
``lso build`` checks before it needs a GPU.)
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig, save_checkpoint
from lso.artifacts import OutputFolder, check_no_clash
from lso.cli import main
from lso.errors import InputError


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with a tiny checkpoint, a 32x32 x4 scene (.npz and an RGB .png + LR .npy pair), a stand-in ONNX
    graph and plan (the check runs before they are parsed) and a community .h5 name."""
    root = tmp_path_factory.mktemp("clash")
    torch.manual_seed(0)
    save_checkpoint(LSO(LSOConfig.tiny()).eval(), root / "tiny.safetensors")
    rng = np.random.default_rng(0)
    hr = rng.random((3, 32, 32), dtype=np.float32)
    lr = rng.random((31, 8, 8), dtype=np.float32)
    np.savez(root / "scene.npz", hr_msi=hr, lr_hsi=lr)
    np.save(root / "lr.npy", lr)
    from lso.data import write_png

    write_png(root / "fused.png", np.moveaxis((hr * 255).astype(np.uint8), 0, -1))
    (root / "model.onnx").write_bytes(b"not parsed before the check")
    (root / "model.plan").write_bytes(b"not parsed before the check")
    return root


def _setup_link(src: str, dst: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        target = root / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(root / src, target)
    return make


def _copy(src: str, dst: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        target = root / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((root / src).read_bytes())
    return make


# (id, argv with {d} for the folder, the input that must survive, what to prepare first)
CASES = [
    ("infer-same-file", ["infer", "{d}/tiny.safetensors", "{d}/scene.npz", "-o", "{d}/scene.npz"], "scene.npz", None),
    ("infer-other-spelling", ["infer", "{d}/tiny.safetensors", "{d}/scene.npz", "-o", "{d}/./sub/../scene.npz"],
     "scene.npz", lambda d: (d / "sub").mkdir(exist_ok=True)),
    ("infer-hard-link", ["infer", "{d}/tiny.safetensors", "{d}/scene.npz", "-o", "{d}/linked.npz"], "scene.npz",
     _setup_link("scene.npz", "linked.npz")),
    ("infer-preview-over-input", ["infer", "{d}/tiny.safetensors", "{d}/fused.png", "{d}/lr.npy", "-o",
                                  "{d}/fused.npz"], "fused.png", None),
    ("infer-envi-over-input", ["infer", "{d}/tiny.safetensors", "{d}/envi.img", "{d}/lr.npy", "-o", "{d}/envi.h5",
                               "--envi", "--no-preview"], "envi.img", _copy("lr.npy", "envi.img")),
    ("batch-out-is-input-folder", ["batch", "{d}/tiny.safetensors", "{d}/in", "-o", "{d}/in"], "in/scene.npz",
     _copy("scene.npz", "in/scene.npz")),
    ("batch-input-in-out", ["batch", "{d}/tiny.safetensors", "{d}/bout/scene.npz", "-o", "{d}/bout"],
     "bout/scene.npz", _copy("scene.npz", "bout/scene.npz")),
    ("export-symlink", ["export", "--checkpoint", "{d}/tiny.safetensors", "--out", "{d}/ck.onnx"],
     "tiny.safetensors", lambda d: (d / "ck.onnx").exists() or os.symlink(d / "tiny.safetensors", d / "ck.onnx")),
    ("export-hard-link", ["export", "--checkpoint", "{d}/tiny.safetensors", "--out", "{d}/tl.onnx"],
     "tiny.safetensors", _setup_link("tiny.safetensors", "tl.onnx")),
    ("calibrate-out", ["calibrate", "{d}/model.onnx", "--precision", "fp16", "--out", "{d}/model.onnx"], "model.onnx",
     None),
    ("calibrate-cpu-flavour", ["calibrate", "{d}/model.int8.cpu.onnx", "--precision", "int8", "--out",
                               "{d}/model.int8.onnx"], "model.int8.cpu.onnx",
     _copy("model.onnx", "model.int8.cpu.onnx")),
    ("calibrate-default-cache", ["calibrate", "{d}/model.onnx", "--precision", "int8", "--out", "{d}/m.onnx",
                                 "--data", "{d}/m.calibration.json"], "m.calibration.json",
     _copy("model.onnx", "m.calibration.json")),
    ("build", ["build", "{d}/model.onnx", "--out", "{d}/model.onnx"], "model.onnx", None),
    ("build-timing-cache", ["build", "{d}/model.onnx", "--timing-cache", "{d}/model.onnx"], "model.onnx", None),
    ("eval", ["eval", "--checkpoint", "{d}/eout/eval_x4.json", "--out", "{d}/eout", "-n", "1", "--size", "32"],
     "eout/eval_x4.json", _copy("tiny.safetensors", "eout/eval_x4.json")),
    ("train", ["train", "--init", "{d}/tout/best.safetensors", "--out", "{d}/tout", "--max-steps", "1"],
     "tout/best.safetensors", _copy("tiny.safetensors", "tout/best.safetensors")),
    ("triton-repo", ["triton-repo", "{d}/repo", "--onnx", "{d}/repo/lso_onnx/1/model.onnx", "--overwrite"],
     "repo/lso_onnx/1/model.onnx", _copy("model.onnx", "repo/lso_onnx/1/model.onnx")),
    ("demo", ["demo", "--checkpoint", "{d}/dout/model.cpu.onnx", "--out", "{d}/dout", "--size", "32"],
     "dout/model.cpu.onnx", _copy("tiny.safetensors", "dout/model.cpu.onnx")),
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_no_command_writes_over_its_input(files, case, capsys, monkeypatch):
    name, argv, survivor, prepare = case
    monkeypatch.setenv("LSO_MEMORY_BUDGET", "4G")
    if prepare is not None:
        prepare(files)
    before = _sha(files / survivor)
    listing = sorted(p.relative_to(files).as_posix() for p in files.rglob("*"))
    rc = main([a.replace("{d}", str(files)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "would overwrite" in err and "never writes over its own input" in err, err
    assert Path(survivor).name in err or f"{files / Path(survivor).parent} " in err, err  # the input is named
    assert _sha(files / survivor) == before
    assert sorted(p.relative_to(files).as_posix() for p in files.rglob("*")) == listing, "something was written"


def test_check_no_clash_names_both_and_passes_distinct(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"a")
    check_no_clash([tmp_path / "a.npz"], [tmp_path / "b.npz"], folders=[OutputFolder(tmp_path / "out")])
    with pytest.raises(InputError, match=r"output .*a\.npz would overwrite the input .*a\.npz"):
        check_no_clash([tmp_path / "a.npz"], [tmp_path / "a.npz"])
    with pytest.raises(InputError, match="inside that folder"):
        check_no_clash([tmp_path / "a.npz"], folders=[tmp_path])
    os.symlink(tmp_path / "a.npz", tmp_path / "s.npz")
    with pytest.raises(InputError, match="the same file"):
        check_no_clash([tmp_path / "a.npz"], [tmp_path / "s.npz"])
