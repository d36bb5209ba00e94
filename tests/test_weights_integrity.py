"""Issue 18: every checkpoint proves itself, weights that cannot be right are refused, graphs name their weights.

- Our ``.safetensors`` (the bundled demo checkpoint included) carry a content digest over their metadata and
  every tensor byte; a flipped bit, removed digest keys or an edited ``lso_config`` is an ``ArtifactError``; a
  sidecar without its ``sha256`` is one too. A third-party ``.safetensors`` (never had our digest) loads.
- NaN/Inf weights, non-floating tensors, a ``modes_list`` other than the authors' float 1..Q and keys that
  collide after prefix stripping are refused, naming the key.
- ``weights_fingerprint`` is the same for a checkpoint, its fp16 copy, and the graph exported from it, and
  every runner reports it.

Tiny seeded models; the bundled checkpoint is only ever read, and flipped in a copy under ``tmp_path``.
"""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig, load_checkpoint, save_checkpoint
from lso.artifacts import read_sidecar, sidecar_path, write_sidecar
from lso.checkpoint import FORMAT_TAG, resave_checkpoint, weights_fingerprint
from lso.errors import ArtifactError


@pytest.fixture()
def tiny() -> LSO:
    torch.manual_seed(0)
    return LSO(LSOConfig.tiny()).eval()


def _header(path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def _rewrite_header(path, edit) -> None:
    """Rewrite a safetensors header through ``edit(header)`` (data offsets unchanged, so the file stays valid)."""
    header, body = _header(path)
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + body)


# ------------------------------------------------------------------------------------ digests (18.2)
def test_bundled_checkpoint_carries_a_digest_and_a_flipped_bit_in_a_copy_is_refused(tmp_path):
    from lso.weights import demo_checkpoint

    bundled = demo_checkpoint()
    copy = tmp_path / bundled.name
    shutil.copyfile(bundled, copy)
    header, body = _header(copy)
    meta = header["__metadata__"]
    assert meta["format"] == FORMAT_TAG and meta["content_sha256"] == meta["content_sha256_copy"]
    assert {"step", "val_psnr", "ratio"} <= set(meta)  # the training record was kept by the re-save
    load_checkpoint(copy)  # the untouched copy loads
    data = bytearray(copy.read_bytes())
    start = len(data) - len(body)
    # the kind of bit the issue flipped: the top exponent bit of a weight (float16: -0.0125 -> -817)
    entry = header["outc.conv.0.weight"]
    size = {"F16": 2, "F32": 4}[entry["dtype"]]
    middle = (entry["data_offsets"][0] + entry["data_offsets"][1]) // 2 // size * size
    pos = start + middle + size - 1  # the high byte (little-endian) of a value: sign and top exponent bits
    data[pos] ^= 0x40
    copy.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="content sha256"):
        load_checkpoint(copy)
    assert bundled.read_bytes() != copy.read_bytes()  # the package's own file was never written


@pytest.mark.parametrize("sidecar", [{}, {"artifact": "ours.safetensors"}, {"sha256": ""}, {"sha256": None}])
def test_a_sidecar_without_its_digest_is_refused(tmp_path, tiny, sidecar):
    path = save_checkpoint(tiny, tmp_path / "ours.safetensors")
    sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(ArtifactError, match="records no sha256"):
        load_checkpoint(path)
    with pytest.raises(ArtifactError, match="records no sha256"):
        read_sidecar(path)
    write_sidecar(path, {})  # pinning writes the digest: then it loads
    load_checkpoint(path)


def test_a_plan_sidecar_without_its_digest_is_refused_before_tensorrt(tmp_path):
    from lso.runtime.trt_runner import read_plan

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"\x01" * 256)
    sidecar_path(plan).write_text(json.dumps({"tensorrt_version": "10.9.0", "compute_capability": "8.9"}))
    with pytest.raises(ArtifactError, match="records no sha256"):
        read_plan(plan)


