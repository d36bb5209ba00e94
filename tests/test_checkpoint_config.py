"""A checkpoint's own configuration is honoured everywhere (load, export, train --init, info), --config, @demo.

The oracle for the authors' format is their own file (tests/data/reference/lso_official_nondefault.pth.tar,
patch_size 2: a value no tensor shape shows) and its output vectors; the rest uses tiny seeded models saved in
exactly the layout the authors' training script writes.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from conftest import NONDEFAULT_CHECKPOINT, NONDEFAULT_TAGS, NONDEFAULT_VECTORS

from lso import LSO, LSOConfig, load_checkpoint, save_checkpoint
from lso.checkpoint import (
    OFFICIAL_CONFIG_KEY,
    SOURCE_CALLER,
    SOURCE_DEFAULT,
    SOURCE_SAVED,
    SOURCE_SHAPES,
    parse_config_arg,
    read_state_dict,
    resolve_config,
)
from lso.cli import main
from lso.errors import ArtifactError, InputError, LSOError

# non-default in every field the authors' options name (patch_size 2 is visible in no tensor shape)
TRAINED = LSOConfig(guide_dim=8, n_resblocks=1, width=16, patch_size=2, num_token=3, num_basis=5, heads=2)


def _authors_namespace(cfg: LSOConfig) -> dict:
    """``vars(opt)`` as the authors' training script saves it: architecture, dataset and training options."""
    return {"dataset": "cave_x4", "dataroot": "data/cave_x4", "model": "lso_x4", "batchSize": 16, "testBatchSize": 1,
            "threads": 4, "n_epochs": 1000, "lr": 0.0003, "gpu": "0", "seed": 42, "save_root": "checkpoints",
            "max_train_batches": None, "no_save": False, "num_token": cfg.num_token, "num_basis": cfg.num_basis,
            "width": cfg.width, "patch_size": cfg.patch_size, "n_resblocks": cfg.n_resblocks,
            "guide_dim": cfg.guide_dim, "n_bands": cfg.n_bands, "image_size": 512, "n_bands_rgb": cfg.n_msi_bands,
            "sf": 4}


@pytest.fixture(scope="module")
def trained():
    """A seeded model whose spectral path matters (trained-like magnitudes), as the reference files were made."""
    torch.manual_seed(2026)
    model = LSO(TRAINED).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "latent") and hasattr(module, "weights"):
                module.latent.normal_()
                q = torch.arange(1, TRAINED.num_basis + 1, dtype=torch.float32).repeat(2)
                module.weights.copy_(0.3 * torch.randn_like(module.weights) / q)
    return model


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(7)
    return torch.rand(1, 3, 24, 40, generator=gen), torch.rand(1, 31, 6, 10, generator=gen)


@pytest.fixture(scope="module")
def authors_file(trained, tmp_path_factory):
    """``trained`` saved exactly as the authors' training script saves (torch.compile prefix included)."""
    path = tmp_path_factory.mktemp("authors") / "model_best.pth.tar"
    torch.save({"epoch": 37, "model_state_dict": {"_orig_mod." + k: v for k, v in trained.state_dict().items()},
                "model_name": "lso_x4", "config": _authors_namespace(TRAINED), "source_checkpoint": None}, path)
    return path


def _run(model, inputs):
    with torch.no_grad():
        return model(*inputs)


# ------------------------------------------------------------------------------- the authors' own file
def test_official_nondefault_file_reproduces_its_vectors():
    from safetensors.torch import load_file

    vectors = load_file(str(NONDEFAULT_VECTORS))
    model = load_checkpoint(NONDEFAULT_CHECKPOINT)
    cfg = model.config
    assert (cfg.patch_size, cfg.width, cfg.num_basis, cfg.num_token, cfg.n_resblocks, cfg.guide_dim) == (2, 32, 12, 4,
                                                                                                          2, 64)
    wrong = LSO(cfg.replace(patch_size=4)).eval()
    wrong.load_state_dict(model.state_dict())
    for tag in NONDEFAULT_TAGS:
        args = (vectors[f"{tag}.hr_msi"], vectors[f"{tag}.lr_hsi"])
        err = (_run(model, args) - vectors[f"{tag}.output"]).abs().max().item()
        assert err <= 2e-5, f"{tag}: max abs error {err:.3g} > 2e-5"
        # the default patch size (what shapes alone would give) misses: the saved config is what makes it right
        assert (_run(wrong, args) - vectors[f"{tag}.output"]).abs().max().item() > 1e-3


