"""Checkpoint loading: official layouts and prefixes, our safetensors, clear errors, no pickle run."""
from __future__ import annotations

import os

import pytest
import torch

from lso import LSO, LSOConfig, load_checkpoint, save_checkpoint
from lso.checkpoint import infer_config, read_state_dict
from lso.errors import ArtifactError


@pytest.fixture()
def tiny_state():
    torch.manual_seed(0)
    model = LSO(LSOConfig.tiny())
    return model.config, model.state_dict()


@pytest.mark.parametrize("wrapper", ["model_state_dict", "state_dict", None])
@pytest.mark.parametrize("prefix", ["", "module.", "model.", "_orig_mod.", "module._orig_mod."])
@pytest.mark.parametrize("suffix", [".pth.tar", ".pth", ".pt"])
def test_official_layouts(tmp_path, tiny_state, wrapper, prefix, suffix):
    cfg, state = tiny_state
    sd = {prefix + k: v for k, v in state.items()}
    obj = {wrapper: sd, "epoch": 7, "best_psnr": 40.0} if wrapper else sd
    path = tmp_path / f"ckpt{suffix}"
    torch.save(obj, path)
    model = load_checkpoint(path)
    assert not model.training
    assert model.config.to_dict() == cfg.replace(solver="folded").to_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_official_reference_weights_infer_paper_config(tmp_path, reference_state_dict):
    torch.save({"model_state_dict": reference_state_dict}, tmp_path / "model_best.pth.tar")
    model = load_checkpoint(tmp_path / "model_best.pth.tar")
    assert model.config == LSOConfig()


def test_safetensors_roundtrip_keeps_config_and_weights(tmp_path, tiny_state):
    cfg, state = tiny_state
    model = LSO(cfg)
    model.load_state_dict(state)
    path = save_checkpoint(model, tmp_path / "ours.safetensors", note="hello")
    back = load_checkpoint(path)
    assert back.config == cfg
    assert all(torch.equal(v, state[k]) for k, v in back.state_dict().items())
    _, meta = read_state_dict(path)
    assert meta["note"] == "hello" and "lso_config" in meta


def test_fp16_safetensors_is_smaller_and_close(tmp_path, tiny_state):
    cfg, state = tiny_state
    model = LSO(cfg)
    model.load_state_dict(state)
    p32 = save_checkpoint(model, tmp_path / "a.safetensors")
    p16 = save_checkpoint(model, tmp_path / "b.safetensors", dtype=torch.float16)
    assert os.path.getsize(p16) < 0.6 * os.path.getsize(p32)
    back = load_checkpoint(p16)
    assert back.state_dict()["process1.weights"].dtype == torch.float32
    assert torch.equal(back.state_dict()["process1.modes_list"], state["process1.modes_list"])


def test_mismatch_lists_keys_and_suggests_config(tmp_path, tiny_state):
    _, state = tiny_state
    torch.save(state, tmp_path / "tiny.pth")
    with pytest.raises(ArtifactError) as info:
        load_checkpoint(tmp_path / "tiny.pth", LSOConfig())
    msg = str(info.value)
    assert "guide_dim=128 was asked for" in msg and "the tensor shapes pin guide_dim=16" in msg
    assert "width=16" in msg  # the config that would fit


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "garbage.pth.tar"
    bad.write_bytes(os.urandom(2000))
    with pytest.raises(ArtifactError):
        load_checkpoint(bad)
    bad_st = tmp_path / "garbage.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + os.urandom(100))
    with pytest.raises(ArtifactError):
        load_checkpoint(bad_st)


def test_truncated_checkpoint(tmp_path, tiny_state):
    _, state = tiny_state
    path = tmp_path / "t.pth"
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        load_checkpoint(path)


def test_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "x.pth")
    with pytest.raises(ArtifactError, match="no LSO state dict"):
        load_checkpoint(tmp_path / "x.pth")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('LSO_PWNED_MARK', '/tmp/lso_pwned')}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("LSO_PWNED_MARK", str(mark))
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"x": _Payload()}}, path)
    assert not mark.exists()
    with pytest.raises(ArtifactError, match="refused"):
        load_checkpoint(path)
    assert not mark.exists()


def test_infer_config_reads_shapes(tiny_state):
    cfg, state = tiny_state
    assert infer_config(state) == cfg.replace(solver="folded")