def test_our_file_without_its_digest_keys_is_refused(tmp_path, tiny):
    path = save_checkpoint(tiny, tmp_path / "ours.safetensors")

    def drop(header):
        for key in ("content_sha256", "content_sha256_copy"):
            del header["__metadata__"][key]

    _rewrite_header(path, drop)
    with pytest.raises(ArtifactError, match="without its content digest"):
        load_checkpoint(path)
    # a trusted file without a digest gets one back, weights bit-for-bit
    fixed = resave_checkpoint(path, tmp_path / "fixed.safetensors")
    assert all(torch.equal(a, b)
               for a, b in zip(tiny.state_dict().values(), load_checkpoint(fixed).state_dict().values(), strict=True))


@pytest.mark.parametrize("edit", ["patch_size", "step"])
def test_the_digest_covers_the_metadata(tmp_path, tiny, edit):
    """Editing lso_config (patch_size changes no tensor shape) or any other entry, digest keys left alone."""
    path = save_checkpoint(tiny, tmp_path / "ours.safetensors", step=100)

    def change(header):
        meta = header["__metadata__"]
        if edit == "patch_size":
            config = json.loads(meta["lso_config"])
            config["patch_size"] = 2 if config["patch_size"] != 2 else 4
            meta["lso_config"] = json.dumps(config)
        else:
            meta["step"] = "200"

    _rewrite_header(path, change)
    with pytest.raises(ArtifactError, match="content sha256"):
        load_checkpoint(path)


def test_a_third_party_safetensors_without_our_digest_loads(tmp_path, tiny):
    from safetensors.torch import save_file

    path = tmp_path / "downloaded.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path), metadata={"source": "hub"})
    back = load_checkpoint(path, patch_size=tiny.config.patch_size)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in back.state_dict().items())


# ------------------------------------------------------------------------------------ weights (18.3)
def _bad_states(state: dict) -> list[tuple[str, dict, str]]:
    """(case, state dict, the key the error must name)."""
    out = []
    for case, change in (("nan", lambda t: t.index_put_((torch.tensor([0]),), torch.tensor(float("nan")))),
                         ("inf", lambda t: t.index_put_((torch.tensor([0]),), torch.tensor(float("-inf"))))):
        s = {k: v.clone() for k, v in state.items()}
        change(s["process1.weights"].view(-1))
        out.append((case, s, "process1.weights"))
    for case, dtype in (("int", torch.int32), ("bool", torch.bool), ("complex", torch.complex64)):
        s = dict(state)
        s["outc.conv.2.bias"] = state["outc.conv.2.bias"].to(dtype)
        out.append((case, s, "outc.conv.2.bias"))
    s = dict(state)  # integer-valued, but the authors' format stores it as float32
    s["process2.modes_list"] = state["process2.modes_list"].to(torch.int64)
    out.append(("int modes_list", s, "process2.modes_list"))
    s = dict(state)
    s["process2.modes_list"] = state["process2.modes_list"] / len(state["process2.modes_list"])  # not 1..Q
    out.append(("modes_list values", s, "process2.modes_list"))
    return out


_CASES = ("nan", "inf", "int", "bool", "complex", "int modes_list", "modes_list values")


@pytest.mark.parametrize("case,suffix", [(c, ".pth.tar") for c in _CASES]
                         + [(c, ".safetensors") for c in _CASES if c != "complex"])  # safetensors: no complex dtype
def test_weights_that_cannot_be_right_are_refused_naming_the_key(tmp_path, tiny, case, suffix):
    _, state, key = next(c for c in _bad_states(tiny.state_dict()) if c[0] == case)
    path = tmp_path / f"bad{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path),
                  metadata={"note": "third-party: no digest, the tensor checks still apply"})
    else:
        torch.save({"model_state_dict": state, "epoch": 1}, path)
    with pytest.raises(ArtifactError, match=re.escape(repr(key))):
        load_checkpoint(path, patch_size=4)