def test_official_namespace_is_in_the_metadata_and_sources_are_named():
    _, meta = read_state_dict(NONDEFAULT_CHECKPOINT)
    saved = json.loads(meta[OFFICIAL_CONFIG_KEY])
    assert saved["sf"] == 4 and saved["patch_size"] == 2 and saved["lr"] == 0.0003  # the whole namespace
    resolved = resolve_config(NONDEFAULT_CHECKPOINT)
    assert resolved.sources["patch_size"] == SOURCE_SAVED and resolved.agreeing["patch_size"] == ()
    assert resolved.sources["width"] == SOURCE_SAVED and resolved.agreeing["width"] == (SOURCE_SHAPES,)
    assert resolved.sources["heads"] == SOURCE_SHAPES  # the authors' options have no heads
    assert resolved.sources["solver"] == SOURCE_DEFAULT


# ------------------------------------------------------------------------ the authors' format, non-default
def test_load_reproduces_the_trained_model(authors_file, trained, inputs):
    model = load_checkpoint(authors_file)
    assert model.config == TRAINED
    err = (_run(model, inputs) - _run(trained, inputs)).abs().max().item()
    assert err <= 1e-5
    # the test can fail: the default patch size gives another output on these inputs
    wrong = LSO(TRAINED.replace(patch_size=4)).eval()
    wrong.load_state_dict(trained.state_dict())
    assert (_run(wrong, inputs) - _run(trained, inputs)).abs().max().item() > 1e-4


@pytest.mark.parametrize("asked", [{"patch_size": 4}, {"width": 32}, {"num_basis": 6}, {"heads": 4}])
def test_contradicting_fields_are_refused(authors_file, asked):
    (name, value), = asked.items()
    with pytest.raises(LSOError) as info:
        load_checkpoint(authors_file, **asked)
    msg = str(info.value)
    assert f"{name}={value}" in msg and f"{name}={getattr(TRAINED, name)}" in msg
    with pytest.raises(LSOError, match=name):
        load_checkpoint(authors_file, LSOConfig.tiny())  # a whole configuration names every field


def test_agreeing_fields_and_the_authors_names_are_accepted(authors_file):
    assert load_checkpoint(authors_file, patch_size=2, n_bands_rgb=3).config == TRAINED
    assert (load_checkpoint(authors_file, {"width": 16}, solver="reference").config
            == TRAINED.replace(solver="reference"))
    with pytest.raises(InputError, match="unknown configuration field"):
        load_checkpoint(authors_file, patch_sise=2)


def test_cli_contradiction_is_an_error_naming_both_values(authors_file, capsys):
    assert main(["info", "--checkpoint", str(authors_file), "--config", "patch_size=4"]) == 1
    err = capsys.readouterr().err
    assert "patch_size=4" in err and "patch_size=2" in err


def test_bare_state_dict_uses_the_callers_config_or_warns(trained, inputs, tmp_path, caplog):
    path = tmp_path / "weights.pth"
    torch.save(trained.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="lso.checkpoint"):
        default = load_checkpoint(path)
    assert default.config.patch_size == 4
    assert "patch_size=N" in caplog.text and "--config patch_size=N" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lso.checkpoint"):
        model = load_checkpoint(path, patch_size=2)
    assert "patch_size" not in caplog.text
    assert (_run(model, inputs) - _run(trained, inputs)).abs().max().item() <= 1e-5
    resolved = resolve_config(path, {"patch_size": 2})
    assert resolved.sources["patch_size"] == SOURCE_CALLER and resolved.sources["width"] == SOURCE_SHAPES
    with pytest.raises(LSOError, match="width=32"):
        load_checkpoint(path, width=32, patch_size=2)  # the shapes pin the width