def test_the_authors_float_modes_list_loads(tmp_path, tiny):
    state = tiny.state_dict()
    assert state["process1.modes_list"].dtype == torch.float32  # as the authors' files hold it
    torch.save({"model_state_dict": state}, tmp_path / "ok.pth.tar")
    load_checkpoint(tmp_path / "ok.pth.tar", patch_size=4)


@pytest.mark.parametrize("same", [False, True])
def test_keys_that_collide_after_prefix_stripping_are_refused(tmp_path, tiny, same):
    state = dict(tiny.state_dict())
    key = "process1.latent"
    state["module." + key] = state[key].clone() if same else state[key] + 1
    torch.save(state, tmp_path / "both.pth")
    with pytest.raises(ArtifactError, match=re.escape(f"'module.{key}'")) as info:
        load_checkpoint(tmp_path / "both.pth", patch_size=4)
    assert repr(key) in str(info.value)


# ------------------------------------------------------------------------------------ fingerprints (18.2)
def test_the_same_fingerprint_for_a_checkpoint_its_copies_and_its_graph(tmp_path, tiny, capsys):
    pytest.importorskip("onnxruntime")
    from lso.cli import main
    from lso.export import export_onnx
    from lso.runtime import load

    ckpt = save_checkpoint(tiny, tmp_path / "tiny.safetensors")
    fp16 = save_checkpoint(tiny, tmp_path / "tiny16.safetensors", dtype=torch.float16)
    torch.save({"module." + k: v for k, v in tiny.state_dict().items()}, tmp_path / "tiny.pth.tar")
    fingerprint = weights_fingerprint(ckpt)
    assert fingerprint == weights_fingerprint(tiny) == weights_fingerprint(tmp_path / "tiny.pth.tar")
    half = LSO(tiny.config)
    half.load_state_dict(load_checkpoint(fp16).state_dict())
    assert weights_fingerprint(fp16) == weights_fingerprint(half) != fingerprint  # rounded weights differ

    graph = export_onnx(ckpt, tmp_path / "tiny.onnx", check=False)
    assert weights_fingerprint(graph) == fingerprint
    assert read_sidecar(graph)["weights_sha256"] == fingerprint
    import onnx

    props = {p.key: p.value for p in onnx.load(str(graph)).metadata_props}
    assert props["lso.weights_sha256"] == fingerprint
    assert props["lso.source_sha256"] == read_sidecar(graph)["source"]["sha256"]
    for artifact in (ckpt, graph):
        with load(artifact) as runner:
            assert runner.weights_fingerprint == fingerprint
            assert fingerprint[:12] in repr(runner)  # lso infer prints the runner

    torch.manual_seed(1)
    other = save_checkpoint(LSO(LSOConfig.tiny()), tmp_path / "other.safetensors")
    assert weights_fingerprint(other) != fingerprint

    assert main(["info", "--checkpoint", str(ckpt)]) == 0
    assert json.loads(capsys.readouterr().out)["weights_sha256"] == fingerprint

    # a graph whose sidecar and metadata disagree is refused
    side = read_sidecar(graph)
    side["weights_sha256"] = "0" * 64
    sidecar_path(graph).write_text(json.dumps(side))
    with pytest.raises(ArtifactError, match="different weight fingerprints"):
        weights_fingerprint(graph)
    with pytest.raises(ArtifactError, match="different weight fingerprints"):
        load(graph).activate()


def test_lso_infer_records_the_fingerprint_in_its_output(tmp_path, tiny):
    from lso.data import read_arrays as _arrays
    from lso.runtime.infer import InferOptions, infer

    ckpt = save_checkpoint(tiny, tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(0)
    scene = tmp_path / "scene.npz"
    np.savez(scene, hr_msi=rng.random((3, 32, 32), dtype=np.float32),
             lr_hsi=rng.random((31, 8, 8), dtype=np.float32))
    out = tmp_path / "out.npz"
    infer(InferOptions(artifact=ckpt, inputs=(scene,), out=out, preview=False))
    assert str(_arrays(out)["weights_sha256"]) == weights_fingerprint(ckpt)