def test_our_safetensors_metadata_is_honoured(trained, inputs, tmp_path):
    path = save_checkpoint(trained, tmp_path / "ours.safetensors")
    model = load_checkpoint(path)
    assert model.config == TRAINED
    assert (_run(model, inputs) - _run(trained, inputs)).abs().max().item() <= 1e-5
    with pytest.raises(LSOError, match="patch_size=4"):
        load_checkpoint(path, patch_size=4)


def test_saved_config_that_contradicts_the_shapes_is_corrupt(trained, tmp_path):
    namespace = _authors_namespace(TRAINED.replace(width=32))
    path = tmp_path / "bad.pth.tar"
    torch.save({"model_state_dict": trained.state_dict(), "config": namespace}, path)
    with pytest.raises(ArtifactError, match="disagrees with its tensor shapes"):
        load_checkpoint(path)


def test_export_cli_gives_the_trained_model(authors_file, trained, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    # its own parity table is skipped: both of its sides would come from the checkpoint; the trained model is the
    # oracle here
    assert main(["export", "--checkpoint", str(authors_file), "--out", str(out), "--skip-check", "--no-simplify"]) == 0
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    assert side["config"]["patch_size"] == 2 and side["config"]["width"] == 16
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(11)
    for h, w, r in ((24, 40, 4), (18, 30, 3)):
        hr, lr = torch.rand(1, 3, h, w, generator=gen), torch.rand(1, 31, h // r, w // r, generator=gen)
        got = session.run(None, {"hr_msi": hr.numpy(), "lr_hsi": lr.numpy()})[0]
        np.testing.assert_allclose(got, _run(trained, (hr, lr)).numpy(), rtol=0, atol=1e-4)


def test_train_init_keeps_the_configuration(authors_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--init", str(authors_file), "--out", str(out), "--max-steps", "1", "--batch", "1", "--crop", "16",
            "--scene-size", "32", "--pool", "1", "--val-every", "1", "--save-every", "1", "--threads", "1",
            "--no-progress"]
    assert main(argv + ["--config", "patch_size=4"]) == 1  # contradicts the checkpoint
    assert "patch_size=2" in capsys.readouterr().err
    assert main(argv + ["--patch-size", "2"]) == 0  # agrees
    _, meta = read_state_dict(out / "best.safetensors")
    assert LSOConfig.from_dict(json.loads(meta["lso_config"])) == TRAINED
    assert json.loads(meta["ratio"]) == 4
    assert load_checkpoint(out / "best.safetensors").config == TRAINED
    state = torch.load(out / "last.pt", weights_only=True)
    assert LSOConfig.from_dict(state["train_config"]["model"]) == TRAINED  # a resumed run rebuilds the same model


def test_train_architecture_flags_build_the_model(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--max-steps", "1", "--batch", "1", "--crop", "16", "--scene-size", "32",
                 "--pool", "1", "--val-every", "1", "--threads", "1", "--no-progress", "--patch-size", "2",
                 "--width", "8", "--heads", "2", "--num-basis", "3", "--num-token", "2", "--guide-dim", "8",
                 "--n-resblocks", "1"]) == 0
    cfg = load_checkpoint(out / "best.safetensors").config
    assert (cfg.patch_size, cfg.width, cfg.heads, cfg.num_basis, cfg.num_token, cfg.guide_dim, cfg.n_resblocks) == (
        2, 8, 2, 3, 2, 8, 1)


# ------------------------------------------------------------------------------------------- --config
def test_parse_config_forms(tmp_path):
    assert parse_config_arg(None) is None and parse_config_arg("  ") is None
    assert parse_config_arg("patch_size=2, width=32") == {"patch_size": 2, "width": 32}
    assert parse_config_arg("patch-size=2,n_bands_rgb=3,solver=reference") == {"patch_size": 2, "n_msi_bands": 3,
                                                                               "solver": "reference"}
    assert parse_config_arg('{"num_basis": 12}') == {"num_basis": 12}
    dump = tmp_path / "opt.json"  # the authors' whole option namespace: training options are ignored
    dump.write_text(json.dumps(_authors_namespace(TRAINED)))
    assert parse_config_arg(str(dump)) == {k: getattr(TRAINED, k) for k in ("num_token", "num_basis", "width",
                                                                             "patch_size", "n_resblocks", "guide_dim",
                                                                             "n_bands", "n_msi_bands")}
    assert parse_config_arg("tiny") == LSOConfig.tiny().to_dict()


@pytest.mark.parametrize("text,message", [
    ("patch_size", "key=value"),
    ("patch_size=two", "patch_size must be an integer"),
    ("patchsize=2", "unknown configuration field"),
    ("patch_size=2,patch_size=4", "given twice"),
    ("width=", "is not key=value"),
    ("[2, 4]", "not an object"),
    ("{not json", "not valid JSON"),
    ("missing.json", "cannot read the JSON file"),
    ('{"lr": 0.1}', "names no configuration field"),
    ("solver=fast", "solver must be"),
])
def test_parse_config_errors(text, message):
    with pytest.raises(InputError, match=message) as info:
        parse_config_arg(text)
    assert "--config" in str(info.value)


def test_bad_config_on_the_command_line(capsys):
    assert main(["info", "--config", "patch_size=x"]) == 1
    assert "patch_size must be an integer" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ @demo and info
def test_info_prints_each_fields_source(authors_file, capsys):
    assert main(["info", "--checkpoint", str(authors_file)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"] == TRAINED.to_dict()
    assert info["config_sources"]["patch_size"] == "saved config"
    assert info["config_sources"]["width"] == "saved config (= tensor shapes)"
    assert info["config_sources"]["heads"] == "tensor shapes"
    assert info["config_sources"]["solver"] == "default"


def test_info_accepts_demo(capsys):
    from lso.weights import demo_checkpoint, has_demo_checkpoint

    if not has_demo_checkpoint():
        pytest.skip("this install has no bundled demo checkpoint")
    assert main(["info", "--checkpoint", "@demo"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checkpoint"] == str(demo_checkpoint())
    assert set(info["config_sources"].values()) <= {"saved config", "saved config (= tensor shapes)"}


def test_infer_accepts_demo(tmp_path, capsys):
    from lso.weights import has_demo_checkpoint

    if not has_demo_checkpoint():
        pytest.skip("this install has no bundled demo checkpoint")
    rng = np.random.default_rng(0)
    scene = tmp_path / "scene.npz"
    np.savez(scene, hr_msi=rng.random((3, 16, 16), dtype=np.float32), lr_hsi=rng.random((31, 4, 4), dtype=np.float32))
    out = tmp_path / "fused.npz"
    assert main(["infer", "@demo", str(scene), "-o", str(out), "--no-preview", "--config", "patch_size=4"]) == 0
    with np.load(out) as data:
        assert data["hr_hsi"].shape == (31, 16, 16)


def test_runtime_load_accepts_demo_and_config(authors_file, trained, inputs):
    from lso import runtime

    with runtime.load(authors_file, config={"patch_size": 2}) as runner:
        got = runner.fuse(inputs[0].numpy(), inputs[1].numpy())
    np.testing.assert_allclose(got, _run(trained, inputs).numpy(), rtol=0, atol=1e-5)
    with pytest.raises(LSOError, match="patch_size=4"):
        with runtime.load(authors_file, config={"patch_size": 4}):
            pass


# --------------------------------------------------------------------------------------- legacy pickle
class _Legacy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)


def test_legacy_full_model_pickle_is_refused_in_plain_text(tmp_path, capsys):
    path = tmp_path / "model_best.pth"
    torch.save(_Legacy(), path)  # torch.save(model): a pickled class, not a state dict
    with pytest.raises(ArtifactError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\x1b" not in msg
    assert "refused" in msg and "model_state_dict" in msg and "model.state_dict()" in msg and "config" in msg
    assert "_Legacy" in msg  # names what it found
    assert main(["info", "--checkpoint", str(path)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "model_state_dict" in err
